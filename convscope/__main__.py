from convscope.cli import run

run()

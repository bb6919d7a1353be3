"""Command line: ``convscope COMMAND ...``.  ``main(argv) -> int``; nothing parses at import.

Exit status (FORMATS.md §3): 0 done, 1 the analysis found nothing usable, 2 bad input.
Each command lives in its own module with ``register(subparsers)``; the modules listed in
``COMMANDS`` that exist are loaded.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import importlib.util
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from convscope import __version__
from convscope.errors import ConvscopeError, InputError
from convscope.units import printable

__all__ = ["main", "run", "build_parser"]

COMMANDS = ("analyze", "compare", "calibrate", "measure", "suggest", "probe", "zoo")

DESCRIPTION = """\
convscope tells you, before anything is trained, how a convolutional network design will behave:
where its receptive field outgrows the input (the border layer and the unproductive layers after
it), what it costs (parameters, MACs, memory, memory traffic), how fast it runs on a device, and
which deployment plan is fastest.

MODEL is a spec file (.yaml), zoo:NAME (see `convscope zoo list`), an .onnx file, or
module.path:factory / file.py:factory (a Python callable returning an nn.Module).
"""

EPILOG = """\
exit status: 0 done, 1 the analysis found nothing usable, 2 bad input.

examples:
  convscope zoo list
  convscope analyze zoo:resnet18-imagenet --input 3,32,32
  convscope analyze my_net.yaml --res 32,64,224 --json -
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="convscope", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"convscope {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        modname = f"convscope.cli.{name}_cmd"
        if importlib.util.find_spec(modname) is None:
            continue
        importlib.import_module(modname).register(sub)
    return parser


MIN_WIDTH = 20  # narrower, a table has no room for its columns


class _ClosedStdout:
    """``convscope ... >&-``: Python leaves sys.stdout None; writing to it is an error that says so."""

    def write(self, text: str) -> int:
        raise OSError(errno.EBADF, "stdout is closed")

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        raise OSError(errno.EBADF, "stdout is closed")


def main(argv: Sequence[str] | None = None) -> int:
    if sys.stdout is None:
        sys.stdout = _ClosedStdout()  # type: ignore[assignment]
    try:
        return _main(argv)
    except KeyboardInterrupt:  # while the command's modules load, before it starts
        print("convscope: interrupted", file=sys.stderr)
        return 130


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(list(argv) if argv is not None else None)
        if extra:  # name the subcommand's own usage, not the top-level one
            _subparser(parser, getattr(args, "command", None)).error(
                "unrecognized arguments: " + " ".join(extra))
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return int(exc.code or 0)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        width = getattr(args, "width", None)
        if width is not None and width < MIN_WIDTH:
            raise InputError(f"--width must be at least {MIN_WIDTH} columns, got {width}")
        with _plain_warnings(args.command):
            status = int(args.handler(args))
        sys.stdout.flush()  # a full disk or a closed stdout is reported here, not at exit
        return status
    except ConvscopeError as exc:
        print(f"convscope {args.command}: error: {printable(exc)}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        print(f"convscope {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `convscope ... | head`
        return 0
    except OSError as exc:  # the system refused a write (stdout on a full disk or closed): not a bug
        _drop_stdout()
        where = f" {exc.filename}" if exc.filename else " to stdout"  # files convscope writes are InputErrors
        print(f"convscope {args.command}: error: cannot write{where}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a bug in convscope, not in the input
        if os.environ.get("CONVSCOPE_DEBUG"):
            raise
        print(f"convscope {args.command}: internal error: {type(exc).__name__}: {exc}\n"
              "  (set CONVSCOPE_DEBUG=1 for the traceback, and please report it)", file=sys.stderr)
        return 3


def _drop_stdout() -> None:
    """Output that stdout could not take is dropped, so that Python's own flush at exit does not
    report it a second time."""
    try:
        sys.stdout.flush()
    except OSError:
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - lives until exit
        except OSError:
            pass


def _subparser(parser: argparse.ArgumentParser, command: str | None) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            return action.choices[command]
    return parser


@contextmanager
def _plain_warnings(command: str) -> Iterator[None]:
    """convscope's own warnings (an unreadable latency cache rebuilt, …) as one plain line on
    stderr, once per command; other libraries' warnings as Python shows them."""
    from convscope.backends._cache import CacheWarning

    with warnings.catch_warnings():
        warnings.simplefilter("always", CacheWarning)
        default = warnings.showwarning
        said: set[str] = set()

        def show(message, category, filename, lineno, file=None, line=None):  # type: ignore[no-untyped-def]
            if issubclass(category, CacheWarning):
                if str(message) not in said:  # once per command, however many networks it predicts
                    said.add(str(message))
                    print(f"convscope {command}: warning: {printable(message)}", file=sys.stderr)
            else:
                default(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        yield


def run() -> None:
    sys.exit(main())

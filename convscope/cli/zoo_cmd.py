"""`convscope zoo [list | show NAME]`: the built-in reference networks."""

from __future__ import annotations

import argparse
import sys

import yaml

from convscope.cli._common import console
from convscope.errors import InputError
from convscope.reports.terminal import render_zoo_list
from convscope.zoo import GENERATED, zoo_entries, zoo_spec_text

HELP = "list the built-in reference networks, or show one's spec"
EPILOG = """\
exit status: 0 done, 2 bad input (an unknown name).

examples:
  convscope zoo list
  convscope zoo show resnet18-cifar
  convscope zoo show 'nasbench201:|nor_conv_3x3~0|+|none~0|skip_connect~1|+|nor_conv_1x1~0|avg_pool_3x3~1|none~2|'
  convscope analyze zoo:vgg16-cifar
"""


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("zoo", help=HELP, description=HELP + ".", epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", nargs="?", default="list", choices=("list", "show"),
                   help="list: every network with its input, classes and description (the default); show: a network's spec")
    p.add_argument("name", nargs="?", metavar="NAME", help="for show: a zoo name (with or without 'zoo:')")
    p.add_argument("--width", type=int, metavar="COLS", help="terminal width")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.action == "list":
        if args.name:
            raise InputError(f"zoo list takes no NAME, got '{args.name}' (to see one network: convscope zoo show "
                             f"{args.name})")
        render_zoo_list(zoo_entries(), console(args))
        return 0
    if not args.name:
        raise InputError("zoo show needs a NAME (see `convscope zoo list`)")
    name = args.name[4:] if args.name.startswith("zoo:") else args.name
    base, _, arg = name.partition(":")
    if base in GENERATED:
        from importlib import import_module

        mod = import_module(f"convscope.zoo.{base}")
        data = mod.spec_data(arg or None)
        sys.stdout.write(yaml.safe_dump(data, sort_keys=False, width=120))
        return 0
    sys.stdout.write(zoo_spec_text(name))
    return 0

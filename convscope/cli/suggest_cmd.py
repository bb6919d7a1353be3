"""`convscope suggest MODEL`: rewrites that make a network cheaper or every layer productive, and what
each one buys."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn

from convscope.advice_api import suggest, write_variants
from convscope.analyses.advice import REWRITE_KEYS, Advice
from convscope.analyses.advice import Progress as ProgressFn
from convscope.cli._common import add_json_arg, console, dir_arg, json_to_stdout, shape_arg, write_json
from convscope.errors import ConvscopeError, InputError, NothingUsable
from convscope.reports.suggest_terminal import render_advice
from convscope.units import plural

HELP = "rewrite a network (cut the unproductive tail, grouped/separable convs, width, ...) and show what each buys"
DESCRIPTION = """\
Rewrite a network in the ways engineers fit a CNN into a small processor, and analyse every variant
like `analyze` does: parameters, MACs, predicted latency (when a latency model is available:
after `convscope calibrate`, or with --device), border layer and unproductive share.  Sorted by
what each saves (predicted ms, else MACs).

Rewrites: cut the unproductive tail (re-attach the classifier to the last productive layer);
remove or move a downsampling step (slower receptive-field growth); max-pool -> learned strided
conv, or -> stride of the next conv; kxk conv -> grouped (ResNeXt) or depthwise-separable; 1x1
bottlenecks; width x0.75 and x0.5; the input resolution that makes every layer productive.

Depth rules: a network with fewer than 4 spatial convolutions on its deepest path (seeds/004:
shallow students do not match deep convolutional teachers) or whose last layer sees less than
half of the input (seeds/002) is warned about, and a rewrite that makes it so is refused.
"""
EPILOG = """\
exit status: 0 done, 1 nothing usable, 2 bad input.

examples:
  convscope suggest zoo:vgg16-cifar --input 3,32,32
  convscope suggest net.yaml --input 3,224,224 --device raspi4 --write variants/
  convscope suggest mypkg.models:net --input 3,64,64 --json -
"""


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("suggest", help=HELP, description=DESCRIPTION, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL", help="spec .yaml, zoo:NAME, .onnx, or module:factory / file.py:factory")
    p.add_argument("--input", metavar="C,H,W|C,L", help="input shape, or C,L for a Conv1d model's signal (N, C, L) (required for PyTorch factories; "
                                                    "overrides a spec's input)")
    p.add_argument("--device", metavar="NAME|FILE", help="predict latency on this device (a profile name, a "
                                                         "profile .yaml, or 'local'); default: this machine if "
                                                         "calibrated")
    p.add_argument("--backend", choices=("torch", "onnxruntime", "cuda", "tflite"),
                   help="runtime for latency prediction (default: the device profile's own runtime, torch on this "
                        "machine)")
    p.add_argument("--fit", metavar="CSV", help="fit the device profile to measured networks (fitted tier)")
    p.add_argument("--dtype", default="fp32", choices=("fp32", "fp16", "bf16", "int8"),
                   help="element type for bytes and latency (default fp32)")
    p.add_argument("--batch", type=int, default=1, metavar="N", help="batch size (default 1)")
    p.add_argument("--only", metavar="KEY,...", help=f"only these rewrites: {', '.join(REWRITE_KEYS)} "
                                                    "(or width-0.75, width-0.5)")
    p.add_argument("--write", metavar="DIR", type=dir_arg, help="write the original and each recommended variant as a spec "
                                                  "file into DIR")
    add_json_arg(p)
    p.add_argument("--brief", action="store_true", help="the table only, without the explanations")
    p.add_argument("--width", type=int, metavar="COLS", help="terminal width for the table")
    p.set_defaults(handler=run)


@contextmanager
def _progress(args: argparse.Namespace) -> Iterator[ProgressFn | None]:
    err = Console(stderr=True)
    if not err.is_terminal:
        yield None
        return
    with Progress(TextColumn("suggest: {task.description}"), BarColumn(), console=err, transient=True) as bar:
        task = bar.add_task("analysing", total=None)

        def update(what: str, done: int, total: int) -> None:
            bar.update(task, description=what, completed=done, total=total)

        yield update


def _advice(args: argparse.Namespace) -> Advice:
    if args.batch < 1:
        raise InputError(f"--batch must be a positive integer, got {args.batch}")
    only = [k.strip() for k in args.only.split(",") if k.strip()] if args.only is not None else None
    if only is not None and not only:
        raise InputError(f"--only needs at least one rewrite ({', '.join(REWRITE_KEYS)}), got '{args.only}'")
    with _progress(args) as progress:
        return suggest(args.model, input=shape_arg(args.input) if args.input is not None else None, device=args.device,
                       backend=args.backend, dtype=args.dtype, batch=args.batch, fit=args.fit, only=only,
                       progress=progress)


def run(args: argparse.Namespace) -> int:
    adv = _advice(args)
    if adv.base.all_unknown:
        raise NothingUsable(f"{args.model}: every layer that computes something is an op convscope does not know")
    written, unwritten = None, None
    if args.write:
        try:
            written = write_variants(adv, args.write, ref=args.model)
        except ConvscopeError as exc:  # the advice still stands: show it, then say what was not written
            unwritten = exc
    if args.json:
        data = adv.to_dict()
        if written:
            data["written"] = {k: str(p) for k, p in written.items()}
        write_json(data, args.json)
    if not json_to_stdout(args):
        render_advice(adv, console(args), written=written, explain=not args.brief)
    elif written:
        print(f"wrote {plural(len(written), 'spec file')} to {args.write}", file=sys.stderr)
    if adv.interrupted:
        print("convscope suggest: interrupted: the table shows the rewrites tried so far", file=sys.stderr)
        return 130
    if unwritten is not None:
        where = "in the JSON" if json_to_stdout(args) else "above"
        print(f"convscope suggest: error: {unwritten}; the advice {where} stands", file=sys.stderr)
        return unwritten.exit_status
    return 0

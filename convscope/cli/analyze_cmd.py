"""`convscope analyze MODEL`: receptive fields, border layer, unproductive layers and cost."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from convscope.api import analyze, analyze_resolutions
from convscope.cli._common import add_json_arg, check_outputs, emit, html_arg, int_list_arg, shape_arg, threads_arg
from convscope.cli.calibrate_cmd import progress_bar
from convscope.errors import InputError, NothingUsable
from convscope.reports.terminal import render_analysis
from convscope.results import SCHEMA_VERSION, Analysis

HELP = "receptive fields, border layer, unproductive layers and cost of a network"
DESCRIPTION = """\
Analyse a network without training it: per layer the receptive field (rf_min and rf_max over all
paths, the jump), parameters and MACs; the border layer (the first layer whose rf_min exceeds the
input resolution), the unproductive layers (they cannot see more of the image than their input
already does, or their input map is no larger than their kernel), their share of parameters and
MACs, and the feasible input-resolution range.  With a latency prediction (this machine after
`convscope calibrate`, or --device), predicted milliseconds per layer and in total, with the tier,
device, backend and an uncertainty band.
"""
EPILOG = """\
exit status: 0 done, 1 nothing usable (every layer an op convscope does not know), 2 bad input.

examples:
  convscope analyze zoo:resnet18-imagenet --input 3,32,32
  convscope analyze my_net.yaml --res 32,64,224 --json -
  convscope analyze net.yaml --all --dtype fp16
  convscope analyze zoo:resnet50-imagenet --input 3,224,224      # + predicted ms, after `convscope calibrate`
  convscope analyze net.yaml --device raspi4                       # a device not at hand (analytic profile)
  convscope analyze net.yaml --device my_board.yaml --fit my_board_timings.csv
"""


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("analyze", help=HELP, description=DESCRIPTION, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL", help="spec .yaml, zoo:NAME, .onnx, or module:factory / file.py:factory")
    p.add_argument("--input", metavar="C,H,W|C,L", help="input shape, or C,L for a Conv1d model's signal (N, C, L) (required for PyTorch factories; "
                                                    "overrides a spec's input)")
    p.add_argument("--res", metavar="R1,R2,...", help="analyse at these square resolutions (H = W = R; a signal: lengths)")
    add_json_arg(p)
    p.add_argument("--html", metavar="FILE", type=html_arg, help="also write a self-contained HTML report")
    p.add_argument("--dtype", default="fp32", choices=("fp32", "fp16", "bf16", "int8"),
                   help="element type for weight and activation bytes (default fp32)")
    p.add_argument("--batch", type=int, default=1, metavar="N", help="batch size for MACs and bytes (default 1)")
    p.add_argument("--all", action="store_true", help="show every layer (BatchNorm, activations…), not only "
                                                      "the ones that shape the receptive field or hold weights")
    p.add_argument("--width", type=int, metavar="COLS", help="terminal width for the table")
    lat = p.add_argument_group("latency", "predicted milliseconds per layer and in total (see `convscope calibrate`)")
    lat.add_argument("--device", metavar="NAME|FILE", help="'local' (this machine, after `convscope calibrate`), a "
                     "device profile (raspi4, jetson-nano, pixel-class, desktop-cpu, …) or a profile .yaml; default: "
                     "this machine if it is calibrated")
    lat.add_argument("--fit", metavar="CSV", help="fit the profile's coefficients to networks measured on the "
                     "device (CSV with network,latency_ms)")
    lat.add_argument("--backend", choices=("torch", "onnxruntime", "cuda", "tflite"),
                     help="runtime whose fusion rules and overheads apply (default: the profile's own runtime, "
                          "torch on this machine)")
    lat.add_argument("--threads", type=threads_arg, metavar="N", help="threads of the local calibration (default: OMP_NUM_THREADS if set, else the physical cores)")
    p.set_defaults(handler=run)


def _results(args: argparse.Namespace, failed: list[tuple[int, str]]) -> list[Analysis]:
    shape = shape_arg(args.input) if args.input is not None else None
    if args.batch < 1:
        raise InputError(f"--batch must be a positive integer, got {args.batch}")
    if args.threads is not None and args.threads < 1:
        raise InputError(f"--threads must be a positive integer, got {args.threads}")
    with progress_bar() as prog:
        lat = dict(device=args.device, backend=args.backend, threads=args.threads, fit=args.fit, progress=prog)
        if args.res is not None:
            res = int_list_arg(args.res, "--res")
            return analyze_resolutions(args.model, res, input=shape, dtype=args.dtype, batch=args.batch, errors=failed,
                                       **lat)
        return [analyze(args.model, input=shape, dtype=args.dtype, batch=args.batch, **lat)]


def run(args: argparse.Namespace) -> int:
    check_outputs(args)
    failed: list[tuple[int, str]] = []  # --res sizes the network cannot be analysed at: the others still are
    results = _results(args, failed)
    if not results:
        raise InputError("; ".join(why for _, why in failed))
    if all(r.all_unknown for r in results):
        raise NothingUsable(f"{args.model}: every layer that computes something is an op convscope does not know")
    asked = [f"--{k} {v}" for k, v in (("backend", args.backend), ("threads", args.threads),
                                       ("dtype", None if args.dtype == "fp32" else args.dtype)) if v is not None]
    if args.threads is not None and args.device not in (None, "local"):
        print(f"convscope analyze: note: --threads {args.threads} is for this machine's calibration; the profile "
              f"{args.device} is a whole device and has no thread count", file=sys.stderr)
    if asked and args.device is None and all(r.latency is None for r in results):  # said, not silently dropped
        why = f"this machine is not calibrated for it (run `convscope calibrate {' '.join(asked)}`)"
        if args.backend == "cuda" and not _has_cuda():
            why = "this machine has no CUDA device to calibrate"
        print(f"convscope analyze: note: no latency prediction for {' '.join(asked)}: {why}, or give a profile "
              "with --device", file=sys.stderr)
    def render(rs: list[Analysis], con: Any) -> None:
        for r in rs:
            render_analysis(r, con, all_layers=args.all)

    def write_html(rs: list[Analysis], path: str) -> None:
        from convscope.reports.html import write_analysis_html

        write_analysis_html(rs, path)

    data = None
    if args.json:
        data = results[0].to_dict() if len(results) == 1 and not failed else {  # the wrapper for --res
            "schema_version": SCHEMA_VERSION, "results": [r.to_dict() for r in results],
            **({"errors": [{"resolution": r, "error": why} for r, why in failed]} if failed else {})}
    emit(results, args, render, write_html, data=data)
    if failed:
        raise InputError("; ".join(why for _, why in failed) + f" (the other {len(results)} resolution(s) were "
                         "analysed and written)")
    return 0


def _has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())

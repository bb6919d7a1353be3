"""`convscope compare PLAN`: which deployment is fastest — one network, specialists, a shared trunk
with heads, or a gate in front of an expert."""

from __future__ import annotations

import argparse

from convscope.analyses.deployment import compare, load_plan
from convscope.cli._common import add_json_arg, check_outputs, console, html_arg, emit, threads_arg
from convscope.errors import InputError

HELP = "compare deployment plans: one big network, specialists, a shared trunk with heads, a gated expert"
DESCRIPTION = """\
Evaluate every candidate of a deployment plan (FORMATS.md §2) before building anything: MACs per
frame, expected and worst-case latency with its uncertainty band, frames per second, resident weight
bytes, peak activation bytes, and for every network its border layer and unproductive share at the
plan's input.  Then a verdict: the fastest candidate that meets the constraints, by how much, how
sure (overlapping uncertainty bands are a tie), and why.
"""
EPILOG = """\
exit status: 0 done (also when no candidate meets the constraints: the verdict says so), 1 a network
with nothing usable, 2 bad input, 130 interrupted (predictions and what was measured are kept).

examples:
  convscope compare examples/camera/plan.yaml --html report.html
  convscope compare examples/camera/plan.yaml --device raspi4 --json -
  convscope compare examples/camera/plan.yaml --measure      # also builds and times every candidate here
"""


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("compare", help=HELP, description=DESCRIPTION, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("plan", metavar="PLAN", help="a deployment plan (.yaml, FORMATS.md §2)")
    p.add_argument("--device", metavar="NAME", help="override the plan's device: local, a profile name or a profile file")
    add_json_arg(p)
    p.add_argument("--html", metavar="FILE", type=html_arg, help="write a self-contained HTML report with plots")
    p.add_argument("--measure", action="store_true", help="also build every network (random weights) and time it here")
    p.add_argument("--backend", choices=("torch", "onnxruntime", "cuda", "tflite"),
                   help="runtime for prediction and --measure (default: the device profile's own runtime; torch "
                        "on this machine; cuda: PyTorch on the first GPU)")
    p.add_argument("--threads", type=threads_arg, metavar="N", help="CPU threads for local prediction and --measure (default: OMP_NUM_THREADS if set, else the physical cores)")
    p.add_argument("--width", type=int, metavar="COLS", help="terminal width")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.threads is not None and args.threads < 1:
        raise InputError(f"--threads must be a positive integer, got {args.threads}")
    plan = load_plan(args.plan)  # checked before anything runs
    check_outputs(args)
    err = console(args, stderr=True)
    kw = {"backend": args.backend}
    if args.threads is not None:
        kw["threads"] = args.threads
    measurer = None
    if args.measure:
        from convscope.backends.measure import measure_graph

        def measurer(graph):  # type: ignore[no-untyped-def]
            return measure_graph(graph, backend=args.backend or "torch", threads=args.threads)

    with err.status("comparing…") as status:
        cmp = compare(plan, device=args.device, measure=args.measure, measurer=measurer,
                      progress=lambda msg: status.update(msg), **kw)
    from convscope.reports.compare_report import render_comparison, write_comparison_html

    emit(cmp, args, render_comparison, write_comparison_html)
    return 130 if cmp.interrupted else 0

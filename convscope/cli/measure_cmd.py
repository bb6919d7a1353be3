"""`convscope measure MODEL|PLAN`: real latency on this machine — median, spread, runs, threads."""

from __future__ import annotations

import argparse

from rich.table import Table

from convscope.cli._common import add_json_arg, check_output, console, json_to_stdout, positive_float, shape_arg, write_json
from convscope.cli.calibrate_cmd import add_runtime_args, progress_bar
from convscope.errors import InputError
from convscope.reports._text import esc, plain
from convscope.units import fmt_ms, plural

HELP = "measure real latency: median and spread over repeated runs, with the thread count"
DESCRIPTION = """\
Build the network with random weights and time it on this machine: warm-up, a fixed thread count,
inference_mode (and GPU synchronisation), repeated runs until the median is stable or the time
limit is reached.  Runs during which other processes took CPU time from the measurement are set
aside and repeated; if the machine stays busy the result says so.  Ctrl-C keeps the runs so far.

With a deployment PLAN (FORMATS.md §2) every network of every candidate is measured where the plan
puts it, and each candidate's measured cost per frame is shown.
"""
EPILOG = """\
exit status: 0 done, 1 nothing to measure (an op convscope cannot build), 2 bad input, 130
interrupted (the runs so far are reported).

examples:
  convscope measure zoo:mobilenetv2 --batch 1 --json -
  convscope measure my_net.yaml --threads 1 --time-limit 30
  convscope measure plan.yaml
"""


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("measure", help=HELP, description=DESCRIPTION, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL|PLAN", help="spec .yaml, zoo:NAME, .onnx, module:factory, or a plan .yaml")
    add_runtime_args(p)
    p.add_argument("--input", metavar="C,H,W|C,L", help="input shape, or C,L for a Conv1d model's signal (N, C, L) (required for PyTorch factories)")
    p.add_argument("--batch", type=int, default=1, metavar="N", help="batch size (default 1)")
    p.add_argument("--time-limit", type=positive_float, default=10.0, metavar="S",
                   help="seconds per network at most (default 10); timing stops earlier once the median is stable, "
                        "or after 2000 runs; on a busy machine it may go on to three times the limit")
    p.add_argument("--min-runs", type=int, default=10, metavar="N",
                   help="undisturbed runs needed before the median may be called stable and timing stop early "
                        "(default 10); not a minimum when the time limit comes first")
    add_json_arg(p)
    p.add_argument("--width", type=int, metavar="COLS", help="terminal width for the output")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    for flag, value in (("--batch", args.batch), ("--min-runs", args.min_runs)):  # --threads: its type checks it
        if value < 1:
            raise InputError(f"{flag} must be a positive integer, got {value}")
    check_output("--json", args.json)  # before the timing, not after it
    kw = dict(backend=args.backend, batch=args.batch, threads=args.threads, dtype=args.dtype,
              time_limit_s=args.time_limit, min_runs=args.min_runs)
    from convscope.analyses._plan_parse import is_plan_file

    if is_plan_file(args.model):
        return _plan(args, kw)
    from convscope.api import load_graph
    from convscope.backends.measure import measure_graph

    graph = load_graph(args.model, input=shape_arg(args.input) if args.input is not None else None)
    try:
        with progress_bar() as prog:
            m = measure_graph(graph, progress=prog, ref=args.model, **kw)
    except KeyboardInterrupt:  # before the first timed run: a record that says so, for scripts
        if args.json:
            from convscope.backends.measure import not_measured

            write_json(not_measured(graph, ref=args.model, **kw).to_dict(), args.json)
        raise
    if args.json:
        write_json(m.to_dict(), args.json)
    if not json_to_stdout(args):
        _render(m, console(args))
    return 130 if m.interrupted else 0


def _render(m, con) -> None:  # type: ignore[no-untyped-def]
    con.print(f"[bold]{esc(m.model)}[/bold] · input {'×'.join(map(str, m.input))} · batch {m.batch} · {m.dtype} · "
              f"{m.backend} · {plural(m.threads, 'thread')} · {m.device}")
    spread = f"p10 {fmt_ms(m.p10_ms)} – p90 {fmt_ms(m.p90_ms)}"
    extra = f"; {m.disturbed_runs} disturbed runs set aside" if m.disturbed_runs and not m.interference else ""
    con.print(f"  median [bold]{fmt_ms(m.median_ms)}[/bold] ({spread}) over {m.runs} runs{extra}")
    for n in m.notes:
        con.print(f"  [yellow]note:[/yellow] {esc(n)}")


def _plan(args: argparse.Namespace, kw: dict) -> int:  # type: ignore[type-arg]
    from convscope.backends.measure import measure_plan

    if args.input is not None:
        raise InputError("--input does not apply to a plan: the plan states its input")
    with progress_bar() as prog:
        pm = measure_plan(args.model, progress=(lambda s: prog(0, 0, s)) if prog else None, **kw)
    status = 130 if pm.interrupted else 0
    if args.json:
        write_json(pm.to_dict(), args.json)
    if json_to_stdout(args):
        return status
    con = console(args)
    t = Table(title=f"{esc(pm.plan)} — measured, input {'×'.join(map(str, pm.input))}", title_justify="left",
              header_style="bold")
    for c in ("candidate", "network", "median", "p10 – p90", "runs", "threads"):
        t.add_column(c, justify="right" if c in ("median", "runs", "threads") else "left")
    for cand, role, ref, m in pm.networks:
        t.add_row(plain(cand), plain(f"{role}: {ref}"), fmt_ms(m.median_ms), f"{fmt_ms(m.p10_ms)} – {fmt_ms(m.p90_ms)}",
                  str(m.runs), str(m.threads))
    con.print(t)
    for name, kind, ms, lo, hi in pm.candidates:
        if ms is None:
            con.print(f"  {esc(name)} ({kind}): not measured (interrupted)")
        else:
            con.print(f"  {esc(name)} ({kind}): {fmt_ms(ms)} per frame (p10 {fmt_ms(lo)} – p90 {fmt_ms(hi)})")
    notes = dict.fromkeys(f"{ref}: {n}" for _, _, ref, m in pm.networks for n in m.notes)  # each network once
    for n in notes:
        con.print(f"  [yellow]note:[/yellow] {esc(n)}")
    if pm.interrupted:
        con.print("  [yellow]interrupted:[/yellow] the networks measured so far are shown; the rest were not timed")
    return status

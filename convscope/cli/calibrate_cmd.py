"""`convscope calibrate [MODEL...]`: time every unique layer configuration on this machine (cached)."""

from __future__ import annotations

import argparse
import time
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from convscope.analyses.latency import CALIBRATED_DTYPES
from convscope.cli._common import add_json_arg, check_output, console, json_to_stdout, shape_arg, threads_arg, write_json
from convscope.errors import InputError, NothingUsable
from convscope.reports._text import esc, plain
from convscope.units import plural

HELP = "time each unique layer configuration on this machine, for the local latency tier"
DESCRIPTION = """\
Measure each unique layer configuration (op, attributes, input shape, batch, dtype) once with the
chosen backend and cache it (SQLite, under ~/.cache/convscope or $CONVSCOPE_CACHE), keyed by this
machine's fingerprint, the backend, the thread count and the dtype.  Then fit the per-network
overhead (framework dispatch per node, per call) on a fixed set of networks measured end to end.
Afterwards `convscope analyze` shows predicted milliseconds per layer and in total.

Without MODEL: the zoo and a few variants (several minutes on a quiet 2-core machine).  With
MODEL...: the layers of those networks; a deployment PLAN (FORMATS.md §2) stands for every network
it runs, at the shape it runs at.  Runs disturbed by other processes are repeated; Ctrl-C keeps
what was measured.
"""
EPILOG = """\
exit status: 0 done, 1 nothing could be timed (a network of unknown ops, a machine that stayed
busy: the layers timed are kept), 2 bad input, 130 interrupted (the measured layers are kept).

examples:
  convscope calibrate
  convscope calibrate my_net.yaml zoo:mobilenetv2 --threads 1
  convscope calibrate examples/camera/plan.yaml
  convscope calibrate --backend onnxruntime
  convscope calibrate --list
"""


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("calibrate", help=HELP, description=DESCRIPTION, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="*", metavar="MODEL|PLAN", help="networks (or plans) whose layers to measure (default: the zoo)")
    add_runtime_args(p)
    p.add_argument("--input", metavar="C,H,W|C,L", help="input shape, or C,L for a Conv1d model's signal (N, C, L) for the MODELs")
    p.add_argument("--batch", type=int, default=1, metavar="N", help="batch size (default 1)")
    p.add_argument("--refit", action="store_true", help="fit the per-network overhead again")
    p.add_argument("--force", action="store_true", help="measure layers again even if cached")
    p.add_argument("--passes", type=int, default=3, metavar="N",
                   help="time every layer in N passes over the list and keep the median (default 3; more "
                        "passes average out a machine whose speed drifts)")
    p.add_argument("--list", action="store_true", help="list the calibrations in the cache and exit")
    add_json_arg(p)
    p.add_argument("--width", type=int, metavar="COLS", help="terminal width for the output")
    p.set_defaults(handler=run)


def add_runtime_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", default="torch", choices=("torch", "onnxruntime", "cuda"),
                   help="runtime to time (default torch: PyTorch eager on the CPU)")
    p.add_argument("--threads", type=threads_arg, metavar="N", help="intra-op threads (default: OMP_NUM_THREADS if set, else the physical cores)")
    p.add_argument("--dtype", default="fp32", choices=CALIBRATED_DTYPES, help="element type (default fp32; fp16 and bf16 on a CPU run "
                   "emulated and calibrate many times slower)")


@contextmanager
def progress_bar(enabled: bool = True, log: str | None = None) -> Iterator[Callable[[float, float, str], None] | None]:
    """A rich progress bar on stderr, shown from the first update on; yields the
    ``progress(done, total, what)`` callback.  Off a terminal there is no bar; with ``log`` (the
    command's name) a plain line on stderr whenever the stage (``what`` up to a colon) changes."""
    if not enabled:
        yield None
        return
    cols = (TextColumn("{task.description}", style="cyan"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    err = console(stderr=True)
    bar = Progress(*cols, console=err, transient=True)
    task = bar.add_task("starting", total=None)
    start, stage = time.monotonic(), [""]

    def update(done: float, total: float, what: str) -> None:
        if not err.is_terminal:  # a log, not a bar: one line per network and pass (minutes go by)
            key = what.split(":")[0]
            if log and key != stage[0]:
                stage[0] = key
                print(f"convscope {log}: [{time.monotonic() - start:5.0f} s] {key} "
                      f"({int(done)}/{int(total)})", file=sys.stderr, flush=True)
            return
        if not bar.live.is_started:
            bar.start()
        bar.update(task, completed=done, total=total or None, description=what[:60])

    try:
        yield update
    finally:
        if bar.live.is_started:
            bar.stop()


def _graphs(args: argparse.Namespace) -> list | None:  # type: ignore[type-arg]
    if not args.models:
        if args.input is not None:
            raise InputError(f"--input {args.input} applies to the MODELs given, and none is: without one, calibrate "
                             "times the zoo's layers at the sizes it needs (give MODEL --input C,H,W to time a model "
                             "at another size)")
        return None
    from convscope.analyses._plan_parse import is_plan_file
    from convscope.analyses.deployment import plan_graphs
    from convscope.api import load_graph

    shape = shape_arg(args.input) if args.input is not None else None
    out = []
    for m in args.models:
        if is_plan_file(m):
            if shape is not None:
                raise InputError(f"--input does not apply to a plan ({m}): the plan states its input")
            out += plan_graphs(m)
        else:
            out.append(load_graph(m, input=shape))
    return out


def run(args: argparse.Namespace) -> int:
    if args.list:
        if args.models:
            raise InputError(f"--list shows what the cache holds and takes no model (got {' '.join(args.models)}); "
                             "to time a model's layers, leave out --list")
        return _list(args)
    for flag, value in (("--batch", args.batch), ("--passes", args.passes)):  # --threads: its type checks it
        if value < 1:
            raise InputError(f"{flag} must be a positive integer, got {value}")
    from convscope.backends.calibrate import calibrate
    from convscope.ir.ops import OpKind

    check_output("--json", args.json)  # before the minutes of timing, not after them
    graphs = _graphs(args)  # None: the zoo and its variants
    for g in graphs or ():
        if all(n.op in (OpKind.INPUT, OpKind.UNKNOWN) for n in g.nodes):
            raise NothingUsable(f"{g.name}: every layer is an op convscope does not know, so there is nothing to "
                                "time")
    with warnings.catch_warnings(record=True), progress_bar(log="calibrate") as prog:
        report = calibrate(graphs, backend=args.backend, threads=args.threads, dtype=args.dtype, batch=args.batch,
                           refit=args.refit, force=args.force, progress=prog, passes=args.passes)
    for w in report.warnings:  # recorded while the progress bar ran; on stderr like every command's
        print(f"convscope calibrate: warning: {w}", file=sys.stderr)
    if args.json:
        write_json(report.to_dict(), args.json)
    if not json_to_stdout(args):
        _render(report, console(args))
    return 130 if report.interrupted else 0


def _render(r, con) -> None:  # type: ignore[no-untyped-def]
    state = "[red]interrupted[/red]" if r.interrupted else "calibrated"
    con.print(f"[bold]{state}[/bold] {r.device} · {r.backend} · {plural(r.threads, 'thread')} · {r.dtype} · batch {r.batch}")
    con.print(f"  {r.kernels} unique layer configurations: {r.measured} measured now, {r.cached} already cached"
              + (" — the measured ones are kept" if r.interrupted else "") + f" ({r.elapsed_s:.1f} s in all)")
    for name, why in r.failed[:10]:
        con.print(f"  [yellow]not measured[/yellow] {esc(name)}: {esc(why)}")
    cal = r.calibration
    if cal is None and r.interrupted:
        con.print("  per-network overhead: [yellow]not fitted[/yellow] (interrupted): analyze gives no local latency "
                  "prediction until `convscope calibrate` runs to the end (it reuses the timings kept)")
    if cal is not None:
        verb = "fitted now" if r.refitted else "from an earlier run"
        con.print(f"  per-network overhead ({verb}, {len(cal.networks)} networks): ×{cal.scale:.3f} on the layers, "
                  f"{1e3 * cal.per_node_ms:.1f} µs per node, {cal.cold_ms_per_mb:.3f} ms per cold weight MB, "
                  f"{cal.fixed_ms:.3f} ms per call; "
                  f"band ×{cal.band[0]:.2f}–×{cal.band[1]:.2f}")
        if r.refitted:
            t = Table(header_style="bold", title_justify="left")
            for c in ("network", "measured", "predicted", "error"):
                t.add_column(c, justify="left" if c == "network" else "right")
            for name, m, p in cal.networks:
                t.add_row(plain(name[:60]), f"{m:.2f} ms", f"{p:.2f} ms", f"{100 * (p - m) / m:+.1f}%")
            con.print(t)
    con.print(f"  cache: {esc(r.cache)}")


def _list(args: argparse.Namespace) -> int:
    from convscope.backends._cache import _unusable, cache_path, open_store

    path = cache_path()
    if path.exists():
        rows = open_store(path).calibrations()  # an unreadable file: moved aside, with a warning
    elif any(p.exists() and not p.is_dir() for p in path.parents):  # $CONVSCOPE_CACHE names a file
        raise InputError(_unusable(path, f"{next(p for p in path.parents if p.exists() and not p.is_dir())} "
                                         "is a file, not a directory"))
    else:
        rows = []
    if args.json:
        write_json({"schema_version": 1, "cache": str(path), "calibrations": [
            {"device": _device(d), "backend": b, "threads": t, "dtype": dt, "created": c} for d, b, t, dt, c in rows]},
            args.json)
        return 0
    con = console(args)
    t = Table(title=f"calibrations in {esc(path)}", title_justify="left", header_style="bold")
    for col in ("device", "backend", "threads", "dtype", "created"):
        t.add_column(col)
    for desc, b, th, dt, created in rows:
        t.add_row(_device(desc), b, str(th), dt, time.strftime("%Y-%m-%d %H:%M", time.localtime(created)))
    if rows:
        con.print(t)
    else:
        kept = open_store(path).count_layers() if path.exists() else 0
        more = (f" ({plural(kept, 'layer timing')} kept from an unfinished run: calibrating again reuses them)"
                if kept else "")
        con.print(f"no calibrations in {esc(path)}{more}: run `convscope calibrate`")
    return 0


def _device(description: str) -> str:
    """The stored fingerprint description (JSON pairs) in words."""
    import json

    try:
        d = dict(json.loads(description))
    except (ValueError, TypeError):
        return description
    libs = ", ".join(f"{k} {d[k]}" for k in ("torch", "onnxruntime") if k in d)
    return f"{d.get('cpu', '?')} ({d.get('cores', '?')} cores)" + (f", {d['gpu']}" if "gpu" in d else "") + \
        (f"; {libs}" if libs else "")

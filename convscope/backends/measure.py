"""Real latency: build the network (random weights) and time it properly.

``measure_graph`` warms up, then times single forward passes with a fixed thread count under
``inference_mode`` (synchronising the GPU after each), until the median is stable (the medians of the
first and second half of the runs agree within ``STABLE``, after at least 2 s or half the limit: a
machine's speed drifts over seconds, ±10% on this VM, and a median of one quiet second is not the
network's) or the time limit is reached.  Runs during
which another process took CPU time from us (see :mod:`convscope.backends._interference`) are set
aside and repeated after a short pause; if the machine stays busy the result says so
(``interference``).  Ctrl-C keeps the runs made so far (``interrupted``).

The median and the 10th/90th percentiles are over the clean runs; the thread count is part of every
result.  Memory is timed in steady state (freed activations stay in the process, see
:func:`convscope.backends._runners.steady_allocator`).  JSON: FORMATS.md §5 ``measure`` (``to_dict``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from convscope.backends import _interference as itf
from convscope.backends._cache import default_threads, device_fingerprint
from convscope.backends._runners import prepare, threads_set
from convscope.errors import InputError, batch_size, positive_int
from convscope.ir.graph import SIGNAL_INPUT, Graph
from convscope.results import SCHEMA_VERSION

__all__ = ["Measurement", "PlanMeasurement", "Timing", "measure_graph", "measure_plan", "time_runs", "Progress"]

STABLE = 0.01  # relative difference of the two half-medians that counts as stable
Progress = Callable[[float, float, str], None]  # (done, total, what)


@dataclass(frozen=True, slots=True)
class Timing:
    """Raw timings of one repeated call, in ms per call."""

    clean: tuple[float, ...]
    disturbed: tuple[float, ...]
    warmup: int
    stable: bool
    interrupted: bool
    elapsed_s: float

    @property
    def mixed(self) -> bool:
        """Fewer than 3 clean runs: the figures include the disturbed ones."""
        return len(self.clean) < 3 and bool(self.disturbed)

    @property
    def used(self) -> tuple[float, ...]:
        """The runs the figures come from: the clean ones, or every run if fewer than 3 were clean."""
        return self.clean + self.disturbed if self.mixed else self.clean

    def quantiles(self) -> tuple[float, float, float]:
        v = np.asarray(self.used)
        if not len(v):
            return (float("nan"),) * 3
        return float(np.median(v)), float(np.percentile(v, 10)), float(np.percentile(v, 90))


def _stable(v: Sequence[float]) -> bool:
    h = len(v) // 2
    a, b = float(np.median(v[:h])), float(np.median(v[h:]))
    return abs(a - b) <= STABLE * float(np.median(v))


def time_runs(call: Callable[[], Any], *, inner: int = 1, min_runs: int = 10, time_limit_s: float = 10.0,
              warmup: int = 3, warmup_s: float | None = None, min_time_s: float = 0.0, max_runs: int = 2000,
              oversubscribed: bool = False, progress: Callable[[float, int], None] | None = None,
              end: Callable[[], Any] | None = None) -> Timing:
    """Time ``call`` (``inner`` calls per run, then ``end()`` inside the run: a GPU synchronisation
    when ``call`` only enqueues work), setting disturbed runs aside.  Warm up for ``warmup``
    calls and ``warmup_s`` seconds (default a tenth of the limit, at most 1 s).  Stops when stable
    after ``min_runs`` clean runs and ``min_time_s`` seconds, at ``time_limit_s``, or - when the machine is busy - at three
    times the limit with whatever it has.  ``progress(elapsed_s, clean_runs)`` after each run."""
    start = time.perf_counter()
    warm_s = min(1.0, 0.1 * time_limit_s) if warmup_s is None else warmup_s
    clean: list[float] = []
    bad: list[float] = []
    done_warm, stable, interrupted, pause = 0, False, False, 0.02
    try:
        while done_warm < warmup or time.perf_counter() - start < warm_s:
            call()
            if end is not None:
                end()
            done_warm += 1
            if done_warm >= warmup and time.perf_counter() - start >= time_limit_s:
                break
        while len(clean) + len(bad) < max_runs:
            a = itf.sample()
            for _ in range(inner):
                call()
            if end is not None:
                end()
            b = itf.sample(end=True)
            ms = (b.wall - a.wall) * 1e3 / inner
            if itf.disturbance(a, b, oversubscribed=oversubscribed).disturbed:
                bad.append(ms)
                time.sleep(pause)
                pause = min(pause * 2, 0.5)
            else:
                clean.append(ms)
                pause = 0.02
            elapsed = time.perf_counter() - start
            if progress:
                progress(elapsed, len(clean))
            if len(clean) >= min_runs and elapsed >= min_time_s and _stable(clean):
                stable = True
                break
            if elapsed >= time_limit_s and (len(clean) >= 3 or elapsed >= 3 * time_limit_s):
                break
        else:  # max_runs reached before the minimum time (a network of a tenth of a millisecond): the
            # runs are many, so their halves say whether the median settled
            stable = len(clean) >= min_runs and _stable(clean)
    except KeyboardInterrupt:
        if not clean and not bad:
            raise
        interrupted = True
    return Timing(tuple(clean), tuple(bad), done_warm, stable, interrupted, time.perf_counter() - start)


@dataclass(frozen=True, slots=True)
class Measurement:
    model: str
    backend: str
    device: str
    threads: int
    batch: int
    input: tuple[int, ...]
    dtype: str
    median_ms: float
    p10_ms: float
    p90_ms: float
    runs: int  # runs the figures come from
    disturbed_runs: int  # runs set aside because another process took CPU time
    interference: bool  # True when the figures include disturbed runs (the machine stayed busy)
    stable: bool
    interrupted: bool
    warmup_runs: int
    times_ms: tuple[float, ...] = field(default=(), repr=False)
    notes: tuple[str, ...] = ()
    ref: str | None = None  # the MODEL argument it came from (zoo:NAME, a path), when not the name

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION, "model": self.model, "backend": self.backend,
            "device": self.device, "threads": self.threads, "batch": self.batch, "input": list(self.input),
            "median_ms": self.median_ms, "p10_ms": self.p10_ms, "p90_ms": self.p90_ms, "runs": self.runs,
            "dtype": self.dtype, "disturbed_runs": self.disturbed_runs, "interference": self.interference,
            "stable": self.stable, "interrupted": self.interrupted, "warmup_runs": self.warmup_runs,
            "times_ms": list(self.times_ms), "notes": list(self.notes),
            "ref": self.ref,  # null for a module or a Graph given in Python
        }


def _notes(t: Timing, threads: int, limit: float) -> tuple[str, ...]:
    notes = []
    n_all = len(t.clean) + len(t.disturbed)
    if t.disturbed:
        notes.append(f"{len(t.disturbed)} of {n_all} runs were disturbed by other processes and "
                     + ("kept: too few clean runs, the machine stayed busy" if t.mixed else "set aside"))
    if not t.stable and not t.interrupted:
        stop = f"{t.elapsed_s:.1f} s and {n_all} runs" if t.elapsed_s < limit else f"the {limit:g} s limit"
        notes.append(f"the median had not settled within {stop}")
    if t.interrupted:
        notes.append("interrupted: figures from the runs made so far")
    if threads > (itf._NCPU or threads):
        notes.append(f"{threads} threads on {itf._NCPU} CPUs: oversubscribed")
    if not itf.available():
        notes.append("no /proc: interference from other processes cannot be detected here")
    return tuple(notes)


def measure_graph(graph: Graph, *, backend: str = "torch", batch: int = 1, threads: int | None = None,
                  dtype: str = "fp32", time_limit_s: float = 10.0, min_runs: int = 10,
                  progress: Progress | None = None, model: str | None = None, ref: str | None = None) -> Measurement:
    """Build ``graph`` with random weights and time it on this machine (see the module docstring)."""
    batch = batch_size(batch)
    threads = None if threads is None else positive_int(threads, "threads")
    min_runs = positive_int(min_runs, "min_runs")
    if isinstance(time_limit_s, bool) or not isinstance(time_limit_s, (int, float)) \
            or not math.isfinite(time_limit_s) or time_limit_s <= 0:
        raise InputError(f"time_limit_s must be a positive number of seconds, got {time_limit_s!r}")
    n = threads or default_threads()
    label = device_fingerprint(backend).label()
    with threads_set(n):
        runner = prepare(graph, backend=backend, batch=batch, dtype=dtype, threads=n, label=label)
        report = (lambda e, k: progress(min(e, time_limit_s), time_limit_s, f"{k} runs")) if progress else None
        t = time_runs(runner.call, min_runs=min_runs, time_limit_s=time_limit_s, min_time_s=min(2.0, time_limit_s / 2),
                      oversubscribed=n > (itf._NCPU or n), progress=report)
    med, p10, p90 = t.quantiles()
    notes = _notes(t, n, time_limit_s)
    meta = graph.meta_dict()
    if meta.get(SIGNAL_INPUT) or (meta.get("frontend") == "onnx" and graph.input_shape[1:2] == (1,)):
        notes += ("timed as convscope builds the network: its 1-D layers as 1xk 2-D ones on the (C, 1, L) map; "
                  "the model's own Conv1d layers may run somewhat faster",)
    return Measurement(
        model=model or graph.name, backend=backend, device=runner.device, threads=n, batch=batch,
        input=graph.input_shape, dtype=dtype, median_ms=med, p10_ms=p10, p90_ms=p90, runs=len(t.used),
        disturbed_runs=len(t.disturbed), interference=t.mixed, stable=t.stable,
        interrupted=t.interrupted, warmup_runs=t.warmup, times_ms=t.used, notes=notes,
        ref=ref)


def not_measured(graph: Graph, *, backend: str = "torch", batch: int = 1, threads: int | None = None,
                 dtype: str = "fp32", model: str | None = None, ref: str | None = None, **_: Any) -> Measurement:
    """The record of a measurement interrupted before its first timed run: no figures, zero runs
    (what ``measure --json`` writes when Ctrl-C comes while the network is still being built)."""
    return Measurement(
        model=model or graph.name, backend=backend, device=device_fingerprint(backend).label(),
        threads=threads or default_threads(), batch=batch, input=graph.input_shape, dtype=dtype,
        median_ms=None, p10_ms=None, p90_ms=None, runs=0, disturbed_runs=0,  # type: ignore[arg-type]
        interference=False, stable=False, interrupted=True, warmup_runs=0,
        notes=("interrupted before the first timed run: nothing was measured",), ref=ref)


@dataclass(frozen=True, slots=True)
class PlanMeasurement:
    """Every network of every candidate of a deployment plan, measured where the plan puts it
    (a trunk cut at its layer, heads at the trunk's output), and each candidate's measured cost per
    frame under the plan's semantics (``convscope.analyses.deployment.combine``)."""

    plan: str
    input: tuple[int, ...]
    candidates: tuple[tuple[str, str, float | None, float | None, float | None], ...]  # name, kind, ms, p10, p90
    networks: tuple[tuple[str, str, str, Measurement], ...]  # candidate, role, ref, measurement
    interrupted: bool = False  # Ctrl-C: the networks measured so far (the last one cut short), no more

    def to_dict(self) -> dict[str, Any]:
        first = self.networks[0][3] if self.networks else None  # every network ran on the same set-up
        setup = {k: getattr(first, k) for k in ("backend", "device", "threads", "batch", "dtype")} if first else {}
        return {
            "schema_version": SCHEMA_VERSION, "plan": self.plan, "input": list(self.input), **setup,
            "candidates": [{"name": n, "kind": k, "measured_ms": m, "median_ms": m, "p10_ms": lo, "p90_ms": hi,
                            "networks": [{**x.to_dict(), "role": r, "ref": ref} for c, r, ref, x in self.networks
                                         if c == n]}
                           for n, k, m, lo, hi in self.candidates],
            **({"interrupted": True} if self.interrupted else {}),
        }


def measure_plan(path: str, *, progress: Callable[[str], None] | None = None, **kw: Any) -> PlanMeasurement:
    """Measure a deployment plan (FORMATS.md §2); ``kw`` as for :func:`measure_graph`."""
    from convscope.analyses.analyze import analyze_graph
    from convscope.analyses.deployment import NetworkResult, combine, load_plan, plan_networks

    plan = load_plan(path)
    done: dict[tuple[str, tuple[int, ...], str | None], Measurement] = {}
    cands: list[tuple[str, str, float | None, float | None, float | None]] = []
    rows: list[tuple[str, str, str, Measurement]] = []
    stopped = False
    for c, placed in plan_networks(plan):
        nets, cut = [], False
        for ref, g, key in placed:
            if stopped:
                break
            if key not in done:
                if progress:
                    progress(f"measuring {ref.ref} ({c.name}, {ref.role})")
                try:
                    done[key] = measure_graph(g, **kw)
                except KeyboardInterrupt:  # while building: keep what was measured before
                    stopped = True
                    break
                stopped = done[key].interrupted
            m = done[key]
            cut = cut or m.interrupted
            rows.append((c.name, ref.role, ref.ref, m))
            per = m.batch  # a call times a batch: per frame is its share
            nets.append(NetworkResult(ref.ref, ref.role, analyze_graph(g), m.median_ms / per, m.p10_ms / per,
                                      m.p90_ms / per))
        if len(nets) == len(placed) and not cut:
            r = combine(c, nets)
            cands.append((c.name, c.kind, r.measured_ms, r.measured_low_ms, r.measured_high_ms))
        else:  # a network not measured, or cut short: no figure per frame for this candidate
            cands.append((c.name, c.kind, None, None, None))
    return PlanMeasurement(plan.name, plan.input, tuple(cands), tuple(rows), stopped)

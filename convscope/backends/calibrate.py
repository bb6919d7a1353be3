"""``calibrate``: measure each unique kernel once on this machine, and fit the per-network overhead.

The local latency tier (``convscope.analyses.latency``) predicts a network as

    ms = scale · Σ kernel_ms  +  per_node_ms · nodes  +  cold_ms_per_mb · cold_MB  +  fixed_ms

where ``kernel_ms`` is the median time of one kernel (see ``_latency_kernels``: one op in PyTorch
eager, a fused conv+bn(+add)+act in ONNX Runtime) measured alone on a tensor of its real shape, and
the three coefficients are fitted (relative least squares, non-negative) on a fixed set of whole
networks measured end to end (``OVERHEAD_SET``; none of them is a zoo network at its own input, so
the benchmarks that use the zoo stay out of sample).  ``per_node_ms`` is the framework's cost per graph
node that a kernel timed alone does not see (the interpreter loop, freeing buffers), ``fixed_ms``
the per-call cost (input copy, output tuple), ``scale`` what timing kernels in isolation misses
(caches warm in the loop, cold in the network).  ``cold_MB`` (:func:`convscope.analyses.latency.
cold_weight_mb`) are the weights a kernel kept in the core's cache while timed alone but reads from
memory in a network whose weights do not fit that cache: without it, on this 2-core VM (2 MiB L2 per
core), ResNet-18 and VGG-16 at 32 px ran 20-30% slower than their kernels' sum while small-weight
networks of as many nodes (NAS-Bench-201, plain CNNs) matched theirs, and one ``scale`` could not
serve both.

Kernels are timed with the runtime's own call (``GraphModule.run`` of a one-kernel graph, or an ONNX
Runtime session of it) minus the same call on a trivial kernel, ``inner`` calls per sample so that
a sample lasts at least ``SAMPLE_S``; samples disturbed by other processes are repeated.  Every
timing is written to the cache as soon as it is taken, so an interrupted run keeps what it measured.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import numpy as np

from convscope.analyses._latency_fit import band_from_ratios, fit_relative, loo_ratios
from convscope.analyses._latency_kernels import Kernel, kernels
from convscope.analyses.cost import cost
from convscope.analyses.latency import cold_weight_mb
from convscope.backends import _interference as itf
from convscope.backends._cache import Calibration, Fingerprint, LatencyStore, LayerTiming, default_threads, \
    core_cache_bytes, device_fingerprint, open_store
from convscope.backends._runners import Runner, prepare, steady_allocator, threads_set, torch_dtype
from convscope.backends.measure import Progress, measure_graph, time_runs
from convscope.errors import ConvscopeError, InputError, NothingUsable
from convscope.ir import ops as O
from convscope.ir.graph import Graph, GraphBuilder
from convscope.ir.ops import OpKind

__all__ = ["CalibrationReport", "KernelRun", "Busy", "calibrate", "kernel_graph", "time_kernel", "measure_kernels", "fit_overhead",
           "standard_set", "overhead_set"]

SAMPLE_S = 0.002
KERNEL_LIMIT_S = 0.3  # seconds per kernel, over all passes
PASSES = 3
ROUNDS = 3  # interleaved end-to-end measurements of each overhead network


@dataclass(frozen=True, slots=True)
class CalibrationReport:
    device: str
    backend: str
    threads: int
    dtype: str
    batch: int
    kernels: int  # unique kernels of the networks asked for
    measured: int  # of which measured now
    cached: int  # of which already in the cache
    failed: tuple[tuple[str, str], ...]  # (kernel head, why)
    calibration: Calibration | None
    refitted: bool
    interrupted: bool
    elapsed_s: float
    cache: str
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, object]:
        return {
            "schema_version": 1, "device": self.device, "backend": self.backend, "threads": self.threads,
            "dtype": self.dtype, "batch": self.batch, "kernels": self.kernels, "measured": self.measured,
            "cached": self.cached, "failed": [{"layer": n, "why": w} for n, w in self.failed],
            "calibration": self.calibration.to_dict() if self.calibration else None, "refitted": self.refitted,
            "interrupted": self.interrupted, "elapsed_s": self.elapsed_s, "cache": self.cache,
            "warnings": list(self.warnings),
        }


def kernel_graph(graph: Graph, k: Kernel) -> Graph:
    """The network of one kernel: its external inputs as graph inputs, then its nodes."""
    b = GraphBuilder(f"kernel:{k.name}")
    inside = set(k.nodes)
    ext: dict[str, str] = {}
    for name in k.nodes:
        node = graph.node(name)
        for i in node.inputs:
            if i not in inside and i not in ext:
                ext[i] = f"x{len(ext)}"
                info = graph.node(i).out
                b.add_input(ext[i], info.shape, layout=info)
        b.add(name, node.op, node.attrs, [ext.get(i, i) for i in node.inputs])
    return b.build(outputs=[k.nodes[-1]])


def _baseline_graph(backend: str) -> Graph:
    """The cost of calling a one-kernel graph, to subtract: an identity step for PyTorch (the call
    and interpreter overhead, not the op's dispatch), a one-element ReLU session for ONNX Runtime
    (``session.run``'s own overhead, which a whole network pays once)."""
    b = GraphBuilder("baseline")
    b.add_input("x0", (1, 1, 1))
    if backend == "onnxruntime":
        b.add("relu", OpKind.ACT, O.ActAttrs("relu"), ["x0"])
    else:
        b.add("same", OpKind.IDENTITY, O.NoAttrs(), ["x0"])
    return b.build()


def _runner_for(g: Graph, backend: str, batch: int, dtype: str, threads: int) -> Runner:
    """A layer that does not fit in memory is an InputError (``_runners``): a layer not timed.  ONNX
    Runtime runs the exported fp32 graph whatever dtype the calibration is keyed by."""
    steady_allocator()
    return prepare(g, backend=backend, batch=batch, dtype="fp32" if backend == "onnxruntime" else dtype,
                   threads=threads, label="")


UNSTEADY = 1.5  # median / p10 above which a kernel's samples hold two modes (a disturbed run)


class Busy(Exception):
    """Too few undisturbed samples: other processes kept taking CPU time."""


def time_kernel(g: Graph, *, backend: str, batch: int, dtype: str, threads: int,
                limit_s: float = KERNEL_LIMIT_S) -> LayerTiming:
    """Median time of one call of the kernel graph ``g`` (call overhead not subtracted).  Raises
    :class:`Busy` rather than return a figure made of disturbed samples.  On ``cuda`` the calls of a
    sample are enqueued back to back and synchronised once at its end (see ``_runners``): the
    layer's cost inside an eager network, not one launch-and-wait round trip."""
    runner = _runner_for(g, backend, batch, dtype, threads)
    call = runner.call
    call()  # first call: lazy initialisation, not timed
    t0 = time.perf_counter()
    call()
    once = max(time.perf_counter() - t0, 1e-7)
    if once < SAMPLE_S / 10:  # a fast kernel: a better estimate over several calls
        t0 = time.perf_counter()
        for _ in range(10):
            call()
        once = max((time.perf_counter() - t0) / 10, 1e-7)
    inner = max(1, min(10000, int(SAMPLE_S / once)))
    # On a CPU the calls above warmed the kernel: two more, no warm-up period (a tenth of every
    # kernel's time went to one).  A GPU keeps its period: its clocks drop while the host builds the
    # next kernel's module.
    t = time_runs(runner.enqueue or call, inner=inner, min_runs=3, time_limit_s=max(limit_s, 3 * once), warmup=2,
                  warmup_s=None if backend == "cuda" else 0.0, oversubscribed=threads > itf._NCPU, end=runner.sync)
    if t.interrupted:
        raise KeyboardInterrupt
    if t.mixed or not t.clean:
        raise Busy(f"{len(t.disturbed)} of {len(t.disturbed) + len(t.clean)} samples disturbed")
    med, p10, p90 = t.quantiles()
    if med > UNSTEADY * p10 and med - p10 > 0.05:  # two modes: an interruption the signals did not see
        raise Busy(f"unsteady samples: median {med:.3f} ms, p10 {p10:.3f} ms")
    return LayerTiming(med, p10, p90, len(t.used))


def _baseline(backend: str, dtype: str, threads: int) -> float:
    return time_kernel(_baseline_graph(backend), backend=backend, batch=1, dtype=dtype, threads=threads, limit_s=0.3).ms


@dataclass(frozen=True, slots=True)
class KernelRun:
    measured: int
    failed: tuple[tuple[str, str], ...]  # (kernel head, why)
    interrupted: bool


def measure_kernels(items: Sequence[tuple[Graph, Kernel]], *, backend: str, batch: int, dtype: str,
                    threads: int, store: LatencyStore, fp: Fingerprint, progress: Progress | None = None,
                    passes: int = PASSES, retries: int = 4, wait_s: float = 30.0) -> KernelRun:
    """Time each (graph, kernel) and store it.  Every kernel is timed once per pass over the whole
    list and its figure is the median over the passes: a machine's speed drifts (±10% over seconds on
    this VM), and one window per kernel put a 24-layer network 30% off when its one conv happened to
    be timed in a slow moment.  The figure is stored after each pass, so Ctrl-C keeps what was
    measured.  A kernel the machine was too busy to time is retried after waiting (up to ``wait_s``)
    for the other processes to leave us the CPUs, ``retries`` times."""
    failed: dict[str, tuple[str, str]] = {}
    got: dict[str, list[LayerTiming]] = {}
    bases: list[float] = []
    limit = KERNEL_LIMIT_S / passes
    try:
        for p in range(passes):
            base = _with_retries(lambda: _baseline(backend, dtype, threads), threads, retries, wait_s) if items else 0.0
            if base is not None:
                bases.append(base)
            for i, (g, k) in enumerate(items):
                if progress:
                    progress(p * len(items) + i, passes * len(items), f"pass {p + 1}/{passes} {g.name}: {k.name}")
                if k.signature in failed or not bases:
                    failed.setdefault(k.signature, (k.name, _BUSY))
                    continue
                t = _time_one(g, k, backend, batch, dtype, threads, retries, wait_s, limit, failed)
                if t is not None:
                    got.setdefault(k.signature, []).append(t)
                    store.put_layer(fp, backend, threads, dtype, k.signature, _combine(got[k.signature], bases))
    except KeyboardInterrupt:
        return KernelRun(len(got), tuple(failed.values()), True)
    if progress:
        progress(passes * len(items), passes * len(items), "done")
    return KernelRun(len(got), tuple(v for s, v in failed.items() if s not in got), False)


def _time_one(g: Graph, k: Kernel, backend: str, batch: int, dtype: str, threads: int, retries: int,
              wait_s: float, limit: float, failed: dict[str, tuple[str, str]]) -> LayerTiming | None:
    try:
        kg = kernel_graph(g, k)
        t = _with_retries(lambda: time_kernel(kg, backend=backend, batch=batch, dtype=dtype, threads=threads,
                                              limit_s=limit), threads, retries, wait_s)
    except ConvscopeError as exc:
        failed[k.signature] = (k.name, str(exc))
        return None
    if t is None:
        failed[k.signature] = (k.name, _BUSY)
    return t


def _combine(ts: list[LayerTiming], bases: list[float]) -> LayerTiming:
    """Median over the passes, less the median call overhead; p10/p90 the extremes over the passes."""
    base = float(np.median(bases))
    ms = float(np.median([t.ms for t in ts]))
    return LayerTiming(max(ms - base, 0.0), max(min(t.p10_ms for t in ts) - base, 0.0),
                       max(max(t.p90_ms for t in ts) - base, 0.0), sum(t.runs for t in ts))


_BUSY = "the machine stayed busy: other processes kept taking CPU time"
T = TypeVar("T")


def _with_retries(fn: Callable[[], T], threads: int, retries: int, wait_s: float) -> T | None:
    """``fn()``, waiting for quiet and trying again while it raises :class:`Busy`; None if it never
    got a quiet moment."""
    for attempt in range(retries + 1):
        try:
            return fn()
        except Busy:
            if attempt < retries:
                itf.wait_quiet(threads=threads, timeout_s=wait_s)
    return None


def standard_set() -> list[Graph]:
    """The zoo at its own inputs, plus the generated families' defaults at other resolutions."""
    from convscope.zoo import load_zoo, zoo_entries

    graphs = [load_zoo(e.name) for e in zoo_entries()]
    graphs += [load_zoo("mobilenetv2", input_shape=(3, r, r)) for r in (96, 128, 160)]
    graphs += [load_zoo("resnet18-imagenet", input_shape=(3, r, r)) for r in (64, 112)]
    return graphs


def _plain(name: str, res: int, layers: Sequence[tuple[int, int, int, int]]) -> Graph:
    """A plain CNN: (width, kernel, stride, groups) conv+bn+relu layers, global pool, classifier."""
    from convscope.frontends.from_spec import graph_from_spec_data

    spec: list[Any] = []
    for w, k, s, g in layers:
        spec += [{"conv": {"out": w, "k": k, "s": s, "g": g}}, "bn", "relu"]
    return graph_from_spec_data({"name": name, "input": [3, res, res], "layers": [*spec, "gap", {"linear": {"out": 10}}]},
                                file=name)


def overhead_set() -> list[Graph]:
    """Whole networks for the per-network fit: many small ops to few big ones, little compute per
    weight byte to much, two small plain CNNs and a tiny one; none of them a zoo network at its own input."""
    from convscope.zoo import load_zoo

    arch = "|nor_conv_1x1~0|+|skip_connect~0|avg_pool_3x3~1|+|none~0|nor_conv_3x3~1|skip_connect~2|"
    own = [f"nasbench201:{arch}", "nasbench201:|avg_pool_3x3~0|+|skip_connect~0|none~1|+|none~0|none~1|skip_connect~2|",
           "fbnet:0-8-1-8-4-8-2-8-7-4-1-4-7-3-2-7-3-2-4-2-4-5"]
    resized = [("resnet18-cifar", 48), ("resnet50-imagenet", 96), ("vgg11-cifar", 64), ("mobilenetv2", 112),
               ("allconv", 64), ("vgg13-imagenet", 96), ("resnext50-32x4d", 64), ("vgg16-cifar", 48),
               ("resnet34-cifar", 24), ("resnet18-imagenet", 160), ("mobilenetv2", 192), ("wrn28-10", 16),
               ("dilated-context", 96)]
    return [*(load_zoo(n) for n in own), *(load_zoo(n, input_shape=(3, r, r)) for n, r in resized),
            _plain("plain-a", 48, [(24, 3, 1, 1), (24, 3, 1, 1), (24, 3, 1, 1), (48, 3, 2, 1), (48, 1, 1, 1),
                                   (96, 3, 2, 1), (96, 3, 1, 1)]),
            _plain("plain-b", 80, [(16, 3, 1, 1), (32, 5, 2, 1), (32, 3, 1, 4), (64, 3, 2, 1), (64, 1, 1, 1),
                                   (64, 3, 1, 2)]),
            # a gate-sized network (a fraction of a ms): without one the fixed cost per call is extrapolated
            # from networks a hundred times bigger, and tiny networks are mispredicted
            _plain("plain-tiny", 16, [(8, 3, 1, 1), (16, 3, 2, 1)])]


def _missing(graphs: Sequence[Graph], backend: str, batch: int, dtype: str, threads: int, store: LatencyStore,
             fp: Fingerprint, force: bool) -> tuple[list[tuple[Graph, Kernel]], int]:
    seen: dict[str, tuple[Graph, Kernel]] = {}
    for g in graphs:
        for k in kernels(g, backend, batch=batch, dtype=dtype):
            seen.setdefault(k.signature, (g, k))
    have = {} if force else store.layers(fp, backend, threads, dtype, seen)
    return [v for s, v in seen.items() if s not in have], len(seen)


MIN_OVERHEAD_NETS = 6  # four coefficients, and leave-one-out needs a few more


def fit_overhead(*, backend: str, threads: int, dtype: str, store: LatencyStore, fp: Fingerprint,
                 progress: Progress | None = None, graphs: Sequence[Graph] | None = None,
                 time_limit_s: float = 4.0, skipped: list[tuple[str, str]] | None = None,
                 passes: int = PASSES) -> Calibration:
    """Measure the overhead networks (default :func:`overhead_set`) end to end and fit scale,
    per-node, cold-weight and fixed overhead.  A network the backend cannot run (ONNX Runtime: one
    the exporter refuses) is left out and appended to ``skipped`` as (name, why); a busy machine is an
    error."""
    nets = list(graphs) if graphs is not None else overhead_set()
    todo, _ = _missing(nets, backend, 1, dtype, threads, store, fp, False)
    run = measure_kernels(todo, backend=backend, batch=1, dtype=dtype, threads=threads, store=store, fp=fp,
                          progress=progress, passes=passes)
    if run.interrupted:
        raise KeyboardInterrupt
    out: list[tuple[str, str]] = []
    why = {name: reason for name, reason in run.failed}
    cache = core_cache_bytes()
    rows: dict[str, list[float]] = {}  # per runnable network: Σ kernel ms, nodes, cold weight MB, 1
    labelled = list(zip(_labels(nets), nets))
    for label, g in labelled:
        c = cost(g, dtype=dtype)
        ks = kernels(g, backend, dtype=dtype, costs=c)
        t = store.layers(fp, backend, threads, dtype, [k.signature for k in ks])
        lost = [k.name for k in ks if k.signature not in t]
        if lost and any(why.get(n) == _BUSY for n in lost):
            raise NothingUsable(f"some layers of {label}, a reference network of the overhead fit, could not be "
                                f"timed ({_BUSY}); the layers timed are kept: run calibrate again when the machine "
                                "is quieter")
        if lost:
            out.append((label, f"{backend} cannot run layer {lost[0]}: {why.get(lost[0], 'not timed')}"))
        else:
            rows[label] = [sum(t[k.signature].ms for k in ks), _steps(g), sum(cold_weight_mb(ks, c, cache)), 1.0]
    times: dict[str, list[float]] = {}
    for r in range(ROUNDS):  # interleaved rounds: each network's figure spans the machine's drift
        usable = [(label, g) for label, g in labelled if label in rows]
        for i, (label, g) in enumerate(usable):
            if progress:
                progress(r * len(usable) + i, ROUNDS * len(usable), f"round {r + 1}/{ROUNDS}: {label} end to end")
            try:
                times.setdefault(label, []).append(_measure_quiet(g, backend, threads, dtype,
                                                                   time_limit_s / ROUNDS).median_ms)
            except _Unrunnable as exc:  # built for its layers, but not as a whole
                out.append((label, str(exc)))
                del rows[label]
    if skipped is not None:
        skipped += out
    if len(rows) < MIN_OVERHEAD_NETS:
        raise InputError(f"calibrate: only {len(rows)} of {len(nets)} overhead networks run on {backend} "
                         f"(at least {MIN_OVERHEAD_NETS} are needed): " + "; ".join(f"{n}: {w}" for n, w in out[:3]))
    names = list(rows)
    ys = [float(np.median(times[n])) for n in names]
    x, y = np.asarray([rows[n] for n in names]), np.asarray(ys)
    prior = (1.0, 0.0, 0.0, 0.0)
    f = fit_relative(x, y, prior=prior)
    band = band_from_ratios(loo_ratios(x, y, prior))
    cal = Calibration(f.coef[0], f.coef[1], f.coef[3], band,
                      tuple((n, float(m), f.predict(rows[n])) for n, m in zip(names, ys)), fp.label(),
                      cold_ms_per_mb=f.coef[2], cache_bytes=cache)
    store.put_calibration(fp, backend, threads, dtype, cal)
    return cal


def _labels(nets: Sequence[Graph]) -> list[str]:
    """Each network's name with the input size it ran at (resnet50-imagenet@96x96: not the 224 px a
    reader would assume; mobilenetv2 at 112 and 192 px are two rows of the fit, not one)."""
    out: list[str] = []
    for g in nets:
        name = g.name
        if len(g.input_shape) == 3:
            name += "@" + "x".join(str(v) for v in g.input_shape[1:])
        while name in out:  # the same network twice: keep both rows apart
            name += "'"
        out.append(name)
    return out


class _Unrunnable(InputError):
    """The backend cannot build or run this network (not a busy machine)."""


def _measure_quiet(g: Graph, backend: str, threads: int, dtype: str, limit: float) -> Any:
    """A measurement without interference, waiting for quiet up to three times."""
    try:
        m = measure_graph(g, backend=backend, threads=threads, dtype=dtype, time_limit_s=limit)
    except InputError as exc:
        raise _Unrunnable(str(exc)) from None
    for _ in range(3):
        if not m.interference or m.interrupted:
            break
        itf.wait_quiet(threads=threads, timeout_s=60.0)
        m = measure_graph(g, backend=backend, threads=threads, dtype=dtype, time_limit_s=limit)
    if m.interrupted:
        raise KeyboardInterrupt
    if m.interference:
        raise NothingUsable(f"{g.name} could not be timed without interference: other processes kept the CPUs "
                            "busy; the layers timed are kept: run calibrate again when the machine is quieter")
    return m


def _steps(g: Graph) -> int:
    """Nodes the runtime steps through (everything but the inputs)."""
    return sum(1 for n in g.nodes if n.op is not OpKind.INPUT)


def calibrate(models: Sequence[Graph] | None = None, *, backend: str = "torch", threads: int | None = None,
              dtype: str = "fp32", batch: int = 1, store: LatencyStore | None = None, refit: bool = False,
              force: bool = False, progress: Progress | None = None,
              overhead_graphs: Sequence[Graph] | None = None, overhead_time_s: float = 4.0,
              passes: int = PASSES) -> CalibrationReport:
    """Measure the unique kernels of ``models`` (default: :func:`standard_set`) that the cache lacks,
    and fit the per-network overhead if this machine has none yet (or ``refit``) on
    ``overhead_graphs`` (default :func:`overhead_set`), each timed for ``overhead_time_s``."""
    if batch < 1 or passes < 1:
        raise InputError(f"batch and passes must be positive integers, got {batch} and {passes}")
    n = threads or default_threads()
    st = store or open_store()
    fp = device_fingerprint(backend)
    st.put_device(fp)
    t0 = time.perf_counter()
    graphs = list(models) if models is not None else standard_set()
    todo, total = _missing(graphs, backend, batch, dtype, n, st, fp, force)
    cal, refitted = st.calibration(fp, backend, n, dtype), False
    if backend != "onnxruntime":
        torch_dtype(dtype)  # an unsupported dtype fails here, before anything is measured
    with threads_set(n):
        run = measure_kernels(todo, backend=backend, batch=batch, dtype=dtype, threads=n, store=st, fp=fp,
                              progress=progress, passes=passes)
        interrupted = run.interrupted
        if not interrupted and (cal is None or refit):
            try:
                skipped: list[tuple[str, str]] = []
                cal, refitted = fit_overhead(backend=backend, threads=n, dtype=dtype, store=st, fp=fp,
                                             progress=progress, graphs=overhead_graphs,
                                             time_limit_s=overhead_time_s, skipped=skipped, passes=passes), True
                run = replace(run, failed=run.failed + tuple((f"{name} (overhead fit)", why) for name, why in skipped))
            except KeyboardInterrupt:
                interrupted = True
    return CalibrationReport(fp.label(), backend, n, dtype, batch, total, run.measured, total - len(todo),
                             run.failed, cal, refitted, interrupted, time.perf_counter() - t0, str(st.path),
                             tuple(st.warnings))

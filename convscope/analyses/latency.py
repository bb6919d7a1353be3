"""Latency prediction in three tiers (DESIGN.md, "Latency — prediction tiers").

* ``analytic`` — a device profile (``_latency_profiles``): each kernel the backend launches
  (``_latency_kernels``: fusion rules per runtime) on a roofline,
  ``t = max(Σ_class flops/peak_class, bytes/bandwidth) + overhead(backend)``; FLOPs and bytes come
  from :func:`convscope.analyses.cost.cost` (2 FLOPs per MAC, 1 per elementwise op; batch and dtype
  included).  The roofline leaves out cache reuse between kernels (each reads its inputs and weights
  from memory), overlap of independent kernels, and layout conversions.  Band: the profile's
  ``uncertainty`` factors (how far the profile's class of device strays from it, see each profile).
* ``fitted`` — the same kernel features with coefficients fitted from networks measured on the
  target (a CSV ``network,latency_ms``; ``_latency_fitted``).  Band: leave-one-out extremes of
  measured/predicted on those networks.
* ``local`` — this machine: every unique kernel timed once by ``convscope calibrate`` and cached
  (``convscope.backends._cache``), summed, plus a fitted per-network overhead
  (``scale·Σ + per_node·nodes + cold·cold weight MB + fixed``, ``convscope.backends.calibrate``).  Kernels the cache lacks
  are measured on demand (``on_missing="measure"``, and the prediction says so) or refused.
  Band: leave-one-out extremes of the overhead fit.

Nothing here imports torch; the local tier imports the measuring code only to time missing kernels.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from convscope.analyses._latency_kernels import BACKENDS, FUSION, Kernel, check_backend, folded_nodes, kernels
from convscope.analyses._latency_profiles import DeviceProfile, load_profile, profile_names
from convscope.analyses.cost import CostResult, DType, cost
from convscope.errors import InputError, NotCalibrated, batch_size, positive_int
from convscope.ir.graph import Graph
from convscope.ir.ops import OpKind
from convscope.results import LatencyPrediction
from convscope.units import plural

__all__ = ["predict", "analytic", "kernel_times", "DeviceProfile", "load_profile", "profile_names", "BACKENDS",
           "LOCAL_BACKENDS"]

LOCAL_BACKENDS = ("torch", "cuda", "onnxruntime")
Progress = Callable[[float, float, str], None]


def kernel_times(ks: Sequence[Kernel], profile: DeviceProfile, backend: str, dtype: DType | str) -> list[float]:
    """Roofline seconds of each kernel on ``profile``."""
    over = profile.overhead(backend)
    out = []
    for k in ks:
        compute = sum(f / profile.peak(c, dtype) for c, f in k.flops if f)
        out.append(max(compute, k.bytes / profile.bandwidth) + over)
    return out


def per_layer(graph: Graph, ks: Sequence[Kernel], ms: Sequence[float], backend: str,
              extra_ms: float = 0.0) -> tuple[tuple[str, float], ...]:
    """Every node's share: a kernel's time on its head, 0 on the nodes fused into it and on nodes that
    launch nothing; ``extra_ms`` added to every node (the local tier's per-node overhead).  Unknown
    ops get no entry."""
    share = {n: 0.0 for n in folded_nodes(graph, backend, ks)}
    for k, t in zip(ks, ms):
        for n in k.nodes:
            share[n] = t if n == k.name else 0.0
    return tuple((n.name, share[n.name] + extra_ms) for n in graph.nodes if n.name in share)


def cold_weight_mb(ks: Sequence[Kernel], c: CostResult, cache_bytes: int) -> list[float]:
    """Per kernel, the MB of weights that sat in the core's cache while the kernel was timed alone
    (at most ``cache_bytes`` of them) but come from memory in the network, because the network's
    weights together (``c``, the network's cost) do not fit that cache.  0 everywhere when they do,
    or when ``cache_bytes`` is 0."""
    if cache_bytes <= 0 or c.weight_bytes <= cache_bytes:
        return [0.0] * len(ks)
    w = {nc.name: nc.weights_read for nc in c.nodes}
    return [min(sum(w.get(n, 0) for n in k.nodes), cache_bytes) / 1e6 for k in ks]


def _fusion_note(backend: str) -> str:
    r = FUSION[backend]
    if not (r.fold_bn or r.conv_acts or r.const_fold):
        return f"{backend}: no fusion, one kernel per op (eager)"
    parts = ["BatchNorm folded into the conv" if r.fold_bn else "", "conv+add fused" if r.conv_add else "",
             "activation fused" if r.conv_acts else "", "constant networks folded" if r.const_fold else ""]
    return f"{backend}: " + ", ".join(p for p in parts if p) + " (time shown on the conv)"


def _unknown_note(graph: Graph) -> list[str]:
    unknown = [n.name for n in graph.nodes if n.op is OpKind.UNKNOWN]
    if not unknown:
        return []
    return [f"{len(unknown)} unknown op(s) not timed ({', '.join(unknown[:4])}{'…' if len(unknown) > 4 else ''}): "
            "the prediction is a lower bound"]


def analytic(graph: Graph, profile: DeviceProfile, *, backend: str = "torch", batch: int = 1,
             dtype: DType | str = DType.FP32, threads: int | None = None) -> LatencyPrediction:
    ks = kernels(graph, backend, batch=batch, dtype=dtype)
    ms = [t * 1e3 for t in kernel_times(ks, profile, backend, dtype)]
    total = sum(ms)
    lo, hi = profile.uncertainty
    notes = [f"roofline on profile '{profile.name}' ({profile.description})" if profile.description
             else f"roofline on profile '{profile.name}'", _fusion_note(backend),
             f"band: the profile's uncertainty ×{lo:g}–×{hi:g}"] + _unknown_note(graph)
    return LatencyPrediction("analytic", profile.name, backend, batch, total, total * lo, total * hi,
                             per_layer(graph, ks, ms, backend), DType.parse(dtype).value, threads, tuple(notes))


CALIBRATED_DTYPES = ("fp32", "fp16", "bf16")  # what `convscope calibrate --dtype` times


def _local(graph: Graph, *, backend: str, batch: int, dtype: str, threads: int | None, required: bool,
           on_missing: str, progress: Progress | None, store: Any) -> LatencyPrediction | None:
    from convscope.backends._cache import default_threads, device_fingerprint, lookup_store

    if backend not in LOCAL_BACKENDS:
        raise InputError(f"backend '{backend}' cannot be calibrated here (local backends: {', '.join(LOCAL_BACKENDS)})")
    n = threads or default_threads()
    fp = device_fingerprint(backend)
    st = store if store is not None else lookup_store(required=required)  # never created just to look into it
    cal = st.calibration(fp, backend, n, dtype) if st is not None else None
    if cal is None:
        if not required:
            return None
        if dtype not in CALIBRATED_DTYPES:
            raise InputError(f"the local tier has no {dtype} timings: `convscope calibrate` times "
                             f"{', '.join(CALIBRATED_DTYPES)}; for {dtype} give --device with a profile that lists it")
        flag = "" if dtype == "fp32" else f" --dtype {dtype}"
        raise NotCalibrated(f"no calibration for this machine ({fp.label()}), backend {backend}, {plural(n, 'thread')}, "
                            f"{dtype}: run `convscope calibrate --backend {backend} --threads {n}{flag}` first")
    assert st is not None
    costs = cost(graph, dtype=dtype, batch=batch)
    ks = list(kernels(graph, backend, batch=batch, dtype=dtype, costs=costs))
    have = st.layers(fp, backend, n, dtype, [k.signature for k in ks])
    notes = [f"kernels timed on this machine ({fp.label()}), {backend}, {plural(n, 'thread')}", _fusion_note(backend)]
    missing = [k for k in ks if k.signature not in have]
    if missing:
        notes += _measure_missing(graph, missing, backend, batch, dtype, n, on_missing, st, fp, progress)
        have = st.layers(fp, backend, n, dtype, [k.signature for k in ks])
    untimed = [k for k in ks if k.signature not in have]
    if untimed:
        notes.append(f"{len(untimed)} kernel(s) could not be timed ({', '.join(k.name for k in untimed[:4])}): "
                     "the prediction is a lower bound")
    timed = [k for k in ks if k.signature in have]
    cold = cold_weight_mb(timed, costs, cal.cache_bytes)
    ms = [cal.scale * have[k.signature].ms + cal.cold_ms_per_mb * c for k, c in zip(timed, cold)]
    rows = per_layer(graph, timed, ms, backend, extra_ms=cal.per_node_ms)
    total = sum(t for _, t in rows) + cal.fixed_ms
    notes.append(f"per-network overhead fitted on {len(cal.networks)} networks: ×{cal.scale:.3f} on kernels, "
                 f"{1e3 * cal.per_node_ms:.1f} µs per node, {cal.cold_ms_per_mb:.3f} ms per MB of weights "
                 f"cold in the network, {cal.fixed_ms:.3f} ms per call; band: leave-one-out "
                 f"extremes ×{cal.band[0]:.2f}–×{cal.band[1]:.2f}")
    notes += _unknown_note(graph) + [f"cache: {w}" for w in getattr(st, "warnings", [])]
    return LatencyPrediction("local", f"local ({fp.label()})", backend, batch, total, total * cal.band[0],
                             total * cal.band[1], rows, dtype, n, tuple(notes), tuple(k.name for k in untimed))


def _measure_missing(graph: Graph, missing: list[Kernel], backend: str, batch: int, dtype: str, threads: int,
                     on_missing: str, store: Any, fp: Any, progress: Progress | None) -> list[str]:
    if on_missing != "measure":
        raise InputError(f"{len(missing)} layer configuration(s) of {graph.name} are not in the latency cache "
                         f"(first: {missing[0].name}): run `convscope calibrate MODEL` for this network")
    try:
        from convscope.backends._runners import threads_set
        from convscope.backends.calibrate import measure_kernels
    except ImportError as exc:
        raise InputError(f"{len(missing)} layer configuration(s) are not calibrated and measuring them needs "
                         f"torch ({exc})") from None
    t0 = time.perf_counter()
    with threads_set(threads):
        run = measure_kernels([(graph, k) for k in missing], backend=backend, batch=batch, dtype=dtype,
                              threads=threads, store=store, fp=fp, progress=progress, retries=1, wait_s=10.0)
    if run.interrupted:
        raise KeyboardInterrupt
    kept = "not kept: the cache is read-only" if getattr(store, "readonly", False) else "cached for next time"
    failed = list(getattr(run, "failed", ()))
    done = [f"measured {run.measured} layer configuration(s) missing from the cache now "
            f"({time.perf_counter() - t0:.1f} s); they are {kept}"] if run.measured else []  # another run
    # may have timed them meanwhile: nothing to say then
    return done + \
        [f"not timed: {why}" if why.startswith(f"layer '{name}'") else f"not timed: {name}: {why}"
         for name, why in failed[:4]]


def check_device(device: object) -> None:
    """``device=`` of the Python API: None, 'local', a profile name or .yaml path, or a DeviceProfile
    (an InputError naming the value otherwise, before any model is loaded)."""
    if device is not None and not isinstance(device, (str, os.PathLike, DeviceProfile)):
        raise InputError(f"device must be 'local', a profile name ({', '.join(profile_names())}), a profile .yaml "
                         f"path or a DeviceProfile, got {device!r}")


def predict(graph: Graph, *, device: str | os.PathLike[str] | DeviceProfile | None = None, backend: str | None = None,
            batch: int = 1, dtype: str = "fp32", threads: int | None = None, fit: str | os.PathLike[str] | None = None,
            on_missing: str = "measure", progress: Progress | None = None,
            store: Any = None) -> LatencyPrediction | None:
    """Predict the latency of ``graph`` (see the module docstring for the tiers).

    ``device=None``: the local tier if this machine is calibrated for backend/threads/dtype, else
    ``None``.  ``"local"``: the local tier or an InputError.  A profile name, a profile YAML path or a
    :class:`DeviceProfile`: the analytic tier, or with ``fit=CSV`` the fitted tier.  ``backend=None``:
    the profile's own runtime (``backend:`` in its file), PyTorch eager (``torch``) on this machine.
    """
    if not isinstance(graph, Graph):
        raise InputError(f"predict takes a Graph, got a {type(graph).__name__}: "
                         "convscope.load_graph(model, input=...) makes one from any model")
    check_device(device)
    batch = batch_size(batch)
    threads = None if threads is None else positive_int(threads, "threads")
    local = device is None or (isinstance(device, str) and device == "local")
    profile = None if local else device if isinstance(device, DeviceProfile) else load_profile(device)  # type: ignore[arg-type]
    if backend is None:
        backend = profile.backend if profile is not None else "torch"
    try:
        check_backend(backend)
        dt = DType.parse(dtype).value
    except ValueError as exc:
        raise InputError(str(exc)) from None
    if on_missing not in ("measure", "refuse"):
        raise InputError(f"on_missing must be 'measure' or 'refuse', got {on_missing!r}")
    if profile is None:
        if fit is not None:
            raise InputError("--fit (fit=) needs a device profile to fit: --device (device=) NAME or a profile "
                             f".yaml; NAME is one of {', '.join(profile_names())}")
        return _local(graph, backend=backend, batch=batch, dtype=dt, threads=threads, required=device is not None,
                      on_missing=on_missing, progress=progress, store=store)
    if fit is not None:
        from convscope.analyses._latency_fitted import fitted

        return fitted(graph, profile, fit, backend=backend, batch=batch, dtype=dt, threads=threads)
    return analytic(graph, profile, backend=backend, batch=batch, dtype=dt)  # a profile is the whole device:
    # a thread count is not one of its numbers, so none is reported with the figure

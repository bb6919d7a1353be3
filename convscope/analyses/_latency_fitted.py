"""The ``fitted`` tier: roofline coefficients fitted from networks measured on the target.

The model is the analytic roofline with seven non-negative coefficients θ that rescale the profile:

    t(net) = Σ_kernels max(Σ_class θ_class · flops_class/peak_class, θ_mem · bytes/bandwidth)
             + θ_wover · weighted kernels · overhead + θ_over · other kernels · overhead
             + θ_group · Σ groups of grouped convs · 1 µs + θ_fixed · 1 ms

(classes: conv, grouped, matmul, elementwise; weighted kernels are convs and matmuls, whose launch
costs more than an elementwise one's in most runtimes — weight layout checks, primitive lookup).
The per-group term is a runtime that runs a grouped or depthwise conv as a loop over its groups
(PyTorch's CPU fallback does; HELP's Xeon timings of FBNet show block times growing with the
channel count of their depthwise convs, not with their MACs); it is a feature for the ``torch``
(CPU eager) backend only — cuDNN, ONNX Runtime and TFLite run groups natively, and there the extra
freedom only fits noise (FBNet on GPUs at batch 1: Spearman 0.98 without it, 0.6 with it).  θ = 1 (θ_group = θ_fixed = 0) is the
profile as written.  Nine coefficients; a CSV of 10 networks usually separates five or six.
Which side of each roofline a kernel is on depends on θ, so the fit alternates: assign each kernel to
its bound under the current θ, solve the now linear problem (non-negative least squares on
*relative* residuals, with a weak pull towards the profile), repeat until the error stops falling.

A coefficient whose feature the measured networks cannot separate from the others (a layer every
network has, like the classifier) is held at the profile's value and named in the notes.  The
uncertainty band is the range of leave-one-out measured/predicted ratios on the CSV's networks.

CSV: a header with ``network`` and ``latency_ms`` (optional ``batch`` and ``input`` as ``3x224x224``);
``#`` lines are comments; networks are any MODEL reference, paths relative to the CSV's folder.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from convscope.analyses._latency_fit import band_from_ratios, fit_relative, select_columns
from convscope.analyses._latency_kernels import Kernel, OpClass, kernels
from convscope.analyses._latency_profiles import DeviceProfile
from convscope.analyses.cost import DType
from convscope.errors import ConvscopeError, InputError, SpecError
from convscope.ir.graph import Graph
from convscope.results import LatencyPrediction

__all__ = ["FEATURES", "NetFeatures", "FittedModel", "net_features", "fit_model", "fit_csv", "fitted",
           "MIN_ROWS", "read_csv"]

FEATURES = ("conv", "grouped", "matmul", "elementwise", "memory", "weighted_overhead", "overhead", "per_group",
            "fixed")
_CLASSES = (OpClass.CONV, OpClass.GROUPED, OpClass.MATMUL, OpClass.ELEMENTWISE)
PRIOR = (1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0)
ORDER = (6, 5, 0, 4, 3, 1, 2, 7, 8)  # which features to fit first when the networks cannot separate all
MIN_ROWS = 5
MIN_MS = 1e-3  # a measured latency below a microsecond is a typo or a unit slip (seconds for ms)
PER_GROUP_BACKENDS = ("torch",)  # runtimes with a per-group loop for grouped convs (CPU fallback)
OUTLIER = 0.5  # relative miss beyond which a measured network may be an outlier
Theta = Sequence[float] | np.ndarray
# Pull towards the profile (see fit_relative), in relative-residual units: a coefficient 100% off its
# prior costs as much as a 1% miss on one measured network.  Ten times stronger (1e-3) shrank the
# coefficients that really are far from the profile: pooling (count_include_pad=False) on Pascal GPUs
# at batch 256 costs 70% of a 3x3 conv, which the fit expresses as elementwise ×15 (only a 3x3 pool
# has enough arithmetic per byte to turn compute-bound), held at ×5-10 by the pull: NAS-Bench-201
# 1080ti/titanx/titanxp at batch 256 ranked at Spearman 0.80-0.85 instead of 0.96-0.98.
LAM = 1e-4


@dataclass(frozen=True)
class NetFeatures:
    """Per kernel: compute seconds per class at the profile's peaks, memory seconds; plus overhead."""

    compute: np.ndarray  # (kernels, 4)
    memory: np.ndarray  # (kernels,)
    overhead_s: tuple[float, float]  # (weighted, other) kernels · per-kernel overhead
    groups_s: float = 0.0  # Σ groups of grouped convs · 1 µs

    def row(self, theta: Theta) -> np.ndarray:
        """Summed features (ms) with each kernel on its bound under ``theta``."""
        t = np.asarray(theta)
        comp = self.compute @ t[:4]
        mem = self.memory * t[4]
        on_compute = comp >= mem
        r = np.zeros(len(PRIOR))
        r[:4] = self.compute[on_compute].sum(axis=0)
        r[4] = self.memory[~on_compute].sum()
        r[5:7] = self.overhead_s
        r[7] = self.groups_s
        r[:8] *= 1e3
        r[8] = 1.0
        return r

    def predict_ms(self, theta: Theta) -> float:
        t = np.asarray(theta)
        per = np.maximum(self.compute @ t[:4], self.memory * t[4])
        extra = t[5] * self.overhead_s[0] + t[6] * self.overhead_s[1] + t[7] * self.groups_s
        return float(per.sum() * 1e3 + extra * 1e3 + t[8])


def net_features(ks: Sequence[Kernel], profile: DeviceProfile, backend: str, dtype: DType | str) -> NetFeatures:
    comp = np.array([[k.flops_of(c) / profile.peak(c, dtype) for c in _CLASSES] for k in ks]).reshape(-1, 4)
    mem = np.array([k.bytes / profile.bandwidth for k in ks])
    over = profile.overhead(backend)
    weighted = sum(1 for k in ks if _weighted(k))
    groups = sum(k.groups for k in ks if k.op_class is OpClass.GROUPED) if backend in PER_GROUP_BACKENDS else 0
    return NetFeatures(comp, mem, (weighted * over, (len(ks) - weighted) * over), groups * 1e-6)


def _weighted(k: Kernel) -> bool:
    return k.op_class in (OpClass.CONV, OpClass.GROUPED, OpClass.MATMUL)


@dataclass(frozen=True, slots=True)
class FittedModel:
    theta: tuple[float, ...]
    fitted: tuple[str, ...]  # features fitted; the others held at the profile's value
    rows: tuple[tuple[str, float, float], ...]  # (network, measured ms, predicted ms)
    band: tuple[float, float]
    rms: float  # root-mean-square relative residual (in sample, outliers left out)
    outliers: tuple[str, ...] = ()  # networks left out of the fit
    merged: int = 0  # rows that repeated a network already listed (their median is one data point)
    batches: tuple[int, ...] = ()  # the batch sizes the rows were measured at


def _objective(nets: Sequence[NetFeatures], y: np.ndarray, theta: Theta) -> float:
    pred = np.array([n.predict_ms(theta) for n in nets])
    return float(np.mean(((y - pred) / y) ** 2))


def _alternate(nets: Sequence[NetFeatures], y: np.ndarray, theta: np.ndarray,
               iterations: int) -> tuple[np.ndarray, list[int], float]:
    """``theta`` only sets the first bound assignment (a start 10x off the profile); every returned
    coefficient is either fitted or the profile's own value, never the start's."""
    prior = np.asarray(PRIOR, dtype=float)
    best, best_err, best_cols = prior, _objective(nets, y, prior), []
    for _ in range(iterations):
        x = np.array([n.row(theta) for n in nets])
        cols = select_columns(x, y, ORDER)
        if not cols:
            break
        held = [j for j in range(len(PRIOR)) if j not in cols]
        target = y - x[:, held] @ prior[held]
        f = fit_relative(x[:, cols], target, [PRIOR[j] for j in cols], lam=LAM, weights=y)
        new = prior.copy()
        new[cols] = f.coef
        err = _objective(nets, y, new)
        if best_cols and err >= best_err - 1e-12:
            break
        if err < best_err or not best_cols:
            best, best_err, best_cols = new, err, cols
        theta = new
    return best, best_cols, best_err


# Starting points: the profile, and the profile with compute or memory 10x off either way (the
# bound assignment of the start decides which local optimum the alternation finds).
_STARTS = [(1.0, 1.0), (0.1, 1.0), (10.0, 1.0), (1.0, 0.1), (1.0, 10.0)]


def _fit_from(nets: Sequence[NetFeatures], y: np.ndarray, start: tuple[float, float],
              iterations: int) -> tuple[np.ndarray, list[int], float]:
    th = np.asarray(PRIOR, dtype=float)
    th[:4] *= start[0]
    th[4] *= start[1]
    return _alternate(nets, y, th, iterations)


def _fit_all_starts(nets: Sequence[NetFeatures], y: np.ndarray, iterations: int) -> tuple[np.ndarray, list[int]]:
    fits = [_fit_from(nets, y, s, iterations) for s in _STARTS]
    th, cols, _ = min(fits, key=lambda f: f[2])
    return th, cols


def fit_model(nets: Sequence[NetFeatures], y: np.ndarray, *,
              iterations: int = 25) -> tuple[np.ndarray, list[int], list[int]]:
    """θ by alternating bound assignment and relative NNLS (see the module docstring) from a few
    starting points; the fit with the smallest error on the measured networks wins.  (Choosing the
    start by leave-one-out error instead did no better on the published data.)

    Outliers: a network that the fit on the others misses (leave-one-out) by more than ``OUTLIER``
    (relative) and by four times the typical miss is left out, at most one network in five — a
    mis-measured row, or one the runtime optimised in a way the model does not know (HW-NAS-Bench's
    TFLite removed work that only feeds ``none`` edges in some NAS-Bench-201 cells: 2.8 ms measured
    where the others predict 26).  Returns (θ, fitted feature columns, left-out rows)."""
    keep = list(range(len(y)))
    dropped: list[int] = []
    while len(dropped) < len(y) // 5 and len(keep) > MIN_ROWS:
        r = np.array([_miss([nets[j] for j in keep if j != i], y[[j for j in keep if j != i]], nets[i], y[i],
                            iterations) for i in keep])
        worst = int(np.argmax(r))
        if r[worst] <= max(OUTLIER, 4 * float(np.median(r))) or _sole_carrier(nets, keep, keep[worst]):
            break
        dropped.append(keep.pop(worst))
    th, cols = _fit_all_starts([nets[i] for i in keep], y[keep], iterations)
    return th, cols, sorted(dropped)


def _sole_carrier(nets: Sequence[NetFeatures], keep: Sequence[int], i: int) -> bool:
    """Whether network ``i`` is the only one of ``keep`` that spends a real share of its time (on the
    profile) in some feature (the one depthwise network among dense ones): the others cannot predict
    it, because they say nothing about that feature, so missing it is no sign of a bad measurement,
    and leaving it out would hide the very error the band should show."""
    th = np.asarray(PRIOR, dtype=float)

    def shares(j: int) -> np.ndarray:
        t = nets[j].row(th)[:8] * th[:8]
        total = float(t.sum())
        return t / total if total > 0 else t
    mine = shares(i)
    others = [shares(j) for j in keep if j != i]
    return any(mine[f] >= 0.2 and all(o[f] < 0.05 for o in others) for f in range(len(mine)))


def _miss(nets: Sequence[NetFeatures], y: np.ndarray, net: NetFeatures, measured: float, iterations: int) -> float:
    """How far the fit on ``nets`` misses ``net`` (relative)."""
    th, _ = _fit_all_starts(nets, y, iterations)
    return abs(measured - net.predict_ms(th)) / measured


def _loo(nets: Sequence[NetFeatures], y: np.ndarray) -> np.ndarray:
    out = np.empty(len(y))
    for i in range(len(y)):
        keep = [j for j in range(len(y)) if j != i]
        th, _, _ = fit_model([nets[j] for j in keep], y[keep])
        p = nets[i].predict_ms(th)
        out[i] = y[i] / p if p > 0 else np.inf
    return out


@dataclass(frozen=True, slots=True)
class CsvRow:
    line: int
    ref: str
    resolved: str
    latency_ms: float
    batch: int
    input: tuple[int, ...] | None


def _resolve(ref: str, base: Path) -> str:
    if ref.startswith("zoo:"):
        return ref
    m = re.match(r"^(?P<file>[^:]+\.py):(?P<fn>\w+)$", ref)
    if m:
        p = Path(m["file"])
        return f"{p if p.is_absolute() else base / p}:{m['fn']}"
    if re.match(r"^[\w.]+:\w+$", ref) and not ref.lower().endswith((".yaml", ".yml", ".onnx")):
        return ref  # module.path:factory
    p = Path(ref)
    return str(p if p.is_absolute() else base / p)


def read_csv(path: str | os.PathLike[str]) -> list[CsvRow]:
    """The measured networks; errors name file:line and the value."""
    from convscope.api import parse_shape

    file = os.fspath(path)
    try:
        text = Path(file).read_text(encoding="utf-8-sig")  # a spreadsheet's "CSV UTF-8" starts with a BOM
    except OSError as exc:
        raise InputError(f"--fit {file}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"--fit {file}: cannot read: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    lines = [(i, ln) for i, ln in enumerate(text.splitlines(), 1) if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        raise SpecError("empty: expected a header 'network,latency_ms' and one row per measured network", file=file)
    reader = csv.reader([ln for _, ln in lines])
    header = [h.strip().lower() for h in next(reader)]
    twice = sorted({h for h in header if header.count(h) > 1})
    if twice:
        raise SpecError(f"the header names the column '{twice[0]}' more than once ({','.join(header)})", file=file,
                        line=lines[0][0])
    for need in ("network", "latency_ms"):
        if need not in header:
            raise SpecError(f"the header needs a '{need}' column (got {', '.join(header)}); expected "
                            "network,latency_ms[,batch][,input]", file=file, line=lines[0][0])
    out = []
    for (line, _), cells in zip(lines[1:], reader):
        if len(cells) > len(header):
            raise SpecError(f"the row has {len(cells)} fields, the header {len(header)} ({','.join(header)}): "
                            "a comma too many?", file=file, line=line)
        d = dict(zip(header, (c.strip() for c in cells)))
        if "latency_ms" not in d:  # optional columns at the end may be left out; this one may not
            raise SpecError(f"the row has no latency_ms value (its fields: {','.join(cells)}); expected "
                            f"{','.join(header)}", file=file, line=line)
        try:
            ms = float(d.get("latency_ms", ""))
        except ValueError:
            ms = float("nan")
        if not ms >= MIN_MS or ms == float("inf"):
            raise SpecError(f"latency_ms must be a positive number of milliseconds (at least {MIN_MS:g}: a "
                            f"microsecond), got {d.get('latency_ms')!r}", file=file, line=line)
        batch = d.get("batch") or "1"
        if not batch.isdecimal() or int(batch) < 1:
            raise SpecError(f"batch must be a positive integer, got {batch!r}", file=file, line=line)
        try:
            shape = parse_shape(d["input"], "input") if d.get("input") else None
        except InputError as exc:
            raise SpecError(str(exc), file=file, line=line) from None
        if not d.get("network"):
            raise SpecError("empty network reference", file=file, line=line)
        out.append(CsvRow(line, d["network"], _resolve(d["network"], Path(file).parent), ms, int(batch), shape))
    return out


def _merged(rows: list[CsvRow], file: str) -> list[tuple[CsvRow, Graph]]:
    """One row per (network, batch, input it runs at): repeated measurements of a network are one data
    point (their median), not several, whether the input column is left out or gives the network's own;
    measurements of one network that differ by more than 1.5x are an error.  Each row with its graph."""
    groups: dict[tuple[str, int, tuple[int, ...]], list[CsvRow]] = {}
    graphs: dict[tuple[str, int, tuple[int, ...]], Graph] = {}
    for r in rows:
        g = _graph(r, file)
        key = (r.resolved, r.batch, tuple(g.input_shape))
        groups.setdefault(key, []).append(r)
        graphs.setdefault(key, g)
    out = []
    for key, same in groups.items():
        lo, hi = min(same, key=lambda r: r.latency_ms), max(same, key=lambda r: r.latency_ms)
        if hi.latency_ms > 1.5 * lo.latency_ms:
            raise SpecError(f"network '{lo.ref}' is listed with {lo.latency_ms:g} ms (line {lo.line}) and "
                            f"{hi.latency_ms:g} ms (line {hi.line}): measurements of one network should agree; "
                            "keep one, or give them different batch/input columns", file=file, line=hi.line)
        ms = float(np.median([r.latency_ms for r in same]))
        out.append((CsvRow(same[0].line, same[0].ref, same[0].resolved, ms, same[0].batch, same[0].input), graphs[key]))
    return out


def _graph(row: CsvRow, file: str) -> Graph:
    from convscope.api import load_graph

    try:
        return load_graph(row.resolved, input=row.input)
    except ConvscopeError as exc:
        msg = str(exc)
        if "needs --input C,H,W" in msg:  # in a CSV the shape is a column, not an option
            msg = msg[:msg.index("needs --input C,H,W")] + ("needs its input shape in the row's input column "
                                                           "(network,latency_ms,batch,input with input as CxHxW, "
                                                           "e.g. 3x224x224)")
        raise SpecError(f"network '{row.ref}': {msg}", file=file, line=row.line) from None


def fit_csv(path: str | os.PathLike[str], profile: DeviceProfile, backend: str, dtype: str) -> FittedModel:
    p = Path(path)
    try:
        st = p.stat()
    except OSError as exc:
        raise InputError(f"--fit {path}: cannot read: {exc.strerror or exc}") from None
    key = json.dumps(profile.to_dict(), sort_keys=True)
    return _fit_cached(str(p.resolve()), st.st_mtime_ns, st.st_size, key, profile, backend, dtype)


@lru_cache(maxsize=32)
def _fit_cached(path: str, _mtime: int, _size: int, _key: str, profile: DeviceProfile, backend: str,
                dtype: str) -> FittedModel:
    raw = read_csv(path)
    merged = _merged(raw, path)
    rows = [r for r, _ in merged]
    if len(rows) < MIN_ROWS:
        raise SpecError(f"{len(rows)} different measured network(s); the fitted tier needs at least {MIN_ROWS} "
                        "(10-20 different networks measured on the target are recommended; rows of the same "
                        "network, batch and input count once)", file=path)
    archs = {r.resolved for r in rows}
    if len(archs) < MIN_ROWS:  # one network at five batches or sizes: its layer mix never changes, so the
        # fit cannot tell one kind of layer from another, and leave-one-out would call it certain
        raise SpecError(f"{len(rows)} measurements but only {len(archs)} different network(s) "
                        f"({', '.join(sorted({r.ref for r in rows})[:4])}); the fitted tier needs at least {MIN_ROWS} "
                        "different networks (the same network at other batches or input sizes says little about "
                        "other layer mixes); 10-20 measured on the target are recommended", file=path)
    nets = [net_features(kernels(g, backend, batch=r.batch, dtype=dtype), profile, backend, dtype) for r, g in merged]
    y = np.array([r.latency_ms for r in rows])
    distinct = {tuple(np.round(n.row(PRIOR), 9)) for n in nets}
    if len(distinct) < 2 or np.ptp(y) == 0:
        raise SpecError("ill-conditioned: every network in the file has the same features (or the same latency), "
                        "so no coefficient can be fitted; measure networks that differ in depth, width or kernel "
                        "size", file=path)
    try:
        theta, cols, out = fit_model(nets, y)
        pred = [n.predict_ms(theta) for n in nets]
        kept = [i for i in range(len(y)) if i not in out]
        loo = _loo([nets[i] for i in kept], y[kept])
    except (np.linalg.LinAlgError, FloatingPointError, ValueError) as exc:
        raise SpecError(f"ill-conditioned: the fit did not converge on these measurements ({exc}); check the "
                        "latency_ms column (milliseconds) and measure networks that differ in depth, width or kernel "
                        "size", file=path) from None
    rel = (y[kept] - np.array(pred)[kept]) / y[kept]
    return FittedModel(tuple(float(t) for t in theta), tuple(FEATURES[j] for j in sorted(cols)),
                       tuple((r.ref, r.latency_ms, p) for r, p in zip(rows, pred)),
                       band_from_ratios(loo), float(np.sqrt(np.mean(rel**2))),
                       tuple(f"{rows[i].ref} (measured {y[i]:.3g} ms, the fit gives {pred[i]:.3g})" for i in out),
                       len(raw) - len(rows), tuple(sorted({r.batch for r in rows})))


def fitted(graph: Graph, profile: DeviceProfile, csv_path: str | os.PathLike[str], *, backend: str, batch: int,
           dtype: str, threads: int | None) -> LatencyPrediction:
    from convscope.analyses.latency import per_layer

    model = fit_csv(csv_path, profile, backend, dtype)
    ks = kernels(graph, backend, batch=batch, dtype=dtype)
    f = net_features(ks, profile, backend, dtype)
    th = np.asarray(model.theta)
    over = np.array([th[5] if _weighted(k) else th[6] for k in ks]) * profile.overhead(backend)
    per_group = np.array([k.groups * 1e-6 * th[7] if k.op_class is OpClass.GROUPED and backend in PER_GROUP_BACKENDS
                          else 0.0 for k in ks])
    per_k = (np.maximum(f.compute @ th[:4], f.memory * th[4]) + over + per_group) * 1e3
    rows = per_layer(graph, ks, [float(t) for t in per_k], backend)
    total = float(sum(t for _, t in rows) + th[8])
    held = [n for n in FEATURES if n not in model.fitted and n not in ("fixed", "per_group")]
    used = len(model.rows) - len(model.outliers)
    notes = [f"profile '{profile.name}' refitted on {used} networks measured on the target "
             f"({os.fspath(csv_path)}): in-sample error {100 * model.rms:.1f}% rms",
             "coefficients: " + ", ".join(f"{n} ×{t:.3g}" for n, t in zip(FEATURES[:7], model.theta[:7]))
             + f", {model.theta[7]:.3g} µs per group, fixed {model.theta[8]:.3g} ms",
             f"band: leave-one-out extremes ×{model.band[0]:.2f}–×{model.band[1]:.2f}"]
    if held:
        notes.append(f"held at the profile's value (the measured networks do not separate them): {', '.join(held)}")
    if model.outliers:
        notes.append("left out of the fit as outliers: " + "; ".join(model.outliers))
    if model.merged:
        notes.append(f"{model.merged} row(s) repeating a network, batch and input already listed were merged: "
                     "their median is one data point")
    if dtype != "fp32":
        notes.append(f"the latencies in {os.fspath(csv_path)} are taken as {dtype} timings (the file has no dtype "
                     "column): measure the target in the dtype you predict")
    if model.batches and batch not in model.batches:
        notes.append(f"batch {batch} is extrapolated from measurements at batch "
                     f"{', '.join(map(str, model.batches))}")
    return LatencyPrediction("fitted", profile.name, backend, batch, total, total * model.band[0],
                             total * model.band[1], rows, dtype, threads, tuple(notes))

"""Design advice: rewrite a network in the ways the seeds name and show what each change buys.

``suggest_graph(graph)`` analyses the network, runs every registered rewrite (``_rewrites``: cut
the unproductive tail, remove or move a downsampling step, max-pool -> strided convolution, input
resolution; ``_rewrite_conv``: grouped, depthwise-separable, bottleneck, width), analyses each
variant exactly as ``analyze`` would (params, MACs, border layer, unproductive share, predicted
latency when a latency model is installed) and sorts them by what they save: predicted
milliseconds when every variant has a prediction, MACs otherwise.

Depth rules (``_rewrite_depth``, seeds/004 and seeds/002): a network that is already too shallow is
warned about, and a variant that makes it too shallow (or shallower still) is listed as refused,
with the rule, and never recommended.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

# Importing the rewrite modules registers their rewrites.
from convscope.analyses import _rewrite_conv, _rewrites  # noqa: F401
from convscope.analyses._rewrite_base import REWRITES, TITLES, Base, NotApplicable, Options, Rewrite, layer_params, \
    reshaped_weights
from convscope.analyses._rewrite_depth import DepthReport, DepthRules, depth_from_analysis, depth_report, refusal
from convscope.analyses.analyze import analyze_graph
from convscope.analyses.border import productivity
from convscope.analyses.cost import DType, checked_dtype_batch
from convscope.analyses.receptive_field import receptive_field
from convscope.analyses.latency import check_device
from convscope.errors import ConvscopeError, GraphError, InputError, positive_int
from convscope.ir.graph import UNLISTED_PARAMS, Graph
from convscope.ir.ops import OpKind
from convscope.results import SCHEMA_VERSION, Analysis, LatencyPrediction
from convscope.units import json_number

__all__ = ["Options", "DepthRules", "Suggestion", "Advice", "suggest_graph", "REWRITE_KEYS"]

REWRITE_KEYS = tuple(REWRITES)
Progress = Callable[[str, int, int], None]  # (what, done, total)


def _metrics(a: Analysis, depth: DepthReport) -> dict[str, Any]:
    lo, hi = a.feasible_resolution
    return {
        "params": a.totals.params,
        "macs": a.totals.macs,
        "peak_activation_bytes": a.totals.peak_activation_bytes,
        "border_layer": a.border_layer,
        "unproductive_share": {"params": a.unproductive_share[0], "macs": a.unproductive_share[1]},
        "unproductive_layers": [r.name for r in a.unproductive_layers()],
        "feasible_resolution": [lo, json_number(hi)],
        "latency": a.latency.to_dict() if a.latency is not None else None,
        "depth": depth.to_dict(),
    }


@dataclass(frozen=True, slots=True)
class Suggestion:
    """One rewritten network and what it changes against the original."""

    key: str
    title: str
    explanation: str
    changed: tuple[str, ...]  # original layers edited in place
    removed: tuple[str, ...]  # original layers gone
    added: tuple[str, ...]  # new layers
    analysis: Analysis  # the variant, analysed like `analyze` does
    depth: DepthReport
    base_analysis: Analysis = field(repr=False, compare=False)
    graph: Graph = field(repr=False, compare=False)
    refused: str | None = None  # why it is not recommended (a depth rule), else None
    notes: tuple[str, ...] = ()

    @property
    def recommended(self) -> bool:
        return self.refused is None

    @property
    def params_saved(self) -> int:
        return self.base_analysis.totals.params - self.analysis.totals.params

    @property
    def macs_saved(self) -> int:
        return self.base_analysis.totals.macs - self.analysis.totals.macs

    @property
    def ms_saved(self) -> float | None:
        old, new = self.base_analysis.latency, self.analysis.latency
        return None if old is None or new is None else old.ms - new.ms

    @property
    def layers_touched(self) -> tuple[str, ...]:
        return self.changed + self.removed + self.added

    def to_dict(self) -> dict[str, Any]:
        b = self.base_analysis.totals
        return {
            "key": self.key,
            "title": self.title,
            "explanation": self.explanation,
            "recommended": self.recommended,
            "refused": self.refused,
            "notes": list(self.notes),
            "changed": list(self.changed),
            "removed": list(self.removed),
            "added": list(self.added),
            "delta": {
                "params": -self.params_saved,
                "macs": -self.macs_saved,
                "params_ratio": self.analysis.totals.params / b.params if b.params else None,
                "macs_ratio": self.analysis.totals.macs / b.macs if b.macs else None,
                "ms": None if self.ms_saved is None else -self.ms_saved,
            },
            "metrics": _metrics(self.analysis, self.depth),
        }


@dataclass(frozen=True, slots=True)
class Advice:
    """The suggestions for one network at one input shape, best first."""

    model: str
    input: tuple[int, ...]
    base: Analysis
    depth: DepthReport
    suggestions: tuple[Suggestion, ...]
    not_applicable: tuple[tuple[str, str, str], ...]  # (key, title, reason)
    sorted_by: str  # "ms" or "macs"
    latency_note: str | None
    graph: Graph = field(repr=False, compare=False)
    origin: str = "spec"  # spec | zoo | pytorch | onnx | graph
    interrupted: bool = False  # Ctrl-C: the rewrites tried so far
    analyze_options: tuple[str, ...] = ()  # the `analyze` options that give the same numbers (--batch 4 …)
    left_out_params: int = 0  # the model's parameters no layer holds, left out of every number here

    def suggestion(self, key: str) -> Suggestion:
        for s in self.suggestions:
            if s.key == key:
                return s
        raise KeyError(f"no suggestion '{key}' for {self.model} (have: {', '.join(s.key for s in self.suggestions)})")

    def recommended(self) -> list[Suggestion]:
        return [s for s in self.suggestions if s.recommended]

    @property
    def depth_warnings(self) -> tuple[Any, ...]:
        return self.depth.warnings

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "model": self.model,
            "input": list(self.input),
            "origin": self.origin,
            "complete": not self.interrupted,
            "sorted_by": self.sorted_by,
            "latency_note": self.latency_note,
            "base": _metrics(self.base, self.depth),
            "depth_warnings": [w.to_dict() for w in self.depth.warnings],
            "suggestions": [s.to_dict() for s in self.suggestions],
            "not_applicable": [{"key": k, "title": t, "reason": r} for k, t, r in self.not_applicable],
            "unknown_ops": [{"name": n, "target": t} for n, t in self.base.unknown_ops],
        }


# -- latency: the model of issue 4, when it is installed ---------------------------------------------
def _latency_model() -> Callable[..., LatencyPrediction | None] | None:
    try:
        mod = importlib.import_module("convscope.analyses.latency")
    except ModuleNotFoundError as exc:
        if exc.name == "convscope.analyses.latency":
            return None
        raise
    return getattr(mod, "predict", None)


class _Latency:
    def __init__(self, device: str | None, backend: str | None, batch: int, dtype: str, threads: int | None, fit: Any):
        self.kw = {"device": device, "backend": backend, "batch": batch, "dtype": dtype, "threads": threads, "fit": fit}
        self.predict = _latency_model()
        self.note: str | None = None
        if self.predict is None:
            self.note = "latency prediction is not available (convscope.analyses.latency is not installed)"

    def __call__(self, graph: Graph) -> LatencyPrediction | None:
        if self.predict is None:
            return None
        try:
            pred = self.predict(graph, **self.kw)
        except ConvscopeError:
            raise  # a bad --device, --fit, …: the user's input
        except Exception as exc:  # the latency model failed: keep the advice, say why latency is missing
            self.note = f"latency prediction failed: {type(exc).__name__}: {exc}"
            self.predict = None
            return None
        if pred is None and self.note is None:
            self.note = ("no latency prediction for this device (run `convscope calibrate`, or give --device "
                         "with a device profile)")
        return pred


def _attach(a: Analysis, latency: _Latency, graph: Graph) -> Analysis:
    pred = latency(graph)
    return a.with_latency(pred) if pred is not None else a


def _base(graph: Graph, opts: Options, dtype: DType, batch: int, latency: _Latency,
          feasible: tuple[int | None, int | None] | None = None) -> Base:
    rf = receptive_field(graph)
    analysis = _attach(analyze_graph(graph, dtype=dtype, batch=batch, feasible=feasible), latency, graph)
    return Base(graph, analysis, rf.as_dict(), productivity(graph, rf), depth_report(graph, opts.rules, rf), opts)


def _evaluate(base: Base, rw: Rewrite, dtype: DType, batch: int, latency: _Latency) -> Suggestion:
    g, v = base.graph, rw.graph
    analysis = _attach(analyze_graph(v, dtype=dtype, batch=batch), latency, v)
    depth = depth_from_analysis(analysis, v, base.options.rules)
    old = {n.name for n in g.nodes if n.op is not OpKind.INPUT}
    new = {n.name for n in v.nodes if n.op is not OpKind.INPUT}
    removed = tuple(n.name for n in g.nodes if n.name in old - new)
    added = tuple(n.name for n in v.nodes if n.name in new - old)
    edited = [n for n in rw.changed if n in new and n not in added]  # what the rewrite edited, then
    reshaped = reshaped_weights(layer_params(base.analysis), layer_params(analysis))
    changed = tuple(edited + [n for n in reshaped if n not in edited])  # and the weights reshaped by it
    notes = rw.notes
    unknown = [n for n, _ in analysis.unknown_ops]
    if unknown:  # said with every suggestion, for a script that reads only these
        notes += (f"{len(unknown)} unknown op(s) ({', '.join(unknown[:3])}{'…' if len(unknown) > 3 else ''}): "
                  "their cost is not in these numbers, and receptive fields after them are unknown",)
    refused = refusal(base.depth, depth)
    for out in g.outputs:  # a segmentation or detection map of another size: what the network returns
        old_out, new_out = g.node(out).out, v.node(out).out if out in v else None
        if old_out.is_image and new_out is not None and old_out.shape != new_out.shape:
            shown = f"{'x'.join(map(str, new_out.shape))} instead of {'x'.join(map(str, old_out.shape))}"
            notes += (f"the output '{out}' is a map: it becomes {shown}",)
            if rw.key != "resolution":  # a new input size is that one's point; any other rewrite would no
                refused = refused or f"it changes the output map '{out}' ({shown})"  # longer be the same network
    return Suggestion(rw.key, rw.title, rw.explanation, changed, removed, added, analysis, depth,
                      base.analysis, v, refused, notes)


def _order(items: list[Suggestion], by_ms: bool) -> list[Suggestion]:
    def key(s: Suggestion) -> tuple[int, float, int]:
        saved = s.ms_saved if by_ms and s.ms_saved is not None else float(s.macs_saved)
        return (0 if s.recommended else 1, -saved, -s.params_saved)

    return sorted(items, key=key)


def _run(key: str, base: Base, skipped: list[tuple[str, str, str]]) -> list[Rewrite]:
    """One rewrite's variants; why not, in ``skipped``, when it does not apply or fails."""
    try:
        return REWRITES[key](base)
    except NotApplicable as exc:
        reason = str(exc)
    except GraphError as exc:  # the rewrite would break the network here: say where
        reason = f"the rewritten network is invalid: {exc}"
    except Exception as exc:  # a bug in one rewrite: keep the others' results, say so
        reason = f"internal error ({type(exc).__name__}: {exc}); please report it"
    skipped.append((key, TITLES[key], reason))
    return []


def _selection(only: Sequence[str] | None, opts: Options) -> tuple[list[str], set[str] | None]:
    """The rewrites to run for ``only`` (rewrite keys, or suggestion keys such as ``width-0.5``)."""
    if only is None:
        return list(REWRITES), None
    if isinstance(only, str):  # one key: only="truncate"
        only = [only]
    widths = [f"width-{w:g}" for w in opts.widths]
    keys: list[str] = []
    for k in only:
        rk = k if k in REWRITES else "width" if k in widths else None
        if rk is None:
            raise InputError(f"unknown rewrite '{k}' (choose from {', '.join(REWRITES)}, {', '.join(widths)})")
        if rk not in keys:
            keys.append(rk)
    return keys, set(only)


def _check(graph: Graph, dtype: DType | str, batch: int) -> tuple[DType, int]:
    checked = checked_dtype_batch(dtype, batch)
    if not isinstance(graph, Graph):
        raise InputError(f"suggest_graph takes a Graph, got a {type(graph).__name__} (convscope.suggest takes any model)")
    if len(graph.input_shape) != 3:
        raise InputError(f"{graph.name}: suggest rewrites convolutional networks on images; the input "
                         f"{list(graph.input_shape)} is not C, H, W")
    return checked


def suggest_graph(
    graph: Graph,
    *,
    device: str | None = None,
    backend: str | None = None,
    dtype: DType | str = "fp32",
    batch: int = 1,
    threads: int | None = None,
    fit: Any = None,
    options: Options | None = None,
    only: Sequence[str] | None = None,
    progress: Progress | None = None,
    origin: str = "graph",
    feasible: tuple[int | None, int | None] | None = None,
) -> Advice:
    """Every applicable rewrite of ``graph``, analysed and sorted by what it saves (see module doc).
    On Ctrl-C the rewrites tried so far are returned, with ``interrupted`` set.  ``feasible``: the
    original's feasible range when the caller found it by capturing a model again at other sizes
    (:func:`convscope.api.feasible_of`)."""
    dt, batch = _check(graph, dtype, batch)
    left_out = graph.unlisted_params
    if left_out:  # parameters no layer holds (forward never uses them): a variant, written as a spec, has no
        meta = graph.meta_dict()  # place for them, so the original is counted without them as well
        meta.pop(UNLISTED_PARAMS)
        meta["notes"] = (*meta.get("notes", ()), f"suggest leaves out the {left_out} parameters no layer holds: "
                         "every number here counts the layers' own, as a variant written as a spec does")
        graph = dataclasses.replace(graph, meta=tuple(sorted(meta.items())))
    if options is not None and not isinstance(options, Options):
        raise InputError(f"options must be a convscope.analyses.advice.Options, got a {type(options).__name__}")
    check_device(device)
    threads = None if threads is None else positive_int(threads, "threads")
    opts = options or Options()
    keys, wanted = _selection(only, opts)
    latency = _Latency(device, backend, batch, dt.value, threads, fit)
    base = _base(graph, opts, dt, batch, latency, feasible)
    found: list[Suggestion] = []
    skipped: list[tuple[str, str, str]] = []
    interrupted = False
    for i, key in enumerate(keys):
        if progress:
            progress(key, i, len(keys))
        try:
            rewrites = _run(key, base, skipped)
            found += [_evaluate(base, rw, dt, batch, latency) for rw in rewrites
                      if wanted is None or rw.key in wanted or rw.key.split("-")[0] in wanted]
            if key == "width" and rewrites:  # a factor that changes nothing is said, not dropped
                got = {rw.key for rw in rewrites}
                for w in opts.widths:
                    k = f"width-{w:g}"
                    if k not in got and (wanted is None or k in wanted or "width" in wanted):
                        skipped.append((k, f"scale the width by {w:g}", f"every channel count rounds back to what "
                                        f"it is at x{w:g} (channels are rounded to the multiples the groups and "
                                        f"shuffles need)"))
        except KeyboardInterrupt:  # keep what is done (the CLI shows it and exits 130)
            interrupted = True
            break
    if progress:
        progress("done", len(keys), len(keys))
    by_ms = base.analysis.latency is not None and all(s.analysis.latency is not None for s in found)
    return Advice(graph.name, graph.input_shape, base.analysis, base.depth, tuple(_order(found, by_ms)),
                  tuple(skipped), "ms" if by_ms else "macs", latency.note, graph, origin, interrupted,
                  _analyze_options(dt, batch, device, backend, fit, threads), left_out)


def _analyze_options(dt: DType, batch: int, device: Any, backend: str | None, fit: Any,
                     threads: int | None) -> tuple[str, ...]:
    """The options `convscope analyze` needs to give a written variant's numbers again."""
    out: list[str] = []
    for flag, value, default in (("--batch", batch, 1), ("--dtype", dt.value, "fp32"), ("--device", device, None),
                                 ("--backend", backend, None), ("--fit", fit, None), ("--threads", threads, None)):
        if value is not None and value != default and isinstance(value, (str, int, os.PathLike)):
            out += [flag, shlex.quote(os.fspath(value) if isinstance(value, os.PathLike) else str(value))]
    return tuple(out)

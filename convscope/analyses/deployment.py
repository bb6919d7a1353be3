"""Deployment plans (DESIGN.md, "Deployment plans — semantics"): which design runs fastest here?

Every network of a plan is analysed at the plan's input (a trunk is cut at its layer; heads take the
trunk's output shape) and its latency predicted on the plan's device.  Per candidate, per frame:

* ``single``:   the network.
* ``switch``:   one specialist per frame, chosen by schedule (shares p_i, uniform when not given):
  expected = Σ p_i·t_i, worst = max t_i over those with p_i > 0 (max of t_i + swap_i, the time to
  load specialist i, when only one is resident and more than one runs); weights: all of them
  resident (``resident: all``) or the largest one that runs (``resident: one``).
* ``parallel``: every specialist on every frame, one after the other on one device: Σ t_i.
* ``trunk``:    the trunk once, then all heads (``run: all``: t_trunk + Σ t_head) or one head per
  frame (``run: one``: t_trunk + Σ p_i·t_head_i, worst t_trunk + max t_head over p_i > 0).
* ``cascade``:  the gate on every frame, the expert on a share ``rate`` of frames: expected
  t_gate + rate·t_expert, worst t_gate + t_expert (t_gate when rate is 0).

MACs per frame follow the same weights.  Peak activation bytes: the networks run one after the
other, so the largest of their peaks, except that an input several networks read stays live while
the first ones run (the frame under parallel specialists or a gate, the trunk's output under its
heads; the best order is assumed); a network that never runs (share or rate 0) sets none.  Weight
bytes add up over what is resident.  Uncertainty bands add up
the networks' bands with the same weights (errors of one predictor on one device are correlated,
so the bands are not shrunk as independent errors would be).  ``fps = 1000 / expected_ms``.

The verdict: among the candidates that meet the constraints (fps on the expected latency, weights
and activation budgets, ``worst_ms`` on the worst case) the fastest by expected latency; candidates
whose bands overlap its band are a tie.  Reasons are derived from the numbers.
"""

from __future__ import annotations

import math
import shlex
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from convscope.analyses._plan_parse import KINDS, Candidate, Constraints, NetRef, Plan, is_plan_file, load_plan, \
    parse_plan
from convscope.analyses.analyze import analyze_behind, analyze_graph
from convscope.analyses.cost import DType, peak_holding_input
from convscope.errors import FIXED_INPUT, INPUT_HINT, ConvscopeError, GraphError, InputError, NotCalibrated, NothingUsable, \
    SpecError, batch_size, positive_int
from convscope.ir.graph import Graph
from convscope.ir.transform import subgraph_until
from convscope.results import SCHEMA_VERSION, Analysis, LatencyPrediction
from convscope.units import fmt_ms, json_number

__all__ = [
    "KINDS", "Plan", "Candidate", "Constraints", "NetRef", "load_plan", "parse_plan", "NetworkResult",
    "CandidateResult", "Verdict", "Comparison", "compare", "combine", "decide", "DEFAULT_SWAP_MBPS", "plan_graphs",
    "plan_networks", "is_plan_file",
]

DEFAULT_SWAP_MBPS = 200.0  # MB/s to load a specialist's weights from storage (eMMC/SD class), when swap_ms is not given

Predictor = Callable[..., "LatencyPrediction | None"]
Measurer = Callable[[Graph], Any]  # returns an object with median_ms, p10_ms, p90_ms


@dataclass(frozen=True, slots=True)
class NetworkResult:
    """One network of a candidate, analysed where it runs (with its prediction, and measurement)."""

    ref: str
    role: str
    analysis: Analysis
    measured_ms: float | None = None
    measured_low_ms: float | None = None
    measured_high_ms: float | None = None
    peak_holding_input: int | None = None  # the peak when its input stays live to the end (see cost)

    @property
    def peak(self) -> int:
        return self.analysis.totals.peak_activation_bytes

    @property
    def held_peak(self) -> int:
        """The peak while the input stays live for a network that runs next (an upper bound when
        the graph was not at hand: the peak plus the input)."""
        if self.peak_holding_input is not None:
            return self.peak_holding_input
        a = self.analysis
        return self.peak + math.prod(a.input) * a.batch * DType.parse(a.dtype).bytes

    @property
    def lower_bound(self) -> bool:
        """Its MACs or latency miss something: unknown ops, or layers that could not be timed."""
        a = self.analysis
        return bool(a.unknown_ops or (a.latency and a.latency.untimed))

    @property
    def ms(self) -> float:
        return self.analysis.latency.ms if self.analysis.latency else float("nan")

    @property
    def low_ms(self) -> float:
        return self.analysis.latency.low_ms if self.analysis.latency else float("nan")

    @property
    def high_ms(self) -> float:
        return self.analysis.latency.high_ms if self.analysis.latency else float("nan")

    def to_dict(self) -> dict[str, Any]:
        a = self.analysis
        lo, hi = a.feasible_resolution
        return {
            "ref": self.ref, "role": self.role, "model": a.model, "input": list(a.input),
            "border_layer": a.border_layer,
            "unproductive_share": {"params": a.unproductive_share[0], "macs": a.unproductive_share[1]},
            "feasible_resolution": [lo, hi],
            "params": a.totals.params, "macs": a.totals.macs, "weight_bytes": a.totals.weight_bytes,
            "peak_activation_bytes": a.totals.peak_activation_bytes,
            "latency_ms": float(a.latency.ms) if a.latency else None,
            "low_ms": float(a.latency.low_ms) if a.latency else None,
            "high_ms": float(a.latency.high_ms) if a.latency else None,
            "measured_ms": self.measured_ms,
        }


@dataclass(frozen=True, slots=True)
class CandidateResult:
    name: str
    kind: str
    latency_ms: float  # expected per frame
    low_ms: float
    high_ms: float
    worst_ms: float
    macs_per_frame: float
    weight_bytes: int
    peak_activation_bytes: int
    networks: tuple[NetworkResult, ...]
    measured_ms: float | None = None
    measured_low_ms: float | None = None
    measured_high_ms: float | None = None
    notes: tuple[str, ...] = ()
    only_one: bool = False  # switch: one specialist resident; trunk: one head per frame
    weights: tuple[float, ...] = ()  # how often each network runs per frame (a switch's schedule)

    @property
    def running(self) -> tuple[NetworkResult, ...]:
        """The networks that ever run (a specialist with a share of 0 never does)."""
        return tuple(n for n, w in zip(self.networks, self.weights) if w > 0) or self.networks

    @property
    def fps(self) -> float:
        return 1000.0 / self.latency_ms if self.latency_ms > 0 else float("inf")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "kind": self.kind, "macs_per_frame": round(self.macs_per_frame),
            "latency_ms": float(self.latency_ms), "low_ms": float(self.low_ms), "high_ms": float(self.high_ms),
            "worst_ms": float(self.worst_ms),
            "fps": json_number(self.fps), "weight_bytes": self.weight_bytes, "peak_activation_bytes": self.peak_activation_bytes,
            "measured_ms": self.measured_ms, "measured_low_ms": self.measured_low_ms,
            "measured_high_ms": self.measured_high_ms, "notes": list(self.notes),
            "networks": [n.to_dict() for n in self.networks],
        }


@dataclass(frozen=True, slots=True)
class Verdict:
    best: str
    tied_with: tuple[str, ...]
    meets_constraints: bool
    reasons: tuple[str, ...]
    margin: float | None = None  # runner-up expected latency / best's
    failing: tuple[tuple[str, str], ...] = ()  # (candidate, why it fails the constraints)
    ranking_held: bool | None = None  # with measurements: did the predicted order hold (ties excepted)?

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"best": self.best, "tied_with": list(self.tied_with),
                             "meets_constraints": self.meets_constraints, "reasons": list(self.reasons),
                             "margin": self.margin,
                             "failing_constraints": {c: why for c, why in self.failing}}
        if self.ranking_held is not None:
            d["ranking_held"] = self.ranking_held
        return d


@dataclass(frozen=True, slots=True)
class Comparison:
    plan: str
    input: tuple[int, int, int]
    device: str
    tier: str
    candidates: tuple[CandidateResult, ...]
    verdict: Verdict
    constraints: Constraints = field(default_factory=Constraints)
    file: str = ""
    interrupted: bool = False  # Ctrl-C during --measure: the networks not yet timed have no measured figure
    backend: str = ""  # the runtime the prediction is for (torch, onnxruntime, tflite…)
    batch: int = 1

    def candidate(self, name: str) -> CandidateResult:
        for c in self.candidates:
            if c.name == name:
                return c
        raise KeyError(name)

    def ranked(self) -> list[CandidateResult]:
        return sorted(self.candidates, key=lambda c: c.latency_ms)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION, "plan": self.plan, "input": list(self.input), "device": self.device,
            "tier": self.tier, "backend": self.backend or None, "batch": self.batch,
            "constraints": self.constraints.to_dict(),
            "candidates": [c.to_dict() for c in self.candidates], "verdict": self.verdict.to_dict(),
            **({"interrupted": True} if self.interrupted else {}),
        }


# -- arithmetic: one small function per plan kind ---------------------------------------------------
def _weighted(nets: Sequence[NetworkResult], w: Sequence[float], attr: str) -> float:
    return sum(wi * getattr(n, attr) for wi, n in zip(w, nets))


def _measured(nets: Sequence[NetworkResult], w: Sequence[float]) -> tuple[float | None, float | None, float | None]:
    if any(n.measured_ms is None for n in nets):
        return None, None, None
    return (sum(wi * n.measured_ms for wi, n in zip(w, nets)),  # type: ignore[operator]
            sum(wi * (n.measured_low_ms if n.measured_low_ms is not None else n.measured_ms) for wi, n in zip(w, nets)),  # type: ignore[operator]
            sum(wi * (n.measured_high_ms if n.measured_high_ms is not None else n.measured_ms) for wi, n in zip(w, nets)))  # type: ignore[operator]


def _result(c: Candidate, nets: Sequence[NetworkResult], w: Sequence[float], worst: float,
            weight_bytes: int, peak: int, notes: tuple[str, ...] = ()) -> CandidateResult:
    m, ml, mh = _measured(nets, w)
    expected = _weighted(nets, w, "ms")
    return CandidateResult(
        c.name, c.kind, expected, _weighted(nets, w, "low_ms"), _weighted(nets, w, "high_ms"),
        max(worst, expected),  # the same sum added in another order may differ in its last bit
        sum(wi * n.analysis.totals.macs for wi, n in zip(w, nets)), weight_bytes,
        peak, tuple(nets), m, ml, mh, notes,
        (c.kind == "switch" and c.resident == "one") or (c.kind == "trunk" and c.run == "one"), tuple(w))


def _one_input_peak(nets: Sequence[NetworkResult]) -> int:
    """Peak of networks run one after the other on one input, which stays live until the last has
    read it; the last is chosen to make the peak smallest."""
    if len(nets) == 1:
        return nets[0].peak
    return min(max([nets[last].peak, *(n.held_peak for i, n in enumerate(nets) if i != last)])
               for last in range(len(nets)))


def _single(c: Candidate, nets: Sequence[NetworkResult]) -> CandidateResult:
    return _result(c, nets, [1.0], nets[0].ms, nets[0].analysis.totals.weight_bytes, nets[0].peak)


def _running(nets: Sequence[NetworkResult], shares: Sequence[float]) -> list[NetworkResult]:
    """The networks a schedule ever runs (a share of 0 never runs, so it sets no worst case)."""
    return [n for n, p in zip(nets, shares) if p > 0] or list(nets)


def _switch(c: Candidate, nets: Sequence[NetworkResult]) -> CandidateResult:
    running = _running(nets, c.shares)
    worst = max(n.ms for n in running)
    peak = max(n.peak for n in running)
    if c.resident == "all":
        return _result(c, nets, c.shares, worst, sum(n.analysis.totals.weight_bytes for n in nets), peak)
    loaded = max(n.analysis.totals.weight_bytes for n in running)  # only a specialist that runs is ever loaded
    notes: tuple[str, ...] = ()
    if len(running) > 1:  # a swap happens only between specialists that run: the frame that loads one
        def swap(n: NetworkResult) -> float:  # pays its load and its own run, never another's
            return c.swap_ms if c.swap_ms is not None else n.analysis.totals.weight_bytes / (DEFAULT_SWAP_MBPS * 1e6) * 1000
        worst = max(n.ms + swap(n) for n in running)
        if c.swap_ms is None:
            slow = max(running, key=swap)
            notes = (f"loading a specialist is assumed to take up to {fmt_ms(swap(slow))} ('{slow.ref}': its weights "
                     f"read at {DEFAULT_SWAP_MBPS:g} MB/s); set swap_ms to your measured value",)
    return _result(c, nets, c.shares, worst, loaded, peak, notes)


def _parallel(c: Candidate, nets: Sequence[NetworkResult]) -> CandidateResult:
    return _result(c, nets, [1.0] * len(nets), sum(n.ms for n in nets),
                   sum(n.analysis.totals.weight_bytes for n in nets), _one_input_peak(nets))


def _trunk(c: Candidate, nets: Sequence[NetworkResult]) -> CandidateResult:
    trunk, heads = nets[0], nets[1:]
    w = [1.0, *([1.0] * len(heads) if c.run == "all" else c.shares)]
    if c.run == "all":
        worst, peak = trunk.ms + sum(h.ms for h in heads), _one_input_peak(heads)
    else:
        running = _running(heads, c.shares)
        worst, peak = trunk.ms + max(h.ms for h in running), max(h.peak for h in running)
    return _result(c, nets, w, worst, sum(n.analysis.totals.weight_bytes for n in nets), max(trunk.peak, peak))


def _cascade(c: Candidate, nets: Sequence[NetworkResult]) -> CandidateResult:
    gate, expert = nets
    return _result(c, nets, [1.0, c.rate], gate.ms + (expert.ms if c.rate > 0 else 0.0),
                   gate.analysis.totals.weight_bytes + expert.analysis.totals.weight_bytes,
                   max(gate.held_peak, expert.peak) if c.rate > 0 else gate.peak)


_COMBINE: dict[str, Callable[[Candidate, Sequence[NetworkResult]], CandidateResult]] = {
    "single": _single, "switch": _switch, "parallel": _parallel, "trunk": _trunk, "cascade": _cascade,
}
assert set(_COMBINE) == set(KINDS)


def combine(c: Candidate, nets: Sequence[NetworkResult]) -> CandidateResult:
    """The per-frame numbers of a candidate from its networks' (see the module docstring)."""
    return _COMBINE[c.kind](c, nets)


# -- verdict ----------------------------------------------------------------------------------------
def _past(value: float, limit: float) -> str:
    """``value`` with enough digits to read as on its side of ``limit`` (0.0017 MB > 0.001 MB, not
    0.0 MB; 29.96 fps < 30 fps, not 30.0)."""
    for digits in range(1, 7):
        text = f"{value:.{digits}f}"
        if (float(text) > limit) if value > limit else (float(text) < limit):
            return text
    return f"{value:g}"


def _failures(c: CandidateResult, k: Constraints) -> list[str]:
    out = []
    if k.fps is not None and c.fps < k.fps:
        out.append(f"{_past(c.fps, k.fps)} fps < {k.fps:g} fps")
    if k.weights_mb is not None and c.weight_bytes / 1e6 > k.weights_mb:
        out.append(f"weights {_past(c.weight_bytes / 1e6, k.weights_mb)} MB > {k.weights_mb:g} MB")
    if k.activation_mb is not None and c.peak_activation_bytes / 1e6 > k.activation_mb:
        out.append(f"activations {_past(c.peak_activation_bytes / 1e6, k.activation_mb)} MB > {k.activation_mb:g} MB")
    if k.worst_ms is not None and c.worst_ms > k.worst_ms:
        out.append(f"worst case {_past(c.worst_ms, k.worst_ms)} ms > {k.worst_ms:g} ms")
    return out


def _overlap(a: CandidateResult, b: CandidateResult) -> bool:
    return a.low_ms <= b.high_ms and b.low_ms <= a.high_ms


def decide(cands: Sequence[CandidateResult], k: Constraints) -> Verdict:
    """The fastest candidate meeting the constraints; overlapping bands are a tie (no reasons yet)."""
    failing = tuple((c.name, "; ".join(f)) for c in cands if (f := _failures(c, k)))
    bad = {n for n, _ in failing}
    pool = [c for c in cands if c.name not in bad] or list(cands)
    ranked = sorted(pool, key=lambda c: c.latency_ms)
    best = ranked[0]
    tied = tuple(c.name for c in ranked[1:] if _overlap(best, c))
    margin = ranked[1].latency_ms / best.latency_ms if len(ranked) > 1 and best.latency_ms > 0 else None
    return Verdict(best.name, tied, best.name not in bad, (), margin, failing)


def ranking_held(cands: Sequence[CandidateResult]) -> tuple[bool | None, list[tuple[str, str]]]:
    """Did measurement order every pair the way the prediction did?  Pairs whose predicted bands
    overlap, or whose measured spreads overlap, are ties and are not counted.  Returns (held, swaps)."""
    measured = [c for c in cands if c.measured_ms is not None]
    if len(measured) < 2:
        return None, []
    swaps = []
    for i, a in enumerate(measured):
        for b in measured[i + 1:]:
            if _overlap(a, b):
                continue
            lo_a, hi_a = a.measured_low_ms or a.measured_ms, a.measured_high_ms or a.measured_ms
            lo_b, hi_b = b.measured_low_ms or b.measured_ms, b.measured_high_ms or b.measured_ms
            if lo_a <= hi_b and lo_b <= hi_a:  # type: ignore[operator]
                continue
            if (a.latency_ms < b.latency_ms) != (a.measured_ms < b.measured_ms):  # type: ignore[operator]
                swaps.append((a.name, b.name))
    return not swaps, swaps


# -- running a plan ---------------------------------------------------------------------------------
def _default_predictor() -> Predictor:
    from convscope.analyses.latency import predict

    return predict


def _check_device(plan: Plan, given: str | None) -> None:
    """An unknown device profile is an error before anything runs: at the plan's ``device:`` line,
    or naming ``--device`` when it came from the command line."""
    dev = given or plan.device
    if dev == "local":
        return
    from convscope.analyses.latency import load_profile

    try:
        load_profile(dev)
    except ConvscopeError as exc:
        if given is not None:
            raise InputError(f"--device {given}: {exc}") from None
        line, col = plan.device_mark
        raise SpecError(f"device '{dev}': {exc}", file=plan.file, line=line or None, column=col or None) from None


@contextmanager
def _importable_beside(plan_file: str) -> Iterator[None]:
    """``module.path:factory`` in a plan is imported relative to the plan file, like its paths: the
    plan's folder goes in front of ``sys.path`` while its networks load."""
    folder = str(Path(plan_file).resolve().parent) if plan_file and plan_file != "<plan>" else None
    if folder is None or folder in sys.path:
        yield
        return
    sys.path.insert(0, folder)
    try:
        yield
    finally:
        if folder in sys.path:
            sys.path.remove(folder)


class _Runner:
    """Analyses, predicts (and measures) each distinct network of a plan once."""

    def __init__(self, plan: Plan, device: str, predictor: Predictor, measurer: Measurer | None,
                 progress: Callable[[str], None] | None, predict_kw: dict[str, Any]):
        self.plan, self.device, self.predictor, self.measurer = plan, device, predictor, measurer
        self.progress = progress or (lambda _msg: None)
        self.kw = predict_kw
        self.cache: dict[tuple[Any, ...], NetworkResult] = {}
        self.declared: dict[str, tuple[int, ...] | None] = {}  # resolved ref -> the input it declares
        self.interrupted = False  # a measurement was cut short by Ctrl-C: measure nothing more

    def _fail(self, ref: NetRef, message: str) -> ConvscopeError:
        return SpecError(message, file=self.plan.file, line=ref.mark[0] or None, column=ref.mark[1] or None)

    def _graph(self, ref: NetRef, shape: tuple[int, ...] | None) -> Graph:
        """The network a reference names (relative imports resolve beside the plan), at ``shape``."""
        from convscope.api import load_graph

        with _importable_beside(self.plan.file):
            return load_graph(ref.resolved, input=shape)

    def _load(self, c: Candidate, ref: NetRef, shape: tuple[int, ...], what: str) -> Graph:
        try:
            return self._graph(ref, shape)
        except ConvscopeError as exc:
            why = str(exc).replace(INPUT_HINT, f" (the plan's input is {list(self.plan.input)})")
            raise self._fail(ref, f"candidate '{c.name}': {what} '{ref.ref}': {why}") from None

    def _declared(self, ref: NetRef) -> tuple[int, ...] | None:
        """The input a network declares itself (None: it has none, e.g. a PyTorch factory); read once
        per network however many candidates name it."""
        if ref.resolved not in self.declared:
            try:
                self.declared[ref.resolved] = self._graph(ref, None).input_shape
            except ConvscopeError:
                self.declared[ref.resolved] = None
        return self.declared[ref.resolved]

    def _check_channels(self, c: Candidate, ref: NetRef) -> None:
        """A spec or zoo network takes the plan's height and width, but not other channels: a
        grey-scale network in an RGB plan (or the reverse) is a plan error, never silently rebuilt.
        (PyTorch networks are loaded at the plan's input and refuse other channels there.)"""
        if not (ref.resolved.startswith("zoo:") or ref.resolved.lower().endswith((".yaml", ".yml", ".onnx"))):
            return
        declared = self._declared(ref)
        if declared is not None and declared[0] != self.plan.input[0]:
            raise self._fail(ref, f"candidate '{c.name}': {ref.role} '{ref.ref}' takes {declared[0]} input channel(s), "
                                  f"the plan's input {list(self.plan.input)} has {self.plan.input[0]}: "
                                  "give the plan the network's channels, or use a network made for the plan's")

    def network(self, ref: NetRef, graph: Graph, key: tuple[str, tuple[int, ...], str | None],
                behind: tuple[Graph, tuple[Any, ...]] | None = None) -> NetworkResult:
        """``behind``: (trunk, its key) for a head, which is analysed in the trunk's image pixels."""
        ckey = (key, behind[1] if behind else None)
        if ckey in self.cache:
            return replace(self.cache[ckey], role=ref.role, ref=ref.ref)
        self.progress(f"analysing {ref.ref}" + (f" up to {key[2]}" if key[2] else ""))
        if behind is not None:
            analysis = analyze_behind(behind[0], graph)
        elif key[2] is None:  # a whole network: its feasible range as `analyze` finds it (a model captured
            from convscope.api import feasible_of  # again at other sizes where its graph cannot be re-inferred)

            with _importable_beside(self.plan.file):
                analysis = analyze_graph(graph, feasible=feasible_of(ref.resolved, graph))
        else:
            analysis = analyze_graph(graph)
        try:
            pred = self.predictor(graph, device=self.device, **self.kw)
        except ConvscopeError as exc:
            if isinstance(exc, NotCalibrated):  # this machine, not calibrated: the quick way for a plan
                exc = InputError(f"{exc} (`convscope calibrate {shlex.quote(self.plan.file)}` times only this "
                                 "plan's layers, plus, being the first calibration of this backend and thread "
                                 "count, the eighteen reference networks of the overhead fit: a few minutes)")
            if self.device != self.plan.device:  # --device on the command line
                raise InputError(f"{self.plan.file}: --device {self.device}: {exc}") from None
            line, col = self.plan.device_mark
            where = f"{self.plan.file}:{line}:{col}" if line else self.plan.file
            default = "" if line else " (the plan names no 'device:'; local, this machine, is the default)"
            raise InputError(f"{where}: device '{self.device}'{default}: {exc}") from None
        if pred is None:
            raise InputError(f"{self.plan.file}: no latency prediction for device '{self.device}': run "
                             f"`convscope calibrate {shlex.quote(self.plan.file)}` for this machine, or choose a "
                             "device profile with --device")
        result = NetworkResult(ref.ref, ref.role, analysis.with_latency(pred),
                               peak_holding_input=peak_holding_input(graph, dtype=analysis.dtype, batch=analysis.batch))
        if self.measurer is not None and not self.interrupted:
            self.progress(f"measuring {ref.ref}" + (f" up to {key[2]}" if key[2] else ""))
            try:
                m = self.measurer(graph)
            except KeyboardInterrupt:  # while building or warming up: the predictions are still kept
                m = None
            self.interrupted = m is None or bool(getattr(m, "interrupted", False))
            if not self.interrupted:  # a figure cut short is not set beside complete ones
                result = replace(result, measured_ms=m.median_ms, measured_low_ms=m.p10_ms,
                                 measured_high_ms=m.p90_ms)
        self.cache[ckey] = result
        return result

    def graphs(self, c: Candidate) -> list[tuple[NetRef, Graph, tuple[str, tuple[int, ...], str | None]]]:
        """The networks a candidate runs, loaded at the shapes they get (a trunk cut, heads at its
        output), each with its cache key; plan errors name the file and line."""
        shape = self.plan.input
        for r in c.networks if c.kind != "trunk" else c.networks[:1]:
            self._check_channels(c, r)
        if c.kind != "trunk":
            return [(r, self._load(c, r, shape, r.role), (r.resolved, shape, None)) for r in c.networks]
        trunk_ref, heads = c.networks[0], c.networks[1:]
        full = self._load(c, trunk_ref, shape, "trunk")
        try:
            trunk = subgraph_until(full, c.cut or "")
        except GraphError as exc:
            raise self._fail(replace(trunk_ref, mark=c.cut_mark),
                             f"candidate '{c.name}': cannot cut '{trunk_ref.ref}' at '{c.cut}': {exc.detail}") from None
        out = trunk.node(trunk.outputs[0]).out
        if len(out.shape) != 3 or not out.is_image:
            raise self._fail(replace(trunk_ref, mark=c.cut_mark),
                             f"candidate '{c.name}': the trunk's output {list(out.shape)} at '{c.cut}' is not a "
                             "feature map that heads can take; cut at the global pooling (a C×1×1 map) or before it")
        trunk_role = replace(trunk_ref, role=f"trunk up to {trunk.outputs[0]}")
        got = [(trunk_role, trunk, (trunk_ref.resolved, shape, trunk.outputs[0]))]
        for h in heads:
            declared = self._declared(h)
            if declared is not None and declared[0] != out.shape[0]:
                raise self._fail(h, f"candidate '{c.name}': {h.role} does not fit the trunk's output {list(out.shape)}: "
                                    f"'{h.ref}' takes {declared[0]} input channels, the trunk gives {out.shape[0]}")
            try:
                head = self._graph(h, out.shape)
            except ConvscopeError as exc:
                why = str(exc).replace(INPUT_HINT, "")
                raise self._fail(h, f"candidate '{c.name}': {h.role} does not fit the trunk's output "
                                    f"{list(out.shape)}: {why}") from None
            got.append((h, head, (h.resolved, out.shape, None)))
        return got

    def candidate(self, c: Candidate) -> CandidateResult:
        placed = self.graphs(c)
        if c.kind != "trunk":
            nets = [self.network(r, g, key) for r, g, key in placed]
        else:
            (tref, trunk, tkey), heads = placed[0], placed[1:]
            nets = [self.network(tref, trunk, tkey),
                    *(self.network(r, g, key, behind=(trunk, tkey)) for r, g, key in heads)]
        for (r, _g, _k), n in zip(placed, nets):
            if n.analysis.all_unknown:
                line, col = r.mark
                where = f"{self.plan.file}:{line}:{col}" if line else self.plan.file
                raise NothingUsable(f"{where}: candidate '{c.name}', {r.role} '{r.ref}': every layer that "
                                    "computes something is an op convscope does not know, so it has no cost or "
                                    "latency to compare")
        result = combine(c, nets)
        return replace(result, notes=result.notes + self._resized_heads(c, placed) + _lower_bounds(nets))

    def _resized_heads(self, c: Candidate, placed: Sequence[tuple[NetRef, Graph, Any]]) -> tuple[str, ...]:
        """A head spec written for another feature-map size runs at the trunk's: say so."""
        if c.kind != "trunk":
            return ()
        out = []
        for r, g, _k in placed[1:]:
            declared, got = self._declared(r), g.input_shape
            if declared is not None and tuple(declared[1:]) != tuple(got[1:]):
                out.append(f"{r.role} '{r.ref}' declares input {list(declared)}; it runs on the trunk's output "
                           f"{list(got)}, and is analysed there")
        return tuple(out)


def _lower_bounds(nets: Sequence[NetworkResult]) -> tuple[str, ...]:
    """Why a candidate's numbers may be too low: unknown ops (no MACs, no time) and layers that could
    not be timed, per network, once each; and an ONNX file that accepts only another input size."""
    out: dict[str, None] = {}
    for n in nets:
        a = n.analysis
        if a.unknown_ops:
            names = ", ".join(name for name, _ in a.unknown_ops[:4]) + ("…" if len(a.unknown_ops) > 4 else "")
            out[f"{n.role} '{n.ref}': {len(a.unknown_ops)} unknown op(s) ({names}) have no MACs or time: its MACs and "
                "latency are lower bounds"] = None
        if a.latency and a.latency.untimed:
            u = a.latency.untimed
            out[f"{n.role} '{n.ref}': {len(u)} layer(s) could not be timed ({', '.join(u[:4])}"
                f"{'…' if len(u) > 4 else ''}): its latency is a lower bound"] = None
        for note in a.notes:  # an ONNX file fixed at another size cannot run the plan's frames as it is
            if note.startswith(FIXED_INPUT):
                out[f"{n.role} '{n.ref}': {note}"] = None
    return tuple(out)


PlacedNet = tuple[NetRef, Graph, tuple[str, tuple[int, ...], str | None]]


def plan_networks(plan: Plan | str) -> list[tuple[Candidate, list[PlacedNet]]]:
    """Each candidate with the networks it runs, loaded at the shapes they get (a trunk cut at its
    layer, heads at its output), each with a key that is equal for the same network at the same place."""
    if isinstance(plan, str):
        plan = load_plan(plan)
    runner = _Runner(plan, plan.device, _default_predictor(), None, None, {})
    return [(c, runner.graphs(c)) for c in plan.candidates]


def plan_graphs(plan: Plan | str) -> list[Graph]:
    """Every distinct network a plan runs, at the shape it runs at (what ``calibrate PLAN`` times)."""
    seen: dict[tuple[str, tuple[int, ...], str | None], Graph] = {}
    for _c, placed in plan_networks(plan):
        for _ref, g, key in placed:
            seen.setdefault(key, g)
    return list(seen.values())


def compare(
    plan: Plan | str,
    *,
    device: str | None = None,
    predictor: Predictor | None = None,
    measure: bool = False,
    measurer: Measurer | None = None,
    progress: Callable[[str], None] | None = None,
    **predict_kw: Any,
) -> Comparison:
    """Evaluate every candidate of a plan and decide.  ``predictor(graph, device=…, **predict_kw)``
    defaults to :func:`convscope.analyses.latency.predict`; with ``measure`` every network is also
    built and timed (``measurer(graph)``, default :func:`convscope.backends.measure.measure_graph`)."""
    import os

    if isinstance(plan, os.PathLike):
        plan = os.fspath(plan)
    if isinstance(plan, str):
        plan = load_plan(plan)
    if not isinstance(plan, Plan):
        raise InputError(f"compare takes a plan file path (FORMATS.md §2) or a Plan, got a {type(plan).__name__}")
    if device is not None and (not isinstance(device, str) or not device.strip()):
        raise InputError(f"--device (device=) must be a profile name, a profile .yaml path or 'local', got {device!r}")
    if predict_kw.get("batch") is not None:  # what the CLI's parser checks, for the Python API
        predict_kw["batch"] = batch_size(predict_kw["batch"])
    if predict_kw.get("threads") is not None:
        predict_kw["threads"] = positive_int(predict_kw["threads"], "threads")
    dev = device or plan.device
    if predictor is None:  # a predictor of the caller's own may know devices we have no profile for
        _check_device(plan, device)
    if measure and measurer is None:
        from convscope.backends.measure import measure_graph

        measurer = measure_graph
    runner = _Runner(plan, dev, predictor or _default_predictor(), measurer if measure else None, progress, predict_kw)
    results = tuple(runner.candidate(c) for c in plan.candidates)
    verdict = decide(results, plan.constraints)
    held = None
    swaps: list[tuple[str, str]] = []
    if measure:
        held, swaps = ranking_held(results)
    first = next((n.analysis.latency for c in results for n in c.networks if n.analysis.latency), None)
    tier, backend, batch = (first.tier, first.backend, first.batch) if first else ("", "", 1)
    shown = dev
    if dev.lower().endswith((".yaml", ".yml")):  # a profile file: the device by its profile's name
        from convscope.analyses.latency import load_profile

        shown = load_profile(dev).name
    cmp = Comparison(plan.name, plan.input, shown, tier, results, verdict, plan.constraints, plan.file,
                     runner.interrupted, backend, batch)
    from convscope.analyses._plan_reasons import reasons

    return replace(cmp, verdict=replace(verdict, reasons=tuple(reasons(cmp, swaps if held is not None else None)),
                                        ranking_held=held))

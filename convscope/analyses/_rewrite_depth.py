"""Depth checks: is a network (or a rewritten one) too shallow for its input?

Two rules, both with a threshold the caller may change:

* **spatial layers** — the number of spatial convolutions (kernel larger than 1×1) on the deepest
  input-to-output path, not counting the head or SE gates.  Rule (seeds/004, Urban et al. 2016, "Do
  Deep Convolutional Nets Really Need to be Deep and Convolutional?"): shallow students cannot
  match deep convolutional teachers on CIFAR-10 "unless the student models contain multiple layers
  of convolution"; they "do not have to be as deep as the teacher".  "Multiple" is not a number in
  that paper's abstract: we take 4 as the default floor and say so in every warning.
* **receptive-field coverage** — ``rf_max`` of the last spatial layer divided by the input side
  (the smaller ratio of the two axes).  Rule (seeds/002, "Should You Go Deeper?"): the features a
  convolutional layer can process are strictly limited by its receptive field; a network whose last
  layer sees less than half of the image cannot relate two parts of an object that lie farther apart
  than that.  Default floor: 0.5.

Pools are not counted as layers (they hold no weights); 1×1 convolutions neither (they see one
position).  A global path (r = ∞) is the head, not coverage.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from convscope.analyses.border import last_spatial_each
from convscope.analyses.receptive_field import INF, RFResult, receptive_field
from convscope.ir.graph import Graph
from convscope.ir.ops import OpKind
from convscope.results import Analysis

__all__ = ["DepthRules", "DepthWarning", "DepthReport", "depth_report", "depth_from_analysis", "refusal"]

SPATIAL_RULE = ("seeds/004 (Urban et al. 2016): shallow students do not match deep convolutional teachers "
                "unless they contain multiple layers of convolution")
COVERAGE_RULE = ("seeds/002 (\"Should You Go Deeper?\"): what a layer can process is strictly limited by its "
                 "receptive field")


@dataclass(frozen=True, slots=True)
class DepthRules:
    min_spatial_layers: int = 4
    min_rf_coverage: float = 0.5

    def __post_init__(self) -> None:
        if self.min_spatial_layers < 1:
            raise ValueError(f"min_spatial_layers must be >= 1, got {self.min_spatial_layers}")
        if not 0 < self.min_rf_coverage <= 4:
            raise ValueError(f"min_rf_coverage must be in (0, 4], got {self.min_rf_coverage}")


@dataclass(frozen=True, slots=True)
class DepthWarning:
    kind: str  # spatial_layers | rf_coverage
    value: float
    threshold: float
    message: str
    rule: str

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "value": self.value, "threshold": self.threshold,
                "message": self.message, "rule": self.rule}


@dataclass(frozen=True, slots=True)
class DepthReport:
    spatial_layers: int
    rf_coverage: float | None  # None when no finite receptive field reaches the head
    warnings: tuple[DepthWarning, ...]

    def has(self, kind: str) -> bool:
        return any(w.kind == kind for w in self.warnings)

    def to_dict(self) -> dict[str, Any]:
        return {"spatial_layers": self.spatial_layers, "rf_coverage": self.rf_coverage,
                "warnings": [w.to_dict() for w in self.warnings]}


def _spatial_depth(graph: Graph, rf: RFResult) -> int:
    rfs = rf.as_dict()
    depth: dict[str, int] = {}
    for n in graph.nodes:
        d = max((depth[i] for i in n.inputs), default=0)
        r = rfs[n.name]
        spatial = (n.op in (OpKind.CONV, OpKind.CONV_T) and max(n.attrs.kernel) > 1  # type: ignore[union-attr]
                   and not r.is_global)
        depth[n.name] = d + (1 if spatial else 0)
    return max((depth[o] for o in graph.outputs), default=0)


def _best(covs: list[float | None]) -> float | None:
    """With several outputs (heads), the one that sees most: what the graph computes for each
    output, not the order its layers are written in."""
    known = [c for c in covs if c is not None]
    return max(known) if known else None


def _coverage(graph: Graph, rf: RFResult) -> float | None:
    """rf_max of the last spatial layer before an output over the input side, the smaller of the two
    axes; with several outputs the largest of theirs."""
    rfs = rf.as_dict()
    shape = graph.input_shape
    if len(shape) != 3:
        return None
    covs: list[float | None] = []
    for last in last_spatial_each(graph, rfs, images=True):  # behind an unknown op the coverage is
        vals = last.rf_max_finite if last is not None else None  # unknown too, never an earlier layer's
        covs.append(None if vals is None or vals[0] is None or vals[1] is None
                    else float(min(vals[0] / shape[1], vals[1] / shape[2])))
    return _best(covs)


def refusal(base: DepthReport, variant: DepthReport) -> str | None:
    """Why a rewrite is not recommended: it triggers a depth warning the network did not have, or
    makes an existing one worse.  None when it is fine."""
    for w in variant.warnings:
        if not base.has(w.kind):
            return f"{w.message} — {w.rule}"
        if w.kind == "spatial_layers":
            worse = variant.spatial_layers < base.spatial_layers
        else:
            worse = (variant.rf_coverage or 0.0) < (base.rf_coverage or 0.0)
        if worse:
            return f"the network is already too shallow and this makes it worse: {w.message} — {w.rule}"
    return None


def depth_report(graph: Graph, rules: DepthRules = DepthRules(), rf: RFResult | None = None) -> DepthReport:
    rf = rf or receptive_field(graph)
    return _report(graph.input_shape, _spatial_depth(graph, rf), _coverage(graph, rf), rules)


def depth_from_analysis(a: Analysis, graph: Graph, rules: DepthRules = DepthRules()) -> DepthReport:
    """The same report from an analysis's rows (their receptive fields), without propagating the
    receptive field again; falls back to :func:`depth_report` when the last spatial layer mixes a
    global path in (an SE gate: its finite rf_max is not in the rows)."""
    depth: dict[str, int] = {}
    for r in a.layers:
        glob = r.rf_min is not None and all(v == INF for v in r.rf_min)
        d = max((depth.get(i, 0) for i in r.inputs), default=0)
        spatial = r.op in ("conv", "convT") and r.kernel is not None and max(r.kernel) > 1 and not glob
        depth[r.name] = d + (1 if spatial else 0)
    covs: list[float | None] = []
    for out in graph.outputs:
        keep = graph.ancestors(out) | {out}
        last = None
        for r in a.layers:
            if r.name not in keep or len(r.out_shape) != 3:
                continue
            glob = r.rf_min is not None and all(v == INF for v in r.rf_min)
            if r.rf_min is None:  # unknown receptive field: so is the coverage
                last = None
            elif None not in r.rf_min and not glob:
                last = r
        cov = None
        if last is not None and last.rf_max is not None and None not in last.rf_max:
            if INF in last.rf_max:
                return depth_report(graph, rules)
            cov = float(min(last.rf_max[0] / a.input[1], last.rf_max[1] / a.input[2]))
        covs.append(cov)
    return _report(a.input, max((depth.get(o, 0) for o in graph.outputs), default=0), _best(covs), rules)


def _report(shape: tuple[int, ...], n: int, cov: float | None, rules: DepthRules) -> DepthReport:
    warnings = []
    if n < rules.min_spatial_layers:
        warnings.append(DepthWarning(
            "spatial_layers", n, rules.min_spatial_layers,
            f"only {n} spatial convolution layer(s) on the deepest path (fewer than {rules.min_spatial_layers}): "
            "too shallow to integrate context; do not cut further", SPATIAL_RULE))
    if cov is not None and cov < rules.min_rf_coverage:
        side = shape[1:]
        warnings.append(DepthWarning(
            "rf_coverage", round(cov, 4), rules.min_rf_coverage,
            f"the last spatial layer sees at most {100 * cov:.0f}% of the {side[0]}x{side[1]} input "
            f"(less than {100 * rules.min_rf_coverage:.0f}%): features larger than its receptive field cannot be "
            "recognised; do not cut further", COVERAGE_RULE))
    return DepthReport(n, None if cov is None else round(cov, 4), tuple(warnings))

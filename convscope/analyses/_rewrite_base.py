"""What every rewrite sees and returns, and the table of rewrites (key -> function).

A rewrite is a function ``(Base) -> list[Rewrite]``: it reads the analysed network and returns zero
or more rewritten graphs, or raises :class:`NotApplicable` with the reason.  Registering a key
twice raises.  The rewritten graphs are rebuilt through GraphBuilder (see ``_rewrite_edit``), so
they are valid by construction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from convscope.analyses._rewrite_depth import DepthReport, DepthRules
from convscope.analyses.border import Productivity, flaggable
from convscope.analyses.receptive_field import NodeRF
from convscope.ir.graph import Graph, Node
from convscope.ir.ops import WEIGHTED_OPS, OpKind
from convscope.ir.transform import signal_relayout
from convscope.results import Analysis

__all__ = ["Options", "Base", "Rewrite", "NotApplicable", "REWRITES", "TITLES", "rewrite", "POINTWISE",
           "layer_params", "reshaped_weights"]

# Ops that act on each position alone and keep the shape (a rewrite may move a layer across them).
POINTWISE = frozenset({OpKind.BATCHNORM, OpKind.ACT, OpKind.DROPOUT, OpKind.IDENTITY, OpKind.SCALE})


@dataclass(frozen=True, slots=True)
class Options:
    """Knobs of the rewrites; the defaults are the published designs the seeds name."""

    cardinality: int = 32  # ResNeXt-50 32x4d: 32 groups ...
    min_group_width: int = 4  # ... of at least 4 channels
    bottleneck_reduction: int = 4  # ResNet bottleneck: the 3x3 runs at a quarter of the channels
    widths: tuple[float, ...] = (0.75, 0.5)
    channel_divisor: int = 8  # widths are rounded to multiples of this (MobileNet's make_divisible)
    rules: DepthRules = DepthRules()

    def __post_init__(self) -> None:
        for name in ("cardinality", "min_group_width", "bottleneck_reduction", "channel_divisor"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        bad = [w for w in self.widths if not 0 < w < 1]
        if bad:
            raise ValueError(f"widths must be in (0, 1), got {bad[0]}")


def layer_params(x: Analysis | Graph) -> dict[str, int]:
    """Parameters per layer, in graph order: an analysis's rows, or a graph's costs."""
    if isinstance(x, Analysis):
        return {r.name: r.params for r in x.layers}
    from convscope.analyses.cost import cost

    return {n.name: n.cost.params for n in cost(x).nodes}


def reshaped_weights(before: dict[str, int], after: dict[str, int]) -> dict[str, tuple[int, int]]:
    """Layers of both networks whose weights change shape (a BatchNorm after a narrower conv, a linear
    layer that reads a flattened map of another size: a PyTorch user must edit these modules too),
    as name -> (params before, params after) in ``after``'s order; see :func:`layer_params`."""
    return {n: (before[n], p) for n, p in after.items() if n in before and before[n] != p}


class NotApplicable(Exception):
    """The rewrite does not apply to this network; the message says why."""


@dataclass(frozen=True, slots=True)
class Rewrite:
    key: str
    title: str
    explanation: str
    graph: Graph
    changed: tuple[str, ...]  # original layers whose attributes or inputs were edited
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Base:
    """The analysed network a rewrite starts from."""

    graph: Graph
    analysis: Analysis
    rf: dict[str, NodeRF]
    prod: Productivity
    depth: DepthReport
    options: Options = Options()
    head_entry: str | None = field(init=False)
    global_names: frozenset[str] = field(init=False)
    stems: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "global_names",
                           frozenset(n for n, r in self.rf.items() if r.is_global))
        object.__setattr__(self, "head_entry", _head_entry(self.graph, self.rf))
        behind: dict[str, bool] = {}  # a weighted layer lies between the node and the image
        for n in self.graph.nodes:
            behind[n.name] = any(behind[i] or self.graph.node(i).op in WEIGHTED_OPS for i in n.inputs)
        object.__setattr__(self, "stems", frozenset(n.name for n in self.graph.nodes
                                                    if n.op in WEIGHTED_OPS and not behind[n.name]))

    def is_stem(self, node: Node) -> bool:
        """The layer reads the image itself, or through ops without weights (a normalisation written
        in forward, (x - mean) / std; a BatchNorm first): few channels, left alone by the rewrites."""
        return node.name in self.stems

    def flagged(self) -> frozenset[str]:
        return self.prod.names

    def flagged_weighted(self, names: frozenset[str] | None = None) -> list[str]:
        names = self.prod.names if names is None else names
        return [n for n in names if self.graph.node(n).op in WEIGHTED_OPS]

    def is_flaggable(self, node: Node) -> bool:
        return flaggable(node, [self.rf[i] for i in node.inputs])

    def trunk(self) -> list[Node]:
        """Layers with a spatial output before the head that are not part of a global computation."""
        stop = self.graph.position(self.head_entry) if self.head_entry else len(self.graph.nodes)
        return [n for n in self.graph.nodes[:stop]
                if n.op is not OpKind.INPUT and n.out.is_image and n.name not in self.global_names]

    def variant_name(self, key: str) -> str:
        return f"{self.graph.name}-{key}"


def _unsqueezed(graph: Graph, node: Node) -> bool:
    """A signal's (C, L) made the (C, 1, L) map a 2-D op reads (a Conv1d model's 1-D pool)."""
    return signal_relayout(graph, node) and len(node.out.spatial_axes) == 2


def _head_entry(graph: Graph, rf: dict[str, NodeRF]) -> str | None:
    """The first layer of the classifier head: walking back from the (single) output while the
    receptive field is global, then through adaptive pools and flattens that feed it.  When the
    head holds no weighted layer (All-CNN: a 1x1 conv to the classes, then global pooling), the
    convolution that sets the number of outputs belongs to the head too."""
    if len(graph.outputs) != 1:
        return None
    node = graph.node(graph.outputs[0])
    if not rf[node.name].is_global:
        return None
    weighted = node.op in WEIGHTED_OPS
    while len(node.inputs) == 1 and rf[node.inputs[0]].is_global:
        node = graph.node(node.inputs[0])
        weighted = weighted or node.op in WEIGHTED_OPS
    while len(node.inputs) == 1 and (graph.node(node.inputs[0]).op in (
            OpKind.ADAPTIVE_AVGPOOL, OpKind.ADAPTIVE_MAXPOOL, OpKind.FLATTEN) or _unsqueezed(graph, graph.node(node.inputs[0]))):
        node = graph.node(node.inputs[0])
    if not weighted:
        back = node
        while len(back.inputs) == 1:
            back = graph.node(back.inputs[0])
            if back.op in (OpKind.CONV, OpKind.CONV_T):
                return back.name
            if back.op not in POINTWISE:
                break
    return node.name


RewriteFn = Callable[[Base], list[Rewrite]]
REWRITES: dict[str, RewriteFn] = {}
TITLES: dict[str, str] = {}


def rewrite(key: str, title: str) -> Callable[[RewriteFn], RewriteFn]:
    def deco(fn: RewriteFn) -> RewriteFn:
        if key in REWRITES:
            raise RuntimeError(f"duplicate rewrite '{key}'")
        REWRITES[key] = fn
        TITLES[key] = title
        return fn

    return deco

"""Receptive fields (DESIGN.md, "Receptive field — exact semantics").

Per node and per spatial axis we keep the set of distinct ``(r, j)`` pairs over all paths from the
input: ``r`` the receptive-field size in input pixels, ``j`` the jump (input pixels between adjacent
output positions).  The input starts at ``{(1, 1)}``.

* conv / pool, kernel k, stride s, dilation d:  ``r' = r + d(k-1)·j``, ``j' = j·s``.
* transposed conv, stride s:  ``j' = j/s``; an output position of phase c (its index mod s) depends
  on input positions spanning ``(max T_c - min T_c)·d/s`` input steps, where ``T_c`` are the kernel
  taps that land on that phase (k=4, s=2: 1 step for every phase; k=2, s=2: none).  When all
  phases span the same (k a multiple of s, or s = 1) the map stays uniform and ``r' = r + span·j``
  is exact at that layer.  A "ragged" transposed conv (k=3, s=2: phases span 1 and 0) gives each
  pair two successors, the narrowest and the widest phase, so rf_min and rf_max at that layer are
  exact too.
* upsampling by f: ``j' = j/f``; nearest adds nothing to r, bilinear one input step (two neighbours).
* merges: union of the inputs' sets.  Global ops (global pools, flatten of a map, linear over a
  spatial axis, attention, matmul of activations): ``(∞, ∞)``.  Ops whose output mixes a global
  statistic into a per-position value (the multiplication of an SE gate, GroupNorm) keep the finite
  pairs and add ``(∞, ∞)``, so ``rf_min`` stays finite while ``rf_max`` becomes ∞.
* ``zero`` (x·0) does not depend on its input: empty set (the node is constant); so does a
  ``constant`` (a parameter or literal the network holds), which merges add nothing to, and every
  op whose inputs are all constant (a global pool of a constant map is no global path).
* ``unknown`` ops: unknown, and so is everything downstream (reported, never guessed).

After any resampling (upsampling, a strided transposed conv, a pixel shuffle, adaptive pooling with
unequal bins) the output grid is no longer uniform: neighbouring outputs read different numbers of
input positions, and ``r + a·j`` with the average jump ``j/f`` is an average over output phases.  For
those nodes ``rf_min`` and ``rf_max`` are replaced by the true supports, found position by position
(``_rf_exact``); the pairs and the jump stay as they are.

Numbers are ints where exact (rf_min and rf_max wherever every path can be followed back) and
:class:`fractions.Fraction` for jumps after upsampling; ∞ is ``math.inf``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from fractions import Fraction

from convscope._registry import registrar, require_all
from convscope.analyses._pairs import INF, Num, Pairs
from convscope.analyses._rf_exact import Exact, periods, resample_inv, shifted_supports, supports
from convscope.ir.graph import Graph, Node, TensorInfo
from convscope.ir.ops import UPSAMPLE_SPAN, OpKind, UpsampleAttrs

__all__ = ["INF", "AxisRF", "NodeRF", "RFResult", "convT_span", "receptive_field"]

PairSet = Pairs
GLOBAL: PairSet = Pairs(glob=True)


def _norm(x: Num) -> Num:
    """Fractions with denominator 1 become ints (keeps arithmetic fast and output tidy)."""
    if isinstance(x, Fraction) and x.denominator == 1:
        return int(x)
    return x


@dataclass(frozen=True, slots=True)
class AxisRF:
    """The (r, j) pairs of one axis.  An empty set means the value does not depend on the input.
    The summaries (rf_min, rf_max, …) are computed once, at construction."""

    pairs: PairSet
    exact: tuple[int, int] | None = None  # (narrowest, widest) finite support found position by position
    rf_min: Num | None = field(init=False)
    rf_max: Num | None = field(init=False)
    rf_max_finite: Num | None = field(init=False)
    jump: Num | None = field(init=False)  # the jump of the finite paths (the smallest, should they differ)
    is_global: bool = field(init=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        p = self.pairs
        top = p.max_finite_r
        low = p.min_r
        if self.exact is not None and top is not None:  # after resampling: true supports, not averages
            low, top = self.exact
        set_(self, "rf_min", low)
        set_(self, "rf_max", INF if p.has_global else top)
        set_(self, "rf_max_finite", top)
        set_(self, "jump", p.min_finite_j)
        set_(self, "is_global", p.has_global and top is None)


@dataclass(frozen=True, slots=True)
class NodeRF:
    """Receptive field of one node: per axis (H, W), or ``None`` when unknown."""

    axes: tuple[AxisRF, AxisRF] | None
    paths: int

    @property
    def known(self) -> bool:
        return self.axes is not None

    @property
    def constant(self) -> bool:
        return self.axes is not None and not self.axes[0].pairs

    def _both(self, attr: str) -> tuple[Num | None, Num | None] | None:
        if self.axes is None:
            return None
        return (getattr(self.axes[0], attr), getattr(self.axes[1], attr))

    @property
    def rf_min(self) -> tuple[Num | None, Num | None] | None:
        return self._both("rf_min")

    @property
    def rf_max(self) -> tuple[Num | None, Num | None] | None:
        return self._both("rf_max")

    @property
    def rf_max_finite(self) -> tuple[Num | None, Num | None] | None:
        return self._both("rf_max_finite")

    @property
    def jump(self) -> tuple[Num | None, Num | None] | None:
        return self._both("jump")

    @property
    def is_global(self) -> bool:
        """Every path is global: the node sees the whole input (the classifier head)."""
        return self.axes is not None and self.axes[0].is_global and self.axes[1].is_global


UNKNOWN_RF = NodeRF(None, 0)


@dataclass(frozen=True, slots=True)
class RFResult:
    """Receptive field of every node; ``of(name)`` for one."""

    nodes: tuple[tuple[str, NodeRF], ...]
    misaligned: tuple[str, ...] = ()  # merges of paths whose positions do not line up (see receptive_field)

    def of(self, name: str) -> NodeRF:
        return dict(self.nodes)[name]

    def as_dict(self) -> dict[str, NodeRF]:
        return dict(self.nodes)


# -- per-op rules -----------------------------------------------------------------------------------
Rule = Callable[[Node, list[NodeRF], list[TensorInfo]], "tuple[PairSet, PairSet] | None"]
_RULES: dict[OpKind, Rule] = {}
_rule = registrar(_RULES, "receptive-field rule")


def _grow(pairs: PairSet, add_steps: Num, factor: Num) -> PairSet:
    """Each finite (r, j) -> (r + add_steps·j, j·factor); global pairs stay global."""
    return pairs.grow(_norm(add_steps), _norm(factor))


def _union(inputs: Iterable[NodeRF]) -> tuple[PairSet, PairSet]:
    h, w = Pairs(), Pairs()
    for x in inputs:
        assert x.axes is not None
        h, w = h | x.axes[0].pairs, w | x.axes[1].pairs
    return h, w


@_rule(OpKind.CONV, OpKind.MAXPOOL, OpKind.AVGPOOL)
def _kernel(node: Node, ins: list[NodeRF], infos: list[TensorInfo]) -> tuple[PairSet, PairSet]:
    a = node.attrs
    h, w = _union(ins)
    out = [
        _grow(h, a.dilation[0] * (a.kernel[0] - 1), a.stride[0]),  # type: ignore[union-attr]
        _grow(w, a.dilation[1] * (a.kernel[1] - 1), a.stride[1]),  # type: ignore[union-attr]
    ]
    strip = _strip_axis(node, infos[0]) if node.op is not OpKind.CONV else None
    if strip is not None:  # a strip pool, F.avg_pool2d(x, (1, W)): the same as adaptive_avg_pool2d(x,
        out[strip] = GLOBAL  # (None, 1)), global along that axis, as it is written that way and in ONNX
    return out[0], out[1]


def _strip_axis(node: Node, x: TensorInfo) -> int | None:
    """The axis a pool reads whole while it leaves the other untouched (kernel and stride 1 there):
    strip pooling along a row or a column.  None for other pools (a 2×2 pool on a 2×2 map stays a
    window: it is a pool like the ones before it, not a global op)."""
    a = node.attrs
    if len(x.spatial_axes) != 2:
        return None
    for k in (0, 1):
        o = 1 - k
        if (node.out.spatial[k] == 1 and x.spatial[k] > 1 and a.kernel[k] >= x.spatial[k]  # type: ignore[union-attr]
                and a.padding[k] == (0, 0) and a.kernel[o] == 1 and a.stride[o] == 1  # type: ignore[union-attr]
                and node.out.spatial[o] == x.spatial[o] > 1):
            return k
    return None


def convT_spans(k: int, s: int, d: int) -> tuple[Fraction, Fraction]:
    """(narrowest, widest) distance, in input steps, between the input positions that feed one
    output position, over the output phases that receive any tap."""
    spans = []
    for c in range(s):
        taps = [t for t in range(k) if (t * d) % s == c]
        if taps:
            spans.append(Fraction((max(taps) - min(taps)) * d, s))
    return min(spans), max(spans)


def convT_span(k: int, s: int, d: int) -> Fraction:
    """The widest span (see :func:`convT_spans`)."""
    return convT_spans(k, s, d)[1]


@_rule(OpKind.CONV_T)
def _convT(node: Node, ins: list[NodeRF], infos: list[TensorInfo]) -> tuple[PairSet, PairSet]:
    a = node.attrs
    out = []
    for pairs, axis in zip(_union(ins), (0, 1)):
        k, s, d = a.kernel[axis], a.stride[axis], a.dilation[axis]  # type: ignore[union-attr]
        lo, hi = convT_spans(k, s, d)
        grown = _grow(pairs, hi, Fraction(1, s))
        if lo != hi:
            grown = grown | _grow(pairs, lo, Fraction(1, s))
        out.append(grown)
    return out[0], out[1]


@_rule(OpKind.UPSAMPLE)
def _upsample(node: Node, ins: list[NodeRF], infos: list[TensorInfo]) -> tuple[PairSet, PairSet]:
    a = node.attrs
    h, w = _union(ins)
    assert isinstance(a, UpsampleAttrs)
    taps = UPSAMPLE_SPAN[a.mode]
    out = []
    for axis, pairs in ((0, h), (1, w)):
        size_in, size_out = infos[0].shape[axis + 1], node.out.shape[axis + 1]
        # resampling by 1 along an axis reads the one position under each output
        out.append(_grow(pairs, taps if size_in != size_out else 0, resample_inv(a, axis, size_in, size_out)))
    return out[0], out[1]


@_rule(OpKind.PIXEL_SHUFFLE)
def _pixel_shuffle(node: Node, ins: list[NodeRF], infos: list[TensorInfo]) -> tuple[PairSet, PairSet]:
    # Output position y reads input position y // r (all its channels): a nearest upsampling by r.
    r = node.attrs.factor  # type: ignore[union-attr]
    h, w = _union(ins)
    return _grow(h, 0, Fraction(1, r)), _grow(w, 0, Fraction(1, r))


@_rule(OpKind.PIXEL_UNSHUFFLE)
def _pixel_unshuffle(node: Node, ins: list[NodeRF], infos: list[TensorInfo]) -> tuple[PairSet, PairSet]:
    # Output position y gathers input positions r·y .. r·y + r - 1 into channels: an r×r window, stride r.
    r = node.attrs.factor  # type: ignore[union-attr]
    h, w = _union(ins)
    return _grow(h, r - 1, r), _grow(w, r - 1, r)


@_rule(OpKind.ADAPTIVE_AVGPOOL, OpKind.ADAPTIVE_MAXPOOL)
def _adaptive(node: Node, ins: list[NodeRF], infos: list[TensorInfo]) -> tuple[PairSet, PairSet]:
    h, w = _union(ins)
    out = []
    for pairs, n_in, n_out in ((h, infos[0].shape[1], node.out.shape[1]), (w, infos[0].shape[2], node.out.shape[2])):
        if n_out == 1:
            out.append(GLOBAL)
            continue
        # Bin i covers [floor(i·n/m), ceil((i+1)·n/m)): the widest bin is the kernel.  More bins than
        # positions: each bin is one position, or two where a bin straddles a boundary.
        k = (1 if n_out % n_in == 0 else 2) if n_out > n_in else \
            max(-(-(i + 1) * n_in // n_out) - (i * n_in // n_out) for i in range(n_out))
        out.append(_grow(pairs, k - 1, Fraction(n_in, n_out)))
    return out[0], out[1]


@_rule(OpKind.GLOBAL_AVGPOOL, OpKind.GLOBAL_MAXPOOL, OpKind.MATMUL, OpKind.ATTENTION)
def _global(node: Node, ins: list[NodeRF], infos: list[TensorInfo]) -> tuple[PairSet, PairSet]:
    return GLOBAL, GLOBAL


@_rule(OpKind.BATCHNORM, OpKind.LRN, OpKind.ACT, OpKind.DROPOUT, OpKind.IDENTITY, OpKind.SCALE, OpKind.ADD,
       OpKind.CONCAT, OpKind.CHANNEL_SHUFFLE, OpKind.PAD)
def _pointwise(node: Node, ins: list[NodeRF], infos: list[TensorInfo]) -> tuple[PairSet, PairSet]:
    return _union(ins)


@_rule(OpKind.SLICE)
def _slice(node: Node, ins: list[NodeRF], infos: list[TensorInfo]) -> tuple[PairSet, PairSet]:
    # Every step-th position of a spatial axis: a 1-wide window with stride `step` (x[..., ::2]).
    h, w = _union(ins)
    a, x = node.attrs, infos[0]
    if a.step == 1 or a.axis not in x.spatial_axes:  # type: ignore[union-attr]
        return h, w
    if len(x.spatial_axes) == 1:  # a signal's (C, L): its one axis is the width of the (C, 1, L) map
        return h, _grow(w, 0, a.step)  # type: ignore[union-attr]
    k = sorted(x.spatial_axes).index(a.axis)  # type: ignore[union-attr]
    return (_grow(h, 0, a.step), w) if k == 0 else (h, _grow(w, 0, a.step))  # type: ignore[union-attr]


@_rule(OpKind.MUL)
def _mul(node: Node, ins: list[NodeRF], infos: list[TensorInfo]) -> tuple[PairSet, PairSet]:
    # An SE gate (a global (C,1,1) tensor) times the feature map: the union keeps the map's finite
    # pairs and adds the gate's global pair.
    return _union(ins)


@_rule(OpKind.GROUPNORM)
def _groupnorm(node: Node, ins: list[NodeRF], infos: list[TensorInfo]) -> tuple[PairSet, PairSet]:
    h, w = _union(ins)  # per-position value plus statistics over all positions
    return h | GLOBAL, w | GLOBAL


def _along(node: Node, ins: list[NodeRF], x: TensorInfo, axes: set[int]) -> tuple[PairSet, PairSet]:
    """An op whose every output reads all positions along ``axes`` (a reduction, a softmax, a norm's
    statistics): those image axes become global, the others keep their pairs (a mean over the
    width, a softmax along a row, CRNN's mean over the height).  When the height is reduced away
    and the width is left as a 1-D sequence, it stays the width (Conv1d reads it as a 1×k
    convolution); a width reduced away with the height left is not followed (both global, as before
    the per-axis rule: a 1-D sequence of rows has no place in the (H, W) pairs)."""
    h, w = _union(ins)
    sp = sorted(x.spatial_axes)
    red = [k for k, a in enumerate(sp) if a in axes]
    if not red:
        return h, w
    if len(sp) != 2 or len(red) == 2:
        return GLOBAL, GLOBAL
    if red == [0]:
        return GLOBAL, w
    return (h, GLOBAL) if len(node.out.spatial_axes) == 2 else (GLOBAL, GLOBAL)  # kept (keepdim, a softmax)


@_rule(OpKind.LAYERNORM)
def _layernorm(node: Node, ins: list[NodeRF], infos: list[TensorInfo]) -> tuple[PairSet, PairSet]:
    h, w = _union(ins)
    axis = node.attrs.axis  # type: ignore[union-attr]
    x = infos[0]
    if axis is not None and axis % len(x.shape) in x.spatial_axes:  # statistics along the last axis,
        gh, gw = _along(node, ins, x, {axis % len(x.shape)})  # a spatial one (LayerNorm(W)): value + row stats
        return h | gh, w | gw
    return h, w


@_rule(OpKind.ZERO, OpKind.CONSTANT)
def _zero(node: Node, ins: list[NodeRF], infos: list[TensorInfo]) -> tuple[PairSet, PairSet]:
    return Pairs(), Pairs()


@_rule(OpKind.FLATTEN, OpKind.RESHAPE, OpKind.PERMUTE)
def _relayout(node: Node, ins: list[NodeRF], infos: list[TensorInfo]) -> tuple[PairSet, PairSet] | None:
    x = infos[0]
    if x.spatial_axes and not node.out.spatial_axes:
        if math.prod(x.spatial) == 1:  # one position (a pooled [C, 1, 1]: ResNeSt's radix softmax): nothing
            return _union(ins)  # to split, its receptive field goes along
        if len(node.out.shape) <= 1 or math.prod(x.spatial) in node.out.shape:
            return GLOBAL, GLOBAL  # positions merged into features or into one axis (which the
            # attention after such a reshape mixes): nothing spatial is left
        # positions split into axes the layout does not follow (a window partition, a patchify by
        # reshape): what later reads them could mix all positions or only a window's; not guessed
        return None
    if node.op is not OpKind.PERMUTE and len(x.spatial_axes) != len(node.out.spatial_axes) \
            and {len(x.spatial_axes), len(node.out.spatial_axes)} == {1, 2}:
        # A (C, 1, L) map squeezed to a signal's (C, L), or back: the length stays the width.  A map
        # flattened into tokens and rebuilt keeps its positions (a per-token MLP between).  Not
        # followed: a length that is the height ((C, L, 1), unsqueeze(-1)), and a 1-row map made
        # from tokens whose positions had height (an 8x8 map's rows run together, then a 1xk conv)
        two = x if len(x.spatial_axes) == 2 else node.out
        hh, ww = two.spatial
        if ww == 1 < hh:
            return None
        if two is node.out and hh == 1 < ww and ins[0].axes is not None and ins[0].axes[0].rf_max not in (1, INF):
            return None  # (a height averaged away, CRNN's mean(2), is global: the width is still the width)
        return _union(ins)
    return _union(ins)


def relayout_lost(graph: Graph, rf: RFResult) -> list[str]:
    """Names of the reshapes where positions went into axes the analysis does not follow: the
    receptive field is unknown from each of them on (see ``_relayout``)."""
    out = []
    for n in graph.nodes:
        if n.op in (OpKind.FLATTEN, OpKind.RESHAPE) and not rf.of(n.name).known \
                and all(rf.of(i).known for i in n.inputs):
            out.append(n.name)
    return out


@_rule(OpKind.LINEAR)
def _linear(node: Node, ins: list[NodeRF], infos: list[TensorInfo]) -> tuple[PairSet, PairSet]:
    x = infos[0]
    last = len(x.shape) - 1
    if last in x.spatial_axes or (x.channel_axis != last and x.spatial_axes):
        return GLOBAL, GLOBAL  # mixes positions
    return _union(ins)


@_rule(OpKind.SOFTMAX)
def _softmax(node: Node, ins: list[NodeRF], infos: list[TensorInfo]) -> tuple[PairSet, PairSet]:
    x = infos[0]
    return _along(node, ins, x, {node.attrs.axis % len(x.shape)})  # type: ignore[union-attr]


@_rule(OpKind.MEAN)
def _mean(node: Node, ins: list[NodeRF], infos: list[TensorInfo]) -> tuple[PairSet, PairSet]:
    x = infos[0]
    return _along(node, ins, x, {a % len(x.shape) for a in node.attrs.axes})  # type: ignore[union-attr]


@_rule(OpKind.UNKNOWN)
def _unknown(node: Node, ins: list[NodeRF], infos: list[TensorInfo]) -> None:
    return None


@_rule(OpKind.INPUT)
def _input(node: Node, ins: list[NodeRF], infos: list[TensorInfo]) -> tuple[PairSet, PairSet]:
    one = Pairs.of([(1, 1)])
    return one, one


require_all(_RULES, OpKind, "receptive-field rule")


def _swapped(x: NodeRF) -> NodeRF:
    assert x.axes is not None
    return NodeRF((x.axes[1], x.axes[0]), x.paths)


def _image_axes(node: Node, x: TensorInfo, before: tuple[int, int]) -> tuple[int, int]:
    """Which image axis (0 = H, 1 = W) each of a permute's output spatial axes, in positional
    order, comes from (a transpose of H and W: coordinate attention, axial blocks)."""
    perm = node.attrs.perm  # type: ignore[union-attr]
    src = sorted(x.spatial_axes)
    out = sorted(perm.index(s) for s in src if s in perm)
    if len(src) != 2 or len(out) != 2:
        return before
    return before[src.index(perm[out[0]])], before[src.index(perm[out[1]])]


def _local(x: NodeRF) -> bool:
    """The node's value depends on input positions near each of its own (not constant, not global)."""
    return x.axes is not None and any(a.rf_max_finite is not None for a in x.axes)


def _mirrored(node: Node, x: TensorInfo, image: tuple[int, int], before: tuple[bool, bool]) -> tuple[bool, bool]:
    """A slice read backwards along a spatial axis (torch.flip, an ONNX Slice with step -1) mirrors
    that image axis: output position i reads input position n-1-i."""
    a = node.attrs
    if node.op is not OpKind.SLICE or not a.reverse or a.axis not in x.spatial_axes:  # type: ignore[union-attr]
        return before
    k = image[sorted(x.spatial_axes).index(a.axis)]  # type: ignore[union-attr]
    return (not before[0], before[1]) if k == 0 else (before[0], not before[1])


def _merges_positions(node: Node, x: TensorInfo) -> bool:
    """Whether the op combines its inputs position by position (a concat along a spatial axis puts
    them side by side instead)."""
    if node.op is OpKind.CONCAT:
        return node.attrs.axis not in x.spatial_axes  # type: ignore[union-attr]
    return len(node.inputs) > 1


def receptive_field(graph: Graph) -> RFResult:
    """Propagate (r, j) sets through the graph in topological order.  Pairs are kept per image axis
    (H, W); a node whose spatial axes a permute swapped sees them in its own order while its rule
    runs.

    Merges assume their inputs' positions line up (the union of pair sets).  A path whose image axes
    a permute swapped, or that a flip mirrored, does not line up with one that was not: output
    position (i, k) then reads the input around (i, k) and around (k, i) or (i, n-1-k), an extent the
    pairs cannot express, so the merge and what follows it are unknown (``RFResult.misaligned``)
    rather than guessed.  Flipping or transposing back lines the paths up again (test-time
    augmentation, axial attention)."""
    rf: dict[str, NodeRF] = {}
    image: dict[str, tuple[int, int]] = {}  # per node: the image axis of its 1st and 2nd spatial axis
    mirror: dict[str, tuple[bool, bool]] = {}  # per node: is image axis H / W read backwards
    period: dict[str, tuple[int, int]] = {}  # per node: positions (own axes) that cover every phase
    resampled: set[str] = set()  # nodes with a resampling op on some path from the input
    sized: set[str] = set()  # nodes after an adaptive pool into a few bins: their map size is fixed
    drift: set[str] = set()  # nodes after a merge of paths whose jumps differ: no pattern repeats
    resized: set[str] = set()  # nodes after a resampling to a size: their pattern depends on the input's
    centre: dict[str, Offset | None] = {}  # per node: where its positions' paths are centred (see _centre)
    skewed: set[str] = set()  # nodes after a merge of paths centred apart (a shift, one-sided padding)
    misaligned: list[str] = []
    for node in graph.nodes:
        ins = [rf[i] for i in node.inputs]
        infos = [graph.node(i).out for i in node.inputs]
        if _bins(node, infos) or any(i in sized for i in node.inputs):
            sized.add(node.name)
        elif any(i in drift for i in node.inputs) or _drifts(node, infos, rf):
            drift.add(node.name)
        if _resamples(node, infos) or any(i in resampled for i in node.inputs):
            resampled.add(node.name)
            if _to_size(node, infos) or any(i in resized for i in node.inputs):
                resized.add(node.name)
            period[node.name] = periods(node, [period.get(i, (1, 1)) for i in node.inputs], infos)
        mine = image[node.inputs[0]] if node.inputs else (0, 1)
        image[node.name] = _image_axes(node, infos[0], mine) if node.op is OpKind.PERMUTE else mine
        mirror[node.name] = _mirrored(node, infos[0], mine, mirror[node.inputs[0]]) if node.inputs else (False, False)
        if any(not x.known for x in ins):
            rf[node.name] = UNKNOWN_RF
            continue
        if ins and all(x.constant for x in ins):  # constant in, constant out: a global pool, a conv of zeros
            rf[node.name], centre[node.name] = NodeRF((AxisRF(Pairs()), AxisRF(Pairs())), 0), None
            continue
        local = [i for i, x in zip(node.inputs, ins) if _local(x)]
        if local and _merges_positions(node, infos[0]):
            image[node.name], mirror[node.name] = image[local[0]], mirror[local[0]]
            if len({(image[i], mirror[i]) for i in local}) > 1:
                misaligned.append(node.name)
                rf[node.name] = UNKNOWN_RF
                continue
        ins = [_swapped(x) if image[i] == (1, 0) else x for x, i in zip(ins, node.inputs)]
        pairs = _RULES[node.op](node, ins, infos)
        if pairs is None:
            rf[node.name] = UNKNOWN_RF
            continue
        if mine == (1, 0):  # back to image order
            pairs = (pairs[1], pairs[0])
        paths = 1 if node.op is OpKind.INPUT else (0 if node.op is OpKind.ZERO else sum(x.paths for x in ins))
        rf[node.name] = NodeRF((AxisRF(pairs[0]), AxisRF(pairs[1])), paths)
        centre[node.name] = _centre(node, infos, [(centre.get(i), rf[i]) for i in node.inputs], image[node.name])
        if node.name not in resampled and (any(i in skewed for i in node.inputs) or _skews(node, infos, centre, rf)):
            skewed.add(node.name)
    if resampled or skewed:
        _exact_after_resampling(graph, rf, image, period, resampled | skewed, frozenset(sized), frozenset(drift),
                                frozenset(resized))
    return RFResult(tuple(rf.items()), tuple(misaligned))


Offset = tuple[Fraction, Fraction]


def _centre(node: Node, infos: list[TensorInfo], ins: list[tuple[Offset | None, NodeRF]],
            image: tuple[int, int]) -> Offset | None:
    """Where output position o's paths are centred, as o·j + c in input pixels: c per image axis
    (H, W).  Symmetric padding keeps c; padding on one side (TensorFlow's "same" at a stride,
    ``F.pad(x, (2, 0))``), a slice that starts later, or an even kernel moves it.  None where it is
    not followed (a permute, a resampling: those paths are followed position by position anyway)."""
    if node.op is OpKind.INPUT:
        return (Fraction(0), Fraction(0))
    if not ins or image != (0, 1) or ins[0][0] is None:
        return None
    c, x = ins[0]
    if node.op in (OpKind.CONV, OpKind.MAXPOOL, OpKind.AVGPOOL, OpKind.PAD, OpKind.SLICE):
        if len(infos[0].spatial_axes) != 2 or x.axes is None:
            return None
        a, out = node.attrs, list(c)
        for k in (0, 1):
            j = x.axes[k].jump
            if j is None:
                continue  # a global axis: no positions to be centred
            if node.op is OpKind.PAD:
                shift = -Fraction(a.padding[k][0])  # type: ignore[union-attr]
            elif node.op is OpKind.SLICE:
                if a.axis != infos[0].spatial_axes[k] or a.reverse:  # type: ignore[union-attr]
                    continue
                shift = Fraction(a.start)  # type: ignore[union-attr]
            else:
                shift = Fraction(a.dilation[k] * (a.kernel[k] - 1), 2) - a.padding[k][0]  # type: ignore[union-attr]
            out[k] = c[k] + shift * Fraction(j)
        return out[0], out[1]
    if node.op in (OpKind.CONV_T, OpKind.UPSAMPLE, OpKind.PIXEL_SHUFFLE, OpKind.PIXEL_UNSHUFFLE,
                   OpKind.ADAPTIVE_AVGPOOL, OpKind.ADAPTIVE_MAXPOOL, OpKind.PERMUTE):
        return None
    return c


def _merged(node: Node, infos: list[TensorInfo], rf: dict[str, NodeRF]) -> list[str]:
    """The inputs with local paths that ``node`` merges position by position (none when it merges
    fewer than two: nothing to line up)."""
    if len(node.inputs) < 2 or not _merges_positions(node, infos[0]):
        return []
    local = [i for i in node.inputs if _local(rf[i])]
    return local if len(local) > 1 else []


def _skews(node: Node, infos: list[TensorInfo], centre: dict[str, Offset | None], rf: dict[str, NodeRF]) -> bool:
    """A merge of local paths centred apart: their union of (r, j) pairs would put them on one
    centre, so the node's supports are found position by position instead."""
    cs = [centre.get(i) for i in _merged(node, infos, rf)]
    return bool(cs) and None not in cs and any(c != cs[0] for c in cs[1:])


def _resamples(node: Node, infos: list[TensorInfo]) -> bool:
    """Ops after which neighbouring output positions may read different numbers of input positions."""
    if node.op is OpKind.CONV_T:
        return node.attrs.stride != (1, 1)  # type: ignore[union-attr]
    if node.op is OpKind.UPSAMPLE and node.attrs.scale is not None \
            and any(s != 1 for s in node.attrs.scale):  # type: ignore[union-attr]
        return True  # by its scale, even where the size comes out the same (2 px x1.25 is 2 px)
    if node.op in (OpKind.UPSAMPLE, OpKind.ADAPTIVE_AVGPOOL, OpKind.ADAPTIVE_MAXPOOL):
        return bool(infos) and infos[0].spatial != node.out.spatial
    if node.op is OpKind.SLICE:  # x[..., 1::2] beside x[..., ::2] (a Focus layer): paths whose positions
        # are offset from each other, which (r, j) pairs do not see; followed position by position
        return node.attrs.step > 1 and node.attrs.axis in infos[0].spatial_axes  # type: ignore[union-attr]
    return node.op is OpKind.PIXEL_SHUFFLE


def _to_size(node: Node, infos: list[TensorInfo]) -> bool:
    """A resampling whose ratio the input size sets (an interpolation to another tensor's size, or with
    aligned corners): its phases are those of this map, not a pattern that repeats on any input.  With
    a scale, a stride or a pixel shuffle the pattern is the network's own: a small input shows only
    part of it, and the receptive field is still that of an input larger than it (DESIGN.md)."""
    if node.op is not OpKind.UPSAMPLE or not infos or infos[0].spatial == node.out.spatial:
        return False
    a = node.attrs
    assert isinstance(a, UpsampleAttrs)
    return a.scale is None or a.align_corners


def _bins(node: Node, infos: list[TensorInfo]) -> bool:
    """An adaptive pool into a few bins (PSPNet's 2×2, 3×3, 6×6): the bins grow with the image, so
    what follows has a map of fixed size whose borders are part of the network: no input is "larger
    than the receptive field" there."""
    if node.op not in (OpKind.ADAPTIVE_AVGPOOL, OpKind.ADAPTIVE_MAXPOOL) or not infos:
        return False
    return any(1 < o != i for i, o in zip(infos[0].spatial, node.out.spatial))


def _drifts(node: Node, infos: list[TensorInfo], rf: dict[str, NodeRF]) -> bool:
    """A merge of local paths whose jumps differ (a map added to an interpolation of a crop of itself,
    resized to its size): their offset changes from position to position, so no pattern repeats and
    every position of the map is probed, and those whose paths stay inside every map count."""
    local = [rf[i] for i in _merged(node, infos, rf)]
    return any(len({x.axes[k].jump for x in local if x.axes is not None and x.axes[k].jump is not None}) > 1
               for k in (0, 1))


SHIFTED_PASS = True  # tests compare it off: position by position everywhere


def _exact_after_resampling(graph: Graph, rf: dict[str, NodeRF], image: dict[str, tuple[int, int]],
                            period: dict[str, tuple[int, int]], resampled: set[str],
                            sized: frozenset[str] = frozenset(), drift: frozenset[str] = frozenset(),
                            resized: frozenset[str] = frozenset()) -> None:
    """Replace the average supports of the nodes after a resampling op by the true ones, found
    position by position (see ``_rf_exact``); a node whose paths cannot all be followed keeps the
    average."""
    ex = Exact(graph, image, lambda name: _local(rf[name]), sized, drift, resized)
    # paths merely offset from each other (no resampler behind them): one forward pass finds what
    # following each node's positions back would
    shifted = [shifted_supports(ex, resampled, axis) for axis in (0, 1)] if SHIFTED_PASS else [{}, {}]
    for name in resampled:
        node, x = graph.node(name), rf[name]
        if x.axes is None or not _local(x) or len(node.out.spatial_axes) not in (1, 2):
            continue
        axes = list(x.axes)
        for axis in (0, 1) if len(node.out.spatial_axes) == 2 else (1,):  # a signal's (C, L): its width
            if axes[axis].rf_max_finite is None:
                continue
            got = shifted[axis].get(name) if len(node.out.spatial_axes) == 2 else None
            if got is None:
                got = supports(ex, node, axis, period.get(name, (1, 1))[image[name].index(axis)])
            if got is not None:
                axes[axis] = AxisRF(axes[axis].pairs, got)
        rf[name] = NodeRF((axes[0], axes[1]), x.paths)

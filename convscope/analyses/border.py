"""Border layer, unproductive layers and the feasible input-resolution range (DESIGN.md).

At input resolution R (per axis):

* a convolution or spatial pool is *unproductive* when every one of its inputs already has
  ``rf_min >= R`` on every axis (it cannot integrate new context), or when it has a spatial kernel
  and its input map is no larger than the kernel on every axis (it acts as a fully connected layer);
  for a transposed convolution the kernel's footprint on its input counts, the input positions
  that feed one output (a 4x4 stride-2 one reads 2x2 inputs per output: a 4x4 map is not
  "seen whole" by it, a 2x2 one is);
* layers after a global operation (every input path global: the classifier head, the 1x1 convs of
  an SE gate) and layers whose receptive field is unknown are never flagged;
* the *border layer* is the first such layer, in topological order, whose ``rf_min`` exceeds R on
  every axis;
* the *feasible range* is [lo, hi]: lo the smallest square resolution at which no weighted layer
  (convolution) is unproductive, hi the largest finite ``rf_max`` of the last spatial layer (rounded
  down to a whole resolution).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from convscope.analyses.receptive_field import INF, UNKNOWN_RF, NodeRF, RFResult, convT_span, receptive_field
from convscope.errors import GraphError
from convscope.ir.graph import Graph, Node
from convscope.ir.ops import KERNEL_OPS, SPATIAL_LAYER_OPS, OpKind
from convscope.ir.shapes import conv_out_size, convT_out_size, pool_out_size
from convscope.ir.transform import signal_relayout, with_input

__all__ = ["Productivity", "productivity", "feasible_range", "flaggable", "shape_at"]

_WEIGHTED_SPATIAL = frozenset({OpKind.CONV, OpKind.CONV_T})


@dataclass(frozen=True, slots=True)
class Productivity:
    resolution: tuple[int, int]
    border_layer: str | None
    unproductive: tuple[tuple[str, str], ...]  # (layer, reason)

    @property
    def names(self) -> frozenset[str]:
        return frozenset(n for n, _ in self.unproductive)


def flaggable(node: Node, ins: list[NodeRF]) -> bool:
    """A convolution or spatial pool that is not part of the head and has a known receptive field."""
    if node.op not in SPATIAL_LAYER_OPS or not node.out.is_image:
        return False
    if not ins or any(not x.known or x.constant or x.is_global for x in ins):
        return False
    return True


def _fmt(x: object) -> str:
    if isinstance(x, float) and x.is_integer():
        return str(int(x))
    return str(x)


def _reason(graph: Graph, node: Node, ins: list[NodeRF], res: tuple[int, int]) -> str | None:
    mins = [x.rf_min for x in ins]
    if all(m is not None and m[0] is not None and m[1] is not None and m[0] >= res[0] and m[1] >= res[1]
           for m in mins):
        lo = min(min(m) for m in mins if m is not None)  # type: ignore[type-var]
        return f"input rf_min {_fmt(lo)} >= input resolution {res[0]}x{res[1]}"
    if node.op in KERNEL_OPS:
        x = graph.node(node.inputs[0]).out
        if _map_rule(node, (x.shape[1], x.shape[2])):
            k = node.attrs.kernel  # type: ignore[union-attr]
            h, w = x.shape[1], x.shape[2]
            if node.op is OpKind.CONV_T:
                f = footprint(node)
                return (f"input map {h}x{w} is no larger than the {f[0]}x{f[1]} inputs its {k[0]}x{k[1]} "
                        "transposed kernel reads per output")
            return f"input map {h}x{w} is no larger than its {k[0]}x{k[1]} kernel"
    return None


def productivity(graph: Graph, rf: RFResult | None = None, *, among: frozenset[str] | None = None) -> Productivity:
    """Flags and border layer at the graph's input resolution; ``among``: only those layers count
    (a head analysed behind its trunk: the head's own border, in image pixels)."""
    rf = rf or receptive_field(graph)
    rfs = rf.as_dict()
    shape = graph.input_shape
    res = (shape[1], shape[2]) if len(shape) == 3 else (shape[-1], shape[-1])
    border = None
    axes = _resolution_axes(graph) if len(shape) == 3 else (0, 1)
    flagged: list[tuple[str, str]] = []
    for node in graph.nodes:
        ins = [rfs[i] for i in node.inputs]
        if not flaggable(node, ins) or (among is not None and node.name not in among):
            continue
        reason = _reason(graph, node, ins, res)
        if reason:
            flagged.append((node.name, reason))
        mine = rfs[node.name].rf_min
        if border is None and mine is not None and mine[0] is not None and mine[1] is not None \
                and all(mine[a] > res[a] for a in axes):  # a 1×L signal's side of 1 has nothing to see
            border = node.name
    return Productivity(res, border, tuple(flagged))


def _last_spatial(graph: Graph, rfs: dict[str, NodeRF]) -> NodeRF | None:
    """The receptive field of the last spatial layer before the output; None when it is unknown (an
    op convscope does not know lies before it: the range's top is then not known either, never an
    earlier layer's).  With several outputs (heads), each output's own last spatial layer, and of
    those the one that sees most: what the graph computes, not the order its layers are written in."""
    each = last_spatial_each(graph, rfs)
    if any(x is not None and not x.known for x in each):
        return None
    return max((x for x in each if x is not None), key=_widest, default=None)


def last_spatial_each(graph: Graph, rfs: dict[str, NodeRF], *, images: bool = False) -> list[NodeRF | None]:
    """For each output, the receptive field of the last spatial layer it depends on (``images``:
    the last with an (C, H, W) map); ``UNKNOWN_RF`` when an op convscope does not know hides it,
    None when there is none."""
    found: list[NodeRF | None] = []
    for out in graph.outputs:
        keep = graph.ancestors(out) | {out}
        last = None
        for node in graph.nodes:
            x = rfs[node.name]
            if node.name not in keep or x.constant or node.op is OpKind.INPUT \
                    or not (node.out.is_image if images else node.out.spatial_axes):
                continue
            if not x.known:
                last = None
            elif not x.is_global:
                last = x
        found.append(UNKNOWN_RF if last is None and any(not rfs[n].known for n in keep) else last)
    return found


def _widest(x: NodeRF) -> float:
    return max((float(v) for v in (x.rf_max_finite or ()) if v is not None), default=0.0)


def _resolution_axes(graph: Graph) -> tuple[int, ...]:
    """The image axes (0 = H, 1 = W) a resolution sets: both, or for a signal written as a 1×L (or
    L×1) map — a 1-D convolution's input — only its length."""
    h, w = graph.input_shape[1:]
    return (1,) if h == 1 < w else (0,) if w == 1 < h else (0, 1)


def shape_at(graph: Graph, r: int) -> tuple[int, int, int]:
    """The input the feasible range tries for resolution r: r×r, or 1×r for a 1×L signal."""
    c, h, w = graph.input_shape
    sides = [h, w]
    for a in _resolution_axes(graph):
        sides[a] = r
    return c, sides[0], sides[1]


def feasible_range(graph: Graph, rf: RFResult | None = None, *, limit: int = 8192,
                   at: Callable[[int], Graph | None] | None = None) -> tuple[int | None, int | None]:
    """[lo, hi] as defined above; lo is None when no resolution up to ``limit`` works (or the graph
    has fixed-size ops that do not allow another resolution).  ``at(r)``, when given, captures the
    model again at r×r for a size the graph cannot be re-inferred at (a PyTorch ``expand_as`` or an
    interpolation to another tensor's size is recorded with the size it had)."""
    rf = rf or receptive_field(graph)
    rfs = rf.as_dict()
    if len(graph.input_shape) != 3:  # not an image (tokens, a vector): no resolution to speak of
        return None, None
    if all(rfs[o].constant for o in graph.outputs):  # behind `zero` layers: no input size matters
        return None, None
    # a convolution behind an op convscope does not know: whether it is productive at any size is not
    # known, so neither is lo
    lo_known = not any(n.op in _WEIGHTED_SPATIAL and n.out.is_image and any(not rfs[i].known for i in n.inputs)
                       for n in graph.nodes)
    last = _last_spatial(graph, rfs)
    hi = None
    if last is not None and last.rf_max_finite is not None:
        vals = [v for v in last.rf_max_finite if v is not None]
        if vals:  # the largest whole resolution the last layer still sees entirely: R <= rf_max (a
            # fractional rf_max, behind an upsampling, rounds down)
            hi = math.floor(max(vals))
    # Rule 1 does not depend on the resolution, except after an adaptive pool (its bins grow with the
    # image, and so does every receptive field after it): the layer stays productive while
    # R > min over inputs and axes of rf_min.
    binned = _after_adaptive(graph)
    if binned and len(graph.outputs) == 1 and graph.outputs[0] in binned:
        hi = _largest_seen(graph, hi, limit)  # the last layer's rf_max grows with R as well
    if not lo_known:
        return None, hi
    need = 1
    h0, w0 = graph.input_shape[1:]
    along = _resolution_axes(graph)
    for node in graph.nodes:
        ins = [rfs[i] for i in node.inputs]
        if node.op in _WEIGHTED_SPATIAL and flaggable(node, ins) and node.name not in binned:
            m = min(min(x.rf_min[a] for a in along if x.rf_min[a] is not None)  # type: ignore[index, type-var]
                    for x in ins)
            if m != INF:
                need = max(need, math.floor(m) + 1)
    adaptive = any(n.op in (OpKind.ADAPTIVE_AVGPOOL, OpKind.ADAPTIVE_MAXPOOL) for n in graph.nodes)
    weighted = [n for n in graph.nodes if n.op in _WEIGHTED_SPATIAL and flaggable(n, [rfs[i] for i in n.inputs])]
    fast = not adaptive and _sizes_follow(graph, graph.nodes)
    if fast and shape_at(graph, max(h0, w0))[1:] == (h0, w0) and _spatial_sizes(graph, (h0, w0)) is None:  # a map rebuilt from tokens: the sizes
        fast = False  # are not followed through the non-spatial ops between; infer the graph instead
    if fast and at is not None and any(n.op is OpKind.UPSAMPLE and n.attrs.size is not None  # type: ignore[union-attr]
                                       for n in graph.nodes):
        fast = False  # an interpolation to another tensor's size, recorded as the size it had: capture again

    recaptured: set[int] = set()  # sizes the model itself was captured at again
    refused: set[int] = set()  # sizes the model itself refused

    def recapture(r: int) -> tuple[Graph, RFResult] | None:
        again = at(r) if at is not None else None  # a layer does not fit at this size, or it was
        if again is None:  # recorded at a fixed size: the model itself decides
            if at is not None:
                refused.add(r)
            return None
        recaptured.add(r)
        return again, receptive_field(again)

    def ok(r: int) -> bool:
        if fast:  # rule 1 holds for r >= need; only the map-size rule depends on r
            clash: list[str] = []
            sizes = _spatial_sizes(graph, shape_at(graph, r)[1:], clash)
            if sizes is not None:
                return not any(_map_rule(n, sizes[n.inputs[0]]) for n in weighted)
            # maps that no longer line up at a merge: an interpolation to another map's size, recorded
            # as the scale it was, lines them up in the model itself; a kernel that does not fit does not
            got = recapture(r) if clash else None
        else:
            try:
                g = with_input(graph, shape_at(graph, r))
                got = g, receptive_field(g) if adaptive else rf
            except GraphError:
                got = recapture(r)
        if got is None:
            return False
        p = productivity(*got)
        return not any(got[0].node(n).op in _WEIGHTED_SPATIAL for n in p.names)

    if fast:  # cheap enough to try every resolution: a merge may only line up at some sizes (even
        # ones, multiples of 4: a U-Net, a pooled shortcut), so ok() need not stay True above its first r
        for r in range(need, limit + 1):
            # a model may refuse sizes its layers would take (a detector checks for multiples of 32; a
            # Linear after a flatten takes one size only): the model itself is asked (it took its own
            # size already), up to a few dozen refusals; then no size is known to work
            if ok(r) and (at is None or shape_at(graph, r)[1:] == (h0, w0) or r in recaptured  # (ok may
                          or recapture(r) is not None):  # have captured it again already)
                return r, hi
            if len(refused) >= 64:
                return None, hi
        return None, hi
    # Output sizes grow monotonically with the input, so ok() is False up to some r and True after.
    # First guess: each kernel needs an input map larger than itself, i.e. r > k·(r0 / map size).
    a = along[0]
    r0 = graph.input_shape[1 + a]
    guess = need
    for n in weighted:
        k = footprint(n)
        size = graph.node(n.inputs[0]).out.shape[1 + a]
        if max(k) > 1 and size:
            guess = max(guess, math.floor(k[a] * r0 / size) + 1)
    if guess > need:
        if ok(guess):
            if not ok(guess - 1):
                return guess, hi
        elif ok(guess + 1):
            return guess + 1, hi
    # Otherwise: exponential search for a working r, then bisection for the smallest.
    found = _smallest(ok, need, limit, 8 if recaptured else 64)
    if found is None and at is not None:  # a model that accepts only multiples of its total stride
        step = _total_stride(rfs)  # (a detector whose heads are added to upsampled maps: 32 px)
        if step > 1:
            m = _smallest(lambda k: ok(k * step), -(-need // step), limit // step, 0)
            found = None if m is None else m * step
    return found, hi


def _after_adaptive(graph: Graph) -> set[str]:
    """The nodes after an adaptive pool into more than one bin (at some sizes it changes the map's
    size, whether or not it does at this one: VGG's 7×7 pool is an identity at 224 px only)."""
    out: set[str] = set()
    for n in graph.nodes:
        if any(i in out for i in n.inputs) or (
                n.op in (OpKind.ADAPTIVE_AVGPOOL, OpKind.ADAPTIVE_MAXPOOL) and max(n.out.spatial) > 1):
            out.add(n.name)
    return out


def _largest_seen(graph: Graph, hi: int | None, limit: int) -> int | None:
    """The largest R at which the last spatial layer still sees all of an R×R image, when its
    receptive field itself depends on R (behind an adaptive pool): R <= rf_max(R), searched.

    rf_max(R) is a staircase (the bins change size as the map grows a pixel at a time), so R <=
    rf_max(R) can fail for a few sizes and hold again above them (13 px, not 14-18, again 19-21): the
    search finds one edge, then every size up to twice it (256 more at most) is looked at too."""

    memo: dict[int, int | None] = {}
    UNBUILT = -1  # the graph does not exist at r (a kernel larger than a map)

    def seen(r: int) -> int | None:
        if r not in memo:
            try:
                g = with_input(graph, shape_at(graph, r))
            except GraphError:
                memo[r] = UNBUILT
                return UNBUILT
            last = _last_spatial(g, receptive_field(g).as_dict())
            vals = [v for v in (last.rf_max_finite or ()) if v is not None] if last is not None else []
            memo[r] = math.floor(max(vals)) if vals else None
        return memo[r]

    def sees(r: int) -> bool:
        got = seen(r)
        return got is not None and got >= r

    r0 = graph.input_shape[1 + _resolution_axes(graph)[0]]
    if hi is None:
        return None
    if hi >= r0:  # seen whole at r0: go up until it no longer is
        lo_ok, step = r0, 1
        while lo_ok + step <= limit and sees(lo_ok + step):
            lo_ok, step = lo_ok + step, step * 2
        bad = min(lo_ok + step, limit + 1)
    else:  # not seen whole at r0: come down to where it is
        bad, step, lo_ok = r0, 1, 0
        while bad > 1:
            r = max(bad - step, 1)
            if sees(r):
                lo_ok = r
                break
            if seen(r) == UNBUILT:  # stepped below the smallest size the graph exists at: that size
                a, b = r, bad  # is where it is seen, if anywhere (below rf_max(R) >= R holds down to it)
                while b - a > 1:
                    mid = (a + b) // 2
                    a, b = (mid, b) if seen(mid) == UNBUILT else (a, mid)
                if b < bad and sees(b):
                    lo_ok = b
                break
            bad, step = r, step * 2
        if lo_ok == 0:
            return None
    while bad - lo_ok > 1:  # seen at lo_ok, not at bad
        mid = (lo_ok + bad) // 2
        lo_ok, bad = (mid, bad) if sees(mid) else (lo_ok, mid)
    # The next steps of the staircase.  rf_max(R) changes only where an adaptive pool's input map
    # changes size (the bins follow it; nothing before the pool depends on R): where the sizes, found
    # by arithmetic, are those of the size before, so is rf_max, and no receptive field is computed.
    pools = [n for n in graph.nodes if n.op in (OpKind.ADAPTIVE_AVGPOOL, OpKind.ADAPTIVE_MAXPOOL)]
    first = graph.position(pools[0].name) if pools else 0
    arithmetic = _sizes_follow(graph, graph.nodes[:first])
    prev: tuple[object, int | None] | None = None
    r = lo_ok + 1
    while r <= min(limit, 2 * lo_ok, lo_ok + 256):
        sizes = _spatial_sizes(graph, shape_at(graph, r)[1:]) if arithmetic else None
        key = tuple(sizes[p.inputs[0]] for p in pools) if sizes is not None else None
        val = prev[1] if key is not None and prev is not None and prev[0] == key else seen(r)
        prev = (key, val)
        if val is not None and val >= r:
            lo_ok = r
        r += 1
    return lo_ok


def _smallest(ok: Callable[[int], bool], need: int, limit: int, back: int) -> int | None:
    """The smallest r >= need with ok(r), assuming ok stays True above it: doubling, then bisection,
    then ``back`` sizes below (a size the bisection stepped over: see feasible_range)."""
    lo, r = need - 1, need
    while r <= limit and not ok(r):
        lo, r = r, r * 2
    if r > limit:
        return None
    while r - lo > 1:
        mid = (lo + r) // 2
        if ok(mid):
            r = mid
        else:
            lo = mid
    for smaller in range(max(need, r - back), r):
        if ok(smaller):
            return smaller
    return r


def _total_stride(rfs: dict[str, NodeRF]) -> int:
    """The largest whole jump of any node (the network's total downsampling), 1 if none."""
    best = 1
    for x in rfs.values():
        for v in x.jump or ():
            if v is not None and v == int(v) and not math.isinf(v):
                best = max(best, int(v))
    return best


def footprint(node: Node) -> tuple[int, int]:
    """Input positions per axis that one output of the layer reads: the kernel, or for a transposed
    convolution one more than its widest span in input steps (:func:`convT_span`)."""
    a = node.attrs
    k = a.kernel  # type: ignore[union-attr]
    if node.op is not OpKind.CONV_T:
        return k
    return tuple(int(convT_span(kk, s, d)) + 1 for kk, s, d in zip(k, a.stride, a.dilation))  # type: ignore


def _map_rule(node: Node, size: tuple[int, int]) -> bool:
    f = footprint(node)
    return max(f) > 1 and size[0] <= f[0] and size[1] <= f[1]


_POINTWISE = frozenset({
    OpKind.BATCHNORM, OpKind.LAYERNORM, OpKind.GROUPNORM, OpKind.LRN, OpKind.ACT, OpKind.DROPOUT, OpKind.IDENTITY,
    OpKind.ZERO, OpKind.SCALE, OpKind.CHANNEL_SHUFFLE, OpKind.SLICE,
})
_FAST_OPS = _POINTWISE | {OpKind.INPUT, OpKind.CONV, OpKind.CONV_T, OpKind.MAXPOOL, OpKind.AVGPOOL,
                          OpKind.UPSAMPLE, OpKind.PAD, OpKind.ADD, OpKind.MUL, OpKind.CONCAT,
                          OpKind.PIXEL_SHUFFLE, OpKind.PIXEL_UNSHUFFLE}


def _sizes_follow(graph: Graph, nodes: Sequence[Node]) -> bool:
    """Whether arithmetic (:func:`_spatial_sizes`) gives these nodes' map sizes at another input."""
    return all((n.op in _FAST_OPS and not _spatial_slice(graph, n)) or not n.out.spatial_axes
               or signal_relayout(graph, n) for n in nodes)


def _spatial_slice(graph: Graph, node: Node) -> bool:
    """A slice of a spatial axis (a crop, x[..., ::2]): its size at another input is not a formula of
    the sizes here; the graph is inferred again instead."""
    return node.op is OpKind.SLICE and node.attrs.axis in graph.node(node.inputs[0]).out.spatial_axes  # type: ignore[union-attr]


def _spatial_sizes(graph: Graph, hw: tuple[int, int], clash: list[str] | None = None) -> dict[str, tuple[int, int]] | None:
    """(H, W) of every spatial node at input ``hw``, or None if some layer does not fit (the same
    formulas as shape inference, without rebuilding the graph); a merge whose inputs' sizes differ
    is appended to ``clash``."""
    sizes: dict[str, tuple[int, int]] = {}
    for n in graph.nodes:
        if not n.out.spatial_axes:
            continue
        a = n.attrs
        if n.op is OpKind.INPUT:
            sizes[n.name] = hw
            continue
        ins = [sizes[i] for i in n.inputs if i in sizes]
        if not ins:
            return None
        h, w = ins[0]
        if n.op in (OpKind.CONV, OpKind.MAXPOOL, OpKind.AVGPOOL):
            out = []
            for size, k, st, p, d in zip((h, w), a.kernel, a.stride, a.padding, a.dilation):  # type: ignore[union-attr]
                if d * (k - 1) + 1 > size + p[0] + p[1]:
                    return None
                if n.op is OpKind.CONV:
                    out.append(conv_out_size(size, k, st, p, d))
                else:
                    out.append(pool_out_size(size, k, st, p, d, a.ceil_mode))  # type: ignore[union-attr]
            sizes[n.name] = (out[0], out[1])
        elif n.op is OpKind.CONV_T:
            hw = tuple(convT_out_size(sz, k, st, p, d, op) for sz, k, st, p, d, op in zip(
                (h, w), a.kernel, a.stride, a.padding, a.dilation, a.output_padding))  # type: ignore[union-attr]
            if min(hw) < 1:
                return None
            sizes[n.name] = (hw[0], hw[1])
        elif n.op is OpKind.UPSAMPLE:
            if a.size is not None:  # type: ignore[union-attr]
                sizes[n.name] = a.size  # type: ignore[union-attr]
            else:
                sizes[n.name] = (math.floor(h * a.scale[0]), math.floor(w * a.scale[1]))  # type: ignore[union-attr]
        elif n.op is OpKind.PIXEL_SHUFFLE:
            sizes[n.name] = (h * a.factor, w * a.factor)  # type: ignore[union-attr]
        elif n.op is OpKind.PIXEL_UNSHUFFLE:
            if h % a.factor or w % a.factor:  # type: ignore[union-attr]
                return None
            sizes[n.name] = (h // a.factor, w // a.factor)  # type: ignore[union-attr]
        elif n.op is OpKind.PAD:
            (t, b), (le, ri) = a.padding  # type: ignore[union-attr]
            sizes[n.name] = (h + t + b, w + le + ri)
        elif n.op in (OpKind.ADD, OpKind.MUL, OpKind.CONCAT):
            big = [x for x in ins if x != (1, 1)]
            if len(set(big)) > 1:
                if clash is not None:
                    clash.append(n.name)
                return None
            sizes[n.name] = big[0] if big else (1, 1)
        else:
            sizes[n.name] = (h, w)
        if min(sizes[n.name]) < 1:
            return None
    return sizes

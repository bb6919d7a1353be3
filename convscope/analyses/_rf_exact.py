"""Exact receptive fields after resampling, by following output positions back to the input.

The ``(r, j)`` pairs are exact on a uniform grid.  After an upsampling, a transposed convolution with
a stride, a pixel shuffle or an adaptive pool whose bins differ, neighbouring output positions no
longer read equally many input positions: the support of an output depends on its *phase* (its
index modulo the resampling period).  ``j/f`` is then the average jump, and ``r + a·j`` the average
support, which no position need have (2.5 px where positions have 2 and 3).

For those nodes this module finds the true supports: it takes one output position per phase, maps
its index interval back through every op on every path (the index arithmetic each op does, borders
ignored, as for an input larger than the receptive field), and measures the interval each path
reaches in the input.  ``rf_max`` is then the widest support of any position (the hull of all
finite paths), ``rf_min`` the narrowest single path of any position: the numbers the gradient of
one output position shows, for the position that has them.

The period of a node (how many consecutive positions cover every phase) is carried forward: a
resampler whose input index is ``o·p/q`` multiplies it by q; a stride s divides it by gcd(period, s).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Sequence
from fractions import Fraction

from convscope.ir.graph import Graph, Node, TensorInfo
from convscope.ir.ops import UPSAMPLE_SPAN, OpKind, UpsampleAttrs
from convscope.ir.transform import signal_relayout

Interval = tuple[int, int]
NOTHING = (0, 0)  # what Exact.back gives for positions that read no input position
MAX_PERIOD = 64  # phases probed at most (a longer period is sampled by its first 64 positions)


def resample_inv(a: UpsampleAttrs, axis: int, size_in: int, size_out: int) -> Fraction:
    """Input positions per output position, as the resampler maps coordinates: (in-1)/(out-1) with
    aligned corners; 1/scale when a scale was given (PyTorch and ONNX map with the scale itself, not
    with the rounded sizes: 15 px ×1.5 is 22 px, still 2/3 of an input pixel per output pixel);
    otherwise in/out."""
    if a.align_corners and size_out > 1:
        return Fraction(size_in - 1, size_out - 1)
    if a.scale is not None and a.scale[axis] > 0:
        return 1 / Fraction(a.scale[axis]).limit_denominator(1 << 20)
    return Fraction(size_in, size_out)


Map = Callable[[int, int], "Interval | None"]


def _axis_map(node: Node, k: int, x: TensorInfo, sized: bool = False) -> Map:
    """For output positions lo..hi along own spatial axis ``k``: the interval of input ``x`` (the
    same axis of it) they read; None when that input feeds none of them.  Built once per node and
    axis, as integer arithmetic.  ``sized``: the map's size is part of the network (after an
    adaptive pool into a few bins), so its borders are real."""
    op, a = node.op, node.attrs
    if op in (OpKind.CONV, OpKind.MAXPOOL, OpKind.AVGPOOL):
        s, p = a.stride[k], a.padding[k][0]  # type: ignore[union-attr]
        reach = a.dilation[k] * (a.kernel[k] - 1) - p  # type: ignore[union-attr]
        return lambda lo, hi: (lo * s - p, hi * s + reach)
    if op is OpKind.CONV_T:
        s, p = a.stride[k], a.padding[k][0]  # type: ignore[union-attr]
        shifts = [p - t * a.dilation[k] for t in range(a.kernel[k])]  # type: ignore[union-attr]

        def convT(lo: int, hi: int) -> Interval | None:
            first = last = None
            for c in shifts:  # input i reaches output i·s - p + t·d
                i0, i1 = -((-(lo + c)) // s), (hi + c) // s
                if i0 <= i1:
                    first = i0 if first is None or i0 < first else first
                    last = i1 if last is None or i1 > last else last
            return None if first is None or last is None else (first, last)
        return convT
    if op is OpKind.UPSAMPLE:
        n_in, n_out = x.spatial[k], node.out.spatial[k]
        assert isinstance(a, UpsampleAttrs)
        if n_in == n_out and (a.scale is None or a.scale[k] == 1):  # (a scale maps coordinates even where
            return lambda lo, hi: (lo, hi)  # the size comes out the same: 2 px x1.25 is 2 px)
        inv, span = resample_inv(a, k, n_in, n_out), UPSAMPLE_SPAN[a.mode]
        num, den = inv.numerator, inv.denominator
        if span == 0:  # nearest: floor(o · in/out)
            base: Map = lambda lo, hi: (lo * num // den, hi * num // den)  # noqa: E731
        else:
            below, above = (span - 1) // 2, (span + 1) // 2
            aligned = a.align_corners

            def taps(o: int) -> Interval:  # the positions the coordinate src of output o weighs (nonzero)
                # src = o·inv (aligned corners) or (o + 1/2)·inv - 1/2, as the fraction n / d
                n, d = (o * num, den) if aligned else ((2 * o + 1) * num - den, 2 * den)
                fl = n // d
                return (fl, fl) if n % d == 0 else (fl - below, fl + above)
            # an exact source coordinate reads one tap, its neighbours up to four (bicubic): the ends of
            # an interval come from its end position or the one beside it
            base = lambda lo, hi: (min(taps(o)[0] for o in (lo, lo + 1) if o <= hi),  # noqa: E731
                                   max(taps(o)[1] for o in (hi, hi - 1) if o >= lo))
        if a.scale is not None and not sized:
            return base
        # Resampled to a size (12 -> 23 px), or a map whose size the network fixes (the bins of an
        # adaptive pool): no pattern repeats past the map, and PyTorch clamps the source index to
        # the input's last position; so do positions beyond the map here.
        last = n_in - 1

        def clamped(lo: int, hi: int) -> Interval | None:
            got = base(lo, hi)
            return None if got is None else (min(max(got[0], 0), last), min(max(got[1], 0), last))
        return clamped
    if op is OpKind.PIXEL_SHUFFLE:
        r = a.factor  # type: ignore[union-attr]
        return lambda lo, hi: (lo // r, hi // r)
    if op is OpKind.PIXEL_UNSHUFFLE:
        r = a.factor  # type: ignore[union-attr]
        return lambda lo, hi: (lo * r, hi * r + r - 1)
    if op in (OpKind.ADAPTIVE_AVGPOOL, OpKind.ADAPTIVE_MAXPOOL):
        n_in, n_out = x.spatial[k], node.out.spatial[k]
        return lambda lo, hi: (lo * n_in // n_out, -(-(hi + 1) * n_in // n_out) - 1)
    if op is OpKind.PAD:
        p = a.padding[k][0]  # type: ignore[union-attr]
        return lambda lo, hi: (lo - p, hi - p)
    if op is OpKind.SLICE and a.axis == node.out.spatial_axes[k]:  # type: ignore[union-attr]
        start, last, step = a.start, a.stop - 1, a.step  # type: ignore[union-attr]
        if a.reverse:  # type: ignore[union-attr]
            return lambda lo, hi: (last - hi, last - lo)
        return lambda lo, hi: (start + lo * step, start + hi * step)
    return lambda lo, hi: (lo, hi)


def _side_by_side(offset: int, n: int) -> Map:
    """A concat along a spatial axis: the input at ``offset`` holds output positions offset..offset+n-1."""
    def part(lo: int, hi: int) -> Interval | None:
        a, b = max(lo, offset) - offset, min(hi, offset + n - 1) - offset
        return (a, b) if a <= b else None
    return part


class Exact:
    """Supports of single output positions, followed back to the input.  ``image[name]`` gives the
    image axis (0 = H, 1 = W) of a node's first and second spatial axis; ``local(name)`` says whether
    a node has finite paths at all."""

    def __init__(self, graph: Graph, image: dict[str, tuple[int, int]], local: Callable[[str], bool],
                 sized: frozenset[str] = frozenset(), drift: frozenset[str] = frozenset(),
                 resized: frozenset[str] = frozenset()):
        self.g, self.image, self.local, self.sized, self.drift = graph, image, local, sized, drift
        self.resized = resized  # nodes whose phases the input size sets (an interpolation to a size)
        shape = graph.input_shape
        # a network on a signal (a (C, 1, L) input): its (C, L) tensors are that signal, squeezed; in a
        # network on images a (C, N) tensor holds tokens, or a map averaged over its height, and is
        # not followed
        self.signal = len(shape) == 3 and shape[1] == 1
        self._maps: dict[tuple[str, int], list[tuple[str, Map | None]]] = {}

    def back(self, name: str, axis: int, lo: int, hi: int, inside: list[bool] | None = None) -> tuple[int, int] | None:
        """(narrowest path, hull of all paths): the widths of the input intervals along image axis
        ``axis`` that positions lo..hi of node ``name`` read; None when some op on the way cannot be
        followed, :data:`NOTHING` when they read no input position at all (the gaps a dilated,
        strided transposed convolution leaves: only its bias reaches them).  ``inside``, when given,
        gets ``[False]`` if some interval on the way leaves its map (reads padding beyond a border).  Intervals are carried back node by node, latest first (no
        recursion: a backbone of a thousand layers is as easy as ten).  Every op maps the ends of an
        interval monotonically, so per node the hull of the paths' intervals is one interval, and the
        narrowest path comes from an interval no other one lies inside: only those are kept."""
        g = self.g
        pending: dict[str, tuple[Interval, list[Interval]]] = {name: ((lo, hi), [(lo, hi)])}
        queue = [-g.position(name)]  # the latest pending node first: all its readers are done
        narrow: int | None = None
        hull: Interval | None = None
        seam = False  # a path read pieces of a concat along this axis: its narrowest is its hull
        while queue:
            node = g.nodes[-heapq.heappop(queue)]
            box, minimal = pending.pop(node.name)
            k = self._axis(node, axis)
            if k == -1:
                return None
            if inside is not None and k is not None:
                extent = node.out.spatial[k]
                if box[0] < 0 or box[1] >= extent:
                    inside[:] = [False]
            if node.name in self.sized and k is not None:
                # a map whose size the network fixes (an adaptive pool's bins) has real borders: the
                # padding around it is zeros, not more bins of the image
                last = node.out.spatial[k] - 1
                box = (max(box[0], 0), min(box[1], last))
                minimal = [(max(a, 0), min(b, last)) for a, b in minimal if a <= last and b >= 0]
                if box[0] > box[1] or not minimal:
                    continue
            if node.op is OpKind.INPUT:
                if not minimal:  # only the hull of a dilated window reaches it, through gaps no path reads
                    continue
                hull = box if hull is None else (min(hull[0], box[0]), max(hull[1], box[1]))
                width = min(b - a + 1 for a, b in minimal)
                narrow = width if narrow is None else min(narrow, width)
                continue
            for src, got in self._through(node, k, *box):  # the hull feeds every input a path reads
                if got is None:
                    return None
                if src not in pending:
                    pending[src] = (got, [])
                    heapq.heappush(queue, -g.position(src))
                old, kept = pending[src]
                pending[src] = ((min(old[0], got[0]), max(old[1], got[1])), kept)
            side_by_side = k is not None and node.op is OpKind.CONCAT \
                and node.attrs.axis == node.out.spatial_axes[k]  # type: ignore[union-attr]
            for span in minimal:
                parts = self._through(node, k, *span)
                # a window across the seam of maps put side by side (circular padding written as
                # slices and a concat) reads both pieces on one path, not one or the other
                seam = seam or (side_by_side and len(parts) > 1)
                for src, got in parts:
                    _keep_minimal(pending[src][1], got)  # type: ignore[arg-type]
        if hull is None or narrow is None:
            return NOTHING
        width = hull[1] - hull[0] + 1
        return (width if seam else narrow), width

    def _axis(self, node: Node, axis: int) -> int | None:
        """The node's own spatial axis that image axis ``axis`` is; None for the height of a signal's
        (C, L) (a (C, 1, L) map squeezed: no extent there, positions pass through); -1 when the
        layout has no place for it."""
        sp = node.out.spatial_axes
        if len(sp) == 2:
            return self.image[node.name].index(axis)
        if len(sp) == 1 and self.signal and self.image[node.name] == (0, 1):
            return 0 if axis == 1 else None
        return -1

    def _through(self, node: Node, k: int | None, lo: int, hi: int) -> list[tuple[str, Interval | None]]:
        """(input, the interval of it that positions lo..hi read) for each local input that feeds
        them; None for the interval when that input's layout cannot be followed.  ``k`` None: the
        height of a signal, which every op passes through."""
        if k is None:
            return [(name, (lo, hi)) for name in node.inputs if self.local(name)]
        out: list[tuple[str, Interval | None]] = []
        for name, fn in self.maps(node, k):
            if fn is None:
                out.append((name, None))
                continue
            span = fn(lo, hi)
            if span is not None:
                out.append((name, span))
        return out

    def maps(self, node: Node, k: int) -> list[tuple[str, Map | None]]:
        """(local input, its interval map along own axis ``k``) of ``node``, built once."""
        key = (node.name, k)
        got = self._maps.get(key)
        if got is None:
            got = self._maps[key] = self._build(node, k)
        return got

    def _build(self, node: Node, k: int) -> list[tuple[str, Map | None]]:
        maps: list[tuple[str, Map | None]] = []
        offset = 0
        side_by_side = node.op is OpKind.CONCAT and node.attrs.axis == node.out.spatial_axes[k]  # type: ignore[union-attr]
        for name in node.inputs:
            x = self.g.node(name).out
            same = len(x.spatial_axes) == len(node.out.spatial_axes) in (1, 2)
            n = x.spatial[k] if same else 0
            if not same and signal_relayout(self.g, node):
                fn: Map | None = lambda lo, hi: (lo, hi)  # noqa: E731 - a (C, 1, L) map squeezed, or back
            else:
                fn = _side_by_side(offset, n) if side_by_side else \
                    _axis_map(node, k, x, node.name in self.sized) if same else None
            offset += n
            if self.local(name):
                maps.append((name, fn))
        return maps


def _keep_minimal(kept: list[Interval], iv: Interval) -> None:
    """Add ``iv`` to ``kept``, an antichain of intervals (none inside another): a path whose interval
    contains another's is never the narrowest, here or at the input."""
    a, b = iv
    for x, y in kept:
        if x >= a and y <= b:  # something narrower is already there (or the same)
            return
    kept[:] = [(x, y) for x, y in kept if not (a >= x and b <= y)]
    kept.append(iv)


def periods(node: Node, ins: list[tuple[int, int]], infos: list[TensorInfo]) -> tuple[int, int]:
    """How many consecutive output positions (per own spatial axis) cover every phase of the node,
    from its inputs' periods: a multiple of the true period.  Kept below 16·MAX_PERIOD so that a
    later stride can still divide it; :func:`supports` probes at most MAX_PERIOD positions."""
    one = 1  # both axes alike: a permute may swap them
    for p in ins:
        one = math.lcm(one, *p)
    base = [one, one]
    if len(node.out.spatial_axes) != 2 or not infos or len(infos[0].spatial_axes) != 2:
        return base[0], base[1]
    op, a, x = node.op, node.attrs, infos[0]
    out = []
    for k in (0, 1):
        p = base[k]
        if op in (OpKind.CONV, OpKind.MAXPOOL, OpKind.AVGPOOL):
            p //= math.gcd(p, a.stride[k])  # type: ignore[union-attr]
        elif op is OpKind.CONV_T:
            p *= a.stride[k]  # type: ignore[union-attr]
        elif op is OpKind.UPSAMPLE and (x.spatial[k] != node.out.spatial[k]
                                        or (a.scale is not None and a.scale[k] != 1)):  # type: ignore[union-attr]
            assert isinstance(a, UpsampleAttrs)
            inv = resample_inv(a, k, x.spatial[k], node.out.spatial[k])
            p *= inv.denominator
        elif op is OpKind.PIXEL_SHUFFLE:
            p *= a.factor  # type: ignore[union-attr]
        elif op is OpKind.PIXEL_UNSHUFFLE:
            p //= math.gcd(p, a.factor)  # type: ignore[union-attr]
        elif op is OpKind.SLICE and a.step > 1 and a.axis == node.out.spatial_axes[k]:  # type: ignore[union-attr]
            p //= math.gcd(p, a.step)  # type: ignore[union-attr]
        elif op in (OpKind.ADAPTIVE_AVGPOOL, OpKind.ADAPTIVE_MAXPOOL):
            n_in, n_out = x.spatial[k], node.out.spatial[k]
            if n_in % n_out or n_out > n_in:
                p *= Fraction(n_in, n_out).denominator
            else:
                p //= math.gcd(p, n_in // n_out)
        out.append(min(p, MAX_PERIOD * 16))
    return out[0], out[1]


def supports(ex: Exact, node: Node, axis: int, period: int) -> tuple[int, int] | None:
    """(narrowest path, widest hull) over ``period`` consecutive positions of image axis ``axis`` of
    ``node``, from its middle; None when a path cannot be followed or none is finite.  Positions
    that read nothing (the gaps of a dilated transposed convolution) are left out, as their gradient
    is zero: they have no support."""
    k = ex._axis(node, axis)
    if k is None or k == -1:
        return None
    size = node.out.spatial[k]
    n = min(period, MAX_PERIOD)
    if node.name in ex.sized or node.name in ex.drift:  # the network fixes the map's size (an adaptive
        # pool's bins), or paths drift apart (their jumps differ): every position is its own phase,
        # those near the borders included; a large map is sampled evenly
        probes: Sequence[int] = sorted({round(i * (size - 1) / max(1, MAX_PERIOD - 1)) for i in range(MAX_PERIOD)}
                                       if size > MAX_PERIOD else range(size))
        bounded = True
    elif node.name in ex.resized:  # phases set by the input size (a resampling to another tensor's
        # size, 12 -> 23 px): a pattern that repeats inside the map (period < size) is probed around
        # the middle, away from the borders where an interpolation clamps its source; otherwise the
        # phases are the positions themselves, and only those that exist count
        start = max(0, min(size // 2 - n // 2, size - n))
        probes, bounded = range(start, min(size, start + n)), period >= size
    else:  # the network's own pattern (strides, scales): any n consecutive positions show every
        # phase, on an input larger than the receptive field, however few a small input has
        probes, bounded = range(size // 2 - n // 2, size // 2 - n // 2 + n), False
    every: list[tuple[int, int]] = []
    within: list[tuple[int, int]] = []
    for o in probes:
        inside = [True]
        got = ex.back(node.name, axis, o, o, inside)
        if got is None:
            return None
        if got == NOTHING:  # no support: no width to count, neither narrowest nor widest
            continue
        every.append(got)
        if inside[0]:
            within.append(got)
    if node.name in ex.sized:
        # The network fixes the map's size (an adaptive pool into a few bins): no input is larger than
        # the receptive field, every position is what the network computes, and each counts as it
        # is, padding included, like any receptive field (a pyramid-pooling position that reads
        # both bins sees the whole image and one pixel of padding: R + 1).
        return (min(g[0] for g in every), max(g[1] for g in every)) if every else None
    # Where no pattern repeats, a position whose paths leave some map reads padding there: what the
    # positions fully inside show is the truth (the gradient of a position sees borders); only when
    # none is inside (a receptive field larger than the image) are the unbounded supports reported.
    got_all = within if bounded and within else every
    if not got_all:
        return None
    return min(g[0] for g in got_all), max(g[1] for g in got_all)


Affine = tuple[int, int, int, int]  # (J, A, B, W): positions lo..hi read J·lo+A .. J·hi+B, narrowest path J·(hi-lo)+W


def _affine(fn: Map) -> tuple[int, int, int] | None:
    """(s, a, b) when ``fn`` maps lo..hi to s·lo+a .. s·hi+b for every interval (a conv, a pool, a pad,
    an elementwise op); None otherwise (a resampler: its ends are floors of fractions)."""
    base = fn(0, 0)
    if base is None:
        return None
    a, b = base
    one = fn(1, 1)
    if one is None or one[0] - a != one[1] - b or one[0] - a < 1:
        return None
    s = one[0] - a
    for lo, hi in ((3, 10), (-7, -2), (-5, 6), (11, 11)):
        if fn(lo, hi) != (s * lo + a, s * hi + b):
            return None
    return s, a, b


def shifted_supports(ex: Exact, names: set[str], axis: int) -> dict[str, tuple[int, int]]:
    """(narrowest path, hull) of the nodes ``names`` along image axis ``axis``, carried forward in
    one pass where every op on the way maps intervals affinely (convolutions, pools, pads,
    elementwise ops and merges of paths with one jump): the paths' offsets (their centres apart: a
    2×2 average pool beside a padded 3×3 conv) then make the hull, the same for every position.  A
    node whose paths pass anything else (a resampler, a seam, a map of fixed size, paths whose jumps
    differ, a layout change) is left out: :func:`supports` follows it position by position.  What
    :meth:`Exact.back` finds for each probe, without walking the graph back once per node."""
    g = ex.g
    memo: dict[str, Affine | None] = {}
    out: dict[str, tuple[int, int]] = {}
    last = max((g.position(n) for n in names), default=-1)
    for node in g.nodes[:last + 1]:
        memo[node.name] = got = _forward(ex, node, axis, memo)
        if got is not None and node.name in names:
            out[node.name] = (got[3], got[2] - got[1] + 1)
    return out


def _forward(ex: Exact, node: Node, axis: int, memo: dict[str, Affine | None]) -> Affine | None:
    if node.op is OpKind.INPUT:
        return 1, 0, 0, 1
    k = ex._axis(node, axis)
    if k is None or k == -1 or node.name in ex.sized or node.name in ex.drift or node.name in ex.resized:
        return None
    if node.op is OpKind.CONCAT and node.attrs.axis == node.out.spatial_axes[k]:  # type: ignore[union-attr]
        return None  # a seam: which piece a window reads depends on the position
    got: list[Affine] = []
    for src, fn in ex.maps(node, k):
        before = memo.get(src)
        if fn is None or before is None:
            return None
        lin = _affine(fn)
        if lin is None:
            return None
        s, a, b = lin
        j, lo, hi, w = before
        got.append((j * s, j * a + lo, j * b + hi, j * (b - a) + w))
    if not got or len({x[0] for x in got}) > 1:  # no finite path, or jumps that differ: not one pattern
        return None
    return got[0][0], min(x[1] for x in got), max(x[2] for x in got), min(x[3] for x in got)

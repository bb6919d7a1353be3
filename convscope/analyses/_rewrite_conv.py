"""Rewrites of the convolutions themselves (seeds/003 "More efficient CNN"): grouped convolutions
(ResNet -> ResNeXt), depthwise-separable convolutions, 1x1 bottlenecks, and a width multiplier.

They apply to every *full spatial convolution* of the trunk: kernel larger than 1x1, one group,
not the stem (it reads the image, with few channels), not inside the head or an SE gate.  The
receptive field does not change (same kernels, strides and dilations), only the cost.

Closed forms (per rewritten layer, C_in -> C_out, kernel k_h x k_w, H x W output positions; the
tests check them):

* grouped, G groups:    params C_in·C_out·k_h·k_w / G;   MACs H·W · C_in·C_out·k_h·k_w / G
* depthwise-separable:  params C_in·k_h·k_w + C_in·C_out;  MACs H·W · (C_in·k_h·k_w + C_in·C_out)
* bottleneck, m = C/4:  1x1 C_in->m, BN, ReLU, k_h x k_w m->m (the stride), BN, ReLU, 1x1 m->C_out;
  params C_in·m + m²·k_h·k_w + m·C_out + 4m (two BatchNorms)
* width alpha:          every channel count c > d becomes max(d, round(alpha·c / d)·d), d = 8 (or a
  multiple of the shuffle/GroupNorm group counts); the layers that set the output (the classes)
  keep theirs; a grouped convolution keeps its group count where it still divides its channels.
A bias stays on the layer that produces the original output.
"""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction

from convscope.analyses._rewrite_base import Base, NotApplicable, Rewrite, rewrite
from convscope.analyses._rewrite_edit import Editor, NewNode
from convscope.ir import ops as O
from convscope.ir.graph import Graph, GraphBuilder, Node
from convscope.ir.ops import WEIGHTED_OPS, OpKind
from convscope.ir.transform import rebuild
from convscope.units import plural

__all__ = ["full_convs", "cardinality_for", "bottleneck_width", "scaled_channels", "scale_width"]


def full_convs(base: Base) -> list[Node]:
    """Full spatial convolutions of the trunk, the stem excluded, and not a fixed filter (a blur or an
    edge detector is no learned layer to slim: it has no parameters to save, and a rewrite would
    turn it into one)."""
    out = []
    fixed = 0
    for n in base.trunk():
        if n.op is not OpKind.CONV:
            continue
        a = n.attrs
        assert isinstance(a, O.ConvAttrs)
        if a.groups == 1 and max(a.kernel) > 1 and not base.is_stem(n):
            if a.fixed:
                fixed += 1
                continue
            out.append(n)
    if not out:
        why = f" ({plural(fixed, 'fixed filter')} left as they are)" if fixed else ""
        raise NotApplicable(f"no learned full spatial convolution (k > 1, one group) outside the stem{why}")
    return out


def whole_share_groups(g: Graph, convs: list[Node]) -> list[Node]:
    """The convolutions whose weights are theirs alone, or shared only among convolutions of the
    list: a rewrite that replaces one of a module's calls replaces all of them, or none (the
    weights stay tied, or the variant would not be the same network)."""
    chosen = {n.name for n in convs}
    members: dict[str, set[str]] = {}
    for n in g.nodes:
        if n.shares:
            members.setdefault(n.shares, {n.shares}).add(n.name)
    whole = {owner for owner, names in members.items() if names <= chosen}
    return [n for n in convs if (n.shares or (n.name if n.name in members else None)) in (None, *whole)]


def _counterparts(g: Graph, n: Node, suffixes: tuple[str, ...]) -> list[str | None]:
    """For each part a rewrite makes of ``n`` (``<name>_<suffix>``, then the part under ``n``'s own
    name): the same part of the layer whose weights ``n`` shares, or None when ``n`` holds its own."""
    if not n.shares:
        return [None] * (len(suffixes) + 1)
    return [*(_free_name(g, f"{n.shares}_{s}") for s in suffixes), n.shares]


def _cin(base: Base, n: Node) -> int:
    return base.graph.node(n.inputs[0]).out.channels or 0


def _free_name(graph: Graph, name: str) -> str:
    k, cand = 1, name
    while cand in graph:
        k += 1
        cand = f"{name}{k}"
    return cand


# -- grouped ----------------------------------------------------------------------------------------
def cardinality_for(cin: int, cout: int, cardinality: int, min_width: int) -> int:
    """The largest group count <= ``cardinality`` dividing both channel counts with groups of at
    least ``min_width`` channels (1 when there is none)."""
    g = math.gcd(cin, cout)
    for cand in range(min(cardinality, g), 1, -1):
        if g % cand == 0 and cin // cand >= min_width and cout // cand >= min_width:
            return cand
    return 1


@rewrite("grouped-conv", "conv -> grouped conv (ResNeXt)")
def grouped(base: Base) -> list[Rewrite]:
    opts = base.options
    ed = Editor(base.graph)
    groups: list[int] = []
    for n in full_convs(base):
        a = n.attrs
        assert isinstance(a, O.ConvAttrs)
        g = cardinality_for(_cin(base, n), a.out_channels, opts.cardinality, opts.min_group_width)
        if g > 1:
            ed.set_attrs(n.name, dataclasses.replace(a, groups=g))
            groups.append(g)
    if not groups:
        raise NotApplicable(f"no convolution has channel counts that split into groups of at least "
                            f"{opts.min_group_width} channels")
    variant = ed.build(name=base.variant_name("grouped-conv"))
    gs = sorted(set(groups))
    explanation = (
        f"Split {len(groups)} full convolution(s) into {'/'.join(map(str, gs))} groups (cardinality up to "
        f"{opts.cardinality}, at least {opts.min_group_width} channels per group, as in ResNeXt-50 32x4d): each "
        "output channel reads only its group's inputs, so those layers' weights and MACs fall by the group "
        "count (seeds/003: ResNet -> ResNeXt). ResNeXt also widens the block to win back capacity; this only "
        "groups. Grouped kernels are often slower per MAC than dense ones: check the predicted latency.")
    return [Rewrite("grouped-conv", "conv -> grouped conv (ResNeXt)", explanation, variant, ed.changed)]


# -- depthwise-separable -----------------------------------------------------------------------------
@rewrite("depthwise-separable", "conv -> depthwise-separable")
def depthwise_separable(base: Base) -> list[Rewrite]:
    g = base.graph
    ed = Editor(g)
    convs = whole_share_groups(g, full_convs(base))
    if not convs:
        raise NotApplicable("every full convolution shares its weights with a layer this rewrite does not replace")
    for n in convs:
        a = n.attrs
        assert isinstance(a, O.ConvAttrs)
        cin = _cin(base, n)
        dw = O.ConvAttrs(out_channels=cin, kernel=a.kernel, stride=a.stride, padding=a.padding,
                         dilation=a.dilation, groups=cin)
        pw = O.ConvAttrs(out_channels=a.out_channels, kernel=(1, 1), bias=a.bias)
        dw_name = _free_name(g, f"{n.name}_dw")
        tie = _counterparts(g, n, ("dw",))
        ed.replace(n.name, [NewNode(dw_name, OpKind.CONV, dw, n.inputs, tie[0]),
                            NewNode(n.name, OpKind.CONV, pw, (dw_name,), tie[1])])
    variant = ed.build(name=base.variant_name("depthwise-separable"))
    explanation = (
        f"Replace {len(ed.changed)} full convolution(s) by a depthwise k x k convolution ('<name>_dw', one filter "
        "per channel, carrying the stride and dilation) followed by a 1x1 convolution under the original name "
        "(seeds/003; MobileNet, Xception): weights and MACs fall by about k·k times for wide layers. No "
        "BatchNorm or activation between the two (as Xception's separable convolution).")
    return [Rewrite("depthwise-separable", "conv -> depthwise-separable", explanation, variant, ed.changed)]


# -- bottleneck --------------------------------------------------------------------------------------
def bottleneck_width(cin: int, cout: int, reduction: int, divisor: int) -> int:
    return max(divisor, (min(cin, cout) // reduction) // divisor * divisor)


_BOTTLENECK_PARTS = ("reduce", "reduce_bn", "reduce_relu", "spatial", "spatial_bn", "spatial_relu")


def _bottleneck_nodes(g: Graph, n: Node, cin: int, m: int) -> list[NewNode]:
    a = n.attrs
    assert isinstance(a, O.ConvAttrs)
    names = [_free_name(g, f"{n.name}_{s}") for s in _BOTTLENECK_PARTS]
    tie = _counterparts(g, n, _BOTTLENECK_PARTS)  # a module called twice: every part shared too
    one = (1, 1)
    return [
        NewNode(names[0], OpKind.CONV, O.ConvAttrs(out_channels=m, kernel=one), n.inputs, tie[0]),
        NewNode(names[1], OpKind.BATCHNORM, O.NormAttrs(), (names[0],), tie[1]),
        NewNode(names[2], OpKind.ACT, O.ActAttrs(fn="relu"), (names[1],)),
        NewNode(names[3], OpKind.CONV, O.ConvAttrs(out_channels=m, kernel=a.kernel, stride=a.stride,
                                                    padding=a.padding, dilation=a.dilation), (names[2],), tie[3]),
        NewNode(names[4], OpKind.BATCHNORM, O.NormAttrs(), (names[3],), tie[4]),
        NewNode(names[5], OpKind.ACT, O.ActAttrs(fn="relu"), (names[4],)),
        NewNode(n.name, OpKind.CONV, O.ConvAttrs(out_channels=a.out_channels, kernel=one, bias=a.bias), (names[5],),
                tie[6]),
    ]


@rewrite("bottleneck", "insert 1x1 bottlenecks")
def bottleneck(base: Base) -> list[Rewrite]:
    opts = base.options
    ed = Editor(base.graph)
    for n in whole_share_groups(base.graph, full_convs(base)):
        a = n.attrs
        assert isinstance(a, O.ConvAttrs)
        cin, cout, kk = _cin(base, n), a.out_channels, a.kernel[0] * a.kernel[1]
        m = bottleneck_width(cin, cout, opts.bottleneck_reduction, opts.channel_divisor)
        if min(cin, cout) < opts.bottleneck_reduction * opts.channel_divisor:
            continue
        if cin * m + m * m * kk + m * cout + 4 * m >= cin * cout * kk:
            continue  # a bottleneck that does not save weights
        ed.replace(n.name, _bottleneck_nodes(base.graph, n, cin, m))
    if not ed.changed:
        raise NotApplicable(f"no convolution is wide enough (at least {opts.bottleneck_reduction * opts.channel_divisor} "
                            "channels) for a bottleneck to save weights")
    variant = ed.build(name=base.variant_name("bottleneck"))
    explanation = (
        f"Wrap {len(ed.changed)} full convolution(s) in a ResNet bottleneck: 1x1 down to min(in, out) / "
        f"{opts.bottleneck_reduction} channels, rounded down to a multiple of {opts.channel_divisor} (at least "
        f"{opts.channel_divisor}; '<name>_reduce'), BatchNorm, ReLU, the k x k "
        "convolution at that width ('<name>_spatial'), BatchNorm, ReLU, and 1x1 back up under the original name "
        "(seeds/003: 1x1 convolutions reduce parameters). Adds depth (two nonlinearities) but not receptive field.")
    return [Rewrite("bottleneck", "insert 1x1 bottlenecks", explanation, variant, ed.changed)]


# -- width multiplier --------------------------------------------------------------------------------
def scaled_channels(c: int, alpha: float, divisor: int) -> int:
    """MobileNet's make_divisible: c·alpha to the nearest multiple of ``divisor`` (halves up), never
    below it and never more than 10% below c·alpha; channel counts up to ``divisor`` stay, and a
    multiplier below 1 never widens a layer (12 x0.75 would round up to 16: it stays 12)."""
    if c <= divisor:
        return c
    v = c * alpha
    out = max(divisor, int(v + divisor / 2) // divisor * divisor)
    out = out + divisor if out < 0.9 * v else out
    return min(out, c) if alpha < 1 else out


def _output_layers(g: Graph) -> set[str]:
    """Weighted layers with no weighted layer after them: they set the output's width (the classes)."""
    users = g.consumers()
    after: dict[str, bool] = {}
    for n in reversed(g.nodes):
        after[n.name] = any(g.node(u).op in WEIGHTED_OPS or after[u] for u in users[n.name])
    return {n.name for n in g.nodes if n.op in WEIGHTED_OPS and not after[n.name]}


def _divisor(g: Graph, base_divisor: int) -> int:
    """Channel counts are rounded to multiples of this: the base divisor, raised to a multiple of the
    channel-shuffle and GroupNorm group counts (those ops need every channel count divisible)."""
    d = base_divisor
    for n in g.nodes:
        if n.op in (OpKind.CHANNEL_SHUFFLE, OpKind.GROUPNORM):
            d = math.lcm(d, n.attrs.groups)  # type: ignore[union-attr]
    return d


def _shuffle_divisors(g: Graph, setter: dict[str, str], tied: dict[str, str], div: int) -> dict[str, int]:
    """Per layer whose channels a pixel shuffle folds into space (r² channels per output channel):
    the divisor its width must keep, raised to a multiple of r² (on the earliest layer of its tied
    group, whose width the group takes).  A shuffle fed by no single layer (a concat) raises every
    layer's divisor: ``{"*": d}``."""
    out: dict[str, int] = {}
    for n in g.nodes:
        if n.op is not OpKind.PIXEL_SHUFFLE:
            continue
        r2 = n.attrs.factor ** 2  # type: ignore[union-attr]
        src = setter.get(n.inputs[0], "")
        key = tied.get(src, src) if src in g and g.node(src).op in WEIGHTED_OPS else "*"
        out[key] = math.lcm(out.get(key, div), r2)
    return out


def _groups_for(groups: int, cin: int, cout: int) -> int:
    """A grouped convolution keeps its group count when it divides the new channel counts, else the
    largest count below it that does (ResNeXt 32x4d at 0.5 stays 32 groups; RegNet's odd counts shrink)."""
    common = math.gcd(cin, cout)
    return max(k for k in range(1, min(groups, common) + 1) if common % k == 0)


# Ops whose output has their (first) input's channels.
_SAME_CHANNELS = frozenset({OpKind.BATCHNORM, OpKind.LAYERNORM, OpKind.GROUPNORM, OpKind.LRN, OpKind.ACT, OpKind.DROPOUT,
                            OpKind.IDENTITY, OpKind.SCALE, OpKind.ZERO, OpKind.PAD, OpKind.UPSAMPLE,
                            OpKind.MAXPOOL, OpKind.AVGPOOL, OpKind.ADAPTIVE_AVGPOOL, OpKind.ADAPTIVE_MAXPOOL,
                            OpKind.GLOBAL_AVGPOOL, OpKind.GLOBAL_MAXPOOL, OpKind.CHANNEL_SHUFFLE})


def _tied_channels(g: Graph) -> tuple[dict[str, str], dict[str, str]]:
    """(ties, setters).  Ties: per layer that sets a channel count and meets an earlier one at an add
    or a multiplication (a residual, an SE gate), or beside one of the same width in a concat, the
    earliest layer of that group, whose new width it must take (a residual's identity shortcut from a
    concat whose branches round differently, for one).  Setters: per node, the node that sets its
    channel count."""
    order = {n.name: i for i, n in enumerate(g.nodes)}
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.get(x, x) != x:
            x = parent[x]
        return x

    setter: dict[str, str] = {}  # per node: a layer that sets its channel count (topological order)
    for n in g.nodes:
        if n.op in _SAME_CHANNELS and n.inputs:
            setter[n.name] = setter[n.inputs[0]]
        elif n.op in (OpKind.ADD, OpKind.MUL) and len(n.inputs) > 1:
            full = [setter[i] for i in n.inputs if g.node(i).out.channels == n.out.channels]
            setter[n.name] = full[0]
            if len(full) < len(n.inputs):
                continue  # a broadcast along channels (a scalar gate): nothing to tie
            for x in full[1:]:
                a, b = find(full[0]), find(x)
                if a != b:
                    first, second = (a, b) if order[a] < order[b] else (b, a)
                    parent[second] = first
        else:
            setter[n.name] = n.name
            if n.op is OpKind.CONCAT and len(n.inputs) > 1 and n.out.channel_axis is not None \
                    and n.attrs.axis == n.out.channel_axis:  # type: ignore[union-attr]
                # parts of equal width stay equal (ShuffleNet: half the channels passed on beside a branch
                # of as many, which the next unit splits in two again)
                by_width: dict[int, list[str]] = {}
                for i in n.inputs:
                    by_width.setdefault(g.node(i).out.channels or 0, []).append(setter[i])
                for same in by_width.values():
                    for x in same[1:]:
                        a, b = find(same[0]), find(x)
                        if a != b:
                            first, second = (a, b) if order[a] < order[b] else (b, a)
                            parent[second] = first
    return {x: find(x) for x in parent}, setter


def scale_width(graph: Graph, alpha: float, divisor: int = 8, *, name: str | None = None) -> tuple[Graph, tuple[str, ...]]:
    """The network with every channel count scaled by ``alpha`` (see :func:`scaled_channels`), and
    the layers whose width changed.  The layers that set the output keep their width; depthwise
    convolutions follow their input; grouped ones keep their group count where it divides."""
    keep = _output_layers(graph)
    div, extra, tied = _roundings(graph, divisor)
    changed: list[str] = []

    def edit(node: Node, b: GraphBuilder) -> object:
        a = node.attrs
        if node.op is OpKind.SLICE:
            return _sliced_channels(graph, node, b)
        if node.op is OpKind.CHANNEL_SHUFFLE:
            return _shuffle_groups(graph, node, b)
        if node.name in keep or node.op not in WEIGHTED_OPS:
            return None
        if isinstance(a, O.LinearAttrs):
            new: object = dataclasses.replace(a, out_features=scaled_channels(a.out_features, alpha, div))
        else:
            assert isinstance(a, O.ConvAttrs)
            cin_old = graph.node(node.inputs[0]).out.channels or 0
            cin = b.info(node.inputs[0]).channels or 0
            if a.groups > 1 and a.groups == cin_old:  # depthwise: follows its input
                new = dataclasses.replace(a, groups=cin, out_channels=cin * (a.out_channels // cin_old))
            elif a.fixed:  # a constant filter (a blur): not a width to choose; it follows its input where it
                # maps channels to as many, and keeps its own otherwise
                out = cin if a.out_channels == cin_old else a.out_channels
                new = dataclasses.replace(a, out_channels=out, groups=_groups_for(a.groups, cin, out))
            else:
                rep = tied.get(node.name)
                out = (b.info(rep).channels or 0) if rep is not None else scaled_channels(
                    a.out_channels, alpha, extra.get(node.name, div))
                new = dataclasses.replace(a, out_channels=out, groups=_groups_for(a.groups, cin, out))
        if new != a:
            changed.append(node.name)
        return new

    return rebuild(graph, edit, name=name), tuple(changed)  # type: ignore[arg-type]


def _sliced_channels(graph: Graph, node: Node, b: GraphBuilder) -> O.SliceAttrs | None:
    """A slice of channels (ShuffleNet's split, ``chunk``) of a map whose width changed: the same share
    of the new channels ([8, 16) of 16 is [4, 8) of 8); unchanged where the share is not whole."""
    a = node.attrs
    assert isinstance(a, O.SliceAttrs)
    old, new = graph.node(node.inputs[0]).out, b.info(node.inputs[0])
    if old.channel_axis is None or a.axis != old.channel_axis or new.channels == old.channels or not old.channels:
        return None
    ratio = Fraction(new.channels or 0, old.channels)
    start, stop = a.start * ratio, a.stop * ratio
    if start.denominator != 1 or stop.denominator != 1:
        return None
    return dataclasses.replace(a, start=int(start), stop=int(stop))


def _shuffle_groups(graph: Graph, node: Node, b: GraphBuilder) -> O.ShuffleAttrs | None:
    """A channel shuffle on a map whose width changed: of its two factors (groups × channels per
    group), the small one is the network's choice (ShuffleNet's 2 branches) and the large one
    follows the width — ``view(n, 2, c // 2, …)`` is groups=2 at any width, ``view(n, c // 2, 2, …)``
    is 2 channels per group."""
    a = node.attrs
    assert isinstance(a, O.ShuffleAttrs)
    old, new = graph.node(node.inputs[0]).out.channels or 0, b.info(node.inputs[0]).channels or 0
    if not old or new == old or old % a.groups:
        return None
    per_group = old // a.groups
    if a.groups > per_group and new % per_group == 0:
        return O.ShuffleAttrs(groups=new // per_group)
    return None


def _roundings(g: Graph, base_divisor: int) -> tuple[int, dict[str, int], dict[str, str]]:
    """(the divisor channel counts are rounded to, the layers a pixel shuffle holds to another, the
    width ties)."""
    div = _divisor(g, base_divisor)
    tied, setter = _tied_channels(g)
    extra = _shuffle_divisors(g, setter, tied, div)
    return extra.pop("*", div), extra, tied


def _rounding_text(g: Graph, base_divisor: int) -> str:
    div, extra, _ = _roundings(g, base_divisor)
    keep = _output_layers(g)
    others = ", ".join(f"{d} for {name}" for name, d in extra.items() if name not in keep and d != div)
    return f"{div} ({others}, whose channels a pixel shuffle folds into space)" if others else str(div)


@rewrite("width", "scale the width")
def width(base: Base) -> list[Rewrite]:
    g = base.graph
    rounding = _rounding_text(g, base.options.channel_divisor)
    out = []
    for alpha in base.options.widths:
        variant, changed = scale_width(g, alpha, base.options.channel_divisor, name=base.variant_name(f"width-{alpha:g}"))
        if not changed:  # x0.75 may round every width back up (16 -> 16 in multiples of 8), x0.5 not
            continue
        keep = sorted(_output_layers(g), key=g.position)
        explanation = (
            f"Scale the output channels of {len(changed)} weighted layer(s) by {alpha:g}, rounded to multiples of "
            f"{rounding} (the layers after them take the narrower input); the layer(s) that set the output keep theirs ("
            f"{', '.join(keep) or 'none'}): weights and MACs fall by about the square of the factor; the receptive "
            "field does not change (MobileNet's width multiplier; seeds/003: reduce the parameter count).")
        out.append(Rewrite(f"width-{alpha:g}", f"scale the width by {alpha:g}", explanation, variant, changed))
    if not out:
        raise NotApplicable(f"no layer has enough channels for a width of {' or '.join(f'{a:g}' for a in base.options.widths)} "
                            f"to change it (channels are rounded to multiples of {rounding})")
    return out

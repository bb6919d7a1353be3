"""Rewrites that change where the network looks: cut the unproductive tail, remove or move a
downsampling step, replace max-pooling by a strided convolution, change the input resolution.

The moves are those of seeds/002 ("Should You Go Deeper?": remove the layers after the border
layer; change the receptive field's growth by adding, removing or repositioning pooling) and
seeds/003 (a strided convolution instead of max-pooling).  Each is a function ``Base -> [Rewrite]``
registered under its key; the convolution-level rewrites are in ``_rewrite_conv``.
"""

from __future__ import annotations

import dataclasses
import math

from convscope.analyses._rewrite_base import POINTWISE, Base, NotApplicable, Rewrite, layer_params, \
    reshaped_weights, rewrite
from convscope.analyses._rewrite_depth import depth_report, refusal
from convscope.analyses._rewrite_edit import Editor, NewNode, same_size_padding
from convscope.analyses.border import _last_spatial, _resolution_axes, productivity, shape_at
from convscope.analyses.cost import cost
from convscope.analyses.receptive_field import receptive_field
from convscope.errors import GraphError
from convscope.ir import ops as O
from convscope.ir.graph import Graph, Node
from convscope.ir.ops import SPATIAL_LAYER_OPS, WEIGHTED_OPS, OpKind
from convscope.ir.transform import rebuild, signal_relayout
from convscope.units import plural

__all__ = ["unproductive_score"]


def _res(base: Base) -> str:
    r = base.prod.resolution
    return f"{r[0]}x{r[1]}"


def unproductive_score(graph: Graph) -> tuple[int, int]:
    """(number of unproductive weighted layers, MACs): what a receptive-field rewrite is judged by."""
    p = productivity(graph, receptive_field(graph))
    n = sum(1 for name in p.names if graph.node(name).op in WEIGHTED_OPS)
    return n, cost(graph).total.macs


# -- truncate ----------------------------------------------------------------------------------------
def _last_kept(base: Base, end: int) -> int:
    """Position of the last layer before ``end`` that must stay: a productive convolution or pool, or
    one whose receptive field is unknown (never guessed unproductive)."""
    last = 0
    for i, n in enumerate(base.graph.nodes[:end]):
        unknown = n.op is OpKind.UNKNOWN or (n.op in SPATIAL_LAYER_OPS and not base.rf[n.name].known)
        if unknown or (base.is_flaggable(n) and n.name not in base.flagged()):
            last = i
    return last


def _cuts(base: Base, start: int, end: int) -> list[int]:
    """Positions p >= start at which the network can be cut: no layer after p reads a layer before
    p (the head's entry, which is re-wired, excepted).  Each cut is moved past the BatchNorm and
    activation that follow it, so a kept convolution keeps them."""
    nodes = base.graph.nodes
    pos = {n.name: i for i, n in enumerate(nodes)}
    earliest = [math.inf] * (len(nodes) + 1)
    for i in range(len(nodes) - 1, -1, -1):
        mine = min((pos[x] for x in nodes[i].inputs), default=math.inf) if i != end else math.inf
        earliest[i] = min(earliest[i + 1], mine)

    signal = base.graph.input_shape[1] == 1  # a Conv1d network: its (C, L) tensors are maps too

    def is_cut(p: int) -> bool:
        n = nodes[p]
        local = n.out.is_image or (signal and n.out.channel_axis == 0 and len(n.out.spatial_axes) == 1)
        return local and n.name not in base.global_names and earliest[p + 1] >= p

    def follows(p: int) -> bool:  # a BatchNorm, an activation, or the squeeze to (C, L) between them
        n = nodes[p]
        return n.op in POINTWISE or (signal_relayout(base.graph, n) and len(n.out.spatial_axes) == 1)

    out: list[int] = []
    p = start
    while p < end:
        if is_cut(p):
            while (p + 1 < end and follows(p + 1) and nodes[p + 1].inputs == (nodes[p].name,)
                   and is_cut(p + 1)):
                p += 1
            out.append(p)
        p += 1
    return out


@rewrite("truncate", "cut the unproductive tail")
def truncate(base: Base) -> list[Rewrite]:
    g = base.graph
    entry = base.head_entry
    if entry is None:
        out = g.outputs[0] if len(g.outputs) == 1 else None
        unknown = [n.name for n in g.nodes if n.op is OpKind.UNKNOWN]
        if unknown and out is not None and not base.rf[out].known:
            raise NotApplicable(f"an op convscope does not know ({', '.join(unknown[:3])}) lies before the output: "
                                "the classifier head cannot be told past it, so there is nothing safe to cut")
        if len(g.outputs) > 1:
            raise NotApplicable(f"the network has {len(g.outputs)} outputs ({', '.join(g.outputs)}); truncation "
                                "re-attaches one classifier head (global pooling, or flatten -> linear) to an "
                                "earlier layer, and cannot tell which tail each output could lose")
        raise NotApplicable("no classifier head (global pooling, or flatten -> linear) to re-attach: cutting "
                            "the tail would change what the network outputs")
    if not base.flagged():
        raise NotApplicable(f"no layer is unproductive at {_res(base)}")
    end = g.position(entry)
    if len(g.node(entry).inputs) != 1:
        raise NotApplicable(f"the head's first layer '{entry}' has several inputs")
    removable = []
    for p in _cuts(base, _last_kept(base, end), end):
        gone = {n.name for n in g.nodes[p + 1:end]}
        if gone & base.flagged():
            removable.append(p)
    if not removable:
        raise NotApplicable("every unproductive layer is followed by a productive one: there is no tail to cut")
    first = None
    for p in removable:
        cut = g.nodes[p].name
        variant = Editor(g).rewire(entry, [cut]).build(name=base.variant_name("truncate"), prune=True)
        if variant.node(variant.outputs[0]).out.shape != g.node(g.outputs[0]).out.shape:
            continue
        first = first or (p, variant)
        if refusal(base.depth, depth_report(variant, base.options.rules)) is None:
            return [_truncation(base, p, variant, stopped_early=p != removable[0])]
    if first is None:
        raise NotApplicable("cutting the tail would change the network's output shape")
    return [_truncation(base, first[0], first[1], stopped_early=False)]


def _truncation(base: Base, p: int, variant: Graph, *, stopped_early: bool) -> Rewrite:
    g = base.graph
    cut = g.nodes[p].name
    entry = base.head_entry
    assert entry is not None
    removed = [n.name for n in g.nodes if n.name not in variant and n.op is not OpKind.INPUT]
    gone_flagged = [n for n in removed if n in base.flagged()]
    kept_flagged = sorted(base.flagged() - set(removed), key=g.position)
    last = _last_kept(base, g.position(entry))  # the last productive layer before the head
    followed = [n for n in kept_flagged if g.position(n) < last]
    for_depth = [n for n in kept_flagged if g.position(n) > last]
    notes = []

    def listed(names: list[str]) -> str:
        return ", ".join(names[:6]) + (" …" if len(names) > 6 else "")

    if followed:
        notes.append(f"{len(followed)} unproductive layer(s) stay because productive layers follow them: "
                     + listed(followed))
    if stopped_early:
        rules = base.options.rules
        notes.append(f"stopped at '{cut}' to keep at least {rules.min_spatial_layers} spatial layers and "
                     f"{100 * rules.min_rf_coverage:.0f}% receptive-field coverage (seeds/004, seeds/002)"
                     + (f"; {len(for_depth)} unproductive layer(s) stay for that: {listed(for_depth)}"
                        if for_depth else ""))
    elif for_depth:
        notes.append(f"{len(for_depth)} unproductive layer(s) stay because no cut point lies before them (a "
                     f"later layer reads an earlier one): {listed(for_depth)}")
    c_old, c_new = g.node(g.node(entry).inputs[0]).out.channels, variant.node(cut).out.channels
    explanation = (
        f"Re-attach the head ('{entry}') to '{cut}' and drop the {plural(len(removed), 'layer')} after it, "
        f"{len(gone_flagged)} of them unproductive at {_res(base)}: their inputs already see the whole image "
        f"(rf_min >= input size) or their maps are no larger than their kernels, so they add cost without "
        f"context (seeds/002; border layer {base.prod.border_layer or 'none'})."
        + (f" The head now reads {c_new} channels instead of {c_old}." if c_new != c_old else ""))
    after = layer_params(variant)
    grown = {n: ps for n, ps in reshaped_weights(layer_params(base.analysis), after).items()
             if variant.position(n) > variant.position(cut)}
    if grown:
        flat = any(n.op is OpKind.FLATTEN and variant.position(n.name) > variant.position(cut)
                   and math.prod(variant.node(n.inputs[0]).out.spatial or (1,)) > 1 for n in variant.nodes)
        explanation += (" The head's weights change with the map it reads"
                        + (" (a flatten keeps every position)" if flat else "") + ": "
                        + ", ".join(f"'{n}' {old:,} -> {new:,} params" for n, (old, new) in grown.items()) + ".")
        if sum(after.values()) > base.analysis.totals.params:
            notes.append("the cut saves MACs but adds parameters: the classifier behind the flatten grows with the "
                         "larger map; a global pooling before it would keep it small")
    return Rewrite("truncate", "cut the unproductive tail", explanation, variant, (entry,), tuple(notes))


# -- remove or move a downsampling step --------------------------------------------------------------
def _stride_one(node: Node, ed: Editor) -> bool:
    """Take the stride out of one layer (a pool with kernel = stride and no padding is dropped).
    False when the layer cannot keep its output size at stride 1."""
    a = node.attrs
    if node.op in (OpKind.MAXPOOL, OpKind.AVGPOOL):
        assert isinstance(a, O.PoolAttrs)
        if a.kernel == a.stride and a.padding == ((0, 0), (0, 0)) and not a.ceil_mode:
            ed.drop(node.name)
            return True
        pad = same_size_padding(a.kernel, a.dilation)
        if pad is None or a.dilation != (1, 1):
            return False
        ed.set_attrs(node.name, dataclasses.replace(a, stride=(1, 1), padding=pad, ceil_mode=False))  # type: ignore[arg-type]
        return True
    assert isinstance(a, O.ConvAttrs)
    ed.set_attrs(node.name, dataclasses.replace(a, stride=(1, 1)))
    return True


def _downsampling_groups(base: Base) -> list[list[Node]]:
    """Strided convolutions and pools of the trunk that make one downsampling step: the same size
    change on parallel paths (a block's strided conv and its 1x1 shortcut), which must lose their stride
    together.  A layer behind another one of the group (a later step that happens to change sizes
    the same way, after an upsampling) starts a group of its own."""
    groups: list[tuple[tuple[tuple[int, ...], tuple[int, ...]], list[Node], set[str]]] = []
    for n in base.trunk():
        if n.op in (OpKind.CONV, OpKind.MAXPOOL, OpKind.AVGPOOL) and max(n.attrs.stride) > 1:  # type: ignore[union-attr]
            key = (base.graph.node(n.inputs[0]).out.spatial, n.out.spatial)
            behind = base.graph.ancestors(n.name)
            for k, members, _ in groups:
                if k == key and not any(m.name in behind for m in members):
                    members.append(n)
                    break
            else:
                groups.append((key, [n], behind))
    return [members for _, members, _ in groups]


def _best(base: Base, candidates: list[tuple[Graph, list[Node]]]) -> tuple[Graph, list[Node], tuple[int, int]]:
    before = unproductive_score(base.graph)
    scored = [(unproductive_score(v), v, nodes) for v, nodes in candidates]
    better = [s for s in scored if s[0][0] < before[0]]
    if not better:
        raise NotApplicable("no single change of a downsampling step makes fewer layers unproductive")
    score, graph, nodes = min(better, key=lambda s: s[0])
    return graph, nodes, score


def _need_unproductive(base: Base) -> int:
    n = len(base.flagged_weighted())
    if n == 0:
        raise NotApplicable(f"no weighted layer is unproductive at {_res(base)}: slowing the receptive field's "
                            "growth would only add cost")
    return n


@rewrite("remove-downsampling", "remove a downsampling step")
def remove_downsampling(base: Base) -> list[Rewrite]:
    before = _need_unproductive(base)
    candidates = []
    for group in _downsampling_groups(base):
        ed = Editor(base.graph)
        if not all(_stride_one(n, ed) for n in group):
            continue
        try:
            candidates.append((ed.build(name=base.variant_name("remove-downsampling")), group))
        except GraphError:
            continue
    if not candidates:
        raise NotApplicable("no strided convolution or pool can lose its stride and keep the network valid")
    variant, group, (after, _) = _best(base, candidates)
    sh, sw = group[0].attrs.stride  # type: ignore[union-attr]
    s = max(sh, sw)
    names = ", ".join(f"'{n.name}'" for n in group)
    size_in = base.graph.node(group[0].inputs[0]).out.spatial
    ratio = (size_in[0] * size_in[1]) / (group[0].out.spatial[0] * group[0].out.spatial[1])
    more = f"{ratio:.0f}x" if ratio == int(ratio) else f"{ratio:.1f}x"
    explanation = (
        f"Take the stride {s} out of {names} (the step {size_in[0]}x{size_in[1]} -> {group[0].out.spatial[0]}x"
        f"{group[0].out.spatial[1]}): the receptive field grows {s}x slower after it, so {after} instead of "
        f"{before} weighted layers are unproductive at {_res(base)}; every later layer runs on {more} the "
        "positions (seeds/002: removing or repositioning pooling changes the receptive field's growth, "
        "at the cost of FLOPs).")
    return [Rewrite("remove-downsampling", "remove a downsampling step", explanation, variant,
                    tuple(n.name for n in group))]


def _chain_after(base: Base, pool: Node, users: dict[str, list[str]]) -> list[Node]:
    """The convolution (and its BatchNorm/activation) that directly follows ``pool`` in a chain."""
    chain: list[Node] = []
    cur = pool
    seen_conv = False
    while len(users[cur.name]) == 1:
        nxt = base.graph.node(users[cur.name][0])
        if nxt.inputs != (cur.name,) or nxt.name in base.global_names or nxt.name == base.head_entry:
            break
        is_conv = nxt.op is OpKind.CONV and nxt.attrs.stride == (1, 1)  # type: ignore[union-attr]
        if is_conv and not seen_conv:
            seen_conv = True
        elif nxt.op not in POINTWISE or not seen_conv:
            break
        chain.append(nxt)
        cur = nxt
    return chain if seen_conv else []


@rewrite("move-downsampling", "move a pooling layer one convolution later")
def move_downsampling(base: Base) -> list[Rewrite]:
    before = _need_unproductive(base)
    users = base.graph.consumers()
    candidates = []
    for n in base.trunk():
        if n.op not in (OpKind.MAXPOOL, OpKind.AVGPOOL) or max(n.attrs.stride) == 1:  # type: ignore[union-attr]
            continue
        chain = _chain_after(base, n, users)
        if not chain:
            continue
        ed = Editor(base.graph).drop(n.name)
        ed.insert_after(chain[-1].name, [NewNode(n.name, n.op, n.attrs, (chain[-1].name,))])
        try:
            candidates.append((ed.build(name=base.variant_name("move-downsampling")), [n, chain[0]]))
        except GraphError:
            continue
    if not candidates:
        raise NotApplicable("no pooling layer is directly followed by a convolution it could move past")
    variant, (pool, conv), (after, _) = _best(base, candidates)
    explanation = (
        f"Move '{pool.name}' after '{conv.name}': that convolution now sees the finer map, so the receptive "
        f"field grows more slowly and {after} instead of {before} weighted layers are unproductive at "
        f"{_res(base)}; '{conv.name}' costs more MACs (seeds/002: repositioning pooling layers).")
    return [Rewrite("move-downsampling", "move a pooling layer one convolution later", explanation, variant,
                    (pool.name, conv.name))]


# -- max-pooling -> strided convolution --------------------------------------------------------------
def _maxpools(base: Base) -> list[Node]:
    pools = [n for n in base.trunk() if n.op is OpKind.MAXPOOL and max(n.attrs.stride) > 1]  # type: ignore[union-attr]
    if not pools:
        raise NotApplicable("no strided max-pooling layer")
    return pools


@rewrite("maxpool-to-conv", "max-pool -> learned strided convolution")
def maxpool_to_conv(base: Base) -> list[Rewrite]:
    ed = Editor(base.graph)
    done = []
    for n in _maxpools(base):
        a = n.attrs
        assert isinstance(a, O.PoolAttrs)
        if a.ceil_mode or a.dilation != (1, 1):
            continue
        c = base.graph.node(n.inputs[0]).out.channels or 0
        conv = O.ConvAttrs(out_channels=c, kernel=a.kernel, stride=a.stride, padding=a.padding)
        ed.replace(n.name, [NewNode(n.name, OpKind.CONV, conv, n.inputs)])
        done.append(n.name)
    if not done:
        raise NotApplicable("every max-pool uses ceil_mode or dilation, which a convolution does not have")
    variant = ed.build(name=base.variant_name("maxpool-to-conv"))
    explanation = (
        f"Replace {len(done)} max-pooling layer(s) by a convolution with the same kernel, stride and padding "
        "(C -> C channels), as All-CNN does: the network learns how to downsample instead of keeping the "
        "maximum (seeds/003: a strided convolution instead of pooling). Adds parameters and MACs.")
    return [Rewrite("maxpool-to-conv", "max-pool -> learned strided convolution", explanation, variant,
                    tuple(done))]


@rewrite("maxpool-into-stride", "max-pool -> stride of the next convolution")
def maxpool_into_stride(base: Base) -> list[Rewrite]:
    users = base.graph.consumers()
    ed = Editor(base.graph)
    done: list[str] = []
    why: list[str] = []
    for n in _maxpools(base):
        a = n.attrs
        assert isinstance(a, O.PoolAttrs)
        chain = _chain_after(base, n, users)
        size = base.graph.node(n.inputs[0]).out.spatial
        if len(users[n.name]) > 1:
            why.append(f"'{n.name}' feeds {', '.join(repr(u) for u in users[n.name])} (a shortcut would lose it)")
            continue
        if (not chain or a.kernel != a.stride or a.padding != ((0, 0), (0, 0)) or a.ceil_mode
                or size[0] % a.stride[0] or size[1] % a.stride[1]):
            continue
        conv = chain[0]
        ca = conv.attrs
        assert isinstance(ca, O.ConvAttrs)
        if ca.padding != same_size_padding(ca.kernel, ca.dilation):
            continue  # only "same" convolutions: then stride s gives the pool's output size exactly
        ed.drop(n.name)
        ed.set_attrs(conv.name, dataclasses.replace(ca, stride=a.stride))
        done += [n.name, conv.name]
    if not done:
        raise NotApplicable("no max-pool (kernel = stride) is directly followed by a stride-1 'same' convolution"
                            + (f" that alone reads it: {'; '.join(why[:3])}" if why else ""))
    variant = ed.build(name=base.variant_name("maxpool-into-stride"))
    pairs = ", ".join(f"'{done[i]}' -> '{done[i + 1]}'" for i in range(0, len(done), 2))
    explanation = (
        f"Drop each max-pool and give its stride to the convolution after it ({pairs}): that convolution "
        "computes only the positions the pool would have kept, so its MACs stay the same while the pool's work "
        "and its full-size output disappear, and the receptive field grows more slowly (the convolution's kernel "
        "steps over the finer map) (seeds/003: \"simply use conv with stride instead of pooling\").")
    return [Rewrite("maxpool-into-stride", "max-pool -> stride of the next convolution", explanation, variant,
                    tuple(done))]


# -- input resolution --------------------------------------------------------------------------------
def _span(lo: int, hi: float | None) -> str:
    return f"{lo}–{hi} px" if hi is not None else f"{lo} px and up (no upper bound is known)"


@rewrite("resolution", "change the input resolution")
def resolution(base: Base) -> list[Rewrite]:
    c, h0, w0 = base.graph.input_shape
    along = _resolution_axes(base.graph)  # both axes, or a 1xL signal's length
    if len(along) == 2 and h0 != w0:
        raise NotApplicable(f"the input {h0}x{w0} is not square (the feasible range is for square inputs)")
    h = base.graph.input_shape[1 + along[0]]  # the side the range is of
    shown = (lambda r: f"{r}x{r}") if len(along) == 2 else (lambda r: "x".join(map(str, shape_at(base.graph, r)[1:])))
    lo, hi = base.analysis.feasible_resolution
    if lo is None:
        raise NotApplicable("no input resolution makes every layer productive")
    top = range_top = math.floor(hi) if hi is not None else None
    last = _last_spatial(base.graph, base.rf)  # what the last spatial layer sees of a square input on
    seen = last.rf_max_finite if last is not None else None  # both axes: its narrower one
    if seen is not None:
        seen = tuple(seen[a] for a in along)
    narrow = None  # the narrower axis's rf_max, when it sees less than the range's top (a 1x2 dilation)
    if top is not None and seen is not None and None not in seen and math.floor(min(seen)) < top:  # type: ignore[type-var]
        narrow = math.floor(min(seen))  # type: ignore[type-var]
        top = max(lo, narrow)  # aim inside the range, at what both axes see where the range allows it
    if top is not None and top < lo:
        raise NotApplicable(f"no resolution keeps every layer productive (>= {lo} px) while the last layer still "
                            f"sees the whole image (<= {top} px)")
    if h < lo:
        target, why = lo, (f"the smallest resolution at which no convolution is unproductive (now {h} px: "
                           f"{len(base.flagged_weighted())} unproductive weighted layers)")
        if narrow is not None and narrow < lo:
            why += f"; on its narrower axis the last layer then sees {narrow} px of the {lo}"
    elif top is not None and h > top >= lo and 2 * top < h:
        raise NotApplicable(f"the last spatial layer sees only {top} px of the {h} px input; shrinking the input "
                            f"that far would discard most of its detail: the network is too shallow for {h} px "
                            "(more depth or downsampling would let it see the whole image)")
    elif top is not None and h > top >= lo:
        target, why = top, (f"the last spatial layer's rf_max (on its narrower axis); above it no output sees the "
                            f"whole image, and at it every layer stays productive (>= {lo} px)")
    else:
        raise NotApplicable(f"{h} px is already within the feasible range {_span(lo, range_top)}")
    try:
        variant = rebuild(base.graph, input_shape=shape_at(base.graph, target), name=base.variant_name("resolution"))
    except GraphError as exc:
        # The shapes do not work out at exactly that size (a U-Net's concat of an upsampled map with a
        # skip needs a multiple of its total stride): the nearest size inside the range that does,
        # moving into the range (down from its top, up from its bottom).
        steps = range(target - 1, lo - 1, -1) if target == top else range(target + 1, (top or target + 256) + 1)
        for r in list(steps)[:256]:
            try:
                variant = rebuild(base.graph, input_shape=shape_at(base.graph, r), name=base.variant_name("resolution"))
            except GraphError:
                continue
            why += f" — {target} px itself gives shapes that do not fit ({exc.detail}); {r} px is the nearest that does"
            target = r
            break
        else:
            captured = base.graph.meta_dict().get("frontend") in ("torch", "onnx")
            where = (f"the captured graph holds sizes fixed at {h} px ({exc.detail}), so analyse the model itself "
                     f"with --input {c},{','.join(map(str, shape_at(base.graph, target)[1:]))}") if captured else \
                f"no size in {_span(lo, top)} gives shapes that fit ({target} px: {exc.detail})"
            raise NotApplicable(f"feed {shown(target)} ({why}); {where}") from None
    grown = reshaped_weights(layer_params(base.analysis), layer_params(variant))
    if grown:
        names = ", ".join(f"'{n}' ({old:,} -> {new:,} params)" for n, (old, new) in grown.items())
        layers = (f"The layers stay as they are except {names}: {'it reads' if len(grown) == 1 else 'they read'} "
                  "a map whose size follows the input (a flatten before a linear layer), so its weights change "
                  "with the data")
    else:
        layers = "The network's layers stay as they are; only the data changes"
    explanation = (f"Feed {shown(target)} instead of {h0}x{w0}: {why}. Feasible range: {_span(lo, range_top)}. "
                   f"{layers} (seeds/002, seeds/003).")
    return [Rewrite("resolution", "change the input resolution", explanation, variant,
                    (base.graph.inputs[0].name,))]  # an output map that changes with it: noted by _evaluate


"""IR peepholes shared by the PyTorch and ONNX front ends (imports neither): spelled-out forms of
ops the IR has a name for become that op, so an exported model reads like its original.

* channel shuffle written as reshape (g, C/g, H, W) -> permute (1, 0, 2, 3) -> reshape (C, H, W)
  -> ``channel_shuffle(g)`` (which, unlike fixed reshapes, works at any input resolution);
* pixel shuffle and unshuffle written as reshape -> permute -> reshape (as PyTorch exports
  ``pixel_unshuffle``, and as depth-to-space / space-to-depth are written by hand, in either channel
  order) -> ``pixel_shuffle(r)`` / ``pixel_unshuffle(r)``;
* ``x * sigmoid(x)`` -> ``swish`` (SiLU as ONNX exports it);
* ``x * 0.5 * (1 + erf(x / sqrt 2))`` -> ``gelu`` (GELU as older ONNX opsets export it);
* ``relu6(x + 3) / 6`` (or ``clamp(x + 3, 0, 6) / 6``) -> ``hsigmoid``, and ``x * relu6(x + 3) / 6``,
  ``x * hsigmoid(x)`` -> ``hswish`` (MobileNetV3's activations as most code writes them out).

A pattern folds only when its inner nodes feed nothing else; the folded node keeps the name of
the pattern's last node.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from convscope.analyses.cost import node_cost
from convscope.ir import ops as O
from convscope.ir.graph import Graph, GraphBuilder, Node, Shares
from convscope.ir.ops import OpKind

__all__ = ["fold"]

Replacement = tuple[OpKind, O.Attrs, tuple[str, ...], tuple[str, ...]]  # op, attrs, inputs, dropped


def _only_user(graph: Graph, users: dict[str, list[str]], name: str, user: str) -> bool:
    return users[name] == [user] and name not in graph.outputs


def _regrouped(graph: Graph, users: dict[str, list[str]], n: Node,
               rank: int) -> tuple[Node, Node, O.PermuteAttrs] | None:
    """n = reshape(permute(reshape(x))) to an image, the permutation over ``rank`` axes, the inner
    nodes feeding nothing else: (x, the first reshape, the permutation)."""
    if n.op is not OpKind.RESHAPE or len(n.out.shape) != 3:
        return None
    p = graph.node(n.inputs[0])
    if not isinstance(p.attrs, O.PermuteAttrs) or len(p.attrs.perm) != rank \
            or not _only_user(graph, users, p.name, n.name):
        return None
    r = graph.node(p.inputs[0])
    if r.op is not OpKind.RESHAPE or not _only_user(graph, users, r.name, p.name):
        return None
    x = graph.node(r.inputs[0])
    return (x, r, p.attrs) if x.out.is_image else None


def _shuffle(graph: Graph, users: dict[str, list[str]], n: Node) -> Replacement | None:
    found = _regrouped(graph, users, n, 4)
    if found is None or found[2].perm != (1, 0, 2, 3):
        return None
    x, r, _ = found
    g, cg, h, w = r.out.shape if len(r.out.shape) == 4 else (0, 0, 0, 0)
    if x.out.shape != n.out.shape or (g * cg, h, w) != x.out.shape:
        return None
    return OpKind.CHANNEL_SHUFFLE, O.ShuffleAttrs(g), (x.name,), (r.name, n.inputs[0])


# (first reshape's shape as a function of (C, H, W, r) of the input, IR permutation, folded op)
_PIXEL = (
    (lambda c, h, w, r: (c, h // r, r, w // r, r), (0, 2, 4, 1, 3), OpKind.PIXEL_UNSHUFFLE),  # CRD
    (lambda c, h, w, r: (c, h // r, r, w // r, r), (2, 4, 0, 1, 3), OpKind.PIXEL_UNSHUFFLE),  # DCR
    (lambda c, h, w, r: (c // (r * r), r, r, h, w), (0, 3, 1, 4, 2), OpKind.PIXEL_SHUFFLE),  # CRD
    (lambda c, h, w, r: (r, r, c // (r * r), h, w), (2, 3, 0, 4, 1), OpKind.PIXEL_SHUFFLE),  # DCR
)


def _pixel_shuffle(graph: Graph, users: dict[str, list[str]], n: Node) -> Replacement | None:
    found = _regrouped(graph, users, n, 5)
    if found is None:
        return None
    x, r, permute = found
    c, h, w = x.out.shape
    for split, perm, op in _PIXEL:
        if permute.perm != perm:
            continue
        for f in {r.out.shape[k] for k in (0, 1, 2, 4)} - {0, 1}:
            up = op is OpKind.PIXEL_SHUFFLE
            if (c % (f * f) if up else h % f or w % f) or split(c, h, w, f) != r.out.shape:
                continue
            if n.out.shape == ((c // (f * f), h * f, w * f) if up else (c * f * f, h // f, w // f)):
                return op, O.FactorAttrs(f), (x.name,), (r.name, n.inputs[0])
    return None


def _self_gated(graph: Graph, users: dict[str, list[str]], n: Node, gate: str, act: str) -> Replacement | None:
    """n = x * gate(x), the gate read by n alone -> act(x)."""
    if n.op is not OpKind.MUL or len(n.inputs) != 2:
        return None
    for a, b in (n.inputs, n.inputs[::-1]):
        s = graph.node(b)
        if _is_act(s, gate) and s.inputs == (a,) and _only_user(graph, users, s.name, n.name):
            return OpKind.ACT, O.ActAttrs(act), (a,), (s.name,)
    return None


def _swish(graph: Graph, users: dict[str, list[str]], n: Node) -> Replacement | None:
    return _self_gated(graph, users, n, "sigmoid", "swish")


def _is_act(n: Node, fn: str) -> bool:
    return isinstance(n.attrs, O.ActAttrs) and n.op is OpKind.ACT and n.attrs.fn == fn


def _scale(n: Node) -> float | None:
    return n.attrs.value if isinstance(n.attrs, O.ScaleAttrs) else None


def _const_value(graph: Graph, name: str) -> float | None:
    a = graph.node(name).attrs
    return a.value if isinstance(a, O.ConstAttrs) else None


def _gelu(graph: Graph, users: dict[str, list[str]], n: Node) -> Replacement | None:
    """SCALE(0.5) <- MUL(x, ADD(ERF(SCALE(1/√2)(x)), 1)), either order of the outer scale."""
    half = _scale(n)
    if half is None or abs(half - 0.5) > 1e-6:
        return None
    m = graph.node(n.inputs[0])
    if m.op is not OpKind.MUL or len(m.inputs) != 2 or not _only_user(graph, users, m.name, n.name):
        return None
    for x, other in (m.inputs, m.inputs[::-1]):
        add = graph.node(other)
        if add.op is not OpKind.ADD or len(add.inputs) != 2 or not _only_user(graph, users, add.name, m.name):
            continue
        erf_name = next((i for i in add.inputs if _const_value(graph, i) != 1.0), None)
        one = next((i for i in add.inputs if _const_value(graph, i) == 1.0), None)
        if erf_name is None or one is None:
            continue
        erf = graph.node(erf_name)
        if not _is_act(erf, "erf") or not _only_user(graph, users, erf.name, add.name):
            continue
        sc = graph.node(erf.inputs[0])
        inv = _scale(sc)
        if inv is not None and abs(inv - 1 / math.sqrt(2)) < 1e-4 and sc.inputs == (x,) \
                and _only_user(graph, users, sc.name, erf.name):
            dropped = (sc.name, erf.name, add.name, m.name) + ((one,) if users[one] == [add.name] else ())
            return OpKind.ACT, O.ActAttrs("gelu"), (x,), dropped
    return None


def _relu6_plus_3(graph: Graph, users: dict[str, list[str]], name: str, user: str) -> tuple[str, tuple[str, ...]] | None:
    """``name`` = relu6(x + 3) (or clamp(x + 3, 0, 6)) read only by ``user``: (x, its inner nodes)."""
    r = graph.node(name)
    a = r.attrs
    six = isinstance(a, O.ActAttrs) and (a.fn == "relu6" or (a.fn == "clamp" and a.alpha == 0 and a.beta == 6))
    if r.op is not OpKind.ACT or not six or not _only_user(graph, users, name, user):
        return None
    add = graph.node(r.inputs[0])
    if add.op is not OpKind.ADD or len(add.inputs) != 2 or not _only_user(graph, users, add.name, name):
        return None
    three = next((i for i in add.inputs if _const_value(graph, i) == 3.0), None)
    x = next((i for i in add.inputs if i != three), None)
    if three is None or x is None:
        return None
    return x, (name, add.name) + ((three,) if users[three] == [add.name] else ())


def _sixth(n: Node) -> bool:
    v = _scale(n)
    return v is not None and abs(v - 1 / 6) < 1e-6


def _hard(graph: Graph, users: dict[str, list[str]], n: Node) -> Replacement | None:
    """relu6(x + 3) / 6 -> hsigmoid(x); (x * relu6(x + 3)) / 6 -> hswish(x)."""
    if not _sixth(n):
        return None
    inner = graph.node(n.inputs[0])
    found = _relu6_plus_3(graph, users, inner.name, n.name)
    if found is not None:
        return OpKind.ACT, O.ActAttrs("hsigmoid"), (found[0],), found[1]
    if inner.op is not OpKind.MUL or len(inner.inputs) != 2 or not _only_user(graph, users, inner.name, n.name):
        return None
    for x, other in (inner.inputs, inner.inputs[::-1]):
        found = _relu6_plus_3(graph, users, other, inner.name)
        if found is not None and found[0] == x:
            return OpKind.ACT, O.ActAttrs("hswish"), (x,), (inner.name,) + found[1]
    return None


def _hswish(graph: Graph, users: dict[str, list[str]], n: Node) -> Replacement | None:
    """x * hsigmoid(x) -> hswish(x) (after ``_hard`` made the hsigmoid)."""
    return _self_gated(graph, users, n, "hsigmoid", "hswish")


_PATTERNS: tuple[Callable[[Graph, dict[str, list[str]], Node], Replacement | None], ...] = (
    _shuffle, _pixel_shuffle, _swish, _gelu, _hard, _hswish)


def _dead(graph: Graph) -> set[str]:
    """Nodes no output depends on that hold no weights and do no multiply-accumulates: what a
    capture leaves behind after folding a pattern, or elementwise work that only fed Python control
    flow (``if x.abs().sum() > t``).  A dead convolution stays: the model does compute it."""
    users = {n.name: 0 for n in graph.nodes}
    for n in graph.nodes:
        for i in n.inputs:
            users[i] += 1
    dead: set[str] = set()
    for n in reversed(graph.nodes):
        if n.op in (OpKind.INPUT, OpKind.UNKNOWN) or users[n.name] or n.name in graph.outputs:
            continue
        c = node_cost(graph, n)
        if c.params == 0 and c.macs == 0:
            dead.add(n.name)
            for i in n.inputs:
                users[i] -= 1
    return dead


def fold(graph: Graph) -> Graph:
    """The graph with every pattern folded, again until nothing changes (``x * (relu6(x + 3) / 6)``
    folds to hsigmoid, then to hswish)."""
    for _ in range(4):
        folded = _fold_once(graph)
        if folded is graph:
            return graph
        graph = folded
    return graph


def _fold_once(graph: Graph) -> Graph:
    users = graph.consumers()
    replace: dict[str, Replacement] = {}
    dropped: set[str] = _dead(graph)
    for n in graph.nodes:
        for pattern in _PATTERNS:
            r = pattern(graph, users, n)
            if r is not None and not (set(r[3]) & (dropped | set(replace))):
                replace[n.name] = r
                dropped |= set(r[3])
                break
    if not replace and not dropped:
        return graph
    b = GraphBuilder(graph.name)
    shares = Shares()
    for n in graph.nodes:
        if n.name in dropped:
            continue
        if n.op is OpKind.INPUT:
            b.add_input(n.name, n.out.shape, layout=n.out, source=n.source)
        elif n.name in replace:
            op, attrs, inputs, _ = replace[n.name]
            b.add(n.name, op, attrs, inputs, source=n.source)
        else:
            b.add(n.name, n.op, n.attrs, n.inputs, source=n.source,
                  shares=shares(b, n, n.name, n.op, n.attrs, n.inputs))
    return b.build(outputs=graph.outputs, meta=graph.meta_dict())

"""Independent oracles: the same numbers computed by PyTorch on the built module.

* parameters: ``sum(p.numel())``;
* MACs: ``torch.utils.flop_counter.FlopCounterMode`` ÷ 2;
* receptive field: the support of the input gradient of one central output position, in the
  oracle build (positive weights, linear activations, average pooling; DESIGN.md).  RFs do not
  depend on channel counts, so the oracle runs on a *thinned* copy of the graph (every convolution
  narrowed to the smallest width its groups allow) to stay cheap at the large inputs deep networks
  need.  Layers are batched: sample b of the batch back-propagates from layer b's centre, which is
  exact because samples never mix in eval mode.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from convscope.analyses.receptive_field import receptive_field
from convscope.backends.to_torch import build_module
from convscope.errors import GraphError
from convscope.ir import ops as O
from convscope.ir.graph import Graph, GraphBuilder, Node
from convscope.ir.ops import OpKind
from convscope.ir.transform import rebuild, with_input

__all__ = ["torch_params", "torch_macs", "thin", "gradient_support", "RFCheck"]


def torch_params(graph: Graph) -> int:
    m = build_module(graph)
    return sum(p.numel() for p in m.parameters())


def torch_macs(graph: Graph, batch: int = 1) -> float:
    m = build_module(graph)
    x = torch.zeros(batch, *graph.input_shape)
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        m(x)
    return counter.get_total_flops() / 2


def thin(graph: Graph) -> Graph:
    """Every conv to the same small width c0 (the lcm of the non-depthwise group counts)."""
    c0 = 1
    for n in graph.nodes:
        if n.op in (OpKind.CONV, OpKind.CONV_T):
            cin = graph.node(n.inputs[0]).out.shape[0]
            g = n.attrs.groups  # type: ignore[union-attr]
            if 1 < g < cin or (g == cin and n.attrs.out_channels % cin):  # type: ignore[union-attr]
                c0 = c0 * g // math.gcd(c0, g)

    if c0 > 64:  # many different group counts (RegNet): thinning would widen, not narrow
        return graph

    def edit(node: Node, b: GraphBuilder) -> object:
        a = node.attrs
        if node.op in (OpKind.CONV, OpKind.CONV_T):
            old_in = graph.node(node.inputs[0]).out.shape[0]
            new_in = b.info(node.inputs[0]).shape[0]
            assert isinstance(a, O.ConvAttrs)
            if a.groups == old_in and a.groups > 1 and a.out_channels % old_in == 0:  # depthwise
                mult = a.out_channels // old_in
                return O.ConvAttrs(new_in * mult, a.kernel, a.stride, a.padding, a.dilation, new_in, a.bias,
                                   a.output_padding)
            g = math.gcd(a.groups, math.gcd(new_in, c0))
            return O.ConvAttrs(c0, a.kernel, a.stride, a.padding, a.dilation, g, a.bias, a.output_padding)
        if node.op is OpKind.GROUPNORM:
            assert isinstance(a, O.NormAttrs)
            c = b.info(node.inputs[0]).channels or 1
            return O.NormAttrs(a.affine, a.axis, math.gcd(a.groups, c), a.eps)
        return None

    try:
        return rebuild(graph, edit)
    except GraphError:
        return graph  # the structure does not allow thinning (fixed slices…): use the original


@dataclass(frozen=True)
class RFCheck:
    layer: str
    expected: tuple[float, float]  # rf_max per axis (inf = global)
    measured: tuple[int, int] | None  # gradient support width per axis; None = not reachable
    size: int  # input side used

    @property
    def reachable(self) -> bool:
        """The measurement can tell: every finite rf_max fits strictly inside the input used."""
        return self.measured is not None and all(math.isinf(e) or e < self.size for e in self.expected)

    @property
    def bound(self) -> bool:
        """rf_max is at least the support width (an upper bound)."""
        if self.measured is None:
            return False
        return all(m <= e for e, m in zip(self.expected, self.measured))

    @property
    def ok(self) -> bool:
        """Finite rf_max equals the support width; an infinite one covers the whole input."""
        if self.measured is None:
            return False
        return all((m == self.size) if math.isinf(e) else (m == e) for e, m in zip(self.expected, self.measured))


OFFSETS = 12  # consecutive positions probed after resampling: every phase of periods 2, 3, 4, 6 and 12


def ragged(graph: Graph) -> bool:
    """Positions differ only after resampling (or adaptive pooling, bins of unequal size); otherwise
    the centre is every position's twin and one probe suffices."""
    return any(n.op in (OpKind.CONV_T, OpKind.UPSAMPLE, OpKind.ADAPTIVE_AVGPOOL, OpKind.ADAPTIVE_MAXPOOL,
                        OpKind.PIXEL_SHUFFLE) for n in graph.nodes)


def _support(grad: torch.Tensor) -> tuple[tuple[int, int], tuple[int, int]]:
    g = grad.abs()
    rows = torch.nonzero(g.sum(dim=(0, 2)) > 0).flatten()
    cols = torch.nonzero(g.sum(dim=(0, 1)) > 0).flatten()
    return (int(rows.min()), int(rows.max())), (int(cols.min()), int(cols.max()))


def gradient_support(graph: Graph, layers: list[str], *, chunk: int = 16, max_side: int = 2400,
                     narrow: int = 64) -> list[RFCheck]:
    """Measure the gradient support of central outputs of each layer (see the module docstring).

    Each axis is measured on its own, with the other axis only ``narrow`` pixels wide: every op is
    separable per axis and all weights are positive, so which rows carry gradient does not depend on
    how wide the map is, as long as it is wide enough for every layer to exist."""
    g0 = thin(graph)
    rf = receptive_field(g0).as_dict()
    c = g0.input_shape[0]
    after_adaptive: set[str] = set()
    for n in g0.nodes:
        if n.op in (OpKind.ADAPTIVE_AVGPOOL, OpKind.ADAPTIVE_MAXPOOL) or any(i in after_adaptive for i in n.inputs):
            after_adaptive.add(n.name)
    adaptive = bool(after_adaptive)
    plans: dict[int, list[str]] = {}
    for name in layers:
        r = rf[name]
        finite = [v for v in (r.rf_max_finite or ()) if v is not None]
        jump = max((float(v) for v in (r.jump or ()) if v is not None), default=1.0)
        need = max(finite, default=8)
        side = int(math.ceil((float(need) + 4 * jump + 16) / 32.0) * 32)
        if name in after_adaptive:  # bins depend on the input size: measure at the own resolution
            side = g0.input_shape[1]
        plans.setdefault(min(side, max_side), []).append(name)
    offsets = OFFSETS if ragged(g0) else 1
    out: list[RFCheck] = []
    for side, names in sorted(plans.items()):
        widths: dict[str, list[int | None]] = {n: [None, None] for n in names}
        expected: dict[str, list[float]] = {n: list(_expected(rf, n)) for n in names}
        for axis in (0, 1):
            fitted = _fit(g0, c, side, min(narrow, side), axis)
            if fitted is None:
                continue
            g, shape = fitted
            if adaptive:  # adaptive pools change their bins with the input size
                grf = receptive_field(g).as_dict()
                for n in names:
                    expected[n][axis] = _expected(grf, n)[axis]
            module = build_module(g, oracle=True, dtype=torch.float64)
            for i in range(0, len(names), chunk):
                part = names[i:i + chunk]
                for name, width in zip(part, _measure(module, shape, part, axis, offsets)):
                    widths[name][axis] = width
        for name in names:
            w = widths[name]
            measured = (w[0], w[1]) if w[0] is not None and w[1] is not None else None
            exp = (expected[name][0], expected[name][1])
            out.append(RFCheck(name, exp, measured, side))  # type: ignore[arg-type]
    return out


def _fit(g0: Graph, c: int, side: int, narrow: int, axis: int) -> tuple[Graph, tuple[int, int, int]] | None:
    """The graph at the first input a little larger than side × narrow (per ``axis``) at which every
    layer exists: a pixel unshuffle needs sizes divisible by its factor, AlexNet's stride-4 stem and
    three pools more than 64 pixels."""
    narrows = list(range(narrow, narrow + 9)) + [n for n in (64, 72, 96, 128, 192, 256) if n > narrow + 8]
    for more_side in range(25):
        for b in narrows:
            a = max(side, b) + more_side
            shape = (c, a, b) if axis == 0 else (c, b, a)
            try:
                return with_input(g0, shape), shape
            except GraphError:
                continue
    return None


def _measure(module: torch.nn.Module, shape: tuple[int, int, int], part: list[str], axis: int,
             offsets: int) -> list[int | None]:
    """Support width along ``axis`` for each layer in ``part`` (None if it touched the border)."""
    side = shape[1 + axis]
    probes = [(name, off) for name in part for off in range(offsets)]
    x = torch.ones(len(probes), *shape, dtype=torch.float64, requires_grad=True)
    _, cap = module.run(x, capture=part, stop_early=True)  # type: ignore[operator]
    loss = x.new_zeros(())
    for b, (name, off) in enumerate(probes):
        t = cap[name]
        # Both coordinates move: after a transposed conv whose taps all land on one phase, a
        # position on another phase (on either axis) is reached by no input at all.
        h = min(t.shape[2] // 2 + off, t.shape[2] - 1)
        w = min(t.shape[3] // 2 + off, t.shape[3] - 1)
        loss = loss + t[b, :, h, w].sum()  # every channel: after a concat, one would see one branch
    loss.backward()
    assert x.grad is not None
    result: list[int | None] = []
    for k, name in enumerate(part):
        best: int | None = None
        for b in range(offsets * k, offsets * (k + 1)):
            if not bool(x.grad[b].any()):
                continue  # a position no input reaches (a transposed conv's phase without taps)
            rows, cols = _support(x.grad[b])
            lo, hi = rows if axis == 0 else cols
            if lo == 0 and hi == side - 1:
                best = side  # the whole input: a global receptive field, or one too large to tell
            elif lo == 0 or hi == side - 1:
                continue  # this position's receptive field does not fit: not reachable at this size
            best = max(best or 0, hi - lo + 1)
        result.append(best)
    return result


def _expected(rf: dict, name: str) -> tuple[float, float]:  # type: ignore[type-arg]
    m = rf[name].rf_max
    return (float(m[0]), float(m[1]))

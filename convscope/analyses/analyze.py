"""Combine receptive field, border and cost into one :class:`~convscope.results.Analysis`."""

from __future__ import annotations

from dataclasses import replace

from convscope.analyses.border import feasible_range, productivity
from convscope.analyses.cost import DType, cost
from convscope.analyses.receptive_field import RFResult, receptive_field, relayout_lost
from convscope.ir.graph import Graph, GraphBuilder, Node, Shares
from convscope.ir.ops import KERNEL_OPS, OpKind
from convscope.results import Analysis, LayerRow, Totals

__all__ = ["analyze_behind", "analyze_graph", "behind"]


def _op_name(node: Node) -> str:
    if node.op is OpKind.ACT:
        return node.attrs.fn  # type: ignore[union-attr, no-any-return]
    if node.op is OpKind.MEAN and node.attrs.fn != "mean":  # type: ignore[union-attr]
        return {"max": "amax", "min": "amin"}.get(node.attrs.fn, node.attrs.fn)  # type: ignore[union-attr]
    return node.op.value


def analyze_graph(
    graph: Graph,
    *,
    dtype: DType | str = DType.FP32,
    batch: int = 1,
    feasible: tuple[int | None, int | float | None] | None = None,
) -> Analysis:
    """Analyse one graph at its own input shape.  ``feasible`` reuses a range computed before."""
    rf = receptive_field(graph)
    prod = productivity(graph, rf)
    c = cost(graph, dtype=dtype, batch=batch)
    rfs = rf.as_dict()
    reasons = dict(prod.unproductive)
    rows = []
    for node in graph.nodes:
        if node.op is OpKind.INPUT:
            continue
        a = node.attrs
        r = rfs[node.name]
        nc = c.of(node.name)
        kernel_op = node.op in KERNEL_OPS
        rows.append(LayerRow(
            name=node.name,
            op=_op_name(node),
            inputs=node.inputs,
            out_shape=node.out.shape,
            kernel=a.kernel if kernel_op else None,  # type: ignore[union-attr]
            stride=a.stride if kernel_op else None,  # type: ignore[union-attr]
            dilation=a.dilation if kernel_op else None,  # type: ignore[union-attr]
            groups=a.groups if node.op in (OpKind.CONV, OpKind.CONV_T) else None,  # type: ignore[union-attr]
            params=nc.cost.params,
            macs=nc.cost.macs,
            elementwise_ops=nc.cost.elementwise_ops,
            activation_bytes=nc.activation_bytes,
            bytes_read=nc.bytes_read,
            bytes_written=nc.bytes_written,
            rf_min=r.rf_min,
            rf_max=r.rf_max,
            jump=r.jump,
            rf_paths=r.paths,
            unproductive=node.name in reasons,
            reason=reasons.get(node.name),
            source=node.source,
            target=a.target if node.op is OpKind.UNKNOWN else None,  # type: ignore[union-attr]
            shares=node.shares,
        ))
    total = c.total
    un_params = sum(x.params for x in rows if x.unproductive)
    un_macs = sum(x.macs for x in rows if x.unproductive)
    share = (un_params / total.params if total.params else 0.0, un_macs / total.macs if total.macs else 0.0)
    totals = Totals(total.params, total.macs, total.elementwise_ops, c.weight_bytes, c.activation_bytes,
                    c.peak_activation_bytes, c.bytes_moved, graph.unlisted_params)
    unknown = tuple((n.name, n.attrs.target) for n in graph.nodes if n.op is OpKind.UNKNOWN)  # type: ignore[union-attr]
    return Analysis(
        model=graph.name,
        input=graph.input_shape,
        layers=tuple(rows),
        totals=totals,
        border_layer=prod.border_layer,
        unproductive_share=share,
        feasible_resolution=feasible if feasible is not None else feasible_range(graph, rf),
        unknown_ops=unknown,
        dtype=c.dtype.value,
        batch=batch,
        notes=tuple(str(n) for n in graph.meta_dict().get("notes", ())) + _lost_note(graph, rf),
    )


def _lost_note(graph: Graph, rf: RFResult) -> tuple[str, ...]:
    out = []
    lost = relayout_lost(graph, rf)
    if lost:
        n = graph.node(lost[0])
        before = graph.node(n.inputs[0]).out.shape
        out.append(f"receptive fields are unknown from {lost[0]} on{_more(lost)}: it reshapes {list(before)} to "
                   f"{list(n.out.shape)}, moving positions into axes that convscope does not follow (a window "
                   "partition, a patchify by reshape, rows run together into one axis, a length made the height); "
                   "shapes, parameters and MACs are exact")
    rfs = rf.as_dict()
    source = (OpKind.ZERO, OpKind.CONSTANT, OpKind.INPUT)
    const = [n.name for n in graph.nodes if n.op not in source and rfs[n.name].constant
             and not any(rfs[i].constant and graph.node(i).op not in source for i in n.inputs)]
    if const:  # the first layers whose every path from the input runs through a `zero` layer
        outs = [o for o in graph.outputs if rfs[o].constant]
        whole = f"; the output {', '.join(outs)} does not depend on the input at all" if outs else ""
        which = f"{const[0]} computes" if len(const) == 1 else f"{len(const)} layers ({const[0]}, …) compute"
        out.append(f"{which} a constant: every path from the input into them runs through a `zero` layer, so "
                   f"they and what follows only from them have no receptive field (shown as ?, null in JSON)"
                   f"{whole}")
    if rf.misaligned:
        out.append(f"receptive fields are unknown from {rf.misaligned[0]} on{_more(rf.misaligned)}: it merges a "
                   "flipped or transposed map with one that is not, so each output position reads two separate "
                   "regions of the input, which (r, j) pairs cannot express; shapes, parameters and MACs are exact")
    return tuple(out)


def _more(names: list[str] | tuple[str, ...]) -> str:
    return f" (and {len(names) - 1} more)" if len(names) > 1 else ""


def analyze_behind(trunk: Graph, head: Graph, *, dtype: DType | str = DType.FP32, batch: int = 1) -> Analysis:
    """A head's analysis as it runs behind ``trunk`` (a deployment plan's shared backbone): cost and
    rows of the head alone, but receptive fields, flags, border layer and feasible range in the
    pixels of the trunk's input image, so "at the plan's input resolution" holds for heads too."""
    a = analyze_graph(head, dtype=dtype, batch=batch)
    both = behind(trunk, head)
    rf = receptive_field(both)
    mine = frozenset(_PREFIX + n.name for n in head.nodes if n.op is not OpKind.INPUT)
    prod = productivity(both, rf, among=mine)
    rfs = rf.as_dict()
    reasons = dict(prod.unproductive)
    rows = []
    for r in a.layers:
        x, name = rfs[_PREFIX + r.name], _PREFIX + r.name
        rows.append(replace(r, rf_min=x.rf_min, rf_max=x.rf_max, jump=x.jump, rf_paths=x.paths,
                            unproductive=name in reasons, reason=reasons.get(name)))
    total = a.totals
    un = (sum(r.params for r in rows if r.unproductive), sum(r.macs for r in rows if r.unproductive))
    share = (un[0] / total.params if total.params else 0.0, un[1] / total.macs if total.macs else 0.0)
    border = prod.border_layer[len(_PREFIX):] if prod.border_layer else None
    return replace(a, layers=tuple(rows), border_layer=border, unproductive_share=share,
                   feasible_resolution=feasible_range(both, rf))


_PREFIX = "head:"


def behind(trunk: Graph, head: Graph) -> Graph:
    """``trunk`` followed by ``head`` (its input fed by the trunk's output); head layers are named
    ``head:NAME``."""
    b = GraphBuilder(f"{trunk.name}+{head.name}")
    keep = Shares()
    for n in trunk.nodes:
        if n.op is OpKind.INPUT:
            b.add_input(n.name, n.out.shape, layout=n.out, source=n.source)
        else:
            b.add(n.name, n.op, n.attrs, n.inputs, source=n.source, shares=keep(b, n, n.name, n.op, n.attrs, n.inputs))
    rename = {n.name: (trunk.outputs[0] if n.op is OpKind.INPUT else _PREFIX + n.name) for n in head.nodes}
    shared = Shares(rename)
    for n in head.nodes:
        if n.op is OpKind.INPUT:
            continue
        ins = [rename[i] for i in n.inputs]
        b.add(rename[n.name], n.op, n.attrs, ins, source=n.source,
              shares=shared(b, n, rename[n.name], n.op, n.attrs, ins))
    return b.build(outputs=[rename[o] for o in head.outputs])

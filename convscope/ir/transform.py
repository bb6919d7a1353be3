"""Graph -> Graph helpers that rebuild through :class:`GraphBuilder`, so every result is re-validated."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from typing import Any

from convscope.errors import GraphError
from convscope.ir import ops as O
from convscope.ir.graph import SCOPE_AMBIGUOUS, SCOPE_OUTPUTS, UNLISTED_PARAMS, Graph, GraphBuilder, Node, Shares
from convscope.ir.ops import OpKind

__all__ = ["with_input", "rebuild", "subgraph_until"]


def rebuild(
    graph: Graph,
    edit: Callable[[Node, GraphBuilder], Any] | None = None,
    *,
    input_shape: Sequence[int] | None = None,
    name: str | None = None,
) -> Graph:
    """Re-add every node in order.  ``edit(node, builder)`` may return new attrs for the node (or
    ``None`` to keep them); the builder gives it the new input shapes."""
    b = GraphBuilder(name or graph.name)
    shares = Shares()
    for node in graph.nodes:
        if node.op is OpKind.INPUT:
            shape = tuple(input_shape) if input_shape is not None else node.out.shape
            b.add_input(node.name, shape, source=node.source)
            continue
        attrs = edit(node, b) if edit is not None else None
        if attrs is None and node.op is OpKind.RESHAPE:  # follows a new resolution or width
            attrs = _unit_axes_reshape(graph, node, b)
        attrs = attrs if attrs is not None else node.attrs
        b.add(node.name, node.op, attrs, node.inputs, source=node.source,
              shares=shares(b, node, node.name, node.op, attrs, node.inputs))
    return b.build(outputs=graph.outputs, meta=graph.meta_dict())


def _unit_axes_reshape(graph: Graph, node: Node, b: GraphBuilder) -> O.ReshapeAttrs | None:
    """A reshape that only adds or drops size-1 axes (``unsqueeze``, ``squeeze``) follows its input
    to another resolution or width: (H, W) -> (1, H, W) stays that whatever H and W are."""
    old_in, new_in = graph.node(node.inputs[0]).out.shape, b.info(node.inputs[0]).shape
    old_out = node.out.shape
    if new_in == old_in or len(new_in) != len(old_in):
        return None
    keep_in = [i for i, d in enumerate(old_in) if d != 1]
    keep_out = [i for i, d in enumerate(old_out) if d != 1]
    if [old_in[i] for i in keep_in] != [old_out[i] for i in keep_out] \
            or any((d == 1) != (e == 1) for d, e in zip(old_in, new_in)):
        return None
    target = list(old_out)
    for i, o in zip(keep_in, keep_out):
        target[o] = new_in[i]
    return O.ReshapeAttrs(tuple(target))


def signal_relayout(graph: Graph, node: Node) -> bool:
    """A (C, 1, L) map squeezed to a signal's (C, L), or back (a Conv1d model between its layers): the
    positions stay where they are, and the sizes follow as (1, L)."""
    if node.op not in (OpKind.FLATTEN, OpKind.RESHAPE) or not node.inputs:
        return False
    x = graph.node(node.inputs[0]).out
    if {len(x.spatial_axes), len(node.out.spatial_axes)} != {1, 2}:
        return False
    two = x if len(x.spatial_axes) == 2 else node.out
    return two.spatial[0] == 1


def with_input(graph: Graph, shape: Sequence[int]) -> Graph:
    """The same network at another input shape (C, H, W); raises GraphError if a layer no longer fits."""
    if tuple(shape) == graph.input_shape:
        return graph
    return rebuild(graph, input_shape=shape)


def _cut_hint(graph: Graph, layer: str) -> str:
    """What a cut could name instead of ``layer``: the layers whose names contain it or are close to
    it, else the network's top-level scopes (``layer3`` for ``layer3.*``)."""
    names = [n.name for n in graph.nodes if n.op is not OpKind.INPUT]
    prefixes = [".".join(n.split(".")[:k]) for n in names for k in range(1, n.count(".") + 1)]
    every = list(dict.fromkeys(prefixes + names))  # scopes (layer3, layer3.1) as well as layers
    near = sorted((n for n in every if layer in n), key=lambda n: (n.count("."), every.index(n)))
    close = near[:5] or difflib.get_close_matches(layer, every, n=5)
    if close:
        return f"did you mean: {', '.join(close)}?"
    if len(names) <= 12:
        return f"accepted: one of its layers, {', '.join(names)}"
    scopes = list(dict.fromkeys(n.split(".")[0] for n in names))
    shown = ", ".join(scopes[:12]) + (f" … ({len(scopes)} in all)" if len(scopes) > 12 else "")
    return f"accepted: a layer name or a scope (its last layer), such as {shown}"


def subgraph_until(graph: Graph, layer: str, *, name: str | None = None) -> Graph:
    """The part of the network needed to compute ``layer`` (it and its ancestors), with ``layer`` as
    the output: a trunk cut at that layer.  ``layer`` may also name a scope (``layer3`` for the nodes
    ``layer3.*``, like a PyTorch container module): the cut is then at the scope's last node.
    Raises GraphError if nothing has that name.  In an imported ONNX graph, a node's own name in
    the file (``/layer3/layer3.1/conv2/Conv``, what Netron shows) names the layer too."""
    if layer not in graph and graph.meta_dict().get("frontend") == "onnx":
        same = [n.name for n in graph.nodes if n.source == layer]
        if len(same) == 1:
            layer = same[0]
    unclear = {str(k): str(v) for k, v in graph.meta_dict().get(SCOPE_AMBIGUOUS, ())}
    if layer not in graph and layer in unclear:
        raise GraphError(unclear[layer], layer=layer)
    if layer not in graph:
        ends = {str(k): str(v) for k, v in graph.meta_dict().get(SCOPE_OUTPUTS, ())}
        inside = [n.name for n in graph.nodes if n.name.startswith(layer + ".")]
        if ends.get(layer) in graph:
            layer = ends[layer]
        elif inside:
            layer = inside[-1]
    if layer not in graph:
        raise GraphError(f"no layer named '{layer}' to cut at; {_cut_hint(graph, layer)}", layer=layer)
    keep = {layer}
    for node in reversed(graph.nodes):
        if node.name in keep:
            keep.update(node.inputs)
    b = GraphBuilder(name or f"{graph.name}[:{layer}]")
    shares = Shares()
    for node in graph.nodes:
        if node.name not in keep:
            continue
        if node.op is OpKind.INPUT:
            b.add_input(node.name, node.out.shape, source=node.source)
        else:
            b.add(node.name, node.op, node.attrs, node.inputs, source=node.source,
                  shares=shares(b, node, node.name, node.op, node.attrs, node.inputs))
    meta = graph.meta_dict()
    meta.pop(UNLISTED_PARAMS, None)  # a part of the network holds only the parameters of its layers
    if SCOPE_OUTPUTS in meta:
        meta[SCOPE_OUTPUTS] = tuple((k, v) for k, v in meta[SCOPE_OUTPUTS] if v in keep)
    return b.build(outputs=[layer], meta=meta)

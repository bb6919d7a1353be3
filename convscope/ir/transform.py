"""Graph -> Graph helpers that rebuild through :class:`GraphBuilder`, so every result is re-validated."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from convscope.ir.graph import Graph, GraphBuilder, Node
from convscope.ir.ops import OpKind

__all__ = ["with_input", "rebuild"]


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
    for node in graph.nodes:
        if node.op is OpKind.INPUT:
            shape = tuple(input_shape) if input_shape is not None else node.out.shape
            b.add_input(node.name, shape, source=node.source)
            continue
        attrs = edit(node, b) if edit is not None else None
        b.add(node.name, node.op, attrs if attrs is not None else node.attrs, node.inputs, source=node.source)
    return b.build(outputs=graph.outputs, meta=graph.meta_dict())


def with_input(graph: Graph, shape: Sequence[int]) -> Graph:
    """The same network at another input shape (C, H, W); raises GraphError if a layer no longer fits."""
    if tuple(shape) == graph.input_shape:
        return graph
    return rebuild(graph, input_shape=shape)

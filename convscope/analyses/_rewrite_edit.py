"""Editing a Graph by layer name — drop, replace, re-wire, insert after, prune — then rebuilding it
through :class:`~convscope.ir.graph.GraphBuilder`, so every shape is inferred again and a rewrite
that breaks the network fails loudly (GraphError naming the layer) instead of producing a wrong one.

Consumers of a dropped layer read its input instead; consumers of a replaced layer read the last
node of its replacement; consumers of a layer with nodes inserted after it read the last inserted
node.  ``changed`` lists the original layers that were edited or removed, ``added`` the new ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from convscope.ir.graph import Graph, GraphBuilder, Shares
from convscope.ir.ops import Attrs, OpKind

__all__ = ["NewNode", "Editor", "same_size_padding"]


@dataclass(frozen=True, slots=True)
class NewNode:
    """A node to add.  ``inputs`` name original layers (re-wired like any input) or earlier new nodes;
    ``shares`` an earlier node of the new graph whose weights it uses (a module called twice stays so)."""

    name: str
    op: OpKind
    attrs: Attrs
    inputs: tuple[str, ...]
    shares: str | None = None


class Editor:
    def __init__(self, graph: Graph):
        self.graph = graph
        self._drop: set[str] = set()
        self._attrs: dict[str, Attrs] = {}
        self._inputs: dict[str, tuple[str, ...]] = {}
        self._replace: dict[str, list[NewNode]] = {}
        self._after: dict[str, list[NewNode]] = {}
        self._changed: dict[str, None] = {}

    def _touch(self, name: str) -> None:
        self.graph.node(name)  # raises GraphError for a name that is not a layer
        self._changed[name] = None

    def drop(self, name: str) -> Editor:
        self._touch(name)
        self._drop.add(name)
        return self

    def set_attrs(self, name: str, attrs: Attrs) -> Editor:
        self._touch(name)
        self._attrs[name] = attrs
        return self

    def rewire(self, name: str, inputs: Sequence[str]) -> Editor:
        self._touch(name)
        self._inputs[name] = tuple(inputs)
        return self

    def replace(self, name: str, nodes: Sequence[NewNode]) -> Editor:
        self._touch(name)
        self._replace[name] = list(nodes)
        return self

    def insert_after(self, name: str, nodes: Sequence[NewNode]) -> Editor:
        self.graph.node(name)
        self._after.setdefault(name, []).extend(nodes)
        return self

    @property
    def changed(self) -> tuple[str, ...]:
        return tuple(self._changed)

    def build(self, *, name: str | None = None, input_shape: Sequence[int] | None = None,
              prune: bool = False) -> Graph:
        g = self.graph
        alias: dict[str, str] = {}

        def m(x: str) -> str:
            return alias.get(x, x)

        b = GraphBuilder(name or g.name)
        shares = Shares()
        for node in g.nodes:
            if node.op is OpKind.INPUT:
                shape = tuple(input_shape) if input_shape is not None else node.out.shape
                b.add_input(node.name, shape, source=node.source)
                continue
            if node.name in self._drop:
                alias[node.name] = m(node.inputs[0])
            elif node.name in self._replace:
                for nn in self._replace[node.name]:
                    b.add(nn.name, nn.op, nn.attrs, [m(i) for i in nn.inputs], shares=nn.shares)
                alias[node.name] = self._replace[node.name][-1].name
            else:
                inputs = [m(i) for i in self._inputs.get(node.name, node.inputs)]
                attrs = self._attrs.get(node.name, node.attrs)
                b.add(node.name, node.op, attrs, inputs, source=node.source,
                      shares=shares(b, node, node.name, node.op, attrs, inputs))
            extra = self._after.get(node.name)
            if extra:
                for nn in extra:
                    b.add(nn.name, nn.op, nn.attrs, [m(i) for i in nn.inputs], shares=nn.shares)
                alias[node.name] = extra[-1].name
        out = b.build(outputs=[m(o) for o in g.outputs], meta=g.meta_dict())
        return _pruned(out) if prune else out


def _pruned(graph: Graph) -> Graph:
    """Only the nodes the outputs depend on (and the inputs)."""
    keep: set[str] = set(graph.outputs)
    for node in reversed(graph.nodes):
        if node.name in keep:
            keep.update(node.inputs)
    if all(n.name in keep or n.op is OpKind.INPUT for n in graph.nodes):
        return graph
    b = GraphBuilder(graph.name)
    shares = Shares()
    for node in graph.nodes:
        if node.op is OpKind.INPUT:
            b.add_input(node.name, node.out.shape, layout=node.out, source=node.source)
        elif node.name in keep:
            b.add(node.name, node.op, node.attrs, node.inputs, source=node.source,
                  shares=shares(b, node, node.name, node.op, node.attrs, node.inputs))
    return b.build(outputs=graph.outputs, meta=graph.meta_dict())


def same_size_padding(k: tuple[int, int], d: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """Symmetric padding that keeps the size at stride 1, or None for an even effective kernel."""
    ext = (d[0] * (k[0] - 1), d[1] * (k[1] - 1))
    if ext[0] % 2 or ext[1] % 2:
        return None
    return ((ext[0] // 2, ext[0] // 2), (ext[1] // 2, ext[1] // 2))

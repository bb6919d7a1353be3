"""The layer graph: frozen nodes in topological order, built and validated by :class:`GraphBuilder`.

Shapes exclude the batch dimension.  Each node's output carries a :class:`TensorInfo`: its shape and
which axes are the channel and the spatial axes (needed to tell a pointwise op from one that mixes
positions, e.g. a LayerNorm over channels after a permute versus a Linear over a spatial axis).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from convscope.errors import GraphError
from convscope.ir.ops import Attrs, ConvAttrs, InputAttrs, OpKind, attrs_from_dict, attrs_to_dict

__all__ = ["TensorInfo", "Node", "Graph", "GraphBuilder"]


@dataclass(frozen=True, slots=True)
class TensorInfo:
    """Shape without batch, plus layout: the channel axis and the spatial (position) axes."""

    shape: tuple[int, ...]
    channel_axis: int | None = 0
    spatial_axes: tuple[int, ...] = (1, 2)

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def channels(self) -> int | None:
        return None if self.channel_axis is None else self.shape[self.channel_axis]

    @property
    def spatial(self) -> tuple[int, ...]:
        """Sizes of the spatial axes, in order (H, W) for images."""
        return tuple(self.shape[a] for a in self.spatial_axes)

    @property
    def is_image(self) -> bool:
        """A (C, H, W) map with two spatial axes."""
        return len(self.spatial_axes) == 2 and self.channel_axis is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "shape": list(self.shape),
            "channel_axis": self.channel_axis,
            "spatial_axes": list(self.spatial_axes),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TensorInfo":
        return cls(tuple(d["shape"]), d.get("channel_axis"), tuple(d.get("spatial_axes", ())))


def image(c: int, h: int, w: int) -> TensorInfo:
    return TensorInfo((c, h, w), 0, (1, 2))


@dataclass(frozen=True, slots=True)
class Node:
    """One operation.  ``source`` says where it came from (``net.yaml:12:5``, a module path, …).
    ``shares`` names an earlier node whose weights this one uses again (a module called twice): its
    parameters are counted once, at that node, while every call still reads them."""

    name: str
    op: OpKind
    inputs: tuple[str, ...]
    attrs: Attrs
    out: TensorInfo
    source: str | None = None
    shares: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "name": self.name,
            "op": self.op.value,
            "inputs": list(self.inputs),
            "attrs": attrs_to_dict(self.attrs),
            "out": self.out.to_dict(),
        }
        if self.source:
            d["source"] = self.source
        if self.shares:
            d["shares"] = self.shares
        return d


# Graph meta key: parameters of the model that no node holds (a PyTorch module's parameters that
# forward never uses, or that belong to layers the front end could not follow).  The cost totals
# count them, as ``sum(p.numel())`` does; no layer row does.
UNLISTED_PARAMS = "unlisted_params"
# Graph meta key: ((scope, node), ...) for a scope whose output is not its last node (a spec's
# residual item ``layer3.0`` whose add is named ``layer3.add``, as PyTorch's module paths have it).
SCOPE_OUTPUTS = "scope_outputs"
# meta: scopes that name no single output (a module called twice, one that returns several tensors),
# each with why: a trunk cut there is refused with the reason instead of guessed
SCOPE_AMBIGUOUS = "scope_ambiguous"
# meta: the model reads a signal (N, C, L), held as the (C, 1, L) map: captured again as (C, L)
SIGNAL_INPUT = "signal_input"


@dataclass(frozen=True, slots=True)
class Graph:
    """A validated DAG.  ``nodes`` is in topological order; ``outputs`` names the result nodes."""

    name: str
    nodes: tuple[Node, ...]
    outputs: tuple[str, ...]
    meta: tuple[tuple[str, Any], ...] = ()
    _index: dict[str, int] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {n.name: i for i, n in enumerate(self.nodes)})

    # -- queries ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.nodes)

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def node(self, name: str) -> Node:
        try:
            return self.nodes[self._index[name]]
        except KeyError:
            raise GraphError(f"no layer named '{name}'", layer=name) from None

    def position(self, name: str) -> int:
        return self._index[name]

    @property
    def inputs(self) -> tuple[Node, ...]:
        return tuple(n for n in self.nodes if n.op is OpKind.INPUT)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.inputs[0].out.shape

    def consumers(self) -> dict[str, list[str]]:
        """For each node, the nodes that read its output (in topological order)."""
        users: dict[str, list[str]] = {n.name: [] for n in self.nodes}
        for n in self.nodes:
            for i in n.inputs:
                users[i].append(n.name)
        return users

    def ancestors(self, name: str) -> set[str]:
        """The nodes whose output ``name`` depends on (not ``name`` itself)."""
        seen: set[str] = set()
        todo = list(self.node(name).inputs)
        while todo:
            x = todo.pop()
            if x not in seen:
                seen.add(x)
                todo += self.node(x).inputs
        return seen

    def meta_dict(self) -> dict[str, Any]:
        return dict(self.meta)

    @property
    def unlisted_params(self) -> int:
        """Parameters of the model that no node holds (see ``UNLISTED_PARAMS``)."""
        return int(self.meta_dict().get(UNLISTED_PARAMS, 0))

    # -- serialisation ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "nodes": [n.to_dict() for n in self.nodes],
            "outputs": list(self.outputs),
            "meta": dict(self.meta),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Graph":
        """Rebuild (and re-validate: shapes are inferred again, not trusted) from :meth:`to_dict`."""
        raw = list(d["nodes"])
        by_name: dict[str, Mapping[str, Any]] = {}
        for nd in raw:
            if nd["name"] in by_name:
                raise GraphError("duplicate layer name", layer=nd["name"])
            by_name[nd["name"]] = nd
        order = _topological([(nd["name"], list(nd["inputs"]) + ([nd["shares"]] if nd.get("shares") else []))
                              for nd in raw])
        b = GraphBuilder(d["name"])
        for name in order:
            nd = by_name[name]
            op = OpKind(nd["op"])
            attrs = attrs_from_dict(op, nd.get("attrs", {}))
            if op is OpKind.INPUT:
                out = TensorInfo.from_dict(nd["out"]) if "out" in nd else None
                b.add_input(name, attrs.shape, layout=out, source=nd.get("source"))  # type: ignore[union-attr]
            else:
                b.add(name, op, attrs, nd["inputs"], source=nd.get("source"), shares=nd.get("shares"))
        meta = {k: _frozen(v) for k, v in (d.get("meta") or {}).items()}
        return b.build(outputs=d.get("outputs") or None, meta=meta)


def _frozen(value: Any) -> Any:
    """JSON's lists back to the tuples a graph's meta holds (it is compared and hashed)."""
    return tuple(_frozen(v) for v in value) if isinstance(value, list) else value


class Shares:
    """Carries ``Node.shares`` through a rebuild: a renamed owner is followed (``rename``); when the
    owner is gone (a trunk cut before it) or no longer fits (a rewrite changed it), the first node
    that shared it holds the weights itself and the later ones share that node's."""

    def __init__(self, rename: Mapping[str, str] | None = None):
        self.rename = dict(rename or {})
        self.holder: dict[str, str] = {}

    def __call__(self, b: "GraphBuilder", node: Node, name: str, op: OpKind, attrs: Attrs,
                 inputs: Iterable[str]) -> str | None:
        if not node.shares:
            return None
        owner = self.holder.get(node.shares) or self.rename.get(node.shares, node.shares)
        if owner in b and b.share_problem(owner, op, attrs, inputs) is None:
            return owner
        self.holder.setdefault(node.shares, name)
        return None


def _weight_key(attrs: Attrs, x: TensorInfo) -> tuple[Any, ...]:
    """What fixes the shapes of a node's weights: its attributes (a convolution's stride, padding and
    dilation aside) and its input's channels (features, for a tensor without a channel axis)."""
    if isinstance(attrs, ConvAttrs):
        attrs = replace(attrs, stride=(1, 1), padding=((0, 0), (0, 0)), dilation=(1, 1), output_padding=(0, 0))
    return attrs, x.channels if x.channels is not None else x.shape[-1]


def _topological(items: list[tuple[str, list[str]]]) -> list[str]:
    """Kahn's algorithm, stable with respect to the given order; names the nodes of a cycle."""
    names = {n for n, _ in items}
    for n, ins in items:
        for i in ins:
            if i not in names:
                raise GraphError(f"input '{i}' does not name any layer", layer=n)
    pending = {n: set(ins) for n, ins in items}
    done: list[str] = []
    placed: set[str] = set()
    progress = True
    while pending and progress:
        progress = False
        for n, _ in items:
            if n in pending and pending[n] <= placed:
                done.append(n)
                placed.add(n)
                del pending[n]
                progress = True
    if pending:
        cyc = sorted(pending)
        raise GraphError(f"the graph has a cycle through {', '.join(cyc[:6])}", layer=cyc[0])
    return done


class GraphBuilder:
    """Adds nodes one at a time, inferring each output shape at once and raising
    :class:`GraphError` (naming the layer and its source) on the first inconsistency."""

    def __init__(self, name: str):
        self.name = name
        self._nodes: list[Node] = []
        self._by_name: dict[str, Node] = {}

    def __contains__(self, name: str) -> bool:
        return name in self._by_name

    def __len__(self) -> int:
        return len(self._nodes)

    def info(self, name: str) -> TensorInfo:
        return self._by_name[name].out

    def has_scope(self, prefix: str) -> bool:
        """A node named ``prefix`` or ``prefix.…`` exists (an op that added several nodes)."""
        return prefix in self._by_name or any(n.startswith(prefix + ".") for n in self._by_name)

    def get(self, name: str) -> Node:
        return self._by_name[name]

    def node_names(self) -> list[str]:
        return list(self._by_name)

    @property
    def last(self) -> str:
        return self._nodes[-1].name

    def _check_name(self, name: str, source: str | None) -> None:
        if not name or not isinstance(name, str):
            raise GraphError("a layer name must be a non-empty string", layer=str(name), source=source)
        if name in self._by_name:
            first = self._by_name[name].source
            if first and first == source:  # the same line twice: a block called twice under one name
                also = " (an earlier call of the same block made it too: give each call its own name)"
            else:
                also = (f" (first defined at {first})" if first else "") + "; layer names must be unique"
            raise GraphError(f"duplicate layer name{also}", layer=name, source=source)

    def add_input(
        self, name: str, shape: Iterable[int], *, layout: TensorInfo | None = None,
        source: str | None = None,
    ) -> str:
        shape = tuple(int(s) for s in shape)
        self._check_name(name, source)
        if not shape or any(s <= 0 for s in shape):
            raise GraphError(f"input shape must be positive sizes, got {list(shape)}", layer=name,
                             source=source)
        if layout is None:
            layout = image(*shape) if len(shape) == 3 else TensorInfo(shape, 0, tuple(range(1, len(shape))))
        node = Node(name, OpKind.INPUT, (), InputAttrs(shape), layout, source)
        self._append(node)
        return name

    def add(
        self, name: str, op: OpKind, attrs: Attrs, inputs: Iterable[str], *, source: str | None = None,
        shares: str | None = None,
    ) -> str:
        from convscope.ir.shapes import infer  # local: shapes imports this module's types

        inputs = tuple(inputs)
        self._check_name(name, source)
        for i in inputs:
            if i not in self._by_name:
                raise GraphError(f"input '{i}' does not name an earlier layer", layer=name, source=source)
        try:
            out = infer(op, attrs, [self._by_name[i].out for i in inputs])
        except (ValueError, ZeroDivisionError) as exc:
            raise GraphError(str(exc), layer=name, source=source) from None
        if shares is not None:
            why = self.share_problem(shares, op, attrs, inputs)
            if why:
                raise GraphError(f"cannot share the weights of '{shares}': {why}", layer=name, source=source)
            shares = self._by_name[shares].shares or shares  # always the node that holds them
        self._append(Node(name, op, inputs, attrs, out, source, shares))
        return name

    def share_problem(self, owner: str, op: OpKind, attrs: Attrs, inputs: Iterable[str]) -> str | None:
        """Why a new node (op, attrs, inputs) cannot use the weights of ``owner``; None if it can:
        same op, and the same weight shapes (a convolution may differ in stride, padding and
        dilation, and leave out the bias the owner has: ``F.conv2d(x, self.conv.weight)``)."""
        if owner not in self._by_name:
            return "no earlier layer has that name"
        o = self._by_name[owner]
        if o.op is not op:
            return f"it is a {o.op.value}, this is a {op.value}"
        inputs = tuple(inputs)
        if not o.inputs or not inputs:
            return "only layers with an input share weights"
        if getattr(o.attrs, "bias", False) and not getattr(attrs, "bias", True):
            attrs = replace(attrs, bias=True)  # type: ignore[type-var]  # the weight alone, without the bias
        if _weight_key(attrs, self._by_name[inputs[0]].out) != _weight_key(o.attrs, self._by_name[o.inputs[0]].out):
            return "its weights have another shape"
        return None

    def _append(self, node: Node) -> None:
        self._nodes.append(node)
        self._by_name[node.name] = node

    def build(self, outputs: Iterable[str] | None = None, meta: Mapping[str, Any] | None = None) -> Graph:
        if not any(n.op is OpKind.INPUT for n in self._nodes):
            raise GraphError("the network has no input", layer=self.name)
        if len(self._nodes) < 2:
            raise GraphError("the network is empty: it has no layers", layer=self.name)
        outs = tuple(outputs) if outputs else (self._nodes[-1].name,)
        for o in outs:
            if o not in self._by_name:
                raise GraphError("output does not name a layer", layer=o)
        return Graph(self.name, tuple(self._nodes), outs, tuple(sorted((meta or {}).items())))

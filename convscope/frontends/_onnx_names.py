"""Layer names for ONNX nodes: module paths when the model was exported from PyTorch.

* The TorchScript exporter (``torch.onnx.export(..., dynamo=False)``) names nodes by scope:
  ``/layer1/layer1.0/conv1/Conv``; a component either extends the path (``conv1``) or restates
  it (``layer1.0`` after ``layer1``).
* The dynamo exporter (the default of torch 2.13) names nodes ``node_Conv_11`` but stores the
  module path in metadata: ``pkg.torch.onnx.name_scopes = ['', 'layer1', 'layer1.0', 'conv2d']``
  and the classes in ``pkg.torch.onnx.class_hierarchy``.
* Any other model keeps its node names (or ``OpType_k`` for unnamed nodes).

Each node gets a scope (the module path), an op name and whether the scope is a leaf module
(built into ``torch.nn``, or — TorchScript export, which does not say — a scope with no scopes
below it).  ``from_onnx`` names IR nodes ``scope.op`` while lowering and then gives each leaf
scope's output node the bare path (``layer1.0.conv1``), as the PyTorch front end names it.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from convscope.ir.graph import Graph, GraphBuilder, Shares

__all__ = ["NodeName", "node_names", "rename"]

# ONNX op types -> the names the PyTorch front end gives the same functional ops.
_OP_NAMES = {"conv": "conv2d", "convtranspose": "conv_transpose2d", "reducemean": "mean", "concat": "cat", "globalaveragepool": "adaptive_avg_pool2d",
             "matmul": "matmul", "gemm": "linear", "averagepool": "avg_pool2d", "maxpool": "max_pool2d",
             "resize": "interpolate", "transpose": "permute", "softmax": "softmax", "reducesum": "sum",
             "reducemax": "amax", "reducemin": "amin", "depthtospace": "pixel_shuffle",
             "spacetodepth": "pixel_unshuffle", "lrn": "local_response_norm"}
_CONTAINERS = ("torch.nn.modules.container.",)


@dataclass(frozen=True, slots=True)
class NodeName:
    scope: str  # module path ('' at the top)
    op: str  # short op name ('conv', 'add')
    leaf: bool  # the scope is a leaf module (its output node takes the bare path)

    @property
    def base(self) -> str:
        return f"{self.scope}.{self.op}" if self.scope else self.op


def _short(op: str) -> str:
    op = re.sub(r"_\d+$", "", op).lower()
    return _OP_NAMES.get(op, op)


def _scope_path(components: Sequence[str]) -> str:
    """['layer1', 'layer1.0', 'conv1'] -> 'layer1.0.conv1'."""
    path = ""
    prev = ""
    for comp in components:
        if prev and comp.startswith(prev + "."):
            path = path[: len(path) - len(prev)] + comp
        elif path:
            path = f"{path}.{comp}"
        else:
            path = comp
        prev = comp
    return path


def _meta(node: Any) -> dict[str, str]:
    return {p.key: p.value for p in node.metadata_props}


def _literal(text: str | None) -> list[str] | None:
    if not text:
        return None
    try:
        v = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return None
    return [str(x) for x in v] if isinstance(v, (list, tuple)) else None


def node_names(nodes: Sequence[Any], params: Collection[str] = ()) -> tuple[list[NodeName], bool]:
    """Names of every node and whether the model came from PyTorch (``params``: the initializer
    names, which carry the full module path where a TorchScript scope lost part of it)."""
    dynamo = [(_literal(_meta(n).get("pkg.torch.onnx.name_scopes")),
               _literal(_meta(n).get("pkg.torch.onnx.class_hierarchy"))) for n in nodes]
    if any(s for s, _ in dynamo):
        out = []
        for n, (scopes, classes) in zip(nodes, dynamo):
            if not scopes:
                out.append(NodeName("", _short(n.op_type), False))
                continue
            scope = scopes[-2] if len(scopes) >= 2 else ""
            cls = classes[-2] if classes and len(classes) >= 2 else ""
            leaf = cls.startswith("torch.nn.modules.") and not cls.startswith(_CONTAINERS)
            owner = _folded_into(n, cls, params)
            if owner:  # the exporter folded a batch norm into the convolution before it
                out.append(NodeName(owner, "conv2d", True))
                continue
            out.append(NodeName(scope, _short(scopes[-1]), leaf))
        return out, True
    scripted = [n.name.split("/") for n in nodes]
    if any(len(parts) > 2 and parts[0] == "" for parts in scripted):
        raw = []
        for n, parts in zip(nodes, scripted):
            if len(parts) >= 2 and parts[0] == "":
                raw.append((_scope_path(parts[1:-1]), _short(parts[-1])))
            else:
                raw.append(("", _short(n.op_type)))
        raw = _full_scopes(nodes, raw, set(params))
        paths = {s for s, _ in raw if s}
        parents = {s.rsplit(".", k)[0] for s in paths for k in range(1, s.count(".") + 1)}
        return [NodeName(s, op, bool(s) and s not in parents) for s, op in raw], True
    out = []
    counts: dict[str, int] = {}
    owners = [_weight_owner(n, params) for n in nodes]
    for n, owner in zip(nodes, owners):
        if owner:  # a PyTorch export that lost its scopes (a dynamo export converted to an older
            # opset drops the metadata): a layer with weights is named by its parameters' path
            out.append(NodeName(owner, _short(n.op_type), True))
        elif n.name:
            out.append(NodeName("", n.name, False))
        else:
            k = counts.get(n.op_type, 0)
            counts[n.op_type] = k + 1
            out.append(NodeName("", f"{n.op_type}_{k}", False))
    return out, any(owners)


def _weight_owner(node: Any, params: Collection[str]) -> str | None:
    """``body.0`` for a Conv/Gemm/MatMul that reads the initializer ``body.0.weight``."""
    if node.op_type not in ("Conv", "ConvTranspose", "Gemm", "MatMul") or len(node.input) < 2:
        return None
    w = node.input[1]
    return w[: -len(".weight")] if w in params and w.endswith(".weight") and len(w) > len(".weight") else None


def _folded_into(node: Any, cls: str, params: Collection[str]) -> str | None:
    """The module of a convolution whose batch norm the exporter folded into it: the node then
    carries the norm's scope, but still reads the convolution's weight (``conv1.weight``)."""
    if node.op_type not in ("Conv", "ConvTranspose") or "batchnorm" not in cls.lower() or len(node.input) < 2:
        return None
    w = node.input[1]
    if w in params and w.endswith(".weight"):
        return w[: -len(".weight")]
    return None


def _full_scopes(nodes: Sequence[Any], raw: list[tuple[str, str]], params: set[str]) -> list[tuple[str, str]]:
    """A module reached through a ``ModuleDict`` or by iterating a container keeps only its own key
    in a TorchScript scope (``/a/Conv`` for ``heads.a``; the exporter numbers a key it has seen
    before: ``/conv1_1/Conv`` for ``stages.0.1.conv1``); its parameters' names keep the whole path
    (``heads.a.weight``).  A top-level scope component whose parameters all sit under one longer
    path takes that path, for every scope below it."""
    found: dict[str, set[str]] = {}  # scope root -> the module paths it stands for
    for n, (scope, _) in zip(nodes, raw):
        if not scope:
            continue
        root, rest = (scope.split(".", 1) + [""])[:2]
        bare = re.sub(r"_\d+$", "", root)
        for i in n.input:
            if i not in params or "." not in i:
                continue
            owner = i.rsplit(".", 1)[0]
            for r in dict.fromkeys((root, bare)):
                tail = r + ("." + rest if rest else "")
                if owner == tail or owner.endswith("." + tail):
                    found.setdefault(root, set()).add(owner[: len(owner) - len(tail)] + r)
                    break
    full = {r: next(iter(p)) for r, p in found.items() if len(p) == 1}
    out = []
    for scope, op in raw:
        root, dot, rest = scope.partition(".")
        out.append((full.get(root, root) + dot + rest if scope else scope, op))
    return out


def rename(graph: Graph, mapping: Mapping[str, str]) -> Graph:
    """The same graph with nodes renamed (inputs and outputs follow)."""
    if not mapping:
        return graph
    new = {n.name: mapping.get(n.name, n.name) for n in graph.nodes}
    b = GraphBuilder(graph.name)
    shares = Shares(new)
    for n in graph.nodes:
        if not n.inputs and n.op.value == "input":
            b.add_input(new[n.name], n.out.shape, layout=n.out, source=n.source)
        else:
            ins = [new[i] for i in n.inputs]
            b.add(new[n.name], n.op, n.attrs, ins, source=n.source,
                  shares=shares(b, n, new[n.name], n.op, n.attrs, ins))
    return b.build(outputs=[new[o] for o in graph.outputs], meta=graph.meta_dict())

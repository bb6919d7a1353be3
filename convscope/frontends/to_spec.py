"""Graph -> network spec (FORMATS.md §1): the inverse of :mod:`convscope.frontends.from_spec`.

Every node is written explicitly, one spec op per node, with its ``name:`` and, where its input is
not the previous layer, ``from:``.  Reading the text back with ``load_spec`` gives the same nodes
in the same order with the same attributes, so ``analyze`` reproduces every number (only the
``source`` of each node differs: it then points into the written file).

What the spec language cannot say is refused, naming the layer and the op: ops without a spec form
(slice, reshape other than a new axis of size 1, permute, matmul, attention, softmax, mean, pad, unknown), attributes the spec ops
do not take (a dilated pool, BatchNorm without affine parameters, align_corners, a LayerNorm over a
non-channel axis, activations outside the spec's list), several inputs, and names the spec reads
differently (a name starting with ``$`` would be substituted).
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from convscope._registry import registrar
from convscope.errors import InputError, SpecError
from convscope.frontends._spec_ops import same_padding
from convscope.frontends._yaml import load_yaml
from convscope.ir import ops as O
from convscope.ir.graph import Graph, Node
from convscope.ir.ops import OpKind

__all__ = ["SpecWriteError", "graph_to_spec_data", "graph_to_spec_text", "write_spec"]

_INPUT = "input"  # the spec's input is always called "input"


class SpecWriteError(InputError):
    """The graph holds something the spec language cannot express (exit status 2)."""


# -- one small function per op kind: node -> (spec op name, arguments) ------------------------------
Writer = Callable[[Node, Graph], tuple[str, dict[str, Any]]]
_WRITERS: dict[OpKind, Writer] = {}
_writes = registrar(_WRITERS, "spec writer")


def _refuse(node: Node, what: str) -> SpecWriteError:
    return SpecWriteError(f"layer '{node.name}' ({node.op.value}): {what} has no form in the network spec "
                          "(FORMATS.md §1), so this network cannot be written as a spec file")


def _pair(v: tuple[int, int]) -> int | list[int]:
    return v[0] if v[0] == v[1] else [v[0], v[1]]


def _padding(p: tuple[tuple[int, int], tuple[int, int]]) -> int | list[Any]:
    (t, b), (le, r) = p
    if t == b and le == r:
        return t if t == le else [t, le]
    return [[t, b], [le, r]]


def _conv_args(a: O.ConvAttrs, *, transposed: bool = False) -> dict[str, Any]:
    d: dict[str, Any] = {"out": a.out_channels, "k": _pair(a.kernel)}
    if a.stride != (1, 1):
        d["s"] = _pair(a.stride)
    if a.padding != same_padding(a.kernel, a.dilation):  # the spec's default is "same"
        d["p"] = _padding(a.padding)
    if a.dilation != (1, 1):
        d["d"] = _pair(a.dilation)
    if a.groups != 1:
        d["g"] = a.groups
    if a.bias:
        d["bias"] = True
    if a.fixed:
        d["fixed"] = True
    if transposed and a.output_padding != (0, 0):
        d["op"] = _pair(a.output_padding)
    return d


@_writes(OpKind.CONV)
def _conv(node: Node, graph: Graph) -> tuple[str, dict[str, Any]]:
    assert isinstance(node.attrs, O.ConvAttrs)
    return "conv", _conv_args(node.attrs)


@_writes(OpKind.CONV_T)
def _convT(node: Node, graph: Graph) -> tuple[str, dict[str, Any]]:
    assert isinstance(node.attrs, O.ConvAttrs)
    return "convT", _conv_args(node.attrs, transposed=True)


@_writes(OpKind.MAXPOOL, OpKind.AVGPOOL)
def _pool(node: Node, graph: Graph) -> tuple[str, dict[str, Any]]:
    a = node.attrs
    assert isinstance(a, O.PoolAttrs)
    if a.dilation != (1, 1):
        raise _refuse(node, f"a dilated pool (dilation {list(a.dilation)})")
    d: dict[str, Any] = {"k": _pair(a.kernel)}
    if a.stride != a.kernel:
        d["s"] = _pair(a.stride)
    # The spec's default padding: "same" for a stride-1 pool, 0 otherwise.
    default = same_padding(a.kernel, (1, 1)) if a.stride == (1, 1) else ((0, 0), (0, 0))
    if a.padding != default:
        d["p"] = _padding(a.padding)
    if a.ceil_mode:
        d["ceil"] = True
    if node.op is OpKind.AVGPOOL and not a.count_include_pad:
        d["count_include_pad"] = False
    return node.op.value, d


@_writes(OpKind.ADAPTIVE_AVGPOOL, OpKind.ADAPTIVE_MAXPOOL)
def _adaptive(node: Node, graph: Graph) -> tuple[str, dict[str, Any]]:
    return node.op.value, {"size": _pair(node.attrs.size)}  # type: ignore[union-attr]


@_writes(OpKind.GLOBAL_AVGPOOL, OpKind.GLOBAL_MAXPOOL)
def _global(node: Node, graph: Graph) -> tuple[str, dict[str, Any]]:
    return node.op.value, ({"keepdims": True} if node.attrs.keepdims else {})  # type: ignore[union-attr]


@_writes(OpKind.MEAN)
def _mean(node: Node, graph: Graph) -> tuple[str, dict[str, Any]]:
    """``x.mean((2, 3))`` / ``amax`` over the spatial axes of a feature map is global pooling."""
    a = node.attrs
    assert isinstance(a, O.ReduceAttrs)
    x = graph.node(node.inputs[0]).out
    signal = len(x.shape) == 2 and x.channel_axis == 0 and x.spatial_axes == (1,)  # a Conv1d net's (C, L)
    spatial = tuple(sorted(ax % len(x.shape) for ax in a.axes)) == x.spatial_axes if x.is_image or signal else False
    if not spatial or a.fn not in ("mean", "max"):
        raise _refuse(node, f"a {a.fn} over axes {list(a.axes)} of a {list(x.shape)} tensor")
    return ("gap" if a.fn == "mean" else "gmp"), ({"keepdims": True} if a.keepdims else {})


@_writes(OpKind.UPSAMPLE)
def _upsample(node: Node, graph: Graph) -> tuple[str, dict[str, Any]]:
    a = node.attrs
    assert isinstance(a, O.UpsampleAttrs)
    if a.align_corners:
        raise _refuse(node, "align_corners=True")
    d: dict[str, Any] = {"mode": a.mode} if a.mode != "nearest" else {}
    if a.size is not None:
        d["size"] = _pair(a.size)
    else:
        assert a.scale is not None
        d["scale"] = a.scale[0] if a.scale[0] == a.scale[1] else list(a.scale)
    return "upsample", d


def _eps(a: O.NormAttrs) -> dict[str, Any]:
    return {} if a.eps == 1e-5 else {"eps": a.eps}


@_writes(OpKind.BATCHNORM)
def _bn(node: Node, graph: Graph) -> tuple[str, dict[str, Any]]:
    a = node.attrs
    assert isinstance(a, O.NormAttrs)
    if not a.affine:
        raise _refuse(node, "a BatchNorm without affine parameters")
    return "bn", _eps(a)


@_writes(OpKind.LAYERNORM)
def _ln(node: Node, graph: Graph) -> tuple[str, dict[str, Any]]:
    a = node.attrs
    assert isinstance(a, O.NormAttrs)
    x = graph.node(node.inputs[0]).out
    if not a.affine or a.axis != x.channel_axis:
        raise _refuse(node, f"a LayerNorm over axis {a.axis} (the spec's ln normalises the channel axis, "
                            "with affine parameters)")
    return "ln", _eps(a)


@_writes(OpKind.GROUPNORM)
def _gn(node: Node, graph: Graph) -> tuple[str, dict[str, Any]]:
    a = node.attrs
    assert isinstance(a, O.NormAttrs)
    if not a.affine or a.eps != 1e-5:
        raise _refuse(node, f"a GroupNorm with affine={a.affine}, eps={a.eps}")
    return "gn", {"groups": a.groups}


# Activations the spec knows (FORMATS.md §1 and README "Ops"); silu is written as its alias swish.
_SPEC_ACTS = ("relu", "relu6", "hswish", "hsigmoid", "swish", "gelu", "sigmoid", "tanh", "leaky_relu", "elu")


@_writes(OpKind.ACT)
def _act(node: Node, graph: Graph) -> tuple[str, dict[str, Any]]:
    a = node.attrs
    assert isinstance(a, O.ActAttrs)
    if a.fn not in _SPEC_ACTS:
        raise _refuse(node, f"the activation '{a.fn}' (the spec has {', '.join(_SPEC_ACTS)})")
    default = {"leaky_relu": 0.01, "elu": 1.0}.get(a.fn)
    if a.fn in ("leaky_relu", "elu") and a.alpha is not None and a.alpha != default:
        return a.fn, {"alpha": a.alpha}
    return a.fn, {}


@_writes(OpKind.DROPOUT)
def _dropout(node: Node, graph: Graph) -> tuple[str, dict[str, Any]]:
    return "dropout", {"p": node.attrs.p}  # type: ignore[union-attr]


@_writes(OpKind.IDENTITY, OpKind.ZERO, OpKind.ADD, OpKind.MUL)
def _plain(node: Node, graph: Graph) -> tuple[str, dict[str, Any]]:
    return node.op.value, {}


@_writes(OpKind.SCALE)
def _scale(node: Node, graph: Graph) -> tuple[str, dict[str, Any]]:
    return "scale", {"value": node.attrs.value}  # type: ignore[union-attr]


@_writes(OpKind.CONCAT)
def _axis0(node: Node, graph: Graph) -> tuple[str, dict[str, Any]]:
    if node.attrs.axis != 0:  # type: ignore[union-attr]
        raise _refuse(node, f"{node.op.value} over axis {node.attrs.axis}")  # type: ignore[union-attr]
    return node.op.value, {}


@_writes(OpKind.FLATTEN)
def _flatten(node: Node, graph: Graph) -> tuple[str, dict[str, Any]]:
    axis = node.attrs.axis  # type: ignore[union-attr]
    return "flatten", ({"axis": axis} if axis else {})


@_writes(OpKind.RESHAPE)
def _reshape(node: Node, graph: Graph) -> tuple[str, dict[str, Any]]:
    """Only a new axis of size 1 (a signal's (C, L) as its (C, 1, L) map): the spec's ``unsqueeze``."""
    old, new = graph.node(node.inputs[0]).out.shape, node.out.shape
    for axis in range(len(new)):
        if new[axis] == 1 and (*new[:axis], *new[axis + 1:]) == old:
            return "unsqueeze", {"axis": axis}
    raise _refuse(node, f"a reshape of {list(old)} to {list(new)}")


@_writes(OpKind.LINEAR)
def _linear(node: Node, graph: Graph) -> tuple[str, dict[str, Any]]:
    a = node.attrs
    assert isinstance(a, O.LinearAttrs)
    return "linear", {"out": a.out_features} if a.bias else {"out": a.out_features, "bias": False}


@_writes(OpKind.LRN)
def _lrn(node: Node, graph: Graph) -> tuple[str, dict[str, Any]]:
    a = node.attrs
    assert isinstance(a, O.LRNAttrs)
    d: dict[str, Any] = {"size": a.size}
    for key, default in (("alpha", 1e-4), ("beta", 0.75), ("k", 1.0)):
        if getattr(a, key) != default:
            d[key] = getattr(a, key)
    return "lrn", d


@_writes(OpKind.CHANNEL_SHUFFLE)
def _shuffle(node: Node, graph: Graph) -> tuple[str, dict[str, Any]]:
    return "channel_shuffle", {"groups": node.attrs.groups}  # type: ignore[union-attr]


@_writes(OpKind.PIXEL_SHUFFLE, OpKind.PIXEL_UNSHUFFLE)
def _pixel_shuffle(node: Node, graph: Graph) -> tuple[str, dict[str, Any]]:
    return node.op.value, {"factor": node.attrs.factor}  # type: ignore[union-attr]


# -- the file ----------------------------------------------------------------------------------------
def _check_names(graph: Graph) -> dict[str, str]:
    """The spec's input is named "input": map the graph's input name to it, refuse clashes."""
    inputs = graph.inputs
    if len(inputs) != 1:
        raise SpecWriteError(f"{graph.name}: the network has {len(inputs)} inputs; a spec has exactly one")
    rename = {inputs[0].name: _INPUT}
    for n in graph.nodes:
        if n.op is OpKind.INPUT:
            continue
        if n.name == _INPUT:
            raise SpecWriteError(f"layer '{n.name}': the name 'input' is reserved for the spec's input")
        if n.name.startswith("$"):
            raise SpecWriteError(f"layer '{n.name}': a spec name cannot start with '$' (it would be substituted)")
    return rename


def _layer(node: Node, graph: Graph, prev: str, rename: dict[str, str]) -> dict[str, Any]:
    writer = _WRITERS.get(node.op)
    if writer is None and node.op is OpKind.CONSTANT:
        users = [n.name for n in graph.nodes if node.name in n.inputs]
        raise SpecWriteError(f"layer '{users[0] if users else node.name}' computes with a constant tensor (a "
                             "normalisation written in forward, such as (x - mean) / std, or a fixed mask), which "
                             "has no form in the network spec (FORMATS.md §1), so this network cannot be written as "
                             "a spec file; moving the normalisation into the data pipeline lets it be written")
    if writer is None:
        raise _refuse(node, "this op")
    op, args = writer(node, graph)
    args = dict(args)
    args["name"] = node.name
    if node.shares:
        args["shares"] = node.shares
    ins = [rename.get(i, i) for i in node.inputs]
    if node.op in (OpKind.ADD, OpKind.MUL, OpKind.CONCAT):
        if len(ins) < 2:
            raise _refuse(node, f"a {node.op.value} of a single input")
        args["from"] = ins
    elif len(ins) != 1:
        raise _refuse(node, f"{len(ins)} inputs")
    elif ins[0] != prev:
        args["from"] = ins[0]
    return {op: args}


def graph_to_spec_data(graph: Graph, *, description: str | None = None) -> dict[str, Any]:
    """The spec as plain data (``graph_from_spec_data`` reads it back)."""
    rename = _check_names(graph)
    layers = []
    prev = _INPUT
    for node in graph.nodes:
        if node.op is OpKind.INPUT:
            continue
        layers.append(_layer(node, graph, prev, rename))
        prev = node.name
    if len(graph.input_shape) != 3:
        raise SpecWriteError(f"{graph.name}: the input shape {list(graph.input_shape)} is not C, H, W")
    data: dict[str, Any] = {"name": graph.name}
    meta = graph.meta_dict()
    desc = description if description is not None else meta.get("description")
    if desc:
        data["description"] = str(desc)
    data["input"] = list(graph.input_shape)
    if isinstance(meta.get("classes"), int):
        data["classes"] = meta["classes"]
    data["layers"] = layers
    if graph.outputs != (graph.nodes[-1].name,):
        data["outputs"] = [rename.get(o, o) for o in graph.outputs]
    return data


_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-/]*")
_YAML_WORDS = frozenset({"y", "n", "yes", "no", "on", "off", "true", "false", "null"})


@functools.lru_cache(maxsize=4096)
def _plain_ok(v: str) -> bool:
    """Whether ``v`` reads back as the same string without quotes, in a block and in a flow context."""
    if _PLAIN.fullmatch(v):  # the common case (layer names): letters, digits, _ . - /
        return v.lower() not in _YAML_WORDS
    try:  # read back as convscope reads specs (YAML 1.2 numbers: 1e3 is a float there)
        return bool(load_yaml(f"k: {v}", "-") == {"k": v} and load_yaml(f"[{v}]", "-") == [v])
    except SpecError:
        return False


def _scalar(v: Any) -> str:
    """A YAML flow scalar that reads back as the same value (plain when it can be, else quoted)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        text = repr(v)
        if "e" in text and "." not in text.split("e")[0]:  # YAML 1.1 floats need a dot: 1.0e-05
            mant, exp = text.split("e")
            text = f"{mant}.0e{exp}"
        return text
    if isinstance(v, str):
        return v if _plain_ok(v) else json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_scalar(x) for x in v) + "]"
    raise TypeError(f"cannot write {v!r} in a spec")


def _flow(args: dict[str, Any]) -> str:
    return "{" + ", ".join(f"{k}: {_scalar(v)}" for k, v in args.items()) + "}"


def graph_to_spec_text(graph: Graph, *, comment: Iterable[str] = (), description: str | None = None) -> str:
    """The spec as YAML text: one line per layer, ``- op: {args..., name: N[, from: X]}``."""
    data = graph_to_spec_data(graph, description=description)
    lines = [f"# {c}" if c else "#" for c in comment]
    lines.append(f"name: {_scalar(data['name'])}")
    if "description" in data:
        lines.append(f"description: {json.dumps(data['description'])}")
    lines.append(f"input: {_scalar(data['input'])}")
    if "classes" in data:
        lines.append(f"classes: {data['classes']}")
    lines.append("layers:")
    for item in data["layers"]:
        ((op, args),) = item.items()
        lines.append(f"  - {op}: {_flow(args)}")
    if "outputs" in data:
        lines.append(f"outputs: {_scalar(data['outputs'])}")
    return "\n".join(lines) + "\n"


def write_spec(graph: Graph, path: str | os.PathLike[str], *, comment: Iterable[str] = (),
               description: str | None = None) -> Path:
    """Write the spec file; the directory must exist.  Errors name the path."""
    text = graph_to_spec_text(graph, comment=comment, description=description)
    p = Path(path)
    try:
        p.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise InputError(f"{p}: cannot write: {exc.strerror or exc}") from None
    return p

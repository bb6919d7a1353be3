"""ONNX front end: an ``.onnx`` file -> Graph (onnx and its shape inference; no torch, nothing run).

The model must have one image input (N, C, H, W).  ``input_shape`` (C, H, W) overrides its size;
a model whose size is symbolic needs it.  A file that fixes its size is analysed at another one when
asked (to see another resolution), with a note that the ONNX model itself accepts only its own.  Initializers are parameters when they are floating point
and hold more than one value (a conv weight, a layer scale, a position embedding); each counts once,
at its first use (BatchNorm's running statistics are read, not counted, as PyTorch counts them).
Nodes are lowered in order through ``_onnx_ops`` (the same IR handlers as the PyTorch front end),
constants folded with numpy, ``MatMul`` + bias ``Add`` fused into one linear layer, and the usual
spelled-out patterns (SiLU as ``x·sigmoid(x)``, GELU through ``Erf``, channel shuffle through
reshapes) folded back.  An op the table does not know becomes ``unknown`` with the output shape
ONNX shape inference gives it; nothing is guessed.  Layer names: see ``_onnx_names``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper, shape_inference

from convscope.errors import FIXED_INPUT, ConvscopeError, FixedSizes, GraphError, InputError
from convscope.frontends._onnx_lrn import LRNMatch, find_lrn
from convscope.frontends._onnx_names import node_names, rename
from convscope.frontends._onnx_ops import FOLD, OPS, ONode, require_shape
from convscope.frontends._torch_fold import fold
from convscope.frontends._torch_values import ConstVal, Lowering, Opaque, TVal, Unsupported
from convscope.ir.graph import Graph
from convscope.ir import ops as O
from convscope.ir.ops import OpKind

__all__ = ["load_onnx"]


class _Observed:
    """An output whose shape ONNX shape inference knows (for unknown ops)."""

    def __init__(self, shape: Sequence[int]):
        self.shape = tuple(shape)


def _read(path: str) -> onnx.ModelProto:
    if not Path(path).is_file():
        raise InputError(f"{path}: no such file")
    try:
        model = onnx.load(path)
    except Exception as exc:  # noqa: BLE001 - any failure to parse is the file's
        raise InputError(f"{path}: not a readable ONNX model ({type(exc).__name__}: {exc})") from None
    if not model.graph.node and not model.graph.input:  # an empty file parses as an empty message
        raise InputError(f"{path}: not a readable ONNX model (it holds no graph: an empty or truncated file?)")
    return model


def _dims(value_info: Any) -> list[int | str | None]:
    t = value_info.type.tensor_type
    if not t.HasField("shape"):
        return []
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim]


def _attrs(node: Any) -> dict[str, Any]:
    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        if isinstance(v, bytes):
            v = v.decode()
        elif isinstance(v, onnx.TensorProto):
            v = numpy_helper.to_array(v)
        out[a.name] = v
    return out


def _shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    try:
        inferred = shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # noqa: BLE001 - shape inference is only needed for unknown ops
        return {}
    out: dict[str, list[int]] = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.output):
        dims = _dims(vi)
        if dims and all(isinstance(d, int) and d > 0 for d in dims):
            out[vi.name] = [int(d) for d in dims if isinstance(d, int)]
    return out


def load_onnx(path: str, input_shape: Sequence[int] | None = None) -> Graph:
    """The Graph of an ONNX model, at ``input_shape`` (C, H, W) if given, else at its own size."""
    model = _read(path)
    g = model.graph
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    inputs = [i for i in g.input if i.name not in inits]
    if len(inputs) != 1:
        raise InputError(f"{path}: convscope analyses models with one image input; this one has "
                         f"{len(inputs)} ({', '.join(i.name for i in inputs)})")
    inp = inputs[0]
    dims = _dims(inp)
    if len(dims) not in (3, 4):
        raise InputError(f"{path}: the input '{inp.name}' has shape {dims}; expected an image (N, C, H, W) "
                         "or a signal (N, C, L)")
    nhwc = len(dims) == 4 and _nhwc(g, inp.name)  # a TensorFlow export: (N, H, W, C), transposed inside
    declared = [dims[3], dims[1], dims[2]] if nhwc else dims[1:]
    if input_shape is not None:
        chw = tuple(int(v) for v in input_shape)
        if len(dims) == 3 and len(chw) == 3:  # a signal's (C, L), asked for as the (C, 1, L) map it is
            if chw[1] != 1:
                raise InputError(f"{path}: the input '{inp.name}' is a signal {dims}: give --input C,L "
                                 f"(or C,1,L), not {','.join(map(str, chw))}")
            chw = (chw[0], chw[2])
        elif len(dims) == 4 and len(chw) == 2:  # C,L for a model on (C, 1, L) maps
            if declared[1] != 1:
                raise InputError(f"{path}: input C,L is for a signal; the input '{inp.name}' is an image {dims}: "
                                 "give --input C,H,W")
            chw = (chw[0], 1, chw[1])
        if list(chw) != declared:
            _set_input(inp, [dims[0], chw[1], chw[2], chw[0]] if nhwc else [dims[0], *chw])
    elif all(isinstance(d, int) and d > 0 for d in declared):
        chw = tuple(declared)  # type: ignore[arg-type]
    else:
        raise InputError(f"{path}: the input '{inp.name}' has no fixed size ({dims}): give --input "
                         f"{'C,L' if len(dims) == 3 else 'C,H,W'}")
    batch = dims[0] if isinstance(dims[0], int) and dims[0] > 0 else 1
    name = Path(path).stem
    resized = all(isinstance(d, int) and d > 0 for d in declared) and list(chw) != declared
    hint = (f" (the model was exported for input {declared} with fixed sizes inside it; analyse it at that "
            "size, or export it with dynamic height and width)") if resized else ""
    error = FixedSizes if resized else InputError  # the file's own sizes no longer fit, or a plain error
    try:
        graph = _lower(model, inits, inp.name, chw, batch, name, nhwc)  # type: ignore[arg-type]
    except (Unsupported, ConvscopeError) as exc:
        raise error(f"{path}: {exc}{hint}") from None
    clash = [n for n in graph.nodes if resized and n.op is OpKind.UNKNOWN and "mismatch" in n.attrs.target]  # type: ignore[union-attr]
    if clash:  # a known op whose inputs no longer fit at this size: not an op to report as unknown
        raise error(f"{path}: layer '{clash[0].name}': {clash[0].attrs.target}{hint}")  # type: ignore[union-attr]
    if resized:  # analysed where asked (to see another resolution), but the file itself would refuse it
        graph = _with_notes(graph, f"{FIXED_INPUT} {declared}; analysed at {list(chw)} as asked "
                                   "(the ONNX model itself accepts only its own size)")
    return graph


def _with_notes(graph: Graph, *notes: str) -> Graph:
    meta = graph.meta_dict()
    meta["notes"] = (*meta.get("notes", ()), *notes)
    return replace(graph, meta=tuple(meta.items()))


def _set_input(inp: Any, dims: Sequence[int | str | None]) -> None:
    for d, v in zip(inp.type.tensor_type.shape.dim, dims):
        if isinstance(v, int) and v > 0:
            d.dim_value = v
        else:
            d.dim_param = str(v or "N")


_LAYOUT_FREE = {"Sub", "Div", "Mul", "Add", "Cast", "Identity"}  # what a TF export does before its transpose


def _nhwc(g: Any, input_name: str) -> bool:
    """Whether the input is channels-last: it reaches a Transpose (perm 0,3,1,2) to (N, C, H, W)
    through elementwise preprocessing only (TensorFlow/Keras exports)."""
    frontier, seen = [input_name], set()
    while frontier:
        v = frontier.pop()
        for node in g.node:
            if v not in node.input or id(node) in seen:
                continue
            seen.add(id(node))
            if node.op_type == "Transpose" and list(_attrs(node).get("perm", [])) == [0, 3, 1, 2]:
                return True
            if node.op_type not in _LAYOUT_FREE:
                return False
            frontier.extend(node.output)
    return False


_TORCH_CONSTANT = re.compile(r"val_\d+")
_WEIGHTED = frozenset({"Conv", "ConvTranspose", "Gemm", "BatchNormalization", "InstanceNormalization",
                       "LayerNormalization", "GroupNormalization", "PRelu"})


def _exporter_constant(name: str, arr: np.ndarray) -> bool:
    """PyTorch's dynamo exporter names a parameter by its module path, and a value it computed val_N:
    a parameter folded into a new shape, or a constant of its own making, such as the scale of ones
    and the bias of zeros of a norm without learnable affine, which is no parameter.  (A learnable
    norm still at its initial ones and zeros is merged with those constants by the exporter: the file
    cannot tell them apart.)"""
    return bool(_TORCH_CONSTANT.fullmatch(name)) and bool(np.all(arr == 1) or np.all(arr == 0))


def _lower(model: onnx.ModelProto, inits: dict[str, np.ndarray], input_name: str, chw: tuple[int, int, int],
           batch: int, name: str, nhwc: bool = False) -> Graph:
    g = model.graph
    lo = Lowering(name, (), batch=batch)
    values: dict[str, Any] = {"": None}
    made_by_torch = model.producer_name == "pytorch"
    # a single number is a constant, unless it is the weight or bias of a layer (one with one channel)
    layer_weights = {x for node in g.node if node.op_type in _WEIGHTED for x in node.input[1:3]}
    for k, arr in inits.items():
        is_param = arr.dtype.kind == "f" and (arr.size > 1 or k in layer_weights) \
            and not (made_by_torch and _exporter_constant(k, arr))
        if is_param:
            lo.add_param(k, int(arr.size))
        values[k] = ConstVal(arr, (k,) if is_param else ())
    values[input_name] = lo.input(chw)
    if nhwc:  # the channels-last input the file declares is a view of the (C, H, W) input
        values[input_name] = lo.emit("input.nhwc", OpKind.PERMUTE, O.PermuteAttrs((1, 2, 0)), [values[input_name]],
                                     bpos=0, source="the channels-last input")
    shapes = _shapes(model)
    users: dict[str, list[Any]] = {}
    for node in g.node:
        for i in node.input:
            users.setdefault(i, []).append(node)
    names, from_torch = node_names(g.node, inits)
    lrn, replaced = find_lrn(g.node, inits)
    absorbed: dict[str, Any] = {}
    produced: list[tuple[int, list[str]]] = []  # per node: IR nodes its outputs are
    for idx, (node, nm) in enumerate(zip(g.node, names)):
        if idx in replaced:  # inside a written-out LRN: its division stands for it
            continue
        if all(o in absorbed for o in node.output if o):
            values.update({o: absorbed[o] for o in node.output if o})
            continue
        reads = [lrn[idx].x] if idx in lrn else list(node.input)
        missing = [i for i in reads if i not in values]
        if missing:
            raise InputError(f"node '{node.name}' ({node.op_type}) reads '{missing[0]}', which nothing produces")
        n = ONode(lo, node.op_type, nm.base, [values[i] for i in reads], _attrs(node), len(node.output),
                  node.name or node.op_type, absorbed)
        if node.op_type == "MatMul":
            n.lookahead = lambda node=node: _bias_add(node, users, values)
        before = len(lo.added)
        outs = _lower_lrn(n, lrn[idx], values) if idx in lrn else _lower_node(n, node, shapes)
        for o, v in zip(node.output, outs):
            if o:
                values[o] = v
        new = set(lo.added[before:])
        produced.append((idx, [v.node for v in outs if isinstance(v, TVal) and v.node in new]))
    outputs = [values[o.name].node for o in g.output if isinstance(values.get(o.name), TVal)]
    if not outputs:
        lost = [(o.name, values[o.name]) for o in g.output if isinstance(values.get(o.name), Opaque)]
        if lost:
            raise InputError(f"the graph output '{lost[0][0]}' comes through {lost[0][1].what}, which convscope "
                             "cannot follow back to the input")
        raise InputError("no graph output is computed from the input")
    graph = lo.build(list(dict.fromkeys(outputs)), {"frontend": "onnx", "producer": model.producer_name,
                                                    "notes": (*lo.notes, *_operand_params_note(lo, g, users, values),
                                                              *_folded_norms_note(g))})
    if from_torch:
        graph = rename(graph, _leaf_names(graph, names, produced))
    return fold(graph)


def _norm_affines(g: Any, users: dict[str, list[Any]], values: dict[str, Any]) -> set[str]:
    """The parameters of a norm's affine written out after it as Mul and Add (GroupNorm as both
    PyTorch exporters write it: InstanceNormalization, Reshape back, Mul by the weight, Add the bias)."""
    out: set[str] = set()
    for node in g.node:
        if node.op_type != "InstanceNormalization":
            continue
        v = node.output[0]
        while len(users.get(v, [])) == 1 and users[v][0].op_type in ("Reshape", "Mul", "Add"):
            reader = users[v][0]
            if reader.op_type != "Reshape":
                other = [values.get(i) for i in reader.input if i != v]
                if len(other) != 1 or not isinstance(other[0], ConstVal):
                    break
                out.update(other[0].sources)
            v = reader.output[0]
    return out


def _operand_params_note(lo: Lowering, g: Any, users: dict[str, list[Any]], values: dict[str, Any]) -> list[str]:
    """ONNX keeps parameters and buffers alike as initializers, so a buffer read as an operand (a
    position table added, the mean and std of a normalisation, a sampling grid) counts as parameters
    as a parameter read so does (a layer scale, a class token).  The note names them: the tensors
    counted that no weighted layer holds (conv, linear, norm, PReLU), less a norm's affine written
    out as elementwise ops (after an InstanceNormalization, or a PyTorch module's ``weight`` and
    ``bias``: a LayerNorm spelled out at an old opset)."""
    affine = _norm_affines(g, users, values)
    extra = [p for p in lo.param_sizes if p in lo.counted and p not in lo.owner and p not in affine
             and p.rsplit(".", 1)[-1] not in ("weight", "bias")]
    if not extra:
        return []
    extra.sort(key=lambda p: -lo.param_sizes[p])
    size = sum(lo.param_sizes[p] for p in extra)
    return [f"{size} values in {len(extra)} constant tensor(s) that are no conv, linear or norm layer's weights "
            f"({', '.join(extra[:3])}{', …' if len(extra) > 3 else ''}) count as parameters: ONNX does not tell "
            "parameters from buffers"]


_FOLDED_WEIGHT = re.compile(r"onnx::Conv_\d+")  # the TorchScript exporter's name for a weight it computed


def _folded_norms_note(g: Any) -> list[str]:
    """Both PyTorch exporters fold an eval-mode BatchNorm into the convolution before it unless told
    not to: the file then lacks the norm's parameters (2 per channel), and a folded conv gains a bias.
    The torch.export-based exporter marks such a conv (``FuseBatchNormIntoConv``); the TorchScript one
    names the weight it computed ``onnx::Conv_N`` instead of the module's ``layer.weight``."""
    folded = []
    for node in g.node:
        if node.op_type != "Conv":
            continue
        rules = " ".join(p.value for p in node.metadata_props if p.key.endswith("rule_name"))
        if "BatchNorm" in rules or (len(node.input) > 1 and _FOLDED_WEIGHT.fullmatch(node.input[1])):
            folded.append(node.name or node.output[0])
    if not folded:
        return []
    return [f"{len(folded)} convolution(s) hold a batch norm the exporter folded into them (e.g. {folded[0]}): "
            "the module's BatchNorm parameters (2 per channel) are not in this file, and a folded convolution "
            "has a bias; export with do_constant_folding=False (dynamo=False) or optimize=False (the "
            "torch.export-based exporter) to analyse the network as it is built"]


def _lower_lrn(n: ONode, m: LRNMatch, values: dict[str, Any]) -> list[Any]:
    scalars = [values.get(v) for v in (m.alpha, m.beta, m.k)]
    if not all(isinstance(v, ConstVal) and v.array().size == 1 for v in scalars):
        raise InputError(f"node '{n.source}': a local response normalisation whose alpha, beta or k is not a constant")
    alpha, beta, k = (float(v.array().reshape(-1)[0]) for v in scalars)  # type: ignore[union-attr]
    return [n.call("local_response_norm", values[m.x], m.size, alpha, beta, k)]


def _bias_add(node: Any, users: dict[str, list[Any]], values: dict[str, Any]) -> tuple[str, Any] | None:
    """The ``Add`` of a 1-D constant that is the only reader of a MatMul's output, if there is one."""
    readers = users.get(node.output[0], [])
    if len(readers) != 1 or readers[0].op_type != "Add":
        return None
    add = readers[0]
    other = [i for i in add.input if i != node.output[0]]
    if len(other) != 1 or other[0] not in values:
        return None
    bias = values[other[0]]
    if isinstance(bias, ConstVal) and bias.ndim == 1:
        return add.output[0], bias
    return None


def _lower_node(n: ONode, node: Any, shapes: dict[str, list[int]]) -> list[Any]:
    consts = [v for v in n.ins if v is not None]
    if node.op_type == "Constant":
        value = n.attrs.get("value")
        if value is None:
            value = next((np.array(v) for k, v in n.attrs.items() if k.startswith("value")), None)
        return [ConstVal(np.asarray(value))]
    if consts and all(isinstance(v, ConstVal) for v in consts) and node.op_type not in FOLD \
            and node.domain in ("", "ai.onnx"):
        folded = _reference_fold(n, node)  # e.g. the base grid of an affine_grid, padded
        if folded is not None:
            return folded
    if consts and all(isinstance(v, ConstVal) for v in consts) and node.op_type in FOLD:
        arrays = [v.array() if v is not None else None for v in n.ins]
        sources = tuple(dict.fromkeys(s for v in consts for s in v.sources)) \
            if node.op_type not in ("Shape", "Size") else ()  # a parameter's shape holds none of its values
        if node.op_type == "Identity" and sources:  # a deduplicated parameter: a parameter of its own
            n.lo.add_param(node.output[0], int(arrays[0].size))  # type: ignore[union-attr]
            sources = (node.output[0],)
        try:
            value = np.asarray(FOLD[node.op_type](arrays, n.attrs))  # type: ignore[arg-type]
        except (ValueError, IndexError) as exc:  # fixed sizes that do not fit (another input size)
            raise InputError(f"node '{n.source}' ({node.op_type}): its constant inputs do not fit together "
                             f"(shape mismatch: {exc})") from None
        return [ConstVal(value, sources)]
    tensors = [v for v in n.ins if isinstance(v, TVal)]
    if any(isinstance(v, Opaque) for v in n.ins) and not tensors:
        return [Opaque(f"{node.op_type} of a value without batch", ())] * len(node.output)
    handler = OPS.get(node.op_type)
    mark = n.lo.mark()
    try:
        if handler is None:
            raise Unsupported("")
        return list(handler(n))
    except (Unsupported, GraphError) as exc:
        reason = exc.detail if isinstance(exc, GraphError) else str(exc)
        n.lo.rollback(mark)
        known = getattr(exc, "shapes", None)  # what the handler computed where shape inference has nothing
        observed = [_Observed(known[i] if known and o not in shapes else require_shape(n, shapes, o))
                    for i, o in enumerate(node.output) if o]
        what = node.op_type + (f" ({reason})" if reason else "")
        out = n.lo.unknown(n.name, what, observed if len(observed) > 1 else observed[0], tensors,
                           params=n.lo.count_operands(n.ins), source=n.source)
        return list(out) if isinstance(out, list) else [out]


def _reference_fold(n: ONode, node: Any) -> list[Any] | None:
    """A node of constants that :data:`FOLD` has no rule for, evaluated by ONNX's own reference
    implementation; None when it cannot (then the node is handled, or reported unknown, as any)."""
    try:
        from onnx.reference import ReferenceEvaluator

        feeds = {name: v.array() for name, v in zip(node.input, n.ins) if name and v is not None}
        outs = ReferenceEvaluator(node).run(None, feeds)
    except Exception:  # noqa: BLE001 - an op the reference cannot run: not folded, nothing guessed
        return None
    sources = tuple(dict.fromkeys(s for v in n.ins if isinstance(v, ConstVal) for s in v.sources))
    return [ConstVal(np.asarray(o), sources) for o in outs]


_CALL_OPS = (OpKind.CONV, OpKind.CONV_T, OpKind.LINEAR)


_ONE_D = frozenset({OpKind.CONV, OpKind.MAXPOOL, OpKind.AVGPOOL, OpKind.GLOBAL_AVGPOOL, OpKind.GLOBAL_MAXPOOL,
                    OpKind.ADAPTIVE_AVGPOOL, OpKind.ADAPTIVE_MAXPOOL})  # the 2-D op a 1-D one is held as


def _leaf_names(graph: Graph, names: Sequence[Any], produced: Sequence[tuple[int, list[str]]]) -> dict[str, str]:
    """For each leaf scope, its last node's output takes the bare module path."""
    last: dict[str, str] = {}
    for idx, irs in produced:
        nm = names[idx]
        if nm.leaf and nm.scope and irs:
            out = graph.node(irs[0])
            if out.op in (OpKind.RESHAPE, OpKind.FLATTEN) and graph.node(out.inputs[0]).op in _ONE_D \
                    and out.inputs[0].startswith(nm.scope + "."):  # a 1-D convolution's or pool's reshape back
                last[nm.scope] = out.inputs[0]
            else:
                last[nm.scope] = irs[0]
    # A leaf module called more than once (one nn.Conv2d applied twice) has one weighted node per
    # call: they take the path, then path_1, path_2…, as the PyTorch front end names them.
    calls: dict[str, list[str]] = {}
    for idx, irs in produced:
        nm = names[idx]
        if nm.leaf and nm.scope:
            calls.setdefault(nm.scope, []).extend(
                i for i in irs if graph.node(i).op in _CALL_OPS and i.startswith(nm.scope + "."))
    taken = {n.name for n in graph.nodes}
    mapping: dict[str, str] = {}
    for scope, nodes in calls.items():
        bare = [scope] + [f"{scope}_{k}" for k in range(1, len(nodes))]
        if len(nodes) > 1 and not any(b in taken for b in bare):
            mapping.update(zip(nodes, bare))
            taken.update(bare)
            last.pop(scope, None)
    for scope, node in last.items():
        if not node.startswith(scope + "."):
            continue
        if scope in taken and scope not in mapping.values():  # a functional op named like the module
            k = 1  # (an elementwise "add" before a module called add): it yields the path, as the
            while f"{scope}_{k}" in taken:  # PyTorch front end names it
                k += 1
            mapping[scope] = f"{scope}_{k}"
            taken.add(f"{scope}_{k}")
        elif scope in taken:
            continue
        mapping[node] = scope
        taken.add(scope)
    return mapping


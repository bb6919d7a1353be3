"""ONNX ops -> IR nodes: a table from ``op_type`` to a small handler.

Most handlers restate the ONNX node as the PyTorch call it came from (``Reshape`` -> ``reshape``,
``Transpose`` -> ``permute``, ``Gather`` of one index -> indexing…) and go through the same
handlers as the PyTorch front end (``_torch_functions``, which imports no torch), so an exported
model gets the same IR as its original.  Convolutions and pools have their own handlers, because
ONNX padding may differ between the two sides of an axis.

Nodes whose inputs are all constants (initializers, ``Constant``, ``Shape`` of a tensor whose
shape is known) are evaluated with numpy (:data:`FOLD`): the shape arithmetic exporters emit for
``x.view(x.size(0), -1)`` folds to a constant target shape.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from convscope._registry import registrar
from convscope.errors import InputError
from convscope.frontends._torch_functions import FUNCTIONS, Call, emit_pool
from convscope.frontends._torch_values import ConstVal, Lowering, Opaque, TVal, Unsupported
from convscope.ir import ops as O
from convscope.ir.ops import OpKind

__all__ = ["FOLD", "OPS", "ONode"]


@dataclass(slots=True)
class ONode:
    lo: Lowering
    op: str
    name: str  # base name of the IR nodes
    ins: list[Any]  # values; None for an omitted optional input
    attrs: dict[str, Any]
    n_out: int
    source: str
    absorb: dict[str, Any] = field(default_factory=dict)  # ONNX value name -> value (fused consumers)
    lookahead: Callable[[], tuple[str, Any] | None] | None = None  # (Add output, bias) a MatMul can fuse

    def call(self, what: str, *args: Any, **kwargs: Any) -> Any:
        return FUNCTIONS[what](Call(self.lo, self.name, what, args, kwargs, self.source))

    def attr(self, key: str, default: Any = None) -> Any:
        return self.attrs.get(key, default)

    def tensor(self, i: int = 0) -> TVal:
        x = self.ins[i] if i < len(self.ins) else None
        if not isinstance(x, TVal):
            raise Unsupported(f"{self.op}: input {i} is not a tensor computed from the model input")
        return x

    def const(self, i: int) -> ConstVal | None:
        x = self.ins[i] if i < len(self.ins) else None
        if x is not None and not isinstance(x, ConstVal):
            raise Unsupported(f"{self.op}: input {i} must be a constant")
        return x

    def ints(self, i: int, key: str, default: Any = None) -> list[int] | None:
        """An integer list given as input ``i`` (newer opsets) or attribute ``key`` (older)."""
        c = self.const(i) if i < len(self.ins) else None
        if c is not None:
            return [int(v) for v in c.array().reshape(-1)]
        v = self.attrs.get(key, default)
        return None if v is None else [int(x) for x in v]

    def emit(self, op: OpKind, attrs: O.Attrs, inputs: Sequence[Any], **kw: Any) -> TVal:
        return self.lo.emit(self.name, op, attrs, inputs, source=self.source, **kw)


Handler = Callable[[ONode], Sequence[Any]]
OPS: dict[str, Handler] = {}
_op = registrar(OPS, "ONNX handler")


# -- convolution and pooling -----------------------------------------------------------------------
def _pads(n: ONode, x: TVal, k: Sequence[int], s: Sequence[int], d: Sequence[int]) -> tuple[tuple[int, int], tuple[int, int]]:
    """((top, bottom), (left, right)) from ``pads`` [t, l, b, r] or ``auto_pad``."""
    auto = n.attr("auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        out = []
        for size, kk, ss, dd in zip(x.shape[2:], k, s, d):
            total = max((-(-size // ss) - 1) * ss + dd * (kk - 1) + 1 - size, 0)
            small = total // 2
            out.append((small, total - small) if auto == "SAME_UPPER" else (total - small, small))
        return out[0], out[1]
    if auto == "VALID":
        return (0, 0), (0, 0)
    p = n.attr("pads", [0, 0, 0, 0])
    return (int(p[0]), int(p[2])), (int(p[1]), int(p[3]))


def _pads1d(n: ONode, x: TVal, k: int, s: int, d: int) -> tuple[int, int]:
    """(left, right) of a 1-D conv or pool: ``pads`` [l, r] or ``auto_pad`` (SAME_UPPER puts the odd
    one on the right: PyTorch's ``padding='same'`` with an even kernel)."""
    auto = n.attr("auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        size = x.shape[-1]
        total = max((-(-size // s) - 1) * s + d * (k - 1) + 1 - size, 0)
        small = total // 2
        return (small, total - small) if auto == "SAME_UPPER" else (total - small, small)
    if auto == "VALID":
        return 0, 0
    p = n.attr("pads", [0, 0])
    return int(p[0]), int(p[1])


def _image(x: TVal, op: str) -> None:
    if x.ndim != 4 or x.bpos != 0:
        raise Unsupported(f"{op} on a tensor of shape {list(x.shape)} (only 2-D maps)")


@_op("Conv", "ConvTranspose")
def _conv(n: ONode) -> list[TVal]:
    x, w, b = n.tensor(0), n.const(1), n.const(2) if len(n.ins) > 2 else None
    if b is not None and not b.sources and not np.any(b.array()):
        b = None  # a zero bias computed from shapes (dynamo with optimize=False feeds one to a bias-free conv)
    if n.op == "ConvTranspose" and w is not None and w.ndim == 3:  # 1-D: conv_transpose1d
        pads = n.attr("pads", [0, 0])
        if n.attr("auto_pad", "NOTSET") not in ("NOTSET", "") or pads[0] != pads[1] or n.attr("output_shape"):
            raise Unsupported(f"a 1-D ConvTranspose with padding {list(pads)} / auto_pad / output_shape")
        return [n.call("conv_transpose1d", x, w, b, n.attr("strides", [1])[0], int(pads[0]),
                       n.attr("output_padding", [0])[0], int(n.attr("group", 1)), n.attr("dilations", [1])[0])]
    if n.op == "Conv" and w is not None and w.ndim == 3:  # 1-D: the PyTorch front end's conv1d
        st, dil = int(n.attr("strides", [1])[0]), int(n.attr("dilations", [1])[0])
        left, right = _pads1d(n, x, int(w.shape[2]), st, dil)
        if left != right:  # padding='same' with an even kernel: zeros on one side more, then the conv
            x, left = n.call("pad", x, (left, right)), 0
        return [n.call("conv1d", x, w, b, st, left, dil, int(n.attr("group", 1)))]
    _image(x, n.op)
    if w is None or w.ndim != 4:
        raise Unsupported(f"{n.op} with a weight of shape {list(w.shape) if w else None}")
    k = (int(w.shape[2]), int(w.shape[3]))
    s, d = tuple(n.attr("strides", [1, 1])), tuple(n.attr("dilations", [1, 1]))
    g = int(n.attr("group", 1))
    call = Call(n.lo, n.name, n.op, (), {})
    n.lo.count(w.sources + (b.sources if b is not None else ()))
    if n.op == "Conv":
        call.expect("input channels", w.shape[1] * g, x.shape[1])
        a = O.ConvAttrs(int(w.shape[0]), k, (s[0], s[1]), _pads(n, x, k, s, d), (d[0], d[1]), g, b is not None)
        return [n.emit(OpKind.CONV, a, [x])]
    if n.attr("output_shape") is not None:
        raise Unsupported("ConvTranspose with output_shape")
    call.expect("input channels", w.shape[0], x.shape[1])
    p = n.attr("pads", [0, 0, 0, 0])
    op_ = tuple(n.attr("output_padding", [0, 0]))
    a = O.ConvAttrs(int(w.shape[1]) * g, k, (s[0], s[1]), ((int(p[0]), int(p[2])), (int(p[1]), int(p[3]))),
                    (d[0], d[1]), g, b is not None, (op_[0], op_[1]))
    return [n.emit(OpKind.CONV_T, a, [x])]


@_op("MaxPool", "AveragePool")
def _pool(n: ONode) -> list[Any]:
    x = n.tensor()
    if x.ndim == 3 and x.bpos == 0 and len(n.attr("kernel_shape", [])) == 1:  # 1-D: as the PyTorch front end's
        k, s = int(n.attr("kernel_shape")[0]), int(n.attr("strides", [1])[0])
        pads = _pads1d(n, x, k, s, int(n.attr("dilations", [1])[0]))
        if pads[0] != pads[1]:
            raise Unsupported(f"a 1-D {n.op} with padding {list(pads)} (auto_pad {n.attr('auto_pad', 'NOTSET')})")
        ceil = bool(n.attr("ceil_mode", 0))
        if n.op == "MaxPool":
            y = n.call("max_pool1d", x, k, s, int(pads[0]), int(n.attr("dilations", [1])[0]), ceil)
        else:
            y = n.call("avg_pool1d", x, k, s, int(pads[0]), ceil, bool(n.attr("count_include_pad", 0)))
        return [y, Opaque("max-pool indices", ())]
    _image(x, n.op)
    k = tuple(n.attr("kernel_shape"))
    s, d = tuple(n.attr("strides", [1, 1])), tuple(n.attr("dilations", [1, 1]))
    a = O.PoolAttrs((k[0], k[1]), (s[0], s[1]), _pads(n, x, k, s, d), (d[0], d[1]), bool(n.attr("ceil_mode", 0)),
                    bool(n.attr("count_include_pad", 0)))
    kind = OpKind.MAXPOOL if n.op == "MaxPool" else OpKind.AVGPOOL
    return [emit_pool(n.emit, kind, a, x), Opaque("max-pool indices", ())]


@_op("GlobalAveragePool", "GlobalMaxPool")
def _global(n: ONode) -> list[TVal]:
    x = n.tensor()
    if x.ndim == 3 and x.bpos == 0:  # over a signal (N, C, L): a 1-D adaptive pool into one bin
        return [n.call("adaptive_avg_pool1d" if n.op == "GlobalAveragePool" else "adaptive_max_pool1d", x, 1)]
    _image(x, n.op)
    kind = OpKind.GLOBAL_AVGPOOL if n.op == "GlobalAveragePool" else OpKind.GLOBAL_MAXPOOL
    return [n.emit(kind, O.GlobalPoolAttrs(keepdims=True), [x])]


# -- linear layers ---------------------------------------------------------------------------------
@_op("Gemm")
def _gemm(n: ONode) -> list[Any]:
    x, w, c = n.tensor(0), n.const(1), n.const(2) if len(n.ins) > 2 else None
    if n.attr("transA", 0) or w is None:
        raise Unsupported("Gemm with a transposed or computed left operand")
    weight = w if n.attr("transB", 0) else ConstVal(w.array().T, w.sources)
    if n.attr("alpha", 1.0) != 1.0 or (c is not None and n.attr("beta", 1.0) != 1.0):
        n.lo.notes.append(f"{n.name}: Gemm with alpha/beta is counted as a plain linear layer")
    bias = c if c is not None and c.ndim <= 1 and c.numel == weight.shape[0] else None
    if c is not None and bias is None:
        raise Unsupported(f"Gemm with a bias of shape {list(c.shape)}")
    return [n.call("linear", x, weight, bias)]


@_op("MatMul")
def _matmul(n: ONode) -> list[Any]:
    a, b = n.ins[0], n.ins[1]
    if isinstance(a, TVal) and isinstance(b, ConstVal) and b.ndim == 2 and n.lookahead is not None:
        fused = n.lookahead()
        if fused is not None:  # MatMul + Add(bias): one linear layer with a bias, as PyTorch's
            add_out, bias = fused
            out = n.call("linear", a, ConstVal(b.array().T, b.sources), bias)
            n.absorb[add_out] = out
            return [out]
    return [n.call("matmul", a, b)]


@_op("Einsum")
def _einsum(n: ONode) -> list[Any]:
    return [n.call("einsum", n.attr("equation"), *n.ins)]


# -- elementwise -----------------------------------------------------------------------------------
_BINARY = {"Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div", "Max": "maximum", "Min": "minimum"}


@_op(*_BINARY, "Sum")
def _binary(n: ONode) -> list[Any]:
    what = _BINARY.get(n.op, "add")
    out = n.ins[0]
    for other in n.ins[1:]:
        out = n.call(what, out, other)
    return [out]


_COMPARE = {"Greater": "gt", "Less": "lt", "GreaterOrEqual": "ge", "LessOrEqual": "le", "Equal": "eq"}


@_op(*_COMPARE, "Where")
def _compare(n: ONode) -> list[Any]:
    if n.op == "Where":
        return [n.call("where", *n.ins[:3])]
    return [n.call(_COMPARE[n.op], n.ins[0], n.ins[1])]


_ACTS = {"Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "Selu": "selu", "Softplus": "softplus",
         "Mish": "mish", "HardSwish": "hardswish", "HardSigmoid": "hardsigmoid", "Gelu": "gelu", "Erf": "erf",
         "Sqrt": "sqrt", "Exp": "exp", "Log": "log", "Abs": "abs", "Neg": "neg", "Reciprocal": "reciprocal",
         "Softsign": "softsign"}


@_op(*_ACTS)
def _act(n: ONode) -> list[Any]:
    return [n.call(_ACTS[n.op], n.tensor())]


@_op("LeakyRelu", "Elu", "Celu", "Shrink")
def _act_alpha(n: ONode) -> list[Any]:
    if n.op == "LeakyRelu":
        return [n.call("leaky_relu", n.tensor(), float(n.attr("alpha", 0.01)))]
    if n.op == "Shrink":  # bias 0: hard shrink; bias = lambd: soft shrink
        lambd, bias = float(n.attr("lambd", 0.5)), float(n.attr("bias", 0.0))
        if bias not in (0.0, lambd):
            raise Unsupported(f"Shrink with bias {bias} (neither 0 nor lambd {lambd})")
        return [n.call("hardshrink" if bias == 0.0 else "softshrink", n.tensor(), lambd)]
    return [n.call(n.op.lower(), n.tensor(), float(n.attr("alpha", 1.0)))]


@_op("Clip")
def _clip(n: ONode) -> list[Any]:
    def bound(i: int, key: str) -> float | None:
        c = n.const(i) if i < len(n.ins) else None
        if c is not None:
            return float(c.array().reshape(-1)[0])
        v = n.attr(key)
        return None if v is None or abs(v) >= 3.4e38 else float(v)
    return [n.call("clamp", n.tensor(), bound(1, "min"), bound(2, "max"))]


@_op("Pow")
def _pow(n: ONode) -> list[Any]:
    return [n.call("pow", n.tensor(), n.ins[1])]


@_op("PRelu")
def _prelu(n: ONode) -> list[Any]:
    x, slope = n.tensor(), n.const(1)
    assert slope is not None
    n.lo.count(slope.sources)
    return [n.emit(OpKind.ACT, O.ActAttrs("prelu", channels=slope.numel), [x])]


@_op("Softmax", "LogSoftmax")
def _softmax(n: ONode) -> list[Any]:
    return [n.call("softmax", n.tensor(), int(n.attr("axis", -1)))]


# -- normalisation ---------------------------------------------------------------------------------
@_op("BatchNormalization")
def _bn(n: ONode) -> list[Any]:
    out = n.call("batch_norm", n.tensor(), n.ins[3], n.ins[4], n.ins[1], n.ins[2], False, 0.0,
                 float(n.attr("epsilon", 1e-5)))
    return [out] + [Opaque("batch-norm statistics", ())] * (n.n_out - 1)


@_op("LRN")
def _lrn(n: ONode) -> list[Any]:
    return [n.call("local_response_norm", n.tensor(), int(n.attr("size")), float(n.attr("alpha", 1e-4)),
                   float(n.attr("beta", 0.75)), float(n.attr("bias", 1.0)))]


@_op("LayerNormalization")
def _ln(n: ONode) -> list[Any]:
    x = n.tensor()
    axis = int(n.attr("axis", -1)) % x.ndim
    if axis != x.ndim - 1 and not (axis == 1 and x.bpos == 0 and x.ndim >= 3):  # (C, H, W): the whole map
        raise Unsupported(f"LayerNormalization over axis {n.attr('axis')} and after (only the last axis, or a "
                          "whole map)")
    b = n.ins[2] if len(n.ins) > 2 else None
    out = n.call("layer_norm", x, list(x.shape[axis:]), n.ins[1], b, float(n.attr("epsilon", 1e-5)))
    return [out] + [Opaque("layer-norm statistics", ())] * (n.n_out - 1)


@_op("InstanceNormalization")
def _instance(n: ONode) -> list[Any]:
    x = n.tensor()
    image = _grouped_image(n, x)
    if image is not None:  # how exporters write GroupNorm: reshape to (N, G, -1), instance norm, reshape
        # back, then the affine as Mul and Add (counted there): a GroupNorm without affine on the map
        groups = x.shape[1]
        return [n.emit(OpKind.GROUPNORM, O.NormAttrs(False, None, groups, float(n.attr("epsilon", 1e-5))), [image])]
    return [n.call("instance_norm", n.tensor(), None, None, n.ins[1], n.ins[2], False, 0.0,
                   float(n.attr("epsilon", 1e-5)))]


def _grouped_image(n: ONode, x: TVal) -> TVal | None:
    """The feature map (N, C, H, W) that ``x`` (N, G, C/G·H·W) is a reshape of, if it is one."""
    b = n.lo.b
    if x.ndim != 3 or x.bpos != 0 or x.node not in b:
        return None
    r = b.get(x.node)
    if r.op is not OpKind.RESHAPE:
        return None
    src = b.info(r.inputs[0])
    g = x.shape[1]
    if not src.is_image or src.shape[0] % g or src.numel != g * x.shape[2]:
        return None
    return TVal(r.inputs[0], (x.shape[0], *src.shape), 0)


# -- data movement ---------------------------------------------------------------------------------
@_op("Identity", "Cast", "CastLike", "Dropout")
def _alias(n: ONode) -> list[Any]:
    return [n.ins[0]] + [Opaque(f"{n.op} mask", ())] * (n.n_out - 1)


@_op("Flatten")
def _flatten(n: ONode) -> list[Any]:
    x = n.tensor()
    axis = int(n.attr("axis", 1)) % (x.ndim + 1)
    head = int(np.prod(x.shape[:axis])) if axis else 1
    return [n.call("reshape", x, (head, int(np.prod(x.shape[axis:]))))]


@_op("Reshape")
def _reshape(n: ONode) -> list[Any]:
    x = n.tensor()
    target = n.ints(1, "shape")
    assert target is not None
    if not n.attr("allowzero", 0):
        target = [x.shape[i] if v == 0 else v for i, v in enumerate(target)]
    return [n.call("reshape", x, tuple(target))]


@_op("Transpose")
def _transpose(n: ONode) -> list[Any]:
    x = n.tensor()
    perm = n.attr("perm") or list(reversed(range(x.ndim)))
    return [n.call("permute", x, tuple(int(p) for p in perm))]


@_op("Squeeze", "Unsqueeze")
def _squeeze(n: ONode) -> list[Any]:
    x = n.tensor()
    axes = n.ints(1, "axes")
    shape = list(x.shape)
    if n.op == "Squeeze":
        drop = {a % x.ndim for a in axes} if axes else {i for i, s in enumerate(shape) if s == 1}
        shape = [s for i, s in enumerate(shape) if i not in drop]
        return [n.call("reshape", x, tuple(shape))]
    rank = x.ndim + len(axes or [])
    for a in sorted(a % rank for a in axes or []):  # one at a time: the batch axis is followed exactly
        x = n.call("unsqueeze", x, a)
    return [x]


@_op("Concat")
def _concat(n: ONode) -> list[Any]:
    return [n.call("cat", [v for v in n.ins if v is not None], int(n.attr("axis")))]


@_op("Split")
def _split(n: ONode) -> list[Any]:
    x = n.tensor()
    axis = int(n.attr("axis", 0))
    sizes = n.ints(1, "split")
    if not sizes:
        total = x.shape[axis % x.ndim]
        k = int(n.attr("num_outputs", n.n_out))
        each = -(-total // k)
        sizes = [min(each, total - i) for i in range(0, total, each)]
    return list(n.call("split", x, sizes, axis))


@_op("SplitToSequence")
def _split_to_sequence(n: ONode) -> list[Any]:
    """A sequence (a Python tuple here) of the parts; SequenceAt and ConcatFromSequence read it."""
    x = n.tensor()
    axis = int(n.attr("axis", 0))
    split = n.const(1) if len(n.ins) > 1 and n.ins[1] is not None else None
    if split is None:
        if int(n.attr("keepdims", 1)):
            return [tuple(n.call("split", x, 1, axis))]
        return [tuple(n.call("unbind", x, axis))]
    sizes = split.array().astype(int).tolist()
    return [tuple(n.call("split", x, sizes, axis))]


@_op("SequenceAt")
def _sequence_at(n: ONode) -> list[Any]:
    seq, idx = n.ins[0], n.const(1)
    if not isinstance(seq, tuple) or idx is None or idx.numel != 1:
        raise Unsupported("SequenceAt of a sequence not made by SplitToSequence")
    return [seq[int(idx.array().reshape(-1)[0])]]


@_op("ConcatFromSequence")
def _concat_from_sequence(n: ONode) -> list[Any]:
    seq = n.ins[0]
    if not isinstance(seq, tuple):
        raise Unsupported("ConcatFromSequence of a sequence not made by SplitToSequence")
    return [n.call("stack" if int(n.attr("new_axis", 0)) else "cat", list(seq), int(n.attr("axis")))]


@_op("Slice")
def _slice(n: ONode) -> list[Any]:
    x = n.tensor()
    starts, ends = n.ints(1, "starts"), n.ints(2, "ends")
    axes = n.ints(3, "axes") or list(range(len(starts or [])))
    steps = n.ints(4, "steps") or [1] * len(axes)
    idx: list[Any] = [slice(None)] * x.ndim
    for st, en, ax, sp in zip(starts or [], ends or [], axes, steps):
        size = x.shape[ax % x.ndim]
        idx[ax % x.ndim] = slice(max(-size, min(st, size)), max(-size - 1, min(en, size)), sp)
    try:
        return [n.call("getitem", x, tuple(idx))]
    except Unsupported as exc:  # a strided slice: unknown, with the shape computed here
        exc.shapes = [[len(range(*s.indices(d))) if isinstance(s, slice) else d for s, d in zip(idx, x.shape)]]
        raise


@_op("Gather")
def _gather(n: ONode) -> list[Any]:
    x, idx = n.tensor(), n.const(1)
    if idx is None or idx.numel != 1:
        raise Unsupported("Gather of several indices")
    axis = int(n.attr("axis", 0)) % x.ndim
    i = int(idx.array().reshape(-1)[0])
    index: list[Any] = [slice(None)] * x.ndim
    index[axis] = i if idx.ndim == 0 else slice(i % x.shape[axis], i % x.shape[axis] + 1)
    return [n.call("getitem", x, tuple(index))]


@_op("Expand")
def _expand(n: ONode) -> list[Any]:
    x, shape = n.tensor(), n.ints(1, "shape")
    assert shape is not None
    try:
        target = np.broadcast_shapes(tuple(x.shape), tuple(shape))
    except ValueError:
        raise InputError(f"node '{n.source}' (Expand): a tensor of shape {list(x.shape)} cannot be expanded to "
                         f"{list(shape)} (shape mismatch)") from None
    try:
        return [n.call("expand", x, tuple(int(v) for v in target))]
    except Unsupported as exc:  # growing the channels: unknown, with the shape computed here (ONNX
        exc.shapes = [[int(v) for v in target]]  # shape inference has none when the shape is computed)
        raise


@_op("Resize", "Upsample")
def _resize(n: ONode) -> list[Any]:
    x = n.tensor()
    mode = n.attr("mode", "nearest")
    mode = {"linear": "bilinear", "bilinear": "bilinear", "nearest": "nearest", "cubic": "bicubic"}.get(mode, mode)
    align = n.attr("coordinate_transformation_mode", "half_pixel") == "align_corners"
    scales_at, sizes_at = (1, None) if n.op == "Upsample" else (2, 3)
    scales = n.const(scales_at) if scales_at < len(n.ins) else None
    sizes = n.const(sizes_at) if sizes_at is not None and sizes_at < len(n.ins) else None
    if x.ndim == 3:  # a signal (N, C, L): the 1-D interpolation along L
        one = {"bilinear": "linear", "nearest": "nearest"}.get(mode)
        if one is None:
            raise Unsupported(f"1-D Resize with mode {mode}")
        if sizes is not None and sizes.numel:
            return [n.call("interpolate", x, int(sizes.array().reshape(-1)[-1]), None, one, align)]
        if scales is None or not scales.numel:
            raise Unsupported("Resize without scales or sizes")
        sc = [float(v) for v in scales.array().reshape(-1)]
        if len(sc) != 3 or sc[0] != 1.0 or sc[1] != 1.0:
            raise Unsupported(f"Resize with scales {sc}")
        return [n.call("interpolate", x, None, sc[2], one, align)]
    if sizes is not None and sizes.numel:
        hw = [int(v) for v in sizes.array().reshape(-1)[-2:]]
        return [n.call("interpolate", x, tuple(hw), None, mode, align)]
    if scales is None or not scales.numel:
        raise Unsupported("Resize without scales or sizes")
    sc = [float(v) for v in scales.array().reshape(-1)]
    if len(sc) != 4 or sc[0] != 1.0 or sc[1] != 1.0:
        raise Unsupported(f"Resize with scales {sc}")
    return [n.call("interpolate", x, None, (sc[2], sc[3]), mode, align)]


@_op("Pad")
def _pad(n: ONode) -> list[Any]:
    x = n.tensor()
    pads = n.ints(1, "pads")
    assert pads is not None
    half = len(pads) // 2
    begin, end = pads[:half], pads[half:]
    mode = {"edge": "replicate", "wrap": "circular"}.get(n.attr("mode", "constant"), n.attr("mode", "constant"))
    if x.ndim == 3 and half == 3 and not any(begin[:2]) and not any(end[:2]):  # a signal: along L
        return [n.call("pad", x, [begin[2], end[2]], mode)]
    if x.ndim != 4 or any(begin[:2]) or any(end[:2]):
        raise Unsupported(f"padding {pads} of a tensor of shape {list(x.shape)}")
    mode = {"edge": "replicate", "wrap": "circular"}.get(n.attr("mode", "constant"), n.attr("mode", "constant"))
    return [n.call("pad", x, [begin[3], end[3], begin[2], end[2]], mode)]


_REDUCE = {"ReduceMean": "mean", "ReduceSum": "sum", "ReduceMax": "amax", "ReduceMin": "amin"}


@_op(*_REDUCE)
def _reduce(n: ONode) -> list[Any]:
    x = n.tensor()
    axes = n.ints(1, "axes")
    if not axes:
        raise Unsupported(f"{n.op} over every axis")
    return [n.call(_REDUCE[n.op], x, axes, bool(n.attr("keepdims", 1)))]


@_op("ReduceL2", "ReduceL1", "ReduceSumSquare")
def _reduce_norm(n: ONode) -> list[Any]:
    """The norms as the ops they are made of: |x| or x·x, the sum, and for L2 the square root."""
    x = n.tensor()
    axes = n.ints(1, "axes")
    if not axes:
        raise Unsupported(f"{n.op} over every axis")
    keep = bool(n.attr("keepdims", 1))
    part = Call(n.lo, n.name, n.op, (), {}, n.source).part
    if n.op == "ReduceL1":
        return [part("sum", part("abs", x), axes, keep, last=True)]
    total = part("sum", part("mul", x, x), axes, keep, last=n.op == "ReduceSumSquare")
    return [total if n.op == "ReduceSumSquare" else part("sqrt", total, last=True)]


@_op("DepthToSpace", "SpaceToDepth")
def _depth_to_space(n: ONode) -> list[Any]:
    # DCR and CRD order the channels differently; shapes, cost and receptive field are the same.
    return [n.call("pixel_shuffle" if n.op == "DepthToSpace" else "pixel_unshuffle", n.tensor(),
                   int(n.attr("blocksize")))]


@_op("Shape")
def _shape(n: ONode) -> list[Any]:
    x = n.ins[0]
    start, end = int(n.attr("start", 0)), n.attr("end")
    return [ConstVal(np.array(x.shape[start:end], dtype=np.int64))]


@_op("Size")
def _size(n: ONode) -> list[Any]:
    return [ConstVal(np.array(int(np.prod(n.ins[0].shape)), dtype=np.int64))]


def _fold_slice(ins: list[np.ndarray], attrs: dict[str, Any]) -> np.ndarray:
    data = ins[0]
    if len(ins) < 3:  # opset < 10: starts, ends and axes are attributes
        starts, ends = attrs["starts"], attrs["ends"]
        axes = attrs.get("axes") or range(len(starts))
        steps: Any = [1] * len(starts)
    else:
        starts, ends = ins[1], ins[2]
        axes = ins[3] if len(ins) > 3 and ins[3] is not None else range(len(starts))
        steps = ins[4] if len(ins) > 4 and ins[4] is not None else [1] * len(starts)
    idx: list[Any] = [slice(None)] * data.ndim
    for st, en, ax, sp in zip(starts, ends, axes, steps):
        idx[int(ax)] = slice(int(st), int(en), int(sp))
    return data[tuple(idx)]


def _unsqueeze(x: np.ndarray, axes: Sequence[int]) -> np.ndarray:
    for a in sorted(int(a) % (x.ndim + len(axes)) for a in axes):
        x = np.expand_dims(x, a)
    return x


def _axes(ins: list[np.ndarray], attrs: dict[str, Any]) -> list[int]:
    return [int(a) for a in (ins[1] if len(ins) > 1 and ins[1] is not None else attrs.get("axes", []))]


def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


# Numpy evaluation of nodes whose inputs are all constants (shape arithmetic, folded weights).
FOLD: dict[str, Callable[[list[np.ndarray], dict[str, Any]], Any]] = {
    "Identity": lambda i, a: i[0], "Cast": lambda i, a: i[0], "CastLike": lambda i, a: i[0].astype(i[1].dtype),
    "Neg": lambda i, a: -i[0],
    "Add": lambda i, a: i[0] + i[1], "Sub": lambda i, a: i[0] - i[1], "Mul": lambda i, a: i[0] * i[1],
    "Div": lambda i, a: (i[0] // i[1]) if i[0].dtype.kind in "iu" else i[0] / i[1],
    "Pow": lambda i, a: np.power(i[0], i[1]), "Sqrt": lambda i, a: np.sqrt(i[0]),
    "Floor": lambda i, a: np.floor(i[0]), "Ceil": lambda i, a: np.ceil(i[0]),
    "Equal": lambda i, a: i[0] == i[1], "Less": lambda i, a: i[0] < i[1], "Greater": lambda i, a: i[0] > i[1],
    "Not": lambda i, a: ~i[0], "Where": lambda i, a: np.where(i[0], i[1], i[2]),
    "Min": lambda i, a: np.minimum.reduce(i), "Max": lambda i, a: np.maximum.reduce(i),
    "Reshape": lambda i, a: i[0].reshape([i[0].shape[k] if v == 0 else v for k, v in enumerate(i[1].tolist())]),
    "Transpose": lambda i, a: np.transpose(i[0], a.get("perm")),
    "Squeeze": lambda i, a: np.squeeze(i[0], axis=tuple(_axes(i, a)) or None),
    "Unsqueeze": lambda i, a: _unsqueeze(i[0], _axes(i, a)),
    "Concat": lambda i, a: np.concatenate([x for x in i if x is not None], axis=a["axis"]),
    "Gather": lambda i, a: np.take(i[0], i[1], axis=a.get("axis", 0)),
    "Slice": _fold_slice, "Shape": lambda i, a: np.array(i[0].shape, dtype=np.int64),
    "ConstantOfShape": lambda i, a: np.full(i[0].astype(np.int64), a["value"].reshape(-1)[0] if "value" in a else 0.0),
    "Range": lambda i, a: np.arange(i[0].item(), i[1].item(), i[2].item()),
    "Expand": lambda i, a: i[0] * np.ones(i[1].astype(np.int64), dtype=i[0].dtype),
    "ReduceProd": lambda i, a: np.prod(i[0], axis=tuple(_axes(i, a)) or None, keepdims=bool(a.get("keepdims", 1))),
    "ReduceMean": lambda i, a: np.mean(i[0], axis=tuple(_axes(i, a)) or None, keepdims=bool(a.get("keepdims", 1))),
    "Mod": lambda i, a: np.fmod(i[0], i[1]) if a.get("fmod") else np.mod(i[0], i[1]),
    "Abs": lambda i, a: np.abs(i[0]), "Sign": lambda i, a: np.sign(i[0]), "Exp": lambda i, a: np.exp(i[0]),
    "Log": lambda i, a: np.log(i[0]), "Reciprocal": lambda i, a: 1.0 / i[0], "Relu": lambda i, a: np.maximum(i[0], 0),
    "And": lambda i, a: i[0] & i[1], "Or": lambda i, a: i[0] | i[1], "Size": lambda i, a: np.array(i[0].size),
    "ReduceSum": lambda i, a: np.sum(i[0], axis=tuple(_axes(i, a)) or None, keepdims=bool(a.get("keepdims", 1))),
    "ReduceMax": lambda i, a: np.max(i[0], axis=tuple(_axes(i, a)) or None, keepdims=bool(a.get("keepdims", 1))),
    "ReduceMin": lambda i, a: np.min(i[0], axis=tuple(_axes(i, a)) or None, keepdims=bool(a.get("keepdims", 1))),
    "MatMul": lambda i, a: np.matmul(i[0], i[1]),
    "Softmax": lambda i, a: _softmax(i[0], int(a.get("axis", -1))),
    "Sigmoid": lambda i, a: 1.0 / (1.0 + np.exp(-i[0])), "Tanh": lambda i, a: np.tanh(i[0]),
    "Gemm": lambda i, a: a.get("alpha", 1.0) * np.matmul(i[0].T if a.get("transA") else i[0],
                                                          i[1].T if a.get("transB") else i[1])
    + (a.get("beta", 1.0) * i[2] if len(i) > 2 and i[2] is not None else 0),
    "Tile": lambda i, a: np.tile(i[0], i[1].astype(np.int64)), "Trilu": lambda i, a: (
        np.triu(i[0], int(i[1]) if len(i) > 1 else 0) if a.get("upper", 1) else np.tril(i[0], int(i[1]) if len(i) > 1 else 0)),
}


def require_shape(n: ONode, shapes: dict[str, list[int]], out: str) -> list[int]:
    if out not in shapes:
        raise InputError(f"node '{n.source}' ({n.op}): ONNX shape inference gives no shape for its output "
                         f"'{out}' (an op it does not know, or inputs whose shapes do not fit together), so the "
                         "network cannot be followed past it")
    return shapes[out]

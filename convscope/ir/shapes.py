"""Shape inference: one small function per op kind, ``(attrs, input infos) -> output info``.

Errors are ``ValueError`` with a message that quotes the offending sizes; the graph builder adds the
layer name and source.  Output-size formulas are PyTorch's (and ONNX's, which agree for these ops).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from convscope._registry import registrar, require_all
from convscope.ir import ops as O
from convscope.ir.graph import TensorInfo
from convscope.ir.ops import REDUCE_FNS, UPSAMPLE_SPAN, OpKind

__all__ = ["convT_out_size", "conv_out_size", "infer", "pool_out_size"]

Infos = Sequence[TensorInfo]
_HANDLERS: dict[OpKind, Callable[[Any, Infos], TensorInfo]] = {}
_handles = registrar(_HANDLERS, "shape handler")


def infer(op: OpKind, attrs: Any, inputs: Infos) -> TensorInfo:
    if not isinstance(attrs, O.ATTRS_OF[op]):
        raise ValueError(f"op '{op.value}' needs {O.ATTRS_OF[op].__name__}, got {type(attrs).__name__}")
    return _HANDLERS[op](attrs, inputs)


def _arity(inputs: Infos, n: int | None, what: str, at_least: int = 1) -> None:
    if n is not None and len(inputs) != n:
        raise ValueError(f"{what} takes {n} input(s), got {len(inputs)}")
    if len(inputs) < at_least:
        raise ValueError(f"{what} takes at least {at_least} input(s), got {len(inputs)}")


def _lost(x: TensorInfo) -> bool:
    """A 3-axis tensor whose layout was lost on the way (a reshape the layout rules do not follow,
    an op we do not know, a map made tokens for attention and reshaped back: a non-local block)."""
    return len(x.shape) == 3 and x.channel_axis is None and not x.spatial_axes


def _image(x: TensorInfo, what: str) -> tuple[int, int, int]:
    """(C, H, W) of a feature map; a tensor whose layout was lost (:func:`_lost`) is one too, as
    PyTorch and ONNX read it."""
    if not _lost(x) and (not x.is_image or len(x.shape) != 3 or x.channel_axis != 0):
        names = iter("HW")
        axes = ", ".join("C" if a == x.channel_axis else next(names) if a in x.spatial_axes else "·"
                         for a in range(len(x.shape)))
        why = (" (· is an axis that holds no positions any more: a Linear or matmul over it, or a reshape, mixed "
               "them)") if "·" in axes else ""
        raise ValueError(f"{what} needs a (C, H, W) feature map, got shape {list(x.shape)} laid out ({axes}){why}")
    c, h, w = x.shape
    return c, h, w


def conv_out_size(size: int, k: int, s: int, pad: tuple[int, int], d: int) -> int:
    return (size + pad[0] + pad[1] - d * (k - 1) - 1) // s + 1


def convT_out_size(size: int, k: int, s: int, pad: tuple[int, int], d: int, op: int) -> int:
    return (size - 1) * s - pad[0] - pad[1] + d * (k - 1) + op + 1


def pool_out_size(size: int, k: int, s: int, pad: tuple[int, int], d: int, ceil: bool) -> int:
    eff = size + pad[0] + pad[1] - d * (k - 1) - 1
    if not ceil:
        return eff // s + 1
    out = -(-eff // s) + 1
    # PyTorch: the last window must start inside the input or the left padding.
    if (out - 1) * s >= size + pad[0]:
        out -= 1
    return out


def _check_window(kind: str, a: Any, h: int, w: int) -> None:
    for axis, size, k, s, p, d in (
        ("height", h, a.kernel[0], a.stride[0], a.padding[0], a.dilation[0]),
        ("width", w, a.kernel[1], a.stride[1], a.padding[1], a.dilation[1]),
    ):
        if k < 1 or s < 1 or d < 1 or p[0] < 0 or p[1] < 0:
            raise ValueError(
                f"{kind} kernel, stride and dilation must be positive and padding non-negative "
                f"(kernel {list(a.kernel)}, stride {list(a.stride)}, dilation {list(a.dilation)}, "
                f"padding {[list(x) for x in a.padding]})"
            )
        span = d * (k - 1) + 1
        if span > size + p[0] + p[1]:
            raise ValueError(
                f"{kind} kernel {a.kernel[0]}x{a.kernel[1]} (dilation {d}, spanning {span}) is larger than "
                f"the padded input {axis} {size}+{p[0] + p[1]}: the span must be at most {size + p[0] + p[1]} "
                f"(a smaller kernel or dilation, more padding, or a larger input)"
            )


@_handles(OpKind.INPUT)
def _input(a: O.InputAttrs, inputs: Infos) -> TensorInfo:
    raise ValueError("input nodes are added with add_input")


@_handles(OpKind.CONV)
def _conv(a: O.ConvAttrs, inputs: Infos) -> TensorInfo:
    _arity(inputs, 1, "conv")
    c, h, w = _image(inputs[0], "conv")
    if a.out_channels < 1 or a.groups < 1:
        raise ValueError(f"conv needs positive out channels and groups (out={a.out_channels}, groups={a.groups})")
    if c % a.groups or a.out_channels % a.groups:
        raise ValueError(
            f"groups={a.groups} must divide both input channels ({c}) and output channels ({a.out_channels})"
        )
    _check_window("conv", a, h, w)
    oh = conv_out_size(h, a.kernel[0], a.stride[0], a.padding[0], a.dilation[0])
    ow = conv_out_size(w, a.kernel[1], a.stride[1], a.padding[1], a.dilation[1])
    return TensorInfo((a.out_channels, oh, ow))


@_handles(OpKind.CONV_T)
def _convT(a: O.ConvAttrs, inputs: Infos) -> TensorInfo:
    _arity(inputs, 1, "convT")
    c, h, w = _image(inputs[0], "convT")
    if a.out_channels < 1 or a.groups < 1 or min(a.stride) < 1 or min(a.kernel) < 1:
        raise ValueError(f"convT needs positive sizes (out={a.out_channels}, kernel={list(a.kernel)}, stride={list(a.stride)})")
    if c % a.groups or a.out_channels % a.groups:
        raise ValueError(
            f"groups={a.groups} must divide both input channels ({c}) and output channels ({a.out_channels})"
        )
    for op_, s, d in zip(a.output_padding, a.stride, a.dilation):
        if op_ >= max(s, d):
            raise ValueError(f"output padding {op_} must be smaller than stride or dilation ({s}, {d})")
    oh = convT_out_size(h, a.kernel[0], a.stride[0], a.padding[0], a.dilation[0], a.output_padding[0])
    ow = convT_out_size(w, a.kernel[1], a.stride[1], a.padding[1], a.dilation[1], a.output_padding[1])
    if oh < 1 or ow < 1:
        raise ValueError(f"convT output would be {oh}x{ow}: padding {[list(p) for p in a.padding]} is too large")
    return TensorInfo((a.out_channels, oh, ow))


@_handles(OpKind.MAXPOOL, OpKind.AVGPOOL)
def _pool(a: O.PoolAttrs, inputs: Infos) -> TensorInfo:
    _arity(inputs, 1, "pool")
    c, h, w = _image(inputs[0], "pool")
    _check_window("pool", a, h, w)
    for k, p in zip(a.kernel, a.padding):
        if max(p) > k // 2:
            raise ValueError(f"pool padding {max(p)} must be at most half the kernel ({k})")
    oh = pool_out_size(h, a.kernel[0], a.stride[0], a.padding[0], a.dilation[0], a.ceil_mode)
    ow = pool_out_size(w, a.kernel[1], a.stride[1], a.padding[1], a.dilation[1], a.ceil_mode)
    return TensorInfo((c, oh, ow))


@_handles(OpKind.ADAPTIVE_AVGPOOL, OpKind.ADAPTIVE_MAXPOOL)
def _adaptive(a: O.AdaptivePoolAttrs, inputs: Infos) -> TensorInfo:
    _arity(inputs, 1, "adaptive pool")
    c, _, _ = _image(inputs[0], "adaptive pool")
    if min(a.size) < 1:
        raise ValueError(f"adaptive pool output size must be positive, got {list(a.size)}")
    return TensorInfo((c, a.size[0], a.size[1]))


@_handles(OpKind.GLOBAL_AVGPOOL, OpKind.GLOBAL_MAXPOOL)
def _global(a: O.GlobalPoolAttrs, inputs: Infos) -> TensorInfo:
    _arity(inputs, 1, "global pool")
    c, _, _ = _image(inputs[0], "global pool")
    return TensorInfo((c, 1, 1)) if a.keepdims else TensorInfo((c,), 0, ())


@_handles(OpKind.UPSAMPLE)
def _upsample(a: O.UpsampleAttrs, inputs: Infos) -> TensorInfo:
    _arity(inputs, 1, "upsample")
    c, h, w = _image(inputs[0], "upsample")
    if a.mode not in UPSAMPLE_SPAN:
        raise ValueError(f"upsample mode must be one of {', '.join(UPSAMPLE_SPAN)}, got '{a.mode}'")
    if (a.scale is None) == (a.size is None):
        raise ValueError("upsample needs exactly one of scale and size")
    if a.size is not None:
        oh, ow = a.size
    else:
        assert a.scale is not None
        if min(a.scale) <= 0:
            raise ValueError(f"upsample scale must be positive, got {list(a.scale)}")
        oh, ow = math.floor(h * a.scale[0]), math.floor(w * a.scale[1])
    if oh < 1 or ow < 1:
        raise ValueError(f"upsample output would be {oh}x{ow}")
    return TensorInfo((c, oh, ow))


def _as_map(x: TensorInfo) -> TensorInfo:
    """A tensor whose layout was lost (:func:`_lost`) as the (C, H, W) map PyTorch and ONNX read it
    as, as :func:`_image` does for a convolution; any other tensor as it is."""
    return TensorInfo(x.shape) if _lost(x) else x


@_handles(OpKind.BATCHNORM)
def _bn(a: O.NormAttrs, inputs: Infos) -> TensorInfo:
    _arity(inputs, 1, "bn")
    x = _as_map(inputs[0])
    if x.channel_axis is None:
        raise ValueError(f"bn needs a channel axis, got shape {list(x.shape)}")
    return x


@_handles(OpKind.LRN)
def _lrn(a: O.LRNAttrs, inputs: Infos) -> TensorInfo:
    _arity(inputs, 1, "lrn")
    if inputs[0].channel_axis is None:
        raise ValueError(f"lrn needs a channel axis, got shape {list(inputs[0].shape)}")
    if a.size < 1:
        raise ValueError(f"lrn size must be at least 1, got {a.size}")
    return inputs[0]


@_handles(OpKind.LAYERNORM)
def _ln(a: O.NormAttrs, inputs: Infos) -> TensorInfo:
    _arity(inputs, 1, "ln")
    x = inputs[0]
    axis = a.axis if a.axis is not None else x.channel_axis
    if axis is None or not -len(x.shape) <= axis < len(x.shape):
        raise ValueError(f"ln axis {axis} is not an axis of shape {list(x.shape)}")
    return x


@_handles(OpKind.GROUPNORM)
def _gn(a: O.NormAttrs, inputs: Infos) -> TensorInfo:
    _arity(inputs, 1, "gn")
    x = _as_map(inputs[0])
    c = x.channels
    if c is None or a.groups < 1 or c % a.groups:
        raise ValueError(f"gn groups={a.groups} must divide the channels ({c})")
    return x


@_handles(OpKind.ACT)
def _act(a: O.ActAttrs, inputs: Infos) -> TensorInfo:
    _arity(inputs, 1, "activation")
    if a.fn not in O.ACTIVATIONS:
        raise ValueError(f"unknown activation '{a.fn}' (known: {', '.join(sorted(O.ACTIVATIONS))})")
    return inputs[0]


@_handles(OpKind.DROPOUT, OpKind.IDENTITY, OpKind.ZERO, OpKind.SCALE)
def _same(a: Any, inputs: Infos) -> TensorInfo:
    _arity(inputs, 1, "this op")
    return inputs[0]


def _broadcast(inputs: Infos, what: str) -> TensorInfo:
    _arity(inputs, None, what, at_least=2)
    rank = max(len(x.shape) for x in inputs)
    shape = []
    for axis in range(rank):
        sizes = {x.shape[axis - rank + len(x.shape)] for x in inputs if axis - rank + len(x.shape) >= 0}
        sizes.discard(1)
        if len(sizes) > 1:
            detail = " vs ".join(str(list(x.shape)) for x in inputs)
            label = "channel" if axis == 0 and rank == 3 else f"axis {axis}"
            raise ValueError(f"{label} mismatch at {what}: {detail}; the inputs of {what} need the same shape "
                             "(a size of 1 broadcasts)")
        shape.append(sizes.pop() if sizes else 1)
    # The layout is that of the input with the most positions (the main path of an SE gate).
    base = max(inputs, key=lambda x: (len(x.shape), x.numel))
    return TensorInfo(tuple(shape), base.channel_axis, base.spatial_axes)


@_handles(OpKind.ADD)
def _add(a: O.NoAttrs, inputs: Infos) -> TensorInfo:
    return _broadcast(inputs, "add")


@_handles(OpKind.MUL)
def _mul(a: O.NoAttrs, inputs: Infos) -> TensorInfo:
    return _broadcast(inputs, "mul")


@_handles(OpKind.CONCAT)
def _concat(a: O.AxisAttrs, inputs: Infos) -> TensorInfo:
    _arity(inputs, None, "concat", at_least=1)
    rank = len(inputs[0].shape)
    axis = a.axis % rank if -rank <= a.axis < rank else None
    if axis is None:
        raise ValueError(f"concat axis {a.axis} is not an axis of shape {list(inputs[0].shape)}")
    for x in inputs[1:]:
        same = len(x.shape) == rank and all(
            x.shape[i] == inputs[0].shape[i] for i in range(rank) if i != axis
        )
        if not same:
            detail = " vs ".join(str(list(y.shape)) for y in inputs)
            joined = "channels" if axis == inputs[0].channel_axis else f"axis {axis}"
            raise ValueError(f"concat joins along {joined} and needs equal sizes on every other axis: {detail}")
    shape = list(inputs[0].shape)
    shape[axis] = sum(x.shape[axis] for x in inputs)
    return TensorInfo(tuple(shape), inputs[0].channel_axis, inputs[0].spatial_axes)


@_handles(OpKind.SLICE)
def _slice(a: O.SliceAttrs, inputs: Infos) -> TensorInfo:
    _arity(inputs, 1, "slice")
    x = inputs[0]
    if not 0 <= a.axis < len(x.shape) or not 0 <= a.start < a.stop <= x.shape[a.axis]:
        raise ValueError(f"slice [{a.start}:{a.stop}] on axis {a.axis} does not fit shape {list(x.shape)}")
    if a.step < 1 or (a.reverse and a.step != 1):
        raise ValueError(f"slice step {a.step} (a step of 1 or more, forwards; backwards only step 1)")
    shape = list(x.shape)
    shape[a.axis] = -(-(a.stop - a.start) // a.step)
    return TensorInfo(tuple(shape), x.channel_axis, x.spatial_axes)


@_handles(OpKind.CHANNEL_SHUFFLE)
def _shuffle(a: O.ShuffleAttrs, inputs: Infos) -> TensorInfo:
    _arity(inputs, 1, "channel_shuffle")
    c = inputs[0].channels
    if c is None or a.groups < 1 or c % a.groups:
        raise ValueError(f"channel_shuffle groups={a.groups} must divide the channels ({c})")
    return inputs[0]


def _factor(a: O.FactorAttrs, inputs: Infos, what: str) -> tuple[int, int, int, int]:
    _arity(inputs, 1, what)
    c, h, w = _image(inputs[0], what)
    if a.factor < 1:
        raise ValueError(f"{what} factor must be at least 1, got {a.factor}")
    return c, h, w, a.factor


@_handles(OpKind.PIXEL_SHUFFLE)
def _pixel_shuffle(a: O.FactorAttrs, inputs: Infos) -> TensorInfo:
    c, h, w, r = _factor(a, inputs, "pixel_shuffle")
    if c % (r * r):
        raise ValueError(f"pixel_shuffle by {r} needs channels divisible by {r * r}, got {c}")
    return TensorInfo((c // (r * r), h * r, w * r))


@_handles(OpKind.PIXEL_UNSHUFFLE)
def _pixel_unshuffle(a: O.FactorAttrs, inputs: Infos) -> TensorInfo:
    c, h, w, r = _factor(a, inputs, "pixel_unshuffle")
    if h % r or w % r:
        raise ValueError(f"pixel_unshuffle by {r} needs height and width divisible by {r}, got {h}x{w}")
    return TensorInfo((c * r * r, h // r, w // r))


@_handles(OpKind.FLATTEN)
def _flatten(a: O.AxisAttrs, inputs: Infos) -> TensorInfo:
    _arity(inputs, 1, "flatten")
    x = inputs[0]
    start = a.axis % len(x.shape) if x.shape else 0
    head = x.shape[:start]
    tail = 1
    for d in x.shape[start:]:
        tail *= d
    merged = set(range(start, len(x.shape)))
    return _relayout(x, head + (tail,), merged, start)


def _relayout(x: TensorInfo, shape: tuple[int, ...], merged: set[int], at: int) -> TensorInfo:
    """Layout after axes ``merged`` of ``x`` collapse into one axis at position ``at``."""
    ch = x.channel_axis
    sp = set(x.spatial_axes)
    if ch is not None and ch in merged and merged & sp:
        return TensorInfo(shape, at, ())  # channels and positions mixed: no spatial structure left
    if merged <= sp and merged:
        new_sp = tuple(sorted({a for a in sp if a < at} | {at}))
        return TensorInfo(shape, ch if ch is None or ch < at else None, new_sp)
    if ch is not None and ch in merged:
        return TensorInfo(shape, at, tuple(a for a in x.spatial_axes if a < at))
    return TensorInfo(shape, ch if ch is not None and ch < len(shape) else None,
                      tuple(a for a in x.spatial_axes if a < len(shape)))


@_handles(OpKind.RESHAPE)
def _reshape(a: O.ReshapeAttrs, inputs: Infos) -> TensorInfo:
    _arity(inputs, 1, "reshape")
    x = inputs[0]
    target = list(a.shape)
    if target.count(-1) > 1 or any(d == 0 or d < -1 for d in target):
        raise ValueError(f"reshape target {target} is not a valid shape")
    if -1 in target:
        known = 1
        for d in target:
            if d != -1:
                known *= d
        if known == 0 or x.numel % known:
            raise ValueError(f"cannot reshape {list(x.shape)} to {target}")
        target[target.index(-1)] = x.numel // known
    prod = 1
    for d in target:
        prod *= d
    if prod != x.numel:
        raise ValueError(f"cannot reshape {list(x.shape)} ({x.numel} values) to {target} ({prod})")
    shape = tuple(target)
    if shape == x.shape:
        return x
    if len(x.shape) == 2 and x.channel_axis == 0 and x.spatial_axes == (1,) and shape in (
            (x.shape[0], 1, x.shape[1]), (x.shape[0], x.shape[1], 1)):
        return TensorInfo(shape, 0, (1, 2))  # (C, L) -> (C, 1, L): a 1-D map as a 2-D one (conv1d)
    moved = _ones_moved(x, shape)
    if moved is not None:
        return moved
    # Positions survive when the spatial sizes stay as trailing axes (a channel shuffle's view);
    # channels survive only if the leading product is unchanged.
    sp = x.spatial
    if sp and x.spatial_axes == tuple(range(len(x.shape) - len(sp), len(x.shape))) and shape[-len(sp):] == sp:
        lead = len(shape) - len(sp)
        # (H, W) -> (1, H, W): a map that lost its channels (a max over them) gains one again;
        # (k, C, H, W) -> (k·C, H, W): channels merged with the axis before them (a flattened stack),
        # and (g, C/g, H, W) -> (C, H, W): channels split into groups and merged again
        ch = 0 if lead == 1 else None
        return TensorInfo(shape, ch, tuple(range(lead, len(shape))))
    # Positions flattened into one trailing axis, unflattened again: (C, H·W) -> (C, H, W) (tokens
    # turned back into a map: a non-local block, a transformer stage in a CNN).
    if len(sp) == 1 and x.spatial_axes == (len(x.shape) - 1,) and len(shape) == len(x.shape) + 1 \
            and shape[:-2] == x.shape[:-1] and shape[-2] * shape[-1] == sp[0]:
        lead = len(shape) - 2
        ch = x.channel_axis if x.channel_axis is not None and x.channel_axis < lead else None
        return TensorInfo(shape, ch, (lead, lead + 1))
    # Tokens whose features are split into groups or merged back, positions untouched: (N, C) ->
    # (N, g, C/g) and back (a grouped per-token MLP, multi-head attention's head split).
    feats = shape[len(sp):]  # (an axis of size 1 among them is an unsqueeze: a 1-D conv's view, not this)
    if sp and x.spatial_axes == tuple(range(len(sp))) and shape[:len(sp)] == sp and feats and min(feats) > 1 \
            and x.channel_axis is not None and x.channel_axis >= len(sp):
        return TensorInfo(shape, len(shape) - 1, tuple(range(len(sp))))
    # A channel vector viewed as a 1×1 map: (C,) -> (C, 1, 1) (an SE gate's view(b, c, 1, 1)).
    if not sp and x.channel_axis is not None and len(x.shape) == 1 and shape == (x.shape[0], 1, 1):
        return TensorInfo(shape, 0, (1, 2))
    if len(shape) == 1:
        return TensorInfo(shape, 0, ())
    return TensorInfo(shape, None, ())


def _ones_moved(x: TensorInfo, shape: tuple[int, ...]) -> TensorInfo | None:
    """A view of a map with channels that only inserts or removes axes of size 1 (unsqueeze, squeeze,
    a stack's new axis) keeps the channel and spatial axes where they move to; None when it drops
    one of them, or when there is no map with channels to keep (the rules after this one decide)."""
    if x.channel_axis is None or not x.spatial_axes:
        return None
    a = [i for i, d in enumerate(x.shape) if d != 1]
    b = [i for i, d in enumerate(shape) if d != 1]
    if [x.shape[i] for i in a] != [shape[i] for i in b]:
        return None
    to = dict(zip(a, b))
    if x.channel_axis not in to or any(s not in to for s in x.spatial_axes):
        return None
    return TensorInfo(shape, to[x.channel_axis], tuple(to[s] for s in x.spatial_axes))


@_handles(OpKind.PERMUTE)
def _permute(a: O.PermuteAttrs, inputs: Infos) -> TensorInfo:
    _arity(inputs, 1, "permute")
    x = inputs[0]
    if sorted(a.perm) != list(range(len(x.shape))):
        raise ValueError(f"permutation {list(a.perm)} does not fit shape {list(x.shape)}")
    shape = tuple(x.shape[p] for p in a.perm)
    ch = a.perm.index(x.channel_axis) if x.channel_axis is not None else None
    sp = tuple(a.perm.index(s) for s in x.spatial_axes)
    return TensorInfo(shape, ch, sp)


@_handles(OpKind.LINEAR)
def _linear(a: O.LinearAttrs, inputs: Infos) -> TensorInfo:
    _arity(inputs, 1, "linear")
    x = inputs[0]
    if a.out_features < 1:
        raise ValueError(f"linear needs positive out features, got {a.out_features}")
    if not x.shape:
        raise ValueError("linear needs at least one axis")
    last = len(x.shape) - 1
    shape = x.shape[:-1] + (a.out_features,)
    if x.channel_axis == last or not x.spatial_axes:
        return TensorInfo(shape, last, tuple(s for s in x.spatial_axes if s != last))
    # A linear over a spatial axis mixes positions: no spatial structure is kept on that axis.
    return TensorInfo(shape, x.channel_axis if x.channel_axis != last else None,
                      tuple(s for s in x.spatial_axes if s != last))


@_handles(OpKind.MATMUL)
def _matmul(a: O.NoAttrs, inputs: Infos) -> TensorInfo:
    _arity(inputs, 2, "matmul")
    x, y = inputs
    if len(x.shape) < 2 or len(y.shape) < 2:
        raise ValueError(f"matmul needs two matrices, got {list(x.shape)} and {list(y.shape)}")
    if x.shape[-1] != y.shape[-2]:
        raise ValueError(f"matmul inner sizes differ: {list(x.shape)} @ {list(y.shape)}")
    bx, by = x.shape[:-2], y.shape[:-2]
    batch = _broadcast_dims(bx, by)
    return TensorInfo(batch + (x.shape[-2], y.shape[-1]), len(batch) + 1, ())


def _broadcast_dims(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    n = max(len(a), len(b))
    a = (1,) * (n - len(a)) + a
    b = (1,) * (n - len(b)) + b
    out = []
    for p, q in zip(a, b):
        if p != q and 1 not in (p, q):
            raise ValueError(f"batch sizes {list(a)} and {list(b)} do not broadcast")
        out.append(max(p, q))
    return tuple(out)


@_handles(OpKind.ATTENTION)
def _attention(a: O.AttentionAttrs, inputs: Infos) -> TensorInfo:
    _arity(inputs, 3, "attention")
    q, k, v = (x.shape for x in inputs)
    if len(q) < 2 or q[-1] != k[-1] or k[-2] != v[-2]:
        raise ValueError(f"attention shapes do not fit: q {list(q)}, k {list(k)}, v {list(v)}")
    shape = q[:-1] + (v[-1],)
    return TensorInfo(shape, len(shape) - 1, ())


@_handles(OpKind.SOFTMAX)
def _softmax(a: O.AxisAttrs, inputs: Infos) -> TensorInfo:
    _arity(inputs, 1, "softmax")
    x = inputs[0]
    if not -len(x.shape) <= a.axis < len(x.shape):
        raise ValueError(f"softmax axis {a.axis} is not an axis of shape {list(x.shape)}")
    return x


@_handles(OpKind.MEAN)
def _mean(a: O.ReduceAttrs, inputs: Infos) -> TensorInfo:
    _arity(inputs, 1, "mean")
    x = inputs[0]
    rank = len(x.shape)
    if a.fn not in REDUCE_FNS:
        raise ValueError(f"reduction must be one of {', '.join(REDUCE_FNS)}, got '{a.fn}'")
    axes = sorted({ax % rank for ax in a.axes}) if all(-rank <= ax < rank for ax in a.axes) else None
    if not axes:
        raise ValueError(f"{a.fn} axes {list(a.axes)} do not fit shape {list(x.shape)}")
    if a.keepdims:
        shape = tuple(1 if i in axes else d for i, d in enumerate(x.shape))
        return TensorInfo(shape, x.channel_axis, x.spatial_axes)
    keep = [i for i in range(rank) if i not in axes]
    shape = tuple(x.shape[i] for i in keep)
    ch = keep.index(x.channel_axis) if x.channel_axis in keep else None
    sp = tuple(keep.index(s) for s in x.spatial_axes if s in keep)
    if ch is None and len(sp) == 2 and sp == (len(shape) - 2, len(shape) - 1) and len(shape) == 3 \
            and x.channel_axis is None:  # (k, C, H, W) summed over k (SKNet's branches): a (C, H, W) map
        ch = 0
    return TensorInfo(shape, ch, sp)


@_handles(OpKind.PAD)
def _pad(a: O.PadAttrs, inputs: Infos) -> TensorInfo:
    _arity(inputs, 1, "pad")
    c, h, w = _image(inputs[0], "pad")
    (t, b), (l, r) = a.padding
    oh, ow = h + t + b, w + l + r
    if oh < 1 or ow < 1:
        raise ValueError(f"padding {[list(p) for p in a.padding]} leaves an empty map")
    return TensorInfo((c, oh, ow))


@_handles(OpKind.CONSTANT)
def _constant(a: O.ConstAttrs, inputs: Infos) -> TensorInfo:
    _arity(inputs, 0, "constant", at_least=0)
    if any(d < 1 for d in a.shape):
        raise ValueError(f"constant shape must be positive sizes, got {list(a.shape)}")
    # A held tensor has no layout of its own: merged with a feature map, the map's layout wins.
    return TensorInfo(tuple(a.shape), None, ())


@_handles(OpKind.UNKNOWN)
def _unknown(a: O.UnknownAttrs, inputs: Infos) -> TensorInfo:
    if not a.shape:
        raise ValueError(f"unknown op '{a.target}' needs its observed output shape")
    x = inputs[0] if inputs else None
    if x is not None and x.shape == a.shape:
        return x
    if len(a.shape) == 3:
        return TensorInfo(a.shape)
    return TensorInfo(a.shape, None, ())


require_all(_HANDLERS, OpKind, "shape handler")

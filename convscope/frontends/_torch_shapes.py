"""Shape logic of PyTorch's data-movement ops (view, permute, indexing, split, cat…) and the
attribute records of convolutions and pools, for the handlers in ``_torch_functions``.

The batch axis is tracked through every op: a reshape keeps it where the product of the sizes
before it is unchanged (with batch size 2, folding it into another axis is detected and refused);
a permute moves it.  An op that only moves the batch axis, or changes nothing, adds no node.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from convscope.errors import INPUT_HINT, InputError
from convscope.frontends._torch_values import NO_BATCH, ConstVal, TVal, Unsupported
from convscope.ir import ops as O
from convscope.ir.ops import OpKind

__all__ = ["batch_axis_after", "conv_attrs", "layout_handlers", "pair", "pool_attrs", "reduce_handler"]


def pair(v: Any) -> tuple[int, int]:
    if isinstance(v, (tuple, list)):
        if len(v) == 1:
            return int(v[0]), int(v[0])
        if len(v) != 2:
            raise Unsupported(f"expected one or two sizes, got {list(v)}")
        return int(v[0]), int(v[1])
    return int(v), int(v)


def conv_attrs(w: Sequence[int], stride: Any, padding: Any, dilation: Any, groups: int, bias: bool) -> O.ConvAttrs:
    """A Conv2d's record from its weight shape (out, in/groups, kh, kw) and arguments; padding may be
    a number, a pair, 'valid' or 'same' (PyTorch puts the odd pixel of 'same' at the bottom/right)."""
    if len(w) != 4:
        raise Unsupported(f"a convolution with a weight of shape {list(w)} (only 2-D)")
    k, s, d = (w[2], w[3]), pair(stride), pair(dilation)
    if padding == "valid":
        pads = ((0, 0), (0, 0))
    elif padding == "same":
        totals = [d[i] * (k[i] - 1) for i in (0, 1)]
        pads = ((totals[0] // 2, totals[0] - totals[0] // 2), (totals[1] // 2, totals[1] - totals[1] // 2))
    else:
        p = pair(padding)
        pads = ((p[0], p[0]), (p[1], p[1]))
    return O.ConvAttrs(int(w[0]), (int(k[0]), int(k[1])), s, pads, d, int(groups), bool(bias))


def pool_attrs(kernel: Any, stride: Any, padding: Any, dilation: Any, ceil: bool,
               count_include_pad: bool = True) -> O.PoolAttrs:
    k = pair(kernel)
    s = k if stride is None or (isinstance(stride, (list, tuple)) and not stride) else pair(stride)
    p = pair(padding)
    return O.PoolAttrs(k, s, ((p[0], p[0]), (p[1], p[1])), pair(dilation), ceil, count_include_pad)


def batch_axis_after(shape_in: Sequence[int], bpos: int, shape_out: Sequence[int], batch: int) -> int:
    """Where the batch axis is after a reshape: the first axis of the batch's size whose preceding
    sizes multiply to the same product as before it (so do the sizes after it).

    A batch of 1 (an ONNX export's) may be folded into another axis and come back later, as
    exported attention does with (L, B·heads, d): that changes no value, so the tensor is then
    batchless (NO_BATCH: every axis is an IR axis) until a reshape makes an axis of size 1 again."""
    if bpos == NO_BATCH:
        return next((i for i, s in enumerate(shape_out) if s == 1), NO_BATCH)
    before, after = math.prod(shape_in[:bpos]), math.prod(shape_in[bpos + 1:])
    acc = 1
    for i, size in enumerate(shape_out):
        if acc == before and size == batch and math.prod(shape_out[i + 1:]) == after:
            return i
        acc *= size
        if acc > before:
            break
    if batch == 1:
        return NO_BATCH
    raise Unsupported(f"the reshape {list(shape_in)} -> {list(shape_out)} folds the batch axis into another")


def _sizes(args: Sequence[Any]) -> list[int]:
    """view(2, 3) / view((2, 3)) / view(torch.Size(...)) -> [2, 3]."""
    if len(args) == 1 and isinstance(args[0], (tuple, list)):
        args = args[0]
    out = []
    for a in args:
        if not isinstance(a, int):
            raise Unsupported(f"a size that is not a number: {a!r}")
        out.append(int(a))
    return out


def _resolve(shape: list[int], numel: int) -> tuple[int, ...]:
    if shape.count(-1) == 1:
        known = math.prod(d for d in shape if d != -1)
        if known == 0 or numel % known:
            raise Unsupported(f"cannot reshape {numel} values to {shape}")
        shape[shape.index(-1)] = numel // known
    if math.prod(shape) != numel:
        raise Unsupported(f"cannot reshape {numel} values to {shape}")
    return tuple(shape)


def _shuffled(c: Any, x: TVal, ir: tuple[int, ...]) -> str | None:
    """The image a channel shuffle starts from, if ``x`` -> ``ir`` ends one: view (g, C/g, H, W),
    transpose(1, 2), view (C, H, W) (the view/transpose forms lose the image layout; the shuffle
    keeps it, and the bypassed nodes are pruned at the end)."""
    b = c.lo.b
    if len(ir) != 3 or len(x.ir_shape) != 4 or x.bpos != 0 or x.node not in b:
        return None
    p = b.get(x.node)
    if p.op is not OpKind.PERMUTE or p.attrs.perm != (1, 0, 2, 3):
        return None
    r = b.get(p.inputs[0])
    if r.op is not OpKind.RESHAPE or b.info(r.inputs[0]).shape != ir or not b.info(r.inputs[0]).is_image:
        return None
    cg, g, h, w = x.ir_shape  # after the transpose
    return r.inputs[0] if (cg * g, h, w) == ir else None


def _reshaped(c: Any, x: TVal, out: tuple[int, ...], bpos: int | None = None) -> TVal:
    """x viewed as ``out`` (a PyTorch shape): no node, a FLATTEN (trailing axes merged) or a RESHAPE.
    ``bpos``: where the batch axis is in ``out``, when the caller knows (else found from the sizes)."""
    bpos = batch_axis_after(x.shape, x.bpos, out, c.lo.batch) if bpos is None else bpos
    ir = out if bpos == NO_BATCH else out[:bpos] + out[bpos + 1:]
    if ir == x.ir_shape:
        return TVal(x.node, out, bpos)
    image = _shuffled(c, x, ir)
    if image is not None:
        # x is the transposed (C/g, g, H, W): the groups are its second axis
        return c.emit(OpKind.CHANNEL_SHUFFLE, O.ShuffleAttrs(x.ir_shape[1]), [TVal(image, out, 0)], bpos=0)
    k = len(out) - 1
    if 0 <= bpos < k and x.bpos == bpos and out[:k] == x.shape[:k] and out[k] == math.prod(x.shape[k:]) and k < x.ndim:
        return c.emit(OpKind.FLATTEN, O.AxisAttrs(x.ir_axis(k)), [x], bpos=bpos)
    return c.emit(OpKind.RESHAPE, O.ReshapeAttrs(ir), [x], bpos=bpos)


def _view(c: Any) -> TVal:
    x = c.tensor()
    numel = math.prod(x.shape)
    if c.what in ("view_as", "reshape_as"):
        other = c.arg(1, "other")
        return _reshaped(c, x, tuple(other.shape))
    if c.what == "flatten":
        start, end = x.axis(c.arg(1, "start_dim", 0)), x.axis(c.arg(2, "end_dim", -1))
        out = x.shape[:start] + (math.prod(x.shape[start:end + 1]),) + x.shape[end + 1:]
    elif c.what == "unflatten":
        d = x.axis(c.arg(1, "dim"))
        sizes = _resolve(list(c.arg(2, "sizes")), x.shape[d])
        out = x.shape[:d] + sizes + x.shape[d + 1:]
    elif c.what == "unsqueeze":
        d = c.arg(1, "dim")
        d = d % (x.ndim + 1)
        out = x.shape[:d] + (1,) + x.shape[d:]
        # exact even when the batch is 1 (an ONNX export's): the new axis goes in before or after it
        return _reshaped(c, x, tuple(out), x.bpos if x.bpos == NO_BATCH or d > x.bpos else x.bpos + 1)
    elif c.what == "squeeze":
        dims = c.arg(1, "dim", None)
        dims = range(x.ndim) if dims is None else ([dims] if isinstance(dims, int) else list(dims))
        drop = {x.axis(d) for d in dims if x.shape[x.axis(d)] == 1}
        out = tuple(s for i, s in enumerate(x.shape) if i not in drop)
    else:
        out = _resolve(_sizes(c.args[1:] or [c.kwargs.get("shape") or c.kwargs.get("size")]), numel)
    return _reshaped(c, x, tuple(out))


def _expand(c: Any) -> TVal:
    """expand / expand_as / broadcast_to: only the batch axis, the spatial axes of a (C, 1, 1) map
    (an SE gate's ``y.expand_as(x)``, a nearest upsampling from 1x1) or the channels of a (1, H, W)
    one (a norm over channels, ``x / n.expand_as(x)``: the copies concatenated) may grow."""
    x = c.tensor()
    target = tuple(c.arg(1, "other").shape) if c.what == "expand_as" else tuple(
        _sizes(c.args[1:] or [c.kwargs.get("size")]))
    if len(target) != x.ndim:
        raise Unsupported(f"expand {list(x.shape)} to {list(target)}")
    out = tuple(s if t == -1 else t for s, t in zip(x.shape, target))
    grown = [i for i, (s, t) in enumerate(zip(x.shape, out)) if s != t and i != x.bpos]
    if not grown:
        return TVal(x.node, x.shape, x.bpos)
    if x.ndim == 4 and x.bpos == 0 and set(grown) <= {1, 2, 3} and all(x.shape[i] == 1 for i in grown):
        y = x
        if set(grown) & {2, 3}:
            y = c.emit(OpKind.UPSAMPLE, O.UpsampleAttrs("nearest", size=(out[2], out[3])), [x],
                       name=f"{c.name}.spatial" if 1 in grown else None)
        if 1 in grown:  # one channel repeated (a norm over channels divided into each): copies of it
            y = c.emit(OpKind.CONCAT, O.AxisAttrs(0), [y] * out[1])
        return y
    raise Unsupported(f"expand {list(x.shape)} to {list(out)}")


def _permutation(c: Any, x: TVal) -> list[int]:
    n = x.ndim
    if c.what == "permute":
        perm = _sizes(c.args[1:] or [c.kwargs.get("dims")])
        return [p % n for p in perm]
    if c.what in ("transpose", "t"):
        d0, d1 = (0, 1) if c.what == "t" else (x.axis(c.arg(1, "dim0")), x.axis(c.arg(2, "dim1")))
        perm = list(range(n))
        perm[d0], perm[d1] = perm[d1], perm[d0]
        return perm
    src, dst = c.arg(1, "source"), c.arg(2, "destination")  # movedim
    src = [src] if isinstance(src, int) else list(src)
    dst = [dst] if isinstance(dst, int) else list(dst)
    src, dst = [x.axis(s) for s in src], [x.axis(d) for d in dst]
    rest = [i for i in range(n) if i not in src]
    perm = [-1] * n
    for s, d in zip(src, dst):
        perm[d] = s
    it = iter(rest)
    return [p if p != -1 else next(it) for p in perm]


def _permute(c: Any) -> TVal:
    x = c.tensor()
    perm = _permutation(c, x)
    if sorted(perm) != list(range(x.ndim)):
        raise Unsupported(f"permutation {perm} of shape {list(x.shape)}")
    out = tuple(x.shape[p] for p in perm)
    if x.bpos == NO_BATCH:
        bpos, ir_perm = NO_BATCH, tuple(perm)
    else:
        bpos = perm.index(x.bpos)
        ir_perm = tuple(p - (p > x.bpos) for p in perm if p != x.bpos)
    if ir_perm == tuple(range(len(ir_perm))):
        return TVal(x.node, out, bpos)
    return c.emit(OpKind.PERMUTE, O.PermuteAttrs(ir_perm), [x], bpos=bpos)


def _slice(c: Any, x: TVal, d: int, start: int, stop: int, name: str | None = None, reverse: bool = False,
           step: int = 1) -> TVal:
    if start == 0 and stop == x.shape[d] and not reverse and step == 1:
        return x
    return c.emit(OpKind.SLICE, O.SliceAttrs(x.ir_axis(d), start, stop, reverse, step), [x], name=name)


def _flip(c: Any) -> TVal:
    """torch.flip: each flipped axis is a slice read backwards (positions mirrored, receptive
    fields unchanged)."""
    x = c.tensor()
    dims = c.arg(1, "dims")
    dims = [dims] if isinstance(dims, int) else list(dims)
    for k, d in enumerate(dict.fromkeys(x.axis(v) for v in dims)):
        if d == x.bpos:
            raise Unsupported("flipping the batch axis")
        x = _slice(c, x, d, 0, x.shape[d], name=c.name if k == 0 else f"{c.name}.{k}", reverse=True)
    return x


def _narrow(c: Any) -> TVal:
    """x.narrow(dim, start, length): the slice x[..., start:start + length] along dim."""
    x = c.tensor()
    d, start, length = x.axis(int(c.arg(1, "dim"))), c.arg(2, "start"), c.arg(3, "length")
    if not isinstance(start, int) or not isinstance(length, int):
        raise Unsupported("narrow with a start or length computed from the input")
    if d == x.bpos:
        raise Unsupported("narrowing the batch axis")
    start = start % x.shape[d] if start < 0 else start
    if length < 0 or start + length > x.shape[d]:
        raise InputError(f"layer '{c.name}': narrow({d}, {start}, {length}) does not fit the axis of "
                         f"{x.shape[d]}" + INPUT_HINT)
    return _slice(c, x, d, start, start + length, name=c.name)


def _getitem(c: Any) -> Any:
    x, idx = c.arg(0, "input"), c.arg(1, "index")
    if not isinstance(x, TVal):
        raise Unsupported("indexing a value that is not a tensor")
    idx = idx if isinstance(idx, tuple) else (idx,)
    if any(isinstance(i, (TVal, ConstVal, list)) for i in idx):
        raise Unsupported("indexing with a tensor or a list (advanced indexing)")
    n_used = sum(1 for i in idx if i is not None and i is not Ellipsis)
    if idx.count(Ellipsis) > 1 or n_used > x.ndim:
        raise Unsupported(f"index {idx!r} of shape {list(x.shape)}")
    expanded: list[Any] = []
    for i in idx:
        if i is Ellipsis:
            expanded += [slice(None)] * (x.ndim - n_used)
        else:
            expanded.append(i)
    expanded += [slice(None)] * (x.ndim - sum(1 for i in expanded if i is not None))
    out_shape: list[int] = []
    dropped, inserted = False, False
    d, cur, bpos = 0, x, None
    for i in expanded:
        if i is None:
            out_shape.append(1)
            inserted = True
            continue
        size = x.shape[d]
        if d == x.bpos:
            if not (isinstance(i, slice) and i.indices(size) == (0, size, 1)):
                raise Unsupported("indexing along the batch axis")
            bpos = len(out_shape)
            out_shape.append(size)
        elif isinstance(i, int):
            j = i % size if -size <= i < size else None
            if j is None:
                raise Unsupported(f"index {i} out of range for size {size}")
            cur = _slice(c, cur, d, j, j + 1, name=c.name + f".{d}")
            dropped = True
        elif isinstance(i, slice):
            start, stop, step = i.indices(size)
            reverse = step == -1 and stop < start
            if reverse:  # x[..., ::-1] or a part of it: the same positions, read backwards
                start, stop, step = stop + 1, start + 1, 1
            elif step < 1 or stop <= start:
                raise Unsupported(f"slice {i!r} (only non-empty slices, forwards with any step or backwards "
                                  "with step -1)")
            cur = _slice(c, cur, d, start, stop, name=c.name if not (dropped or inserted) else c.name + f".{d}",
                         reverse=reverse, step=step)
            out_shape.append(len(range(start, stop, step)))
        else:
            raise Unsupported(f"index {i!r}")
        d += 1
    if bpos is None:
        bpos = NO_BATCH
    if not (dropped or inserted):
        return cur
    ir = tuple(s for k, s in enumerate(out_shape) if k != bpos)
    if ir == cur.ir_shape:
        return TVal(cur.node, tuple(out_shape), bpos)
    return c.emit(OpKind.RESHAPE, O.ReshapeAttrs(ir), [cur], bpos=bpos)


def _split(c: Any) -> tuple[TVal, ...]:
    x = c.tensor()
    if c.what == "unbind":
        d = x.axis(c.arg(1, "dim", 0))
        sizes = [1] * x.shape[d]
    else:
        d = x.axis(c.arg(2, "dim", 0))
        n = x.shape[d]
        spec = c.arg(1, "split_size_or_sections" if c.what == "split" else "chunks")
        if c.what == "chunk":
            each = -(-n // int(spec))
            sizes = [min(each, n - k) for k in range(0, n, each)]
        elif isinstance(spec, int):
            sizes = [min(spec, n - k) for k in range(0, n, spec)]
        else:
            sizes = [int(s) for s in spec]
            if sum(sizes) != n or min(sizes, default=0) < 0:
                raise InputError(f"layer '{c.name}': split sizes {sizes} must add up to the {n} the axis has" + INPUT_HINT)
    if d == x.bpos:
        raise Unsupported("splitting along the batch axis")
    outs, start = [], 0
    for k, size in enumerate(sizes):
        part = c.emit(OpKind.SLICE, O.SliceAttrs(x.ir_axis(d), start, start + size), [x], name=f"{c.name}.{k}") \
            if size != x.shape[d] else x
        if c.what == "unbind":
            shape = part.shape[:d] + part.shape[d + 1:]
            bpos = part.bpos - (d < part.bpos) if part.bpos != NO_BATCH else NO_BATCH
            part = c.emit(OpKind.RESHAPE, O.ReshapeAttrs(shape[:bpos] + shape[bpos + 1:]), [part], bpos=bpos,
                          name=f"{c.name}.{k}")
        outs.append(part)
        start += size
    return tuple(outs)


def _cat(c: Any) -> TVal:
    xs = list(c.arg(0, "tensors"))
    d = c.arg(1, "dim", 0)
    if any(not isinstance(x, (TVal, ConstVal)) for x in xs):  # a value without batch axis (Opaque)
        raise Unsupported(f"{c.what} of a value without a batch axis")
    ts = [x for x in xs if isinstance(x, TVal)]
    first = ts[0]
    if any(x.ndim != first.ndim or x.bpos != first.bpos for x in ts) or any(x.ndim != first.ndim for x in xs):
        raise Unsupported("concatenating tensors whose batch axes do not line up")
    if len(xs) == 1:
        return first
    if c.what == "stack":
        d = d % (first.ndim + 1)
        parts = []
        for k, x in enumerate(xs):
            shape = x.shape[:d] + (1,) + x.shape[d:]
            if isinstance(x, TVal):
                bpos = x.bpos + (d <= x.bpos) if x.bpos != NO_BATCH else NO_BATCH
                parts.append(c.emit(OpKind.RESHAPE, O.ReshapeAttrs(shape[:bpos] + shape[bpos + 1:]), [x], bpos=bpos,
                                    name=f"{c.name}.{k}"))
            else:
                parts.append(ConstVal(x.tensor.reshape(shape), x.sources))
        xs, first = parts, parts[0] if isinstance(parts[0], TVal) else next(p for p in parts if isinstance(p, TVal))
    axis = first.ir_axis(d)
    return c.emit(OpKind.CONCAT, O.AxisAttrs(axis), xs, bpos=first.bpos)


_REDUCE_FN = {"mean": "mean", "sum": "sum", "amax": "max", "amin": "min", "max": "max", "min": "min"}


def reduce_handler(c: Any) -> Any:
    """mean / sum / amax / amin over some axes, and max / min over one axis (values and indices),
    never over the batch."""
    x = c.tensor()
    dims = c.arg(1, "dim", None)
    if c.what in ("max", "min") and not isinstance(dims, int):
        raise Unsupported(f"{c.what} of a whole tensor" if dims is None else f"{c.what} of two tensors")
    if dims is None:
        raise Unsupported(f"{c.what} over every axis, the batch included")
    dims = [dims] if isinstance(dims, int) else list(dims)
    keep = bool(c.arg(2, "keepdim", False))
    axes = tuple(sorted({x.ir_axis(d) for d in dims}))
    torch_dims = {x.axis(d) for d in dims}
    bpos = x.bpos if keep or x.bpos == NO_BATCH else x.bpos - sum(1 for d in torch_dims if d < x.bpos)
    if c.what == "amax" and x.ndim == 4 and x.bpos == 0 and axes == (1, 2):
        return c.emit(OpKind.GLOBAL_MAXPOOL, O.GlobalPoolAttrs(keep), [x], bpos=0)
    out = c.emit(OpKind.MEAN, O.ReduceAttrs(axes, keep, _REDUCE_FN[c.what]), [x], bpos=bpos)
    if c.what in ("max", "min"):
        # The indices depend on exactly what the values do: the same node stands for both.
        import torch  # only the PyTorch front end calls max/min (the ONNX one imports no torch)

        return getattr(torch.return_types, c.what)((out, replace(out)))
    return out


def layout_handlers(call_type: type) -> dict[str, Callable[[Any], Any]]:
    table: dict[str, Callable[[Any], Any]] = {}
    for name in ("view", "reshape", "view_as", "reshape_as", "flatten", "unflatten", "unsqueeze", "squeeze"):
        table[name] = _view
    for name in ("expand", "expand_as", "broadcast_to"):
        table[name] = _expand
    for name in ("permute", "transpose", "t", "movedim"):
        table[name] = _permute
    table["getitem"] = _getitem
    table["flip"] = _flip
    table["narrow"] = _narrow
    for name in ("split", "chunk", "unbind"):
        table[name] = _split
    for name in ("cat", "stack"):
        table[name] = _cat
    return table

"""PyTorch functions, tensor methods and operators -> IR nodes: a table from a canonical name
(``conv2d``, ``add``, ``view``…) to a small handler.

A handler gets a :class:`Call` (resolved arguments: :class:`TVal` for tensors that depend on the
input, :class:`ConstVal` for the others, Python values as they are) and returns the result value.
It raises :class:`Unsupported` for a case the IR cannot express; the caller then keeps the op as
``unknown`` with its observed shape.  Calls that read no input-dependent tensor never reach a
handler: they are constants and are evaluated.

Some IR kinds are shared on purpose, because receptive field and cost do not tell them apart:
a subtraction, maximum or minimum of two tensors is an ``add`` node, a division a ``mul`` node.
"""

from __future__ import annotations

import math

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from convscope._registry import registrar
from convscope.errors import INPUT_HINT, InputError
from convscope.frontends._torch_shapes import (
    conv_attrs,
    layout_handlers,
    pair,
    pool_attrs,
    reduce_handler,
)
from convscope.frontends._torch_values import ConstVal, Lowering, TVal, Unsupported
from convscope.ir import ops as O
from convscope.ir.ops import OpKind

__all__ = ["ACT_FNS", "FUNCTIONS", "Call", "canonical"]

_MISSING = object()


@dataclass(slots=True)
class Call:
    lo: Lowering
    name: str  # the node name to use (not yet unique)
    what: str  # canonical op name
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    source: str | None = None
    inplace: bool = False

    def arg(self, i: int, key: str, default: Any = _MISSING) -> Any:
        if i < len(self.args):
            return self.args[i]
        if key in self.kwargs:
            return self.kwargs[key]
        if default is _MISSING:
            raise Unsupported(f"{self.what} needs its argument '{key}'")
        return default

    def part(self, what: str, *args: Any, last: bool = False) -> Any:
        """One of the ops this call is made of (``what`` on ``args``), named ``<name>.<what>``; the
        ``last`` one, whose value is the call's, takes the call's own name."""
        return FUNCTIONS[what](Call(self.lo, self.name if last else f"{self.name}.{what}", what, args, {}, self.source))

    def tensor(self, i: int = 0, key: str = "input") -> TVal:
        x = self.arg(i, key)
        if not isinstance(x, TVal):
            raise Unsupported(f"{self.what}: argument '{key}' is not a tensor computed from the input")
        return x

    def expect(self, what: str, want: int, got: int) -> None:
        """A size the layer was built for and the one it gets: a mismatch is the user's input."""
        if want != got:
            raise InputError(f"layer '{self.name}' expects {want} {what} but gets {got}" + INPUT_HINT)

    def emit(self, op: OpKind, attrs: O.Attrs, inputs: Sequence[TVal | ConstVal], *, bpos: int | None = None,
             name: str | None = None) -> TVal:
        return self.lo.emit(name or self.name, op, attrs, inputs, bpos=bpos, source=self.source)


Handler = Callable[[Call], Any]
FUNCTIONS: dict[str, Handler] = {}
_fn = registrar(FUNCTIONS, "torch function handler")


_INPLACE_OPERATORS = {"iadd": "add", "isub": "sub", "imul": "mul", "itruediv": "truediv", "idiv": "div"}
_ALIASES = {"concat": "cat", "concatenate": "cat", "swapaxes": "transpose", "swapdims": "transpose",
            "moveaxis": "movedim", "clip": "clamp", "divide": "div", "multiply": "mul", "subtract": "sub",
            "true_divide": "div", "truediv": "div", "absolute": "abs", "negative": "neg",
            "matmul": "matmul", "upsample": "interpolate", "split_with_sizes": "split", "silu_": "silu"}


def canonical(name: str) -> tuple[str, bool]:
    """('__iadd__' | 'add_' | 'iadd' | 'add') -> ('add', in place?)."""
    inplace = False
    if name.startswith("__") and name.endswith("__"):
        name = name[2:-2]
    if name in _INPLACE_OPERATORS:
        return _INPLACE_OPERATORS[name], True
    if name.endswith("_") and not name.startswith("_"):
        name, inplace = name[:-1], True
    return _ALIASES.get(name, name), inplace


def _scalar(v: Any) -> float | None:
    """A Python number, or a constant holding one value that is not a parameter."""
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, ConstVal) and not v.sources and v.numel == 1:
        return float(v.array().reshape(-1)[0])
    return None


# -- activations and elementwise math ---------------------------------------------------------------
ACT_FNS = {
    "relu": "relu", "relu6": "relu6", "sigmoid": "sigmoid", "tanh": "tanh", "silu": "swish", "gelu": "gelu",
    "hardswish": "hswish", "hardsigmoid": "hsigmoid", "mish": "mish", "softplus": "softplus",
    "selu": "selu", "elu": "elu", "leaky_relu": "leaky_relu", "exp": "exp", "log": "log", "sqrt": "sqrt",
    "rsqrt": "rsqrt", "abs": "abs", "neg": "neg", "reciprocal": "reciprocal", "erf": "erf",
    "celu": "celu", "softsign": "softsign", "logsigmoid": "logsigmoid", "log_sigmoid": "logsigmoid",
    "tanhshrink": "tanhshrink",
    "hardshrink": "hardshrink", "softshrink": "softshrink",
}


@_fn(*ACT_FNS)
def _act(c: Call) -> TVal:
    x = c.tensor()
    fn = ACT_FNS[c.what]
    alpha = None
    if fn == "leaky_relu":
        alpha = float(c.arg(1, "negative_slope", 0.01))
    elif fn in ("elu", "celu"):
        alpha = float(c.arg(1, "alpha", 1.0))
    elif fn in ("hardshrink", "softshrink"):
        alpha = float(c.arg(1, "lambd", 0.5))
    return c.emit(OpKind.ACT, O.ActAttrs(fn, alpha), [x])


@_fn("hardtanh", "clamp", "clamp_min", "clamp_max")
def _clamp(c: Call) -> TVal:
    x = c.tensor()
    if c.what == "hardtanh":
        lo, hi = c.arg(1, "min_val", -1.0), c.arg(2, "max_val", 1.0)
    elif c.what == "clamp_min":
        lo, hi = c.arg(1, "min"), None
    elif c.what == "clamp_max":
        lo, hi = None, c.arg(1, "max")
    else:
        lo, hi = c.arg(1, "min", None), c.arg(2, "max", None)
    lo_f, hi_f = (_scalar(v) if v is not None else None for v in (lo, hi))
    if (lo is not None and lo_f is None) or (hi is not None and hi_f is None):
        raise Unsupported("clamp with tensor bounds")
    if lo_f == 0.0 and hi_f == 6.0:
        return c.emit(OpKind.ACT, O.ActAttrs("relu6"), [x])
    if lo_f == 0.0 and hi_f is None:
        return c.emit(OpKind.ACT, O.ActAttrs("relu"), [x])
    return c.emit(OpKind.ACT, O.ActAttrs("clamp", lo_f, beta=hi_f), [x])


@_fn("pow", "square")
def _pow(c: Call) -> Any:
    x = c.arg(0, "input")
    e = 2.0 if c.what == "square" else _scalar(c.arg(1, "exponent"))
    if not isinstance(x, TVal) or e is None:
        raise Unsupported("a power with a tensor exponent or base")
    if e == 1.0:
        return x
    return c.emit(OpKind.ACT, O.ActAttrs("pow", e), [x])


@_fn("dropout", "dropout2d", "dropout1d", "dropout3d", "alpha_dropout", "feature_alpha_dropout")
def _dropout(c: Call) -> TVal:
    return c.emit(OpKind.DROPOUT, O.DropoutAttrs(float(c.arg(1, "p", 0.5))), [c.tensor()])


@_fn("softmax", "log_softmax")
def _softmax(c: Call) -> TVal:
    x = c.tensor()
    dim = c.arg(1, "dim", None)
    if dim is None:
        raise Unsupported("softmax without dim")
    return c.emit(OpKind.SOFTMAX, O.AxisAttrs(x.ir_axis(dim)), [x])


# -- arithmetic ------------------------------------------------------------------------------------
_BINARY = {"add": OpKind.ADD, "sub": OpKind.ADD, "rsub": OpKind.ADD, "radd": OpKind.ADD,
           "maximum": OpKind.ADD, "minimum": OpKind.ADD, "mul": OpKind.MUL, "rmul": OpKind.MUL,
           "div": OpKind.MUL, "rtruediv": OpKind.MUL, "rdiv": OpKind.MUL}


@_fn(*_BINARY)
def _binary(c: Call) -> Any:
    a, b = c.arg(0, "input"), c.arg(1, "other")
    what = c.what
    if what in ("rsub", "rtruediv", "rdiv", "radd", "rmul"):  # Tensor.__rsub__(x, s) is s - x
        a, b = b, a
        what = {"rsub": "sub", "rtruediv": "div", "rdiv": "div", "radd": "add", "rmul": "mul"}[what]
    alpha = _scalar(c.kwargs.get("alpha", 1))
    if alpha is None:
        raise Unsupported("add with a tensor alpha")
    sa, sb = _scalar(a), _scalar(b)
    if sb is not None and isinstance(a, TVal):
        return _with_scalar(c, what, a, sb * alpha, scalar_first=False)
    if sa is not None and isinstance(b, TVal):
        return _with_scalar(c, what, b, sa, scalar_first=True)
    if alpha != 1.0 and isinstance(b, TVal):
        b = c.emit(OpKind.SCALE, O.ScaleAttrs(alpha), [b], name=c.name + ".alpha")
    ins = [x for x in (a, b) if isinstance(x, TVal)] + [x for x in (a, b) if isinstance(x, ConstVal)]
    if len(ins) != 2:
        raise Unsupported(f"{c.what} of {type(a).__name__} and {type(b).__name__}")
    _same_batch_axis(ins)
    return c.emit(_BINARY[what], O.NoAttrs(), ins)


def _same_batch_axis(xs: Sequence[TVal | ConstVal]) -> None:
    ts = [x for x in xs if isinstance(x, TVal)]
    rank = max(x.ndim for x in xs)
    if len({x.bpos + rank - x.ndim for x in ts}) > 1:
        raise Unsupported("the operands' batch axes do not line up")


def _with_scalar(c: Call, what: str, x: TVal, s: float, scalar_first: bool) -> Any:
    """x ∘ s (or s ∘ x): a scale, or an add of a literal constant."""
    if what == "mul":
        return x if s == 1.0 else c.emit(OpKind.SCALE, O.ScaleAttrs(s), [x])
    if what == "div":
        if not scalar_first:
            if s == 0.0:
                raise Unsupported("division by zero")
            return x if s == 1.0 else c.emit(OpKind.SCALE, O.ScaleAttrs(1.0 / s), [x])
        r = c.emit(OpKind.ACT, O.ActAttrs("reciprocal"), [x], name=c.name + ".reciprocal")
        return r if s == 1.0 else c.emit(OpKind.SCALE, O.ScaleAttrs(s), [r])
    if what == "sub":
        if scalar_first:  # s - x
            x = c.emit(OpKind.SCALE, O.ScaleAttrs(-1.0), [x], name=c.name + ".neg")
        else:
            s = -s
    if what in ("maximum", "minimum"):
        raise Unsupported(f"{what} with a scalar")
    if s == 0.0:
        return x
    return c.emit(OpKind.ADD, O.NoAttrs(), [x, ConstVal(np.array(s, dtype=np.float32))])


_COMPARE = ("gt", "lt", "ge", "le", "eq", "ne", "greater", "less", "greater_equal", "less_equal", "not_equal")


@_fn(*_COMPARE)
def _compare(c: Call) -> Any:
    """A comparison is elementwise, like an add: of a tensor and a scalar, or of two tensors."""
    return _elementwise(c, [c.arg(0, "input"), c.arg(1, "other")])


@_fn("where")
def _where(c: Call) -> Any:
    """where(cond, a, b): one element chosen per position, elementwise in all three (an add of them,
    to receptive field and cost)."""
    if len(c.args) + len(c.kwargs) < 3:
        raise Unsupported("where(cond) alone (the positions of the true elements)")
    return _elementwise(c, [c.arg(0, "condition"), c.arg(1, "input"), c.arg(2, "other")])


def _elementwise(c: Call, xs: list[Any]) -> Any:
    """One ADD node over ``xs`` (tensors first; a scalar operand is a constant)."""
    xs = [x if isinstance(x, (TVal, ConstVal)) or (s := _scalar(x)) is None else ConstVal(np.array(s, dtype=np.float32))
          for x in xs]
    if any(not isinstance(x, (TVal, ConstVal)) for x in xs):
        raise Unsupported(f"{c.what} of {', '.join(type(x).__name__ for x in xs)}")
    ins = [x for x in xs if isinstance(x, TVal)] + [x for x in xs if isinstance(x, ConstVal)]
    _same_batch_axis(ins)
    return c.emit(OpKind.ADD, O.NoAttrs(), ins)


@_fn("matmul", "bmm", "mm")
def _matmul(c: Call) -> TVal:
    a, b = c.arg(0, "input"), c.arg(1, "other")
    if isinstance(a, TVal) and isinstance(b, ConstVal) and b.ndim == 2:  # x @ W: a linear layer
        c.expect("input features", b.shape[0], a.shape[-1])
        c.lo.count(b.sources)
        return c.emit(OpKind.LINEAR, O.LinearAttrs(b.shape[1], bias=False), [a])
    if not (isinstance(a, TVal) and isinstance(b, TVal)):
        raise Unsupported("a matrix product with a constant left operand")
    if a.ndim != b.ndim or a.bpos != b.bpos or a.bpos >= a.ndim - 2:
        raise Unsupported("a matrix product whose batch axes do not line up")
    return c.emit(OpKind.MATMUL, O.NoAttrs(), [a, b])


@_fn("einsum")
def _einsum(c: Call) -> TVal:
    """A product of two tensors written as an equation ('bhqd,bhkd->bhqk'): permute each operand to
    (batch…, m, k) and (batch…, k, n), multiply, permute the result to the equation's order."""
    eq = c.arg(0, "equation")
    ops = list(c.args[1:])
    if len(ops) == 1 and isinstance(ops[0], (list, tuple)):
        ops = list(ops[0])
    if not isinstance(eq, str) or "->" not in eq or "..." in eq or len(ops) != 2:
        raise Unsupported("einsum other than a product of two tensors with an explicit '->' and no '...'")
    lhs, out = eq.replace(" ", "").split("->")
    ia, ib = lhs.split(",") if lhs.count(",") == 1 else ("", "")
    a, b = ops
    if isinstance(a, ConstVal) and isinstance(b, TVal):
        return _einsum_weight(c, eq, b, ib, a, ia, out)
    if isinstance(a, TVal) and isinstance(b, ConstVal):
        return _einsum_weight(c, eq, a, ia, b, ib, out)
    if not (isinstance(a, TVal) and isinstance(b, TVal)):
        raise Unsupported("einsum with a constant operand")
    if len(ia) != a.ndim or len(ib) != b.ndim or any(len(set(t)) != len(t) for t in (ia, ib, out)):
        raise Unsupported(f"einsum '{eq}' with a repeated index or one that does not match its operands")
    batch = [x for x in ia if x in ib and x in out]
    k = [x for x in ia if x in ib and x not in out]
    m = [x for x in ia if x not in ib]
    n = [x for x in ib if x not in ia]
    if len(k) != 1 or len(m) != 1 or len(n) != 1 or sorted(out) != sorted(batch + m + n):
        raise Unsupported(f"einsum '{eq}' is not one matrix product (one contracted, one row and one column index)")
    if any(a.shape[ia.index(x)] != b.shape[ib.index(x)] for x in batch + k):
        raise Unsupported(f"einsum '{eq}' with broadcast operands")

    def perm(x: TVal, order: list[int], suffix: str) -> TVal:
        return FUNCTIONS["permute"](replace(c, what="permute", args=(x, *order), kwargs={}, name=c.name + suffix))

    pa = perm(a, [ia.index(x) for x in batch + m + k], ".a")
    pb = perm(b, [ib.index(x) for x in batch + k + n], ".b")
    y = _matmul(replace(c, what="matmul", args=(pa, pb), kwargs={}))
    order = batch + m + n
    return perm(y, [order.index(x) for x in out], ".out")


def _einsum_weight(c: Call, eq: str, x: TVal, ix: str, w: ConstVal, iw: str, out: str) -> TVal:
    """An einsum of a tensor with a 2-D weight that contracts one of its axes ('oc,bchw->bohw', a 1x1
    convolution written out; 'btc,cd->btd'): a linear layer over that axis, between permutes."""
    shared = [i for i in iw if i in ix]
    if w.ndim != 2 or len(iw) != 2 or len(ix) != x.ndim or len(shared) != 1 or \
            any(len(set(t)) != len(t) for t in (ix, iw, out)):
        raise Unsupported(f"einsum '{eq}' with a constant operand that is not one 2-D weight contracting one axis")
    k = shared[0]
    n = next(i for i in iw if i != k)
    kept = [i for i in ix if i != k]
    if k in out or sorted(out) != sorted(kept + [n]):
        raise Unsupported(f"einsum '{eq}' with a constant operand that is not one 2-D weight contracting one axis")
    c.expect(f"features along '{k}'", w.shape[iw.index(k)], x.shape[ix.index(k)])

    def perm(v: TVal, order: list[int], suffix: str) -> TVal:
        if order == list(range(len(order))):
            return v
        return FUNCTIONS["permute"](replace(c, what="permute", args=(v, *order), kwargs={}, name=c.name + suffix))

    weight = w if iw == n + k else ConstVal(w.tensor.T if isinstance(w.tensor, np.ndarray) else w.tensor.t(), w.sources)
    y = FUNCTIONS["linear"](replace(c, what="linear", args=(perm(x, [ix.index(i) for i in kept + [k]], ".in"), weight),
                                    kwargs={}))
    order = kept + [n]
    return perm(y, [order.index(i) for i in out], ".out")


def _emit_weighted(c: Call, op: OpKind, attrs: O.Attrs, x: TVal, w: ConstVal, bias: ConstVal | None) -> TVal:
    """Count the layer's weights, add it, and note weights computed from parameters of another size
    (weight_norm's direction and magnitude; a slice of a bigger tensor): the layer counts what it
    computes."""
    given = [t for t in (w, bias) if t is not None and t.sources]
    names = tuple(dict.fromkeys(s for t in given for s in t.sources))
    c.lo.count(names)
    out = c.emit(op, attrs, [x])
    held = sum(c.lo.param_sizes.get(s, 0) for s in names)
    used = sum(t.numel for t in given)
    if held != used:
        c.lo.notes.append(f"layer '{out.node}': its weights are computed from {held} parameters ({', '.join(names)}); "
                          f"counted as the {used} it computes (what remove_parametrizations or folding leaves)")
    return out


@_fn("linear")
def _linear(c: Call) -> TVal:
    x, w, bias = c.tensor(), c.arg(1, "weight"), c.arg(2, "bias", None)
    if not isinstance(w, ConstVal) or (bias is not None and not isinstance(bias, ConstVal)):
        raise Unsupported("linear with weights computed from the input")
    if x.bpos == x.ndim - 1:
        raise Unsupported("linear over the batch axis")
    c.expect("input features", w.shape[1], x.shape[-1])
    return _emit_weighted(c, OpKind.LINEAR, O.LinearAttrs(w.shape[0], bias is not None), x, w, bias)


# -- convolution and pooling -----------------------------------------------------------------------
def _image(x: TVal, what: str) -> None:
    if x.ndim != 4 or x.bpos != 0:
        raise Unsupported(f"{what} on a tensor of shape {list(x.shape)} (only 2-D maps (N, C, H, W))")


@_fn("conv2d")
def _conv2d(c: Call) -> TVal:
    x, w, bias = c.tensor(), c.arg(1, "weight"), c.arg(2, "bias", None)
    _image(x, "conv2d")
    if not isinstance(w, ConstVal) or (bias is not None and not isinstance(bias, ConstVal)):
        raise Unsupported("conv2d with weights computed from the input")
    groups = int(c.arg(6, "groups", 1))
    c.expect("input channels", w.shape[1] * groups, x.shape[1])
    attrs = conv_attrs(w.shape, c.arg(3, "stride", 1), c.arg(4, "padding", 0), c.arg(5, "dilation", 1),
                       groups, bias is not None)
    if not w.sources:  # a weight that is no parameter (a buffer: a blur or edge filter)
        attrs = replace(attrs, fixed=True)
    return _emit_weighted(c, OpKind.CONV, attrs, x, w, bias)


@_fn("conv1d")
def _conv1d(c: Call) -> TVal:
    """A 1-D convolution over (N, C, L) (ECA's convolution across channels, a temporal convolution):
    a 2-D one with a 1×k kernel on the (C, 1, L) map, between two reshapes."""
    x, w, bias = c.tensor(), c.arg(1, "weight"), c.arg(2, "bias", None)
    if x.ndim != 3 or x.bpos != 0:
        raise Unsupported(f"conv1d on a tensor of shape {list(x.shape)} (only (N, C, L))")
    if not isinstance(w, ConstVal) or w.ndim != 3 or (bias is not None and not isinstance(bias, ConstVal)):
        raise Unsupported("conv1d with weights computed from the input")

    pad = c.arg(4, "padding", 0)
    as2d = FUNCTIONS["unsqueeze"](replace(c, what="unsqueeze", args=(x, 2), kwargs={}, name=c.name + ".as2d"))
    y = _conv2d(replace(c, what="conv2d", args=(as2d, ConstVal(w.array()[:, :, None, :], w.sources), bias,
                                                _one(c.arg(3, "stride", 1), 1), _one(pad, 0),
                                                _one(c.arg(5, "dilation", 1), 1), c.arg(6, "groups", 1)), kwargs={}))
    return FUNCTIONS["squeeze"](replace(c, what="squeeze", args=(y, 2), kwargs={}, name=c.name + ".as1d"))


def _one(v: Any, fill: int) -> Any:
    """A 1-D size as the 2-D one on a (C, 1, L) map: ``fill`` along the height."""
    v = v[0] if isinstance(v, (list, tuple)) and len(v) == 1 else v
    return v if v is None or isinstance(v, str) else (fill, int(v))


@_fn("avg_pool1d", "max_pool1d", "max_pool1d_with_indices", "adaptive_avg_pool1d", "adaptive_max_pool1d")
def _pool1d(c: Call) -> TVal:
    """A 1-D pool over (N, C, L): the 2-D one with a 1×k window on the (C, 1, L) map, between two
    reshapes, as a 1-D convolution is."""
    x = c.tensor()
    if x.ndim != 3 or x.bpos != 0:
        raise Unsupported(f"{c.what} on a tensor of shape {list(x.shape)} (only (N, C, L))")
    as2d = FUNCTIONS["unsqueeze"](replace(c, what="unsqueeze", args=(x, 2), kwargs={}, name=c.name + ".as2d"))
    if c.what.startswith("adaptive"):
        if c.arg(2, "return_indices", False):
            raise Unsupported("adaptive max pooling that returns indices")
        args: tuple[Any, ...] = (as2d, _one(c.arg(1, "output_size"), 1))
    else:
        k = c.arg(1, "kernel_size")
        window = (as2d, _one(k, 1), _one(c.arg(2, "stride", None) or k, 1), _one(c.arg(3, "padding", 0), 0))
        if not c.what.startswith("max"):
            args = (*window, bool(c.arg(4, "ceil_mode", False)), bool(c.arg(5, "count_include_pad", True)))
        elif c.arg(6, "return_indices", False) or c.what.endswith("indices"):
            raise Unsupported("1-D max pooling that returns indices")
        else:
            args = (*window, _one(c.arg(4, "dilation", 1), 1), bool(c.arg(5, "ceil_mode", False)))
    what = c.what.replace("1d", "2d")
    y = FUNCTIONS[what](replace(c, what=what, args=args, kwargs={}))
    return FUNCTIONS["squeeze"](replace(c, what="squeeze", args=(y, 2), kwargs={}, name=c.name + ".as1d"))


@_fn("conv_transpose1d")
def _conv_t1d(c: Call) -> TVal:
    """A 1-D transposed convolution over (N, C, L): the 2-D one with a 1×k kernel on the (C, 1, L) map."""
    x, w, bias = c.tensor(), c.arg(1, "weight"), c.arg(2, "bias", None)
    if not _signal(x):
        raise Unsupported(f"conv_transpose1d on a tensor of shape {list(x.shape)} (only (N, C, L))")
    if not isinstance(w, ConstVal) or w.ndim != 3 or (bias is not None and not isinstance(bias, ConstVal)):
        raise Unsupported("conv_transpose1d with weights computed from the input")
    return _on_map(c, x, "conv_transpose2d", (ConstVal(w.array()[:, :, None, :], w.sources), bias,
                                              _one(c.arg(3, "stride", 1), 1), _one(c.arg(4, "padding", 0), 0),
                                              _one(c.arg(5, "output_padding", 0), 0), c.arg(6, "groups", 1),
                                              _one(c.arg(7, "dilation", 1), 1)))


@_fn("conv_transpose2d")
def _conv_t(c: Call) -> TVal:
    x, w, bias = c.tensor(), c.arg(1, "weight"), c.arg(2, "bias", None)
    _image(x, "conv_transpose2d")
    if not isinstance(w, ConstVal) or (bias is not None and not isinstance(bias, ConstVal)):
        raise Unsupported("conv_transpose2d with weights computed from the input")
    c.expect("input channels", w.shape[0], x.shape[1])
    groups = int(c.arg(6, "groups", 1))
    pad = pair(c.arg(4, "padding", 0))
    attrs = O.ConvAttrs(w.shape[1] * groups, (w.shape[2], w.shape[3]), pair(c.arg(3, "stride", 1)),
                        ((pad[0], pad[0]), (pad[1], pad[1])), pair(c.arg(7, "dilation", 1)), groups,
                        bias is not None, pair(c.arg(5, "output_padding", 0)))
    return _emit_weighted(c, OpKind.CONV_T, attrs, x, w, bias)


@_fn("max_pool2d", "max_pool2d_with_indices", "avg_pool2d")
def _pool(c: Call) -> TVal:
    x = c.tensor()
    _image(x, c.what)
    if c.what.startswith("max"):
        attrs = pool_attrs(c.arg(1, "kernel_size"), c.arg(2, "stride", None), c.arg(3, "padding", 0),
                           c.arg(4, "dilation", 1), bool(c.arg(5, "ceil_mode", False)))
        out = emit_pool(c.emit, OpKind.MAXPOOL, attrs, x)
        if c.arg(6, "return_indices", False) or c.what.endswith("indices"):
            # The indices depend on exactly the window the values do: the same node stands for both
            # (max_unpool2d reads them; anything else reads a map with the pool's receptive field).
            return out, replace(out)
        return out
    divisor = c.arg(6, "divisor_override", None)
    if divisor is not None:  # the window's sum over another constant: the same positions, the same cost
        c.lo.notes.append(f"{c.name}: an average pool with divisor_override={divisor} is analysed as an average "
                          "pool (the divisor only scales its output)")
    attrs = pool_attrs(c.arg(1, "kernel_size"), c.arg(2, "stride", None), c.arg(3, "padding", 0), 1,
                       bool(c.arg(4, "ceil_mode", False)), bool(c.arg(5, "count_include_pad", True)))
    return emit_pool(c.emit, OpKind.AVGPOOL, attrs, x)


def emit_pool(emit: Callable[..., TVal], kind: OpKind, attrs: O.PoolAttrs, x: TVal) -> TVal:
    """A pool whose one window is the whole map (no padding, one output position: ``AvgPool2d(7)`` on
    a 7×7 map, or how ONNX exporters write ``adaptive_max_pool2d(x, 1)``) is global pooling.  Not a
    2×2 pool on a 2×2 map: that is VGG's last downsampling step at 32 px (``MaxPool2d(2)``), a pool
    like the ones before it, which a larger image gives a larger map."""
    h, w = x.shape[-2], x.shape[-1]
    whole = attrs.kernel == (h, w) and attrs.padding == ((0, 0), (0, 0)) and attrs.dilation == (1, 1) \
        and max(attrs.kernel) > 2
    if whole:
        glob = OpKind.GLOBAL_MAXPOOL if kind is OpKind.MAXPOOL else OpKind.GLOBAL_AVGPOOL
        return emit(glob, O.GlobalPoolAttrs(keepdims=True), [x])
    return emit(kind, attrs, [x])


@_fn("adaptive_avg_pool2d", "adaptive_max_pool2d")
def _adaptive(c: Call) -> TVal:
    x = c.tensor()
    _image(x, c.what)
    size = c.arg(1, "output_size")
    size = (size, size) if isinstance(size, int) or size is None else tuple(size)
    out = (size[0] if size[0] is not None else x.shape[2], size[1] if size[1] is not None else x.shape[3])
    avg = c.what.startswith("adaptive_avg")
    if not avg and c.arg(2, "return_indices", False):
        raise Unsupported("adaptive max pooling that returns indices")
    if out == (1, 1):  # a global pool that keeps (C, 1, 1)
        kind = OpKind.GLOBAL_AVGPOOL if avg else OpKind.GLOBAL_MAXPOOL
        return c.emit(kind, O.GlobalPoolAttrs(keepdims=True), [x])
    kind = OpKind.ADAPTIVE_AVGPOOL if avg else OpKind.ADAPTIVE_MAXPOOL
    return c.emit(kind, O.AdaptivePoolAttrs((int(out[0]), int(out[1]))), [x])


@_fn("max_unpool2d")
def _unpool(c: Call) -> TVal:
    """Each output position receives at most the one pooled value its window maps to (where the
    indices say): to receptive field and cost, a nearest upsampling to the unpooled size."""
    x = c.tensor()
    _image(x, "max_unpool2d")
    if not isinstance(c.arg(1, "indices"), TVal):
        raise Unsupported("max_unpool2d with indices that are not computed from the input")
    k = pair(c.arg(2, "kernel_size"))
    s = pair(c.arg(3, "stride", None) or k)
    p = pair(c.arg(4, "padding", 0))
    size = c.arg(5, "output_size", None)
    if size is not None:
        hw = tuple(int(v) for v in list(size)[-2:])
    else:
        hw = tuple((x.shape[2 + i] - 1) * s[i] - 2 * p[i] + k[i] for i in (0, 1))
    c.lo.notes.append(f"layer '{c.name}': max_unpool2d analysed as a nearest upsampling to {hw[0]}×{hw[1]} "
                      "(each output reads at most the pooled value its window maps to)")
    return c.emit(OpKind.UPSAMPLE, O.UpsampleAttrs("nearest", size=(hw[0], hw[1])), [x])


def _on_map(c: Call, x: TVal, what: str, args: tuple[Any, ...]) -> TVal:
    """A 1-D op over (N, C, L) as the 2-D one ``what`` on the (C, 1, L) map (``args`` after the input,
    already in 2-D form), between two reshapes: how conv1d and the 1-D pools are held."""
    as2d = FUNCTIONS["unsqueeze"](replace(c, what="unsqueeze", args=(x, 2), kwargs={}, name=c.name + ".as2d"))
    y = FUNCTIONS[what](replace(c, what=what, args=(as2d, *args), kwargs={}))
    return FUNCTIONS["squeeze"](replace(c, what="squeeze", args=(y, 2), kwargs={}, name=c.name + ".as1d"))  # type: ignore[no-any-return]


def _signal(x: TVal) -> bool:
    return x.ndim == 3 and x.bpos == 0


@_fn("interpolate", "upsample_nearest", "upsample_bilinear")
def _interpolate(c: Call) -> TVal:
    x = c.tensor()
    if _signal(x) and c.what == "interpolate":  # a 1-D interpolation (linear, nearest) along L
        size, scale = c.arg(1, "size", None), c.arg(2, "scale_factor", None)
        mode = c.arg(3, "mode", "nearest")
        if mode not in ("nearest", "nearest-exact", "linear", "area"):
            raise Unsupported(f"1-D interpolation mode '{mode}'")
        sc = scale[0] if isinstance(scale, (list, tuple)) and len(scale) == 1 else scale
        return _on_map(c, x, "interpolate", (_one(size, 1), None if sc is None else (1.0, float(sc)),
                                             "bilinear" if mode == "linear" else mode, c.arg(4, "align_corners", None),
                                             None, c.arg(6, "antialias", False)))
    _image(x, "interpolate")
    size, scale = c.arg(1, "size", None), c.arg(2, "scale_factor", None)
    mode = {"upsample_nearest": "nearest", "upsample_bilinear": "bilinear"}.get(c.what) or c.arg(3, "mode", "nearest")
    align = True if c.what == "upsample_bilinear" else bool(c.arg(4, "align_corners", None) or False)
    if mode == "area":  # PyTorch computes it as adaptive_avg_pool2d to the output size
        if size is not None:
            hw = pair(size)
        elif scale is not None:
            sc = (scale, scale) if isinstance(scale, (int, float)) else tuple(scale)
            hw = (math.floor(x.shape[2] * float(sc[0])), math.floor(x.shape[3] * float(sc[1])))
        else:
            raise Unsupported("interpolate without size or scale_factor")
        if tuple(hw) == (1, 1):
            return c.emit(OpKind.GLOBAL_AVGPOOL, O.GlobalPoolAttrs(keepdims=True), [x])
        return c.emit(OpKind.ADAPTIVE_AVGPOOL, O.AdaptivePoolAttrs((int(hw[0]), int(hw[1]))), [x])
    if mode not in ("nearest", "nearest-exact", "bilinear", "bicubic"):
        raise Unsupported(f"interpolation mode '{mode}'")
    if c.arg(6, "antialias", False):
        raise Unsupported("antialiased interpolation")
    mode = "nearest" if mode == "nearest-exact" else mode  # nearest-exact picks other pixels, as many
    if size is not None:
        hw = pair(size)
        h, w = x.shape[2], x.shape[3]
        if all(o % i == 0 and (i > 1 or o == 1) for i, o in ((h, hw[0]), (w, hw[1]))) and (h, w) != (1, 1):
            # an integral factor (a side of 1 kept at 1: a signal's (C, 1, L) map): resolution-free
            scale = (hw[0] // h, hw[1] // w)
        else:
            return c.emit(OpKind.UPSAMPLE, O.UpsampleAttrs(mode, size=(int(hw[0]), int(hw[1])), align_corners=align), [x])
    if scale is None:
        raise Unsupported("interpolate without size or scale_factor")
    sc = (scale, scale) if isinstance(scale, (int, float)) else tuple(scale)
    return c.emit(OpKind.UPSAMPLE, O.UpsampleAttrs(mode, scale=(float(sc[0]), float(sc[1])), align_corners=align), [x])


@_fn("pad")
def _pad(c: Call) -> Any:
    x = c.tensor()
    p = [int(v) for v in c.arg(1, "pad")]
    mode = c.arg(2, "mode", "constant")
    if _signal(x) and len(p) == 2:  # a signal's (N, C, L): along L (a causal TCN's left padding)
        return _on_map(c, x, "pad", (p, mode)) if any(p) else x
    if len(p) not in (2, 4) or x.ndim != 4 or x.bpos != 0:
        raise Unsupported(f"padding {p} of a tensor of shape {list(x.shape)}")
    if not any(p):
        return x
    top, bottom = (p[2], p[3]) if len(p) == 4 else (0, 0)
    check_pad(c, x, ((top, bottom), (p[0], p[1])), mode)
    return c.emit(OpKind.PAD, O.PadAttrs(((top, bottom), (p[0], p[1])), mode), [x])


def check_pad(c: Call, x: TVal, pads: Sequence[tuple[int, int]], mode: str) -> None:
    """Reflect padding must be smaller than the side it mirrors, circular no larger (PyTorch refuses
    the rest); the sides are the last two axes of ``x``."""
    for (before, after), side, axis in zip(pads, x.shape[-2:], ("height", "width")):
        if mode == "reflect" and max(before, after) >= side:
            raise InputError(f"layer '{c.name}': reflect padding ({before}, {after}) must be smaller than the "
                             f"input {axis} {side} (is --input right?)")
        if mode == "circular" and max(before, after) > side:
            raise InputError(f"layer '{c.name}': circular padding ({before}, {after}) wraps around the input "
                             f"{axis} {side} more than once (is --input right?)")


@_fn("channel_shuffle", "native_channel_shuffle")
def _shuffle(c: Call) -> TVal:
    x = c.tensor()
    _image(x, "channel_shuffle")
    return c.emit(OpKind.CHANNEL_SHUFFLE, O.ShuffleAttrs(int(c.arg(1, "groups"))), [x])


@_fn("pixel_shuffle", "pixel_unshuffle")
def _pixel_shuffle(c: Call) -> TVal:
    x = c.tensor()
    _image(x, c.what)
    up = c.what == "pixel_shuffle"
    r = int(c.arg(1, "upscale_factor" if up else "downscale_factor"))
    return c.emit(OpKind.PIXEL_SHUFFLE if up else OpKind.PIXEL_UNSHUFFLE, O.FactorAttrs(r), [x])


# -- normalisation ---------------------------------------------------------------------------------
def _params(c: Call, *xs: Any) -> bool:
    """Count the parameters among ``xs``; True if any of them derives from a parameter (a scale of
    constant ones, as an exporter writes for a norm without learnable affine, is not one)."""
    given = [x for x in xs if isinstance(x, ConstVal)]
    c.lo.count(tuple(s for x in given for s in x.sources))
    return any(x.sources for x in given)


@_fn("batch_norm")
def _batch_norm(c: Call) -> TVal:
    x = c.tensor()
    if x.bpos != 0 or x.ndim < 2:
        raise Unsupported("batch norm of a tensor without channels after the batch")
    w = c.arg(3, "weight", None)
    if isinstance(w, ConstVal):
        c.expect("channels", w.shape[0], x.shape[1])
    affine = _params(c, w, c.arg(4, "bias", None))
    return c.emit(OpKind.BATCHNORM, O.NormAttrs(affine, None, 1, float(c.arg(7, "eps", 1e-5))), [x])


@_fn("layer_norm")
def _layer_norm(c: Call) -> TVal:
    x = c.tensor()
    shape = c.arg(1, "normalized_shape")
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    if len(shape) > 1 and x.bpos == 0 and x.ndim >= 3 and shape == tuple(x.shape[1:]):
        # over the whole (C, H, W) map: GroupNorm with one group, and an affine per position (its
        # weight and bias hold C·H·W values each)
        eps = float(c.arg(4, "eps", 1e-5))
        w, b = c.arg(2, "weight", None), c.arg(3, "bias", None)
        y = c.part("group_norm", x, 1, None, None, eps, last=w is None and b is None)
        if w is not None:
            y = c.part("mul", y, w, last=b is None)
        return c.part("add", y, b, last=True) if b is not None else y
    if len(shape) != 1 or x.bpos == x.ndim - 1:
        raise Unsupported(f"layer norm over {list(shape)} (only over the last axis)")
    c.expect("features in the last axis", shape[0], x.shape[-1])
    w, b = c.arg(2, "weight", None), c.arg(3, "bias", None)
    if (w is None) != (b is None):
        c.lo.notes.append(f"{c.name}: a LayerNorm with only a weight or only a bias is counted with both")
    affine = _params(c, w, b)
    return c.emit(OpKind.LAYERNORM, O.NormAttrs(affine, x.ir_axis(x.ndim - 1), 1, float(c.arg(4, "eps", 1e-5))), [x])


@_fn("normalize")
def _normalize(c: Call) -> Any:
    """F.normalize(x, p, dim): x / ‖x‖_p along dim, as the ops it is made of (a power, a sum, a root,
    a division; the eps floor is left out): pointwise over positions when dim is the channels."""
    x = c.tensor()
    p, dim = float(c.arg(1, "p", 2.0)), int(c.arg(2, "dim", 1))

    part = c.part
    total = part("sum", part("pow", x if p == 2.0 else part("abs", x), p), dim, True)
    return part("div", x, part("pow", total, 1.0 / p), last=True)


@_fn("norm", "linalg_vector_norm", "linalg_norm")
def _norm(c: Call) -> Any:
    """‖x‖_p over some axes (ConvNeXt-V2's GRN: ``torch.norm(x, p=2, dim=(1, 2), keepdim=True)``), as
    the ops it is made of: |x|^p summed over the axes, then the 1/p power; p = inf is the largest |x|.
    A matrix norm other than Frobenius (nuclear, spectral) is not a reduction of this kind."""
    x = c.tensor()
    p = c.arg(1, "ord" if c.what.startswith("linalg") else "p", None)
    dims = c.arg(2, "dim", None)
    keep = bool(c.arg(3, "keepdim", False))
    if dims is None:
        raise Unsupported(f"{c.what} over every axis, the batch included")
    many = not isinstance(dims, int) and len(dims) > 1
    if p is None or p == "fro" and many:
        p = 2.0
    if isinstance(p, str) or (c.what == "linalg_norm" and many and p != 2.0):
        raise Unsupported(f"{c.what} with ord {p!r} (a matrix norm)")
    p = float(p)
    part = c.part
    if math.isinf(p) and p > 0:
        return part("amax", part("abs", x), dims, keep, last=True)
    if not p > 0 or math.isinf(p):
        raise Unsupported(f"{c.what} with p = {p:g}")
    total = part("sum", part("pow", x if p == 2.0 else part("abs", x), p), dims, keep)
    return part("pow", total, 1.0 / p, last=True)


@_fn("local_response_norm")
def _lrn(c: Call) -> TVal:
    x = c.tensor()
    if x.bpos != 0 or x.ndim < 3:
        raise Unsupported(f"local_response_norm of a tensor of shape {list(x.shape)}")
    attrs = O.LRNAttrs(int(c.arg(1, "size")), float(c.arg(2, "alpha", 1e-4)), float(c.arg(3, "beta", 0.75)),
                       float(c.arg(4, "k", 1.0)))
    return c.emit(OpKind.LRN, attrs, [x])


@_fn("group_norm", "instance_norm")
def _group_norm(c: Call) -> TVal:
    x = c.tensor()
    if x.bpos != 0 or x.ndim < 3:
        raise Unsupported(f"{c.what} of a tensor of shape {list(x.shape)}")
    if c.what == "group_norm":
        groups, w, b, eps = int(c.arg(1, "num_groups")), c.arg(2, "weight", None), c.arg(3, "bias", None), c.arg(4, "eps", 1e-5)
        if groups < 1 or x.shape[1] % groups:
            raise InputError(f"layer '{c.name}': {x.shape[1]} channels cannot be split into {groups} groups" + INPUT_HINT)
    else:  # instance norm: one group per channel
        groups, w, b, eps = x.shape[1], c.arg(3, "weight", None), c.arg(4, "bias", None), c.arg(7, "eps", 1e-5)
    for v in (w, b):
        if isinstance(v, ConstVal):
            c.expect("channels", v.numel, x.shape[1])
    affine = _params(c, w, b)
    return c.emit(OpKind.GROUPNORM, O.NormAttrs(affine, None, groups, float(eps)), [x])


@_fn("var", "std")
def _var_std(c: Call) -> Any:
    """var / std over some axes, as the ops they are made of: the mean, the deviation from it, its
    square, the mean of that, the Bessel correction (a scale), and for std a square root."""
    x = c.tensor()
    dims = c.arg(1, "dim", None)
    if dims is None:
        raise Unsupported(f"{c.what} over every axis, the batch included")
    third = c.arg(2, "unbiased", None)
    legacy = isinstance(third, bool)  # std(x, dim, unbiased, keepdim)
    keep = bool(c.arg(3, "keepdim", False)) if legacy else bool(c.kwargs.get("keepdim", False))
    corr = (1 if third else 0) if legacy else c.kwargs.get("correction", 1 if c.kwargs.get("unbiased", True) else 0)
    if not isinstance(corr, (int, float)):
        raise Unsupported(f"{c.what} with correction {corr!r}")
    n = 1
    for d in [dims] if isinstance(dims, int) else list(dims):
        n *= x.shape[x.axis(d)]

    part = c.part
    dev = part("sub", x, part("mean", x, dims, True))
    scaled = corr != 0 and n > corr  # (n <= corr: PyTorch divides by zero or less, a value we leave unscaled)
    v = part("mean", part("mul", dev, dev), dims, keep, last=c.what == "var" and not scaled)
    if scaled:
        v = part("mul", v, n / (n - corr), last=c.what == "var")
    return part("sqrt", v, last=True) if c.what == "std" else v


# -- attention -------------------------------------------------------------------------------------
@_fn("scaled_dot_product_attention")
def _sdpa(c: Call) -> TVal:
    q, k, v = c.tensor(0, "query"), c.tensor(1, "key"), c.tensor(2, "value")
    if len({q.bpos, k.bpos, v.bpos}) > 1 or q.bpos >= q.ndim - 2:
        raise Unsupported("attention whose batch axes do not line up")
    heads = q.shape[-3] if q.ndim >= 4 and q.bpos != q.ndim - 3 else 1
    return c.emit(OpKind.ATTENTION, O.AttentionAttrs(heads), [q, k, v])


# -- data movement and reductions (shape logic in _torch_shapes) -----------------------------------
for _name, _h in layout_handlers(Call).items():
    _fn(_name)(_h)
for _name in ("mean", "sum", "amax", "amin"):
    _fn(_name)(reduce_handler)


@_fn("max", "min")
def _max_min(c: Call) -> Any:
    """``torch.max(x, dim)`` reduces; ``torch.max(a, b)`` is ``torch.maximum(a, b)``."""
    if isinstance(c.arg(1, "other", None), (TVal, ConstVal)):
        return _binary(replace(c, what="maximum" if c.what == "max" else "minimum"))
    return reduce_handler(c)


@_fn("contiguous", "clone", "detach", "float", "to", "type", "type_as", "cpu", "cuda", "requires_grad",
     "identity", "alias", "float32")
def _same(c: Call) -> Any:
    return c.arg(0, "input")


_LIKE = ("zeros_like", "ones_like", "full_like", "empty_like", "rand_like", "randn_like", "new_zeros",
         "new_ones", "new_full", "new_empty")


@_fn(*_LIKE)
def _like(c: Call) -> ConstVal:
    """A constant of the input's shape (the shape, not the values, comes from the input)."""
    x = c.tensor()
    shape = x.shape if not c.what.startswith("new_") else tuple(c.arg(1, "size"))
    fill = {"ones_like": 1.0, "new_ones": 1.0}.get(c.what, 0.0)
    if c.what in ("full_like", "new_full"):
        fill = float(c.arg(2 if c.what == "new_full" else 1, "fill_value"))
    return ConstVal(np.full(shape, fill, dtype=np.float32))


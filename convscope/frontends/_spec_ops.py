"""The spec language's simple ops: one small function per op name that reads its arguments and adds
nodes to the graph.  Structural items (repeat, residual, parallel, block calls) live in from_spec.

Each handler gets ``(args, ctx)`` and returns the name of its output node.  ``ctx`` adds nodes
(:meth:`_Ctx.add`), knows the current input (``ctx.x``) and its tensor info (``ctx.info``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from convscope.frontends._spec_args import Args
from convscope.frontends._yaml import shown
from convscope.ir import ops as O
from convscope.ir.graph import TensorInfo
from convscope.ir.ops import UPSAMPLE_SPAN, OpKind

__all__ = ["SIMPLE_OPS", "Ctx", "same_padding", "exact_same_padding"]


class Ctx(Protocol):
    x: str  # the input of a single-input op
    prev: str  # the previous layer's output
    inputs: tuple[str, ...]  # the layers named in `from` ((prev,) when none)
    from_given: bool

    @property
    def info(self) -> TensorInfo: ...

    def add(self, op: OpKind, attrs: Any, inputs: tuple[str, ...] | None = None, suffix: str | None = None) -> str: ...


Handler = Callable[[Args, Ctx], str]
SIMPLE_OPS: dict[str, Handler] = {}
# Ops whose arguments may be given as a single scalar: `dropout: 0.2`, `linear: 10`.
SHORTHAND: dict[str, str] = {}


def _op(name: str, shorthand: str | None = None) -> Callable[[Handler], Handler]:
    def deco(fn: Handler) -> Handler:
        if name in SIMPLE_OPS:
            raise RuntimeError(f"duplicate spec op '{name}'")
        SIMPLE_OPS[name] = fn
        if shorthand:
            SHORTHAND[name] = shorthand
        return fn

    return deco


def same_padding(k: tuple[int, int], d: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
    """The default padding: symmetric ``d*(k-1)//2``; output size = ceil(input / stride) for odd
    kernels, one less at stride 1 for even ones (PyTorch pads symmetrically)."""
    ph, pw = d[0] * (k[0] - 1) // 2, d[1] * (k[1] - 1) // 2
    return ((ph, ph), (pw, pw))


def exact_same_padding(k: tuple[int, int], d: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
    """An explicit ``p: same``: ``d*(k-1)`` in all, the odd one at the bottom/right (PyTorch's
    ``padding="same"``), so the output is ceil(input / stride) for every kernel."""
    th, tw = d[0] * (k[0] - 1), d[1] * (k[1] - 1)
    return ((th // 2, th - th // 2), (tw // 2, tw - tw // 2))


def _need_image(a: Args, ctx: Ctx) -> tuple[int, int, int]:
    info = ctx.info
    if not info.is_image or len(info.shape) != 3:
        why = " (its channels are not on the first axis)" if len(info.shape) == 3 else ""
        a.error(None, f"{a.op} needs a (C, H, W) feature map, but its input has shape {list(info.shape)}{why}")
    c, h, w = info.shape
    return c, h, w


def _conv_common(a: Args, transposed: bool = False) -> dict[str, Any]:
    k = a.pair("k")
    s = a.pair("s", (1, 1))
    d = a.pair("d", (1, 1))
    p = a.padding("p", same_padding(k, d), None if transposed else exact_same_padding(k, d))
    return {"kernel": k, "stride": s, "dilation": d, "padding": p, "bias": a.bool("bias", False),
            "fixed": a.bool("fixed", False)}


@_op("conv")
def _conv(a: Args, ctx: Ctx) -> str:
    _need_image(a, ctx)
    out = a.int("out")
    g = a.int("g", 1)
    common = _conv_common(a)
    a.done()
    return ctx.add(OpKind.CONV, O.ConvAttrs(out_channels=out, groups=g, **common))


@_op("dwconv")
def _dwconv(a: Args, ctx: Ctx) -> str:
    c, _, _ = _need_image(a, ctx)
    out = a.int("out", c)
    if out % c:
        a.error("out", f"dwconv: 'out' must be a multiple of the input channels ({c}), got {out}")
    common = _conv_common(a)
    a.done()
    return ctx.add(OpKind.CONV, O.ConvAttrs(out_channels=out, groups=c, **common))


@_op("convT")
def _convT(a: Args, ctx: Ctx) -> str:
    _need_image(a, ctx)
    out = a.int("out")
    g = a.int("g", 1)
    common = _conv_common(a, transposed=True)
    op_ = a.pair("op", (0, 0), minimum=0)
    a.done()
    return ctx.add(OpKind.CONV_T, O.ConvAttrs(out_channels=out, groups=g, output_padding=op_, **common))


def _pool(kind: OpKind) -> Handler:
    def handler(a: Args, ctx: Ctx) -> str:
        _need_image(a, ctx)
        k = a.pair("k")
        s = a.pair("s", k)
        # p defaults to 0 (FORMATS.md §1); a stride-1 pool defaults to "same" padding so that it keeps
        # the size, as in the §1 example where a 3x3/1 max-pool branch is concatenated with convs.
        p = a.padding("p", same_padding(k, (1, 1)) if s == (1, 1) else ((0, 0), (0, 0)),
                      exact_same_padding(k, (1, 1)))
        ceil = a.bool("ceil", False)
        extra: dict[str, Any] = {}
        if kind is OpKind.AVGPOOL:
            extra["count_include_pad"] = a.bool("count_include_pad", True)
        a.done()
        return ctx.add(kind, O.PoolAttrs(kernel=k, stride=s, padding=p, ceil_mode=ceil, **extra))

    return handler


_op("maxpool", "k")(_pool(OpKind.MAXPOOL))
_op("avgpool", "k")(_pool(OpKind.AVGPOOL))


def _adaptive(kind: OpKind) -> Handler:
    def handler(a: Args, ctx: Ctx) -> str:
        _need_image(a, ctx)
        size = a.pair("size")
        a.done()
        return ctx.add(kind, O.AdaptivePoolAttrs(size))

    return handler


_op("adaptive_avgpool", "size")(_adaptive(OpKind.ADAPTIVE_AVGPOOL))
_op("adaptive_maxpool", "size")(_adaptive(OpKind.ADAPTIVE_MAXPOOL))


def _global(kind: OpKind) -> Handler:
    def handler(a: Args, ctx: Ctx) -> str:
        info = ctx.info
        if len(info.shape) == 2 and info.channel_axis == 0 and info.spatial_axes == (1,):
            # a signal's (C, L), as a Conv1d network holds it between its layers: the mean (max) over L
            keep = a.bool("keepdims", False)
            a.done()
            return ctx.add(OpKind.MEAN, O.ReduceAttrs((1,), keep, "mean" if kind is OpKind.GLOBAL_AVGPOOL else "max"))
        _need_image(a, ctx)
        keep = a.bool("keepdims", False)
        a.done()
        return ctx.add(kind, O.GlobalPoolAttrs(keepdims=keep))

    return handler


_op("gap")(_global(OpKind.GLOBAL_AVGPOOL))
_op("gmp")(_global(OpKind.GLOBAL_MAXPOOL))


MAX_SCALE = 1024  # a larger factor (or .inf) is a typo


@_op("upsample", "scale")
def _upsample(a: Args, ctx: Ctx) -> str:
    _need_image(a, ctx)
    mode = a.choice("mode", "nearest", tuple(UPSAMPLE_SPAN))
    if a.has("size") == a.has("scale"):
        a.error(None, "upsample: give exactly one of 'scale' and 'size'")
    if a.has("size"):
        attrs = O.UpsampleAttrs(mode=mode, size=a.pair("size"))
    else:
        v = a.raw("scale")
        if isinstance(v, list) and len(v) == 2:
            scale = (v[0], v[1])
        else:
            scale = (v, v)
        if not all(isinstance(x, (int, float)) and not isinstance(x, bool) and 0 < x <= MAX_SCALE for x in scale):
            a.error("scale", f"upsample: 'scale' must be a positive number up to {MAX_SCALE} or [h, w] of them, "
                             f"got {shown(v)}")
        attrs = O.UpsampleAttrs(mode=mode, scale=(float(scale[0]), float(scale[1])))
    a.done(("size", "scale"))  # the one not given is accepted too: say so when a key is unknown
    return ctx.add(OpKind.UPSAMPLE, attrs)


@_op("bn")
def _bn(a: Args, ctx: Ctx) -> str:
    if ctx.info.channel_axis is None:
        a.error(None, f"bn needs a channel axis, but its input has shape {list(ctx.info.shape)}")
    eps = a.number("eps", 1e-5, positive=True)
    a.done()
    return ctx.add(OpKind.BATCHNORM, O.NormAttrs(eps=eps))


@_op("ln")
def _ln(a: Args, ctx: Ctx) -> str:
    if ctx.info.channel_axis is None:
        a.error(None, f"ln needs a channel axis, but its input has shape {list(ctx.info.shape)}")
    eps = a.number("eps", 1e-5, positive=True)
    a.done()
    return ctx.add(OpKind.LAYERNORM, O.NormAttrs(axis=ctx.info.channel_axis, eps=eps))


@_op("gn", "groups")
def _gn(a: Args, ctx: Ctx) -> str:
    groups = a.int("groups")
    a.done()
    return ctx.add(OpKind.GROUPNORM, O.NormAttrs(groups=groups))


@_op("lrn", "size")
def _lrn(a: Args, ctx: Ctx) -> str:
    if ctx.info.channel_axis is None:
        a.error(None, f"lrn needs a channel axis, but its input has shape {list(ctx.info.shape)}")
    attrs = O.LRNAttrs(size=a.int("size"), alpha=a.number("alpha", 1e-4, positive=True),
                       beta=a.number("beta", 0.75, positive=True), k=a.number("k", 1.0, positive=True))
    a.done()
    return ctx.add(OpKind.LRN, attrs)


def _act(fn: str) -> Handler:
    def handler(a: Args, ctx: Ctx) -> str:
        alpha = None
        if fn in ("leaky_relu", "elu"):
            alpha = a.number("alpha", 0.01 if fn == "leaky_relu" else 1.0)
        a.done()
        return ctx.add(OpKind.ACT, O.ActAttrs(fn=fn, alpha=alpha))

    return handler


for _fn in ("relu", "relu6", "hswish", "hsigmoid", "swish", "gelu", "sigmoid", "tanh", "leaky_relu", "elu"):
    _op(_fn)(_act(_fn))
SIMPLE_OPS["silu"] = SIMPLE_OPS["swish"]


@_op("se", "ratio")
def _se(a: Args, ctx: Ctx) -> str:
    """Squeeze-excitation: gap -> 1x1 conv (bias) -> act -> 1x1 conv (bias) -> gate -> x * gate; the
    hidden width is ``hidden``, or C·ratio for a ratio <= 1, or C/ratio for a reduction ratio > 1."""
    c, _, _ = _need_image(a, ctx)
    if a.has("hidden"):
        hidden = a.int("hidden")
    else:  # a fraction of the channels kept (0.25), or the SE paper's reduction r (16: C/16)
        ratio = a.number("ratio", 0.25, positive=True)
        hidden = max(1, int(c * ratio) if ratio <= 1 else int(c / ratio))
    act = a.choice("act", "relu", ("relu", "swish", "silu", "hswish", "relu6"))
    gate = a.choice("gate", "sigmoid", ("sigmoid", "hsigmoid"))
    a.done()
    x = ctx.x
    pool = ctx.add(OpKind.GLOBAL_AVGPOOL, O.GlobalPoolAttrs(keepdims=True), (x,), "avgpool")
    one = {"kernel": (1, 1), "bias": True}
    fc1 = ctx.add(OpKind.CONV, O.ConvAttrs(out_channels=hidden, **one), (pool,), "fc1")  # type: ignore[arg-type]
    h = ctx.add(OpKind.ACT, O.ActAttrs(fn="swish" if act == "silu" else act), (fc1,), "act")
    fc2 = ctx.add(OpKind.CONV, O.ConvAttrs(out_channels=c, **one), (h,), "fc2")  # type: ignore[arg-type]
    g = ctx.add(OpKind.ACT, O.ActAttrs(fn=gate), (fc2,), "gate")
    return ctx.add(OpKind.MUL, O.NoAttrs(), (x, g), "scale")


@_op("dropout", "p")
def _dropout(a: Args, ctx: Ctx) -> str:
    p = a.number("p", 0.5, low=0.0, high=1.0)
    a.done()
    return ctx.add(OpKind.DROPOUT, O.DropoutAttrs(p=p))


def _nullary(kind: OpKind) -> Handler:
    def handler(a: Args, ctx: Ctx) -> str:
        a.done()
        return ctx.add(kind, O.NoAttrs())

    return handler


_op("identity")(_nullary(OpKind.IDENTITY))
_op("zero")(_nullary(OpKind.ZERO))


@_op("scale", "value")
def _scale(a: Args, ctx: Ctx) -> str:
    v = a.number("value")
    a.done()
    return ctx.add(OpKind.SCALE, O.ScaleAttrs(value=v))


@_op("flatten")
def _flatten(a: Args, ctx: Ctx) -> str:
    """Every axis into one vector, or (``axis: 1``) the axes from ``axis`` on: a (C, 1, L) map's
    (C, L) signal, as ``x.squeeze(2)`` or ``x.flatten(2)`` gives it (axes without the batch)."""
    rank = len(ctx.info.shape)
    axis = a.int("axis", 0, minimum=0)
    if axis >= rank:
        a.error("axis", f"flatten: 'axis' must be below the input's rank {rank} (shape {list(ctx.info.shape)}), "
                        f"got {axis}")
    a.done()
    return ctx.add(OpKind.FLATTEN, O.AxisAttrs(axis=axis))


@_op("unsqueeze", "axis")
def _unsqueeze(a: Args, ctx: Ctx) -> str:
    """A new axis of size 1 at ``axis`` (axes without the batch): a signal's (C, L) as the (C, 1, L)
    map a 1×k convolution runs on."""
    shape = ctx.info.shape
    axis = a.int("axis", minimum=0)
    if axis > len(shape):
        a.error("axis", f"unsqueeze: 'axis' must be at most the input's rank {len(shape)} (shape {list(shape)}), "
                        f"got {axis}")
    a.done()
    return ctx.add(OpKind.RESHAPE, O.ReshapeAttrs(shape=(*shape[:axis], 1, *shape[axis:])))


@_op("linear", "out")
def _linear(a: Args, ctx: Ctx) -> str:
    info = ctx.info
    if len(info.shape) != 1:
        a.error(None, f"linear needs a vector, but its input has shape {list(info.shape)}: "
                      "add gap or flatten before it")
    out = a.int("out")
    bias = a.bool("bias", True)
    a.done()
    return ctx.add(OpKind.LINEAR, O.LinearAttrs(out_features=out, bias=bias))


@_op("channel_shuffle", "groups")
def _shuffle(a: Args, ctx: Ctx) -> str:
    groups = a.int("groups")
    a.done()
    return ctx.add(OpKind.CHANNEL_SHUFFLE, O.ShuffleAttrs(groups=groups))


def _pixel(kind: OpKind) -> Handler:
    def handler(a: Args, ctx: Ctx) -> str:
        _need_image(a, ctx)
        factor = a.int("factor")
        a.done()
        return ctx.add(kind, O.FactorAttrs(factor=factor))

    return handler


_op("pixel_shuffle", "factor")(_pixel(OpKind.PIXEL_SHUFFLE))
_op("pixel_unshuffle", "factor")(_pixel(OpKind.PIXEL_UNSHUFFLE))


def _merge(kind: OpKind) -> Handler:
    """add / mul / concat of the layers named in ``from`` (plus the previous output if one is named)."""

    def handler(a: Args, ctx: Ctx) -> str:
        a.done()
        if not ctx.from_given:
            a.error(None, f"{a.op} needs the layers to merge: name them with 'from' "
                          "(one name merges it with the previous layer)")
        inputs = ctx.inputs if len(ctx.inputs) >= 2 else (ctx.prev, *ctx.inputs)
        attrs: Any = O.AxisAttrs(axis=0) if kind is OpKind.CONCAT else O.NoAttrs()
        return ctx.add(kind, attrs, tuple(inputs))

    return handler


_op("add")(_merge(OpKind.ADD))
_op("mul")(_merge(OpKind.MUL))
_op("concat")(_merge(OpKind.CONCAT))

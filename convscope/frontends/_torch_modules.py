"""``torch.nn`` modules -> IR nodes: a table from module class to a small handler.

A module in this table is a *leaf*: the capture does not look inside it, and its node carries its
module path (``layer3.0.conv2``).  Every other module is traced through, so a user's blocks become
the ops they are made of, named under their path (``layer3.0.add``).  Most handlers restate the
module as its functional form (``nn.Conv2d`` -> ``F.conv2d`` with the module's weight), so one
handler serves both spellings.  A ``torch.nn`` module missing here and holding no submodules (an
LSTM, a PixelShuffle) is a leaf too and becomes ``unknown``, its parameters still counted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.fx._symbolic_trace import _maybe_revert_all_patches
from torch.nn.utils import parametrize

from convscope._registry import registrar
from convscope.frontends._torch_functions import FUNCTIONS, Call, check_pad
from convscope.frontends._torch_values import ConstVal, LazyVal, Lowering, TVal, Unsupported
from convscope.ir import ops as O
from convscope.ir.ops import OpKind

__all__ = ["MODULES", "handler_for", "is_leaf"]

ModuleHandler = Callable[[Call, Any], Any]  # (call, the module instance)
MODULES: dict[type, ModuleHandler] = {}
_mod = registrar(MODULES, "module handler")


def handler_for(m: nn.Module) -> ModuleHandler | None:
    for cls in type(m).__mro__:  # subclasses of a known module behave like it (forward not overridden)
        h = MODULES.get(cls)
        if h is not None:
            return h if type(m).forward is cls.forward else None  # type: ignore[attr-defined]
    return None


_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


def is_leaf(m: nn.Module) -> bool:
    """Captured as one node: a module of the table, or a built-in ``torch.nn`` module without
    submodules (kept as ``unknown``); everything else is traced through."""
    if handler_for(m) is not None:
        return True
    t = type(m)
    return t.__module__.startswith("torch.nn.") and not isinstance(m, _CONTAINERS) and not any(True for _ in m.children())


def _param(c: Call, m: nn.Module, attr: str) -> ConstVal | None:
    # Read the registry itself: during tracing, attribute access on modules yields proxies.
    p = m._parameters.get(attr, m._buffers.get(attr))
    if p is None and parametrize.is_parametrized(m, attr):
        return _parametrized(c, m, attr)
    return None if p is None else c.lo.const(p)


def _parametrized(c: Call, m: nn.Module, attr: str) -> ConstVal:
    """A weight computed from parameters by a parametrization (weight_norm, spectral_norm,
    orthogonal): its value as the layer sees it, held by the originals it is computed from.  The
    computation itself (a norm over the weight) is not counted: it does not depend on the input
    and is folded for deployment (the layer's handler notes a parameter count that changes)."""
    plist = m.parametrizations[attr]  # type: ignore[index]
    with _maybe_revert_all_patches(), torch.no_grad():
        value = getattr(m, attr)
    originals = [t for t in (*plist._parameters.values(), *plist._buffers.values()) if t is not None]
    names = tuple(n for n in (c.lo.param_names.get(id(t)) for t in originals) if n is not None)
    return ConstVal(value.detach(), names)


def _call(c: Call, what: str, args: tuple[Any, ...], kwargs: dict[str, Any] | None = None) -> Any:
    """Run the functional handler ``what`` in the module's place (same name and source)."""
    sub = Call(c.lo, c.name, what, args, kwargs or {}, c.source)
    return FUNCTIONS[what](sub)


@_mod(nn.Conv2d)
def _conv(c: Call, m: nn.Conv2d) -> Any:
    # reflect / replicate / circular padding fill the border differently, but reach the same input
    # positions and cost the same: the padding mode does not change the node.
    if m.padding_mode in ("reflect", "circular") and isinstance(m.padding, tuple):
        check_pad(c, c.tensor(), tuple((p, p) for p in m.padding), m.padding_mode)
    return _call(c, "conv2d", (c.tensor(), _param(c, m, "weight"), _param(c, m, "bias"), m.stride, m.padding,
                               m.dilation, m.groups))


@_mod(nn.Conv1d)
def _conv1d(c: Call, m: nn.Conv1d) -> Any:
    return _call(c, "conv1d", (c.tensor(), _param(c, m, "weight"), _param(c, m, "bias"), m.stride, m.padding,
                               m.dilation, m.groups))


@_mod(nn.ConvTranspose1d, nn.ConvTranspose2d)
def _conv_t(c: Call, m: nn.ConvTranspose1d | nn.ConvTranspose2d) -> Any:
    one = isinstance(m, nn.ConvTranspose1d)
    x = c.tensor()
    size = c.arg(1, "output_size", None)
    extra = m.output_padding if size is None else _output_padding(m, x, size)
    return _call(c, "conv_transpose1d" if one else "conv_transpose2d",
                 (x, _param(c, m, "weight"), _param(c, m, "bias"), m.stride, m.padding, extra, m.groups, m.dilation))


def _output_padding(m: nn.ConvTranspose1d | nn.ConvTranspose2d, x: Any, size: Any) -> tuple[int, ...]:
    """``up(x, output_size=…)`` (a U-Net decoder matching its skip connection): the output padding
    that gives that size, as PyTorch chooses it; a size no output padding reaches is refused."""
    dims = len(m.kernel_size)
    if isinstance(size, TVal) or not isinstance(size, (list, tuple)) or len(size) < dims \
            or not all(isinstance(v, int) for v in size[-dims:]):
        raise Unsupported(f"{type(m).__name__} called with output_size={size!r} (sizes known at capture only)")
    spatial = x.shape[-dims:]
    out: list[int] = []
    for i, want in enumerate(size[-dims:]):
        s, p, k, d = m.stride[i], m.padding[i], m.kernel_size[i], m.dilation[i]  # type: ignore[index]
        least = (spatial[i] - 1) * s - 2 * p + d * (k - 1) + 1
        if not least <= want < least + s:
            raise Unsupported(f"{type(m).__name__}: output_size {list(size)} cannot be reached from {list(x.shape)} "
                              f"(sizes {least}..{least + s - 1} on axis {i})")
        out.append(want - least)
    return tuple(out)


@_mod(nn.Linear)
def _linear(c: Call, m: nn.Linear) -> Any:
    return _call(c, "linear", (c.tensor(), _param(c, m, "weight"), _param(c, m, "bias")))


@_mod(nn.BatchNorm1d, nn.BatchNorm2d, nn.SyncBatchNorm)
def _bn(c: Call, m: nn.modules.batchnorm._BatchNorm) -> Any:
    return _call(c, "batch_norm", (c.tensor(), None, None, _param(c, m, "weight"), _param(c, m, "bias"),
                                   False, 0.0, m.eps))


@_mod(nn.LayerNorm)
def _ln(c: Call, m: nn.LayerNorm) -> Any:
    return _call(c, "layer_norm", (c.tensor(), m.normalized_shape, _param(c, m, "weight"), _param(c, m, "bias"),
                                   m.eps))


@_mod(nn.GroupNorm)
def _gn(c: Call, m: nn.GroupNorm) -> Any:
    return _call(c, "group_norm", (c.tensor(), m.num_groups, _param(c, m, "weight"), _param(c, m, "bias"), m.eps))


@_mod(nn.LocalResponseNorm)
def _lrn(c: Call, m: nn.LocalResponseNorm) -> Any:
    return _call(c, "local_response_norm", (c.tensor(), m.size, m.alpha, m.beta, m.k))


@_mod(nn.InstanceNorm2d)
def _in(c: Call, m: nn.InstanceNorm2d) -> Any:
    return _call(c, "instance_norm", (c.tensor(), None, None, _param(c, m, "weight"), _param(c, m, "bias"),
                                      False, 0.0, m.eps))


_ACT_MODULES: dict[type, str] = {
    nn.ReLU: "relu", nn.ReLU6: "relu6", nn.Sigmoid: "sigmoid", nn.Tanh: "tanh", nn.SiLU: "silu",
    nn.GELU: "gelu", nn.Hardswish: "hardswish", nn.Hardsigmoid: "hardsigmoid", nn.Mish: "mish",
    nn.Softplus: "softplus", nn.SELU: "selu", nn.Softsign: "softsign", nn.LogSigmoid: "logsigmoid",
    nn.Tanhshrink: "tanhshrink",
}


@_mod(nn.CELU, nn.Hardshrink, nn.Softshrink)
def _act_with_parameter(c: Call, m: nn.Module) -> Any:
    if isinstance(m, nn.CELU):
        return _call(c, "celu", (c.tensor(), m.alpha))
    return _call(c, "hardshrink" if isinstance(m, nn.Hardshrink) else "softshrink", (c.tensor(), m.lambd))


@_mod(*_ACT_MODULES)
def _act(c: Call, m: nn.Module) -> Any:
    fn = next(_ACT_MODULES[k] for k in type(m).__mro__ if k in _ACT_MODULES)
    return _call(c, fn, (c.tensor(),))


@_mod(nn.LeakyReLU)
def _leaky(c: Call, m: nn.LeakyReLU) -> Any:
    return _call(c, "leaky_relu", (c.tensor(), m.negative_slope))


@_mod(nn.ELU)
def _elu(c: Call, m: nn.ELU) -> Any:
    return _call(c, "elu", (c.tensor(), m.alpha))


@_mod(nn.Hardtanh)  # nn.ReLU6 subclasses it, but is in the table itself
def _hardtanh(c: Call, m: nn.Hardtanh) -> Any:
    return _call(c, "hardtanh", (c.tensor(), m.min_val, m.max_val))


@_mod(nn.PReLU)
def _prelu(c: Call, m: nn.PReLU) -> TVal:
    c.lo.count(_param(c, m, "weight").sources)  # type: ignore[union-attr]
    x = c.tensor()
    if m.num_parameters != 1 and x.bpos == 0 and x.ndim >= 2:
        c.expect("channels", m.num_parameters, x.shape[1])
    return c.emit(OpKind.ACT, O.ActAttrs("prelu", channels=m.num_parameters), [x])


@_mod(nn.Softmax, nn.LogSoftmax)
def _softmax(c: Call, m: Any) -> Any:
    return _call(c, "softmax", (c.tensor(), m.dim))


@_mod(nn.Softmax2d)
def _softmax2d(c: Call, m: Any) -> Any:
    return _call(c, "softmax", (c.tensor(), -3))  # over the channels of a (N, C, H, W) map


@_mod(nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)
def _dropout(c: Call, m: nn.modules.dropout._DropoutNd) -> Any:
    return _call(c, "dropout", (c.tensor(), m.p))


@_mod(nn.Identity)
def _identity(c: Call, m: nn.Module) -> Any:
    return c.arg(0, "input")


@_mod(nn.MaxPool2d, nn.MaxPool1d)
def _maxpool(c: Call, m: nn.MaxPool2d | nn.MaxPool1d) -> Any:
    what = "max_pool1d" if isinstance(m, nn.MaxPool1d) else "max_pool2d"
    return _call(c, what, (c.tensor(), m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode, m.return_indices))


@_mod(nn.AvgPool2d, nn.AvgPool1d)
def _avgpool(c: Call, m: nn.AvgPool2d | nn.AvgPool1d) -> Any:
    if isinstance(m, nn.AvgPool1d):
        return _call(c, "avg_pool1d", (c.tensor(), m.kernel_size, m.stride, m.padding, m.ceil_mode,
                                       m.count_include_pad))
    return _call(c, "avg_pool2d", (c.tensor(), m.kernel_size, m.stride, m.padding, m.ceil_mode,
                                   m.count_include_pad, m.divisor_override))


@_mod(nn.MaxUnpool2d)
def _maxunpool(c: Call, m: nn.MaxUnpool2d) -> Any:
    return _call(c, "max_unpool2d", (c.tensor(), c.arg(1, "indices"), m.kernel_size, m.stride, m.padding,
                                     c.arg(2, "output_size", None)))


@_mod(nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveMaxPool1d)
def _adaptive(c: Call, m: Any) -> Any:
    kind = "avg" if isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool1d)) else "max"
    dims = "1d" if isinstance(m, (nn.AdaptiveAvgPool1d, nn.AdaptiveMaxPool1d)) else "2d"
    return _call(c, f"adaptive_{kind}_pool{dims}", (c.tensor(), m.output_size))


@_mod(nn.Upsample, nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d)
def _upsample(c: Call, m: nn.Upsample) -> Any:
    return _call(c, "interpolate", (c.tensor(), m.size, m.scale_factor, m.mode, m.align_corners))


@_mod(nn.Flatten)
def _flatten(c: Call, m: nn.Flatten) -> Any:
    return _call(c, "flatten", (c.tensor(), m.start_dim, m.end_dim))


@_mod(nn.Unflatten)
def _unflatten(c: Call, m: nn.Unflatten) -> Any:
    return _call(c, "unflatten", (c.tensor(), m.dim, m.unflattened_size))


@_mod(nn.ChannelShuffle)
def _shuffle(c: Call, m: nn.ChannelShuffle) -> Any:
    return _call(c, "channel_shuffle", (c.tensor(), m.groups))


@_mod(nn.PixelShuffle, nn.PixelUnshuffle)
def _pixel_shuffle(c: Call, m: Any) -> Any:
    if isinstance(m, nn.PixelShuffle):
        return _call(c, "pixel_shuffle", (c.tensor(), m.upscale_factor))
    return _call(c, "pixel_unshuffle", (c.tensor(), m.downscale_factor))


@_mod(nn.ZeroPad2d, nn.ConstantPad2d, nn.ReflectionPad2d, nn.ReplicationPad2d, nn.CircularPad2d,
      nn.ZeroPad1d, nn.ConstantPad1d, nn.ReflectionPad1d, nn.ReplicationPad1d, nn.CircularPad1d)
def _pad(c: Call, m: Any) -> Any:
    mode = {nn.ReflectionPad2d: "reflect", nn.ReplicationPad2d: "replicate", nn.CircularPad2d: "circular",
            nn.ReflectionPad1d: "reflect", nn.ReplicationPad1d: "replicate",
            nn.CircularPad1d: "circular"}.get(type(m), "constant")
    return _call(c, "pad", (c.tensor(), list(m.padding), mode))


@_mod(nn.MultiheadAttention)
def _mha(c: Call, m: nn.MultiheadAttention) -> Any:
    """Projections q, k, v (the packed in_proj split in three: same parameters), attention over all
    positions with ``heads`` heads folded into the feature axis (same MACs), output projection."""
    q, k, v = c.tensor(0, "query"), c.tensor(1, "key"), c.tensor(2, "value")
    if c.arg(3, "key_padding_mask", None) is not None or c.kwargs.get("attn_mask") is not None \
            or m._parameters.get("bias_k") is not None or m.add_zero_attn:
        raise Unsupported("MultiheadAttention with masks, bias_k/bias_v or add_zero_attn")
    e, lo = m.embed_dim, c.lo
    bias = m._parameters.get("in_proj_bias") is not None
    lo.count(s for p in m.parameters() for s in lo.const(p).sources)  # type: ignore[union-attr]
    proj = [c.emit(OpKind.LINEAR, O.LinearAttrs(e, bias), [x], name=f"{c.name}.{w}_proj")
            for x, w in ((q, "q"), (k, "k"), (v, "v"))]
    att = c.emit(OpKind.ATTENTION, O.AttentionAttrs(m.num_heads), proj, name=f"{c.name}.attention")
    out_bias = m.out_proj._parameters.get("bias") is not None
    out = c.emit(OpKind.LINEAR, O.LinearAttrs(e, out_bias), [att], name=f"{c.name}.out_proj")
    if not c.arg(4, "need_weights", True):
        return out, None

    def weights() -> Any:  # (N, L, S) averaged over heads: kept as unknown if anything reads it
        shape = list(q.ir_shape[:-1]) + [k.ir_shape[-2]]
        return lo.unknown(f"{c.name}.weights", "MultiheadAttention weights", torch.zeros(2, *shape), [q, k])
    return out, LazyVal(weights)


def unknown_module(lo: Lowering, m: nn.Module, path: str, observed: Any, inputs: list[TVal], reason: str,
                   source: str | None) -> Any:
    params = lo.count(s for p in m.parameters() for s in lo.const(p).sources)  # type: ignore[union-attr]
    what = type(m).__name__ + (f" ({reason})" if reason else "")
    return lo.unknown(path or "module", what, observed, inputs, params=params, source=source)


def run_real(target: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Run ``target`` on zeros of the traced shapes (how an unknown op's output shape is observed)."""
    def real(v: Any) -> Any:
        if isinstance(v, TVal):
            return torch.zeros(v.shape)
        if isinstance(v, ConstVal):  # a torch tensor, or an array made here (zeros_like)
            return v.tensor if isinstance(v.tensor, torch.Tensor) else torch.from_numpy(np.asarray(v.tensor))
        if isinstance(v, LazyVal):
            return real(v.get())
        if isinstance(v, (tuple, list)):
            return type(v)(real(x) for x in v)
        if isinstance(v, dict):
            return {k: real(x) for k, x in v.items()}
        return v
    with torch.no_grad():
        return target(*real(args), **real(kwargs))

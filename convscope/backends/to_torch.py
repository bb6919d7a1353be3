"""Build a runnable ``torch.nn.Module`` (random weights) from a Graph.

Submodules are registered under the node names split at dots (``layer1.0.conv1`` becomes
``model.layer1[0].conv1``), so parameter names match the graph's layer names.  The forward pass
interprets the graph in topological order and frees each value after its last reader.

``oracle=True`` builds the network used as ground truth for receptive fields (DESIGN.md): all
weights positive, activations linear, max-pooling replaced by average pooling, BatchNorm an
identity, softmax dropped from attention — so no gradient can cancel, and the support
of the input gradient of one output position is exactly its receptive field.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _pair

from convscope.errors import ConvscopeError, NothingUsable
from convscope.ir import ops as O
from convscope.ir.graph import Graph, Node
from convscope.ir.ops import OpKind

__all__ = ["build_module", "GraphModule"]

Fn = Callable[..., torch.Tensor]


class _Scope(nn.Module):
    """A plain container for the modules below one name prefix."""

    def forward(self, *args: Any) -> Any:  # pragma: no cover - containers are never called
        raise RuntimeError("a scope container is not callable")


class _Lambda(nn.Module):
    """A parameter-free op as a module, so it shows up under its layer name."""

    def __init__(self, fn: Fn, label: str):
        super().__init__()
        self.fn = fn
        self.label = label

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return self.fn(*xs)

    def extra_repr(self) -> str:
        return self.label


def _pad_args(p: tuple[tuple[int, int], tuple[int, int]]) -> tuple[int, int] | None:
    """Symmetric padding as (ph, pw), or None when asymmetric."""
    (t, b), (l, r) = p
    return (t, l) if t == b and l == r else None


def _gate(t: torch.Tensor) -> torch.Tensor:
    """Oracle form of a bounded gate (sigmoid, hard sigmoid): a positive rescaling to at most 1, as
    the real gate is bounded; an identity would let ``x * gate(x)`` square the magnitude at every
    squeeze-excitation block and overflow in deep networks.  The scale is a constant (detached), so
    the gradient's support is that of the identity."""
    return t / t.detach().abs().amax().clamp_min(1e-300)


def _act(a: O.ActAttrs, oracle: bool) -> nn.Module:
    if oracle:
        return _Lambda(_gate, "oracle gate") if a.fn in ("sigmoid", "hsigmoid") else nn.Identity()
    table: dict[str, Callable[[], nn.Module]] = {
        "relu": nn.ReLU, "relu6": nn.ReLU6, "hswish": nn.Hardswish, "hsigmoid": nn.Hardsigmoid,
        "swish": nn.SiLU, "gelu": nn.GELU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh,
        "softplus": nn.Softplus, "mish": nn.Mish, "selu": nn.SELU, "softsign": nn.Softsign,
        "logsigmoid": nn.LogSigmoid, "tanhshrink": nn.Tanhshrink,
        "celu": lambda: nn.CELU(a.alpha if a.alpha is not None else 1.0),
        "hardshrink": lambda: nn.Hardshrink(a.alpha if a.alpha is not None else 0.5),
        "softshrink": lambda: nn.Softshrink(a.alpha if a.alpha is not None else 0.5),
        "leaky_relu": lambda: nn.LeakyReLU(a.alpha if a.alpha is not None else 0.01),
        "elu": lambda: nn.ELU(a.alpha if a.alpha is not None else 1.0),
        "prelu": lambda: nn.PReLU(max(1, a.channels)),
        "pow": lambda: _Lambda(lambda t: t.pow(a.alpha if a.alpha is not None else 1.0), "pow"),
        "sqrt": lambda: _Lambda(torch.sqrt, "sqrt"), "rsqrt": lambda: _Lambda(torch.rsqrt, "rsqrt"),
        "exp": lambda: _Lambda(torch.exp, "exp"), "log": lambda: _Lambda(torch.log, "log"),
        "abs": lambda: _Lambda(torch.abs, "abs"), "neg": lambda: _Lambda(torch.neg, "neg"),
        "reciprocal": lambda: _Lambda(torch.reciprocal, "reciprocal"),
        "erf": lambda: _Lambda(torch.erf, "erf"),
        "clamp": lambda: _Lambda(lambda t: t.clamp(a.alpha, a.beta), f"clamp({a.alpha}, {a.beta})"),
    }
    return table[a.fn]()


def _module_for(node: Node, graph: Graph, oracle: bool) -> nn.Module | None:
    """The nn.Module of one node, or None for ops computed functionally."""
    a = node.attrs
    x = graph.node(node.inputs[0]).out if node.inputs else None
    op = node.op
    if op is OpKind.CONV:
        assert isinstance(a, O.ConvAttrs) and x is not None
        conv = nn.Conv2d(x.shape[0], a.out_channels, a.kernel, a.stride, 0, a.dilation, a.groups, a.bias)
        if a.fixed:  # the weight is a constant: a buffer, not a parameter
            w = conv.weight.detach()
            del conv.weight
            conv.register_buffer("weight", w)
        pad = _pad_args(a.padding)
        if pad is not None:
            conv.padding = pad
            return conv
        (t, b), (l, r) = a.padding
        return nn.Sequential(nn.ZeroPad2d((l, r, t, b)), conv)
    if op is OpKind.CONV_T:
        assert isinstance(a, O.ConvAttrs) and x is not None
        pad = _pad_args(a.padding)
        if pad is None:
            raise ConvscopeError(f"layer '{node.name}': asymmetric padding on a transposed conv cannot be built")
        convT = nn.ConvTranspose2d(x.shape[0], a.out_channels, a.kernel, a.stride, pad, a.output_padding,
                                   a.groups, a.bias, a.dilation)
        if a.fixed:  # a constant upsampling kernel (bilinear weights): a buffer, as for a conv
            w = convT.weight.detach()
            del convT.weight
            convT.register_buffer("weight", w)
        return convT
    if op in (OpKind.MAXPOOL, OpKind.AVGPOOL):
        assert isinstance(a, O.PoolAttrs)
        pad = _pad_args(a.padding)
        include = a.count_include_pad if op is OpKind.AVGPOOL else True
        if pad is None:  # padded beforehand: -inf for a max (never chosen), zeros for an average
            (t, b), (l, r) = a.padding  # that counts the padding
            if not include or a.ceil_mode:
                raise ConvscopeError(f"layer '{node.name}': asymmetric padding on an average pool that does "
                                     "not count the padding (or with ceil mode) cannot be built")
            unpadded = replace(a, padding=((0, 0), (0, 0)))
            fill = float("-inf") if op is OpKind.MAXPOOL and not oracle else 0.0
            return nn.Sequential(nn.ConstantPad2d((l, r, t, b), fill),
                                 _module_for(replace(node, attrs=unpadded), graph, oracle))
        if op is OpKind.MAXPOOL and not oracle:
            return nn.MaxPool2d(a.kernel, a.stride, pad, a.dilation, ceil_mode=a.ceil_mode)
        if a.dilation != (1, 1):
            raise ConvscopeError(f"layer '{node.name}': a dilated average pool cannot be built")
        return nn.AvgPool2d(a.kernel, a.stride, pad, ceil_mode=a.ceil_mode, count_include_pad=include)
    if op is OpKind.ADAPTIVE_MAXPOOL and oracle:
        return nn.AdaptiveAvgPool2d(a.size)  # type: ignore[union-attr]
    if op is OpKind.ADAPTIVE_AVGPOOL:
        return _AdaptiveAvgPool(a.size)  # type: ignore[union-attr]
    if op is OpKind.ADAPTIVE_MAXPOOL:
        return _AdaptiveMaxPool(a.size)  # type: ignore[union-attr]
    if op is OpKind.BATCHNORM:
        assert x is not None
        if oracle:
            return nn.Identity()  # in eval mode a positive per-channel scale: it cannot change a support
        c = x.channels or 0
        return nn.BatchNorm2d(c, eps=a.eps) if len(x.shape) == 3 else nn.BatchNorm1d(c, eps=a.eps)  # type: ignore[union-attr]
    if op is OpKind.LAYERNORM:
        assert isinstance(a, O.NormAttrs) and x is not None
        axis = a.axis if a.axis is not None else x.channel_axis
        assert axis is not None
        return _ChannelNorm(x.shape[axis], axis % len(x.shape), a.eps, a.affine, oracle)
    if op is OpKind.GROUPNORM:
        assert isinstance(a, O.NormAttrs) and x is not None
        if oracle:
            return _Lambda(lambda t: t + t.mean(dim=tuple(range(2, t.dim())), keepdim=True), "oracle groupnorm")
        return nn.GroupNorm(a.groups, x.channels or 0, eps=a.eps, affine=a.affine)
    if op is OpKind.LRN:
        assert isinstance(a, O.LRNAttrs)
        return nn.Identity() if oracle else nn.LocalResponseNorm(a.size, a.alpha, a.beta, a.k)
    if op is OpKind.ACT:
        return _act(a, oracle)  # type: ignore[arg-type]
    if op is OpKind.DROPOUT:
        return nn.Dropout(a.p)  # type: ignore[union-attr]
    if op is OpKind.LINEAR:
        assert isinstance(a, O.LinearAttrs) and x is not None
        return nn.Linear(x.shape[-1], a.out_features, a.bias)
    if op is OpKind.UPSAMPLE:
        assert isinstance(a, O.UpsampleAttrs)
        align = a.align_corners if a.mode != "nearest" else None
        if a.size is not None:
            return nn.Upsample(size=a.size, mode=a.mode, align_corners=align)
        assert a.scale is not None
        return nn.Upsample(scale_factor=a.scale, mode=a.mode, align_corners=align)
    if op is OpKind.CHANNEL_SHUFFLE:
        # view-transpose-view, as torchvision's ShuffleNetV2 writes it: nn.ChannelShuffle computes the
        # same but cannot be exported to ONNX (the onnxruntime backend builds every network through it)
        g = a.groups  # type: ignore[union-attr]
        return _Lambda(lambda t: t.reshape(t.shape[0], g, t.shape[1] // g, *t.shape[2:]).transpose(1, 2)
                       .reshape(t.shape), f"channel shuffle, {g} groups")
    if op is OpKind.PIXEL_SHUFFLE:
        return nn.PixelShuffle(a.factor)  # type: ignore[union-attr]
    if op is OpKind.PIXEL_UNSHUFFLE:
        return nn.PixelUnshuffle(a.factor)  # type: ignore[union-attr]
    if op is OpKind.CONSTANT:
        assert isinstance(a, O.ConstAttrs)
        return _Const(a, oracle)
    return None


class _AdaptiveAvgPool(nn.AdaptiveAvgPool2d):
    """``nn.AdaptiveAvgPool2d``, except while exported to ONNX: there an output size that does not
    divide the input (VGG's 7×7 pool on a 3×3 map) has no ONNX op, so the same average is written
    as two matrix products, ``P_h · x · P_wᵀ`` (the pooling windows are rectangles: separable)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = int(x.shape[-2]), int(x.shape[-1])
        oh, ow = _pair(self.output_size)
        if not torch.onnx.is_in_onnx_export() or (h % oh == 0 and w % ow == 0):
            return super().forward(x)
        return _pool_matrix(oh, h, x) @ x @ _pool_matrix(ow, w, x).t()


class _AdaptiveMaxPool(nn.AdaptiveMaxPool2d):
    """``nn.AdaptiveMaxPool2d``, except while exported to ONNX with an output size that does not
    divide the input (no ONNX op): the maximum over each window's rows, then over its columns (the
    windows are rectangles), as slices, ReduceMax and Concat."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = int(x.shape[-2]), int(x.shape[-1])  # plain numbers: the windows are constants of the export
        oh, ow = _pair(self.output_size)
        if not torch.onnx.is_in_onnx_export() or (h % oh == 0 and w % ow == 0):
            return super().forward(x)
        rows = torch.cat([x[..., lo:hi, :].amax(-2, keepdim=True) for lo, hi in _bins(oh, h)], -2)
        return torch.cat([rows[..., lo:hi].amax(-1, keepdim=True) for lo, hi in _bins(ow, w)], -1)


def _bins(out: int, size: int) -> list[tuple[int, int]]:
    """The input windows of adaptive pooling: [floor(i·size/out), ceil((i+1)·size/out)) for each i."""
    return [((i * size) // out, -(-((i + 1) * size) // out)) for i in range(out)]


def _pool_matrix(out: int, size: int, like: torch.Tensor) -> torch.Tensor:
    """Row i averages the input window i of adaptive pooling (:func:`_bins`).  Built as plain
    numbers, so that the exporter records one constant (not the indexing)."""
    rows = [[1.0 / (hi - lo) if lo <= j < hi else 0.0 for j in range(size)] for lo, hi in _bins(out, size)]
    return torch.tensor(rows, dtype=like.dtype)


class _Const(nn.Module):
    """A held tensor (parameter when it counts parameters, else a buffer), with a batch axis of 1
    that broadcasts.  In the oracle every value is positive, so a product with it cannot cancel."""

    def __init__(self, a: O.ConstAttrs, oracle: bool):
        super().__init__()
        if oracle:
            t = torch.full(a.shape, abs(a.value) if a.value else 1.0)
        elif a.value is not None:
            t = torch.full(a.shape, float(a.value))
        else:
            t = torch.randn(a.shape) * 0.02
        if a.params:
            self.weight = nn.Parameter(t)
        else:
            self.register_buffer("weight", t)

    def forward(self) -> torch.Tensor:
        return self.weight.unsqueeze(0)


class _ChannelNorm(nn.Module):
    """LayerNorm over one axis (channels-first or last); an identity in the oracle."""

    def __init__(self, n: int, axis: int, eps: float, affine: bool, oracle: bool):
        super().__init__()
        self.axis = axis + 1  # batch
        self.oracle = oracle
        self.norm = nn.LayerNorm(n, eps=eps, elementwise_affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.oracle:
            return x
        if self.axis == x.dim() - 1:
            return self.norm(x)
        return self.norm(x.movedim(self.axis, -1)).movedim(-1, self.axis)


def _functional(node: Node, oracle: bool) -> Fn:
    a = node.attrs
    op = node.op
    if op is OpKind.GLOBAL_AVGPOOL or (op is OpKind.GLOBAL_MAXPOOL and oracle):
        keep = a.keepdims  # type: ignore[union-attr]
        return lambda t: t.mean(dim=(2, 3), keepdim=keep)
    if op is OpKind.GLOBAL_MAXPOOL:
        keep = a.keepdims  # type: ignore[union-attr]
        return lambda t: t.amax(dim=(2, 3), keepdim=keep)
    if op is OpKind.IDENTITY:
        return lambda t: t
    if op is OpKind.ZERO:
        return lambda t: t.mul(0.0)
    if op is OpKind.SCALE:
        v = a.value  # type: ignore[union-attr]
        return lambda t: t * v
    if op is OpKind.ADD:
        def add(*ts: torch.Tensor) -> torch.Tensor:
            out = ts[0]
            for t in ts[1:]:
                out = out + t
            return out
        return add
    if op is OpKind.MUL:
        def mul(*ts: torch.Tensor) -> torch.Tensor:
            out = ts[0]
            for t in ts[1:]:
                out = out * t
            return out
        return mul
    if op is OpKind.CONCAT:
        axis = a.axis + 1  # type: ignore[union-attr]

        def cat(*ts: torch.Tensor) -> torch.Tensor:
            n = max(t.shape[0] for t in ts)  # a constant (batch 1) joins every sample
            return torch.cat([t.expand(n, *t.shape[1:]) if t.shape[0] != n else t for t in ts], dim=axis)
        return cat
    if op is OpKind.SLICE:
        s: O.SliceAttrs = a  # type: ignore[assignment]
        if s.reverse:
            return lambda t: t.narrow(s.axis + 1, s.start, s.stop - s.start).flip(s.axis + 1)
        if s.step != 1:
            index = (slice(None),) * (s.axis + 1) + (slice(s.start, s.stop, s.step),)
            return lambda t: t[index]
        return lambda t: t.narrow(s.axis + 1, s.start, s.stop - s.start)
    if op is OpKind.FLATTEN:
        start = a.axis + 1  # type: ignore[union-attr]
        return lambda t: t.flatten(start)
    if op is OpKind.RESHAPE:
        shape = tuple(node.out.shape)
        return lambda t: t.reshape(t.shape[0], *shape)
    if op is OpKind.PERMUTE:
        perm = (0, *[p + 1 for p in a.perm])  # type: ignore[union-attr]
        return lambda t: t.permute(*perm)
    if op is OpKind.MATMUL:
        return torch.matmul
    if op is OpKind.ATTENTION:
        if oracle:
            return lambda q, k, v: (q @ k.transpose(-2, -1)) @ v / k.shape[-2]
        return lambda q, k, v: F.scaled_dot_product_attention(q, k, v)
    if op is OpKind.SOFTMAX:
        axis = a.axis  # type: ignore[union-attr]
        if oracle:
            return lambda t: t
        return lambda t: torch.softmax(t, dim=axis + 1 if axis >= 0 else axis)
    if op is OpKind.MEAN:
        r: O.ReduceAttrs = a  # type: ignore[assignment]
        dims = tuple(d + 1 if d >= 0 else d for d in r.axes)
        if r.fn == "sum" or oracle:  # the oracle sums: a max reads one position, a sum all it covers
            return lambda t: t.sum(dim=dims, keepdim=r.keepdims)
        reduce = {"mean": torch.mean, "max": torch.amax, "min": torch.amin}[r.fn]
        return lambda t: reduce(t, dim=dims, keepdim=r.keepdims)
    if op is OpKind.PAD:
        p: O.PadAttrs = a  # type: ignore[assignment]
        (t_, b_), (l_, r_) = p.padding
        mode = p.mode
        return lambda t: F.pad(t, (l_, r_, t_, b_), mode=mode)
    if op is OpKind.UNKNOWN:
        raise NothingUsable(f"layer '{node.name}' is an op convscope does not know "
                            f"({a.target}): the network cannot be built")  # type: ignore[union-attr]
    raise ConvscopeError(f"layer '{node.name}': no builder for op '{op.value}'")


def _tie(mod: nn.Module, owner: nn.Module) -> None:
    """Give ``mod`` the parameters of ``owner`` (a node that shares its weights): the same Parameter
    objects, so ``sum(p.numel() for p in module.parameters())`` counts them once."""
    subs = dict(owner.named_modules())
    for path, sub in mod.named_modules():
        o = subs.get(path)
        if o is None:
            continue
        for k, p in o._parameters.items():
            mine = sub._parameters.get(k)
            if p is not None and mine is not None and mine.shape == p.shape:
                sub._parameters[k] = p


class GraphModule(nn.Module):
    """Runs a Graph.  ``forward(x)`` returns the output (a tuple if the graph has several)."""

    def __init__(self, graph: Graph, oracle: bool = False):
        super().__init__()
        self.graph = graph
        self.oracle = oracle
        self._flat = False
        steps = []
        built: dict[str, nn.Module] = {}
        for node in graph.nodes:
            if node.op is OpKind.INPUT:
                continue
            mod = _module_for(node, graph, oracle)
            if mod is not None:
                built[node.name] = mod
                if node.shares and node.shares in built:
                    _tie(mod, built[node.shares])
                self._register(node.name, mod)
                steps.append((node.name, node.inputs, mod))
            else:
                steps.append((node.name, node.inputs, _functional(node, oracle)))
        self._steps = steps
        keep = set(graph.outputs)
        last: dict[str, int] = {}
        for idx, (name, inputs, _) in enumerate(steps):
            for i in inputs:
                last[i] = idx
        self._free_after = {idx: [n for n, li in last.items() if li == idx and n not in keep] for idx in range(len(steps))}
        self._inputs = [n.name for n in graph.inputs]

    def _register(self, name: str, mod: nn.Module) -> None:
        parts = name.split(".")
        if all(parts) and not self._flat:
            parent: nn.Module = self
            ok = True
            for p in parts[:-1]:
                child = parent._modules.get(p)
                if child is None:
                    child = _Scope()
                    parent.add_module(p, child)
                elif not isinstance(child, _Scope):
                    ok = False
                    break
                parent = child
            if ok and parts[-1] not in parent._modules and not hasattr(parent, parts[-1]):
                parent.add_module(parts[-1], mod)
                return
        # A name that is both a layer and a prefix of others: keep it flat, dots as "__".
        flat = name.replace(".", "__")
        if flat in self._modules:
            flat = f"_{flat}"
        self.add_module(flat, mod)

    def forward(self, *xs: torch.Tensor) -> Any:
        return self.run(*xs)

    def run(self, *xs: torch.Tensor, capture: Sequence[str] = (), stop_early: bool = False) -> Any:
        """Forward pass; with ``capture``, return ``(output, {name: tensor})`` for those layers.
        ``stop_early`` stops once every captured layer has run (the output is then None)."""
        if len(xs) != len(self._inputs):
            raise ValueError(f"{self.graph.name} takes {len(self._inputs)} input(s), got {len(xs)}")
        values: dict[str, torch.Tensor] = dict(zip(self._inputs, xs))
        wanted = set(capture)
        captured: dict[str, torch.Tensor] = {}
        for idx, (name, inputs, fn) in enumerate(self._steps):
            values[name] = fn(*(values[i] for i in inputs))
            if name in wanted:
                captured[name] = values[name]
                if stop_early and len(captured) == len(wanted):
                    return None, captured
            for n in self._free_after[idx]:
                values.pop(n, None)
        outs = tuple(values[o] for o in self.graph.outputs)
        out = outs[0] if len(outs) == 1 else outs
        return (out, captured) if capture else out


def build_module(graph: Graph, *, oracle: bool = False, seed: int | None = 0,
                 dtype: torch.dtype = torch.float32) -> GraphModule:
    """A module with random weights (seeded), in eval mode.  See the module docstring for ``oracle``."""
    if seed is not None:
        gen_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
    try:
        m = GraphModule(graph, oracle=oracle)
    finally:
        if seed is not None:
            torch.random.set_rng_state(gen_state)
    m = m.to(dtype)
    if oracle:
        with torch.no_grad():
            for mod in m.modules():
                if isinstance(mod, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                    fan_in = mod.weight[0].numel()
                    mod.weight.copy_(torch.full_like(mod.weight, 1.0 / fan_in))
                    if mod.bias is not None:
                        mod.bias.zero_()
    m.eval()
    return m

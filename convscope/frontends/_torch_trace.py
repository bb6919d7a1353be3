"""Capture by symbolic tracing (torch.fx) with shapes known at every step, and no tensor computed.

``torch.fx`` runs ``forward`` with proxies in place of tensors and reports every module call,
function, method and operator.  Our proxies also know their value's shape, so a forward that reads
``x.shape``, sizes a view with ``x.size(0)``, pads to a skip connection's size or asserts the input
size traces through: shapes are concrete, only tensor *values* are symbolic.  Each call is lowered
to IR nodes at once (``Lowering``), so shapes come from convscope's own shape inference and no
kernel runs — except an op the tables do not know, which runs once on zeros to observe its output.

What stops the trace is Python control flow on tensor values (``if x.sum() > 0``):
:class:`DataDependent` is raised, naming the line, and the caller falls back to running the model.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterator
from typing import Any

import torch
import torch.fx
from torch import nn
from torch.fx._symbolic_trace import _maybe_revert_all_patches

from convscope.errors import ConvscopeError, GraphError
from convscope.frontends._torch_functions import FUNCTIONS, Call, canonical
from convscope.frontends._torch_modules import handler_for, is_leaf, run_real, unknown_module
from convscope.frontends._torch_values import (
    ConstVal,
    LazyVal,
    Lowering,
    Opaque,
    TVal,
    Unsupported,
    flat_values,
    user_source,
)

__all__ = ["DataDependent", "dispatch", "name_of", "trace"]

_SHAPE_QUERIES = {"size", "dim", "numel", "nelement", "ndimension", "is_contiguous", "is_floating_point",
                  "is_complex", "get_device", "element_size", "stride", "data_ptr", "is_leaf"}


class DataDependent(Exception):
    """The forward branches on tensor values: symbolic tracing cannot follow it."""


# Calls whose result shares memory with their operand: an in-place op on it changes the operand too.
_VIEWS = frozenset({"getitem", "view", "view_as", "reshape", "narrow", "select", "split", "chunk", "unbind",
                    "tensor_split", "transpose", "permute", "t", "movedim", "swapaxes", "flatten", "unflatten",
                    "squeeze", "unsqueeze", "expand", "expand_as", "as_strided", "diagonal", "unfold", "detach"})


class ShapedProxy(torch.fx.Proxy):
    """A proxy that knows its value: a TVal, a ConstVal, or a lazily emitted value."""

    def __init__(self, tracer: ShapeTracer, value: Any):
        self.tracer = tracer
        self.node = None  # type: ignore[assignment]  # no fx graph is built
        self.value = value
        self.view_of: ShapedProxy | None = None  # the tensor a view op (see _VIEWS) made this from
        self.stale = ""  # why: changed in place through a view of it

    def __repr__(self) -> str:
        v = self.resolved
        return f"ShapedProxy({getattr(v, 'node', 'const')}, {list(v.shape)})"

    @property
    def resolved(self) -> Any:
        return self.value.get() if isinstance(self.value, LazyVal) else self.value

    @property
    def shape(self) -> torch.Size:
        return torch.Size(self.resolved.shape)

    def size(self, dim: int | None = None) -> Any:
        s = self.shape
        return s if dim is None else s[dim]

    def dim(self) -> int:
        return len(self.shape)

    ndimension = dim

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def numel(self) -> int:
        return math.prod(self.shape)

    nelement = numel

    @property
    def dtype(self) -> torch.dtype:
        v = self.resolved
        return v.tensor.dtype if isinstance(v, ConstVal) else torch.float32

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def is_cuda(self) -> bool:
        return False

    @property
    def requires_grad(self) -> bool:
        return False

    @property
    def T(self) -> Any:
        return self.tracer.create_proxy("call_method", "permute", (self, *reversed(range(self.ndim))), {})

    def __len__(self) -> int:
        return self.shape[0]

    # ``x += y`` changes the tensor x in place (an alias of x sees it); without these Python would
    # compute x + y and rebind the name alone.  (A constant, a parameter perhaps, is never changed.)
    def _inplace(self, op: Any, plain: Any, other: Any) -> Any:
        target = op if isinstance(self.resolved, TVal) else plain
        return self.tracer.create_proxy("call_function", target, (self, other), {})

    def __iadd__(self, other: Any) -> Any:
        return self._inplace(operator.iadd, operator.add, other)

    def __isub__(self, other: Any) -> Any:
        return self._inplace(operator.isub, operator.sub, other)

    def __imul__(self, other: Any) -> Any:
        return self._inplace(operator.imul, operator.mul, other)

    def __itruediv__(self, other: Any) -> Any:
        return self._inplace(operator.itruediv, operator.truediv, other)


class ShapeTracer(torch.fx.Tracer):
    def __init__(self, lo: Lowering):
        super().__init__(autowrap_modules=(math,))
        self.lo = lo
        self.result: Any = None
        self._inputs = 0
        self._input_shape: tuple[int, ...] = ()
        self._param_proxies: dict[int, ShapedProxy] = {}

    # -- values <-> proxies ------------------------------------------------------------------------
    def wrap(self, v: Any) -> Any:
        if isinstance(v, (TVal, ConstVal, LazyVal, Opaque)):
            return ShapedProxy(self, v)
        if isinstance(v, tuple):
            return retuple(v, [self.wrap(x) for x in v])
        if isinstance(v, list):
            return [self.wrap(x) for x in v]
        return v

    def unwrap(self, a: Any) -> Any:
        if isinstance(a, ShapedProxy):
            return a.resolved
        if isinstance(a, torch.fx.proxy.Attribute):  # an attribute proxy used as a value (x.mT…)
            return self.unwrap(self.create_proxy("call_function", getattr, (a.root, a.attr), {}))
        if isinstance(a, torch.fx.Proxy):
            raise Unsupported(f"a value fx could not follow: {a}")
        if isinstance(a, torch.Tensor):
            return self.lo.const(a)
        if isinstance(a, tuple):
            return retuple(a, [self.unwrap(x) for x in a])
        if isinstance(a, list):
            return [self.unwrap(x) for x in a]
        if isinstance(a, dict):
            return {k: self.unwrap(x) for k, x in a.items()}
        if isinstance(a, slice):
            return slice(self.unwrap(a.start), self.unwrap(a.stop), self.unwrap(a.step))
        return a

    # -- fx hooks ----------------------------------------------------------------------------------
    def create_proxy(self, kind: str, target: Any, args: tuple[Any, ...], kwargs: dict[str, Any],
                     name: str | None = None, type_expr: Any = None, proxy_factory_fn: Any = None) -> Any:
        if kind == "placeholder":
            self._inputs += 1
            if self._inputs == 1:
                return self.wrap(self.lo.input(self._input_shape))
            if args:  # a further forward argument with a default value: keep the default
                return args[0]
            raise DataDependent("the forward takes more than one tensor input")
        if kind == "get_attr":
            raise Unsupported(f"attribute {target}")
        if kind == "call_method" and target in _SHAPE_QUERIES:
            real = torch.empty(0).new_empty(self.unwrap(args[0]).shape) if target != "size" else None
            return args[0].size(*args[1:]) if target == "size" else getattr(real, target)(*args[1:], **kwargs)
        if kind == "call_function" and target is getattr:
            return self._getattr(args[0], args[1])
        if kind == "call_function" and target is operator.getitem and not isinstance(args[0], ShapedProxy):
            return args[0][args[1]]
        what = target if kind == "call_method" else name_of(target)
        name, inplace = canonical(what)
        _fresh(args, kwargs)
        if inplace and args and isinstance(args[0], ShapedProxy):
            base = args[0].view_of
            while base is not None:  # x[:, :4].relu_() changes x too
                base.stale = f"{what} on a view"
                base = base.view_of
        uargs, ukwargs = self.unwrap(args), self.unwrap(kwargs)
        out = self.wrap(dispatch(self.lo, what, uargs, ukwargs, lambda a, k: _run(kind, target, a, k),
                                 inplace_target=args[0] if args else None))
        if name in _VIEWS and args and isinstance(args[0], ShapedProxy):
            for p in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(p, ShapedProxy):
                    p.view_of = args[0]
        return out

    def _getattr(self, obj: Any, attr: str) -> Any:
        if isinstance(obj, ShapedProxy) and hasattr(ShapedProxy, attr):
            return getattr(obj, attr)
        raise Unsupported(f"the tensor attribute '{attr}'")

    def create_arg(self, a: Any) -> Any:
        return a  # only the output passes through here; it is kept as it is

    def create_node(self, kind: str, target: Any, args: tuple[Any, ...], kwargs: dict[str, Any],
                    name: str | None = None, type_expr: Any = None) -> torch.fx.Node:
        if kind == "output":
            self.result = args[0]
        return self.graph.create_node(kind, target, (), {}, name, None)

    def getattr(self, attr: str, attr_val: Any, parameter_proxy_cache: dict[str, Any]) -> Any:
        if isinstance(attr_val, torch.Tensor):
            key = id(attr_val)
            if key not in self._param_proxies:
                c = self.lo.const(attr_val)
                if c is None:
                    return attr_val
                self._param_proxies[key] = ShapedProxy(self, c)
            return self._param_proxies[key]
        return attr_val

    def call_module(self, m: nn.Module, forward: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        path = self.path_of_module(m)
        _fresh(args, kwargs)
        if not is_leaf(m):
            self.lo.scope.append(path)
            try:
                out = forward(*args, **kwargs)
            finally:
                self.lo.scope.pop()
            self.lo.scope_out.setdefault(path, []).append(tuple(
                v.resolved.node for v in flat_values(out) if isinstance(v, ShapedProxy) and isinstance(v.resolved, TVal)))
            return out
        uargs, ukwargs = self.unwrap(args), self.unwrap(kwargs)
        return self.wrap(call_leaf(self.lo, m, path, uargs, ukwargs))

    def to_bool(self, obj: torch.fx.Proxy) -> bool:
        raise DataDependent(f"the forward branches on a tensor's values (at {user_source() or 'an unknown line'})")

    def iter(self, obj: torch.fx.Proxy) -> Iterator[Any]:
        raise DataDependent(f"the forward iterates over a tensor (at {user_source() or 'an unknown line'})")

    def keys(self, obj: torch.fx.Proxy) -> Any:
        raise DataDependent("the forward unpacks a tensor with **")


def name_of(target: Any) -> str:
    """A function's name; a property read (``x.real``) arrives as its descriptor's ``__get__``."""
    name = getattr(target, "__name__", str(target))
    if name == "__get__" and hasattr(target, "__self__"):
        return getattr(target.__self__, "__name__", name)
    return name


def _run(kind: str, target: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Real execution of one call (patches reverted, so nothing is traced)."""
    with _maybe_revert_all_patches():
        if kind == "call_method":
            return run_real(lambda s, *a, **k: getattr(s, target)(*a, **k), args, kwargs)
        return run_real(target, args, kwargs)


def dispatch(lo: Lowering, what: str, args: tuple[Any, ...], kwargs: dict[str, Any], run: Any,
             inplace_target: Any = None) -> Any:
    """Lower one function / method / operator call (shared by the symbolic and the eager capture)."""
    name, inplace = canonical(what)
    values = [v.get() if isinstance(v, LazyVal) else v for v in flat_values((args, kwargs))]
    if any(isinstance(v, LazyVal) for v in flat_values((args, kwargs))):
        args, kwargs = _resolve_lazy(args), _resolve_lazy(kwargs)
    tensors = [v for v in values if isinstance(v, TVal)]
    source = user_source()
    opaque = [v for v in values if isinstance(v, Opaque)]
    if opaque and not tensors:
        return Opaque(f"{what} of {opaque[0].what}", ())
    if not tensors:  # nothing depends on the input: a constant, computed now
        return _constant(run(args, kwargs), [] if name in _SHAPE_ONLY else values)
    handler = FUNCTIONS.get(name)
    call = Call(lo, lo.here(name), name, args, kwargs, source, inplace)
    mark = lo.mark()
    try:
        if handler is None or opaque:
            raise Unsupported(f"reads {opaque[0].what}, which has no batch axis" if opaque else "")
        out = handler(call)
    except (Unsupported, GraphError) as exc:
        reason = exc.detail if isinstance(exc, GraphError) else str(exc)
        lo.rollback(mark)
        out = lo.unknown(call.name, what + (f" ({reason})" if reason else ""), run(args, kwargs), tensors,
                         params=lo.count_operands(values), source=source)
    if inplace and isinstance(inplace_target, ShapedProxy) and isinstance(out, TVal):
        inplace_target.value = out  # x.add_(y) changes x itself
    return out


# Calls whose result takes only its operand's shape, dtype and device, never its values: a
# ``weight.new_zeros(...)`` holds none of the weight's parameters.
_SHAPE_ONLY = frozenset({"new_zeros", "new_ones", "new_full", "new_empty", "zeros_like", "ones_like", "empty_like",
                         "full_like", "rand_like", "randn_like"})


def _constant(out: Any, values: list[Any], own: tuple[str, ...] = ()) -> Any:
    """The result of a call that reads no input-dependent tensor, as a constant held by the
    parameters its operands (and ``own``, a module's) derive from."""
    sources = tuple(dict.fromkeys([s for v in values if isinstance(v, ConstVal) for s in v.sources] + list(own)))
    if isinstance(out, (tuple, list)):  # (output, weights) of an attention on constants: each part
        return retuple(out, [_constant(o, values, own) for o in out]) if isinstance(out, tuple) \
            else [_constant(o, values, own) for o in out]  # keeps the parameters it derives from
    if not isinstance(out, torch.Tensor):
        return out
    return ConstVal(out.detach(), sources)


def retuple(v: tuple[Any, ...], items: list[Any]) -> tuple[Any, ...]:
    """``items`` as a tuple of ``v``'s kind: torch's (values, indices) results and the user's named
    tuples keep their fields."""
    if type(v).__module__ == "torch.return_types":
        return type(v)(items)
    return type(v)(*items) if hasattr(v, "_fields") else tuple(items)


def _resolve_lazy(obj: Any) -> Any:
    if isinstance(obj, LazyVal):
        return obj.get()
    if isinstance(obj, tuple):
        return retuple(obj, [_resolve_lazy(x) for x in obj])
    if isinstance(obj, list):
        return [_resolve_lazy(x) for x in obj]
    if isinstance(obj, dict):
        return {k: _resolve_lazy(x) for k, x in obj.items()}
    return obj


def call_leaf(lo: Lowering, m: nn.Module, path: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Lower a leaf module call (named by its path; a second call of the same module gets _1)."""
    handler = handler_for(m)
    source = type(m).__name__
    values = list(flat_values((args, kwargs)))
    tensors = [v for v in values if isinstance(v, TVal)]
    if not tensors and not any(isinstance(v, (Opaque, LazyVal)) for v in values):
        # nothing depends on the input (a parametrization computing a weight): a constant, computed now
        with _maybe_revert_all_patches():
            out = run_real(m, args, kwargs)
        own = (lo.param_names.get(id(t)) for t in (*m.parameters(), *m.buffers()))
        return _constant(out, values, tuple(n for n in own if n is not None))
    call = Call(lo, path, type(m).__name__, args, kwargs, source)
    mark = lo.mark()
    try:
        if handler is None:
            raise Unsupported("")
        return handler(call, m)
    except (Unsupported, GraphError) as exc:
        reason = exc.detail if isinstance(exc, GraphError) else str(exc)
        lo.rollback(mark)
        with _maybe_revert_all_patches():
            observed = run_real(m, args, kwargs)
        return unknown_module(lo, m, path, observed, tensors, reason, source)


def _fresh(args: Any, kwargs: Any) -> None:
    """No argument was changed in place through a view of it since it was made (x[:, :4].relu_()
    then x read again): symbolic tracing cannot say how; running the model follows it."""
    stale = [a for a in flat_values((args, kwargs)) if isinstance(a, ShapedProxy) and a.stale]
    if stale:
        raise DataDependent(f"a tensor changed in place through a view of it ({stale[0].stale}) is read again")


def global_hooks() -> bool:
    """torch's global module forward hooks or pre-hooks are set (they run on every module)."""
    from torch.nn.modules import module as mm

    return bool(getattr(mm, "_global_forward_hooks", None) or getattr(mm, "_global_forward_pre_hooks", None))


def hooked_modules(module: nn.Module) -> list[str]:
    """Paths of the modules that carry forward hooks or pre-hooks of the user's (or torch's global ones)."""
    everywhere = global_hooks()
    return [p for p, m in module.named_modules() if everywhere or m._forward_hooks or m._forward_pre_hooks]


def trace(module: nn.Module, lo: Lowering, shape: tuple[int, ...]) -> Any:
    """Trace ``module`` on an input of ``shape`` (no batch); returns the output value(s)."""
    hooked = hooked_modules(module)
    if hooked:  # symbolic tracing calls forward itself, past the hooks: running the model follows them
        raise DataDependent(f"forward hooks on {', '.join(p or '(the model)' for p in hooked[:3])}")
    tracer = ShapeTracer(lo)
    tracer._input_shape = shape
    try:
        tracer.trace(module)
    except (DataDependent, ConvscopeError):
        raise
    except torch.fx.proxy.TraceError as exc:
        raise DataDependent(str(exc)) from None
    return tracer.unwrap(tracer.result)

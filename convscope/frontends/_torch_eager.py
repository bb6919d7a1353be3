"""Fallback capture: run the model once on a zero input and record every call.

Used when symbolic tracing cannot follow the forward (Python control flow on tensor values).  A
``TorchFunctionMode`` sees each torch function, tensor method and operator the forward calls, and
forward hooks see each module; calls inside a leaf module (see ``_torch_modules.is_leaf``) are not
recorded, the module is.  Each real tensor is mapped (by identity, kept alive meanwhile) to the
value the lowering made of it, so the same tables as the symbolic capture build the graph.  Control
flow follows the branch a zero input takes, which the graph's notes say.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from convscope.errors import ConvscopeError, InputError
from convscope.frontends._torch_modules import is_leaf
from convscope.frontends._torch_functions import canonical
from convscope.frontends._torch_trace import retuple, call_leaf, dispatch, global_hooks, name_of
from convscope.frontends._torch_values import B, ConstVal, Lowering, Opaque, TVal, flat_values, user_source

__all__ = ["eager_trace"]


class _Recorder(TorchFunctionMode):
    def __init__(self, lo: Lowering):
        super().__init__()
        self.lo = lo
        self.values: dict[int, Any] = {}  # id(real tensor) -> TVal / ConstVal
        self.keep: list[torch.Tensor] = []  # keeps ids unique while recording
        self.leaf_depth = 0
        self.stale: dict[int, tuple[torch.Tensor, Any]] = {}  # a tensor changed through a view of it

    def resolve(self, a: Any) -> Any:
        if isinstance(a, torch.Tensor):
            if id(a) in self.stale:  # read after an in-place op on a view of it: unknown from here on
                self.refresh(a)
            v = self.values.get(id(a))
            return v if v is not None else self.lo.const(a)
        if isinstance(a, tuple):
            return retuple(a, [self.resolve(x) for x in a])
        if isinstance(a, list):
            return [self.resolve(x) for x in a]
        if isinstance(a, dict):
            return {k: self.resolve(x) for k, x in a.items()}
        return a

    def bind(self, real: Any, value: Any) -> None:
        """Remember which value each real output tensor is (an Opaque one too: a tensor the graph cannot
        follow, such as the batch merged into another axis, must not turn into a constant later)."""
        if isinstance(real, torch.Tensor) and isinstance(value, (TVal, ConstVal, Opaque)):
            self.values[id(real)] = value
            self.keep.append(real)
        elif isinstance(real, (tuple, list)) and isinstance(value, (tuple, list)):
            for r, v in zip(real, value):
                self.bind(r, v)
        elif isinstance(real, (tuple, list)) and isinstance(value, Opaque):
            for r in real:  # (output, weights) of a module that read what the graph cannot follow
                self.bind(r, value)

    def __torch_function__(self, func: Callable[..., Any], types: Any, args: tuple[Any, ...] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.leaf_depth:
            return out
        what = name_of(func)
        if what == "__setitem__" and len(args) == 3 and isinstance(args[0], torch.Tensor):
            self.write(*args)  # returns None: the tensor written into is what changes
            return out
        if not _has_tensor(out):
            return out
        rargs, rkwargs = self.resolve(args), self.resolve(kwargs)
        value = dispatch(self.lo, what, rargs, rkwargs, lambda a, k: out)
        self.bind(out, value)
        base = out._base if isinstance(out, torch.Tensor) else None
        if canonical(what)[1] and base is not None and id(base) in self.values:
            self.stale[id(base)] = (base, value)  # x[:, :4].relu_() changes x too
        return out

    def refresh(self, base: torch.Tensor) -> None:
        """The tensor a view of which an in-place op changed: an unknown op reading its old value and
        the view's new one (``x[idx] = view`` right after, as ``x[idx] += y`` does, says exactly how)."""
        _, view = self.stale.pop(id(base))
        old = self.resolve(base)
        tensors = [x for x in (old, view) if isinstance(x, TVal)]
        if tensors:
            self.bind(base, self.lo.unknown(self.lo.here("inplace_view"), "an in-place op on a view of this "
                                            "tensor", base, tensors, source=user_source()))


    def write(self, target: torch.Tensor, index: Any, value: Any) -> None:
        """``target[index] = value``: from now on the target is a new value that reads both (a write
        of channels ``[:, a:b]`` is exactly a concatenation; any other write is an unknown op)."""
        self.stale.pop(id(target), None)  # x[idx] += y: the write below says what changed
        t, v = self.resolve(target), self.resolve(value)
        tensors = [x for x in (t, v) if isinstance(x, TVal)]
        if not tensors:  # constants written into a constant: read it again where it is used
            self.values.pop(id(target), None)
            return
        new = _channel_write(self.lo, target, t, index, v)
        if new is None:
            new = self.lo.unknown(self.lo.here("setitem"), "setitem (a write into part of a tensor, x[i] = y)",
                                  target, tensors, source=user_source())
        self.bind(target, new)


def _channel_write(lo: Lowering, real: torch.Tensor, t: Any, index: Any, v: Any) -> Any:
    """``x[:, a:b] = y`` with y of the region's own shape, as cat(x[:, :a], y, x[:, b:]); else None."""
    idx = index if isinstance(index, tuple) else (index,)
    if idx and idx[-1] is Ellipsis:
        idx = idx[:-1]
    if not (isinstance(t, TVal) and isinstance(v, TVal) and t.ndim == 4 and t.bpos == 0 and 2 <= len(idx) <= 4):
        return None
    whole = slice(None)
    if idx[0] != whole or any(i != whole for i in idx[2:]) or not isinstance(idx[1], slice) \
            or idx[1].step not in (None, 1):
        return None
    a, b, _ = idx[1].indices(t.shape[1])
    if b <= a or v.shape != t.shape[:1] + (b - a,) + t.shape[2:]:
        return None
    parts = []
    for lo_c, hi_c in ((0, a), (b, t.shape[1])):
        if hi_c > lo_c:
            sl = (whole, slice(lo_c, hi_c))
            parts.append(dispatch(lo, "getitem", (t, sl), {}, lambda _a, _k, sl=sl: real[sl]))
        if lo_c == 0:
            parts.append(v)
    return dispatch(lo, "cat", (parts, 1), {}, lambda _a, _k: real)


@contextmanager
def _functions_seen(rec: _Recorder) -> Iterator[None]:
    """A custom ``torch.autograd.Function`` is invisible to the recorder (its ``apply`` is no torch
    function).  One whose forward is torch ops is recorded op by op; one whose forward leaves torch
    (numpy, a C++/CUDA extension) returns a tensor with no known origin: it becomes an ``unknown`` op
    reading the Function's inputs, never a constant."""
    base = torch.autograd.Function
    real = base.__dict__["apply"]

    def apply(cls: type, *args: Any, **kwargs: Any) -> Any:
        out = real.__func__(cls, *args, **kwargs)
        if rec.leaf_depth or not _has_tensor(out):
            return out
        outs = [out] if isinstance(out, torch.Tensor) else [t for t in out if isinstance(t, torch.Tensor)]
        if any(isinstance(rec.values.get(id(t)), TVal) for t in outs):
            return out  # computed by recorded torch ops from the network's values
        tensors = [v for v in flat_values(rec.resolve((args, kwargs))) if isinstance(v, TVal)]
        if tensors:
            name = cls.__name__
            rec.bind(out, rec.lo.unknown(rec.lo.here(name.lower()), f"{name} (a custom autograd.Function whose "
                                         "forward convscope cannot follow)", out, tensors, source=user_source()))
        return out

    base.apply = classmethod(apply)  # type: ignore[assignment, method-assign]
    try:
        yield
    finally:
        base.apply = real  # type: ignore[method-assign]


def _has_tensor(out: Any) -> bool:
    if isinstance(out, torch.Tensor):
        return True
    return isinstance(out, (tuple, list)) and any(isinstance(x, torch.Tensor) for x in out)


def eager_trace(module: nn.Module, lo: Lowering, shape: tuple[int, ...]) -> Any:
    """Run ``module`` on zeros of ``shape`` (batch B) and record it; returns the output value(s)."""
    rec = _Recorder(lo)
    paths = {m: p for p, m in module.named_modules()}
    hooks = []
    # The user's hooks may change what a module receives or returns.  Ours run inside theirs: the
    # pre-hook after their pre-hooks (it sees the arguments they made), the post-hook before their
    # hooks (prepended: it binds the module's own output, under the module's path); what their hooks
    # do then is recorded as the functional ops it is.  torch's global hooks run before any
    # module's own: under them a module's inside is recorded instead.
    inside = global_hooks()

    def leaf(m: nn.Module) -> bool:
        return is_leaf(m) and not inside

    def pre(m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if leaf(m):
            if rec.leaf_depth == 0:
                rec.pending.append((rec.resolve(args), rec.resolve(kwargs)))  # type: ignore[attr-defined]
            rec.leaf_depth += 1
        else:
            lo.scope.append(paths.get(m, type(m).__name__.lower()))

    def post(m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> None:
        if not leaf(m):
            path = lo.scope.pop()
            lo.scope_out.setdefault(path, []).append(tuple(
                v.node for t in flat_values(out) if isinstance(t, torch.Tensor)
                and isinstance(v := rec.values.get(id(t)), TVal)))
            return
        if rec.leaf_depth == 1:
            rargs, rkwargs = rec.pending.pop()  # type: ignore[attr-defined]
            path = paths.get(m, type(m).__name__.lower())
            flat = list(flat_values((rargs, rkwargs)))
            opaque = [v for v in flat if isinstance(v, Opaque)]
            if opaque:  # the module reads what the graph cannot follow: so is its output (an unknown op
                # where it meets the network again); its parameters are named in a note, not counted
                lo.unfollowed.update(dict.fromkeys(n for p in m.parameters() if (n := lo.param_names.get(id(p)))))
                tensors = [v for v in flat if isinstance(v, TVal)]
                what = f"{path} ({type(m).__name__}) of {opaque[0].what}"
                value = lo.unknown(lo.here(path), what, out, tensors) if tensors else Opaque(what, ())
            else:
                value = call_leaf(lo, m, path, rargs, rkwargs)
            rec.bind(out, value)
        rec.leaf_depth -= 1

    rec.pending = []  # type: ignore[attr-defined]
    for m in paths:
        if m is module:
            continue
        hooks.append(m.register_forward_pre_hook(pre, with_kwargs=True))
        hooks.append(m.register_forward_hook(post, with_kwargs=True, prepend=True))
    x = torch.zeros(B, *shape)
    rec.values[id(x)] = lo.input(shape)
    try:
        with rec, _functions_seen(rec):
            out = module(x)
    except ConvscopeError:
        raise
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - the user's forward may raise anything
        if isinstance(exc, TypeError) and "required positional argument" in str(exc):
            hint = ("; convscope calls forward with one image tensor: wrap the model in a module whose forward "
                    "takes the image alone and fixes the other arguments")
        elif len(shape) == 2:
            hint = ("; --input C,L runs the model on a signal (N, C, L): for a model on images give C,H,W; "
                    "a model that reads (N, L), with no channel axis, needs a wrapper whose forward takes "
                    "(N, 1, L) and passes it x.squeeze(1) (then --input 1,L)")
        else:
            hint = ("; is --input right, and does the forward work for any batch size (x.flatten(1), "
                    "not x.view(1, -1))?")
        raise InputError(f"{lo.b.name}: running the model on a zero input of shape {list(shape)} (a batch of {B}, "
                         f"to tell the batch axis from the others) failed: {type(exc).__name__}: {exc}"
                         + hint) from None
    finally:
        for h in hooks:
            h.remove()
    return rec.resolve(out)

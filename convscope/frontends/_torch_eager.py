"""Fallback capture: run the model once on a zero input and record every call.

Used when symbolic tracing cannot follow the forward (Python control flow on tensor values).  A
``TorchFunctionMode`` sees each torch function, tensor method and operator the forward calls, and
forward hooks see each module; calls inside a leaf module (see ``_torch_modules.is_leaf``) are not
recorded, the module is.  Each real tensor is mapped (by identity, kept alive meanwhile) to the
value the lowering made of it, so the same tables as the symbolic capture build the graph.  Control
flow follows the branch a zero input takes, which the graph's notes say.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from convscope.errors import ConvscopeError, InputError
from convscope.frontends._torch_modules import is_leaf
from convscope.frontends._torch_trace import call_leaf, dispatch, name_of
from convscope.frontends._torch_values import B, ConstVal, Lowering, Opaque, TVal, flat_values

__all__ = ["eager_trace"]


class _Recorder(TorchFunctionMode):
    def __init__(self, lo: Lowering):
        super().__init__()
        self.lo = lo
        self.values: dict[int, Any] = {}  # id(real tensor) -> TVal / ConstVal
        self.keep: list[torch.Tensor] = []  # keeps ids unique while recording
        self.leaf_depth = 0

    def resolve(self, a: Any) -> Any:
        if isinstance(a, torch.Tensor):
            v = self.values.get(id(a))
            return v if v is not None else self.lo.const(a)
        if isinstance(a, (tuple, list)) and not hasattr(a, "_fields"):
            return type(a)(self.resolve(x) for x in a)
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

    def __torch_function__(self, func: Callable[..., Any], types: Any, args: tuple[Any, ...] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.leaf_depth or not _has_tensor(out):
            return out
        what = name_of(func)
        rargs, rkwargs = self.resolve(args), self.resolve(kwargs)
        value = dispatch(self.lo, what, rargs, rkwargs, lambda a, k: out)
        self.bind(out, value)
        return out


def _has_tensor(out: Any) -> bool:
    if isinstance(out, torch.Tensor):
        return True
    return isinstance(out, (tuple, list)) and any(isinstance(x, torch.Tensor) for x in out)


def eager_trace(module: nn.Module, lo: Lowering, shape: tuple[int, ...]) -> Any:
    """Run ``module`` on zeros of ``shape`` (batch B) and record it; returns the output value(s)."""
    rec = _Recorder(lo)
    paths = {m: p for p, m in module.named_modules()}
    hooks = []

    def pre(m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if is_leaf(m):
            if rec.leaf_depth == 0:
                rec.pending.append((rec.resolve(args), rec.resolve(kwargs)))  # type: ignore[attr-defined]
            rec.leaf_depth += 1
        else:
            lo.scope.append(paths.get(m, type(m).__name__.lower()))

    def post(m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> None:
        if not is_leaf(m):
            lo.scope.pop()
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
        hooks.append(m.register_forward_hook(post, with_kwargs=True))
    x = torch.zeros(B, *shape)
    rec.values[id(x)] = lo.input(shape)
    try:
        with rec:
            out = module(x)
    except ConvscopeError:
        raise
    except Exception as exc:  # noqa: BLE001 - the user's forward may raise anything
        raise InputError(f"{lo.b.name}: running the model on a zero input of shape {list(shape)} (a batch of {B}, "
                         f"to tell the batch axis from the others) failed: {type(exc).__name__}: {exc}"
                         "; is --input right, and does the forward work for any batch size (x.flatten(1), "
                         "not x.view(1, -1))?") from None
    finally:
        for h in hooks:
            h.remove()
    return rec.resolve(out)

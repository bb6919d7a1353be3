"""PyTorch front end: an ``nn.Module`` (or a factory that builds one, or a module's name in a file) -> Graph.

Capture (see ``_torch_trace``): symbolic tracing with ``torch.fx``, where every proxy knows its
shape and every call is lowered at once to IR nodes through the tables in ``_torch_functions`` and
``_torch_modules``; no tensor is computed.  A forward that branches on tensor *values* cannot be
traced symbolically: it is then run once on a zero input while every call is recorded
(``_torch_eager``), and the graph says so (``meta['capture'] == 'eager'``, with the line).

Layer names are module paths (``layer3.0.conv2``); functional ops are named by the module whose
forward calls them (``layer3.0.add``).  An op the tables do not know becomes an ``unknown`` node
with the op's name and the shape observed by running it, and everything after it has an unknown
receptive field: nothing is guessed.  The module is analysed in eval mode (dropout and stochastic
depth are identities), and restored to its mode afterwards.

``graph.meta['notes']`` lists what a reader should know: parameters forward never uses (counted
in the total, as ``sum(p.numel())`` counts them, under ``meta['unlisted_params']``: in no layer), weights shared by several calls (counted once per call), and the capture fallback.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from convscope.errors import ConvscopeError, InputError
from convscope.frontends._torch_fold import fold
from convscope.frontends._torch_trace import DataDependent, trace
from convscope.frontends._torch_values import Lowering, Opaque, TVal, flat_values
from convscope.ir.graph import SCOPE_AMBIGUOUS, SIGNAL_INPUT, SCOPE_OUTPUTS, UNLISTED_PARAMS, Graph

__all__ = ["graph_from_factory", "graph_from_module"]


def _check_shape(shape: Any, what: str) -> tuple[int, ...]:
    """(C, H, W) or a signal's (C, L): positive integers, as :func:`convscope.api.parse_shape` takes
    them (32.5 or a tensor refused)."""
    from convscope.api import parse_shape

    return parse_shape(shape, f"{what}: the input shape", signal=True)


@contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


@contextmanager
def _buffers_kept(module: nn.Module) -> Iterator[None]:
    """Capture runs the module's own forward: a forward that updates its buffers (a step counter, an
    EMA, ``self.n += 1`` or ``self.n = self.n + 1``) must leave the user's model as it was."""
    saved = [(m, dict(m._buffers), {k: b.detach().clone() for k, b in m._buffers.items() if b is not None})
             for m in module.modules()]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, refs, data in saved:
                if isinstance(m._buffers, dict):  # a TorchScript module's is a wrapper: its values only
                    m._buffers.clear()
                    m._buffers.update(refs)
                for k, b in data.items():
                    t = refs[k]
                    if t is not None and not (t.shape == b.shape and torch.equal(t, b)):
                        t.resize_(b.shape).copy_(b)


CAPTURES = ("auto", "fx", "eager")
_DTYPE_FLAGS = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.int8: "int8"}


def graph_from_module(module: nn.Module, shape: Sequence[int], *, name: str | None = None,
                      capture: str = "auto") -> Graph:
    """The Graph of ``module`` for one input of ``shape`` (C, H, W).  ``capture``: ``fx`` (symbolic
    only; fails on data-dependent control flow), ``eager`` (run on zeros and record), or ``auto``
    (fx, and eager when fx cannot follow the forward)."""
    compiled = getattr(module, "_orig_mod", None)
    if isinstance(compiled, nn.Module):  # torch.compile(model): the model it wraps
        module = compiled
    name = name or type(module).__name__
    dims = _check_shape(shape, name)
    if capture not in CAPTURES:
        raise InputError(f"capture must be one of {', '.join(CAPTURES)}, got '{capture}'")
    if isinstance(module, torch.jit.ScriptModule):
        return _from_torchscript(module, dims, name)
    notes: list[str] = []
    with _eval_mode(module), _buffers_kept(module), torch.no_grad():
        notes += _materialise(module, dims, name)
        lo = _lowering(module, name)
        try:
            if capture == "eager":
                raise DataDependent("eager capture was asked for")
            out, used = trace(module, lo, dims), "fx"
        except ConvscopeError:
            raise
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - data-dependent control flow, or Python fx cannot follow
            from convscope.frontends._torch_eager import eager_trace

            if capture == "fx":
                raise InputError(f"{name}: symbolic tracing failed: {type(exc).__name__}: {exc}") from None
            why = str(exc) if isinstance(exc, DataDependent) else f"{type(exc).__name__}: {exc}"
            if capture == "auto":
                notes.append(f"symbolic tracing stopped ({why}); the model was run on a zero input instead, "
                             "so control flow follows the branch that input takes")
            lo = _lowering(module, name)
            out, used = eager_trace(module, lo, dims), "eager"
    outputs = [v.node for v in flat_values(out) if isinstance(v, TVal)]
    if not outputs:
        opaque = [v.what for v in flat_values(out) if isinstance(v, Opaque)]
        why = (f": its output has no batch axis in front (from {opaque[0]}); convscope analyses one image "
               "at a time") if opaque else ""
        raise InputError(f"{name}: the forward returns no tensor computed from its input{why}")
    notes += [f"an output without a batch axis in front is left out (from {v.what})"
              for v in flat_values(out) if isinstance(v, Opaque)]
    param_notes, unlisted = _param_notes(lo)
    notes += param_notes
    kinds = {p.dtype for p in module.parameters()}
    kind = kinds.pop() if len(kinds) == 1 else None
    if kind in _DTYPE_FLAGS:
        notes.append(f"the model's parameters are {str(kind).removeprefix('torch.')}: bytes and latency are for the "
                     f"dtype asked for (fp32 unless --dtype {_DTYPE_FLAGS[kind]})")
    meta = {"frontend": "torch", "capture": used, "notes": tuple(notes), **_scope_meta(lo)}
    if len(dims) == 2:  # the model reads (N, C, L): captured again at another length as (C, L)
        meta[SIGNAL_INPUT] = True
    if unlisted:
        meta[UNLISTED_PARAMS] = unlisted
    graph = lo.build(list(dict.fromkeys(outputs)), meta)
    return fold(graph)


def _scope_meta(lo: Lowering) -> dict[str, Any]:
    """What each container module returned (a trunk cut at ``layer3`` cuts at layer3's output, not at
    the last layer it ran: a side computation it does not return is not its output), and the
    containers that name no single output (called twice; several tensors returned)."""
    ends: dict[str, str] = {}
    unclear: dict[str, str] = {}
    for path, calls in lo.scope_out.items():
        if not path:
            continue
        if len(calls) > 1:
            unclear[path] = (f"'{path}' is called {len(calls)} times, so its output is not one map; cut at a layer "
                             "of the call you mean")
        elif len(calls[0]) > 1:
            unclear[path] = (f"'{path}' returns {len(calls[0])} tensors ({', '.join(calls[0][:4])}); a trunk has one "
                             "output: cut at one of them")
        elif calls[0]:
            ends[path] = calls[0][0]
    return {SCOPE_OUTPUTS: tuple(sorted(ends.items())), SCOPE_AMBIGUOUS: tuple(sorted(unclear.items()))}


def _materialise(module: nn.Module, dims: tuple[int, ...], name: str) -> list[str]:
    """Lazy modules (``nn.LazyLinear``, ``nn.LazyConv2d``) get their parameters' shapes from their
    first input, as in PyTorch: one forward on zeros of the input (batch 2) gives them theirs."""
    from torch.nn.parameter import is_lazy

    lazy = [p for p, m in module.named_modules() if any(is_lazy(t) for t in (*m.parameters(False), *m.buffers(False)))]
    if not lazy:
        return []
    try:
        module(torch.zeros(2, *dims))
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - the user's forward may raise anything
        raise InputError(f"{name}: lazy modules ({', '.join(lazy[:3])}) take their shapes from a first forward, "
                         f"and running the model on a zero input of shape {list(dims)} failed: "
                         f"{type(exc).__name__}: {exc}") from None
    return [f"lazy modules ({', '.join(lazy[:3])}{'…' if len(lazy) > 3 else ''}) took their parameters' shapes "
            f"from a first forward at {'×'.join(map(str, dims))}"]


def _from_torchscript(module: torch.jit.ScriptModule, dims: tuple[int, ...], name: str) -> Graph:
    """A scripted or traced module has no Python forward to trace: it is read through its ONNX
    export (the TorchScript exporter, batch norms kept), whose scopes are its module paths."""
    import tempfile
    import warnings
    from dataclasses import replace

    try:
        from convscope.frontends.from_onnx import load_onnx
    except ImportError:
        raise InputError(f"{name}: a TorchScript module is read through its ONNX export, which needs the onnx "
                         "package: pip install 'convscope[onnx]' (or pass the module before torch.jit)") from None
    with tempfile.TemporaryDirectory() as tmp, _eval_mode(module), _buffers_kept(module), torch.no_grad():
        path = Path(tmp) / f"{name}.onnx"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(module, (torch.zeros(1, *dims),), str(path), dynamo=False, do_constant_folding=False)
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - whatever the exporter cannot express
            raise InputError(f"{name}: a TorchScript module is read through its ONNX export, which failed: "
                             f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
        graph = load_onnx(str(path))
    meta = graph.meta_dict()
    meta["notes"] = (f"a TorchScript module ({type(module).__name__}): read through its ONNX export",
                     *meta.get("notes", ()))
    return replace(graph, meta=tuple(meta.items()))


def _param_notes(lo: Lowering) -> tuple[list[str], int]:
    """What to say about parameters no node holds or several calls share, and how many values no node
    holds (the graph's ``unlisted_params``)."""
    notes = []
    unused = [n for n in dict.fromkeys(lo.param_names.values()) if n not in lo.counted and n not in lo.unfollowed]
    lost = [n for n in lo.unfollowed if n not in lo.counted]
    if lost:
        size = sum(lo.param_sizes[n] for n in lost)
        notes.append(f"{size} parameters in {len(lost)} tensors belong to layers that read a tensor convscope cannot "
                     f"follow (see the unknown ops): counted in the total params, in no layer; those layers' "
                     f"MACs and time are not counted, so the totals are lower bounds (e.g. {', '.join(lost[:3])})")
    if unused:
        size = sum(lo.param_sizes[n] for n in unused)
        notes.append(f"{size} parameters in {len(unused)} tensors are never used by forward: counted in the total "
                     f"params (as sum(p.numel()) counts them), in no layer, and they cost no time "
                     f"(e.g. {', '.join(unused[:3])})")
    for n, k in lo.twice.items():
        notes.append(f"parameter {n} is used by {k} calls and counted {k} times (shared weights)")
    notes += lo.notes
    return notes, sum(lo.param_sizes[n] for n in (*lost, *unused))


# -- factories -------------------------------------------------------------------------------------
def graph_from_factory(modpath_or_file: str, fn_name: str, shape: Sequence[int] | None) -> Graph:
    """The module a factory returns, as a Graph (see :func:`_from_factory`); what the user's code
    prints while it is imported, called and captured goes to stderr (stdout carries ``--json -``)."""
    import contextlib

    with contextlib.redirect_stdout(sys.stderr):
        return _from_factory(modpath_or_file, fn_name, shape)


def _from_factory(modpath_or_file: str, fn_name: str, shape: Sequence[int] | None) -> Graph:
    """``module.path:factory`` (imported) or ``file.py:factory`` (loaded from the file, relative to
    the working directory): call the factory with no arguments and capture the module it returns.
    The name may also be an ``nn.Module`` instance the file builds at import (``net = Net()``): that
    module is captured as it is, not called.  Importing runs the user's code; nothing is unpickled."""
    ref = f"{modpath_or_file}:{fn_name}"
    if shape is None:
        raise InputError(f"{ref}: a PyTorch model needs --input C,H,W (input=(C, H, W) in Python: the channels "
                         "and size it takes; C,L for a model on signals; for analyze --res, the resolutions then "
                         "replace H and W)")
    dims = _check_shape(shape, ref)
    pymod = _import(modpath_or_file, ref)
    factory = getattr(pymod, fn_name, None)
    if factory is None:
        names = sorted(n for n, v in vars(pymod).items() if callable(v) and not n.startswith("_"))
        raise InputError(f"{ref}: '{fn_name}' is not defined in {modpath_or_file}"
                         + (f" (it defines: {', '.join(names[:12])}{', …' if len(names) > 12 else ''})" if names else ""))
    if isinstance(factory, nn.Module):  # an instance built at import: the model itself, not a factory
        return graph_from_module(factory, dims, name=fn_name)
    if not callable(factory):
        raise InputError(f"{ref}: '{fn_name}' is a {type(factory).__name__}, not a function or an nn.Module")
    try:
        model = factory()
    except SystemExit as exc:  # sys.exit() or an argparse call in the user's code: not convscope's exit
        raise InputError(f"{ref}: calling {fn_name}() called sys.exit({exc.code!r})") from None
    except Exception as exc:  # noqa: BLE001 - the user's factory may raise anything
        raise InputError(f"{ref}: calling {fn_name}() raised {type(exc).__name__}: {exc}") from None
    if not isinstance(model, nn.Module):
        raise InputError(f"{ref}: {fn_name}() returned a {type(model).__name__}, not a torch.nn.Module")
    return graph_from_module(model, dims, name=fn_name)


def _lowering(module: nn.Module, name: str) -> Lowering:
    lo = Lowering(name, module.named_parameters(remove_duplicate=False))
    lo.modules = frozenset(p for p, _ in module.named_modules() if p)
    return lo


@contextmanager
def _on_path(folder: str) -> Iterator[None]:
    added = folder not in sys.path
    if added:
        sys.path.insert(0, folder)
    try:
        yield
    finally:
        if added and folder in sys.path:
            sys.path.remove(folder)


def _import(target: str, ref: str) -> Any:
    is_file = target.endswith(".py") or os.sep in target or "/" in target
    try:
        if not is_file:
            with _on_path(os.getcwd()):
                return importlib.import_module(target)
        path = Path(target).expanduser().resolve()
        if not path.is_file():
            raise InputError(f"{ref}: no such file: {target}")
        modname = f"_convscope_user_{abs(hash(str(path)))}_{path.stem}"
        spec = importlib.util.spec_from_file_location(modname, path)
        if spec is None or spec.loader is None:
            raise InputError(f"{ref}: cannot load {target} as Python")
        pymod = importlib.util.module_from_spec(spec)
        sys.modules[modname] = pymod  # dataclasses and pickling-free typing look modules up here
        with _on_path(str(path.parent)):
            try:
                spec.loader.exec_module(pymod)
            except BaseException:
                sys.modules.pop(modname, None)
                raise
        return pymod
    except ConvscopeError:
        raise
    except SyntaxError as exc:
        raise InputError(f"{ref}: {exc.filename}:{exc.lineno}: syntax error: {exc.msg}") from None
    except SystemExit as exc:  # a script's sys.exit() or argparse run at import
        raise InputError(f"{ref}: importing {target} called sys.exit({exc.code!r}) (a script, not a module "
                         "to import? keep the code that runs at import behind `if __name__ == \"__main__\":`)") from None
    except Exception as exc:  # noqa: BLE001 - the user's module may raise anything at import
        raise InputError(f"{ref}: importing {target} failed: {type(exc).__name__}: {exc}") from None

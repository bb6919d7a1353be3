"""The Python API: ``load_graph`` (any model reference -> Graph) and ``analyze``.

A model reference is a :class:`~convscope.ir.Graph`, a spec path (``.yaml``/``.yml``), ``zoo:NAME``,
an ``.onnx`` path, ``module.path:factory`` / ``file.py:factory`` (a callable returning an
``nn.Module``, or the name of an ``nn.Module`` instance the file makes: ``file.py:net`` for
``net = Net()``), or an ``nn.Module`` itself.  Nothing here prints.
"""

from __future__ import annotations

import operator
from dataclasses import replace
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from convscope.analyses.analyze import analyze_graph
from convscope.analyses.border import feasible_range, shape_at
from convscope.analyses.cost import DType, checked_dtype_batch
from convscope.analyses.latency import check_device
from convscope.errors import ConvscopeError, FixedSizes, InputError, positive_int
from convscope.frontends._spec_args import MAX_INT
from convscope.ir.graph import SIGNAL_INPUT, Graph
from convscope.ir.transform import with_input
from convscope.results import Analysis

__all__ = ["load_graph", "analyze", "analyze_resolutions", "measure", "parse_shape", "describe_ref"]

_FACTORY = re.compile(r"^(?P<mod>[^:]+):(?P<fn>[A-Za-z_][A-Za-z0-9_]*)$")


def parse_shape(text: str | Sequence[int], what: str = "input", *, signal: bool = True) -> tuple[int, ...]:
    """'3,224,224' or (3, 224, 224) -> (3, 224, 224), with an error that quotes the value.  A sequence
    holds integers (``int``, NumPy or 0-d integer tensors, ``torch.Size``): 32.5 is refused, not
    truncated, and so is a tensor given for its shape.  ``signal``: two integers C,L are taken too
    (a model that reads (N, C, L): a Conv1d stack)."""
    if isinstance(text, str):
        parts = [p.strip() for p in text.replace("x", ",").split(",")]
        try:
            shape = tuple(int(p) for p in parts)
        except ValueError:
            raise InputError(f"{what} must be C,H,W or C,L (integers), got '{text}'") from None
    else:
        shape = _int_shape(text, what)
    if len(shape) not in ((2, 3) if signal else (3,)) or any(s <= 0 for s in shape):
        batch = " (without the batch axis)" if len(shape) == 4 and shape[0] == 1 and all(s > 0 for s in shape) else ""
        also = " (or C,L for a signal)" if signal else ""
        raise InputError(f"{what} must be three positive integers C,H,W{also}{batch}, got '{text}'")
    if any(s > MAX_INT for s in shape):  # the bound a spec has (a larger size is a typo)
        raise InputError(f"{what} sizes must be at most {MAX_INT}, got '{text}'")
    return shape


def _int_shape(value: Any, what: str) -> tuple[int, ...]:
    """The integers of a sequence, or an InputError that says which value is not one."""
    dims = getattr(value, "shape", None)
    if dims is not None and hasattr(value, "dtype") and len(dims) != 1:  # a tensor or array, not a shape
        size = [int(d) for d in dims]
        chw = f"; for this one, input={tuple(size[-3:])}" if len(size) >= 3 else ""
        raise InputError(f"{what} must be the shape C,H,W (three positive integers), not a tensor or array "
                         f"({type(value).__name__} of shape {size}){chw}")
    try:
        items = list(value)
    except TypeError:
        raise InputError(f"{what} must be three positive integers C,H,W, got {value!r}") from None
    shape: list[int] = []
    for v in items:
        try:
            if isinstance(v, bool):
                raise TypeError
            shape.append(operator.index(v))  # int, NumPy integers, 0-d integer tensors; never a float
        except TypeError:
            got = f"[{', '.join(map(_shown, items))}]" if len(items) < 8 else type(value).__name__
            raise InputError(f"{what} must be three positive integers C,H,W, got {got}: {_shown(v)} is not an "
                             "integer") from None
    return tuple(shape)


def _shown(v: Any) -> str:
    """A value as the user wrote it: 32.5, not tensor(32.5) or np.float64(32.5)."""
    return repr(v.item()) if hasattr(v, "item") and getattr(v, "ndim", 1) == 0 else repr(v)


def describe_ref(model: Any) -> str:
    if isinstance(model, (str, os.PathLike)):
        return str(model)
    if isinstance(model, Graph):
        return model.name
    return type(model).__name__


def load_graph(model: Any, *, input: Sequence[int] | None = None) -> Graph:
    """Turn any model reference into a validated Graph at ``input`` (C, H, W) if given.  A signal's
    (C, L) is the (C, 1, L) map for a spec, a Graph or an ONNX file; a PyTorch model is run on
    (N, C, L)."""
    shape = parse_shape(input) if input is not None else None
    if isinstance(model, (str, os.PathLike)) and not os.fspath(model).strip():
        raise InputError("the model is an empty string: give a spec path (.yaml), zoo:NAME, an .onnx path, or "
                         "module.path:factory / file.py:factory")
    if isinstance(model, Graph):
        return with_input(model, _as_map(model, shape, model.name)) if shape else model
    if isinstance(model, os.PathLike):
        model = os.fspath(model)
    if isinstance(model, str):
        return _load_ref(model, shape)
    if _is_torch_module(model):
        from convscope.frontends.from_torch import graph_from_module

        if shape is None:
            raise InputError("a PyTorch module needs an input shape: input=(C, H, W)")
        return graph_from_module(model, shape)  # type: ignore[no-any-return]
    raise InputError(f"cannot analyse a {type(model).__name__}: give a spec path, zoo:NAME, an .onnx path, "
                     "module:factory, a Graph or an nn.Module")


def _as_map(own: Graph, shape: tuple[int, ...], what: str) -> tuple[int, ...]:
    """A signal's (C, L) as the (C, 1, L) map a network written for signals holds it as; refused for
    a network on images (C, L would silently analyse a single row)."""
    if len(shape) == 3:
        return shape
    if len(own.input_shape) != 3 or own.input_shape[1] != 1:
        raise InputError(f"{what}: input C,L is for a signal (a network whose input is C,1,L); this one takes "
                         f"{list(own.input_shape)}: give C,H,W")
    return shape[0], 1, shape[1]


def as_given(graph: Graph, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The input to capture ``graph``'s model again at: a signal model's (C, 1, L) as the (C, L) it
    reads."""
    return (shape[0], shape[2]) if graph.meta_dict().get(SIGNAL_INPUT) and len(shape) == 3 else shape


def _is_torch_module(obj: Any) -> bool:
    return any(c.__module__.startswith("torch.nn") and c.__name__ == "Module" for c in type(obj).__mro__)


def _load_ref(ref: str, shape: tuple[int, ...] | None) -> Graph:
    if ref.startswith("zoo:"):
        from convscope.zoo import load_zoo

        if shape is not None and len(shape) == 2:
            shape = _as_map(load_zoo(ref[4:]), shape, ref)
        return load_zoo(ref[4:], input_shape=shape)
    lower = ref.lower()
    if lower.endswith((".yaml", ".yml")):
        from convscope.frontends.from_spec import load_spec

        if shape is not None and len(shape) == 2:
            shape = _as_map(load_spec(ref), shape, ref)
        return load_spec(ref, input_shape=shape)
    if lower.endswith(".onnx"):
        if not Path(ref).exists():
            raise InputError(f"{ref}: no such file")
        if Path(ref).is_dir():
            raise InputError(f"{ref}: is a directory, not an ONNX file")
        try:
            from convscope.frontends.from_onnx import load_onnx
        except ImportError as exc:
            raise InputError(f"{ref}: reading ONNX needs the onnx package ({exc}); "
                             "install with: pip install 'convscope[onnx]'") from None
        return load_onnx(ref, input_shape=shape)  # type: ignore[no-any-return]
    m = _FACTORY.match(ref)
    if m:
        try:
            from convscope.frontends.from_torch import graph_from_factory
        except ImportError as exc:
            raise InputError(f"{ref}: analysing a PyTorch factory needs torch ({exc})") from None
        return graph_from_factory(m.group("mod"), m.group("fn"), shape)  # type: ignore[no-any-return]
    if Path(ref).is_dir():
        raise InputError(f"{ref}: is a directory, not a model (give a spec .yaml, an .onnx file, zoo:NAME or "
                         "module.path:factory)")
    if Path(ref).exists():
        if Path(ref).suffix.lower() in (".pt", ".pth", ".ckpt", ".bin", ".pkl", ".torchscript"):
            raise InputError(f"{ref}: a saved PyTorch model or checkpoint, which convscope does not unpickle (loading "
                             "one runs code from the file): write a factory that builds the module, and give "
                             "file.py:factory with --input C,H,W, or export it to ONNX")
        raise InputError(f"{ref}: unknown model file type (expected .yaml, .yml or .onnx)")
    raise InputError(f"'{ref}' is not a model: give a spec path (.yaml), zoo:NAME, an .onnx path, or "
                     "module.path:factory / file.py:factory")


def _with_latency(a: Analysis, graph: Graph, latency: dict[str, Any]) -> Analysis:
    from convscope.analyses.latency import predict

    if latency.get("threads") is not None:
        latency = {**latency, "threads": positive_int(latency["threads"], "threads")}
    pred = predict(graph, batch=a.batch, dtype=a.dtype, **latency)
    return a.with_latency(pred) if pred is not None else a


def analyze(
    model: Any,
    *,
    input: Sequence[int] | None = None,
    dtype: DType | str = "fp32",
    batch: int = 1,
    device: Any = None,
    backend: str | None = None,
    threads: int | None = None,
    fit: str | os.PathLike[str] | None = None,
    on_missing: str = "measure",
    progress: Any = None,
) -> Analysis:
    """Analyse a network: per-layer rows, totals, border layer, unproductive layers, feasible range,
    and a latency prediction when one is available (see :func:`convscope.analyses.latency.predict`:
    ``device=None`` predicts on this machine if ``convscope calibrate`` ran for it, ``"local"``
    insists, a profile name or file gives the analytic tier, with ``fit=CSV`` the fitted one).

    >>> a = analyze("zoo:vgg16-cifar", input=(3, 32, 32))
    >>> a.border_layer, a.unproductive_share
    """
    dt, batch = checked_dtype_batch(dtype, batch)  # a numpy integer becomes an int (the JSON holds it)
    check_device(device)
    graph, took = _timed_load(model, input)
    feasible, note = _feasible(model, graph, took)
    a = analyze_graph(graph, dtype=dt, batch=batch, feasible=feasible)
    if note:
        a = replace(a, notes=(*a.notes, note))
    return _with_latency(a, graph, dict(device=device, backend=backend, threads=threads, fit=fit,
                                        on_missing=on_missing, progress=progress))


RECAPTURE_LIMIT = 1024  # the largest resolution a model is captured again at to find its feasible range
RECAPTURE_BUDGET_S = 10.0  # seconds the feasible search may spend capturing a model again


def feasible_of(model: Any, graph: Graph) -> tuple[int | None, int | None]:
    """The feasible range; a model (not a spec, zoo network or Graph) is captured again at a size its
    graph cannot be re-inferred at (see :func:`feasible_range`)."""
    return _feasible(model, graph)[0]


def _timed_load(model: Any, input: Sequence[int] | None) -> tuple[Graph, float]:
    """The graph, and the seconds loading it took (what a capture at its size costs: the feasible
    search judges larger sizes by it)."""
    start = time.perf_counter()
    graph = load_graph(model, input=input)
    return graph, time.perf_counter() - start


def _feasible(model: Any, graph: Graph, took: float = 0.0) -> tuple[tuple[int | None, int | None], str | None]:
    """:func:`feasible_of` and a note when the range is unknown below some size: an ONNX file exported
    at one size with sizes fixed inside it (a resize to a recorded size) cannot be followed to the
    sizes below, so lo is not known there (rather than the first size at which it happens to fit)."""
    if isinstance(model, (str, os.PathLike)):
        ref = os.fspath(model)
        recapture = not (ref.startswith("zoo:") or ref.lower().endswith((".yaml", ".yml")))
    else:
        recapture = not isinstance(model, Graph)
    fixed: list[int] = []  # sizes an ONNX file's fixed sizes did not let it be analysed at
    refused: list[tuple[int, str]] = []  # sizes the model itself refused, with why
    slow: list[int] = []  # sizes not tried: capturing the model there would take too long
    spent = 0.0  # seconds spent capturing so far
    r0, t0 = max(graph.input_shape[1:], default=0), took  # the largest size captured so far, and its seconds

    def at(r: int) -> Graph | None:
        nonlocal spent, r0, t0
        if r > RECAPTURE_LIMIT:
            return None
        # a capture that runs the model (the eager one, for data-dependent control flow) costs up to
        # (r/r0)^4 more at r than at r0 (attention over r² positions): within the budget, or not tried
        if spent > RECAPTURE_BUDGET_S or (r > r0 and t0 >= 0.25 and spent + t0 * (r / r0) ** 4 > RECAPTURE_BUDGET_S):
            slow.append(r)
            return None
        start = time.perf_counter()
        try:
            return load_graph(model, input=as_given(graph, shape_at(graph, r)))
        except FixedSizes:
            fixed.append(r)
        except ConvscopeError as exc:
            refused.append((r, str(exc)))
        finally:
            took = time.perf_counter() - start
            spent += took
            if r >= r0:
                r0, t0 = r, took
        return None

    lo, hi = feasible_range(graph, at=at if recapture and len(graph.input_shape) == 3 else None)
    if slow:
        edge = "low end" if lo is None else "high end"
        return (lo, hi), (f"the feasible range's {edge} may lie beyond what was searched: capturing the model again "
                          f"at {min(slow)} px and more would take too long (it runs the model; "
                          f"{spent:.1f} s spent on other sizes)")
    below = [r for r in fixed if lo is None or r < lo]
    if not below and lo is None and refused:
        r, why = refused[0]
        why = why if len(why) <= 160 else why[:157] + "..."
        side = "x".join(map(str, shape_at(graph, r)[1:]))
        return (lo, hi), (f"the feasible range's low end is unknown: the model itself refused the other sizes tried "
                          f"({len(refused)} of them; at {side}: {why}); a Linear after a flatten, for one, takes "
                          "one size only")
    if not below:
        return (lo, hi), None
    return (None, hi), (f"the feasible range's low end is unknown: the file was exported with sizes fixed inside "
                        f"it (a resize to a recorded size, an adaptive pool exported as a fixed one, a constant or "
                        f"reshape of the image's size), so it cannot be analysed at {min(below)}×{min(below)} and "
                        f"other sizes below {lo if lo is not None else 'its own'}; export it with dynamic height "
                        "and width to know it")


def analyze_resolutions(
    model: Any,
    resolutions: Sequence[int],
    *,
    input: Sequence[int] | None = None,
    dtype: DType | str = "fp32",
    batch: int = 1,
    device: Any = None,
    backend: str | None = None,
    threads: int | None = None,
    fit: str | os.PathLike[str] | None = None,
    on_missing: str = "measure",
    progress: Any = None,
    errors: list[tuple[int, str]] | None = None,
) -> list[Analysis]:
    """The same network at square input resolutions (the channel count is kept), each with its
    latency prediction when one is available (the options of :func:`analyze`).  A size the network
    cannot be analysed at is an InputError, or with ``errors`` given, (size, why) appended to it and
    the other sizes analysed."""
    dt, batch = checked_dtype_batch(dtype, batch)
    check_device(device)
    if isinstance(resolutions, (str, bytes)) or not isinstance(resolutions, Sequence) or not resolutions:
        raise InputError(f"resolutions must be a list of positive integers (square input sizes), got {resolutions!r}")
    resolutions = [positive_int(r, "each resolution") for r in resolutions]
    graph, took = _timed_load(model, input)
    feasible, note = _feasible(model, graph, took)
    latency = dict(device=device, backend=backend, threads=threads, fit=fit, on_missing=on_missing,
                   progress=progress)
    out = []
    for r in resolutions:
        try:
            # loaded again at each size: a model is captured again (a fixed-size resize stays fixed, a
            # classifier that expects one size refuses another), a spec rebuilt, a Graph re-inferred
            g = load_graph(model, input=as_given(graph, shape_at(graph, r)))
        except ConvscopeError as exc:
            why = f"{graph.name} at {'x'.join(map(str, shape_at(graph, r)[1:]))}: {exc}"
            if errors is None:
                raise InputError(why) from None
            errors.append((r, why))
            continue
        adaptive = any(n.op.value.startswith("adaptive") for n in graph.nodes)
        a = analyze_graph(g, dtype=dt, batch=batch, feasible=None if adaptive else feasible)
        if note and not adaptive:
            a = replace(a, notes=(*a.notes, note))
        out.append(_with_latency(a, g, latency))
    return out


def measure(
    model: Any,
    *,
    input: Sequence[int] | None = None,
    backend: str = "torch",
    batch: int = 1,
    threads: int | None = None,
    dtype: str = "fp32",
    time_limit_s: float = 10.0,
    min_runs: int = 10,
    progress: Any = None,
) -> Any:
    """Real latency of a network on this machine (``convscope measure MODEL``): built with random
    weights and timed until the median is stable or ``time_limit_s``; a deployment plan file is
    measured network by network (``convscope measure PLAN``).  Needs torch (and onnxruntime for
    ``backend="onnxruntime"``).

    >>> m = measure("zoo:mobilenetv2", input=(3, 224, 224))
    >>> m.median_ms, m.p10_ms, m.p90_ms, m.threads
    """
    from convscope.analyses._plan_parse import is_plan_file
    from convscope.backends.measure import measure_graph, measure_plan

    kw = dict(backend=backend, batch=batch, threads=threads, dtype=dtype, time_limit_s=time_limit_s,
              min_runs=min_runs)
    if isinstance(model, (str, os.PathLike)) and is_plan_file(os.fspath(model)):
        if input is not None:
            raise InputError("input does not apply to a plan: the plan states its input")
        return measure_plan(os.fspath(model), **kw)
    graph = load_graph(model, input=input)
    ref = os.fspath(model) if isinstance(model, (str, os.PathLike)) else None
    return measure_graph(graph, progress=progress, ref=ref, **kw)

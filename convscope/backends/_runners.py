"""One forward pass of a Graph on a backend, ready to be timed: ``prepare(...) -> Runner``.

* ``torch``: PyTorch eager on the CPU, ``inference_mode``, ``torch.set_num_threads(threads)``.
* ``cuda``: PyTorch eager on the first GPU; every call ends with ``torch.cuda.synchronize()`` so the
  time is the GPU's, not the launch queue's.  ``Runner.enqueue`` is the same pass without the
  synchronisation: calibrate times a layer as a stream of enqueued calls with one ``Runner.sync``
  at the end of each sample, so its figure is what the layer costs inside an eager network, where
  the CPU launches the next op while the GPU runs this one: the larger of launch and GPU time.
* ``onnxruntime``: the network exported to ONNX (TorchScript exporter, opset 17, eval mode) and run
  by ONNX Runtime's CPU provider with ``ORT_ENABLE_ALL`` graph optimisations,
  ``intra_op_num_threads = threads`` and one inter-op thread.

The thread count is set for the duration of the ``with`` block and restored afterwards.

Steady-state memory: with glibc's default settings, freed activations are handed back to the
kernel (heap trimming, mmap for large blocks) and the next run takes a page fault for every 4 KiB
of them again — 2,500 faults, a quarter of the time, per run of a 32-channel CNN at 112 px here,
in a pattern that depends on the allocator's history, so a layer timed alone and the same layer
inside its network disagree by up to 3x.  :func:`steady_allocator` tells glibc to keep freed
memory (``M_TRIM_THRESHOLD`` 1 GiB, ``M_MMAP_THRESHOLD`` 32 MiB): what a long-running inference
process with jemalloc/tcmalloc, or glibc after enough runs, sees.  Both ``measure`` and
``calibrate`` time in that state; elsewhere than glibc it does nothing.

Memory: a network that cannot fit is an :class:`InputError` naming what it needs, never a crash.
:func:`prepare` refuses one whose weights and peak of live activations (``cost``) exceed the memory
free on the device (``MemAvailable``, or the GPU's free memory) before allocating anything (an
allocation the kernel grants but cannot back would get the process killed); an allocation that
fails anyway, while building or running, is turned into the same error.  ``calibrate`` then lists
the layer as not timed, and the local tier's prediction as a lower bound.
"""

from __future__ import annotations

import functools
import io
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from convscope.analyses._latency_kernels import check_backend
from convscope.analyses.cost import cost
from convscope.errors import InputError
from convscope.ir.graph import Graph
from convscope.units import fmt_bytes

__all__ = ["Runner", "prepare", "torch_dtype", "threads_set", "ort_session", "steady_allocator", "check_fits",
           "free_memory", "guarded", "MEASURABLE"]

MEASURABLE = ("torch", "cuda", "onnxruntime")
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _nothing() -> None:
    return None


@dataclass
class Runner:
    call: Callable[[], Any]  # one forward pass, synchronised
    device: str  # what it runs on, in words
    threads: int
    enqueue: Callable[[], Any] | None = None  # one pass, not waited for (cuda); None: same as call
    sync: Callable[[], None] = _nothing  # waits for what enqueue started


def torch_dtype(dtype: str) -> torch.dtype:
    if dtype not in _DTYPES:
        raise InputError(f"measuring in {dtype} is not supported: PyTorch runs fp32, fp16 and bf16 "
                         "(int8 needs a quantised runtime)")
    return _DTYPES[dtype]


def _inputs(graph: Graph, batch: int, dtype: torch.dtype, device: str) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return [torch.randn((batch, *n.out.shape), generator=gen).to(device=device, dtype=dtype) for n in graph.inputs]


@contextmanager
def threads_set(threads: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _torch_runner(graph: Graph, batch: int, dtype: str, threads: int, device: str, label: str) -> Runner:
    from convscope.backends.to_torch import build_module

    dt = torch_dtype(dtype)
    module = build_module(graph, dtype=dt).to(device)
    xs = _inputs(graph, batch, dt, device)
    sync = torch.cuda.synchronize if device == "cuda" else _nothing

    def enqueue() -> Any:
        try:
            with torch.inference_mode():
                return module(*xs)
        except (MemoryError, RuntimeError) as exc:  # its outputs did not fit: said as an InputError
            err = _memory_error(exc, graph)
            if err is None:
                raise
            raise err from None

    def call() -> Any:
        out = enqueue()
        sync()
        return out

    if device == "cuda":
        return Runner(call, label, threads, enqueue, sync)
    return Runner(call, label, threads)


@contextmanager
def _stdout_silenced() -> Iterator[None]:
    """File descriptor 1 to /dev/null: a failing ``torch.onnx.export`` prints the whole TorchScript
    graph to stdout from C++ (its ONNX log is switched on by mistake), which would corrupt
    ``--json -``.  The error itself still reaches us as an exception."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def ort_session(module: torch.nn.Module, xs: list[torch.Tensor], threads: int) -> Any:
    """An ONNX Runtime CPU session for ``module`` exported at the shapes of ``xs``."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise InputError("the onnxruntime backend needs onnxruntime: pip install 'convscope[onnx]'") from None
    buf = io.BytesIO()
    names = [f"x{i}" for i in range(len(xs))]
    with warnings.catch_warnings(), _stdout_silenced():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(module, tuple(xs), buf, dynamo=False, input_names=names,  # type: ignore[arg-type]
                              opset_version=17)
        except Exception as exc:  # the exporter raises many kinds; all mean "not runnable on ONNX Runtime"
            lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
            first = lines[0] if lines else type(exc).__name__
            raise InputError(f"the onnxruntime backend cannot run this network: exporting it to ONNX failed "
                             f"({type(exc).__name__}: {first[:200]})") from None
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(buf.getvalue(), so, providers=["CPUExecutionProvider"])


def _ort_runner(graph: Graph, batch: int, dtype: str, threads: int, label: str) -> Runner:
    from convscope.backends.to_torch import build_module

    if dtype != "fp32":
        raise InputError(f"the onnxruntime backend measures fp32 only, not {dtype}")
    module = build_module(graph)
    xs = _inputs(graph, batch, torch.float32, "cpu")
    sess = ort_session(module, xs, threads)
    feed = {f"x{i}": x.numpy() for i, x in enumerate(xs)}
    return Runner(guarded(functools.partial(sess.run, None, feed), graph), label, threads)


# -- memory ----------------------------------------------------------------------------------------
def guarded(fn: Callable[[], Any], graph: Graph) -> Callable[[], Any]:
    """``fn`` with a failed allocation turned into an InputError (see :func:`_memory_error`)."""

    def call() -> Any:
        try:
            return fn()
        except Exception as exc:  # ONNX Runtime's errors are not RuntimeErrors; others raised again
            err = _memory_error(exc, graph)
            if err is None:
                raise
            raise err from None

    return call


def _memory_error(exc: BaseException, graph: Graph) -> InputError | None:
    """``exc`` as an InputError if it is a failed allocation (PyTorch's "can't allocate", CUDA out
    of memory, ONNX Runtime's "Failed to allocate", MemoryError), else None."""
    text = str(exc)
    if not (isinstance(exc, MemoryError) or "allocate" in text.lower() or "out of memory" in text.lower()):
        return None
    first = next((ln.strip() for ln in text.splitlines() if "allocate" in ln.lower() or "memory" in ln.lower()),
                 type(exc).__name__)
    return InputError(f"{_what(graph)} does not fit in memory: {first[:200]}")


def _what(graph: Graph) -> str:
    """A kernel graph of calibrate (``kernel:NAME``) is its layer; anything else its network."""
    return f"layer '{graph.name[7:]}'" if graph.name.startswith("kernel:") else f"network '{graph.name}'"


def free_memory(device: str) -> int | None:
    """Bytes a new allocation can take on ``device`` ('cpu': ``MemAvailable`` of /proc/meminfo;
    'cuda': the GPU's free memory); None where that is not known."""
    if device == "cuda":  # what PyTorch's caching allocator holds unused is free to it as well
        try:
            return int(torch.cuda.mem_get_info()[0]) + torch.cuda.memory_reserved() - torch.cuda.memory_allocated()
        except (RuntimeError, AssertionError):
            return None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_fits(graph: Graph, *, batch: int, dtype: str, device: str) -> None:
    """InputError if the weights and the peak of live activations of ``graph`` exceed the memory free
    on ``device``: nothing is allocated to find out."""
    free = free_memory(device)
    if free is None:
        return
    c = cost(graph, dtype=dtype if dtype in _DTYPES else "fp32", batch=batch)
    need = c.weight_bytes + c.peak_activation_bytes
    if need <= free:
        return
    big = max(c.nodes, key=lambda n: n.activation_bytes + n.weight_bytes)
    largest = "" if graph.name.startswith("kernel:") else \
        f"; the largest, '{big.name}', holds {fmt_bytes(big.activation_bytes + big.weight_bytes)}"
    where = "the GPU" if device == "cuda" else "this machine"
    raise InputError(f"{_what(graph)} does not fit in memory: running it needs at least {fmt_bytes(need)} "
                     f"({fmt_bytes(c.weight_bytes)} of weights, {fmt_bytes(c.peak_activation_bytes)} of live "
                     f"activations at batch {batch}{largest}), and {where} has {fmt_bytes(free)} free")


_STEADY: list[bool] = []


def steady_allocator() -> bool:
    """Keep freed memory in the process (see the module docstring); True if glibc took it."""
    if not _STEADY:
        ok = False
        try:
            import ctypes
            import ctypes.util

            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            ok = bool(libc.mallopt(-3, 32 * 2**20)) and bool(libc.mallopt(-1, 2**30))  # MMAP, TRIM thresholds
        except (OSError, AttributeError):
            ok = False
        _STEADY.append(ok)
    return _STEADY[0]


def prepare(graph: Graph, *, backend: str, batch: int, dtype: str, threads: int, label: str) -> Runner:
    """A runner for ``graph``; call it inside :func:`threads_set`."""
    steady_allocator()
    try:
        check_backend(backend)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    if backend not in MEASURABLE:
        raise InputError(f"backend '{backend}' cannot run here (it is a model of a device's runtime for the "
                         f"analytic tier); measure with {', '.join(MEASURABLE)}")
    if backend == "cuda" and not torch.cuda.is_available():
        raise InputError("backend 'cuda': no CUDA device is available on this machine")
    device = "cuda" if backend == "cuda" else "cpu"
    check_fits(graph, batch=batch, dtype=dtype, device=device)
    try:
        if backend == "onnxruntime":
            return _ort_runner(graph, batch, dtype, threads, label)
        return _torch_runner(graph, batch, dtype, threads, device, label)
    except InputError:
        raise
    except Exception as exc:  # an allocation failing while the weights and inputs are made
        err = _memory_error(exc, graph)
        if err is None:
            raise
        raise err from None

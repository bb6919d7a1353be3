"""Values seen while capturing a PyTorch model, and the lowering context that turns calls into IR nodes.

A captured model is run with batch size ``B`` (2, so a reshape that folds the batch into another
axis shows up as a wrong leading size).  Every tensor that depends on the input is a :class:`TVal`:
the IR node that computes it, its full PyTorch shape (batch included) and where the batch axis sits
(a sequence-first transformer moves it to axis 1).  Parameters, buffers and tensors the forward
creates from Python values are :class:`ConstVal`: a real tensor plus the parameter names it was
derived from, so a parameter used as a tensor operand (a layer scale, a position embedding) counts
its values once.  Nothing here knows which op is which: the tables in ``_torch_functions`` and
``_torch_modules`` do.

This module, ``_torch_functions`` and ``_torch_shapes`` import no torch: constants are any array
with a ``shape`` (torch tensors here, numpy arrays from the ONNX front end, which lowers ONNX nodes
through the same tables so an exported model gets the same IR as its original).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from convscope.errors import GraphError, InputError
from convscope.ir import ops as O
from convscope.ir.graph import Graph, GraphBuilder
from convscope.ir.ops import OpKind

__all__ = ["NO_BATCH", "B", "ConstVal", "LazyVal", "Lowering", "Opaque", "TVal", "Unsupported", "flat_values"]

B = 2


class Unsupported(Exception):
    """A call the tables recognise but cannot express in the IR (the message says why): it becomes
    an ``unknown`` node with the shape observed by running it."""


NO_BATCH = -1

# Ops whose parameters the IR derives from their attributes (the ones that can share weights).
WEIGHTED = frozenset({OpKind.CONV, OpKind.CONV_T, OpKind.LINEAR, OpKind.BATCHNORM, OpKind.LAYERNORM,
                      OpKind.GROUPNORM, OpKind.ACT})


@dataclass(eq=False, slots=True)
class TVal:
    """A tensor that depends on the input: produced by IR node ``node``."""

    node: str
    shape: tuple[int, ...]  # PyTorch shape, batch axis included
    bpos: int  # position of the batch axis; NO_BATCH when a batch of 1 was merged into another axis

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def ir_shape(self) -> tuple[int, ...]:
        if self.bpos == NO_BATCH:
            return self.shape
        return self.shape[:self.bpos] + self.shape[self.bpos + 1:]

    def axis(self, d: int) -> int:
        """PyTorch dim -> normalised PyTorch dim (negative dims counted from the end)."""
        if not -self.ndim <= d < self.ndim:
            raise Unsupported(f"dim {d} does not fit shape {list(self.shape)}")
        return d % self.ndim

    def ir_axis(self, d: int) -> int:
        """PyTorch dim -> IR axis; the batch axis has none."""
        d = self.axis(d)
        if d == self.bpos:
            raise Unsupported(f"the op works along the batch axis (dim {d} of {list(self.shape)})")
        return d if d < self.bpos or self.bpos == NO_BATCH else d - 1


@dataclass(eq=False, slots=True)
class ConstVal:
    """A tensor that does not depend on the input (a torch tensor or a numpy array); ``sources`` are
    the parameters it derives from."""

    tensor: Any
    sources: tuple[str, ...] = ()

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.tensor.shape)

    @property
    def ndim(self) -> int:
        return len(self.tensor.shape)

    @property
    def numel(self) -> int:
        return math.prod(self.tensor.shape)

    def array(self) -> np.ndarray:
        t = self.tensor
        return t if isinstance(t, np.ndarray) else np.asarray(t.detach().cpu())


@dataclass(eq=False, slots=True)
class LazyVal:
    """A value emitted only if something uses it (the attention weights nn.MultiheadAttention
    returns beside its output, which most code drops)."""

    make: Callable[[], Any]
    done: list[Any] = field(default_factory=list)

    def get(self) -> Any:
        if not self.done:
            self.done.append(self.make())
        return self.done[0]


@dataclass(eq=False, slots=True)
class Opaque:
    """A tensor computed from the input that has no batch axis (``x.sum()``): it is not part of the
    per-image network, and typically only feeds Python control flow."""

    what: str
    shape: tuple[int, ...]


def flat_values(obj: Any) -> Iterable[Any]:
    """Every value inside nested tuples, lists and dicts."""
    if isinstance(obj, (tuple, list)):
        for x in obj:
            yield from flat_values(x)
    elif isinstance(obj, dict):
        for x in obj.values():
            yield from flat_values(x)
    else:
        yield obj


def _fill(c: ConstVal) -> float | None:
    """The single value of a constant filled with one value (None if it has several)."""
    a = c.array()
    if a.size == 0 or a.dtype.kind not in "fiub":
        return None
    first = a.reshape(-1)[0]
    return float(first) if a.size == 1 or bool((a == first).all()) else None


class Lowering:
    """Adds IR nodes for a capture: unique names, constants, parameter bookkeeping, unknown ops."""

    def __init__(self, name: str, params: Iterable[tuple[str, Any]] = (), batch: int = B):
        """``params``: (name, tensor) of every parameter, shared ones under each of their names;
        ``batch``: the batch size values carry (an ONNX export has its own, usually 1)."""
        self.b = GraphBuilder(name)
        self.batch = batch
        self.added: list[str] = []  # every node, in the order added
        self.param_names: dict[int, str] = {}
        self.param_sizes: dict[str, int] = {}
        for pname, p in params:
            self.param_names.setdefault(id(p), pname)
            self.param_sizes[pname] = math.prod(p.shape)
        self.counted: set[str] = set()  # parameters whose values are in some node's params
        self.unfollowed: dict[str, None] = {}  # parameters of modules run on values the graph cannot follow
        self.twice: dict[str, int] = {}  # parameters counted more than once (shared weights)
        self.owner: dict[str, str] = {}  # parameter -> the weighted node that holds it
        self._journal: list[tuple[str, bool]] = []  # every count: (parameter, counted for the first time)
        self._pending: tuple[str, ...] = ()  # the parameters of the weighted op about to be emitted
        self._const_nodes: dict[tuple[int, tuple[int, ...], tuple[str, ...]], tuple[str, Any]] = {}
        self.notes: list[str] = []
        self.scope: list[str] = []
        self.scope_out: dict[str, list[tuple[str, ...]]] = {}  # container module -> its outputs, per call
        self.modules: frozenset[str] = frozenset()  # the model's module paths (names functional ops leave alone)

    # -- names -------------------------------------------------------------------------------------
    def unique(self, base: str) -> str:
        base = base or "op"
        if base not in self.b:
            return base
        k = 1
        while f"{base}_{k}" in self.b:
            k += 1
        return f"{base}_{k}"

    def here(self, what: str) -> str:
        """The default name of a functional op: ``scope.what`` (``layer1.0.add``); never a module's
        path (an ``x + y`` before a submodule called ``add``: the module keeps ``add``)."""
        name = f"{self.scope[-1]}.{what}" if self.scope and self.scope[-1] else what
        if name in self.modules:
            k = 1
            while f"{name}_{k}" in self.modules:
                k += 1
            name = f"{name}_{k}"
        return name

    # -- parameters --------------------------------------------------------------------------------
    def add_param(self, name: str, size: int) -> None:
        self.param_sizes.setdefault(name, size)

    def count(self, names: Iterable[str]) -> int:
        """Mark parameters as counted; the number of their values not counted before.  They are
        taken to be the weights of the next weighted node :meth:`emit` adds (see ``_shares``)."""
        names = tuple(names)
        self._pending = tuple(n for n in names if n in self.param_sizes)
        n = 0
        for name in names:
            if name not in self.param_sizes:
                continue
            if name in self.counted:
                self.twice[name] = self.twice.get(name, 1) + 1
                self._journal.append((name, False))
                continue
            self.counted.add(name)
            self._journal.append((name, True))
            n += self.param_sizes[name]
        return n

    def mark(self) -> int:
        """A point to :meth:`rollback` to: a handler that counts its weights and then finds it cannot
        express the op hands them back, so that the unknown op it becomes holds them."""
        return len(self._journal)

    def rollback(self, mark: int) -> None:
        while len(self._journal) > mark:
            name, first = self._journal.pop()
            if first:
                self.counted.discard(name)
            else:
                self._once_less(name)
        self._pending = ()

    def _once_less(self, name: str) -> None:
        """One use fewer of a parameter counted more than once."""
        k = self.twice.get(name, 1) - 1
        if k > 1:
            self.twice[name] = k
        else:
            self.twice.pop(name, None)

    def count_operands(self, values: Iterable[Any]) -> int:
        """Count the parameters among an unknown op's operands (ConstVal sources)."""
        return self.count(tuple(dict.fromkeys(s for v in values if isinstance(v, ConstVal) for s in v.sources)))

    def const(self, value: Any) -> ConstVal | None:
        """A real torch tensor seen as an operand -> ConstVal with its parameter name, if it is one."""
        import torch

        if not isinstance(value, torch.Tensor):
            return None
        path = self.param_names.get(id(value))
        return ConstVal(value.detach(), (path,) if path is not None else ())

    # -- nodes -------------------------------------------------------------------------------------
    def input(self, shape: Sequence[int]) -> TVal:
        """The model's input: an image (C, H, W), or a signal (C, L) that the graph holds as the
        (C, 1, L) map a 1×k convolution runs on, reshaped to the (N, C, L) tensor the model reads."""
        if len(shape) == 2:
            c, length = shape
            self.b.add_input("input", (c, 1, length))
            self.added.append("input")
            return self.emit("input.as1d", OpKind.FLATTEN, O.AxisAttrs(1),  # as squeeze(2) is
                             [TVal("input", (self.batch, c, 1, length), 0)], bpos=0)
        self.b.add_input("input", shape)
        self.added.append("input")
        return TVal("input", (self.batch, *shape), 0)

    def emit(self, name: str, op: OpKind, attrs: O.Attrs, inputs: Sequence[TVal | ConstVal], *,
             bpos: int | None = None, source: str | None = None) -> TVal:
        """Add one node; ConstVal inputs become ``constant`` nodes aligned with the first TVal."""
        pending, self._pending = self._pending, ()
        partner = next((x for x in inputs if isinstance(x, TVal)), None)
        ins = [x.node if isinstance(x, TVal) else self.const_node(x, partner) for x in inputs]
        node = self.unique(name)
        weighted = op in WEIGHTED and (op is not OpKind.ACT or bool(getattr(attrs, "channels", 0)))  # PReLU
        shares = self._shares(pending, op, attrs, ins) if weighted and pending else None
        self.b.add(node, op, attrs, ins, source=source, shares=shares)
        self.added.append(node)
        if weighted:
            for p in pending:
                self.owner.setdefault(p, node)
        shape = self.b.info(node).shape
        if bpos is None:
            if partner is None:
                raise GraphError("an op on constants only cannot carry the batch", layer=node)
            if partner.bpos == NO_BATCH:
                bpos = NO_BATCH
            else:
                bpos = partner.bpos + (len(shape) + 1 - partner.ndim) if len(shape) + 1 >= partner.ndim else 0
        if bpos == NO_BATCH:
            return TVal(node, shape, NO_BATCH)
        bpos = min(bpos, len(shape))
        return TVal(node, shape[:bpos] + (self.batch,) + shape[bpos:], bpos)

    def _shares(self, pending: tuple[str, ...], op: OpKind, attrs: O.Attrs, ins: Sequence[str]) -> str | None:
        """The node whose weights a new weighted node uses again (a module called a second time), or
        None: all of its parameters belong to that one node, which holds exactly them and has
        weights of the same shapes.  Anything less clear-cut is counted again, with a note."""
        from convscope.analyses.cost import node_cost_of

        owners = {self.owner.get(p) for p in pending}
        if len(owners) != 1 or None in owners:
            return None
        owner = owners.pop()
        assert owner is not None
        if self.b.share_problem(owner, op, attrs, ins) is not None:
            return None
        o = self.b.get(owner)
        held = [p for p, n in self.owner.items() if n == owner]  # the parameters the owner holds: all of
        if node_cost_of(o, [self.b.info(i) for i in o.inputs]).params != sum(self.param_sizes[p] for p in held):
            return None  # its weights (a second call may pass the weight without the bias: a subset)
        for p in pending:  # counted once after all: no note
            self._once_less(p)
        return owner

    def const_node(self, c: ConstVal, partner: TVal | None, hint: str | None = None) -> str:
        """The IR ``constant`` node of a ConstVal.  Aligned with a batched partner (PyTorch
        broadcasting aligns trailing axes), the axis that meets the batch axis must be 1 (or B, for
        ``zeros_like(x)``) and is dropped."""
        shape = list(c.shape)
        if partner is not None:
            at = partner.bpos - (partner.ndim - len(shape))
            if partner.bpos != NO_BATCH and 0 <= at < len(shape):
                if shape[at] not in (1, self.batch):
                    raise Unsupported(f"a constant of shape {shape} varies along the batch axis")
                del shape[at]
        key = (id(c.tensor), tuple(shape), c.sources)  # one array may stand for several parameters
        if key in self._const_nodes:
            return self._const_nodes[key][0]
        pending = self._pending
        params = self.count(c.sources)  # a constant holds its own parameters...
        self._pending = pending  # ...which are not the next weighted op's
        value = None if c.sources else _fill(c)
        base = hint or (c.sources[0] if c.sources else self.here("const"))
        node = self.unique(base)
        self.b.add(node, OpKind.CONSTANT, O.ConstAttrs(tuple(shape), params, value), (), source="constant")
        self.added.append(node)
        self._const_nodes[key] = (node, c.tensor)  # the array is kept alive so its id stays its own
        return node

    def unknown(self, name: str, what: str, observed: Any, inputs: Sequence[TVal], *, params: int = 0,
                source: str | None = None) -> Any:
        """``unknown`` nodes for an op we cannot express: one per tensor it returned (``observed``:
        what it returned when run on zeros, or anything with the observed ``shape``, batch first),
        connected to every input it read, so whatever follows is unknown too."""
        ins = [x.node for x in inputs]
        if not ins:
            raise InputError(f"layer '{name}': {what} is not understood and reads no input tensor")

        def one(t: Any, suffix: str) -> Any:
            nonlocal params
            if isinstance(t, (tuple, list)) and not isinstance(t, (TVal, ConstVal)):  # (out, (h, c)) of an LSTM
                return type(t)(one(u, f"{suffix}.{i}") for i, u in enumerate(t)) if not hasattr(t, "_fields") \
                    else type(t)(*(one(u, f"{suffix}.{i}") for i, u in enumerate(t)))
            if not hasattr(t, "shape") or isinstance(t, (TVal, ConstVal)):
                return t
            bpos = _unknown_bpos(tuple(t.shape), inputs, self.batch)
            if bpos is None:
                if self.batch != 1 or not len(t.shape):
                    return Opaque(what, tuple(t.shape))
                bpos = NO_BATCH  # a batch of 1 somewhere in the output: what follows stays countable
            node = self.unique(name + suffix)
            full = tuple(t.shape) if len(t.shape) > 1 or bpos == NO_BATCH else (self.batch, 1)
            shape = full if bpos == NO_BATCH else full[:bpos] + full[bpos + 1:]
            self.b.add(node, OpKind.UNKNOWN, O.UnknownAttrs(what, shape, params), ins, source=source)
            self.added.append(node)
            params = 0
            return TVal(node, full, bpos)

        if isinstance(observed, (tuple, list)):
            return type(observed)(one(t, f".{i}") for i, t in enumerate(observed))
        return one(observed, "")

    def build(self, outputs: Sequence[str], meta: dict[str, Any]) -> Graph:
        return self.b.build(outputs=outputs or None, meta=meta)


def _unknown_bpos(shape: tuple[int, ...], inputs: Sequence[TVal], batch: int) -> int | None:
    """Where the batch axis of an unknown op's output is: first, as PyTorch keeps it, or where the
    op's input kept it when the output has the input's rank (an exporter may have moved the batch,
    as ONNX does around a gather), or the one axis as long as the batch (an LSTM's hidden state,
    (layers, batch, hidden)); None when none holds (the output is then opaque)."""
    if not shape:
        return None
    for x in inputs:
        if x.bpos != NO_BATCH and x.ndim == len(shape) and shape[x.bpos] == batch:
            return x.bpos
    if shape[0] == batch:
        return 0
    at = [i for i, n in enumerate(shape) if n == batch]  # an RNN's state (layers, batch, hidden)
    return at[0] if len(at) == 1 else None


def user_source() -> str | None:
    """``file.py:line`` of the innermost frame outside torch and convscope (where the user's forward
    called the op), or None."""
    import sys

    f = sys._getframe(2)
    while f is not None:
        fn = f.f_code.co_filename
        if f"{os.sep}torch{os.sep}" not in fn and f"{os.sep}convscope{os.sep}frontends{os.sep}" not in fn \
                and not fn.startswith("<"):
            return f"{os.path.basename(fn)}:{f.f_lineno}"
        f = f.f_back  # type: ignore[assignment]
    return None


def prod(xs: Iterable[int]) -> int:
    return math.prod(xs)

"""Cost (DESIGN.md, "Cost — exact semantics"): parameters, MACs, elementwise work, memory.

* ``params``: trainable parameters, as ``sum(p.numel())`` of the PyTorch module would count them
  (BatchNorm: weight and bias; running statistics are buffers, not parameters).
* ``macs``: multiply-accumulates of conv, transposed conv, linear, matmul and attention, the
  convention of ``torch.utils.flop_counter.FlopCounterMode`` (which counts ``2·macs`` FLOPs): bias
  additions are not counted; a transposed conv costs ``in_positions · C_in · (C_out/g) · k_h·k_w``.
  ``flops = 2·macs``.
* ``elementwise_ops``: everything else, never folded into MACs: one op per output element for
  activations, scaling and each extra input of add/mul; two for BatchNorm (scale and
  shift, as folded at inference), five for LayerNorm/GroupNorm (mean, variance, subtract, divide,
  affine), size + 4 for local response normalisation (square, window sum, scale, power, divide),
  k_h·k_w per output element for pools, one per input element for global pools and other
  reductions, four per output element for bilinear upsampling and sixteen for bicubic, three for
  softmax; none for pure data movement (concat, slice, reshape, permute, flatten, identity, pad,
  channel and pixel shuffles, nearest upsampling) nor for dropout, an identity at inference.
* shared weights (a node whose ``shares`` names another: a module called twice): its parameters
  and weight bytes are counted once, at the node that holds them; every call still reads them.
  A convolution whose weight is a constant (``fixed``: a buffer, such as a blur filter) reads it
  but holds no parameters for it.
* memory (bytes, for ``batch`` images of ``dtype``): weight bytes, activation bytes per node,
  bytes read + written per node (inputs + weights + output; zero for ops that only relabel memory:
  identity, dropout, flatten, reshape), and the peak of live activations when nodes run in
  topological order and each output is freed after its last reader (ops that relabel memory share
  their input's buffer).  In-place execution is not assumed, so the peak is an upper bound for
  runtimes that do it.  A ``constant`` (a parameter used as a tensor, a position embedding; or a
  fixed buffer) is one tensor for the whole batch: a parameter's bytes are weight bytes, a buffer's
  are held once; its readers read those bytes, and nothing is computed or written for it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum

from convscope._registry import registrar, require_all
from convscope.ir import ops as O
from convscope.ir.graph import Graph, Node, TensorInfo
from convscope.ir.ops import UPSAMPLE_SPAN, OpKind

__all__ = ["ALIAS_OPS", "Cost", "CostResult", "DType", "NodeCost", "cost", "node_cost", "node_cost_of", "checked_dtype_batch"]


class DType(str, Enum):
    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"
    INT8 = "int8"

    @property
    def bytes(self) -> int:
        return {"fp32": 4, "fp16": 2, "bf16": 2, "int8": 1}[self.value]

    @classmethod
    def parse(cls, value: str | DType) -> DType:
        if isinstance(value, DType):
            return value
        try:
            return cls(str(value).lower())
        except ValueError:
            raise ValueError(f"unknown dtype '{value}' (choose from {', '.join(d.value for d in cls)})") from None


@dataclass(frozen=True, slots=True)
class Cost:
    """Counts that add up with ``+``."""

    params: int = 0
    macs: int = 0
    elementwise_ops: int = 0

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.params + other.params, self.macs + other.macs,
                    self.elementwise_ops + other.elementwise_ops)

    @property
    def flops(self) -> int:
        return 2 * self.macs


@dataclass(frozen=True, slots=True)
class NodeCost:
    name: str
    cost: Cost
    weight_bytes: int  # weights this node holds (0 when it shares another node's)
    activation_bytes: int
    bytes_read: int
    bytes_written: int
    weights_read: int = 0  # weight bytes one call reads (its own, or the ones it shares)

    @property
    def bytes_moved(self) -> int:
        return self.bytes_read + self.bytes_written


@dataclass(frozen=True, slots=True)
class CostResult:
    nodes: tuple[NodeCost, ...]
    total: Cost
    weight_bytes: int
    activation_bytes: int
    peak_activation_bytes: int
    bytes_moved: int
    dtype: DType
    batch: int
    _index: dict[str, int] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {n.name: i for i, n in enumerate(self.nodes)})

    def of(self, name: str) -> NodeCost:
        return self.nodes[self._index[name]]


# Ops whose output is a relabelling of the input's memory (no data moves).
ALIAS_OPS = frozenset({OpKind.IDENTITY, OpKind.DROPOUT, OpKind.FLATTEN, OpKind.RESHAPE})

Handler = Callable[[Node, Sequence[TensorInfo]], Cost]
_HANDLERS: dict[OpKind, Handler] = {}
_handles = registrar(_HANDLERS, "cost handler")


def _prod(xs: Sequence[int]) -> int:
    n = 1
    for x in xs:
        n *= x
    return n


@_handles(OpKind.CONV)
def _conv(node: Node, ins: Sequence[TensorInfo]) -> Cost:
    a: O.ConvAttrs = node.attrs  # type: ignore[assignment]
    cin = ins[0].shape[0]
    per_out = (cin // a.groups) * a.kernel[0] * a.kernel[1]
    params = a.out_channels * per_out + (a.out_channels if a.bias else 0)
    return Cost(params, node.out.numel * per_out, 0)


@_handles(OpKind.CONV_T)
def _convT(node: Node, ins: Sequence[TensorInfo]) -> Cost:
    a: O.ConvAttrs = node.attrs  # type: ignore[assignment]
    cin = ins[0].shape[0]
    per_in = (a.out_channels // a.groups) * a.kernel[0] * a.kernel[1]
    params = cin * per_in + (a.out_channels if a.bias else 0)
    return Cost(params, ins[0].numel * per_in, 0)


@_handles(OpKind.LINEAR)
def _linear(node: Node, ins: Sequence[TensorInfo]) -> Cost:
    a: O.LinearAttrs = node.attrs  # type: ignore[assignment]
    fin = ins[0].shape[-1]
    params = fin * a.out_features + (a.out_features if a.bias else 0)
    return Cost(params, node.out.numel * fin, 0)


@_handles(OpKind.MATMUL)
def _matmul(node: Node, ins: Sequence[TensorInfo]) -> Cost:
    return Cost(0, node.out.numel * ins[0].shape[-1], 0)


@_handles(OpKind.ATTENTION)
def _attention(node: Node, ins: Sequence[TensorInfo]) -> Cost:
    q, k, v = (x.shape for x in ins)
    batch = _prod(q[:-2])
    l, s, e, ev = q[-2], k[-2], q[-1], v[-1]
    # scores q·kᵀ and the weighted sum scores·v, as FlopCounterMode's sdpa rule counts them
    return Cost(0, batch * l * s * (e + ev), batch * l * s * 3)


@_handles(OpKind.BATCHNORM)
def _bn(node: Node, ins: Sequence[TensorInfo]) -> Cost:
    c = node.out.channels or 0
    return Cost(2 * c if node.attrs.affine else 0, 0, 2 * node.out.numel)  # type: ignore[union-attr]


@_handles(OpKind.LRN)
def _lrn(node: Node, ins: Sequence[TensorInfo]) -> Cost:
    # square, the window sum over `size` channels, scale and shift, power, divide
    return Cost(0, 0, (node.attrs.size + 4) * node.out.numel)  # type: ignore[union-attr]


@_handles(OpKind.LAYERNORM)
def _ln(node: Node, ins: Sequence[TensorInfo]) -> Cost:
    a: O.NormAttrs = node.attrs  # type: ignore[assignment]
    axis = a.axis if a.axis is not None else node.out.channel_axis
    n = node.out.shape[axis] if axis is not None else 0
    return Cost(2 * n if a.affine else 0, 0, 5 * node.out.numel)


@_handles(OpKind.GROUPNORM)
def _gn(node: Node, ins: Sequence[TensorInfo]) -> Cost:
    c = node.out.channels or 0
    return Cost(2 * c if node.attrs.affine else 0, 0, 5 * node.out.numel)  # type: ignore[union-attr]


@_handles(OpKind.ACT)
def _act(node: Node, ins: Sequence[TensorInfo]) -> Cost:
    return Cost(node.attrs.channels, 0, node.out.numel)  # type: ignore[union-attr]


@_handles(OpKind.SCALE, OpKind.ZERO)
def _unary(node: Node, ins: Sequence[TensorInfo]) -> Cost:
    return Cost(0, 0, node.out.numel)


@_handles(OpKind.DROPOUT)
def _dropout(node: Node, ins: Sequence[TensorInfo]) -> Cost:
    return Cost(0, 0, 0)  # at inference an identity: no work, no memory of its own


@_handles(OpKind.ADD, OpKind.MUL)
def _binary(node: Node, ins: Sequence[TensorInfo]) -> Cost:
    return Cost(0, 0, node.out.numel * (len(ins) - 1))


@_handles(OpKind.MAXPOOL, OpKind.AVGPOOL)
def _pool(node: Node, ins: Sequence[TensorInfo]) -> Cost:
    k = node.attrs.kernel  # type: ignore[union-attr]
    return Cost(0, 0, node.out.numel * k[0] * k[1])


@_handles(OpKind.ADAPTIVE_AVGPOOL, OpKind.ADAPTIVE_MAXPOOL, OpKind.GLOBAL_AVGPOOL, OpKind.GLOBAL_MAXPOOL,
          OpKind.MEAN)
def _reduce(node: Node, ins: Sequence[TensorInfo]) -> Cost:
    return Cost(0, 0, ins[0].numel)


@_handles(OpKind.UPSAMPLE)
def _upsample(node: Node, ins: Sequence[TensorInfo]) -> Cost:
    span = UPSAMPLE_SPAN[node.attrs.mode]  # type: ignore[union-attr]
    per = (span + 1) ** 2 if span else 0  # a weighted sum of the taps (2×2 bilinear, 4×4 bicubic)
    return Cost(0, 0, per * node.out.numel)


@_handles(OpKind.SOFTMAX)
def _softmax(node: Node, ins: Sequence[TensorInfo]) -> Cost:
    return Cost(0, 0, 3 * node.out.numel)


@_handles(OpKind.INPUT, OpKind.IDENTITY, OpKind.CONCAT, OpKind.SLICE, OpKind.CHANNEL_SHUFFLE,
          OpKind.PIXEL_SHUFFLE, OpKind.PIXEL_UNSHUFFLE,
          OpKind.FLATTEN, OpKind.RESHAPE, OpKind.PERMUTE, OpKind.PAD)
def _free(node: Node, ins: Sequence[TensorInfo]) -> Cost:
    return Cost()


@_handles(OpKind.CONSTANT)
def _constant(node: Node, ins: Sequence[TensorInfo]) -> Cost:
    # A held tensor computes nothing; a parameter's values count once (at its first use).
    return Cost(node.attrs.params, 0, 0)  # type: ignore[union-attr]


@_handles(OpKind.UNKNOWN)
def _unknown(node: Node, ins: Sequence[TensorInfo]) -> Cost:
    # Nothing is guessed: only parameters the front end could see are counted.
    return Cost(node.attrs.params, 0, 0)  # type: ignore[union-attr]


require_all(_HANDLERS, OpKind, "cost handler")


def node_cost(graph: Graph, node: Node) -> Cost:
    """Cost of one node for batch 1 (its own weights counted, shared or not)."""
    return node_cost_of(node, [graph.node(i).out for i in node.inputs])


def _held(node: Node, params: int) -> int:
    """The parameters a node holds of the ``params`` it reads: none when it shares another node's,
    only the bias of a convolution whose weight is a constant (``ConvAttrs.fixed``)."""
    a = node.attrs
    if node.shares:
        return 0
    if isinstance(a, O.ConvAttrs) and a.fixed:
        return a.out_channels if a.bias else 0
    return params


def node_cost_of(node: Node, inputs: Sequence[TensorInfo]) -> Cost:
    """Cost of one node for batch 1, given its inputs' shapes (for a graph still being built)."""
    return _HANDLERS[node.op](node, inputs)


def checked_dtype_batch(dtype: DType | str, batch: int) -> tuple[DType, int]:
    """The DType for ``dtype`` and ``batch`` as an int; an unknown dtype or a batch out of range is an
    InputError (user input)."""
    from convscope.errors import InputError, batch_size

    try:
        dt = DType.parse(dtype)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    return dt, batch_size(batch)


def cost(graph: Graph, *, dtype: DType | str = DType.FP32, batch: int = 1) -> CostResult:
    """Cost of every node and the totals, for ``batch`` images of ``dtype``."""
    dt = DType.parse(dtype)
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    b = dt.bytes
    rows: list[NodeCost] = []
    total = Cost()
    act: dict[str, int] = {}  # activation bytes a node holds (the peak counts these)
    reads: dict[str, int] = {}  # bytes a reader of the node reads
    for node in graph.nodes:
        c = node_cost(graph, node)
        weights_read = c.params * b  # every weight a call reads, held here or not
        c = Cost(_held(node, c.params), c.macs * batch, c.elementwise_ops * batch)
        total = total + c
        out_bytes = node.out.numel * b * batch
        act[node.name] = out_bytes
        wbytes = c.params * b
        if node.op is OpKind.CONSTANT:  # one tensor for the batch; a parameter's bytes are weights
            held = node.out.numel * b
            reads[node.name] = held
            weight = node.attrs.params > 0 or node.shares is not None  # type: ignore[union-attr]
            out_bytes = act[node.name] = 0 if weight else held
            read = written = 0
        elif node.op in ALIAS_OPS and node.inputs and graph.node(node.inputs[0]).op is OpKind.CONSTANT:
            reads[node.name] = reads[node.inputs[0]]  # a constant relabelled (a view of a parameter)
            out_bytes = act[node.name] = act[node.inputs[0]]
            read = written = 0
        elif node.op in ALIAS_OPS or node.op is OpKind.INPUT:
            reads[node.name] = out_bytes
            read = written = 0
        else:
            reads[node.name] = out_bytes
            read = sum(reads[i] for i in node.inputs) + weights_read
            written = out_bytes
        rows.append(NodeCost(node.name, c, wbytes, out_bytes, read, written, weights_read))
    total = total + Cost(graph.unlisted_params, 0, 0)  # held by no node; sum(p.numel()) counts them
    peak = _peak_live(graph, act)
    return CostResult(
        tuple(rows), total, total.params * b,
        sum(v for n, v in act.items() if graph.node(n).op not in ALIAS_OPS),  # a view is its input's buffer
        peak,
        sum(r.bytes_moved for r in rows), dt, batch,
    )


def peak_holding_input(graph: Graph, *, dtype: DType | str = DType.FP32, batch: int = 1) -> int:
    """The peak of live activations when the input stays live to the end (another network reads it
    after this one: specialists on one frame, heads on one trunk output, a gate before its expert)."""
    b = DType.parse(dtype).bytes * batch
    return _peak_live(graph, {n.name: n.out.numel * b for n in graph.nodes}, hold_inputs=True)


def _peak_live(graph: Graph, act: dict[str, int], *, hold_inputs: bool = False) -> int:
    """Peak of live activation bytes in topological order; aliases share their input's buffer."""
    buffer: dict[str, str] = {}
    for node in graph.nodes:
        if node.op in ALIAS_OPS and len(node.inputs) == 1:
            buffer[node.name] = buffer[node.inputs[0]]
        else:
            buffer[node.name] = node.name
    last_use: dict[str, int] = {}
    for idx, node in enumerate(graph.nodes):
        last_use.setdefault(buffer[node.name], idx)
        for i in node.inputs:
            last_use[buffer[i]] = max(last_use.get(buffer[i], idx), idx)
    end = len(graph.nodes)
    for o in graph.outputs:
        last_use[buffer[o]] = end
    if hold_inputs:
        for n in graph.nodes:
            if n.op is OpKind.INPUT:
                last_use[buffer[n.name]] = end
    live = 0
    peak = 0
    frees: dict[int, int] = {}
    for idx, node in enumerate(graph.nodes):
        if buffer[node.name] == node.name:
            live += act[node.name]
            frees[last_use[node.name]] = frees.get(last_use[node.name], 0) + act[node.name]
        peak = max(peak, live)
        live -= frees.pop(idx, 0)
    return peak

"""Kernels: the units a runtime actually launches, after its fusion rules, with roofline features.

A *kernel* is one node, or a group of nodes the runtime executes as one (a convolution with the
BatchNorm folded into its weights and the activation applied in its epilogue).  Every latency tier
works on kernels: the analytic tier puts each on a roofline, the fitted tier fits coefficients to
their summed features, the local tier measures each unique kernel once (its ``signature``).

What each backend fuses (``FUSION``):

* ``torch``, ``cuda`` (PyTorch eager): nothing.  Every op is its own kernel launch with its own
  dispatch overhead; BatchNorm runs as its own kernel at inference.  Views (identity, dropout in eval,
  flatten, reshape) move no data and launch nothing.
* ``onnxruntime`` (CPU, ``ORT_ENABLE_ALL``): BatchNorm after a convolution is folded into its
  weights (by the exporter in eval mode, and by ORT's ``ConvBNFusion``); an activation directly
  after the conv (Relu, Clip = relu6, Sigmoid, Tanh, LeakyRelu, HardSigmoid) is fused into
  ``FusedConv``; on x86 its NCHWc transformer also takes a residual add after the conv as the conv's
  ``Sum`` input, with the activation after the add (checked on the optimized model of a ResNet-18:
  20 Conv nodes and nothing else but the pooling and the classifier).
* ``tflite`` (the converter used for HW-NAS-Bench's Raspberry Pi 4 and Pixel 3 numbers): BatchNorm
  folded, ReLU/ReLU6 fused into the conv *and* into an add.  A network whose output does not depend
  on its input at all (a NAS-Bench-201 cell whose output is cut off from its input by ``none``
  edges) is folded to a constant at conversion and launches nothing; otherwise every op runs,
  ``x·0`` included (x·0 is not 0 for inf/NaN, so converters keep it).  HW-NAS-Bench's timings show
  exactly this: the all-``none`` network takes 0.01 ms, while a cell whose convolutions only see
  ``none`` outputs still pays for them (a model that also folded those partial constants ranked the
  raspi4 networks at Spearman 0.79 instead of 0.90).

What a kernel leaves out: cache reuse between kernels (every kernel reads its inputs and weights
and writes its output once, from and to memory), overlap of independent kernels, and layout
conversions a runtime inserts (NCHW <-> NCHWc).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum

from convscope.analyses.cost import ALIAS_OPS, CostResult, DType, cost
from convscope.ir import ops as O
from convscope.ir.graph import Graph, Node
from convscope.ir.ops import OpKind

__all__ = ["OpClass", "Kernel", "FusionRules", "FUSION", "BACKENDS", "kernels", "op_class", "check_backend"]


class OpClass(str, Enum):
    """Which peak throughput a kernel's arithmetic runs at."""

    CONV = "conv"  # dense convolution (groups = 1), transposed or not
    GROUPED = "grouped"  # depthwise and grouped convolutions
    MATMUL = "matmul"  # linear, matmul, attention
    ELEMENTWISE = "elementwise"  # activations, norms, adds, pools, upsampling, softmax
    DATA = "data"  # pure data movement: concat, slice, pad, permute, channel shuffle


@dataclass(frozen=True, slots=True)
class Kernel:
    """One launch.  ``flops`` per op class (for the whole batch), ``bytes`` read + written."""

    name: str  # the head node: the one whose row carries the kernel's time
    nodes: tuple[str, ...]  # every node executed by this kernel, head first
    op_class: OpClass  # the class of the head (what bounds its arithmetic)
    flops: tuple[tuple[OpClass, int], ...]  # FLOPs per class (2 per MAC, 1 per elementwise op)
    bytes: int  # bytes read (external inputs + weights) + bytes written (the last node's output)
    signature: str  # op + attrs + input layouts + batch + dtype, without names: the cache key
    groups: int = 1  # groups of a grouped/depthwise conv head (a runtime may loop over them)

    def flops_of(self, cls: OpClass) -> int:
        return sum(f for c, f in self.flops if c is cls)


@dataclass(frozen=True, slots=True)
class FusionRules:
    fold_bn: bool = False  # BatchNorm after a conv folded into its weights
    conv_acts: frozenset[str] = frozenset()  # activations fused into a preceding conv
    add_acts: frozenset[str] = frozenset()  # activations fused into a preceding add
    conv_add: bool = False  # a residual add after a conv runs in the conv's epilogue
    const_fold: bool = False  # a network with an input-independent output folds to a constant
    linear_acts: frozenset[str] = frozenset()  # activations fused into a preceding linear (Gemm, FullyConnected)
    # output channels per group from which a grouped conv runs like a dense one (None: never); a GPU's
    # grouped kernels stay slow on wide groups at batch 32/64 (measured: FBNet on five GPUs)
    dense_group: int | None = 16


_ORT_ACTS = frozenset({"relu", "relu6", "sigmoid", "tanh", "leaky_relu", "hsigmoid"})
FUSION: dict[str, FusionRules] = {
    "torch": FusionRules(),
    "cuda": FusionRules(dense_group=None),
    "onnxruntime": FusionRules(fold_bn=True, conv_acts=_ORT_ACTS, conv_add=True, linear_acts=_ORT_ACTS),
    "tflite": FusionRules(fold_bn=True, conv_acts=frozenset({"relu", "relu6"}),
                          add_acts=frozenset({"relu", "relu6"}), const_fold=True,
                          linear_acts=frozenset({"relu", "relu6"})),
}
BACKENDS = tuple(FUSION)

_CLASS_OF: dict[OpKind, OpClass] = {
    OpKind.LINEAR: OpClass.MATMUL, OpKind.MATMUL: OpClass.MATMUL, OpKind.ATTENTION: OpClass.MATMUL,
    OpKind.CONCAT: OpClass.DATA, OpKind.SLICE: OpClass.DATA, OpKind.PAD: OpClass.DATA,
    OpKind.PERMUTE: OpClass.DATA, OpKind.CHANNEL_SHUFFLE: OpClass.DATA,
    OpKind.PIXEL_SHUFFLE: OpClass.DATA, OpKind.PIXEL_UNSHUFFLE: OpClass.DATA,
}


def check_backend(backend: str) -> str:
    if backend not in FUSION:
        raise ValueError(f"unknown backend '{backend}' (choose from {', '.join(BACKENDS)})")
    return backend


def op_class(node: Node, dense_group: int | None = None) -> OpClass:
    """The op class whose peak bounds the node.  A grouped convolution is slow where each group is
    thin (depthwise, ResNeXt's 4 channels per group: few MACs per weight loaded); on a CPU runtime,
    one with ``dense_group`` or more output channels per group (AlexNet's two halves, FBNet's g2
    blocks) is a dense convolution run once per group."""
    if node.op in (OpKind.CONV, OpKind.CONV_T):
        a = node.attrs
        wide = dense_group is not None and a.out_channels // a.groups >= dense_group  # type: ignore[union-attr]
        return OpClass.CONV if a.groups == 1 or wide else OpClass.GROUPED  # type: ignore[union-attr]
    return _CLASS_OF.get(node.op, OpClass.ELEMENTWISE)


def _constant_nodes(graph: Graph) -> set[str]:
    """Nodes whose value does not depend on the input: ``zero``, held tensors (nodes without inputs
    other than the graph's input) and what is computed only from constants (a merge with one live
    input is live)."""
    const: set[str] = set()
    for n in graph.nodes:
        if n.op is OpKind.ZERO or (n.op is not OpKind.INPUT and all(i in const for i in n.inputs)):
            const.add(n.name)
    return const


def _is_act(node: Node, fns: frozenset[str]) -> bool:
    return node.op is OpKind.ACT and node.attrs.fn in fns  # type: ignore[union-attr]


def _stages(n: Node, rules: FusionRules) -> list[Callable[[Node], bool]]:
    """What may follow ``n`` inside its kernel, in order; each stage is optional."""
    if n.op in (OpKind.CONV, OpKind.CONV_T):
        stages: list[Callable[[Node], bool]] = []
        if rules.fold_bn:
            stages.append(lambda x: x.op is OpKind.BATCHNORM)
        if rules.conv_add:
            stages.append(lambda x: x.op is OpKind.ADD and len(x.inputs) == 2)
        if rules.conv_acts:
            stages.append(lambda x: _is_act(x, rules.conv_acts))
        return stages
    if n.op is OpKind.ADD and rules.add_acts:
        return [lambda x: _is_act(x, rules.add_acts)]
    if n.op is OpKind.LINEAR and rules.linear_acts:
        return [lambda x: _is_act(x, rules.linear_acts)]
    return []


def _groups(graph: Graph, rules: FusionRules, skip: set[str]) -> list[list[Node]]:
    """Greedy chains head -> (bn) -> (add) -> (act): a follower joins when it is the only reader of
    the chain so far."""
    users = graph.consumers()
    out: list[list[Node]] = []
    taken: set[str] = set()
    for n in graph.nodes:
        if n.name in taken or n.name in skip or not n.inputs or n.op in ALIAS_OPS:
            continue  # inputs and held tensors (no inputs) launch nothing; nor do views
        group = [n]
        for stage in _stages(n, rules):
            last = group[-1].name
            if len(users[last]) != 1 or last in graph.outputs:
                break
            nxt = graph.node(users[last][0])
            if nxt.name not in taken and nxt.name not in skip and stage(nxt):
                group.append(nxt)
        taken.update(g.name for g in group)
        out.append(group)
    return out


def _signature(graph: Graph, group: list[Node], batch: int, dtype: DType) -> str:
    inside = {g.name: i for i, g in enumerate(group)}
    ext: list[str] = []
    ops = []
    for g in group:
        refs = []
        for i in g.inputs:
            if i in inside:
                refs.append(f"n{inside[i]}")
            else:
                if i not in ext:
                    ext.append(i)
                refs.append(f"x{ext.index(i)}")
        ops.append([g.op.value, O.attrs_to_dict(g.attrs), refs])
    ins = [graph.node(i).out.to_dict() for i in ext]
    return json.dumps({"ops": ops, "in": ins, "batch": batch, "dtype": dtype.value},
                      sort_keys=True, separators=(",", ":"))


def _kernel(graph: Graph, group: list[Node], c: CostResult, batch: int, dtype: DType,
            rules: FusionRules) -> Kernel:
    names = {g.name for g in group}
    flops: dict[OpClass, int] = {}
    for g in group:
        nc = c.of(g.name).cost
        if g.op is OpKind.BATCHNORM and len(group) > 1 and rules.fold_bn:
            continue  # folded into the conv's weights and bias: no work left at run time
        cls = op_class(g, rules.dense_group)
        if cls is OpClass.DATA:
            continue
        if nc.macs:
            flops[cls] = flops.get(cls, 0) + 2 * nc.macs
            if nc.elementwise_ops:  # attention's softmax over the scores: elementwise work of its own
                flops[OpClass.ELEMENTWISE] = flops.get(OpClass.ELEMENTWISE, 0) + nc.elementwise_ops
        else:
            flops[cls] = flops.get(cls, 0) + nc.elementwise_ops
    read = sum(c.of(i).activation_bytes for g in group for i in g.inputs if i not in names)
    weights = sum(c.of(g.name).weights_read for g in group
                  if not (g.op is OpKind.BATCHNORM and len(group) > 1 and rules.fold_bn))
    written = c.of(group[-1].name).bytes_written
    head = group[0]
    groups = head.attrs.groups if head.op in (OpKind.CONV, OpKind.CONV_T) else 1  # type: ignore[union-attr]
    return Kernel(group[0].name, tuple(g.name for g in group), op_class(group[0], rules.dense_group),
                  tuple(sorted(flops.items(), key=lambda kv: kv[0].value)), read + weights + written,
                  _signature(graph, group, batch, dtype), groups)


def kernels(graph: Graph, backend: str = "torch", *, batch: int = 1, dtype: DType | str = DType.FP32,
            costs: CostResult | None = None) -> tuple[Kernel, ...]:
    """The kernels ``backend`` launches for ``graph`` (unknown ops excluded: see ``unknown``)."""
    rules = FUSION[check_backend(backend)]
    dt = DType.parse(dtype)
    c = costs if costs is not None else cost(graph, dtype=dt, batch=batch)
    skip = {n.name for n in graph.nodes if n.op is OpKind.UNKNOWN}
    if rules.const_fold and set(graph.outputs) <= _constant_nodes(graph):
        return ()  # the output is a constant: the converter folds the whole network
    return tuple(_kernel(graph, g, c, batch, dt, rules) for g in _groups(graph, rules, skip))


def folded_nodes(graph: Graph, backend: str, ks: Sequence[Kernel]) -> set[str]:
    """Nodes that launch nothing: views, held tensors, a folded network (unknown ops excluded)."""
    run = {n for k in ks for n in k.nodes}
    return {n.name for n in graph.nodes
            if n.name not in run and n.op not in (OpKind.INPUT, OpKind.UNKNOWN)}

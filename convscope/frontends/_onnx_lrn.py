"""Local response normalisation as PyTorch exports it to ONNX: ``F.local_response_norm`` is Python
code, so both exporters write it out (square, a 5-D view, a pad along the channels, a 3-D average
pool of ``size`` channels, a view back — through an ``If`` in the TorchScript export — then
``· alpha + k``, ``** beta`` and a division), and the 5-D pad and pool have no counterpart in a 2-D
IR.  This finds that subgraph from its division back to the square, so the front end lowers it as
one LRN layer and skips the nodes in between (imports no torch)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from onnx import helper

__all__ = ["LRNMatch", "find_lrn"]


@dataclass(frozen=True, slots=True)
class LRNMatch:
    x: str  # the normalised tensor
    size: int
    alpha: str  # names of the scalar constants of ``· alpha``, ``+ k`` and ``** beta``
    k: str
    beta: str


def _outer_reads(node: Any) -> list[str]:
    """Names a node reads: its inputs, and for control flow the outer values its branches use."""
    reads = [i for i in node.input if i]
    for a in node.attribute:
        if a.type == a.GRAPH:
            sub = a.g
            inner = {o for n in sub.node for o in n.output} | {i.name for i in sub.initializer}
            reads += [i for n in sub.node for i in n.input if i and i not in inner]
    return reads


def find_lrn(nodes: Sequence[Any], initializers: Collection[str]) -> tuple[dict[int, LRNMatch], set[int]]:
    """(index of each matched division -> its LRN, indices of the nodes the matches replace)."""
    producer = {o: i for i, n in enumerate(nodes) for o in n.output if o}
    constants = set(initializers) | {o for n in nodes if n.op_type == "Constant" for o in n.output}
    matches: dict[int, LRNMatch] = {}
    skip: set[int] = set()
    for d, div in enumerate(nodes):
        if div.op_type != "Div" or len(div.input) != 2:
            continue
        found = _match(nodes, producer, constants, d)
        if found is None:
            continue
        match, chain = found
        if chain & skip:
            continue
        matches[d] = match
        skip |= chain
    return matches, skip


def _scalar_op(nodes: Sequence[Any], producer: dict[str, int], constants: set[str], name: str,
               op: str) -> tuple[int, str, str] | None:
    """The node of type ``op`` producing ``name`` with one operand not computed from the image:
    (its index, the other operand, the constant operand)."""
    i = producer.get(name)
    if i is None or nodes[i].op_type != op or len(nodes[i].input) != 2:
        return None
    a, b = nodes[i].input
    if b in constants:
        return i, a, b
    if op != "Pow" and a in constants:  # x ** c only; a product or sum either way round
        return i, b, a
    return None


def _match(nodes: Sequence[Any], producer: dict[str, int], constants: set[str],
           d: int) -> tuple[LRNMatch, set[int]] | None:
    x, denom = nodes[d].input
    pow_ = _scalar_op(nodes, producer, constants, denom, "Pow")
    add = _scalar_op(nodes, producer, constants, pow_[1], "Add") if pow_ else None
    mul = _scalar_op(nodes, producer, constants, add[1], "Mul") if add else None
    if not (pow_ and add and mul):
        return None
    # back from the scaled window mean, through views (and the TorchScript export's If), to the pool
    pool, seen, todo = None, set(), [mul[1]]
    while todo and pool is None and len(seen) < 8:
        i = producer.get(todo.pop())
        if i is None or i in seen:
            continue
        seen.add(i)
        n = nodes[i]
        if n.op_type == "AveragePool":
            pool = i
        elif n.op_type in ("Reshape", "Squeeze", "If", "Identity"):
            todo += [r for r in _outer_reads(n) if producer.get(r) is not None
                     and nodes[producer[r]].op_type in ("AveragePool", "Reshape", "Squeeze", "If", "Identity")]
    if pool is None:
        return None
    attrs = {a.name: helper.get_attribute_value(a) for a in nodes[pool].attribute}
    kernel = list(attrs.get("kernel_shape", []))
    pad = producer.get(nodes[pool].input[0])
    view = producer.get(nodes[pad].input[0]) if pad is not None and nodes[pad].op_type == "Pad" else None
    sq = producer.get(nodes[view].input[0]) if view is not None and nodes[view].op_type in ("Reshape", "Unsqueeze") else None
    if len(kernel) != 3 or kernel[1:] != [1, 1] or sq is None or nodes[sq].op_type != "Mul" \
            or list(nodes[sq].input) != [x, x]:
        return None
    chain = {d, pow_[0], add[0], mul[0], pool, pad, view, sq} | seen  # type: ignore[arg-type]
    # whatever else reads the replaced values (the shape arithmetic of the pad and the views) goes too,
    # as long as nothing outside the pattern depends on it
    dead = {o for i in chain - {d} for o in nodes[i].output}
    for i in range(min(chain), d):
        if i not in chain and any(r in dead for r in _outer_reads(nodes[i])):
            chain.add(i)
            dead.update(nodes[i].output)
    for i, n in enumerate(nodes):
        if i not in chain and any(r in dead for r in _outer_reads(n)):
            return None
    return LRNMatch(x, int(kernel[0]), mul[2], add[2], pow_[2]), chain - {d}

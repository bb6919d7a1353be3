"""NAS-Bench-201 networks (Dong & Yang, ICLR 2020) built from their arch string.

``|a~0|+|b~0|c~1|+|d~0|e~1|f~2|``: a cell is a DAG of nodes 0..3; group k lists the edges into node
k, ``op~j`` applies ``op`` to node j, node k is the sum of its edges, the cell output is node 3.
Ops (stride 1, C in = C out): ``none`` (x·0, still executed), ``skip_connect`` (identity),
``nor_conv_1x1``/``nor_conv_3x3`` (ReLU -> conv k×k, no bias -> BN), ``avg_pool_3x3`` (3×3/1, pad 1,
count_include_pad False).  Skeleton (C=16, N=5): stem conv 3×3 -> BN -> 5 cells @16 -> reduction
block -> 5 cells @32 -> reduction block -> 5 cells @64 -> BN -> ReLU -> GAP -> linear(10).
The reduction block: ReLU -> conv 3×3/2 -> BN -> ReLU -> conv 3×3 -> BN, plus AvgPool 2×2/2 -> conv
1×1; output = sum.  (Checks: all-``nor_conv_3x3`` = 220.12 M MACs, all-``none`` = 7.78 M.)

The network is produced as a spec (``spec_data``), so it can be written out and read back.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from convscope.errors import InputError
from convscope.ir.graph import Graph

__all__ = ["DESCRIPTION", "DEFAULT_ARCH", "OPS", "parse_arch", "spec_data", "build_graph"]

DESCRIPTION = ("NAS-Bench-201 network from its arch string (zoo:nasbench201:'|op~0|+|op~0|op~1|+|...|'); "
               "default: every edge nor_conv_3x3")
OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
DEFAULT_ARCH = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"


def parse_arch(arch: str) -> list[list[tuple[str, int]]]:
    """'|a~0|+|b~0|c~1|+|...|' -> [[(a, 0)], [(b, 0), (c, 1)], [...]] with checks."""
    groups = arch.strip().split("+")
    if len(groups) != 3:
        raise InputError(f"NAS-Bench-201 arch string must have 3 groups separated by '+', got {arch!r}")
    nodes = []
    for k, group in enumerate(groups, start=1):
        edges = [e for e in group.strip().strip("|").split("|") if e]
        if len(edges) != k:
            raise InputError(f"NAS-Bench-201 arch: node {k} needs {k} edges, got {len(edges)} in {group!r}")
        parsed = []
        for e in edges:
            op, _, src = e.partition("~")
            if op not in OPS:
                raise InputError(f"NAS-Bench-201 arch: unknown op {op!r} (ops: {', '.join(OPS)})")
            if not src.isdecimal() or int(src) >= k:
                raise InputError(f"NAS-Bench-201 arch: edge {e!r} into node {k} must come from a node < {k}")
            parsed.append((op, int(src)))
        nodes.append(parsed)
    return nodes


def _edge(op: str, src: str, base: str, c: int) -> tuple[list[dict[str, Any]], str]:
    if op == "skip_connect":
        return [], src
    if op == "none":
        return [{"zero": {"name": base, "from": src}}], base
    if op == "avg_pool_3x3":
        return [{"avgpool": {"k": 3, "s": 1, "p": 1, "count_include_pad": False, "name": base, "from": src}}], base
    k = 1 if op == "nor_conv_1x1" else 3
    return [
        {"relu": {"name": f"{base}.relu", "from": src}},
        {"conv": {"out": c, "k": k, "name": f"{base}.conv"}},
        {"bn": {"name": f"{base}.bn"}},
    ], f"{base}.bn"


def _cell(nodes: list[list[tuple[str, int]]], x: str, base: str, c: int) -> tuple[list[dict[str, Any]], str]:
    layers: list[dict[str, Any]] = []
    names = [x]
    for k, edges in enumerate(nodes, start=1):
        outs = []
        for op, j in edges:
            more, out = _edge(op, names[j], f"{base}.edges.{j}to{k}", c)
            layers += more
            outs.append(out)
        if len(outs) == 1:
            if outs[0] == names[0] and k == len(nodes):
                layers.append({"identity": {"name": f"{base}.node{k}", "from": outs[0]}})
                outs = [f"{base}.node{k}"]
            names.append(outs[0])
        else:
            layers.append({"add": {"name": f"{base}.node{k}", "from": outs}})
            names.append(f"{base}.node{k}")
    out = names[-1]
    if out == x:  # node 3 is node 0 through skips only: give the cell an output of its own
        layers.append({"identity": {"name": f"{base}.out", "from": x}})
        out = f"{base}.out"
    return layers, out


def _reduction(x: str, base: str, c: int) -> tuple[list[dict[str, Any]], str]:
    return [
        {"relu": {"name": f"{base}.conv_a.relu", "from": x}},
        {"conv": {"out": c, "k": 3, "s": 2, "name": f"{base}.conv_a.conv"}},
        {"bn": {"name": f"{base}.conv_a.bn"}},
        {"relu": {"name": f"{base}.conv_b.relu"}},
        {"conv": {"out": c, "k": 3, "name": f"{base}.conv_b.conv"}},
        {"bn": {"name": f"{base}.conv_b.bn"}},
        {"avgpool": {"k": 2, "s": 2, "name": f"{base}.downsample.0", "from": x}},
        {"conv": {"out": c, "k": 1, "name": f"{base}.downsample.1"}},
        {"add": {"name": f"{base}.add", "from": [f"{base}.conv_b.bn", f"{base}.downsample.1"]}},
    ], f"{base}.add"


def spec_data(arch: str | None = None, input_shape: Sequence[int] | None = None,
              *, channels: int = 16, cells_per_stage: int = 5, classes: int = 10) -> dict[str, Any]:
    arch = arch or DEFAULT_ARCH
    nodes = parse_arch(arch)
    layers: list[dict[str, Any]] = [
        {"conv": {"out": channels, "k": 3, "name": "stem.0"}},
        {"bn": {"name": "stem.1"}},
    ]
    x = "stem.1"
    idx = 0
    for stage in range(3):
        c = channels * 2**stage
        if stage:
            more, x = _reduction(x, f"cells.{idx}", c)
            layers += more
            idx += 1
        for _ in range(cells_per_stage):
            more, x = _cell(nodes, x, f"cells.{idx}", c)
            layers += more
            idx += 1
    layers += [
        {"bn": {"name": "lastact.0", "from": x}},
        {"relu": {"name": "lastact.1"}},
        {"gap": {"name": "global_pooling"}},
        {"linear": {"out": classes, "name": "classifier"}},
    ]
    return {
        "name": f"nasbench201{arch}",
        "description": f"NAS-Bench-201 network {arch}",
        "input": list(input_shape) if input_shape else [3, 32, 32],
        "classes": classes,
        "layers": layers,
    }


def build_graph(arch: str | None, input_shape: Sequence[int] | None) -> Graph:
    from convscope.frontends.from_spec import graph_from_spec_data

    return graph_from_spec_data(spec_data(arch, input_shape), file=f"zoo:nasbench201:{arch or DEFAULT_ARCH}")

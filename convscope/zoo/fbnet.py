"""FBNet search-space networks (Wu et al. 2019, as in HW-NAS-Bench) built from their op list.

22 blocks in stages [1,4,4,4,4,4,1] with channels [16,24,32,64,112,184,352] and first-block strides
[1,1,2,2,1,2,1], after a stem conv 3×3 (3->16) + BN, followed by conv 1×1 (352->1504) + BN, global
pooling and linear(->100).  Block choices 0..8: k3_e1, k3_e1_g2, k3_e3, k3_e6, k5_e1, k5_e1_g2,
k5_e3, k5_e6, skip.  ``kK_eE_gG`` = 1×1 conv (groups G, to C_in·E) -> BN -> ReLU -> [channel shuffle
if G>1] -> K×K depthwise (stride s) -> BN -> ReLU -> 1×1 conv (groups G) -> BN, plus a residual when
C_in = C_out and s = 1.  ``skip`` = identity, or 1×1 conv + BN + ReLU when the shape changes.

``zoo:fbnet:7-8-1-...`` takes the 22 indices joined by '-' (or the names joined by spaces).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from convscope.errors import InputError
from convscope.ir.graph import Graph

__all__ = ["DESCRIPTION", "CHOICES", "DEFAULT_OPS", "parse_ops", "spec_data", "build_graph"]

DESCRIPTION = "FBNet search-space network (zoo:fbnet:I-I-...-I, 22 block indices 0..8); default: all k3_e6"
CHOICES = ("k3_e1", "k3_e1_g2", "k3_e3", "k3_e6", "k5_e1", "k5_e1_g2", "k5_e3", "k5_e6", "skip")
STAGES = (1, 4, 4, 4, 4, 4, 1)
CHANNELS = (16, 24, 32, 64, 112, 184, 352)
STRIDES = (1, 1, 2, 2, 1, 2, 1)
DEFAULT_OPS = "-".join(["3"] * 22)


def parse_ops(ops: str) -> list[str]:
    text = ops.strip() if ops else ""
    parts = text.split() if " " in text else text.split("-") if text else []
    if "" in parts:  # '0--1', '-1-0…' (a minus sign), a trailing '-': not a list of 22 choices
        raise InputError(f"FBNet block choices are joined by single '-': {ops!r} has an empty one at position "
                         f"{parts.index('') + 1}")
    if len(parts) != 22:
        raise InputError(f"FBNet needs 22 block choices, got {len(parts)} in {ops!r}")
    out = []
    for p in parts:
        if p.isdecimal() and int(p) < len(CHOICES):
            out.append(CHOICES[int(p)])
        elif p in CHOICES:
            out.append(p)
        else:
            raise InputError(f"FBNet block choice {p!r} is not one of 0..8 or {', '.join(CHOICES)}")
    return out


def _block(choice: str, cin: int, cout: int, s: int, base: str) -> list[dict[str, Any]]:
    if choice == "skip":
        if cin == cout and s == 1:
            return [{"identity": {"name": base}}]
        return [
            {"conv": {"out": cout, "k": 1, "s": s, "name": f"{base}.conv"}},
            {"bn": {"name": f"{base}.bn"}},
            {"relu": {"name": f"{base}.relu"}},
        ]
    k = int(choice[1])
    e = int(choice.split("_")[1][1:])
    g = 2 if choice.endswith("_g2") else 1
    body: list[dict[str, Any]] = [
        {"conv": {"out": cin * e, "k": 1, "g": g, "name": "conv1"}},
        {"bn": {"name": "bn1"}},
        {"relu": {"name": "relu1"}},
    ]
    if g > 1:
        body.append({"channel_shuffle": {"groups": g, "name": "shuffle"}})
    body += [
        {"dwconv": {"k": k, "s": s, "name": "dwconv"}},
        {"bn": {"name": "bn2"}},
        {"relu": {"name": "relu2"}},
        {"conv": {"out": cout, "k": 1, "g": g, "name": "conv2"}},
        {"bn": {"name": "bn3"}},
    ]
    if cin == cout and s == 1:
        return [{"residual": {"name": base, "body": body, "shortcut": "identity"}}]
    return [{op: {**args, "name": f"{base}.{args['name']}"}} for layer in body for op, args in layer.items()]


def spec_data(ops: str | None = None, input_shape: Sequence[int] | None = None, *, classes: int = 100) -> dict[str, Any]:
    choices = parse_ops(ops or DEFAULT_OPS)
    layers: list[dict[str, Any]] = [
        {"conv": {"out": 16, "k": 3, "name": "stem.conv"}},
        {"bn": {"name": "stem.bn"}},
    ]
    cin, i = 16, 0
    for n, c, s0 in zip(STAGES, CHANNELS, STRIDES):
        for r in range(n):
            layers += _block(choices[i], cin, c, s0 if r == 0 else 1, f"blocks.{i}")
            cin, i = c, i + 1
    layers += [
        {"conv": {"out": 1504, "k": 1, "name": "head.conv"}},
        {"bn": {"name": "head.bn"}},
        {"gap": {"name": "avgpool"}},
        {"linear": {"out": classes, "name": "classifier"}},
    ]
    label = "-".join(str(CHOICES.index(c)) for c in choices)
    return {"name": f"fbnet-{label}", "description": f"FBNet network {' '.join(choices)}",
            "input": list(input_shape) if input_shape else [3, 32, 32], "classes": classes, "layers": layers}


def build_graph(ops: str | None, input_shape: Sequence[int] | None) -> Graph:
    from convscope.frontends.from_spec import graph_from_spec_data

    return graph_from_spec_data(spec_data(ops, input_shape), file=f"zoo:fbnet:{ops or DEFAULT_OPS}")

"""The IR: building, validation errors naming the layer, JSON round trip."""

from __future__ import annotations

import json

import pytest

from convscope.api import load_graph
from convscope.errors import GraphError
from convscope.ir import ops as O
from convscope.ir.graph import Graph, GraphBuilder
from convscope.ir.ops import OpKind
from convscope.zoo import zoo_entries


def small() -> GraphBuilder:
    b = GraphBuilder("t")
    b.add_input("input", (3, 16, 16))
    b.add("c", OpKind.CONV, O.ConvAttrs(8, (3, 3), padding=((1, 1), (1, 1))), ["input"])
    return b


def test_shapes_are_inferred() -> None:
    b = small()
    b.add("p", OpKind.MAXPOOL, O.PoolAttrs((2, 2), (2, 2)), ["c"])
    b.add("g", OpKind.GLOBAL_AVGPOOL, O.GlobalPoolAttrs(), ["p"])
    b.add("fc", OpKind.LINEAR, O.LinearAttrs(10), ["g"])
    g = b.build()
    assert g.node("c").out.shape == (8, 16, 16)
    assert g.node("p").out.shape == (8, 8, 8)
    assert g.node("fc").out.shape == (10,)


def test_unknown_input_name_is_an_error_naming_the_layer() -> None:
    b = small()
    with pytest.raises(GraphError, match="layer 'x'.*'nope'"):
        b.add("x", OpKind.ACT, O.ActAttrs("relu"), ["nope"])


def test_channel_mismatch_at_add() -> None:
    b = small()
    b.add("d", OpKind.CONV, O.ConvAttrs(4, (1, 1)), ["input"])
    with pytest.raises(GraphError, match="channel mismatch at add"):
        b.add("s", OpKind.ADD, O.NoAttrs(), ["c", "d"])


def test_kernel_larger_than_padded_input() -> None:
    b = GraphBuilder("t")
    b.add_input("input", (3, 4, 4))
    with pytest.raises(GraphError, match="larger than the padded input"):
        b.add("c", OpKind.CONV, O.ConvAttrs(8, (7, 7)), ["input"])


def test_groups_must_divide_channels() -> None:
    b = small()
    with pytest.raises(GraphError, match="groups=3"):
        b.add("g", OpKind.CONV, O.ConvAttrs(9, (3, 3), groups=3), ["c"])


def test_duplicate_names() -> None:
    b = small()
    with pytest.raises(GraphError, match="duplicate layer name"):
        b.add("c", OpKind.ACT, O.ActAttrs("relu"), ["c"])


def test_cycle_is_detected_in_from_dict() -> None:
    g = small().build()
    d = g.to_dict()
    d["nodes"].append({"name": "a", "op": "act", "inputs": ["b"], "attrs": {"fn": "relu"}})
    d["nodes"].append({"name": "b", "op": "act", "inputs": ["a"], "attrs": {"fn": "relu"}})
    with pytest.raises(GraphError, match="cycle"):
        Graph.from_dict(d)


def test_empty_network() -> None:
    b = GraphBuilder("t")
    b.add_input("input", (3, 8, 8))
    with pytest.raises(GraphError, match="empty"):
        b.build()


def test_unknown_activation_is_rejected() -> None:
    b = small()
    with pytest.raises(GraphError, match="unknown activation 'swoosh'"):
        b.add("a", OpKind.ACT, O.ActAttrs("swoosh"), ["c"])


@pytest.mark.parametrize("name", [e.name for e in zoo_entries()])
def test_json_round_trip_of_every_zoo_network(name: str) -> None:
    g = load_graph(f"zoo:{name}")
    again = Graph.from_dict(json.loads(json.dumps(g.to_dict())))
    assert again == g
    assert again.to_dict() == g.to_dict()


def test_unknown_op_keeps_its_shape_and_name() -> None:
    b = small()
    b.add("mystery", OpKind.UNKNOWN, O.UnknownAttrs("aten::frobnicate", (8, 16, 16)), ["c"])
    g = b.build()
    assert g.node("mystery").out.shape == (8, 16, 16)


def test_layout_follows_permute_and_flatten() -> None:
    b = small()
    b.add("p", OpKind.PERMUTE, O.PermuteAttrs((1, 2, 0)), ["c"])  # (H, W, C)
    b.add("ln", OpKind.LAYERNORM, O.NormAttrs(axis=2), ["p"])
    b.add("fc", OpKind.LINEAR, O.LinearAttrs(16), ["ln"])  # over channels: pointwise
    b.add("f", OpKind.FLATTEN, O.AxisAttrs(0), ["fc"])
    g = b.build()
    assert g.node("p").out.channel_axis == 2 and g.node("p").out.spatial_axes == (0, 1)
    assert g.node("fc").out.shape == (16, 16, 16) and g.node("fc").out.spatial_axes == (0, 1)
    assert g.node("f").out.spatial_axes == ()

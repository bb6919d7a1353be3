"""Cost handlers against their closed forms, memory accounting, dtype and batch."""

from __future__ import annotations

import pytest

from convscope.analyses.cost import DType, cost
from convscope.frontends.from_spec import graph_from_spec_data


def g(layers: list, input=(4, 8, 8)):  # type: ignore[no-untyped-def, type-arg]
    return graph_from_spec_data({"name": "t", "input": list(input), "layers": layers})


@pytest.mark.parametrize("op,expected_params,expected_macs", [
    # conv: out*(in/g)*kh*kw (+out bias); MACs = out positions * (in/g)*kh*kw
    ({"conv": {"out": 6, "k": 3, "name": "x"}}, 6 * 4 * 9, 6 * 8 * 8 * 4 * 9),
    ({"conv": {"out": 6, "k": 3, "bias": True, "name": "x"}}, 6 * 4 * 9 + 6, 6 * 8 * 8 * 4 * 9),
    ({"conv": {"out": 8, "k": 3, "g": 2, "s": 2, "name": "x"}}, 8 * 2 * 9, 8 * 4 * 4 * 2 * 9),
    ({"conv": {"out": 6, "k": [1, 5], "d": 2, "name": "x"}}, 6 * 4 * 5, 6 * 8 * 8 * 4 * 5),
    ({"dwconv": {"k": 3, "name": "x"}}, 4 * 9, 4 * 8 * 8 * 9),
    # transposed: in*(out/g)*kh*kw params; MACs = input positions * in * (out/g)*kh*kw
    ({"convT": {"out": 6, "k": 2, "s": 2, "name": "x"}}, 4 * 6 * 4, 8 * 8 * 4 * 6 * 4),
    ({"bn": {"name": "x"}}, 8, 0),
    ({"maxpool": {"k": 2, "name": "x"}}, 0, 0),
])
def test_handler_closed_forms(op: dict, expected_params: int, expected_macs: int) -> None:  # type: ignore[type-arg]
    c = cost(g([op])).of("x").cost
    assert (c.params, c.macs) == (expected_params, expected_macs)


def test_linear_and_se() -> None:
    c = cost(g([{"se": {"hidden": 2, "name": "se"}}, {"gap": {}}, {"linear": {"out": 3, "name": "fc"}}]))
    assert c.of("se.fc1").cost.params == 4 * 2 + 2
    assert c.of("se.fc2").cost.params == 2 * 4 + 4
    assert c.of("fc").cost.params == 4 * 3 + 3 and c.of("fc").cost.macs == 12


def test_elementwise_ops_are_counted_separately_from_macs() -> None:
    c = cost(g([{"conv": {"out": 4, "k": 1, "name": "a"}}, {"bn": {"name": "b"}}, {"relu": {"name": "r"}},
                {"maxpool": {"k": 2, "name": "p"}}]))
    n = 4 * 8 * 8
    assert c.of("b").cost.elementwise_ops == 2 * n and c.of("b").cost.macs == 0
    assert c.of("r").cost.elementwise_ops == n
    assert c.of("p").cost.elementwise_ops == 4 * 4 * 4 * 4
    assert c.total.macs == c.of("a").cost.macs


def test_bytes_and_dtype() -> None:
    graph = g([{"conv": {"out": 8, "k": 3, "name": "a"}}])
    for dt, b in ((DType.FP32, 4), (DType.FP16, 2), (DType.INT8, 1)):
        c = cost(graph, dtype=dt)
        row = c.of("a")
        assert row.weight_bytes == 8 * 4 * 9 * b
        assert row.activation_bytes == 8 * 8 * 8 * b
        assert row.bytes_read == 4 * 8 * 8 * b + row.weight_bytes
        assert row.bytes_written == row.activation_bytes


def test_batch_scales_macs_and_activations_not_params() -> None:
    graph = g([{"conv": {"out": 8, "k": 3, "name": "a"}}])
    one, four = cost(graph), cost(graph, batch=4)
    assert four.total.macs == 4 * one.total.macs
    assert four.total.params == one.total.params
    assert four.peak_activation_bytes == 4 * one.peak_activation_bytes


def test_peak_live_activations_of_a_residual_block() -> None:
    # input (4x8x8 = 256 values) -> a -> b; add(b, input): the input stays live until the add
    graph = g([{"conv": {"out": 4, "k": 3, "name": "a"}}, {"conv": {"out": 4, "k": 3, "name": "b"}},
               {"add": {"from": ["b", "input"], "name": "s"}}])
    c = cost(graph)
    v = 4 * 8 * 8 * 4  # bytes of one map
    # while computing b: input, a and b are live = 3 maps; at the add: input, b, s = 3 maps
    assert c.peak_activation_bytes == 3 * v


def test_aliasing_ops_do_not_add_memory() -> None:
    graph = g([{"conv": {"out": 4, "k": 3, "name": "a"}}, {"identity": {"name": "i"}}, {"flatten": {"name": "f"}}])
    c = cost(graph)
    assert c.of("i").bytes_moved == 0 and c.of("f").bytes_moved == 0
    assert c.peak_activation_bytes == 2 * 4 * 8 * 8 * 4
    assert c.activation_bytes == 2 * 4 * 8 * 8 * 4  # input + conv; the identity and flatten are views of it


def test_flops_are_twice_macs() -> None:
    c = cost(g([{"conv": {"out": 4, "k": 3}}]))
    assert c.total.flops == 2 * c.total.macs


def test_a_parameter_used_as_a_tensor_is_weights_once_for_the_batch() -> None:
    """conv -> + pos (a learned 8x16x16 position embedding) -> 1x1 conv, at batch 4 in fp32: pos is
    8192 bytes of weights at any batch, read by the add; it is no activation and adds no peak."""
    from convscope.ir import ops as O
    from convscope.ir.graph import GraphBuilder
    from convscope.ir.ops import OpKind

    b = GraphBuilder("pos")
    b.add_input("x", (3, 16, 16))
    b.add("conv", OpKind.CONV, O.ConvAttrs(out_channels=8, kernel=(3, 3), padding=((1, 1), (1, 1))), ["x"])
    b.add("pos", OpKind.CONSTANT, O.ConstAttrs(shape=(8, 16, 16), params=2048), [])
    b.add("add", OpKind.ADD, O.NoAttrs(), ["conv", "pos"])
    b.add("head", OpKind.CONV, O.ConvAttrs(out_channels=2, kernel=(1, 1)), ["add"])
    r = cost(b.build(), batch=4)
    rows = {n.name: n for n in r.nodes}
    act = 8 * 16 * 16 * 4 * 4  # one 8x16x16 fp32 map per image, 4 images
    assert (rows["pos"].activation_bytes, rows["pos"].bytes_read, rows["pos"].bytes_written) == (0, 0, 0)
    assert rows["pos"].weight_bytes == 8192 and rows["add"].bytes_read == act + 8192
    assert r.peak_activation_bytes == 2 * act  # conv's and add's outputs, never pos
    assert r.total.params == 3 * 8 * 9 + 2048 + 8 * 2  # no biases

"""Every zoo network against independent oracles computed by PyTorch on the built module:
params = sum(p.numel()), MACs = FlopCounterMode / 2, rf_max = width of the input-gradient support."""

from __future__ import annotations

import pytest

from convscope.analyses.cost import cost
from convscope.analyses.receptive_field import receptive_field
from convscope.api import load_graph
from convscope.frontends.from_spec import graph_from_spec_data
from convscope.ir.ops import OpKind
from convscope.zoo import zoo_entries
from oracles import gradient_support, torch_macs, torch_params

ZOO = [e.name for e in zoo_entries()]
SPATIAL = (OpKind.CONV, OpKind.CONV_T, OpKind.MAXPOOL, OpKind.AVGPOOL, OpKind.ADAPTIVE_AVGPOOL,
           OpKind.ADAPTIVE_MAXPOOL, OpKind.ADD, OpKind.CONCAT, OpKind.MUL, OpKind.UPSAMPLE, OpKind.PIXEL_SHUFFLE,
           OpKind.PIXEL_UNSHUFFLE)
# Generated families: a few arch strings that exercise every edge op, and none/skip corner cases.
EXTRA = [
    "zoo:nasbench201:|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|",
    "zoo:nasbench201:|none~0|+|skip_connect~0|none~1|+|nor_conv_3x3~0|none~1|avg_pool_3x3~2|",
    "zoo:fbnet:7-8-1-8-4-8-8-8-7-4-1-4-7-3-2-7-3-2-4-2-4-5",
]


def _spatial_layers(graph) -> list[str]:  # type: ignore[no-untyped-def]
    rf = receptive_field(graph).as_dict()
    return [n.name for n in graph.nodes
            if n.op in SPATIAL and n.out.is_image and rf[n.name].known and not rf[n.name].constant]


@pytest.mark.parametrize("ref", [f"zoo:{n}" for n in ZOO] + EXTRA)
def test_params_and_macs_match_pytorch(ref: str) -> None:
    g = load_graph(ref)
    c = cost(g)
    assert c.total.params == torch_params(g)
    assert c.total.macs == torch_macs(g)


@pytest.mark.parametrize("ref", [f"zoo:{n}" for n in ZOO] + EXTRA)
def test_rf_max_equals_gradient_support(ref: str) -> None:
    g = load_graph(ref)
    layers = _spatial_layers(g)
    assert layers
    checks = gradient_support(g, layers)
    bad = [c for c in checks if c.reachable and not c.ok]
    assert not bad, f"{len(bad)} of {len(checks)} layers differ, e.g. {bad[:3]}"
    # The oracle reaches every layer except those whose receptive field is larger than the input
    # the network must be measured at (after an adaptive pool, whose bins depend on the size).
    missed = [c for c in checks if not c.reachable]
    assert all(max(c.expected) >= c.size for c in missed), missed[:3]
    assert len(missed) <= len(checks) // 4


def test_macs_match_pytorch_at_batch_4() -> None:
    g = load_graph("zoo:resnet18-cifar")
    assert cost(g, batch=4).total.macs == torch_macs(g, batch=4)


HAND = {
    "transposed": [{"conv": {"out": 4, "k": 3, "s": 2}}, {"convT": {"out": 4, "k": 4, "s": 2}},
                   {"conv": {"out": 4, "k": 3}}, {"convT": {"out": 4, "k": 2, "s": 2}},
                   {"conv": {"out": 4, "k": 3}}, {"convT": {"out": 4, "k": 6, "s": 3}},
                   {"conv": {"out": 4, "k": 3, "d": 2}}],
    "bilinear": [{"conv": {"out": 4, "k": 3, "s": 4}}, {"upsample": {"scale": 2, "mode": "bilinear"}},
                 {"conv": {"out": 4, "k": 3}}, {"upsample": {"scale": 2}}, {"conv": {"out": 4, "k": 5, "d": 2}}],
    "se_and_groupnorm": [{"conv": {"out": 8, "k": 3}}, {"se": {"ratio": 0.5}}, {"conv": {"out": 8, "k": 3}},
                         {"gn": {"groups": 2}}, {"conv": {"out": 8, "k": 3}}],
    "non_square": [{"conv": {"out": 4, "k": [1, 7], "s": [2, 1]}}, {"conv": {"out": 4, "k": [5, 1], "d": [1, 3]}},
                   {"avgpool": {"k": [3, 2], "s": [1, 2], "p": [1, 0]}}],
    "ceil_pool": [{"conv": {"out": 4, "k": 3}}, {"maxpool": {"k": 3, "s": 2, "ceil": True}}, {"conv": {"out": 4, "k": 3}}],
    # space-to-depth and back (ESPCN-style super-resolution), then a bicubic resampling
    "pixel_shuffle": [{"conv": {"out": 4, "k": 3, "s": 2}}, {"pixel_unshuffle": 2}, {"conv": {"out": 16, "k": 3}},
                      {"pixel_unshuffle": {"factor": 3}}, {"conv": {"out": 36, "k": 1}},
                      {"pixel_shuffle": 3}, {"conv": {"out": 12, "k": 3}}, {"pixel_shuffle": 2},
                      {"conv": {"out": 4, "k": 3}}, {"upsample": {"scale": 2, "mode": "bicubic"}},
                      {"conv": {"out": 4, "k": 3}}, {"upsample": {"scale": 0.5, "mode": "bicubic"}},
                      {"conv": {"out": 4, "k": 3}}],
}


@pytest.mark.parametrize("case", sorted(HAND))
def test_hand_made_networks_against_the_oracles(case: str) -> None:
    side = 72 if case == "pixel_shuffle" else 61  # divisible by 2·2·3 for the unshuffles
    g = graph_from_spec_data({"name": case, "input": [3, side, side], "layers": HAND[case]})
    assert cost(g).total.params == torch_params(g)
    assert cost(g).total.macs == torch_macs(g)
    checks = gradient_support(g, _spatial_layers(g))  # after resampling: the widest of every phase
    assert checks and all(c.ok for c in checks), [c for c in checks if not c.ok]


def test_ragged_transposed_convs_are_exact_even_where_some_phases_read_nothing() -> None:
    layers = [{"conv": {"out": 4, "k": 3, "s": 2, "name": "down"}},
              {"convT": {"out": 4, "k": 3, "s": 2, "op": 1, "name": "up"}},   # phases span 1 and 0
              {"conv": {"out": 4, "k": 3, "name": "c1"}},
              {"convT": {"out": 4, "k": 5, "s": 3, "d": 2, "name": "up2"}},   # phases span 2, 2, 0
              {"conv": {"out": 4, "k": 3, "name": "c2"}}]
    g = graph_from_spec_data({"name": "ragged", "input": [3, 61, 61], "layers": layers})
    rf = receptive_field(g)
    assert rf.of("up").rf_min == (3, 3) and rf.of("up").rf_max == (5, 5)
    assert rf.of("up2").rf_max == (9, 9) and rf.of("c2").rf_max == (9, 9)
    checks = gradient_support(g, ["down", "up", "c1", "up2", "c2"])
    assert len(checks) == 5 and all(c.ok for c in checks), [c for c in checks if not c.ok]


def test_a_dilated_strided_transposed_conv_after_upsampling_has_whole_pixel_supports() -> None:
    # taps 0 and 2 of a stride-2 transposed conv land on even positions only: odd ones read no input
    layers = [{"upsample": {"scale": 2}}, {"convT": {"out": 2, "k": 2, "s": 2, "d": 2, "name": "t"}},
              {"convT": {"out": 2, "k": 3, "s": [1, 2], "g": 2, "name": "after"}}]
    g = graph_from_spec_data({"name": "gaps", "input": [2, 16, 20], "layers": layers})
    rf = receptive_field(g)
    assert rf.of("t").rf_min == (1, 1) and rf.of("t").rf_max == (2, 2)
    checks = gradient_support(g, ["t", "after"])
    assert len(checks) == 2 and all(c.ok for c in checks), [c for c in checks if not c.ok]

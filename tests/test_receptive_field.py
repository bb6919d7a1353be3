"""Closed forms for the receptive-field rules (DESIGN.md), one per rule, plus gradient checks."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest

from convscope.analyses.receptive_field import convT_span, receptive_field
from convscope.frontends.from_spec import graph_from_spec_data


def net(layers: list, input=(3, 64, 64)) -> object:  # type: ignore[type-arg]
    return graph_from_spec_data({"name": "t", "input": list(input), "layers": layers})


def rf_of(layers: list, name: str, input=(3, 64, 64)):  # type: ignore[no-untyped-def, type-arg]
    g = net(layers, input)
    return receptive_field(g).of(name)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 10])
def test_stacked_3x3_convs_give_2n_plus_1(n: int) -> None:
    layers = [{"conv": {"out": 4, "k": 3, "name": f"c{i}"}} for i in range(n)]
    r = rf_of(layers, f"c{n - 1}", input=(3, 128, 128))
    assert r.rf_min == r.rf_max == (2 * n + 1, 2 * n + 1)
    assert r.jump == (1, 1)


@pytest.mark.parametrize("d", [1, 2, 4, 8])
def test_dilation_adds_k_minus_1_times_d(d: int) -> None:
    layers = [{"conv": {"out": 4, "k": 3, "name": "a"}}, {"conv": {"out": 4, "k": 3, "d": d, "name": "b"}}]
    assert rf_of(layers, "b", input=(3, 128, 128)).rf_max == (3 + 2 * d, 3 + 2 * d)


def test_stride_products_multiply_the_jump() -> None:
    layers = [
        {"conv": {"out": 4, "k": 3, "s": 2, "name": "a"}},   # r 3, j 2
        {"maxpool": {"k": 2, "name": "p"}},                  # r 3+1*2=5, j 4
        {"conv": {"out": 4, "k": 5, "s": 3, "name": "b"}},   # r 5+4*4=21, j 12
        {"conv": {"out": 4, "k": 3, "name": "c"}},           # r 21+2*12=45, j 12
    ]
    g = net(layers, (3, 256, 256))
    rf = receptive_field(g)
    assert rf.of("p").rf_max == (5, 5) and rf.of("p").jump == (4, 4)
    assert rf.of("b").rf_max == (21, 21) and rf.of("b").jump == (12, 12)
    assert rf.of("c").rf_max == (45, 45)


def test_non_square_kernel_and_stride_per_axis() -> None:
    layers = [{"conv": {"out": 4, "k": [1, 7], "s": [1, 2], "name": "a"}},
              {"conv": {"out": 4, "k": [5, 3], "name": "b"}}]
    r = rf_of(layers, "b")
    assert r.rf_max == (5, 7 + 2 * 2)
    assert r.jump == (1, 2)


@pytest.mark.parametrize("k,s,span", [(2, 2, 0), (4, 2, 1), (3, 2, 1), (3, 1, 2), (6, 3, 1), (5, 2, 2)])
def test_transposed_conv_span(k: int, s: int, span: int) -> None:
    assert convT_span(k, s, 1) == span


def test_transposed_conv_shrinks_the_jump() -> None:
    layers = [
        {"conv": {"out": 4, "k": 3, "s": 2, "name": "down"}},         # r 3, j 2
        {"convT": {"out": 4, "k": 4, "s": 2, "name": "up"}},          # r 3 + 1*2 = 5, j 1
        {"conv": {"out": 4, "k": 3, "name": "after"}},               # r 5 + 2*1 = 7
        {"convT": {"out": 4, "k": 2, "s": 2, "name": "up2"}},         # r 7, j 1/2
        {"conv": {"out": 4, "k": 3, "name": "half"}},                # r 7 + 2*(1/2) = 8 on average
    ]
    rf = receptive_field(net(layers))
    assert rf.of("up").rf_max == (5, 5) and rf.of("up").jump == (1, 1)
    assert rf.of("after").rf_max == (7, 7)
    assert rf.of("up2").jump == (Fraction(1, 2), Fraction(1, 2))
    # position by position: half reads two neighbours of `after`, whose supports (after `up`, which
    # sends outputs 2m and 2m+1 to the same inputs) are 0 or 2 pixels apart: 7 or 9 px, never the 8
    # that j = 1/2 averages
    assert rf.of("half").rf_min == (7, 7) and rf.of("half").rf_max == (9, 9)


def test_upsampling_nearest_and_bilinear() -> None:
    base = [{"conv": {"out": 4, "k": 3, "s": 4, "name": "a"}}]  # r 3, j 4
    near = receptive_field(net(base + [{"upsample": {"scale": 2, "name": "u"}}])).of("u")
    assert near.rf_max == (3, 3) and near.jump == (2, 2)
    bil = receptive_field(net(base + [{"upsample": {"scale": 2, "mode": "bilinear", "name": "u"}}])).of("u")
    assert bil.rf_max == (3 + 4, 3 + 4) and bil.jump == (2, 2)


def test_upsampling_jump_follows_the_resampler_coordinate_map() -> None:
    """A scale maps coordinates by 1/scale, not by the rounded sizes (15 px ×1.5 = 22 px, still 2/3
    per output pixel on both axes); aligned corners map by (in-1)/(out-1)."""
    u = receptive_field(net([{"upsample": {"scale": 1.5, "name": "u"}}], (3, 15, 13))).of("u")
    assert u.jump == (Fraction(2, 3), Fraction(2, 3))
    s = receptive_field(net([{"upsample": {"size": [22, 19], "name": "u"}}], (3, 15, 13))).of("u")
    assert s.jump == (Fraction(15, 22), Fraction(13, 19))
    torch = pytest.importorskip("torch")
    from convscope.api import load_graph

    m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1),
                            torch.nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True))
    g = load_graph(m, input=(3, 16, 16))
    up = [n.name for n in g.nodes if n.op.value == "upsample"]
    assert receptive_field(g).of(up[0]).jump == (Fraction(15, 31), Fraction(15, 31))


def test_bicubic_reads_four_taps() -> None:
    base = [{"conv": {"out": 4, "k": 3, "s": 4, "name": "a"}}]  # r 3, j 4
    cub = receptive_field(net(base + [{"upsample": {"scale": 2, "mode": "bicubic", "name": "u"}}])).of("u")
    assert cub.rf_max == (3 + 3 * 4, 3 + 3 * 4) and cub.jump == (2, 2)


def test_pixel_unshuffle_is_a_window_and_pixel_shuffle_an_upsampling() -> None:
    layers = [{"conv": {"out": 4, "k": 3, "name": "a"}},                    # r 3, j 1
              {"pixel_unshuffle": {"factor": 2, "name": "down"}},           # window 2, stride 2
              {"conv": {"out": 36, "k": 3, "name": "b"}},                   # + 2 steps of 2
              {"pixel_shuffle": {"factor": 3, "name": "up"}},               # j 2/3, r unchanged
              {"conv": {"out": 4, "k": 3, "name": "c"}}]                    # + 2 steps of 2/3
    rf = receptive_field(net(layers, input=(3, 32, 32)))
    assert rf.of("down").rf_max == (4, 4) and rf.of("down").jump == (2, 2)
    assert rf.of("b").rf_max == (8, 8)
    assert rf.of("up").rf_max == (8, 8) and rf.of("up").jump == (Fraction(2, 3), Fraction(2, 3))
    # three neighbours of `up` read one or two positions of b (3 outputs per input): 8 or 8 + 2 px,
    # never the 28/3 that j = 2/3 averages
    assert rf.of("c").rf_min == (8, 8) and rf.of("c").rf_max == (10, 10)
    g = net(layers, input=(3, 32, 32))
    assert g.node("down").out.shape == (16, 16, 16) and g.node("up").out.shape == (4, 48, 48)


def test_residual_net_has_different_rf_min_and_rf_max() -> None:
    layers = [
        {"conv": {"out": 8, "k": 3, "name": "stem"}},
        {"residual": {"name": "res", "body": [{"conv": {"out": 8, "k": 3}}, {"conv": {"out": 8, "k": 3}}]}},
    ]
    r = rf_of(layers, "res.add")
    assert r.rf_min == (3, 3)        # the identity shortcut
    assert r.rf_max == (7, 7)        # through both convs
    assert r.paths == 2


def test_concat_is_the_union_of_branches() -> None:
    layers = [{"parallel": {"name": "p", "branches": [[{"conv": {"out": 4, "k": 1}}],
                                                       [{"conv": {"out": 4, "k": 5}}],
                                                       [{"conv": {"out": 4, "k": 3, "d": 3}}]]}}]
    r = receptive_field(net(layers)).of("p.concat")
    assert {x for x, _ in r.axes[0].pairs} == {1, 5, 7}
    assert r.rf_min == (1, 1) and r.rf_max == (7, 7)


def test_global_pool_is_infinite_and_the_head_too() -> None:
    layers = [{"conv": {"out": 4, "k": 3}}, {"gap": {"name": "g"}}, {"linear": {"out": 2, "name": "fc"}}]
    rf = receptive_field(net(layers))
    assert rf.of("g").rf_min == (math.inf, math.inf)
    assert rf.of("fc").is_global


def test_a_zero_layer_makes_what_follows_only_from_it_constant() -> None:
    """NAS-Bench-201's `none`: a path through `zero` adds nothing; a layer reached only through it is
    constant — the global pool and the head after it too — and the analysis says so."""
    from convscope.analyses.analyze import analyze_graph

    layers = [{"conv": {"out": 4, "k": 3, "name": "stem"}}, {"zero": {"name": "z"}},
              {"conv": {"out": 4, "k": 3, "name": "c"}},
              {"add": {"name": "a", "from": ["c", "stem"]}},
              {"gap": {"name": "g"}}, {"linear": {"out": 2, "name": "fc"}}]
    g = net(layers)
    rf = receptive_field(g)
    assert rf.of("c").constant and rf.of("c").rf_max == (None, None)
    assert rf.of("a").rf_max == (3, 3) and rf.of("fc").is_global  # the stem's path goes on
    a = analyze_graph(g)
    assert a.notes and "c computes a constant" in a.notes[0] and "does not depend" not in a.notes[0]
    dead = net(layers[:3] + [{"gap": {"name": "g"}}, {"linear": {"out": 2, "name": "fc"}}])
    assert receptive_field(dead).of("fc").constant and not receptive_field(dead).of("fc").is_global
    a = analyze_graph(dead)
    assert "the output fc does not depend on the input at all" in a.notes[0]
    assert a.feasible_resolution == (None, None)
    assert analyze_graph(net(layers[:1] + layers[4:])).notes == ()


def test_se_gate_keeps_rf_min_finite_and_makes_rf_max_infinite() -> None:
    layers = [{"conv": {"out": 8, "k": 3, "name": "c"}}, {"se": {"ratio": 0.5, "name": "se"}},
              {"conv": {"out": 8, "k": 3, "name": "after"}}]
    rf = receptive_field(net(layers))
    se = rf.of("se.scale")
    assert se.rf_min == (3, 3)
    assert se.rf_max == (math.inf, math.inf)
    assert rf.of("after").rf_min == (5, 5)
    assert rf.of("se.fc1").is_global


def test_zero_op_contributes_no_path() -> None:
    layers = [{"conv": {"out": 4, "k": 3, "name": "a"}}, {"zero": {"name": "z"}},
              {"conv": {"out": 4, "k": 5, "name": "b", "from": "a"}},
              {"add": {"from": ["z", "b"], "name": "sum"}}]
    rf = receptive_field(net(layers))
    assert rf.of("z").constant
    assert rf.of("sum").rf_min == rf.of("sum").rf_max == (7, 7)


def test_fractional_rf_after_upsampling_beyond_the_input() -> None:
    layers = [{"upsample": {"scale": 2, "name": "u"}}, {"conv": {"out": 4, "k": 3, "name": "c"}}]
    r = rf_of(layers, "c", input=(3, 16, 16))
    assert r.rf_max == (2, 2)  # 1 + 2 * 1/2
    assert r.jump == (Fraction(1, 2), Fraction(1, 2))


def test_transposed_conv_every_stride_dilation_padding_and_output_padding_against_the_gradient() -> None:
    """330 transposed convs (k 1-5, s 1-3, d 1-3, p 0-2, output padding below max(s, d)) behind a
    strided conv: rf_max at the layer equals the gradient's support, including dilations that put
    every tap on one phase (d = s: the other phases are reached by no input at all)."""
    import itertools

    from oracles import gradient_support

    from convscope.errors import ConvscopeError

    checked, wrong = 0, []
    for k, s, d, p, op in itertools.product(range(1, 6), (1, 2, 3), (1, 2, 3), (0, 1, 2), (0, 1, 2)):
        if op >= max(s, d):
            continue
        layers = [{"conv": {"out": 2, "k": 3, "s": 2, "name": "down"}},
                  {"convT": {"out": 2, "k": k, "s": s, "d": d, "p": p, "op": op, "name": "up"}}]
        try:
            g = graph_from_spec_data({"name": "t", "input": [1, 64, 64], "layers": layers}, file="t")
        except ConvscopeError:
            continue
        checked += 1
        wrong += [((k, s, d, p, op), c.expected, c.measured) for c in gradient_support(g, ["up"]) if not c.ok]
    assert checked == 330 and wrong == []


def test_an_interpolation_to_a_size_is_probed_away_from_the_borders() -> None:
    """12 -> 46 px bilinear: every interior position reads two source pixels (11 px of the input);
    only the clamped positions at the ends read one.  The probes, one per phase, are taken around the
    middle (they ran from the middle to the end, and rf_min came out 7)."""
    g = graph_from_spec_data({"name": "up45", "input": [1, 45, 45], "layers": [
        {"conv": {"out": 1, "k": 3, "s": 2}}, {"conv": {"out": 1, "k": 3, "s": 2}},
        {"upsample": {"size": [46, 46], "mode": "bilinear", "name": "up"}}]})
    up = receptive_field(g).of("up")
    assert up.rf_min == (11, 11) and up.rf_max == (11, 11)


def test_a_map_of_bins_has_real_borders() -> None:
    """56 px into 5 unequal bins ([0,12), [11,23), [22,34), [33,45), [44,56)), then a padded 3×3 conv:
    three neighbouring bins span 34 px, the border positions read two bins (23 px) and zeros, not an
    imagined bin beyond the map (rf_max was 35)."""
    g = graph_from_spec_data({"name": "ad2", "input": [1, 56, 56], "layers": [
        {"adaptive_avgpool": {"size": 5, "name": "a"}}, {"conv": {"out": 1, "k": 3, "name": "c"}}]})
    c = receptive_field(g).of("c")
    assert c.rf_max == (34, 34) and c.rf_min == (23, 23)


def test_a_small_input_shows_part_of_the_pattern_but_the_receptive_field_is_the_networks() -> None:
    """Strides, transposed convs and scale-2/3 interpolations: the supports repeat every 9 output
    positions, but at 23 px the last map has 9 positions of which one lies inside the image.  rf_min
    and rf_max are those of an input larger than the receptive field (the gradient's, measured on a
    large input), the same at every input size (they came out 17/17 at 23 px, 15/19 from 32 px)."""
    from oracles import gradient_support

    layers = [{"conv": {"out": 1, "k": 3, "s": 2}}, {"convT": {"out": 1, "k": 4, "s": 2, "p": 1}},
              {"conv": {"out": 1, "k": 3, "s": 3}}, {"convT": {"out": 1, "k": 3, "s": 3, "op": 2}},
              {"conv": {"out": 1, "k": 2, "s": 2}}, {"upsample": {"scale": 3, "mode": "bilinear"}},
              {"conv": {"out": 1, "k": 3, "s": 2}}, {"upsample": {"scale": 2, "mode": "bicubic"}},
              {"conv": {"out": 1, "k": 5, "s": 4, "name": "last"}}]
    seen = set()
    for side in (23, 32, 64):
        g = net(layers, input=(1, side, side))
        r = receptive_field(g).of("last")
        seen.add((r.rf_min, r.rf_max))
    assert seen == {((15, 15), (19, 19))}
    checks = gradient_support(net(layers, input=(1, 23, 23)), ["last"])
    assert [c.measured for c in checks] == [(19, 19)] and all(c.ok for c in checks)


def test_a_transposed_conv_with_empty_positions_into_an_add_does_not_crash() -> None:
    """k=1, s=2: every other position reads no input; a dilated conv added to the identity reached
    the input only through the hull of its window (min() of an empty sequence: an internal error)."""
    layers = [{"convT": {"out": 1, "k": 1, "s": 2, "name": "t"}},
              {"parallel": {"name": "par", "merge": "add", "branches": [[{"conv": {"out": 1, "k": 3, "d": 2, "name": "c"}}], []]}}]
    r = rf_of(layers, "par.add", input=(1, 32, 32))
    assert r.rf_max == (3, 3)


def test_a_scale_that_leaves_the_size_maps_coordinates_all_the_same() -> None:
    """x1.25 of a 2-px map is 2 px, but PyTorch maps with the scale: the supports are those of any
    larger input (c2 reads 11-15 px), not a pair formula's 9.4, and the same at every input size."""
    layers = [{"conv": {"out": 1, "k": 3, "s": 4, "name": "c1"}},
              {"upsample": {"scale": 1.25, "mode": "bilinear", "name": "u"}}, {"conv": {"out": 1, "k": 3, "name": "c2"}}]
    for side in (5, 12, 13, 32):
        r = rf_of(layers, "c2", input=(1, side, side))
        assert (r.rf_min, r.rf_max) == ((11, 11), (15, 15)), side


def test_bicubic_by_an_odd_factor_reads_one_tap_at_exact_positions_and_four_beside_them() -> None:
    """x3: every third position sits on an input pixel (one tap); a 3x3 conv's window then reads 4 or 5
    pixels (rf_min came out 3: the window's end was taken from the exact position alone)."""
    from oracles import gradient_support

    layers = [{"upsample": {"scale": 3, "mode": "bicubic", "name": "u"}}, {"conv": {"out": 1, "k": 3, "name": "c"}}]
    r = rf_of(layers, "c", input=(1, 32, 32))
    assert (r.rf_min, r.rf_max) == ((4, 4), (5, 5))
    assert [c.measured for c in gradient_support(net(layers, input=(1, 32, 32)), ["c"])] == [(5, 5)]


def _skewed_spec(seed: int) -> dict:  # type: ignore[type-arg]
    """Paths centred apart on purpose: pools without padding beside padded convs, even kernels,
    strided branches merged by add or concat, stacked a few times."""
    import random

    rnd = random.Random(seed)
    layers: list = [{"conv": {"out": 8, "k": 3}}]  # type: ignore[type-arg]
    for _ in range(rnd.randint(2, 4)):
        s = rnd.choice([1, 2])
        branches = []
        for _ in range(rnd.randint(2, 3)):
            kind = rnd.choice(["conv", "conv_even", "avgpool", "maxpool", "conv_nopad"])
            if kind == "conv":
                branches.append([{"conv": {"out": 8, "k": rnd.choice([1, 3, 5]), "s": s, "d": rnd.choice([1, 2])}}])
            elif kind == "conv_even":
                branches.append([{"conv": {"out": 8, "k": 2, "s": s, "p": rnd.choice([0, 1])}}])
            elif kind == "conv_nopad":
                k = rnd.choice([1, 3])
                branches.append([{"conv": {"out": 8, "k": k, "s": s, "p": 0}}])
            else:
                branches.append([{kind: {"k": 2, "s": s}}, {"conv": {"out": 8, "k": 1}}] if s == 2
                                else [{kind: {"k": 3, "s": 1, "p": 1}}, {"conv": {"out": 8, "k": 1}}])
        layers.append({"parallel": {"merge": rnd.choice(["add", "concat"]), "branches": branches}})
        if rnd.random() < 0.5:
            layers.append({"conv": {"out": 8, "k": 3, "d": rnd.choice([1, 2])}})
    return {"name": f"skew{seed}", "input": [3, 41, 37], "layers": [*layers, "gap", {"linear": {"out": 2}}]}


def _both_ways(graph):  # type: ignore[no-untyped-def]
    import convscope.analyses.receptive_field as R

    fast = R.receptive_field(graph)
    R.SHIFTED_PASS = False
    try:
        return fast, R.receptive_field(graph)
    finally:
        R.SHIFTED_PASS = True


@pytest.mark.parametrize("seed", range(40))
def test_the_forward_pass_for_offset_paths_equals_following_each_position_back(seed: int) -> None:
    """Paths merely offset from each other are carried forward in one pass (nb201: 0.45 s -> 0.02 s);
    following each node's positions back (Exact.back) is the reference, and the gradient oracles
    check that one."""
    from convscope.errors import ConvscopeError

    for attempt in range(100):  # branches whose sizes differ are not a network: draw again
        try:
            g = graph_from_spec_data(_skewed_spec(seed * 1000 + attempt), file="skew.yaml")
            break
        except ConvscopeError:
            continue
    fast, slow = _both_ways(g)
    assert fast == slow


@pytest.mark.parametrize("ref", ["zoo:nasbench201", "zoo:resnet50-imagenet", "zoo:mobilenetv2",
                                 "zoo:nasbench201:|avg_pool_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|"
                                 "skip_connect~0|nor_conv_1x1~1|avg_pool_3x3~2|"])
def test_the_forward_pass_on_zoo_networks(ref: str) -> None:
    from convscope.api import load_graph

    for size in (32, 48):
        fast, slow = _both_ways(load_graph(ref, input=(3, size, size)))
        assert fast == slow


def test_the_forward_pass_on_the_torch_fixtures() -> None:
    pytest.importorskip("torch")
    import importlib

    from fixtures import FIXTURES

    from convscope.api import load_graph

    for f in FIXTURES:
        mod, fn = f.factory.split(":")
        g = load_graph(getattr(importlib.import_module(mod), fn)(), input=f.input)
        fast, slow = _both_ways(g)
        assert fast == slow, f.name

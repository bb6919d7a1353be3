"""Border layer, unproductive layers, their share and the feasible range (DESIGN.md semantics)."""

from __future__ import annotations

import pytest

from convscope.analyses.analyze import analyze_graph
from convscope.api import analyze
from convscope.frontends.from_spec import graph_from_spec_data


def run(layers: list, res: int = 16):  # type: ignore[no-untyped-def, type-arg]
    g = graph_from_spec_data({"name": "t", "input": [3, res, res], "layers": layers})
    return analyze_graph(g)


def test_plain_stack_border_and_unproductive() -> None:
    # rf: 3, 5, 7, ..., 17 with eight 3x3 convs; at R = 10 the border is c4 (rf_min 11 > 10)
    a = run([{"conv": {"out": 4, "k": 3, "name": f"c{i}"}} for i in range(8)] + [{"gap": {}}, {"linear": 2}], res=10)
    assert a.border_layer == "c4"
    # c5 reads rf_min 11 >= 10; c4 reads 9 < 10 so it still integrates context
    assert [r.name for r in a.unproductive_layers()] == ["c5", "c6", "c7"]
    assert not a.layer("layers.9.linear").unproductive  # the head is never flagged


def test_equal_rf_min_is_already_unproductive() -> None:
    # c1 output rf 5; at R = 5, c2 reads rf_min 5 >= 5: unproductive, though no layer exceeded R yet
    a = run([{"conv": {"out": 4, "k": 3, "name": f"c{i}"}} for i in range(3)], res=5)
    assert a.layer("c2").unproductive
    assert a.border_layer == "c2"  # rf 7 > 5


def test_kernel_on_a_map_no_larger_than_the_kernel() -> None:
    layers = [{"conv": {"out": 4, "k": 3, "s": 2, "name": "a"}},    # 8 -> 4
              {"conv": {"out": 4, "k": 3, "s": 2, "name": "b"}},    # 4 -> 2
              {"conv": {"out": 4, "k": 3, "name": "c"}},            # reads 2x2 <= 3x3
              {"conv": {"out": 4, "k": 1, "name": "d"}}]            # 1x1: never "larger than kernel"
    a = run(layers, res=8)
    # b reads a 4x4 map with rf_min 3: productive; c reads 2x2 (<= its 3x3 kernel) with rf_min 7 < 8
    assert not a.layer("b").unproductive
    assert a.layer("c").unproductive and "no larger than its 3x3 kernel" in (a.layer("c").reason or "")
    # d (1x1) is flagged by the rf rule only: it reads rf_min 7 + 2*4 = 15 >= 8
    assert a.layer("d").unproductive and "rf_min 15" in (a.layer("d").reason or "")


def test_residual_shortcut_keeps_layers_productive() -> None:
    body = [{"conv": {"out": 8, "k": 3}}, {"conv": {"out": 8, "k": 3}}]
    layers = [{"conv": {"out": 8, "k": 3, "name": "stem"}}] + [{"residual": {"body": body}} for _ in range(4)]
    a = run(layers, res=8)
    # rf_max grows by 4 per block but rf_min stays 3 through the shortcuts: nothing after a merge
    # is unproductive; the second conv of each body reads rf_min 5 (< 8)
    assert a.unproductive_layers() == []
    assert a.layer("layers.4.add").rf_min == (3, 3) and a.layer("layers.4.add").rf_max == (19, 19)


def test_se_fc_layers_are_head_like_and_never_flagged() -> None:
    layers = [{"conv": {"out": 8, "k": 9, "name": "big"}}, {"se": {"ratio": 0.5, "name": "se"}},
              {"conv": {"out": 8, "k": 3, "name": "after"}}]
    a = run(layers, res=8)
    assert not a.layer("se.fc1").unproductive and not a.layer("se.fc2").unproductive
    assert a.layer("after").unproductive  # its input's rf_min is 9 >= 8


def test_shares_are_the_unproductive_part_of_the_totals() -> None:
    a = analyze("zoo:vgg16-cifar")
    un = a.unproductive_layers()
    assert a.unproductive_share[0] == pytest.approx(sum(r.params for r in un) / a.totals.params)
    assert a.unproductive_share[1] == pytest.approx(sum(r.macs for r in un) / a.totals.macs)


def test_vgg16_cifar_border_is_the_third_conv_of_block3() -> None:
    # rf of VGG16's convs: 3 5 | 10 14 | 24 32 40 | ... : the first exceeding 32 px is block3.2 (40)
    a = analyze("zoo:vgg16-cifar")
    assert a.border_layer == "block3.2.conv"
    assert {r.name for r in a.unproductive_layers()} >= {"block4.0.conv", "block5.2.conv"}
    assert not a.layer("block3.1.conv").unproductive


def test_feasible_range_of_resnet50() -> None:
    a = analyze("zoo:resnet50-imagenet")
    lo, hi = a.feasible_resolution
    assert hi == 427  # the well-known receptive field of ResNet-50 (torchvision v1.5)
    # at lo nothing weighted is unproductive, one pixel below something is
    assert not [r for r in analyze("zoo:resnet50-imagenet", input=(3, lo, lo)).unproductive_layers() if r.params]
    assert [r for r in analyze("zoo:resnet50-imagenet", input=(3, lo - 1, lo - 1)).unproductive_layers() if r.params]


def test_feasible_range_of_vgg16_matches_its_rf() -> None:
    a = analyze("zoo:vgg16-cifar")
    lo, hi = a.feasible_resolution
    assert hi == 212
    assert not [r for r in analyze("zoo:vgg16-cifar", input=(3, lo, lo)).unproductive_layers() if r.params]
    assert [r for r in analyze("zoo:vgg16-cifar", input=(3, lo - 1, lo - 1)).unproductive_layers() if r.params]


def test_a_network_without_an_image_input_has_no_feasible_range() -> None:
    from convscope.ir import ops as O
    from convscope.ir.graph import GraphBuilder
    from convscope.ir.ops import OpKind

    b = GraphBuilder("mlp")
    b.add_input("input", (16,))
    b.add("fc", OpKind.LINEAR, O.LinearAttrs(4), ["input"])
    a = analyze_graph(b.build())
    assert a.feasible_resolution == (None, None) and a.border_layer is None and a.totals.params == 68


def test_feasible_lower_bound_of_a_network_that_only_runs_at_even_sizes() -> None:
    """A strided conv added to a 2x2 pool lines up only at even sizes: the smallest feasible
    resolution is found by trying every size, not by bisecting on a property that does not hold."""
    from convscope.errors import ConvscopeError
    from convscope.ir.transform import with_input

    layers = [{"parallel": {"merge": "add", "branches": [[{"conv": {"out": 3, "k": 3, "s": 2}}], [{"maxpool": {"k": 2}}]]}},
              *[{"conv": {"out": 4, "k": 3}} for _ in range(5)]]
    g = graph_from_spec_data({"name": "t", "input": [3, 16, 16], "layers": layers})
    lo, hi = analyze_graph(g).feasible_resolution
    brute = None
    for r in range(1, 64):  # the oracle: analyse at every size
        try:
            gr = with_input(g, (3, r, r))
        except ConvscopeError:
            continue
        if not [x for x in analyze_graph(gr).unproductive_layers() if x.params]:
            brute = r
            break
    assert (lo, hi) == (brute, 23) == (20, 23)


def test_the_feasible_range_is_whole_resolutions_behind_an_upsampling() -> None:
    """Behind an upsampling the jump is a fraction (j/f) but rf_max, found position by position, is
    whole, and so is the feasible range (FORMATS.md §4 shows whole numbers)."""
    from convscope.frontends.from_spec import graph_from_spec_text

    g = graph_from_spec_text("name: u\ninput: [1, 32, 32]\nlayers:\n  - conv: {out: 4, k: 3}\n"
                        "  - convT: {out: 4, k: 2, s: 2, p: 0}\n  - maxpool: {k: 2}\n  - upsample: {scale: 2}\n"
                        "  - conv: {out: 4, k: 3, name: last}\n")
    a = analyze_graph(g)
    last = next(r for r in a.layers if r.name == "last")
    rf = last.rf_max[0]
    assert last.jump[0] != int(last.jump[0]) and isinstance(rf, int) and a.feasible_resolution[1] == rf
    assert isinstance(a.to_dict()["feasible_resolution"][1], int)


def test_a_transposed_convolution_is_fully_connected_only_when_its_footprint_covers_its_input() -> None:
    """A 4x4 stride-2 transposed kernel reads 2x2 inputs per output: on a 4x4 map it does not act
    as a fully connected layer (each output sees a quarter of the map); on a 2x2 map it does."""
    from convscope.frontends.from_spec import graph_from_spec_text

    spec = "name: d\ninput: [4, {r}, {r}]\nlayers:\n  - convT: {{out: 4, k: 4, s: 2, p: 1, name: up}}\n"
    a4 = analyze_graph(graph_from_spec_text(spec.format(r=4)))
    assert not a4.layer("up").unproductive
    a2 = analyze_graph(graph_from_spec_text(spec.format(r=2)))
    assert a2.layer("up").unproductive
    assert "2x2 inputs its 4x4 transposed kernel reads per output" in (a2.layer("up").reason or "")
    assert a4.feasible_resolution[0] == 3  # the smallest map larger than the 2x2 footprint


def test_the_ranges_top_follows_the_outputs_not_the_order_layers_are_written_in() -> None:
    from convscope.analyses.border import feasible_range
    from convscope.frontends.from_spec import graph_from_spec_text

    head = "name: fr\ninput: [3, 16, 16]\nlayers:\n  - conv: {out: 4, k: 3, name: a}\n"
    one = head + ("  - conv: {out: 4, k: 3, name: b}\n  - conv: {out: 4, k: 3, name: c}\n"
                  "  - conv: {out: 4, k: 3, from: a, name: aux}\noutputs: [c, aux]\n")
    two = head + ("  - conv: {out: 4, k: 3, name: aux}\n  - conv: {out: 4, k: 3, from: a, name: b}\n"
                  "  - conv: {out: 4, k: 3, name: c}\noutputs: [c, aux]\n")
    assert feasible_range(graph_from_spec_text(one)) == feasible_range(graph_from_spec_text(two)) == (6, 7)
    # a layer that feeds no output does not set the top
    dead = head + "  - conv: {out: 4, k: 3, name: b}\n  - conv: {out: 4, k: 9, from: a, name: dead}\noutputs: [b]\n"
    assert feasible_range(graph_from_spec_text(dead))[1] == 5


ADAPTIVE = {"name": "adp3", "input": [1, 32, 32], "layers": [
    {"conv": {"out": 4, "k": 7, "s": 2, "name": "c1"}}, {"conv": {"out": 4, "k": 7, "name": "c2"}},
    {"adaptive_avgpool": {"size": 3, "name": "adp"}}, {"conv": {"out": 2, "k": 1, "name": "c3"}}]}


def test_the_feasible_range_after_an_adaptive_pool_does_not_depend_on_the_size_analysed() -> None:
    """The bins grow with the image, and so do the receptive fields after them (c2 sees 19 px, a bin of
    b positions of its 2-px grid adds 2·(b − 1)).  By hand: at R = 28 the 14-px map falls into bins of
    5 and 6 (rf_min 27 < 28: productive; rf_max 29 >= 28: seen whole); at 27 rf_min is 27 (c3 is
    unproductive); at 29 the 15-px map has bins of 5 only (rf_max 27 < 29).  It was [28, 25] analysed
    at 16 px and [40, 41] at 64."""
    got = {r: analyze(graph_from_spec_data(ADAPTIVE), input=(1, r, r)).feasible_resolution for r in (16, 24, 29, 32, 64)}
    assert set(got.values()) == {(28, 28)}, got
    at28 = analyze(graph_from_spec_data(ADAPTIVE), input=(1, 28, 28))
    assert not at28.unproductive_layers() and at28.layer("c3").rf_max[0] >= 28
    at27 = analyze(graph_from_spec_data(ADAPTIVE), input=(1, 27, 27))
    assert [r.name for r in at27.unproductive_layers()] == ["c3"]
    at29 = analyze(graph_from_spec_data(ADAPTIVE), input=(1, 29, 29))
    assert at29.layer("c3").rf_max[0] < 29


def test_the_top_after_an_adaptive_pool_is_the_largest_size_seen_whole_past_a_gap() -> None:
    """Two bins along H behind a stride-8 grid: rf_max(R) is a staircase (13 up to 18 px, 21 from 19
    to 34, 29 from 35), so R <= rf_max(R) holds up to 13, fails at 14-18 and holds again at 19-21.
    The top is 21 from every size analysed (it was 13 from 16 px, null from 32 and 21 from 200: the
    search stepped below the smallest size the net exists at and gave up)."""
    spec = {"name": "s14", "input": [1, 32, 96], "layers": [
        {"conv": {"out": 4, "k": 3, "s": 2, "name": "a"}}, {"maxpool": {"k": 2, "name": "p"}},
        {"conv": {"out": 4, "k": [3, 1], "s": [2, 1], "name": "b"}},
        {"adaptive_avgpool": {"size": [2, 6], "name": "ap"}}, {"flatten": {"name": "fl"}},
        {"linear": {"out": 3, "name": "fc"}}]}
    g = graph_from_spec_data(spec)
    seen = {r: analyze(g, input=(1, r, r)).layer("ap").rf_max[0] for r in (13, 14, 18, 19, 21, 22, 35)}
    assert seen == {13: 13, 14: 13, 18: 13, 19: 21, 21: 21, 22: 21, 35: 29}
    got = {r: analyze(g, input=(1, r, r)).feasible_resolution[1] for r in (8, 16, 32, 48, 200)}
    assert set(got.values()) == {21}, got



def test_a_model_that_refuses_every_other_size_has_no_known_feasible_lo() -> None:
    """A PyTorch model whose Linear reads a flatten takes one size only: after a few dozen refusals no
    size is known to work (it returned the 65th size tried, which the model refused too)."""
    from convscope.analyses.border import feasible_range

    g = graph_from_spec_data({"name": "n", "input": [3, 200, 200], "layers": [
        {"conv": {"out": 4, "k": 3}}, {"conv": {"out": 4, "k": 3}}, {"conv": {"out": 4, "k": 3}},
        {"conv": {"out": 4, "k": 3}}, {"conv": {"out": 4, "k": 3}}, {"conv": {"out": 4, "k": 3}}]})
    asked: list[int] = []
    lo, hi = feasible_range(g, at=lambda r: asked.append(r))  # type: ignore[func-returns-value]
    assert lo is None and len(asked) == 64 and hi == 13
    assert feasible_range(g)[0] == 12  # the graph itself, re-inferred at each size



def test_a_model_that_refuses_other_sizes_says_why_its_range_has_no_low_end() -> None:
    """`?–60 px` with no word of why: the note names the size tried and the model's own refusal."""
    from torch import nn

    m = nn.Sequential(*[nn.Conv2d(3 if i == 0 else 4, 4, 3, padding=1) for i in range(6)], nn.Flatten(),
                      nn.Linear(4 * 120 * 120, 10))
    a = analyze(m, input=(3, 120, 120))  # sizes from 14 px are tried: the model takes 120 only
    assert a.feasible_resolution[0] is None
    note = next(n for n in a.notes if n.startswith("the feasible range's low end is unknown"))
    assert "the model itself refused the other sizes tried" in note and "expects 57600 input features" in note


@pytest.mark.parametrize("length", [24, 64])
def test_a_signal_as_a_1xL_map_has_its_border_and_feasible_range_along_its_length(length: int) -> None:
    """A 1-D network (a Conv1d stack, as the PyTorch front end writes it: 1×k kernels on a 1×L map):
    the side of 1 has nothing more to see, so the border is where rf_min passes L, and the feasible
    range is a range of lengths."""
    layers = [{"conv": {"out": 8, "k": [1, 7], "name": "c1"}},
              {"avgpool": {"k": [1, 2], "name": "p1"}},
              {"conv": {"out": 8, "k": [1, 5], "d": [1, 2], "name": "c2"}},
              {"maxpool": {"k": [1, 3], "s": [1, 2], "p": [0, 1], "name": "p2"}},
              {"conv": {"out": 8, "k": [1, 3], "name": "c3"}}]
    g = graph_from_spec_data({"name": "t", "input": [4, 1, length], "layers": layers})
    a = analyze_graph(g)
    assert [tuple(a.layer(n).rf_min) for n in ("c1", "p1", "c2", "p2", "c3")] == \
        [(1, 7), (1, 8), (1, 24), (1, 28), (1, 36)]
    assert a.border_layer == ("p2" if length == 24 else None)  # 28 > 24
    assert [r.name for r in a.unproductive_layers()] == (["p2", "c3"] if length == 24 else [])
    assert a.feasible_resolution == (29, 36)  # c3 reads 28: a length of 29 keeps it productive
    shorter = analyze_graph(graph_from_spec_data({"name": "t", "input": [4, 1, 28], "layers": layers}))
    assert shorter.layer("c3").unproductive
    assert not analyze_graph(graph_from_spec_data({"name": "t", "input": [4, 1, 29], "layers": layers})).layer(
        "c3").unproductive

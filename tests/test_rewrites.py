"""Each rewrite against its closed form (params and MACs by hand), the truncation of VGG-16 against
what `analyze` flags, and the depth rules."""

from __future__ import annotations

import pytest

from convscope.analyses._rewrite_conv import _groups_for, bottleneck_width, cardinality_for, scaled_channels
from convscope.analyses._rewrite_edit import Editor, NewNode
from convscope.analyses.advice import Options, Suggestion, suggest_graph
from convscope.api import analyze
from convscope.errors import GraphError
from convscope.frontends.from_spec import graph_from_spec_text
from convscope.ir import ops as O
from convscope.ir.graph import Graph
from convscope.ir.ops import OpKind
from convscope.zoo import load_zoo

NET = """\
name: small
input: [3, 16, 16]
layers:
  - conv: {out: 32, k: 3, name: stem}
  - relu
  - conv: {out: 64, k: 3, name: c1}
  - bn: {name: c1bn}
  - relu
  - conv: {out: 128, k: 3, s: 2, name: c2}
  - relu
  - gap
  - linear: {out: 10, name: fc}
"""
P1, P2 = 16 * 16, 8 * 8  # output positions of c1 and c2
K = 9  # 3x3


def _net(text: str = NET) -> Graph:
    return graph_from_spec_text(text, file="net.yaml")


def _one(g: Graph, key: str, **opts: object) -> Suggestion:
    adv = suggest_graph(g, only=[key.split("-0")[0] if key.startswith("width") else key],
                        options=Options(**opts) if opts else None)  # type: ignore[arg-type]
    return adv.suggestion(key)


def test_grouped_conv_closed_form() -> None:
    assert cardinality_for(32, 64, 32, 4) == 8 and cardinality_for(64, 128, 32, 4) == 16
    assert cardinality_for(256, 256, 32, 4) == 32 and cardinality_for(3, 64, 32, 4) == 1
    s = _one(_net(), "grouped-conv")
    assert s.changed == ("c1", "c2")  # not the stem (3 input channels)
    full1, full2 = 32 * 64 * K, 64 * 128 * K
    assert s.params_saved == full1 - full1 // 8 + full2 - full2 // 16
    assert s.macs_saved == P1 * (full1 - full1 // 8) + P2 * (full2 - full2 // 16)
    assert s.graph.node("c2").attrs.groups == 16  # type: ignore[union-attr]


def test_depthwise_separable_closed_form() -> None:
    s = _one(_net(), "depthwise-separable")
    assert s.changed == ("c1", "c2") and s.added == ("c1_dw", "c2_dw")
    new1, new2 = 32 * K + 32 * 64, 64 * K + 64 * 128
    assert s.params_saved == (32 * 64 * K - new1) + (64 * 128 * K - new2)
    assert s.macs_saved == P1 * (32 * 64 * K - new1) + P2 * (64 * 128 * K - new2)
    dw = s.graph.node("c2_dw").attrs
    assert dw.groups == 64 and dw.stride == (2, 2) and s.graph.node("c2").attrs.kernel == (1, 1)  # type: ignore[union-attr]
    assert s.analysis.layer("c2").rf_max == analyze(_net()).layer("c2").rf_max  # the receptive field is kept


def test_bottleneck_closed_form() -> None:
    m1, m2 = bottleneck_width(32, 64, 4, 8), bottleneck_width(64, 128, 4, 8)
    assert (m1, m2) == (8, 16)
    s = _one(_net(), "bottleneck")
    assert s.changed == ("c1", "c2") and len(s.added) == 12
    new1 = 32 * m1 + m1 * m1 * K + m1 * 64 + 4 * m1  # two BatchNorms of m channels (weight + bias)
    new2 = 64 * m2 + m2 * m2 * K + m2 * 128 + 4 * m2
    assert s.params_saved == (32 * 64 * K - new1) + (64 * 128 * K - new2)
    # c2's 1x1 reduce runs at the input size (16x16); its 3x3 carries the stride, the expand runs at 8x8
    macs1 = P1 * (32 * m1 + m1 * m1 * K + m1 * 64)
    macs2 = 16 * 16 * 64 * m2 + P2 * (m2 * m2 * K + m2 * 128)
    assert s.macs_saved == P1 * 32 * 64 * K + P2 * 64 * 128 * K - macs1 - macs2


def test_width_closed_form() -> None:
    assert [scaled_channels(c, 0.5, 8) for c in (3, 8, 12, 32, 100, 1280)] == [3, 8, 8, 16, 48, 640]
    assert scaled_channels(12, 0.75, 8) == 12  # make_divisible would give 16: a narrower net never widens a layer
    s = _one(_net(), "width-0.5")
    # fc keeps its classes but reads fewer channels: a PyTorch user edits it (and c1's BatchNorm) too
    assert s.changed == ("stem", "c1", "c2", "c1bn", "fc")
    params = 3 * 16 * K + 16 * 32 * K + 2 * 32 + 32 * 64 * K + 64 * 10 + 10
    macs = P1 * (3 * 16 * K + 16 * 32 * K) + P2 * 32 * 64 * K + 64 * 10
    assert (s.analysis.totals.params, s.analysis.totals.macs) == (params, macs)
    assert s.analysis.model == "small-width-0.5"


def test_width_half_is_offered_when_three_quarters_rounds_back() -> None:
    """16 channels x0.75 round back to 16 in multiples of 8; x0.5 makes them 8: the 0.5 variant
    stands on its own (it was dropped with a reason saying no layer could be scaled)."""
    g = _net("name: n\ninput: [3, 16, 16]\nlayers:\n" + "".join(
        f"  - conv: {{out: 16, k: 3, name: c{i}}}\n  - relu\n" for i in range(1, 5)) + "  - gap\n  - linear: 4\n")
    adv = suggest_graph(g, only=["width"])
    assert [s.key for s in adv.suggestions] == ["width-0.5"]
    assert set(adv.suggestion("width-0.5").changed) >= {"c1", "c2", "c3", "c4"}


def test_width_keeps_depthwise_and_grouped_consistent() -> None:
    assert _groups_for(32, 64, 64) == 32 and _groups_for(13, 56, 56) == 8 and _groups_for(6, 24, 24) == 6
    adv = suggest_graph(load_zoo("resnext50-32x4d"), only=["width"])
    s = adv.suggestion("width-0.5")
    conv2 = s.graph.node("layer1.0.conv2").attrs
    assert conv2.groups == 32 and conv2.out_channels == 64  # type: ignore[union-attr]
    mb = suggest_graph(load_zoo("mobilenetv2"), only=["width"]).suggestion("width-0.5").graph
    dw = mb.node("features.2.conv.1.0")
    assert dw.attrs.groups == mb.node(dw.inputs[0]).out.channels == dw.out.channels  # type: ignore[union-attr]


def test_width_keeps_what_a_pixel_shuffle_folds_divisible_by_r_squared() -> None:
    """EDSR's upsampler: conv to 9·C channels, PixelShuffle(3).  Only that conv (and what is tied to
    it) is held to multiples of 72 = lcm(8, 9); the rest round to 8 as usual."""
    g = graph_from_spec_text("""\
name: edsr
input: [3, 24, 24]
layers:
  - conv: {out: 64, k: 3, name: head}
  - residual: {body: [conv: {out: 64, k: 3}, relu, conv: {out: 64, k: 3}], name: body}
  - conv: {out: 288, k: 3, name: up}
  - pixel_shuffle: 3
  - relu
  - conv: {out: 48, k: 3, name: mid}
  - pixel_shuffle: 2
  - conv: {out: 3, k: 3, name: tail}
""", file="edsr.yaml")
    s = suggest_graph(g, only=["width"]).suggestion("width-0.5")
    widths = {n: s.graph.node(n).attrs.out_channels for n in ("head", "up", "mid", "tail")}  # type: ignore[union-attr]
    assert widths == {"head": 32, "up": 144, "mid": 24, "tail": 3}  # 288/2 = 144 = 2·72; 48/2 = 24 (8 and 4 divide it)
    assert s.graph.node("layers.3.pixel_shuffle").out.shape == (16, 72, 72)
    assert "72 for up, whose channels a pixel shuffle folds into space" in s.explanation
    assert "mid" in s.changed and s.analysis.totals.params < analyze(g).totals.params


POOLED = NET.replace("  - conv: {out: 128, k: 3, s: 2, name: c2}\n",
                     "  - maxpool: {k: 2, name: pool}\n  - conv: {out: 128, k: 3, name: c2}\n")


def test_maxpool_to_conv_closed_form() -> None:
    s = _one(_net(POOLED), "maxpool-to-conv")
    assert s.changed == ("pool",) and s.graph.node("pool").op is OpKind.CONV
    assert s.params_saved == -(64 * 64 * 4)
    assert s.macs_saved == -(8 * 8 * 64 * 64 * 4)


def test_maxpool_into_stride_keeps_macs_and_strides_the_next_conv() -> None:
    s = _one(_net(POOLED), "maxpool-into-stride")
    assert s.removed == ("pool",) and s.changed == ("c2",)
    assert s.graph.node("c2").attrs.stride == (2, 2)  # type: ignore[union-attr]
    assert s.params_saved == 0 and s.macs_saved == 0  # the conv computes the same 8x8 positions
    base = analyze(_net(POOLED))
    assert s.analysis.layer("c2").out_shape == base.layer("c2").out_shape
    assert s.analysis.layer("c2").rf_max < base.layer("c2").rf_max  # slower receptive-field growth


def test_move_downsampling_closed_form() -> None:
    g = load_zoo("vgg16-cifar")
    s = _one(g, "move-downsampling")
    base = analyze(g)
    assert s.changed == ("pool1", "block2.0.conv")
    moved = base.layer("block2.0.conv").macs
    assert s.macs_saved == -3 * moved  # that conv now runs on 2x2 = 4 times the positions
    order = [n.name for n in s.graph.nodes]
    assert order.index("pool1") == order.index("block2.0.relu") + 1
    assert len(s.analysis.unproductive_layers()) < len(base.unproductive_layers())


def test_remove_downsampling_closed_form_vgg() -> None:
    g = load_zoo("vgg16-cifar")
    s = _one(g, "remove-downsampling")
    base = analyze(g)
    assert s.removed == ("pool2",)
    convs = [r for r in base.layers if r.op == "conv"]
    after = {r.name for r in convs if r.name.startswith(("block3", "block4", "block5"))}
    expected = sum(r.macs * (4 if r.name in after else 1) for r in convs) + base.layer("classifier").macs
    assert s.analysis.totals.macs == expected


def test_remove_downsampling_adjusts_the_residual_shortcut() -> None:
    g = load_zoo("resnet18-imagenet", input_shape=(3, 32, 32))
    s = _one(g, "remove-downsampling")
    stage = s.changed[0].split(".")[0]
    assert set(s.changed) == {f"{stage}.0.conv1", f"{stage}.0.downsample.0"}
    for name in s.changed:
        assert s.graph.node(name).attrs.stride == (1, 1)  # type: ignore[union-attr]
    old, new = g.node(f"{stage}.0.add").out.shape, s.graph.node(f"{stage}.0.add").out.shape
    assert new == (old[0], 2 * old[1], 2 * old[2])
    assert s.params_saved == 0


def test_truncate_vgg16_cifar_removes_exactly_the_unproductive_convs() -> None:
    g = load_zoo("vgg16-cifar")
    a = analyze(g, input=(3, 32, 32))
    s = _one(g, "truncate")
    flagged = {r.name for r in a.unproductive_layers()}
    flagged_convs = {r.name for r in a.layers if r.unproductive and r.op == "conv"}
    removed = set(s.removed)
    removed_convs = {n for n in removed if g.node(n).op is OpKind.CONV}
    assert removed_convs == flagged_convs and len(flagged_convs) == 7
    assert flagged <= removed  # the flagged pools go too
    assert not any(r.op == "conv" and not r.unproductive and r.name in removed for r in a.layers)
    # params saved = the unproductive params analyze reports, plus the BatchNorms of the removed
    # convs (2 per channel), plus the classifier's narrower input (512 -> 256 features, 10 classes)
    unproductive_params = round(a.unproductive_share[0] * a.totals.params)
    assert unproductive_params == sum(r.params for r in a.layers if r.unproductive)
    bn = sum(2 * g.node(n).out.channels for n in removed if g.node(n).op is OpKind.BATCHNORM)  # type: ignore[operator]
    assert s.params_saved == unproductive_params + bn + (512 - 256) * 10
    assert s.analysis.border_layer is None and s.analysis.unproductive_share == (0.0, 0.0)
    # the classifier reads 256 channels now: a PyTorch user edits it too
    assert s.changed == ("avgpool", "classifier") and s.graph.node("avgpool").inputs == ("block3.1.relu",)
    assert s.recommended


def test_resolution_moves_into_the_feasible_range() -> None:
    g = load_zoo("vgg16-cifar")
    lo, hi = analyze(g).feasible_resolution
    up = _one(g, "resolution")
    assert up.analysis.input == (3, lo, lo) and up.analysis.unproductive_share == (0.0, 0.0)
    down = _one(load_zoo("vgg16-cifar", input_shape=(3, 224, 224)), "resolution")
    assert down.analysis.input == (3, hi, hi) and down.macs_saved > 0


SEG = """\
name: seg
input: [3, 12, 12]
layers:
  - conv: {out: 8, k: 3, s: 2}
  - relu
  - conv: {out: 8, k: 3, s: 2}
  - relu
  - conv: {out: 8, k: 3}
  - conv: {out: 2, k: 3}
  - upsample: {scale: 4, name: logits}
"""


def test_resolution_of_a_network_that_outputs_a_map_says_the_map_changes() -> None:
    s = _one(_net(SEG), "resolution")
    side = s.analysis.input[1]
    assert side == 16 and s.graph.node("logits").out.shape == (2, side, side)
    assert f"the output 'logits' is a map: it becomes 2x{side}x{side} instead of 2x12x12" in s.notes
    assert not any("output" in n for n in _one(load_zoo("vgg16-cifar"), "resolution").notes)


def test_resolution_does_not_shrink_the_image_for_a_network_too_shallow_for_it() -> None:
    """Two 3x3 convs see 5 px: feeding 5 px images instead of 32 px would discard the detail."""
    adv = suggest_graph(_net(TWO), only=["resolution"])
    assert not adv.suggestions
    ((key, _, why),) = adv.not_applicable
    assert key == "resolution" and "sees only 5 px of the 32 px input" in why and "too shallow" in why


UNET = """\
name: unet
input: [3, 32, 32]
layers:
  - conv: {out: 8, k: 3, name: e1}
  - relu: {name: e1r}
  - maxpool: {k: 2}
  - conv: {out: 16, k: 3, name: e2}
  - relu: {name: e2r}
  - maxpool: {k: 2}
  - conv: {out: 32, k: 3, name: mid}
  - convT: {out: 16, k: 2, s: 2, name: up2}
  - concat: {from: [up2, e2r]}
  - conv: {out: 16, k: 3, name: d2}
  - upsample: {scale: 2, mode: bilinear, name: up1}
  - concat: {from: [up1, e1r]}
  - conv: {out: 8, k: 3, name: d1}
  - conv: {out: 2, k: 1, name: seg}
"""


def test_resolution_moves_to_the_nearest_size_whose_shapes_fit() -> None:
    """The range's top, 26 px, breaks the U-Net's concat (13 vs 12 px maps): 24 px, inside the range,
    is offered instead (it was refused with advice to analyse the model itself, which fails too)."""
    adv = suggest_graph(_net(UNET), only=["resolution"])
    s = adv.suggestion("resolution")
    assert adv.base.feasible_resolution == (20, 26)
    assert s.graph.input_shape == (3, 24, 24) and "26 px itself gives shapes that do not fit" in s.explanation


TWO = """\
name: two
input: [3, 32, 32]
layers:
  - conv: {out: 16, k: 3}
  - relu
  - conv: {out: 16, k: 3}
  - gap
  - linear: 10
"""


def test_depth_warning_fires_on_two_layers_and_not_on_resnet18() -> None:
    adv = suggest_graph(_net(TWO))
    kinds = {w.kind for w in adv.depth.warnings}
    assert kinds == {"spatial_layers", "rf_coverage"}
    assert adv.depth.spatial_layers == 2 and adv.depth.rf_coverage == pytest.approx(5 / 32, abs=1e-4)
    assert all("seeds/00" in w.rule for w in adv.depth.warnings)
    for name, res in (("resnet18-cifar", 32), ("resnet18-imagenet", 224), ("resnet18-imagenet", 32)):
        adv = suggest_graph(load_zoo(name, input_shape=(3, res, res)), only=["truncate"])
        assert adv.depth.warnings == () and adv.depth.spatial_layers == 17


# The deep head is written first, a one-conv side head after it: the coverage is what the deep head
# sees (its rf_max), never that of whichever spatial layer happens to be written last.
TWO_HEADS = """\
name: two-heads
input: [3, 32, 32]
layers:
  - conv: {out: 8, k: 3, s: 2, name: a}
  - conv: {out: 8, k: 3, s: 2, name: b}
  - conv: {out: 8, k: 3, s: 2, name: c}
  - conv: {out: 8, k: 3, name: d}
  - gap
  - linear: {out: 10, name: deep}
  - conv: {out: 8, k: 3, name: side, from: input}
  - gap
  - linear: {out: 2, name: shallow}
outputs: [deep, shallow]
"""


def test_depth_coverage_follows_the_outputs_not_the_file_order() -> None:
    g = _net(TWO_HEADS)
    a = analyze(g)
    want = a.layer("d").rf_max[0] / 32
    assert want > 0.5
    adv = suggest_graph(g, only=["truncate"])
    assert adv.depth.rf_coverage == pytest.approx(want, abs=1e-4)
    assert not any(w.kind == "rf_coverage" for w in adv.depth.warnings)
    from convscope.analyses._rewrite_depth import depth_from_analysis, depth_report
    assert depth_report(g).rf_coverage == depth_from_analysis(a, g).rf_coverage == adv.depth.rf_coverage


def _stack(n: int, res: int) -> Graph:
    layers = "".join(f"  - conv: {{out: 8, k: 3, name: c{i}}}\n  - relu\n" for i in range(1, n + 1))
    return _net(f"name: stack\ninput: [3, {res}, {res}]\nlayers:\n{layers}  - gap\n  - linear: 10\n")


def test_truncation_that_would_leave_too_few_layers_is_refused() -> None:
    g = _stack(4, 4)  # rf 3, 5, 7, 9 at 4 px: c3 and c4 are unproductive
    assert {r.name for r in analyze(g).unproductive_layers()} == {"c3", "c4"}
    s = suggest_graph(g, only=["truncate"]).suggestion("truncate")
    assert not s.recommended and "seeds/004" in (s.refused or "")
    assert s.depth.spatial_layers == 2


def test_truncation_stops_early_to_keep_the_minimum_depth() -> None:
    g = _stack(6, 4)  # c3..c6 unproductive; cutting them all would leave 2 spatial layers
    s = suggest_graph(g, only=["truncate"]).suggestion("truncate")
    assert s.recommended and s.depth.spatial_layers == 4
    assert set(s.removed) == {"c5", "layers.9.relu", "c6", "layers.11.relu"}
    assert any("stopped at" in n for n in s.notes)


def test_an_already_shallow_network_is_not_cut_further() -> None:
    g = _stack(3, 4)  # 3 spatial layers: below the floor already
    adv = suggest_graph(g)
    assert adv.depth.has("spatial_layers")
    s = adv.suggestion("truncate")
    assert not s.recommended and "already too shallow" in (s.refused or "")
    assert adv.recommended() and all(x.depth.spatial_layers >= 3 for x in adv.recommended())


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="widths"):
        Options(widths=(1.5,))
    s = _one(_net(), "grouped-conv", cardinality=4)
    assert s.graph.node("c2").attrs.groups == 4  # type: ignore[union-attr]


def test_editor_rewires_and_fails_loudly() -> None:
    g = _net()
    ed = Editor(g).drop("c1bn")
    ed.insert_after("c2", [NewNode("extra", OpKind.ACT, O.ActAttrs(fn="relu"), ("c2",))])
    v = ed.build(name="edited")
    assert "c1bn" not in v and v.node("layers.4.relu").inputs == ("c1",)
    assert v.node("extra").inputs == ("c2",) and v.node("layers.6.relu").inputs == ("extra",)
    bad = Editor(g).set_attrs("c1", O.ConvAttrs(out_channels=64, kernel=(3, 3), groups=5))
    with pytest.raises(GraphError, match="groups=5"):
        bad.build()
    with pytest.raises(GraphError, match="no layer named"):
        Editor(g).drop("nope")


def test_width_keeps_a_residual_whose_shortcut_is_a_concat_consistent() -> None:
    """The concat's branches (8 + 16 + 8) round to the same widths at 0.75, the body's 32 would not:
    the body's last conv takes the shortcut's new width instead of breaking the add."""
    from convscope.analyses._rewrite_conv import scale_width

    g = graph_from_spec_text("""name: mix
input: [3, 16, 16]
layers:
  - conv: {out: 16, k: 3}
  - parallel:
      merge: concat
      branches:
        - [conv: {out: 8, k: 1}]
        - [conv: {out: 16, k: 3}]
        - [conv: {out: 8, k: 1}]
  - residual:
      name: res
      body: [conv: {out: 32, k: 3}, bn, relu, conv: {out: 32, k: 3, name: last}, bn]
  - se: {ratio: 0.25, name: se}
  - gap
  - linear: {out: 4}
""", file="mix.yaml")
    for alpha in (0.5, 0.75, 1.5):
        v, _ = scale_width(g, alpha)
        concat = next(n for n in v.nodes if n.op is OpKind.CONCAT)
        assert v.node("res.last").out.channels == concat.out.channels
        assert v.node("se.fc2").out.channels == concat.out.channels  # type: ignore[union-attr]
    v, changed = scale_width(g, 0.5)
    assert v.node("res.0.conv").out.channels == 16 and "res.last" in changed  # the body's first is free


def test_remove_downsampling_keeps_unrelated_steps_apart() -> None:
    """Two strided layers that change sizes alike but lie one behind the other (an upsampling between
    them) are two steps, not one."""
    g = _net("""\
name: updown
input: [3, 32, 32]
layers:
  - conv: {out: 16, k: 3, name: stem}
  - conv: {out: 32, k: 3, s: 2, name: down1}
  - upsample: {scale: 2}
  - conv: {out: 32, k: 3, name: up_conv}
  - maxpool: {k: 2, name: down2}
  - conv: {out: 64, k: 3, name: c1}
  - maxpool: {k: 2, name: p3}
  - conv: {out: 64, k: 3, name: c2}
  - maxpool: {k: 2, name: p4}
  - conv: {out: 128, k: 3, name: c3}
  - conv: {out: 128, k: 3, name: c4}
  - gap
  - linear: {out: 10}
""")
    from convscope.analyses._rewrites import _downsampling_groups

    groups = _downsampling_groups(_base_of(g))
    assert [[n.name for n in grp] for grp in groups] == [["down1"], ["down2"], ["p3"], ["p4"]]


def _base_of(g: Graph):  # type: ignore[no-untyped-def]
    from convscope.analyses import advice

    return advice._base(g, Options(), advice.DType.FP32, 1, advice._Latency(None, None, 1, "fp32", None, None))


def test_a_residual_blocks_strided_conv_and_shortcut_are_one_step() -> None:
    from convscope.analyses._rewrites import _downsampling_groups

    groups = _downsampling_groups(_base_of(load_zoo("resnet18-cifar")))
    pairs = [sorted(n.name for n in grp) for grp in groups]
    assert ["layer2.0.conv1", "layer2.0.downsample.0"] in pairs


def test_truncate_stopped_by_the_depth_rule_says_so() -> None:
    layers = "".join(f"  - conv: {{out: {c}, k: 3}}\n  - maxpool: {{k: 2}}\n" for c in (32, 64, 128))
    layers += "  - conv: {out: 256, k: 3}\n" * 6 + "  - gap\n  - linear: {out: 10}\n"
    s = _one(_net(f"name: deep\ninput: [3, 16, 16]\nlayers:\n{layers}"), "truncate")
    stopped = [n for n in s.notes if n.startswith("stopped at")]
    assert stopped and "stay for that" in stopped[0]
    assert not any("because productive layers follow them" in n for n in s.notes)


# --- a suggest audit: axes, stems, rounding, files --------------------------------------------------
def test_resolution_speaks_of_the_narrower_axis_and_refuses_an_empty_range() -> None:
    """A last layer that sees 14 px vertically and 26 px horizontally sees a square image whole only up to
    14 px; with no resolution both productive and fully seen, nothing is suggested."""
    wide = _net("name: cf\ninput: [3, 32, 32]\nlayers:\n  - conv: {out: 16, k: 3}\n  - conv: {out: 16, k: 3}\n"
                "  - maxpool: {k: 2}\n  - conv: {out: 16, k: 3}\n  - conv: {out: 16, k: [3, 5], d: [1, 2]}\n"
                "  - gap\n  - linear: {out: 10}\n")
    last = [r for r in analyze(wide).layers if r.op == "conv"][-1]
    assert last.rf_max == (14, 26)
    adv = suggest_graph(wide, only=["resolution"])
    ((_, _, why),) = adv.not_applicable
    assert "sees only 14 px of the 32 px input" in why
    allconv = suggest_graph(load_zoo("allconv"), only=["resolution"])
    lo, hi = analyze(load_zoo("allconv")).feasible_resolution
    assert lo > hi and not allconv.suggestions and "no resolution keeps every layer productive" in \
        allconv.not_applicable[0][2]


def test_a_stem_behind_a_normalisation_is_left_alone() -> None:
    g = _net("name: s\ninput: [3, 32, 32]\nlayers:\n  - bn\n  - conv: {out: 32, k: 3, name: stem}\n  - relu\n"
             "  - conv: {out: 32, k: 3, name: c2}\n  - relu\n  - conv: {out: 64, k: 3, s: 2, name: c3}\n"
             "  - relu\n  - conv: {out: 64, k: 3, name: c4}\n  - gap\n  - linear: {out: 2}\n")
    s = _one(g, "depthwise-separable")
    assert "stem" not in s.changed and s.changed == ("c2", "c3", "c4")


@pytest.mark.parametrize("c, alpha, want", [(40, 0.5, 24), (72, 0.5, 40), (56, 0.5, 32), (64, 0.75, 48),
                                            (16, 0.5, 8), (8, 0.5, 8), (96, 0.25, 24)])
def test_width_rounds_as_mobilenets_make_divisible(c: int, alpha: float, want: int) -> None:
    assert scaled_channels(c, alpha, 8) == want


def test_write_refuses_to_overwrite_a_users_own_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from convscope.advice_api import write_variants
    from convscope.errors import InputError

    adv = suggest_graph(load_zoo("vgg11-cifar"), only=["truncate"])
    mine = tmp_path / "01-truncate.yaml"
    mine.write_text("name: mine\n")
    with pytest.raises(InputError, match="is not a file convscope suggest wrote"):
        write_variants(adv, tmp_path)
    assert mine.read_text() == "name: mine\n" and not (tmp_path / "00-original.yaml").exists()


SEG_STRIDED = """\
name: seg
input: [3, 8, 8]
layers:
  - conv: {out: 8, k: 3, name: e1}
  - conv: {out: 16, k: 3, s: 2, name: e2}
  - conv: {out: 16, k: 3, name: e3}
  - conv: {out: 16, k: 3, name: e4}
  - upsample: {scale: 2, name: up}
  - conv: {out: 5, k: 1, name: head}
"""


def test_a_rewrite_that_changes_the_output_map_is_not_recommended() -> None:
    """Taking the stride out of a segmentation net's encoder doubles its output map (the upsampling
    after it keeps its factor): not the same network, so said and not recommended."""
    adv = suggest_graph(_net(SEG_STRIDED), only=["remove-downsampling"])
    s = adv.suggestion("remove-downsampling")
    assert s.graph.node("head").out.shape == (5, 16, 16)
    assert not s.recommended and "the output 'head' is a map: it becomes 5x16x16 instead of 5x8x8" in s.notes


def test_only_with_no_rewrite_named_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    from convscope.cli import main

    for only in ("", ","):
        assert main(["suggest", "zoo:vgg11-cifar", "--only", only]) == 2
        assert "--only needs at least one rewrite" in capsys.readouterr().err

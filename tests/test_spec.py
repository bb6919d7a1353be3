"""The spec language (FORMATS.md §1): features, generated names, and errors that point into the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from convscope.cli import main
from convscope.errors import SpecError
from convscope.frontends.from_spec import graph_from_spec_text

FORMATS_EXAMPLE = """\
name: resnet-mini            # required
input: [3, 32, 32]           # required: C, H, W (H, W may differ)
classes: 10                  # optional, documentation only
blocks:                      # optional: named, parameterised sub-networks
  basic:
    args: {c: null, s: 1}    # null = required argument; $name substitutes
    layers:
      - residual:
          body:
            - conv: {out: $c, k: 3, s: $s}
            - bn
            - relu
            - conv: {out: $c, k: 3}
            - bn
          shortcut: auto     # auto: identity, or 1x1 conv (+bn) with stride when shape changes
      - relu
layers:
  - conv: {out: 16, k: 3, name: stem}    # padding defaults to "same" for odd k: d*(k-1)/2
  - bn
  - relu
  - repeat: 2
    layers:
      - basic: {c: 16}
  - basic: {c: 32, s: 2}
  - parallel:                           # branches from the same input
      merge: concat                     # or add
      branches:
        - [conv: {out: 16, k: 1}]
        - [conv: {out: 16, k: 3}]
        - [maxpool: {k: 3, s: 1}]
  - gap
  - linear: {out: 10, name: head}
"""


def test_the_formats_example_builds() -> None:
    g = graph_from_spec_text(FORMATS_EXAMPLE)
    assert g.name == "resnet-mini"
    assert g.node("stem").out.shape == (16, 32, 32)
    assert g.node("layers.1.bn").inputs == ("stem",)
    # repeat copies of a block: layers.3.0, layers.3.1; the residual's merge and the block's relu
    assert g.node("layers.3.1.add").out.shape == (16, 32, 32)
    # the strided block gets an auto shortcut: 1x1 conv stride 2 + bn
    ds = g.node("layers.4.downsample.0")
    assert ds.attrs.kernel == (1, 1) and ds.attrs.stride == (2, 2) and ds.out.shape == (32, 16, 16)
    assert g.node("layers.5.concat").out.shape == (64, 16, 16)
    assert g.node("head").out.shape == (10,)


def test_a_cut_at_a_residual_item_ends_at_its_add_not_inside_its_body() -> None:
    from convscope.ir.graph import Graph
    from convscope.ir.transform import subgraph_until

    g = graph_from_spec_text(FORMATS_EXAMPLE)
    # the residual is item 0 of the block layers.4; its body is layers.4.0.*, its shortcut and add
    # layers.4.downsample.* and layers.4.add (PyTorch's module paths)
    t = subgraph_until(g, "layers.4.0")
    assert t.outputs == ("layers.4.add",) and "layers.4.downsample.0" in t
    assert subgraph_until(g, "layers.4").outputs == ("layers.4.1.relu",)
    assert subgraph_until(g, "layers.4.0.0").outputs == ("layers.4.0.0.conv",)
    # the graph's JSON round trip keeps it
    assert subgraph_until(Graph.from_dict(g.to_dict()), "layers.3.1.0").outputs == ("layers.3.1.add",)


def test_generated_names_are_stable() -> None:
    a = [n.name for n in graph_from_spec_text(FORMATS_EXAMPLE)]
    b = [n.name for n in graph_from_spec_text(FORMATS_EXAMPLE)]
    assert a == b
    assert "layers.1.bn" in a and "layers.2.relu" in a and "layers.6.gap" in a


def test_names_inside_named_blocks_are_module_paths() -> None:
    text = """
name: t
input: [3, 32, 32]
blocks:
  basic:
    args: {c: null, s: 1}
    layers:
      - residual:
          body:
            - conv: {out: $c, k: 3, s: $s, name: conv1}
            - bn: {name: bn1}
          shortcut: auto
      - relu: {name: relu}
layers:
  - conv: {out: 8, k: 3, name: conv1}
  - repeat: 2
    name: layer1
    layers: [basic: {c: 8}]
  - basic: {c: 16, s: 2, name: layer2.0}
"""
    names = [n.name for n in graph_from_spec_text(text)]
    assert "layer1.0.conv1" in names and "layer1.1.bn1" in names and "layer1.1.relu" in names
    assert "layer2.0.downsample.0" in names and "layer2.0.downsample.1" in names and "layer2.0.add" in names


TWO_RESIDUALS = """
name: t
input: [3, 16, 16]
blocks:
  two:
    args: {c: null}
    layers:
      - residual: {body: [conv: {out: $c, k: 3}]}
      - residual: {body: [conv: {out: 8, k: 3, s: 2}]}
layers: [two: {c: C}]
"""


def test_residual_names_follow_from_positions_not_from_shapes() -> None:
    """Two unnamed residuals in one block: the first takes the block's downsample and add, the second
    its own path for both, whether or not the first needed a projection (C=8 needs one, C=3 not)."""
    def names(c: int) -> list[str]:
        return [n.name for n in graph_from_spec_text(TWO_RESIDUALS.replace("C", str(c)))]

    second = ["layers.0.1.0.conv", "layers.0.1.downsample.0", "layers.0.1.downsample.1", "layers.0.1.add"]
    assert names(3) == ["input", "layers.0.0.0.conv", "layers.0.add", *second]
    assert names(8) == ["input", "layers.0.0.0.conv", "layers.0.downsample.0", "layers.0.downsample.1",
                        "layers.0.add", *second]


def test_an_outer_residual_takes_the_block_names_before_one_in_its_body() -> None:
    text = """
name: t
input: [3, 16, 16]
blocks:
  nest:
    layers:
      - residual:
          body:
            - residual: {body: [conv: {out: 8, k: 3, s: 2}]}
            - conv: {out: 16, k: 3}
layers: [nest: {name: blk}]
"""
    g = graph_from_spec_text(text)
    assert g.node("blk.0.0.downsample.0").out.shape == (8, 8, 8)  # the inner residual's projection
    assert g.node("blk.0.0.add").inputs == ("blk.0.0.0.conv", "blk.0.0.downsample.1")
    assert g.node("blk.downsample.0").out.shape == (16, 8, 8)  # the outer one's
    assert g.node("blk.add").inputs == ("blk.0.1.conv", "blk.downsample.1")


def test_parallel_with_an_empty_branch_adds_the_input() -> None:
    """An empty branch is the input itself: a shortcut written as a parallel."""
    text = """
name: t
input: [4, 8, 8]
layers:
  - parallel: {merge: add, branches: [[conv: {out: 4, k: 3, name: c}], []]}
  - parallel: {branches: [[], [conv: {out: 2, k: 1, name: d}]]}
"""
    g = graph_from_spec_text(text)
    assert g.node("layers.0.add").inputs == ("c", "input")
    assert g.node("layers.1.concat").inputs == ("layers.0.add", "d")
    assert g.node("layers.1.concat").out.shape == (6, 8, 8)


def test_non_square_kernels_strides_and_inputs() -> None:
    text = """
name: t
input: [1, 40, 24]
layers:
  - conv: {out: 4, k: [3, 5], s: [2, 1], name: a}
  - maxpool: {k: [2, 1], name: p}
  - avgpool: {k: 2, s: [2, 1], p: [0, 1], name: q}
"""
    g = graph_from_spec_text(text)
    assert g.node("a").out.shape == (4, 20, 24)
    assert g.node("p").out.shape == (4, 10, 24)
    assert g.node("q").out.shape == (4, 5, 25)


def test_valid_padding_is_no_padding() -> None:
    text = """
name: t
input: [1, 16, 12]
layers:
  - conv: {out: 4, k: 3, p: valid, name: a}
  - conv: {out: 4, k: [3, 5], d: 2, p: valid, name: b}
"""
    g = graph_from_spec_text(text)
    assert g.node("a").out.shape == (4, 14, 10)
    assert g.node("b").out.shape == (4, 10, 2)


def test_explicit_same_keeps_the_size_for_even_kernels() -> None:
    """``p: same`` means output = ceil(input / stride) for every kernel (PyTorch's padding="same":
    the odd pixel at the bottom/right); an absent p stays the symmetric d*(k-1)//2 of FORMATS §1."""
    import sys

    import torch

    from convscope.analyses.receptive_field import receptive_field
    from convscope.backends.to_torch import build_module

    sys.path.insert(0, str(Path(__file__).parent))
    from oracles import gradient_support, torch_macs, torch_params

    text = """
name: t
input: [3, 33, 32]
layers:
  - conv: {out: 8, k: 4, p: same, name: a}
  - conv: {out: 8, k: [2, 3], d: [1, 2], p: same, s: 2, name: b}
  - maxpool: {k: 2, s: 1, p: same, name: c}
  - avgpool: {k: 4, s: 1, p: same, name: d}
  - conv: {out: 8, k: 4, name: e}
  - gap
"""
    g = graph_from_spec_text(text)
    assert [g.node(n).out.shape for n in "abcde"] == [(8, 33, 32), (8, 17, 16), (8, 17, 16), (8, 17, 16), (8, 16, 15)]
    assert g.node("a").attrs.padding == ((1, 2), (1, 2))
    assert g.node("b").attrs.padding == ((0, 1), (2, 2))
    assert g.node("e").attrs.padding == ((1, 1), (1, 1))
    for oracle in (False, True):
        assert build_module(g, oracle=oracle)(torch.randn(1, 3, 33, 32)).shape == (1, 8)
    from convscope.analyses.cost import cost

    assert cost(g).total.params == torch_params(g)
    assert cost(g).total.macs == torch_macs(g)
    rf = receptive_field(g).as_dict()
    checks = gradient_support(g, list("abcde"))
    assert all(c.reachable and c.measured == tuple(rf[c.layer].rf_max) for c in checks), checks


def test_expressions_cin_and_from() -> None:
    text = """
name: t
input: [8, 16, 16]
blocks:
  expand:
    args: {t: 4}
    layers:
      - conv: {out: "${cin * t}", k: 1, name: up}
      - conv: {out: "${cin}", k: 1, name: down}
      - relu: {name: "act_${t + 1}x$t"}
layers:
  - conv: {out: 8, k: 3, name: a}
  - expand: {t: 6, name: e}
  - conv: {out: 8, k: 1, name: side, from: a}
  - add: {from: [e.down, side], name: sum}
  - concat: {from: [sum, a], name: cat}
"""
    g = graph_from_spec_text(text)
    assert g.node("e.up").out.shape == (48, 16, 16)
    assert g.node("e.down").out.shape == (8, 16, 16)
    assert g.node("sum").inputs == ("e.down", "side")
    assert g.node("e.act_7x6").inputs == ("e.down",)  # substitutions inside a name: text
    assert g.node("cat").out.shape == (16, 16, 16)


def test_se_dwconv_upsample_convT() -> None:
    text = """
name: t
input: [3, 32, 32]
layers:
  - conv: {out: 16, k: 3, s: 2, name: a}
  - dwconv: {k: 3, name: dw}
  - se: {ratio: 0.25, name: se}
  - convT: {out: 8, k: 2, s: 2, name: up}
  - upsample: {scale: 2, mode: bilinear, name: u}
"""
    g = graph_from_spec_text(text)
    assert g.node("dw").attrs.groups == 16
    assert g.node("se.fc1").out.shape == (4, 1, 1)
    assert g.node("se.scale").out.shape == (16, 16, 16)
    assert g.node("up").out.shape == (8, 32, 32)
    assert g.node("u").out.shape == (8, 64, 64)


def test_se_ratio_is_a_share_of_the_channels_or_a_reduction() -> None:
    """ratio <= 1 keeps that share of the channels; ratio > 1 is the SE paper's reduction r (C/r);
    both readings agree at 1."""
    def hidden(ratio: float) -> int:
        g = graph_from_spec_text(f"name: t\ninput: [64, 8, 8]\nlayers:\n  - se: {{ratio: {ratio}, name: se}}\n")
        return g.node("se.fc1").out.shape[0]

    assert (hidden(0.25), hidden(16), hidden(4), hidden(1)) == (16, 4, 16, 64)
    from convscope.analyses.analyze import analyze_graph

    a = analyze_graph(graph_from_spec_text("name: t\ninput: [64, 8, 8]\nlayers:\n  - se: {ratio: 16}\n"))
    assert a.totals.params == 64 * 4 + 4 + 4 * 64 + 64


def test_input_override() -> None:
    g = load_spec_text_with_input(FORMATS_EXAMPLE, (3, 64, 48))
    assert g.node("stem").out.shape == (16, 64, 48)


def test_a_signal_written_with_flatten_and_unsqueeze_follows_the_input_length() -> None:
    """`flatten: {axis: 1}` is x.squeeze(2) of a (C, 1, L) map, `unsqueeze: 1` its way back: what a
    Conv1d model captured from PyTorch holds between its layers, written as a spec."""
    text = ("name: sig\ninput: [2, 1, 32]\nlayers:\n  - flatten: {axis: 1, name: sq}\n  - relu\n"
            "  - unsqueeze: {axis: 1, name: back}\n  - conv: {out: 4, k: [1, 5], name: c}\n")
    for length in (32, 100):
        g = load_spec_text_with_input(text, (2, 1, length))
        assert g.node("sq").out.shape == (2, length) and g.node("back").out.shape == (2, 1, length)
        assert g.node("c").out.shape == (4, 1, length)
    from convscope.frontends.to_spec import graph_to_spec_text

    again = graph_from_spec_text(graph_to_spec_text(g))
    assert [(n.name, n.op, n.attrs, n.out) for n in again.nodes] == [(n.name, n.op, n.attrs, n.out) for n in g.nodes]


def load_spec_text_with_input(text: str, shape: tuple[int, int, int]):  # type: ignore[no-untyped-def]
    return graph_from_spec_text(text, input_shape=shape)


# --- bad input: a clear message naming file:line:column and the key or value, exit status 2 -------

BAD = {
    "bad_yaml": ("name: t\ninput: [3, 32, 32\nlayers: [relu]\n", r"invalid YAML"),
    "unknown_op": ("name: t\ninput: [3, 32, 32]\nlayers:\n  - conv: {out: 8, k: 3}\n  - rleu\n",
                   r":5:5: unknown op or block 'rleu' \(did you mean 'relu'\?\)"),
    "missing_argument": ("name: t\ninput: [3, 32, 32]\nlayers:\n  - conv: {k: 3}\n", r":4:11: conv: missing argument 'out'"),
    "wrong_type": ("name: t\ninput: [3, 32, 32]\nlayers:\n  - conv: {out: sixteen, k: 3}\n",
                   r":4:17: conv: 'out' must be an integer >= 1, got 'sixteen'"),
    "kernel_too_large": ("name: t\ninput: [3, 4, 4]\nlayers:\n  - conv: {out: 8, k: 7, p: 0}\n",
                         r":4:5: layer 'layers.0.conv': conv kernel 7x7 .* larger than the padded input height 4\+0: "
                         r"the span must be at most 4 \(a smaller kernel"),
    "channel_mismatch": ("name: t\ninput: [3, 8, 8]\nlayers:\n  - conv: {out: 8, k: 3, name: a}\n"
                         "  - conv: {out: 4, k: 3, name: b}\n  - add: {from: [a, b]}\n",
                         r":6:5: layer 'layers.2.add': channel mismatch at add: \[8, 8, 8\] vs \[4, 8, 8\]"),
    "duplicate_names": ("name: t\ninput: [3, 8, 8]\nlayers:\n  - conv: {out: 8, k: 3, name: a}\n  - relu: {name: a}\n",
                        r":5:5: layer 'a': duplicate layer name \(first defined at .*:4:5\)"),
    "cycle": ("name: t\ninput: [3, 8, 8]\nlayers:\n  - conv: {out: 8, k: 3, name: a, from: b}\n  - relu: {name: b}\n",
              r":4:5: 'from': 'b' is defined later .*cycle"),
    "from_itself": ("name: t\ninput: [3, 8, 8]\nlayers:\n  - conv: {out: 3, k: 3, name: a, from: a}\n",
                    r":4:5: 'from': 'a' is this layer itself: a layer cannot take its own output as input"),
    "shares_itself": ("name: t\ninput: [3, 8, 8]\nlayers:\n  - conv: {out: 3, k: 3, name: a, shares: a}\n",
                      r":4:5: 'shares': 'a' is this layer itself: a layer cannot share its own weights"),
    "from_inside_a_block": ("name: t\ninput: [3, 8, 8]\nblocks: {b: {layers: [conv: {out: 4, k: 3, name: inner}]}}\n"
                            "layers:\n  - b: {name: blk}\n  - conv: {out: 4, k: 3, from: inner}\n",
                            r":6:5: 'from': no layer is named 'inner' here; a layer inside a block is named by its "
                            r"path: 'blk.inner'"),
    "block_cycle": ("name: t\ninput: [3, 8, 8]\nblocks:\n  a:\n    layers: [b]\n  b:\n    layers: [a]\nlayers:\n  - a\n",
                    r"block 'a' calls itself \(a -> b -> a\)"),
    "unknown_block": ("name: t\ninput: [3, 8, 8]\nblocks:\n  basic:\n    layers: [relu]\nlayers:\n  - basci\n",
                      r":7:5: unknown op or block 'basci' \(did you mean 'basic'\?\)"),
    "negative_size": ("name: t\ninput: [3, 8, 8]\nlayers:\n  - conv: {out: -4, k: 3}\n", r":4:17: conv: 'out' must be an integer >= 1, got -4"),
    "negative_input": ("name: t\ninput: [3, -8, 8]\nlayers: [relu]\n", r":2:8: 'input' sizes must be positive"),
    "empty_network": ("name: t\ninput: [3, 8, 8]\nlayers: []\n", r":3:9: the network is empty"),
    "unknown_key": ("name: t\ninput: [3, 8, 8]\nlayer:\n  - relu\n", r":3:1: unknown key 'layer' \(did you mean 'layers'\?\)"),
    "unknown_argument": ("name: t\ninput: [3, 8, 8]\nlayers:\n  - conv: {out: 8, k: 3, stride: 2}\n",
                         r":4:26: conv: unknown argument 'stride' \(accepted: .*\bs\b"),
    "block_missing_arg": ("name: t\ninput: [3, 8, 8]\nblocks:\n  b:\n    args: {c: null}\n    layers: [conv: {out: $c, k: 1}]\n"
                          "layers:\n  - b: {}\n", r":8:8: block 'b': missing argument 'c' \(block 'b' takes: c; "),
    "duplicate_key": ("name: t\ninput: [3, 8, 8]\nlayers:\n  - conv: {out: 8, k: 3, out: 4}\n", r":4:26: duplicate key 'out'"),
    "generated_name_taken": ("name: t\ninput: [3, 8, 8]\nlayers:\n  - residual: {body: [conv: {out: 4, k: 3}]}\n"
                             "  - conv: {out: 4, k: 1, name: layers.0.downsample.0}\n",
                             r":5:5: layer 'layers.0.downsample.0': the name is taken by the layer convscope generated "
                             r"for the residual.s auto shortcut at .*:4:15"),
    "layers_not_a_list": ("name: t\ninput: [3, 8, 8]\nlayers: relu\n", r":3:9: 'layers' must be a list of layers"),
    "error_inside_a_block": ("name: t\ninput: [3, 8, 8]\nblocks:\n  b:\n    args: {k: 3}\n"
                             "    layers: [conv: {out: 4, k: $k, p: 0}]\nlayers:\n  - b\n  - b: {k: 9}\n",
                             r":6:14: layer 'layers.1.0.conv': conv kernel 9x9 .* \(in block 'b' called at .*:9:8\)\n"),
    "layers_a_mapping": ("name: t\ninput: [3, 8, 8]\nlayers:\n  conv: {out: 8}\n",
                         r":4:3: 'layers' must be a list .*got a mapping \(keys: conv\)"),
    "tab_indent": ("name: t\ninput: [3, 8, 8]\nlayers:\n\t- relu\n", r":4:1: invalid YAML: .*\(a tab: indent YAML with spaces\)"),
    "control_character": ("name: t\x01\ninput: [3, 8, 8]\nlayers: [relu]\n",
                          r":1:8: invalid YAML: the control character U\+0001 is not allowed"),
    "unclosed_flow": ("name: t\ninput: [3, 8, 8]\nlayers:\n  - conv: {out: 8, k: 3\n  - relu\n",
                      r"invalid YAML: did not find expected ',' or '}' \(while parsing a flow mapping that starts at "
                      r"line 4, column 11\)"),
    "huge_repeat": ("name: t\ninput: [3, 8, 8]\nlayers:\n  - repeat: 99999\n    layers: [relu]\n",
                    r":4:13: repeat: at most 10000 copies, got 99999"),
    "nested_too_deep": ("name: t\ninput: [3, 8, 8]\nlayers:\n" + "".join(
        "  " * (i + 1) + "- repeat: 1\n" + "  " * (i + 2) + "layers:\n" for i in range(300)) + "  " * 302 + "- relu\n",
                        r":4:3: the layers nest too deeply"),
    "nested_repeats_multiply": ("name: t\ninput: [3, 8, 8]\nlayers:\n  - repeat: 10000\n    layers:\n"
                                "      - repeat: 10000\n        layers: [relu]\n",
                                r":7:18: the network grows past 100000 layers here: nested 'repeat'"),
    "pytorch_spelling": ("name: t\ninput: [3, 8, 8]\nlayers:\n  - conv: {out: 8, kernel_size: 3}\n",
                         r":4:20: conv: missing argument 'k' \('kernel_size' is not an argument of conv: write 'k'\)"),
    "linear_on_map": ("name: t\ninput: [3, 8, 8]\nlayers:\n  - linear: 10\n", r"linear needs a vector.*add gap or flatten"),
    "pixel_shuffle_channels": ("name: t\ninput: [3, 8, 8]\nlayers:\n  - conv: {out: 6, k: 3}\n  - pixel_shuffle: 2\n",
                               r":5:5: layer 'layers.1.pixel_shuffle': pixel_shuffle by 2 needs channels divisible "
                               r"by 4, got 6"),
    "pixel_unshuffle_size": ("name: t\ninput: [3, 9, 8]\nlayers:\n  - pixel_unshuffle: {factor: 2}\n",
                             r"pixel_unshuffle by 2 needs height and width divisible by 2, got 9x8"),
    "upsample_mode": ("name: t\ninput: [3, 8, 8]\nlayers:\n  - upsample: {scale: 2, mode: cubic}\n",
                      r":4:32: upsample: 'mode' must be one of nearest, bilinear, bicubic, got 'cubic'"),
    "upsample_infinite": ("name: t\ninput: [3, 8, 8]\nlayers:\n  - upsample: {scale: [2, .inf]}\n",
                          r":4:23: upsample: 'scale' must be a positive number up to 1024 .*got \[2, .inf\]"),
    "huge_dilation": ("name: t\ninput: [3, 8, 8]\nlayers:\n  - conv: {out: 4, k: 3, d: 100000000000000000000}\n",
                      r":4:29: conv: 'd' must be .*got 100000000000000000000 \(at most 16777216\)"),
    "undefined_inside_a_string": ("name: t\ninput: [3, 8, 8]\nblocks:\n  b:\n    args: {c: 4}\n"
                                  "    layers: [conv: {out: $c, k: 1, name: x_$undefined}]\nlayers: [b]\n",
                                  r":6:42: '\$undefined' uses 'undefined', which is not an argument here"),
    "huge_input": ("name: t\ninput: [3, 99999999999, 8]\nlayers: [relu]\n", r":2:8: 'input' sizes must be at most"),
    "recursive_alias": ("name: t\ninput: [3, 8, 8]\nlayers: &l\n  - relu\n  - repeat: 2\n    layers: *l\n",
                        r":3:9: a YAML alias \(\*name\) refers to a mapping or list that contains it"),
    "block_argument_name": ("name: t\ninput: [3, 8, 8]\nblocks:\n  b:\n    args: {c: null, name: null}\n"
                            "    layers: [conv: {out: $c, k: 1, name: $name}]\nlayers: [b: {c: 4, name: y}]\n",
                            r":5:21: block 'b': 'name' cannot be a required argument: a call's 'name' belongs to the "
                            r"layer item that calls the block \(reserved: name, from, shares\)"),
    "block_argument_from": ("name: t\ninput: [3, 8, 8]\nblocks:\n  b:\n    args:\n      from: null\n"
                            "    layers: [relu: {from: $from}]\nlayers: [b]\n",
                            r":6:7: block 'b': 'from' cannot be a required argument: .*\(reserved: name, from, "
                            r"shares\)"),
    "flatten_axis_past_rank": ("name: t\ninput: [3, 1, 8]\nlayers:\n  - flatten: {axis: 3}\n",
                               r":4:21: flatten: 'axis' must be below the input's rank 3 \(shape \[3, 1, 8\]\), got 3"),
    "unsqueeze_without_axis": ("name: t\ninput: [3, 1, 8]\nlayers:\n  - flatten: {axis: 1}\n  - unsqueeze: {}\n",
                               r":5:16: unsqueeze: missing argument 'axis'"),
    "block_argument_not_a_name": ("name: t\ninput: [3, 8, 8]\nblocks:\n  b:\n    args: {in: 3}\n"
                                  "    layers: [conv: {out: $in, k: 1}]\nlayers: [b]\n",
                                  r":6:26: '\$in' is not a valid expression \(in block 'b' called at .*:7:10\)"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_gives_a_clear_message_and_exit_status_2(case: str, spec, capsys) -> None:  # type: ignore[no-untyped-def]
    import re

    text, pattern = BAD[case]
    path = spec(text)
    status = main(["analyze", str(path)])
    err = capsys.readouterr().err
    assert status == 2, err
    assert "Traceback" not in err
    assert str(path) in err
    assert re.search(pattern, err), err


def test_a_file_that_is_not_utf8_names_the_first_bad_byte(capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """file:line:column of the first byte that is not UTF-8, the column in characters (é is one)."""
    f = tmp_path / "latin1.yaml"
    f.write_bytes("name: t\ninput: [3, 8, 8]\n# café, not ".encode() + b"caf\xe9\nlayers: [relu]\n")
    assert main(["analyze", str(f)]) == 2
    err = capsys.readouterr().err
    assert f"{f}:3:16: byte 0xe9 is not UTF-8: a spec file must be UTF-8 text (save it as UTF-8)" in err, err
    assert "Traceback" not in err
    f.write_bytes("name: t\n".encode("utf-16"))
    assert main(["analyze", str(f)]) == 2
    assert f"{f}:1:1: byte 0xff is not UTF-8: a spec file must be UTF-8 text (this one looks like UTF-16" \
        in capsys.readouterr().err


def test_missing_file(capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    status = main(["analyze", str(tmp_path / "nope.yaml")])
    err = capsys.readouterr().err
    assert status == 2 and "nope.yaml: no such file" in err


def test_not_a_model(capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["analyze", "something"]) == 2
    assert "is not a model" in capsys.readouterr().err


def test_a_saved_pytorch_model_is_not_unpickled(capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "model.pth"
    f.write_bytes(b"PK\x03\x04 pretend zip")
    assert main(["analyze", str(f), "--input", "3,32,32"]) == 2
    err = capsys.readouterr().err
    assert "model.pth: a saved PyTorch model or checkpoint, which convscope does not unpickle" in err
    assert "file.py:factory" in err


def test_unknown_zoo_name_suggests(capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["analyze", "zoo:resnet18"]) == 2
    assert "did you mean" in capsys.readouterr().err



@pytest.mark.parametrize("case, note", [
    ("name: t\ninput: [3, 8, 8]\nlayers:\n  - parallel:\n      merge: add\n      branches:\n"
     "        - [conv: {out: 3, k: 3, name: c}]\n",
     ":7:9: a parallel with one branch is that branch: nothing is merged (add needs two or more)"),
    ("name: t\ninput: [3, 8, 8]\nblocks:\n  b:\n    args: {c: null, unused: 3}\n"
     "    layers: [conv: {out: $c, k: 1, name: c}]\nlayers: [b: {c: 4}]\n",
     ":5:21: block 'b' declares argument 'unused' but no layer uses $unused; a value given for it changes nothing"),
    ("name: t\ninput: [3, 8, 8]\nblocks:\n  b:\n    args: {c: 4}\n"
     "    layers: [conv: {out: \"${cin}\", k: 1, name: c}]\nlayers: [b]\n",
     ":5:12: block 'b' declares argument 'c' but no layer uses $c"),
    ("name: t\ninput: [3, 8, 8]\nblocks:\n  b:\n    args: {c: null, name: x}\n"
     "    layers: [conv: {out: $c, k: 1, name: $name}]\nlayers: [b: {c: 4, name: y}]\n",
     ":5:21: block 'b': a call's 'name' belongs to the layer item that calls the block, so argument 'name' always "
     "keeps its default 'x'"),
])
def test_what_is_valid_but_probably_a_slip_is_a_note_with_its_place(case: str, note: str) -> None:
    """A one-branch parallel and an argument no layer uses are valid specs (someone else's tool
    wrote them, or a block kept for later): they are analysed, and a note says where to look."""
    g = graph_from_spec_text(case, file="net.yaml")
    assert any(n.startswith("net.yaml") and note in n for n in g.meta_dict()["notes"]), g.meta_dict()
    assert [n.op.value for n in g.nodes] == ["input", "conv"]  # nothing merged


def test_an_auto_shortcut_keeps_the_bodys_stride_on_a_one_pixel_map() -> None:
    text = ("name: lo\ninput: [3, {s}, {s}]\nlayers:\n  - conv: {{out: 4, k: 3}}\n"
            "  - residual:\n      body: [conv: {{out: 8, k: 3, s: 2}}]\n")
    for side in (1, 2, 32):
        g = graph_from_spec_text(text.format(s=side))
        assert g.node("layers.1.downsample.0").attrs.stride == (2, 2), side  # the same graph at every size


def test_from_a_named_block_call_residual_or_repeat_takes_its_output() -> None:
    g = graph_from_spec_text("""\
name: bn
input: [3, 16, 16]
blocks:
  two:
    layers:
      - conv: {out: 4, k: 3}
      - relu
layers:
  - two: {name: t}
  - conv: {out: 4, k: 1, name: x}
  - add: {from: [t, x]}
  - repeat: 2
    name: rp
    layers: [conv: {out: 4, k: 3}]
  - residual:
      body: [conv: {out: 4, k: 3}]
    name: r
  - concat: {from: [rp, r, t], name: cat}
""")
    assert g.node("layers.2.add").inputs == ("t.1.relu", "x")
    assert g.node("cat").inputs == ("rp.1.0.conv", "r.add", "t.1.relu")


@pytest.mark.parametrize("outputs, message", [("[zz]", "'outputs': no layer named 'zz'"),
                                              ("[a, a]", "'outputs' lists 'a' more than once")])
def test_bad_outputs_name_the_key(outputs: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "o.yaml"
    p.write_text(f"name: o\ninput: [3, 8, 8]\nlayers:\n  - conv: {{out: 4, k: 3, name: a}}\noutputs: {outputs}\n")
    assert main(["analyze", str(p)]) == 2
    err = capsys.readouterr().err
    assert f"{p}:5:10: {message}" in err


def test_an_expression_too_long_to_evaluate_is_a_spec_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "e.yaml"
    p.write_text("name: e\ninput: [3, 8, 8]\nblocks:\n  b:\n    args: {c: 4}\n    layers:\n"
                 f"      - conv: {{out: \"${{c{'+1' * 3000}}}\", k: 3}}\nlayers:\n  - b\n")
    assert main(["analyze", str(p)]) == 2
    assert "is too long or nested too deeply to evaluate" in capsys.readouterr().err


def test_from_names_an_op_that_adds_several_layers() -> None:
    """`name: gate1` on an se makes gate1.avgpool … gate1.scale: `from: gate1` is its output (it was
    refused as "defined later in the file")."""
    g = graph_from_spec_text("name: t\ninput: [4, 16, 16]\nlayers:\n  - conv: {out: 8, k: 3, name: c}\n"
                             "  - se: {ratio: 0.5, name: gate1}\n  - conv: {out: 8, k: 3, name: d}\n"
                             "  - add: {from: [gate1, d], name: sum}\n")
    assert g.node("sum").inputs == ("gate1.scale", "d")


def test_numbers_are_read_as_yaml_1_2() -> None:
    """010 is ten (YAML 1.1 read it as octal eight, silently), 0o12 and 0x0a are ten, 1_0 and
    0b1010 are words; a date-like name stays the name."""
    from convscope.frontends._yaml import load_yaml

    d = load_yaml("a: 010\nb: 0o12\nc: 0x0a\nd: 1_0\ne: 0b1010\nf: 2024-01-01\ng: 1:30\nh: 1e3\ni: on\n", "x.yaml")
    assert d == {"a": 10, "b": 10, "c": 10, "d": "1_0", "e": "0b1010", "f": "2024-01-01", "g": "1:30", "h": 1000.0,
                 "i": "on"}
    g = graph_from_spec_text("name: 2024-01-01\ninput: [3, 8, 8]\nlayers:\n  - conv: {out: 010, k: 3}\n", file="d.yaml")
    assert g.name == "2024-01-01" and g.nodes[-1].out.shape[0] == 10
    with pytest.raises(SpecError, match=r"d.yaml:4:17: conv: 'out' must be an integer >= 1, got '0b1010'"):
        graph_from_spec_text("name: t\ninput: [3, 8, 8]\nlayers:\n  - conv: {out: 0b1010, k: 3}\n", file="d.yaml")


def test_merge_keys_take_the_written_keys_first() -> None:
    g = graph_from_spec_text("name: t\ninput: [3, 16, 16]\nlayers:\n  - conv: &c {out: 8, k: 3, name: a}\n"
                             "  - conv: {<<: *c, k: 5, name: b}\n  - conv: {<<: [*c], name: c}\n", file="m.yaml")
    assert [g.node(n).attrs.kernel for n in "abc"] == [(3, 3), (5, 5), (3, 3)]


def test_nested_aliases_that_would_expand_to_billions_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = ["name: b", "input: [3, 16, 16]", "b0: &a0 [relu, relu, relu, relu, relu, relu, relu, relu, relu, relu]"]
    rows += [f"b{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    (tmp_path / "laughs.yaml").write_text("\n".join([*rows, "layers: [relu]", ""]))
    assert main(["analyze", str(tmp_path / "laughs.yaml")]) == 2
    assert "YAML aliases (*name) expand to more than 200,000 values" in capsys.readouterr().err


def test_a_device_file_is_not_read_forever(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "zero.yaml").symlink_to("/dev/zero")
    assert main(["analyze", str(tmp_path / "zero.yaml")]) == 2
    assert "not a regular file" in capsys.readouterr().err

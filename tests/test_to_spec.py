"""Graph -> spec writer: everything the spec language can say reads back to the same graph and the
same analysis; everything else is refused with the layer's name."""

from __future__ import annotations

import pytest
import yaml

from convscope.analyses.analyze import analyze_graph
from convscope.api import analyze
from convscope.errors import InputError
from convscope.frontends.from_spec import graph_from_spec_text
from convscope.frontends.to_spec import SpecWriteError, graph_to_spec_data, graph_to_spec_text, write_spec
from convscope.ir import ops as O
from convscope.ir.graph import Graph, GraphBuilder
from convscope.ir.ops import OpKind
from convscope.zoo import load_zoo, zoo_entries


def _nodes(g: Graph) -> list[tuple[object, ...]]:
    return [(n.name if n.op is not OpKind.INPUT else "input", n.op, n.attrs,
             tuple("input" if g.node(i).op is OpKind.INPUT else i for i in n.inputs), n.out) for n in g.nodes]


def _same_analysis(a: Graph, b: Graph) -> None:
    da, db = analyze_graph(a).to_dict(), analyze_graph(b).to_dict()
    for d in (da, db):
        for row in d["layers"]:
            row.pop("source", None)
    assert da == db


def _round_trip(g: Graph) -> Graph:
    text = graph_to_spec_text(g)
    back = graph_from_spec_text(text, file="written.yaml")
    assert _nodes(back) == _nodes(g)
    assert back.outputs == g.outputs
    return back


@pytest.mark.parametrize("name", [e.name for e in zoo_entries()])
def test_every_zoo_network_round_trips(name: str) -> None:
    g = load_zoo(name)
    _same_analysis(g, _round_trip(g))


EVERYTHING = """\
name: everything
input: [3, 20, 24]
classes: 7
layers:
  - conv: {out: 8, k: [3, 5], s: [1, 2], p: [[1, 2], [0, 3]], bias: true, name: "1.0"}
  - bn: {eps: 0.001, name: "yes"}
  - leaky_relu: {alpha: 0.2}
  - conv: {out: 16, k: 3, d: 2, g: 4, name: a}
  - se: {ratio: 0.25, act: swish, gate: hsigmoid}
  - parallel:
      merge: concat
      branches:
        - [conv: {out: 8, k: 1}]
        - [maxpool: {k: 3, s: 1}]
        - [avgpool: {k: 3, s: 1, count_include_pad: false}]
  - convT: {out: 8, k: 4, s: 2, p: 1, op: 0, name: up}
  - upsample: {scale: [0.5, 0.5], mode: bilinear}
  - maxpool: {k: 3, s: 2, p: 1, ceil: true}
  - channel_shuffle: 2
  - pixel_shuffle: {factor: 2}
  - pixel_unshuffle: 2
  - upsample: {scale: 2, mode: bicubic}
  - upsample: {scale: 0.5, mode: bicubic}
  - gn: {groups: 4}
  - lrn: {size: 3, k: 2.0}
  - ln
  - scale: 0.5
  - add: {from: [a, a], name: twice}
  - zero: {from: a}
  - identity
  - adaptive_avgpool: {size: [2, 3]}
  - dropout: 0.1
  - flatten
  - linear: {out: 7, bias: false, name: head}
  - gelu
outputs: [head, twice]
"""


def test_every_spec_op_round_trips() -> None:
    g = graph_from_spec_text(EVERYTHING, file="everything.yaml")
    back = _round_trip(g)
    _same_analysis(g, back)
    data = graph_to_spec_data(g)
    assert data["outputs"] == ["head", "twice"] and data["classes"] == 7
    assert {"zero": {"name": "layers.19.zero", "from": "a"}} in data["layers"]
    assert {"identity": {"name": "layers.20.identity"}} in data["layers"]
    assert {"pixel_unshuffle": {"name": "layers.11.pixel_unshuffle", "factor": 2}} in data["layers"]  # input = the previous layer


def test_names_are_quoted_only_when_yaml_would_change_them() -> None:
    g = graph_from_spec_text(EVERYTHING, file="everything.yaml")
    text = graph_to_spec_text(g)
    assert 'name: "1.0"' in text and 'name: "yes"' in text and "name: layers.2.leaky_relu" in text
    assert yaml.safe_load(text)["layers"][0]["conv"]["name"] == "1.0"
    g = graph_from_spec_text("name: '2e1'\ninput: [3, 8, 8]\nlayers:\n  - conv: {out: 4, k: 3, name: '1e3'}\n", file="e.yaml")
    text = graph_to_spec_text(g)  # YAML 1.2, as convscope reads specs, takes 1e3 for a number
    assert 'name: "2e1"' in text and 'name: "1e3"' in text
    assert [n.name for n in graph_from_spec_text(text, file="back.yaml").nodes] == [n.name for n in g.nodes]


def test_written_file_is_what_analyze_reads(tmp_path) -> None:  # type: ignore[no-untyped-def]
    g = load_zoo("resnet18-cifar")
    p = write_spec(g, tmp_path / "r18.yaml", comment=["a comment", "another"])
    text = p.read_text()
    assert text.startswith("# a comment\n# another\nname: resnet18-cifar\n")
    a = analyze(str(p))
    assert a.totals == analyze("zoo:resnet18-cifar").totals
    assert a.layer("layer2.0.downsample.0").stride == (2, 2)
    with pytest.raises(InputError, match="cannot write"):
        write_spec(g, tmp_path / "missing-dir" / "x.yaml")


def _one(op: OpKind, attrs: object, shape: tuple[int, ...] = (4, 8, 8)) -> Graph:
    b = GraphBuilder("odd")
    b.add_input("x", shape)
    b.add("c", OpKind.CONV, O.ConvAttrs(out_channels=4, kernel=(1, 1)), ["x"])
    b.add("odd", op, attrs, ["c"])  # type: ignore[arg-type]
    return b.build()


@pytest.mark.parametrize("op, attrs, what", [
    (OpKind.SLICE, O.SliceAttrs(axis=0, start=0, stop=2), "slice"),
    (OpKind.MAXPOOL, O.PoolAttrs(kernel=(2, 2), stride=(2, 2), dilation=(2, 2)), "dilated pool"),
    (OpKind.BATCHNORM, O.NormAttrs(affine=False), "without affine"),
    (OpKind.UPSAMPLE, O.UpsampleAttrs(mode="bilinear", scale=(2.0, 2.0), align_corners=True), "align_corners"),
    (OpKind.ACT, O.ActAttrs(fn="mish"), "mish"),
    (OpKind.PAD, O.PadAttrs(padding=((1, 1), (1, 1))), "pad"),
    (OpKind.UNKNOWN, O.UnknownAttrs(target="aten::weird", shape=(4, 8, 8)), "unknown"),
    (OpKind.MEAN, O.ReduceAttrs(axes=(0,)), "a mean over axes \\[0\\]"),
    (OpKind.MEAN, O.ReduceAttrs(axes=(1, 2), fn="sum"), "a sum over axes"),
])
def test_what_the_spec_cannot_say_is_refused_naming_the_layer(op: OpKind, attrs: object, what: str) -> None:
    with pytest.raises(SpecWriteError, match=f"layer 'odd' \\({op.value}\\).*{what}|layer 'odd' \\({op.value}\\)"):
        graph_to_spec_text(_one(op, attrs))
    try:
        graph_to_spec_text(_one(op, attrs))
    except SpecWriteError as exc:
        assert exc.exit_status == 2 and "network spec" in str(exc)


@pytest.mark.parametrize("fn, keep, written", [("mean", False, "gap"), ("max", True, "gmp: {keepdims: true")])
def test_a_mean_over_the_spatial_axes_is_written_as_global_pooling(fn: str, keep: bool, written: str) -> None:
    """``x.mean((2, 3))`` in a PyTorch model (axes 1, 2 of a C, H, W map, or -2, -1) is `gap`."""
    for axes in ((1, 2), (-2, -1)):
        g = _one(OpKind.MEAN, O.ReduceAttrs(axes=axes, keepdims=keep, fn=fn))
        text = graph_to_spec_text(g)
        assert written in text
        back = graph_from_spec_text(text)
        assert back.node("odd").out.shape == g.node("odd").out.shape


def test_input_names_are_mapped_and_clashes_refused() -> None:
    b = GraphBuilder("mapped")
    b.add_input("x", (4, 8, 8))
    b.add("c", OpKind.CONV, O.ConvAttrs(out_channels=4, kernel=(1, 1)), ["x"])
    b.add("s", OpKind.ADD, O.NoAttrs(), ["c", "x"])
    g = b.build()
    assert graph_to_spec_data(g)["layers"] == [{"conv": {"out": 4, "k": 1, "name": "c"}},
                                               {"add": {"name": "s", "from": ["c", "input"]}}]
    assert graph_from_spec_text(graph_to_spec_text(g)).node("s").inputs == ("c", "input")
    b = GraphBuilder("clash")
    b.add_input("x", (3, 8, 8))
    b.add("input", OpKind.ACT, O.ActAttrs(fn="relu"), ["x"])
    with pytest.raises(SpecWriteError, match="reserved"):
        graph_to_spec_text(b.build())
    b = GraphBuilder("two")
    b.add_input("x", (3, 8, 8))
    b.add_input("y", (3, 8, 8))
    b.add("s", OpKind.ADD, O.NoAttrs(), ["x", "y"])
    with pytest.raises(SpecWriteError, match="2 inputs"):
        graph_to_spec_text(b.build())

"""The ONNX front end: every fixture exported with torch.onnx.export (TorchScript exporter, BatchNorm
kept: ``do_constant_folding=False``) must give the same parameters, MACs and receptive fields as its
PyTorch original, layer by layer, with module paths as names; one model goes through the dynamo
exporter (names from its metadata).  Each model is exported once per session."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import warnings
from pathlib import Path

import onnx
import pytest
import torch
import torch.nn.functional as F
from fixtures import FIXTURES
from onnx import TensorProto, helper
from test_from_torch import BY_NAME, captured, make
from torch import nn

from convscope.analyses.analyze import analyze_graph
from convscope.cli import main
from convscope.errors import InputError
from convscope.frontends.from_onnx import load_onnx
from convscope.frontends.from_torch import graph_from_module
from convscope.ir.ops import OpKind

EXPORTS: dict[str, Path] = {}


@pytest.fixture(scope="session")
def export_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx")


def export(module: nn.Module, shape: tuple[int, ...], path: Path, **kw: object) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        try:
            torch.onnx.export(module.eval(), (torch.zeros(1, *shape),), str(path), dynamo=False,
                              do_constant_folding=False, **kw)
        finally:
            logging.disable(logging.NOTSET)
    return path


def export_dynamo(module: nn.Module, shape: tuple[int, ...], path: Path, **kw: object) -> Path:
    """The same through the dynamo exporter (``torch.export`` underneath)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        try:
            prog = torch.onnx.export(module.eval(), (torch.zeros(1, *shape),), dynamo=True, verbose=False, **kw)
        finally:
            logging.disable(logging.NOTSET)
    prog.save(str(path))
    return path


def exported(name: str, folder: Path) -> Path:
    if name not in EXPORTS:
        EXPORTS[name] = export(make(name), BY_NAME[name].input, folder / f"{name}.onnx")
    return EXPORTS[name]


@pytest.mark.parametrize("name", [f.name for f in FIXTURES])
def test_export_matches_the_pytorch_original(name: str, export_dir: Path) -> None:
    _, _, a = captured(name)
    go = load_onnx(str(exported(name, export_dir)))
    b = analyze_graph(go)
    assert b.unknown_ops == ()
    assert (b.totals.params, b.totals.macs) == (a.totals.params, a.totals.macs)
    rows = {r.name: r for r in b.layers}
    weighted = [r.name for r in a.layers if r.op in ("conv", "convT", "linear") and ".mha." not in r.name
                and not (name == "vit" and r.name.startswith("blocks.2.attn"))]  # MultiheadAttention exports one packed projection
    assert all(n in rows for n in weighted), [n for n in weighted if n not in rows][:5]
    for n in weighted:  # same layer, same numbers
        assert (rows[n].params, rows[n].macs, rows[n].rf_min, rows[n].rf_max) == \
            (a.layer(n).params, a.layer(n).macs, a.layer(n).rf_min, a.layer(n).rf_max), n
    assert b.border_layer == a.border_layer and b.feasible_resolution == a.feasible_resolution


def test_dynamo_export_names_come_from_its_metadata(tmp_path: Path) -> None:
    path = export_dynamo(make("squeezenet"), (3, 64, 64), tmp_path / "sq.onnx", optimize=False)
    assert all(n.name.startswith("node_") for n in onnx.load(str(path)).graph.node)
    a = analyze_graph(load_onnx(str(path)))
    _, _, t = captured("squeezenet")
    assert (a.totals.params, a.totals.macs) == (t.totals.params, t.totals.macs)
    for n in ("features.0", "features.3.squeeze", "features.12.expand3x3", "classifier.1"):
        assert a.layer(n).rf_max == t.layer(n).rf_max and a.layer(n).params == t.layer(n).params


class Heads(nn.Module):
    """Modules reached through a ModuleDict: the TorchScript exporter scopes them by key alone."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.stages = nn.ModuleList([nn.ModuleDict({"conv": nn.Conv2d(8, 8, 3, padding=1)}) for _ in range(2)])
        self.heads = nn.ModuleDict({"a": nn.Sequential(nn.Conv2d(8, 4, 1), nn.ReLU()), "b": nn.Conv2d(8, 4, 1)})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:  # the exporter scopes these /conv/Conv and /conv_1/Conv
            x = stage["conv"](x)
        return torch.cat([h(x) for h in self.heads.values()], 1)


def test_scopes_a_module_dict_shortened_take_their_parameters_paths(tmp_path: Path) -> None:
    path = export(Heads(), (3, 16, 16), tmp_path / "heads.onnx")
    assert [n.name for n in onnx.load(str(path)).graph.node][1:4] == ["/conv/Conv", "/conv_1/Conv", "/a/a.0/Conv"]
    names = [n.name for n in load_onnx(str(path)).nodes]
    assert {"stem", "stages.0.conv", "stages.1.conv", "heads.a.0", "heads.a.1", "heads.b"} <= set(names)
    assert not {"conv", "conv_1", "a.0", "a.1", "b"} & set(names)


def test_dynamo_export_a_convolution_with_its_batch_norm_folded_keeps_its_name(tmp_path: Path) -> None:
    m = nn.Sequential()
    m.add_module("conv1", nn.Conv2d(3, 8, 3, padding=1))
    m.add_module("bn1", nn.BatchNorm2d(8))
    m.add_module("act", nn.ReLU())
    path = export_dynamo(m, (3, 16, 16), tmp_path / "cb.onnx")
    convs = [n for n in onnx.load(str(path)).graph.node if n.op_type == "Conv"]
    assert len(convs) == 1 and "bn1" in str(convs[0].metadata_props)  # the exporter folded bn1 into conv1
    g = load_onnx(str(path))
    assert g.node("conv1").op is OpKind.CONV and "bn1" not in [n.name for n in g.nodes]


class Spelled(nn.Module):
    """SiLU as x·sigmoid(x), GELU through erf (opset 17 has no Gelu), a channel shuffle, a layer
    scale and a position embedding: patterns the ONNX front end folds back or keeps as constants."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.act = nn.SiLU()
        self.gamma = nn.Parameter(torch.ones(8, 1, 1))
        self.pos = nn.Parameter(torch.zeros(1, 8, 16, 16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.conv(x)) + self.pos
        b, c, h, w = y.shape
        y = y.view(b, 2, c // 2, h, w).transpose(1, 2).reshape(b, c, h, w)
        return F.gelu(y) * self.gamma


def test_spelled_out_patterns_fold_back(tmp_path: Path) -> None:
    m = Spelled()
    g = load_onnx(str(export(m, (3, 16, 16), tmp_path / "spelled.onnx", opset_version=17)))
    ops = [(n.op, getattr(n.attrs, "fn", None)) for n in g.nodes]
    assert (OpKind.ACT, "swish") in ops and (OpKind.ACT, "gelu") in ops and (OpKind.CHANNEL_SHUFFLE, None) in ops
    assert (OpKind.ACT, "sigmoid") not in ops and (OpKind.ACT, "erf") not in ops
    assert g.node("act").op is OpKind.ACT  # SiLU's Sigmoid + Mul, named by its module
    a = analyze_graph(g)
    assert a.totals.params == sum(p.numel() for p in m.parameters())
    assert a.layer("conv").rf_max == (3, 3) and a.unknown_ops == ()


def test_input_size_override_and_symbolic_sizes(tmp_path: Path) -> None:
    m = make("squeezenet")
    path = export(m, (3, 64, 64), tmp_path / "sq.onnx", input_names=["img"],
                  dynamic_axes={"img": {0: "N", 2: "H", 3: "W"}})
    with pytest.raises(InputError, match="no fixed size .*give --input C,H,W"):
        load_onnx(str(path))
    big = analyze_graph(load_onnx(str(path), (3, 96, 96)))
    assert big.input == (3, 96, 96) and big.totals.macs == analyze_graph(
        load_onnx(str(export(m, (3, 96, 96), tmp_path / "sq96.onnx")))).totals.macs


def test_an_unknown_onnx_op_is_reported_with_its_inferred_shape(tmp_path: Path) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 12, 3, 3], [0.1] * 432)
    nodes = [helper.make_node("LpPool", ["x"], ["s"], kernel_shape=[2, 2], strides=[2, 2], name="lp"),
             helper.make_node("Tile", ["s", "reps"], ["t"], name="tile"),
             helper.make_node("Conv", ["t", "w"], ["y"], pads=[1, 1, 1, 1], name="conv")]
    reps = helper.make_tensor("reps", TensorProto.INT64, [4], [1, 4, 1, 1])
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], [w, reps]),
                              opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "odd.onnx"
    onnx.save(model, str(path))
    a = analyze_graph(load_onnx(str(path)))
    assert [u[1] for u in a.unknown_ops] == ["LpPool", "Tile"]
    assert a.layer("lp").out_shape == (3, 4, 4) and a.layer("tile").out_shape == (12, 4, 4)
    assert a.layer("conv").params == 432 and a.layer("conv").rf_max is None


def test_an_op_on_constants_without_a_numpy_rule_is_evaluated_not_refused(tmp_path: Path) -> None:
    # the dynamo exporter pads affine_grid's constant base grid; folded, it is a constant operand
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 3, 3, 3], [0.1] * 108)
    base = helper.make_tensor("base", TensorProto.FLOAT, [1, 4, 6, 6], [1.0] * 144)
    pads = helper.make_tensor("pads", TensorProto.INT64, [8], [0, 0, 1, 1, 0, 0, 1, 1])
    nodes = [helper.make_node("Pad", ["base", "pads"], ["grid"], mode="reflect", name="pad"),
             helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Add", ["c", "grid"], ["y"], name="add")]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], [w, base, pads]),
                              opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "padded.onnx"
    onnx.save(model, str(path))
    a = analyze_graph(load_onnx(str(path)))
    assert a.unknown_ops == () or not a.unknown_ops
    assert a.layer("conv").params == 108 and a.layer("add").rf_max == (3, 3)
    assert a.totals.params == 108 + 144  # the constant operand is a buffer the exporter made a weight


def test_an_unknown_op_after_the_batch_axis_moved_keeps_the_rest_of_the_model(tmp_path: Path) -> None:
    """The dynamo exporter writes ``y[:, idx]`` as Transpose → GatherND → Transpose: the unknown
    GatherND sees the batch on axis 1, and what follows it is still analysed."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    w1 = helper.make_tensor("w1", TensorProto.FLOAT, [4, 3, 3, 3], [0.1] * 108)
    w2 = helper.make_tensor("w2", TensorProto.FLOAT, [5, 4, 3, 3], [0.1] * 180)
    idx = helper.make_tensor("idx", TensorProto.INT64, [4, 1], [3, 1, 0, 2])
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Transpose", ["a"], ["t"], perm=[1, 0, 2, 3], name="tr1"),
             helper.make_node("GatherND", ["t", "idx"], ["g"], name="pick"),
             helper.make_node("Transpose", ["g"], ["u"], perm=[1, 0, 2, 3], name="tr2"),
             helper.make_node("Conv", ["u", "w2"], ["y"], pads=[1, 1, 1, 1], name="conv2")]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], [w1, w2, idx]),
                              opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "pick.onnx"
    onnx.save(model, str(path))
    a = analyze_graph(load_onnx(str(path)))
    assert [u[1] for u in a.unknown_ops] == ["GatherND"]
    assert a.layer("pick").out_shape == (4, 8, 8)
    assert a.layer("conv2").params == 180 and a.layer("conv2").out_shape == (5, 8, 8)
    assert a.layer("conv2").rf_max is None and a.layer("conv1").rf_max == (3, 3)
    assert a.totals.params == 108 + 180


def test_an_unknown_op_that_hides_where_the_batch_went_leaves_what_follows_countable(tmp_path: Path) -> None:
    """At batch 1 an unknown op whose output has no recognisable batch axis (a GatherND over two
    leading axes) still feeds the layers after it: their parameters are counted."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 3, 3, 3], [0.1] * 108)
    fc = helper.make_tensor("fc", TensorProto.FLOAT, [2, 5], [0.1] * 10)
    idx = helper.make_tensor("idx", TensorProto.INT64, [2, 2], [0, 1, 0, 3])
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [1, 2])
    nodes = [helper.make_node("Conv", ["x", "w"], ["a"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("GatherND", ["a", "idx"], ["g"], name="pick"),
             helper.make_node("ReduceMean", ["g"], ["m"], axes=[1, 2], keepdims=0, name="mean"),
             helper.make_node("Reshape", ["m", "shape"], ["r"], name="flat"),
             helper.make_node("Gemm", ["r", "fc"], ["y"], name="fc")]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], [w, fc, idx, shape]),
                              opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "hide.onnx"
    onnx.save(model, str(path))
    a = analyze_graph(load_onnx(str(path)))
    assert [u[1] for u in a.unknown_ops] == ["GatherND"] and a.layer("pick").out_shape == (2, 8, 8)
    assert a.totals.params == 108 + 10 and a.layer("fc").params == 10


def test_a_channels_last_input_as_tensorflow_exports_write_it(tmp_path: Path) -> None:
    """(N, H, W, C) input, normalised per channel, then transposed to (N, C, H, W): analysed as a
    (C, H, W) input; --input is C,H,W as for any model."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 12, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    w = helper.make_tensor("w", TensorProto.FLOAT, [8, 3, 3, 3], [0.1] * 216)
    mean = helper.make_tensor("mean", TensorProto.FLOAT, [3], [0.4, 0.5, 0.6])
    nodes = [helper.make_node("Sub", ["x", "mean"], ["s"], name="sub"),
             helper.make_node("Transpose", ["s"], ["t"], perm=[0, 3, 1, 2], name="to_nchw"),
             helper.make_node("Conv", ["t", "w"], ["c"], pads=[1, 1, 1, 1], strides=[2, 2], name="conv"),
             helper.make_node("Relu", ["c"], ["y"], name="relu")]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], [w, mean]),
                              opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "nhwc.onnx"
    onnx.save(model, str(path))
    a = analyze_graph(load_onnx(str(path)))
    assert a.input == (3, 16, 12) and a.unknown_ops == ()
    assert a.layer("conv").out_shape == (8, 8, 6) and a.layer("conv").params == 216 and a.layer("conv").rf_max == (3, 3)
    big = analyze_graph(load_onnx(str(path), (3, 32, 24)))
    assert big.input == (3, 32, 24) and big.layer("conv").out_shape == (8, 16, 12)


def test_lrn_as_model_zoos_write_it_and_as_pytorch_exports_it(tmp_path: Path) -> None:
    """Caffe-era models in the ONNX model zoo hold an LRN node; PyTorch's exporters write
    F.local_response_norm out (a 5-D pad and 3-D pool, through an If): both are one lrn layer."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    w = helper.make_tensor("w", TensorProto.FLOAT, [8, 3, 3, 3], [0.1] * 216)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node("LRN", ["c"], ["y"], size=5, alpha=2e-4, beta=0.5, bias=2.0, name="norm")]
    path = tmp_path / "lrn.onnx"
    onnx.save(helper.make_model(helper.make_graph(nodes, "g", [x], [y], [w]),
                                opset_imports=[helper.make_opsetid("", 17)]), str(path))
    zoo = load_onnx(str(path))
    assert zoo.node("norm").op is OpKind.LRN and zoo.node("norm").attrs.size == 5  # type: ignore[union-attr]
    m = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.LocalResponseNorm(5, alpha=2e-4, beta=0.5, k=2.0),
                      nn.Conv2d(8, 4, 3))
    g = load_onnx(str(export(m, (3, 16, 16), tmp_path / "torch_lrn.onnx")))
    a = analyze_graph(g)
    assert a.unknown_ops == () and [r.op for r in a.layers] == ["conv", "relu", "lrn", "conv"]
    assert g.node("2").attrs == zoo.node("norm").attrs  # type: ignore[union-attr]
    assert a.layer("3").rf_max == (5, 5) and a.totals.params == sum(p.numel() for p in m.parameters())


def test_depth_to_space_space_to_depth_and_reductions(tmp_path: Path) -> None:
    """ONNX's own ops for what PyTorch writes as pixel (un)shuffle, sum/min reductions and cubic
    resizing: each becomes the IR op, with the receptive field of the equivalent PyTorch network."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    w = helper.make_tensor("w", TensorProto.FLOAT, [16, 12, 3, 3], [0.1] * 1728)
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    scales = helper.make_tensor("scales", TensorProto.FLOAT, [4], [1, 1, 2, 2])
    nodes = [helper.make_node("SpaceToDepth", ["x"], ["s"], blocksize=2, name="s2d"),
             helper.make_node("Conv", ["s", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("DepthToSpace", ["c"], ["d"], blocksize=2, mode="DCR", name="d2s"),
             helper.make_node("ReduceSum", ["d", "axes"], ["r"], keepdims=1, name="sum"),
             helper.make_node("ReduceMin", ["d"], ["m"], axes=[1], keepdims=1, name="min"),
             helper.make_node("Add", ["r", "m"], ["a"], name="add"),
             helper.make_node("Resize", ["a", "", "scales"], ["y"], mode="cubic", name="up")]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], [w, axes, scales]),
                              opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "d2s.onnx"
    onnx.save(model, str(path))
    a = analyze_graph(load_onnx(str(path)))
    assert a.unknown_ops == ()
    ops = {r.name: (r.op, r.out_shape, r.rf_max) for r in a.layers}
    assert ops["s2d"] == ("pixel_unshuffle", (12, 8, 8), (2, 2))
    assert ops["conv"] == ("conv", (16, 8, 8), (6, 6))
    assert ops["d2s"] == ("pixel_shuffle", (4, 16, 16), (6, 6))
    assert ops["sum"][:2] == ("sum", (1, 16, 16)) and ops["min"][:2] == ("amin", (1, 16, 16))
    # four cubic taps read four neighbours of d2s, which cover two or three conv positions (2 px
    # apart): 8 or 10 px by position (9 on average)
    assert ops["up"] == ("upsample", (1, 32, 32), (10, 10)) and a.layer("up").rf_min == (8, 8)


def test_cli_and_errors(tmp_path: Path, export_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["analyze", str(exported("resnet18", export_dir)), "--json", "-"])
    out, _ = capsys.readouterr()
    d = json.loads(out)
    assert code == 0 and d["input"] == [3, 64, 64] and any(r["name"] == "layer3.0.conv2" for r in d["layers"])
    bad = tmp_path / "bad.onnx"
    bad.write_text("not a model")
    assert main(["analyze", str(bad)]) == 2
    _, err = capsys.readouterr()
    assert "not a readable ONNX model" in err and "Traceback" not in err
    bad.write_bytes(b"")  # protobuf parses nothing as an empty model
    assert main(["analyze", str(bad)]) == 2
    assert "not a readable ONNX model (it holds no graph" in capsys.readouterr().err


def test_the_onnx_front_end_imports_no_torch() -> None:
    code = "import sys, convscope.frontends.from_onnx; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


# --- found by an audit on models of its own -----------------------------------------------------------
def test_stacked_branches_export_like_the_original(tmp_path: Path) -> None:
    from test_from_torch import _StackBranches

    for how in ("sum", "flatten"):
        m = _StackBranches(1, how)
        a = analyze_graph(load_onnx(str(export(m, (8, 16, 16), tmp_path / f"stack_{how}.onnx"))))
        ref = analyze_graph(captured_module(m, (8, 16, 16)))
        assert a.unknown_ops == () and a.totals.macs == ref.totals.macs and a.totals.params == ref.totals.params
        assert a.layer("out").rf_max == (5, 5)


def captured_module(m: nn.Module, shape: tuple[int, ...]):  # type: ignore[no-untyped-def]
    from convscope.frontends.from_torch import graph_from_module

    return graph_from_module(m, shape)


def test_split_to_sequence_and_a_computed_zero_bias(tmp_path: Path) -> None:
    """What the dynamo exporter writes with optimize=False: torch.split as a sequence, and a zero bias
    built from shapes for a bias-free convolution (no parameters)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    w1 = helper.make_tensor("w1", TensorProto.FLOAT, [4, 4, 3, 3], [0.1] * 144)
    w2 = helper.make_tensor("w2", TensorProto.FLOAT, [4, 8, 1, 1], [0.1] * 32)
    split = helper.make_tensor("split", TensorProto.INT64, [2], [4, 4])
    one = helper.make_tensor("one", TensorProto.INT64, [], [1])
    zero = helper.make_tensor("zero", TensorProto.INT64, [], [0])
    nodes = [helper.make_node("SplitToSequence", ["x", "split"], ["seq"], axis=1, name="split"),
             helper.make_node("SequenceAt", ["seq", "zero"], ["p0"], name="at0"),
             helper.make_node("SequenceAt", ["seq", "one"], ["p1"], name="at1"),
             helper.make_node("Shape", ["w1"], ["ws"], start=0, end=1, name="ws"),
             helper.make_node("ConstantOfShape", ["ws"], ["b"], name="zeros",
                              value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.0])),
             helper.make_node("Conv", ["p1", "w1", "b"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Concat", ["p0", "c"], ["cat"], axis=1, name="cat"),
             helper.make_node("Conv", ["cat", "w2"], ["y"], name="proj")]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], [w1, w2, split, one, zero]),
                              opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "seq.onnx"
    onnx.save(model, str(path))
    a = analyze_graph(load_onnx(str(path)))
    assert a.unknown_ops == ()
    assert a.layer("conv").params == 144 and a.totals.params == 144 + 32
    assert a.totals.macs == 4 * 4 * 9 * 64 + 4 * 8 * 64
    assert a.layer("proj").rf_max == (3, 3) and a.layer("proj").rf_min == (1, 1)


def test_a_pytorch_export_without_scopes_is_named_by_its_parameters(tmp_path: Path) -> None:
    """A dynamo export converted to opset 17 loses its scope metadata; the weights keep their paths."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    w1 = helper.make_tensor("body.0.weight", TensorProto.FLOAT, [8, 3, 3, 3], [0.1] * 216)
    w2 = helper.make_tensor("head.weight", TensorProto.FLOAT, [4, 8, 1, 1], [0.1] * 32)
    nodes = [helper.make_node("Conv", ["x", "body.0.weight"], ["a"], pads=[1, 1, 1, 1], name="node_Conv_3"),
             helper.make_node("Relu", ["a"], ["r"], name="node_Relu_4"),
             helper.make_node("Conv", ["r", "head.weight"], ["y"], name="node_conv2d_1")]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], [w1, w2]),
                              opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "noscopes.onnx"
    onnx.save(model, str(path))
    a = analyze_graph(load_onnx(str(path)))
    assert [r.name for r in a.layers if r.op == "conv"] == ["body.0", "head"]
    assert a.layer("head").rf_max == (3, 3)


class _FixedResize(nn.Module):
    """An FPN-style merge: the coarse map resized to the fine one's size, which the exporter records
    as a constant (no dynamic axes)."""

    def __init__(self) -> None:
        super().__init__()
        self.c2, self.c3, self.c4 = nn.Conv2d(3, 16, 3, 2, 1), nn.Conv2d(16, 32, 3, 2, 1), nn.Conv2d(32, 64, 3, 2, 1)
        self.lat2, self.lat3, self.lat4 = nn.Conv2d(16, 24, 1), nn.Conv2d(32, 24, 1), nn.Conv2d(64, 24, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c2 = self.c2(x)
        c3 = self.c3(c2)
        p3 = self.lat3(c3) + F.interpolate(self.lat4(self.c4(c3)), size=c3.shape[-2:], mode="nearest")
        return self.lat2(c2) + F.interpolate(p3, size=c2.shape[-2:], mode="nearest")


class _FixedAdd(nn.Module):
    """A map added to a resize fixed at export time: shape inference gives the add a shape, but its
    inputs no longer fit at another size."""

    def __init__(self) -> None:
        super().__init__()
        self.fine = nn.Conv2d(3, 8, 3, padding=1)
        self.coarse = nn.Conv2d(8, 8, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.fine(x)
        return f + F.interpolate(self.coarse(f), size=(32, 32))


@pytest.mark.parametrize("model, said", [(_FixedResize, "ONNX shape inference gives no shape"),
                                         (_FixedAdd, "layer 'add': Add (axis 1 mismatch at add")])
def test_a_fixed_size_export_at_another_size_says_why(model: type[nn.Module], said: str, tmp_path: Path) -> None:
    path = tmp_path / "fixed.onnx"
    with warnings.catch_warnings():  # as exported by default (constant folding on)
        warnings.simplefilter("ignore")
        torch.onnx.export(model().eval(), (torch.zeros(1, 3, 32, 32),), str(path), dynamo=False)
    assert not analyze_graph(load_onnx(str(path))).unknown_ops
    with pytest.raises(InputError) as e:
        load_onnx(str(path), (3, 64, 64))
    msg = str(e.value)
    assert said in msg and "is not supported" not in msg
    assert "exported for input [3, 32, 32] with fixed sizes" in msg


class PlainNorms(nn.Module):
    """Norms without learnable scale or bias: the exporters write their ones and zeros as constants."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16, affine=False)
        self.inn = nn.InstanceNorm2d(16)
        self.gn = nn.GroupNorm(4, 16, affine=False)
        self.ln = nn.LayerNorm(16, elementwise_affine=False)
        self.gn2 = nn.GroupNorm(4, 16)  # learnable: counted (trained values: at their initial ones and
        nn.init.normal_(self.gn2.weight)  # zeros the dynamo exporter merges them with the constants)
        nn.init.normal_(self.gn2.bias)
        self.b = nn.Conv2d(16, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.gn(self.inn(self.bn(self.a(x))))
        x = self.ln(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.b(self.gn2(x))


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_norms_without_learnable_affine_have_no_parameters(exporter: str, tmp_path: Path) -> None:
    m = PlainNorms()
    write = export if exporter == "torchscript" else export_dynamo
    a = analyze_graph(load_onnx(str(write(m, (3, 16, 16), tmp_path / "n.onnx"))))
    assert a.totals.params == sum(p.numel() for p in m.parameters())
    assert a.totals.macs == analyze_graph(graph_from_module(m, (3, 16, 16))).totals.macs


class StdConv(nn.Conv2d):
    """A weight-standardised convolution (BiT): the exporter writes the standardisation of the
    weights as ReduceMean, Sub, Pow, Sqrt, Div on constants, which fold to the weights."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        w = (w - w.mean(dim=(1, 2, 3), keepdim=True)) / (w.std(dim=(1, 2, 3), keepdim=True) + 1e-5)
        return F.conv2d(x, w, self.bias, self.stride, self.padding)


class Broadcasts(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.c = StdConv(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.a(x)
        return self.c(y + y.mean(1, keepdim=True).expand(-1, 8, -1, -1))  # one channel grown to eight


def test_folded_weight_standardisation_and_a_channel_expand(tmp_path: Path) -> None:
    m = Broadcasts()
    path = export(m, (3, 16, 16), tmp_path / "b.onnx")
    a = analyze_graph(load_onnx(str(path)))
    assert a.totals.params == sum(p.numel() for p in m.parameters()) and a.layer("a").op == "conv"
    mine = analyze_graph(graph_from_module(m, (3, 16, 16)))
    assert a.unknown_ops == mine.unknown_ops == () and a.totals.macs == mine.totals.macs
    assert a.layer("c").rf_max == mine.layer("c").rf_max == (5, 5)  # a mean over channels keeps positions
    b = analyze_graph(load_onnx(str(path), input_shape=(3, 24, 24)))  # the expand's shape computed again
    assert b.unknown_ops == () and b.layer("c").out_shape == (8, 24, 24)


class Shift(nn.Module):
    """A temporal-shift-style module: a zero map with a slice written into it (ScatterND in ONNX)."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.c = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.a(x)
        out = torch.zeros_like(y)
        out[:, :, 1:] = y[:, :, :-1]
        return self.c(out)


def test_a_fixed_size_export_whose_constants_do_not_fit_another_size_is_never_an_internal_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = export(Shift(), (3, 16, 16), tmp_path / "s.onnx")
    assert main(["analyze", str(path), "--device", "raspi4", "--json", "-"]) == 0  # the feasible range tries others
    d = json.loads(capsys.readouterr().out)
    assert [u["target"] for u in d["unknown_ops"]] == ["ScatterND"]
    assert main(["analyze", str(path), "--input", "3,20,20"]) == 2
    err = capsys.readouterr().err
    assert "shape mismatch" in err and "exported for input [3, 16, 16]" in err and "internal error" not in err


class Collide(nn.Module):
    """Submodules called like the functional ops used before them (F.relu, ``+``)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.add = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 1)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.conv1(x))
        return self.relu(self.add(y + y))


def test_a_functional_op_never_takes_a_modules_path_in_either_front_end(tmp_path: Path) -> None:
    m = Collide()
    want = [("conv1", "conv"), ("relu_1", "act"), ("add_1", "add"), ("add", "conv"), ("relu", "act")]
    g = graph_from_module(m, (3, 8, 8))
    assert [(n.name, n.op.value) for n in g.nodes[1:]] == want
    o = load_onnx(str(export(m, (3, 8, 8), tmp_path / "c.onnx")))
    assert [(n.name, n.op.value) for n in o.nodes[1:]] == want


class WrittenHard(nn.Module):
    """MobileNetV3's activations written out, as most repositories do."""

    def __init__(self, form: str) -> None:
        super().__init__()
        self.form = form
        self.c1, self.c2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.c1(x)
        if self.form == "relu6":
            y = y * F.relu6(y + 3) / 6
        elif self.form == "clamp":
            y = y * (torch.clamp(y + 3, 0, 6) / 6)
        else:  # an SE-style hard-sigmoid gate, not a swish
            y = y * (F.relu6(self.c2(y) + 3.0) / 6.0)
        return self.c2(y)


@pytest.mark.parametrize("form, fn", [("relu6", "hswish"), ("clamp", "hswish"), ("gate", "hsigmoid")])
def test_hard_swish_and_sigmoid_written_out_are_one_activation(form: str, fn: str, tmp_path: Path) -> None:
    m = WrittenHard(form)
    for g in (graph_from_module(m, (3, 8, 8)), load_onnx(str(export(m, (3, 8, 8), tmp_path / "h.onnx")))):
        acts = [n.attrs.fn for n in g.nodes if n.op is OpKind.ACT]  # type: ignore[union-attr]
        assert acts == [fn] and not [n for n in g.nodes if n.op in (OpKind.CONSTANT, OpKind.ADD, OpKind.SCALE)]
        assert analyze_graph(g).totals.params == sum(p.numel() for p in m.parameters())


class ConstAndStrided(nn.Module):
    """A Linear on a learned parameter (a constant to the graph) added to the map, and a strided slice
    (YOLOv5's Focus)."""

    def __init__(self) -> None:
        super().__init__()
        self.pos = nn.Parameter(torch.randn(8, 8))
        self.mlp = nn.Linear(8, 8)
        self.c1, self.c2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.c1(x) + self.mlp(self.pos)  # (8, 8) broadcast over (B, 8, 8, 8)
        return self.c2(y[:, :, ::2, ::2])


def test_constants_from_parameters_and_strided_slices_are_not_refused(tmp_path: Path) -> None:
    m = ConstAndStrided()
    t = analyze_graph(graph_from_module(m, (3, 8, 8)))
    a = analyze_graph(load_onnx(str(export(m, (3, 8, 8), tmp_path / "c.onnx"))))
    assert a.totals.params == t.totals.params == sum(p.numel() for p in m.parameters())
    assert not a.unknown_ops and not t.unknown_ops  # the strided slice is a 1-wide window with stride 2
    assert a.layers[-1].out_shape == (8, 4, 4) and a.layers[-1].rf_max == t.layers[-1].rf_max == (7, 7)


def test_a_fixed_size_file_analysed_at_another_size_says_the_file_would_refuse_it(tmp_path: Path,
                                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """--input at another size than the file fixes: analysed there (another resolution is what the user
    asks to see), with a note that ONNX Runtime would refuse that input; a dynamic file has no note."""
    m = make("squeezenet")
    fixed = export(m, (3, 64, 64), tmp_path / "fixed.onnx")
    dynamic = export(m, (3, 64, 64), tmp_path / "dyn.onnx", input_names=["img"],
                     dynamic_axes={"img": {0: "N", 2: "H", 3: "W"}})
    note = ("the file fixes its input at [3, 64, 64]; analysed at [3, 96, 80] as asked (the ONNX model itself "
            "accepts only its own size)")
    a = analyze_graph(load_onnx(str(fixed), (3, 96, 80)))
    assert a.input == (3, 96, 80) and note in a.notes
    assert not any("fixes its input" in n for n in analyze_graph(load_onnx(str(fixed))).notes)
    assert not any("fixes its input" in n for n in analyze_graph(load_onnx(str(fixed), (3, 64, 64))).notes)
    assert not any("fixes its input" in n for n in analyze_graph(load_onnx(str(dynamic), (3, 96, 80))).notes)
    assert main(["analyze", str(fixed), "--input", "3,96,80", "--json", "-"]) == 0
    assert note in json.loads(capsys.readouterr().out)["notes"]


def test_buffers_read_as_operands_count_as_parameters_with_a_note(tmp_path: Path) -> None:
    """ONNX keeps a buffer as it keeps a parameter: a position table added, mean and std subtracted
    and divided by, a sampling grid baked in by the exporter, all count (as before) and one note says
    how many values and which tensors; a conv's weights, and a GroupNorm's affine written out as Mul
    and Add, are not in it."""

    class Normalised(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
            self.conv = nn.Conv2d(3, 96, 4, 4)
            self.register_buffer("pos", torch.randn(1, 96, 16, 16))
            self.gn = nn.GroupNorm(4, 96)
            nn.init.normal_(self.gn.weight)  # not ones and zeros, which the dynamo exporter merges with its own
            nn.init.normal_(self.gn.bias)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.gn(self.conv((x - self.mean) / self.std) + self.pos)

    class Warped(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            grid = F.affine_grid(torch.tensor([[[1.0, 0.1, 0.0], [0.0, 1.0, 0.0]]]), [1, 3, 32, 32], align_corners=False)
            return self.conv(F.grid_sample(x, grid, align_corners=False))

    m = Normalised()
    weights = sum(p.numel() for p in m.parameters())
    for path in (export(m, (3, 64, 64), tmp_path / "n.onnx"), export_dynamo(m, (3, 64, 64), tmp_path / "nd.onnx")):
        a = analyze_graph(load_onnx(str(path)))
        assert a.totals.params == weights + 24576 + 6  # counted, as ONNX cannot tell them apart
        assert [n for n in a.notes if "buffers" in n] == [(
            "24582 values in 3 constant tensor(s) that are no conv, linear or norm layer's weights (pos, mean, std) "
            "count as parameters: ONNX does not tell parameters from buffers")]
    grid = analyze_graph(load_onnx(str(export_dynamo(Warped(), (3, 32, 32), tmp_path / "w.onnx"))))
    assert any(n.startswith("2048 values in 1 constant tensor(s)") for n in grid.notes)
    plain = analyze_graph(load_onnx(str(export(make("squeezenet"), (3, 64, 64), tmp_path / "sq.onnx"))))
    assert not any("buffers" in n for n in plain.notes)


def test_batch_norms_the_exporter_folded_into_convolutions_are_noted(tmp_path: Path) -> None:
    import warnings

    from torch import nn

    m = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                      nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.Conv2d(8, 4, 1)).eval()
    numel = sum(p.numel() for p in m.parameters())
    got = {}
    for fold in (True, False):
        path = tmp_path / f"fold{fold}.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(m, (torch.zeros(1, 3, 16, 16),), str(path), dynamo=False, do_constant_folding=fold)
        got[fold] = analyze_graph(load_onnx(str(path)))
    folded = [n for n in got[True].notes if "hold a batch norm the exporter folded" in n]
    assert got[True].totals.params == numel - 2 * 8 - 2 * 8 + 8  # two norms gone, the second conv's bias new
    assert len(folded) == 1 and folded[0].startswith("2 convolution(s)") and "do_constant_folding=False" in folded[0]
    assert got[False].totals.params == numel and not any("folded" in n for n in got[False].notes)


def test_a_fixed_size_export_leaves_the_feasible_low_end_unknown_where_it_cannot_follow(tmp_path: Path) -> None:
    """Exported at 64 px with its resizes' sizes as constants, the FPN cannot be followed to 49 px,
    where the model itself is feasible: lo is unknown, with a note, not the first size that fits."""
    import convscope
    from test_from_torch import _DeepFPN

    lo = convscope.analyze(_DeepFPN(), input=(3, 64, 64)).feasible_resolution[0]
    fixed = export(_DeepFPN(), (3, 64, 64), tmp_path / "fixed.onnx")
    a = convscope.analyze(str(fixed))
    assert a.feasible_resolution[0] is None
    assert any("low end is unknown" in n and "dynamic height and width" in n for n in a.notes)
    dynamic = tmp_path / "dynamic.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_DeepFPN().eval(), (torch.zeros(1, 3, 64, 64),), str(dynamic), dynamo=False,
                          input_names=["x"], dynamic_axes={"x": {2: "h", 3: "w"}})
    assert convscope.analyze(str(dynamic), input=(3, 64, 64)).feasible_resolution[0] == lo


class _Circular(nn.Module):
    """Circular padding, which opset 17 writes as slices and a concat, before a resampling: each
    position is followed back through the concat, where a window across the seam reads both pieces."""

    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Conv2d(3, 4, 3, padding=1, padding_mode="circular")
        self.pool = nn.AvgPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(self.pool(self.c(x)), scale_factor=2, mode="bilinear", align_corners=True)


def test_circular_padding_as_slices_and_a_concat_keeps_the_narrowest_path_whole(tmp_path: Path) -> None:
    g = load_onnx(str(export(_Circular(), (3, 32, 32), tmp_path / "circ.onnx")))
    assert any(n.op is OpKind.CONCAT for n in g.nodes)  # the wrap is written out
    up = analyze_graph(g).layers[-1]
    m = _Circular().double().eval()
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(p.abs() + 0.01)
    widths = []
    for row in range(32):  # the hull of every output row's input-gradient support (centre column)
        x = torch.ones(1, 3, 32, 32, dtype=torch.float64, requires_grad=True)
        m(x)[0, :, row, 16].sum().backward()
        rows = torch.nonzero(x.grad[0].abs().sum(dim=(0, 2)) > 0).flatten()  # type: ignore[union-attr]
        widths.append(int(rows.max() - rows.min() + 1))
    # no position reads fewer rows than a 3x3 conv, a 2x2 pool and a bilinear tap (was 1); a border
    # position reads the far side through the wrap
    assert tuple(up.rf_min) == (min(widths), min(widths)) == (6, 6)
    assert tuple(up.rf_max) == (max(widths), max(widths)) == (32, 32)

"""The latency model on hand-made profiles: roofline corners, overhead, fusion rules, batch, dtype;
the shipped profiles; profile YAML errors; the tiers' entry point ``predict``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from convscope.analyses._latency_kernels import OpClass, kernels
from convscope.analyses._latency_profiles import parse_profile
from convscope.analyses.cost import cost
from convscope.analyses.latency import analytic, predict, profile_names, load_profile
from convscope.api import analyze, load_graph
from convscope.cli import main
from convscope.errors import InputError, SpecError
from convscope.frontends.from_spec import graph_from_spec_text

NB201 = "zoo:nasbench201:"
ALL_NONE = NB201 + "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
ALL_SKIP = NB201 + "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|"


@pytest.fixture(autouse=True)
def _empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVSCOPE_CACHE", str(tmp_path / "cache"))


def profile(conv: float = 100, grouped: float = 10, matmul: float = 50, elem: float = 5, bw: float = 10,
            over: float = 20, extra: str = "") -> object:
    return parse_profile(f"""
name: handmade
peak_gflops: {{conv: {conv}, grouped: {grouped}, matmul: {matmul}, elementwise: {elem}}}
bandwidth_gbs: {bw}
overhead_us: {{torch: {over}, onnxruntime: {over}, tflite: {over}}}
dtypes: {{fp32: 1.0, fp16: 2.0}}
uncertainty: [0.8, 1.25]
{extra}""", "handmade.yaml")


def net(layers: str, input: str = "[16, 32, 32]") -> object:
    return graph_from_spec_text(f"name: t\ninput: {input}\nlayers:\n{layers}", file="t.yaml")


BIG_CONV = net("  - conv: {out: 256, k: 3, name: c}\n", "[256, 56, 56]")
BIG_RELU = net("  - relu: {name: r}\n", "[64, 128, 128]")
DW = net("  - dwconv: {k: 3, name: d}\n", "[128, 56, 56]")


def test_compute_bound_corner_is_flops_over_peak_plus_overhead() -> None:
    p = profile(conv=100, bw=1e6, over=20)
    pred = analytic(BIG_CONV, p)
    macs = 256 * 256 * 9 * 56 * 56
    assert pred.ms == pytest.approx((2 * macs / 100e9 + 20e-6) * 1e3, rel=1e-9)


def test_memory_bound_corner_is_bytes_over_bandwidth_plus_overhead() -> None:
    p = profile(elem=1e6, bw=10, over=20)
    pred = analytic(BIG_RELU, p)
    n = 64 * 128 * 128
    assert pred.ms == pytest.approx((2 * 4 * n / 10e9 + 20e-6) * 1e3, rel=1e-9)


def test_the_slower_roof_wins() -> None:
    fast_mem, slow_mem = profile(conv=100, bw=1e6), profile(conv=100, bw=0.01)
    c = cost(BIG_CONV)
    assert analytic(BIG_CONV, slow_mem).ms == pytest.approx((c.bytes_moved / 0.01e9 + 20e-6) * 1e3, rel=1e-9)
    assert analytic(BIG_CONV, slow_mem).ms > analytic(BIG_CONV, fast_mem).ms


def test_small_layers_are_overhead_dominated() -> None:
    layers = "".join("  - relu\n" for _ in range(50))
    tiny = net(layers, "[4, 2, 2]")
    pred = analytic(tiny, profile(over=20))
    assert pred.ms == pytest.approx(50 * 20e-3, rel=1e-3)
    # MACs say nothing here: twice the layers, twice the time, zero MACs either way
    assert analytic(net(layers * 2, "[4, 2, 2]"), profile(over=20)).ms == pytest.approx(2 * pred.ms, rel=1e-3)


def test_depthwise_runs_at_the_grouped_peak() -> None:
    ks = kernels(DW, "torch")
    assert ks[0].op_class is OpClass.GROUPED
    slow, fast = profile(grouped=1, bw=1e6), profile(grouped=1000, bw=1e6)
    assert analytic(DW, slow).ms > 100 * (analytic(DW, fast).ms - 0.02)


def test_batch_scales_work_but_not_overhead() -> None:
    p = profile(conv=100, bw=1e6, over=20)
    one, four = analytic(BIG_CONV, p, batch=1).ms, analytic(BIG_CONV, p, batch=4).ms
    assert four - 0.02 == pytest.approx(4 * (one - 0.02), rel=1e-9)


def test_dtype_factor_and_unsupported_dtype() -> None:
    p = profile(conv=100, bw=1e6, over=20)
    assert analytic(BIG_CONV, p, dtype="fp16").ms - 0.02 == pytest.approx((analytic(BIG_CONV, p).ms - 0.02) / 2)
    with pytest.raises(InputError, match="does not support int8"):
        analytic(BIG_CONV, p, dtype="int8")


def test_eager_launches_every_op_fused_runtimes_fewer() -> None:
    g = load_graph("zoo:resnet18-cifar")
    torch_k, ort_k, tfl_k = (kernels(g, b) for b in ("torch", "onnxruntime", "tflite"))
    views = {"identity", "dropout", "flatten", "reshape", "input"}
    assert len(torch_k) == sum(1 for n in g.nodes if n.op.value not in views)
    # ONNX Runtime: conv+bn(+add)+relu is one kernel: 20 convs, the pooling, the classifier
    assert len(ort_k) == 22
    assert ("layer1.0.conv2", "layer1.0.bn2", "layer1.0.add", "layer1.0.relu") in [k.nodes for k in ort_k]
    assert ("layer1.0.conv1", "layer1.0.bn1", "layer1.0.relu1") in [k.nodes for k in tfl_k]


def test_folded_bn_costs_nothing_and_per_layer_adds_up() -> None:
    g = load_graph("zoo:resnet18-cifar")
    pred = analytic(g, profile(), backend="onnxruntime")
    per = dict(pred.per_layer)
    assert per["layer1.0.bn1"] == 0.0 and per["layer1.0.conv1"] > 0
    assert sum(per.values()) == pytest.approx(pred.ms)
    assert set(per) == {n.name for n in g.nodes if n.op.value != "input"}


def test_constant_folding_removes_a_disconnected_cell() -> None:
    p = profile()
    none_tfl = analytic(load_graph(ALL_NONE), p, backend="tflite")
    assert none_tfl.ms == 0.0  # the output is a constant: the converter folds the whole network
    assert analytic(load_graph(ALL_NONE), p, backend="torch").ms > analytic(load_graph(ALL_SKIP), p, backend="torch").ms


def test_nasbench201_reference_macs() -> None:
    assert cost(load_graph("zoo:nasbench201")).total.macs == pytest.approx(220.12e6, abs=0.005e6)
    assert cost(load_graph(ALL_NONE)).total.macs == pytest.approx(7.78e6, abs=0.005e6)


@pytest.mark.parametrize("name", profile_names())
def test_shipped_profiles(name: str) -> None:
    p = load_profile(name)
    assert p.sources, f"{name} cites no source"
    assert p.overhead(p.backend) > 0
    pred = predict(load_graph("zoo:mobilenetv2"), device=name, backend=p.backend)
    assert pred is not None and pred.tier == "analytic" and math.isfinite(pred.ms) and pred.ms > 0
    assert pred.low_ms < pred.ms < pred.high_ms
    text = (Path(__file__).parents[1] / "convscope/analyses/profiles" / f"{name}.yaml").read_text()
    assert text.count("#") >= 5, "every number needs its source in a comment"


@pytest.mark.parametrize("text,where,what", [
    ("name: x\npeak_gflops: {conv: 1, grouped: 1, matmul: 1, elementwise: 1}\nbandwidth_gbs: 1\n"
     "overhead_us: {torch: 1}\nbandwith: 3\n", ":5:1", "unknown key 'bandwith' (did you mean 'bandwidth_gbs'?)"),
    ("name: x\npeak_gflops: {conv: 1, matmul: 1, elementwise: 1}\nbandwidth_gbs: 1\noverhead_us: {torch: 1}\n",
     ":2:14", "lacks grouped"),
    ("name: x\npeak_gflops: {conv: 1, grouped: 1, matmul: 1, elementwise: 1}\nbandwidth_gbs: -2\n"
     "overhead_us: {torch: 1}\n", ":3:16", "bandwidth_gbs must be a positive finite number, got -2"),
    ("name: x\npeak_gflops: {conv: 1, grouped: 1, matmul: 1, elementwise: fast}\nbandwidth_gbs: 1\n"
     "overhead_us: {torch: 1}\n", ":2:", "peak_gflops.elementwise must be a positive finite number, got 'fast'"),
    ("name: x\npeak_gflops: {conv: 1, grouped: 1, matmul: 1, elementwise: 1}\nbandwidth_gbs: 1\n"
     "overhead_us: {torch: .inf}\n", ":4:22", "overhead_us.torch must be a finite number >= 0, got .inf (infinite"),
    ("name: x\npeak_gflops: {conv: 1, grouped: 1, matmul: 1, elementwise: 1}\nbandwidth_gbs: 1e-320\n"
     "overhead_us: {torch: 1}\n", ":3:16", "bandwidth_gbs must be between 1e-06 and 1e+06, got 1e-320"),
    ("name: x\npeak_gflops: {conv: 1e-320, grouped: 1, matmul: 1, elementwise: 1}\nbandwidth_gbs: 1\n"
     "overhead_us: {torch: 1}\n", ":2:21", "peak_gflops.conv must be between 1e-06 and 1e+09, got 1e-320"),
    ("name: x\npeak_gflops: {conv: 1, grouped: 1, matmul: 1, elementwise: 1}\nbandwidth_gbs: 1\n"
     "overhead_us: {torch: 1e308}\n", ":4:22", "overhead_us.torch must be between 0 and 1e+07, got 1e+308"),
    ("name: x\npeak_gflops: {conv: 1, grouped: 1, matmul: 1, elementwise: 1}\nbandwidth_gbs: 1\n"
     "overhead_us: {torch: 1}\nuncertainty: [0.5, .inf]\n", ":5:14", "finite factors"),
    ("name: [a, b]\npeak_gflops: {conv: 1, grouped: 1, matmul: 1, elementwise: 1}\nbandwidth_gbs: 1\n"
     "overhead_us: {torch: 1}\n", ":1:7", "'name' must be a non-empty string"),
    ("name: x\npeak_gflops: {conv: 1, grouped: 1, matmul: 1, elementwise: 1}\nbandwidth_gbs: 1\n"
     "overhead_us: {pytorch: 1}\n", ":4:15", "unknown overhead_us entry 'pytorch'"),
    ("name: x\npeak_gflops: {conv: 1, grouped: 1, matmul: 1, elementwise: 1}\nbandwidth_gbs: 1\n"
     "overhead_us: {torch: 1}\nuncertainty: [2, 3]\n", ":5:14", "0 < low <= 1 <= high"),
    ("name: x\nbandwidth_gbs: 1\noverhead_us: {torch: 1}\n", ":1:1", "missing required key 'peak_gflops'"),
    ("name: x\npeak_gflops: {conv: 1, grouped: 1, matmul: 1, elementwise: 1}\nbandwidth_gbs: 1\n"
     "overhead_us: {}\n", ":4:1", "'overhead_us' needs at least one backend"),
    ("name: x\npeak_gflops: {conv: 1, grouped: 1, matmul: 1, elementwise: 1}\nbandwidth_gbs: 1\n"
     "overhead_us: {torch: 1}\nsources: [1, {a: 2}]\n", ":5:10", "'sources' must be a list of strings"),
    ("name: x\npeak_gflops: {conv: 1, grouped: 1, matmul: 1, elementwise: 1}\nbandwidth_gbs: 1\n"
     "overhead_us: {torch: 1}\nbackend:\n", ":5:", "'backend' must name a runtime (torch), got null"),
])
def test_profile_errors_name_file_line_and_value(tmp_path: Path, text: str, where: str, what: str) -> None:
    f = tmp_path / "board.yaml"
    f.write_text(text)
    with pytest.raises(SpecError) as e:
        load_profile(str(f))
    assert f"board.yaml{where}" in str(e.value) and what in str(e.value)


def test_profile_numbers_in_exponent_form_and_a_missing_dtype_names_the_file(tmp_path: Path) -> None:
    f = tmp_path / "board.yaml"  # YAML 1.1 reads 1e3 (no decimal point) as a string
    f.write_text("name: b\npeak_gflops: {conv: 1e3, grouped: 1, matmul: 1, elementwise: 1}\nbandwidth_gbs: 2e1\n"
                 "overhead_us: {torch: 1}\n")
    prof = load_profile(str(f))
    assert prof.bandwidth == 20e9 and dict(prof.peak_flops)[OpClass.CONV] == 1e12
    with pytest.raises(InputError, match=r"'b' \(.*board.yaml\) does not support int8"):
        prof.dtype_factor("int8")


def test_a_profile_or_timings_file_that_is_not_text_is_a_clear_error(tmp_path: Path) -> None:
    from convscope.analyses._latency_fitted import read_csv

    (tmp_path / "board.yaml").write_bytes(b"name: \xff\xfe\n")
    with pytest.raises(InputError, match="board.yaml: cannot read the device profile: not UTF-8 text"):
        load_profile(str(tmp_path / "board.yaml"))
    (tmp_path / "t.csv").write_bytes(b"network,latency_ms\n\x80,1\n")
    with pytest.raises(InputError, match="t.csv: cannot read: not UTF-8 text"):
        read_csv(tmp_path / "t.csv")
    (tmp_path / "t.csv").write_text("network,latency_ms,batch\nzoo:allconv,1,\u00b2\n")  # '²'.isdigit()
    with pytest.raises(SpecError, match="t.csv:2.*batch must be a positive integer, got '\u00b2'"):
        read_csv(tmp_path / "t.csv")


def test_unknown_profile_name_suggests() -> None:
    with pytest.raises(InputError, match="did you mean raspi4"):
        load_profile("raspi")


def test_no_calibration_means_no_prediction_or_a_clear_error() -> None:
    g = load_graph("zoo:allconv")
    assert predict(g) is None
    assert analyze("zoo:allconv").latency is None
    with pytest.raises(InputError, match="run `convscope calibrate --backend torch --threads [0-9]+` first"):
        predict(g, device="local")
    with pytest.raises(InputError, match="run `convscope calibrate --backend torch --threads [0-9]+ --dtype fp16`"):
        predict(g, device="local", dtype="fp16")
    with pytest.raises(InputError, match="no int8 timings: `convscope calibrate` times fp32, fp16, bf16"):
        predict(g, device="local", dtype="int8")
    with pytest.raises(InputError, match=r"--fit \(fit=\) needs a device profile to fit: --device \(device=\) NAME"):
        predict(g, fit="x.csv")
    with pytest.raises(InputError, match="unknown backend 'tensorrt'"):
        predict(g, device="raspi4", backend="tensorrt")


def test_analyze_attaches_the_prediction_per_layer() -> None:
    a = analyze("zoo:resnet18-cifar", device="desktop-cpu")
    assert a.latency is not None and a.latency.tier == "analytic" and a.latency.device == "desktop-cpu"
    d = a.to_dict()
    assert set(d["latency"]) >= {"tier", "device", "backend", "batch", "ms", "low_ms", "high_ms"}
    assert all("ms" in r for r in d["layers"])
    assert sum(r["ms"] for r in d["layers"]) == pytest.approx(d["latency"]["ms"])


def test_cli_device_and_backend(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["analyze", "zoo:allconv", "--device", "raspi4", "--json", "-"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["latency"]["backend"] == "tflite"  # the profile's own runtime
    assert main(["analyze", "zoo:allconv", "--device", "raspi4", "--backend", "torch", "--json", "-"]) == 0
    assert json.loads(capsys.readouterr().out)["latency"]["ms"] > d["latency"]["ms"]
    assert main(["analyze", "zoo:allconv", "--device", "nope"]) == 2
    assert "'nope' is not a device profile" in capsys.readouterr().err
    assert main(["analyze", "zoo:allconv", "--res", "32,64", "--device", "raspi4", "--width", "150"]) == 0
    assert "tier analytic · raspi4 · tflite" in capsys.readouterr().out


def test_attention_times_its_softmax_as_well_as_its_products() -> None:
    import torch.nn as nn

    from convscope.frontends.from_torch import graph_from_module
    from convscope.ir.ops import OpKind

    class Att(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c, self.att = nn.Conv2d(3, 8, 1), nn.MultiheadAttention(8, 2, batch_first=True)

        def forward(self, x):  # type: ignore[no-untyped-def]
            t = self.c(x).flatten(2).transpose(1, 2)
            return self.att(t, t, t, need_weights=False)[0]

    g = graph_from_module(Att(), (3, 8, 8))
    node = next(n for n in g.nodes if n.op is OpKind.ATTENTION)
    nc = cost(g).of(node.name).cost
    assert nc.macs > 0 and nc.elementwise_ops > 0
    k = next(k for k in kernels(g, "torch") if k.name == node.name)
    assert k.flops_of(OpClass.MATMUL) == 2 * nc.macs and k.flops_of(OpClass.ELEMENTWISE) == nc.elementwise_ops
    p = profile(matmul=1e6, elem=0.001, bw=1e6, over=0.001)  # the softmax dominates
    row = dict(analytic(g, p).per_layer)[node.name]
    assert row == pytest.approx(nc.elementwise_ops / 0.001e9 * 1e3, rel=1e-3)


def test_a_linear_layer_and_its_relu_are_one_kernel_where_the_runtime_fuses_them() -> None:
    g = net("  - gap\n  - linear: {out: 32, name: fc}\n  - relu: {name: r}\n  - dropout\n  - linear: {out: 4}\n",
            "[8, 4, 4]")
    assert [k.nodes for k in kernels(g, "tflite") if k.name == "fc"] == [("fc", "r")]
    assert [k.nodes for k in kernels(g, "onnxruntime") if k.name == "fc"] == [("fc", "r")]
    assert [k.nodes for k in kernels(g, "torch") if k.name == "fc"] == [("fc",)]
    assert cost(g).of("layers.3.dropout").cost.elementwise_ops == 0  # an identity at inference


def test_a_profile_may_have_no_per_kernel_overhead() -> None:
    p = profile(conv=100, bw=1e6, over=0)
    macs = 256 * 256 * 9 * 56 * 56
    assert analytic(BIG_CONV, p).ms == pytest.approx(2 * macs / 100e9 * 1e3, rel=1e-9)


def test_a_grouped_conv_with_wide_groups_runs_like_a_dense_one_on_a_cpu_runtime() -> None:
    halves = net("  - conv: {out: 256, k: 3, g: 2, name: c}\n", "[96, 27, 27]")  # AlexNet's conv2
    ks = {b: kernels(halves, b)[0].op_class for b in ("torch", "onnxruntime", "tflite", "cuda")}
    assert ks == {"torch": OpClass.CONV, "onnxruntime": OpClass.CONV, "tflite": OpClass.CONV, "cuda": OpClass.GROUPED}
    thin = net("  - conv: {out: 128, k: 3, g: 32, name: c}\n", "[128, 28, 28]")  # ResNeXt's 4 per group
    assert all(kernels(thin, b)[0].op_class is OpClass.GROUPED for b in ("torch", "tflite", "cuda"))
    assert kernels(DW, "tflite")[0].op_class is OpClass.GROUPED

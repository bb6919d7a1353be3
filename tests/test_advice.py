"""`convscope suggest` as a user runs it: the API object, the ordering, latency, JSON, the table,
--write, and errors."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

import convscope
from convscope.advice_api import origin_of, write_variants
from convscope.analyses import advice as advice_mod
from convscope.analyses.advice import suggest_graph
from convscope.api import analyze
from convscope.cli import main
from convscope.frontends.from_spec import graph_from_spec_text
from convscope.ir import ops as O
from convscope.ir.graph import GraphBuilder
from convscope.ir.ops import OpKind
from convscope.reports.suggest_terminal import render_advice
from convscope.results import LatencyPrediction
from convscope.zoo import load_zoo


def test_api_returns_an_object_sorted_by_macs_saved() -> None:
    adv = convscope.suggest("zoo:vgg16-cifar", input=(3, 32, 32))
    assert adv.model == "vgg16-cifar" and adv.input == (3, 32, 32) and adv.origin == "zoo"
    assert adv.sorted_by == "macs"
    saved = [s.macs_saved for s in adv.recommended()]
    assert saved == sorted(saved, reverse=True) and saved[0] > 0 > saved[-1]
    assert {s.key for s in adv.suggestions} >= {"truncate", "grouped-conv", "depthwise-separable", "bottleneck",
                                                 "width-0.5", "width-0.75", "maxpool-to-conv",
                                                 "maxpool-into-stride", "remove-downsampling",
                                                 "move-downsampling", "resolution"}
    t = adv.suggestion("truncate")
    assert t.analysis.totals.params == analyze(t.graph).totals.params
    assert t.params_saved == adv.base.totals.params - t.analysis.totals.params
    with pytest.raises(KeyError, match="no suggestion"):
        adv.suggestion("nope")


def test_json_schema(capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["suggest", "zoo:resnet18-imagenet", "--input", "3,64,64", "--json", "-"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["schema_version"] == 1 and d["model"] == "resnet18-imagenet" and d["input"] == [3, 64, 64]
    assert d["sorted_by"] == "macs" and d["depth_warnings"] == []
    assert d["base"]["border_layer"] == "layer3.1.conv2" and d["base"]["depth"]["spatial_layers"] == 17
    first = d["suggestions"][0]
    for key in ("key", "title", "explanation", "recommended", "refused", "changed", "removed", "added",
                "delta", "metrics", "notes"):
        assert key in first
    assert set(first["delta"]) == {"params", "macs", "params_ratio", "macs_ratio", "ms"}
    assert first["metrics"]["params"] - d["base"]["params"] == first["delta"]["params"]
    assert {x["key"] for x in d["not_applicable"]} >= {"maxpool-into-stride"}
    assert all(x["reason"] for x in d["not_applicable"])


def _fake_latency(graph, **kw):  # type: ignore[no-untyped-def]
    """A stand-in latency model: 1 ms per GMAC plus 0.01 ms per layer."""
    from convscope.analyses.cost import cost

    ms = cost(graph).total.macs / 1e6 + 0.01 * len(graph.nodes)
    return LatencyPrediction("analytic", str(kw["device"]), kw["backend"], kw["batch"], ms, ms * 0.8, ms * 1.2)


def test_latency_is_used_to_sort_when_a_model_predicts(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(advice_mod, "_latency_model", lambda: _fake_latency)
    adv = suggest_graph(load_zoo("vgg11-cifar"), device="fake-board")
    assert adv.sorted_by == "ms" and adv.base.latency is not None and adv.base.latency.device == "fake-board"
    saved = [s.ms_saved for s in adv.recommended()]
    assert all(x is not None for x in saved) and saved == sorted(saved, reverse=True)  # type: ignore[type-var]
    d = adv.to_dict()
    assert d["base"]["latency"]["tier"] == "analytic" and d["suggestions"][0]["delta"]["ms"] < 0
    buf = io.StringIO()
    render_advice(adv, Console(width=220, file=buf, color_system=None))
    assert "sorted by predicted ms saved" in buf.getvalue() and "tier analytic · fake-board" in buf.getvalue()


def test_without_a_latency_model_latency_is_reported_missing(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(advice_mod, "_latency_model", lambda: None)
    adv = suggest_graph(load_zoo("vgg11-cifar"), device="raspi4")
    assert adv.sorted_by == "macs" and adv.base.latency is None
    assert "not available" in (adv.latency_note or "")
    assert all(s.ms_saved is None for s in adv.suggestions)


def test_real_latency_model_when_installed() -> None:
    try:
        from convscope.analyses._latency_profiles import profile_names  # type: ignore[import-not-found]
        from convscope.analyses.latency import predict  # noqa: F401
    except ImportError:
        pytest.skip("the latency model (issue 4) is not installed")
    if "raspi4" not in profile_names():
        pytest.skip("no raspi4 profile")
    adv = convscope.suggest("zoo:vgg16-cifar", device="raspi4", only=["truncate", "width"])
    assert adv.sorted_by == "ms" and adv.base.latency is not None
    assert adv.base.latency.tier == "analytic" and adv.base.latency.device == "raspi4"
    assert adv.suggestion("truncate").ms_saved > 0  # type: ignore[operator]


def test_table_lists_suggestions_warnings_and_not_applicable() -> None:
    buf = io.StringIO()
    adv = convscope.suggest("zoo:vgg16-cifar", input=(3, 32, 32))
    render_advice(adv, Console(width=200, file=buf, color_system=None))
    out = buf.getvalue()
    rows = [line for line in out.splitlines() if line.startswith("│")]
    assert "original" in rows[0] and "14.73M" in rows[0]
    truncate = next(r for r in rows if "│ truncate " in r)
    assert "-92.2%" in truncate and "-51.2%" in truncate and "none" in truncate
    assert "feasible input resolution" in out and "165–212 px" in out
    buf = io.StringIO()  # 80 columns (a pipe, a CI log): value and change share a cell, nothing wraps
    render_advice(adv, Console(width=80, file=buf, color_system=None), explain=False)
    lines = buf.getvalue().splitlines()
    assert max(len(line) for line in lines) <= 80
    narrow = next(line for line in lines if " truncate " in line)
    assert "1.15M -92%" in narrow and "152.77M -51%" in narrow and narrow.rstrip().endswith("none")
    two = graph_from_spec_text("name: two\ninput: [3, 32, 32]\nlayers:\n  - conv: {out: 8, k: 3}\n"
                               "  - conv: {out: 8, k: 3}\n  - gap\n  - linear: 10\n")
    buf = io.StringIO()
    render_advice(suggest_graph(two), Console(width=200, file=buf, color_system=None))
    text = " ".join(buf.getvalue().split())
    assert "depth warning: only 2 spatial convolution layer(s)" in text and "seeds/004" in text


def test_cli_write_dir_reads_back(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "variants"
    assert main(["suggest", "zoo:vgg11-cifar", "--input", "3,32,32", "--write", str(out), "--width", "200"]) == 0
    text = capsys.readouterr().out
    files = sorted(p.name for p in out.iterdir())
    assert files[0] == "00-original.yaml" and any(f.endswith("-truncate.yaml") for f in files)
    assert f"wrote {len(files)} spec file(s)" in " ".join(text.split())
    adv = convscope.suggest("zoo:vgg11-cifar", input=(3, 32, 32))
    for s in adv.recommended():
        (path,) = out.glob(f"*-{s.key}.yaml")
        head = path.read_text().splitlines()
        assert head[0].startswith(f"# convscope suggest: {s.title} ({s.key})")
        assert analyze(str(path)).to_dict()["totals"] == s.analysis.to_dict()["totals"]
    assert analyze(str(out / "00-original.yaml")).totals == adv.base.totals


def test_pytorch_origin_notes_module_paths(tmp_path: Path) -> None:
    assert origin_of("mypkg.models:net") == "pytorch" and origin_of("net.onnx") == "onnx"
    assert origin_of("zoo:allconv") == "zoo" and origin_of("a/net.yaml") == "spec"
    adv = suggest_graph(load_zoo("vgg11-cifar"), only=["truncate"], origin="pytorch")
    written = write_variants(adv, tmp_path, ref="mypkg.models:net")
    text = written["truncate"].read_text()
    assert "module paths of your nn.Module" in text and "# removed: block4.1.conv" in text.replace("\n#   ", " ")


def test_a_pytorch_model_round_trips_with_module_paths(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("convscope.frontends.from_torch")
    ref = str(Path(__file__).parent / "fixtures" / "resnet.py") + ":resnet18"
    adv = convscope.suggest(ref, input=(3, 64, 64), only=["truncate", "width"])
    assert adv.origin == "pytorch"
    t = adv.suggestion("truncate")
    assert t.removed[0] == "layer4.1.conv1" and t.changed == ("avgpool",)  # module paths of the nn.Module
    written = write_variants(adv, tmp_path, ref=ref)
    assert "module paths of your nn.Module" in written["truncate"].read_text()
    for s in adv.suggestions:
        assert analyze(str(written[s.key])).totals == s.analysis.totals


def test_ctrl_c_keeps_the_rewrites_done_so_far(monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    def interrupt(base):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt

    monkeypatch.setitem(advice_mod.REWRITES, "truncate", interrupt)
    adv = suggest_graph(load_zoo("vgg11-cifar"), only=["width", "truncate", "bottleneck"])
    assert adv.interrupted and [s.key for s in adv.suggestions] == ["width-0.5", "width-0.75"]
    assert adv.to_dict()["complete"] is False
    assert main(["suggest", "zoo:vgg11-cifar", "--only", "width,truncate", "--brief", "--width", "160"]) == 130
    out, err = capsys.readouterr()
    assert "width-0.5" in out and "interrupted" in err


def test_errors_exit_2(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["suggest", "zoo:vgg11-cifar", "--only", "truncate,nope"]) == 2
    assert "unknown rewrite 'nope'" in capsys.readouterr().err
    assert main(["suggest", "zoo:vgg11-cifar", "--only", "width-0.3"]) == 2
    assert "width-0.75, width-0.5" in capsys.readouterr().err
    assert [s.key for s in suggest_graph(load_zoo("vgg11-cifar"), only=["width-0.5", "truncate"]).suggestions] \
        == ["width-0.5", "truncate"]
    assert main(["suggest", "zoo:vgg11-cifar", "--input", "3,32"]) == 2
    assert main(["suggest", "nothing.yaml"]) == 2
    f = tmp_path / "file"
    f.write_text("x")
    assert main(["suggest", "zoo:vgg11-cifar", "--write", str(f)]) == 2
    assert "not a directory" in capsys.readouterr().err


def test_advice_is_shown_when_the_variants_cannot_be_written(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    """A PyTorch network the spec cannot express (ECA's squeeze over an axis): the table is still
    printed, then the error, exit status 2, and no directory."""
    (tmp_path / "eca.py").write_text(
        "import torch\nfrom torch import nn\n\n\nclass ECA(nn.Module):\n    def __init__(self):\n"
        "        super().__init__()\n        self.conv0 = nn.Conv2d(3, 16, 3, padding=1)\n"
        "        self.eca = nn.Conv1d(1, 1, 3, padding=1, bias=False)\n"
        "        self.head = nn.Conv2d(16, 8, 3, padding=1)\n\n    def forward(self, x):\n"
        "        x = self.conv0(x)\n        y = x.mean((2, 3), keepdim=True)\n"
        "        y = self.eca(y.squeeze(-1).transpose(-1, -2)).transpose(-1, -2).unsqueeze(-1)\n"
        "        return self.head(x * torch.sigmoid(y))\n\n\ndef make():\n    return ECA()\n")
    out = tmp_path / "variants"
    assert main(["suggest", f"{tmp_path / 'eca.py'}:make", "--input", "3,16,16", "--write", str(out)]) == 2
    cap = capsys.readouterr()
    assert "feasible input resolution" in cap.out and "width" in cap.out
    assert "cannot be written as a spec file (nothing was written to" in cap.err and not out.exists()


def test_a_network_without_an_image_input_is_refused() -> None:
    b = GraphBuilder("mlp")
    b.add_input("x", (16,))
    b.add("fc", OpKind.LINEAR, O.LinearAttrs(out_features=4), ["x"])
    with pytest.raises(convscope.ConvscopeError, match="not C, H, W"):
        suggest_graph(b.build())


def test_a_network_the_spec_cannot_express_is_refused_before_writing(tmp_path: Path) -> None:
    b = GraphBuilder("sliced")
    b.add_input("x", (3, 16, 16))
    b.add("c", OpKind.CONV, O.ConvAttrs(out_channels=32, kernel=(3, 3), padding=((1, 1), (1, 1))), ["x"])
    b.add("c2", OpKind.CONV, O.ConvAttrs(out_channels=32, kernel=(3, 3), padding=((1, 1), (1, 1))), ["c"])
    b.add("half", OpKind.SLICE, O.SliceAttrs(axis=0, start=0, stop=16), ["c2"])
    b.add("g", OpKind.GLOBAL_AVGPOOL, O.GlobalPoolAttrs(), ["half"])
    adv = suggest_graph(b.build(), only=["width"])
    with pytest.raises(convscope.ConvscopeError, match="layer 'half' \\(slice\\)"):
        write_variants(adv, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_write_replaces_an_earlier_runs_variants_and_keeps_other_files(tmp_path: Path) -> None:
    adv = convscope.suggest("zoo:vgg11-cifar", input=(3, 32, 32), batch=2)
    first = write_variants(adv, tmp_path)
    assert len(first) > 3
    (tmp_path / "07-mine.yaml").write_text("name: mine\n")  # not convscope's: kept
    only = suggest_graph(load_zoo("vgg11-cifar"), only=["truncate"], batch=2)
    second = write_variants(only, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["00-original.yaml", "01-truncate.yaml", "07-mine.yaml"]
    head = second["truncate"].read_text().splitlines()[1]
    assert head.endswith("01-truncate.yaml --batch 2")  # the command that gives the header's numbers again
    assert analyze(str(second["truncate"]), batch=2).totals == only.suggestion("truncate").analysis.totals


def test_write_checks_every_target_before_writing(tmp_path: Path) -> None:
    from convscope.errors import InputError

    (tmp_path / "01-truncate.yaml").mkdir()
    adv = suggest_graph(load_zoo("vgg11-cifar"), only=["truncate"])
    with pytest.raises(InputError, match="01-truncate.yaml exists and is not a file"):
        write_variants(adv, tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["01-truncate.yaml"]


def test_resolution_and_truncate_say_when_a_flattened_head_changes() -> None:
    g = graph_from_spec_text("""
name: flat
input: [3, 32, 32]
layers:
  - conv: {out: 8, k: 3, name: c1}
  - maxpool: {k: 2}
  - conv: {out: 8, k: 3, name: c2}
  - maxpool: {k: 2}
  - conv: {out: 8, k: 3, name: c3}
  - maxpool: {k: 2}
  - conv: {out: 8, k: 3, name: c4}
  - maxpool: {k: 2}
  - conv: {out: 8, k: 3, name: c5}
  - flatten
  - linear: {out: 10, name: fc}
""")
    adv = suggest_graph(g, only=["resolution", "truncate"])
    res = adv.suggestion("resolution")
    assert "fc" in res.changed and "stay as they are except 'fc'" in res.explanation
    t = adv.suggestion("truncate")
    # fc read c5's 8x2x2 map (32·10 + 10 = 330 params); cut after c4 it reads 8x4x4 (128·10 + 10 = 1,290):
    # c5's 8·8·9 = 576 params go, fc gains 960, so the cut adds 384
    assert "fc" in t.changed and "'fc' 330 -> 1,290 params" in t.explanation
    assert t.params_saved == -384 and any("adds parameters" in n for n in t.notes)


def test_suggest_reports_unknown_ops(capsys) -> None:  # type: ignore[no-untyped-def]
    b = GraphBuilder("odd")
    b.add_input("x", (3, 16, 16))
    x = b.add("c1", OpKind.CONV, O.ConvAttrs(out_channels=8, kernel=(3, 3), padding=((1, 1), (1, 1))), ["x"])
    x = b.add("mystery", OpKind.UNKNOWN, O.UnknownAttrs(target="fft_fft2", shape=(8, 16, 16)), [x])
    x = b.add("c2", OpKind.CONV, O.ConvAttrs(out_channels=8, kernel=(3, 3), padding=((1, 1), (1, 1))), [x])
    x = b.add("gap", OpKind.GLOBAL_AVGPOOL, O.GlobalPoolAttrs(), [x])
    g = b.build()
    adv = suggest_graph(g)
    assert adv.to_dict()["unknown_ops"] == [{"name": "mystery", "target": "fft_fft2"}]
    con = Console(file=io.StringIO(), width=200)
    render_advice(adv, con)
    out = con.file.getvalue()  # type: ignore[attr-defined]
    assert "1 unknown op(s): mystery (fft_fft2)" in out and "None" not in out
    # c1 sees 3 of 16 px, but it is not the last spatial layer: c2's coverage is unknown, so no warning
    assert adv.depth.rf_coverage is None and [w.kind for w in adv.depth.warnings] == ["spatial_layers"]
    assert adv.suggestions and all(any("1 unknown op(s) (mystery)" in n for n in s.notes) for s in adv.suggestions)


def test_truncate_behind_an_unknown_op_names_it_not_a_missing_head() -> None:
    b = GraphBuilder("erf")
    b.add_input("x", (3, 16, 16))
    x = b.add("c1", OpKind.CONV, O.ConvAttrs(out_channels=8, kernel=(3, 3), padding=((1, 1), (1, 1))), ["x"])
    for i in range(2, 8):
        x = b.add(f"c{i}", OpKind.CONV, O.ConvAttrs(out_channels=8, kernel=(3, 3), padding=((1, 1), (1, 1))), [x])
    x = b.add("erfinv", OpKind.UNKNOWN, O.UnknownAttrs(target="special_erfinv", shape=(8, 16, 16)), [x])
    x = b.add("gap", OpKind.GLOBAL_AVGPOOL, O.GlobalPoolAttrs(), [x])
    b.add("fc", OpKind.LINEAR, O.LinearAttrs(out_features=10), [x])
    adv = suggest_graph(b.build())
    why = {k: r for k, _, r in adv.not_applicable}["truncate"]
    assert "an op convscope does not know (erfinv) lies before the output" in why and "no classifier head" not in why


FIXED_SE = '''
import torch.nn as nn, torch.nn.functional as F
class SENet(nn.Module):  # an SE gate as view(b, c, 1, 1).expand_as(x): sizes fixed where captured
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 32, 3, 1, 1); self.fc1 = nn.Linear(32, 8); self.fc2 = nn.Linear(8, 32)
        self.c2 = nn.Conv2d(32, 32, 3, 2, 1); self.c3 = nn.Conv2d(32, 32, 3, 1, 1); self.c4 = nn.Conv2d(32, 32, 3, 1, 1)
        self.fc = nn.Linear(32, 10)
    def forward(self, x):
        x = F.relu(self.c1(x))
        b, c, _, _ = x.shape
        s = self.fc2(F.relu(self.fc1(x.mean((2, 3))))).sigmoid().view(b, c, 1, 1)
        x = F.relu(self.c4(F.relu(self.c3(F.relu(self.c2(x * s.expand_as(x)))))))
        return self.fc(x.mean((2, 3)))
def senet(): return SENet()
'''


def test_suggest_and_compare_find_a_models_feasible_range_as_analyze_does(tmp_path: Path) -> None:
    """The graph of this model cannot be re-inferred at other sizes; analyze captures the model again,
    and so must suggest and compare, or they would miss the resolution advice with a false reason."""
    from convscope.analyses.deployment import compare

    (tmp_path / "se.py").write_text(FIXED_SE)
    ref = f"{tmp_path / 'se.py'}:senet"
    a = analyze(ref, input=(3, 8, 8), device="raspi4")
    assert a.feasible_resolution == (10, 13)
    adv = convscope.suggest(ref, input=(3, 8, 8), device="raspi4")
    assert adv.base.feasible_resolution == a.feasible_resolution
    why = {k: r for k, _, r in adv.not_applicable}["resolution"]
    assert "feed 10x10" in why and "--input 3,10,10" in why
    (tmp_path / "plan.yaml").write_text("name: p\ninput: [3, 8, 8]\ncandidates:\n  one:\n    single: se.py:senet\n")
    cmp = compare(str(tmp_path / "plan.yaml"), device="raspi4")
    assert cmp.candidates[0].networks[0].analysis.feasible_resolution == (10, 13)


def test_a_fixed_filter_is_no_layer_to_slim() -> None:
    """A constant blur (`fixed: true`) was split into a learned depthwise + 1x1 pair, grouped and
    bottlenecked: 0 parameters became 1,312.  The rewrites leave it fixed; the width follows it."""
    g = graph_from_spec_text("name: f\ninput: [3, 32, 32]\nlayers:\n  - conv: {out: 32, k: 3, name: stem}\n"
                             "  - conv: {out: 32, k: 3, fixed: true, name: blur}\n  - conv: {out: 64, k: 3, name: c2}\n"
                             "  - conv: {out: 64, k: 3, s: 2, name: c3}\n  - gap\n  - linear: {out: 10, name: fc}\n")
    adv = suggest_graph(g)
    for s in adv.suggestions:
        fixed = [n for n in s.graph.nodes if n.name.startswith("blur")]
        assert [(n.name, n.attrs.fixed) for n in fixed] == [("blur", True)], s.key  # type: ignore[union-attr]
        if s.key in ("grouped-conv", "bottleneck", "depthwise-separable"):
            assert "blur" not in s.changed
    half = next(s for s in adv.suggestions if s.key == "width-0.5")
    assert half.graph.node("blur").attrs.out_channels == 16 == half.graph.node("stem").attrs.out_channels  # type: ignore[union-attr]
    assert half.analysis.totals.params == analyze(half.graph).totals.params


def test_a_width_factor_that_changes_nothing_is_said() -> None:
    """Channels in multiples of 24 (groups of 3 and multiples of 8): x0.75 rounds every width back,
    and `--only width-0.75` listed nothing at all."""
    text = ("name: g3\ninput: [3, 32, 32]\nlayers:\n  - conv: {out: 24, k: 3, name: stem}\n"
            "  - conv: {out: 24, k: 3, g: 3, name: a}\n  - conv: {out: 36, k: 3, s: 2, g: 3, name: b}\n"
            "  - channel_shuffle: {groups: 3}\n  - conv: {out: 36, k: 3, name: c}\n  - gap\n  - linear: {out: 10}\n")
    adv = suggest_graph(graph_from_spec_text(text), only=["width-0.75"])
    assert adv.suggestions == ()
    assert [(k, why[:34]) for k, _, why in adv.not_applicable] == [("width-0.75", "every channel count rounds back to")]


def test_the_resolution_rewrite_aims_inside_the_range_it_prints() -> None:
    """A context net whose last 3x3 conv is dilated along W only: rf 65 on H, 69 on W, and a 1x1
    classifier after it (unproductive up to 65 px).  The range is 66-69 (the wider axis); the rewrite
    said no resolution fits (narrower axis 65 < 66) beside it.  It feeds 66 px and says what the
    narrower axis sees."""
    text = ("name: d\ninput: [3, 64, 64]\nlayers:\n  - conv: {out: 8, k: 3}\n  - conv: {out: 8, k: 3, s: 2}\n"
            "  - conv: {out: 8, k: 3, d: 2}\n  - conv: {out: 8, k: 3, d: 4}\n  - conv: {out: 8, k: 3, d: 8}\n"
            "  - conv: {out: 8, k: 3, d: [1, 2], name: last}\n  - conv: {out: 4, k: 1, name: cls}\n")
    g = graph_from_spec_text(text)
    a = analyze(g)
    assert a.layer("last").rf_max == (65, 69) and a.feasible_resolution == (66, 69)
    rw = next(s for s in suggest_graph(g, only=["resolution"]).suggestions)
    assert rw.graph.input_shape == (3, 66, 66)
    assert "on its narrower axis the last layer then sees 65 px of the 66" in rw.explanation
    assert "Feasible range: 66–69 px" in rw.explanation


def test_shufflenet_width_keeps_its_halves_equal() -> None:
    """ShuffleNetV2 splits its channels in two, passes one half on beside a branch of as many and
    shuffles the concat: scaled, the branch must match the half (79 channels came out, and the
    shuffle of 2 groups no longer divided them).  Both widths apply, build and run."""
    import torch

    from fixtures.shufflenet import channel_shuffle
    from torch import nn

    from convscope.backends.to_torch import build_module
    from convscope.frontends.from_torch import graph_from_module

    class Unit(nn.Module):  # the stride-1 unit: the half passed on is as wide as the branch
        def __init__(self, c: int) -> None:
            super().__init__()
            h = c // 2
            self.branch = nn.Sequential(nn.Conv2d(h, h, 1), nn.ReLU(), nn.Conv2d(h, h, 3, padding=1, groups=h),
                                        nn.Conv2d(h, h, 1), nn.ReLU())

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            a, b = x.chunk(2, dim=1)
            return channel_shuffle(torch.cat([a, self.branch(b)], 1), 2)

    # the half comes from a conv of 96 (x0.75: 72, halves of 36), the branch's own width is 48 (x0.75: 40)
    net = nn.Sequential(nn.Conv2d(3, 48, 3, 2, 1), nn.Conv2d(48, 96, 3, 2, 1), Unit(96), Unit(96), Unit(96),
                        nn.Conv2d(96, 192, 3, 2, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(192, 10))
    g = graph_from_module(net, (3, 64, 64))
    adv = suggest_graph(g, only=["width"])
    assert sorted(s.key for s in adv.suggestions) == ["width-0.5", "width-0.75"], adv.not_applicable
    out = g.node(g.outputs[0]).out.shape
    for s in adv.suggestions:
        halves = [[s.graph.node(i).out.channels for i in n.inputs] for n in s.graph.nodes if n.op is OpKind.CONCAT]
        assert len(halves) == 3 and all(a == b for a, b in halves), halves
        m = build_module(s.graph).eval()
        assert sum(p.numel() for p in m.parameters()) == s.analysis.totals.params < analyze(g).totals.params
        with torch.no_grad():
            assert tuple(m(torch.zeros(1, 3, 64, 64)).shape) == (1, *out)

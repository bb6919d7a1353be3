"""`convscope probe` as a user runs it: JSON, HTML, the table, errors, Ctrl-C."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from rich.console import Console
from test_probe_run import TINY

from convscope.cli import main
from convscope.probe.results import DataInfo, EpochRecord, LayerProbe, ProbeResult, Verdict
from convscope.reports.probe_html import probe_section
from convscope.reports.probe_terminal import render_probe

FAST = ["--epochs", "2", "--batch-size", "32", "--lr", "3e-3", "--threads", "1"]


@pytest.fixture
def net(tmp_path: Path) -> Path:
    p = tmp_path / "tiny.yaml"
    p.write_text(yaml.safe_dump(TINY, sort_keys=False))
    return p


def test_json_to_stdout_and_html(net: Path, tmp_path: Path, capsys: Any, monkeypatch: Any) -> None:
    monkeypatch.setenv("CONVSCOPE_CACHE", str(tmp_path / "cache"))
    html = tmp_path / "probe.html"
    argv = ["probe", str(net), "--data", "synthetic:scales:n=200,test=100", *FAST, "--json", "-", "--html", str(html)]
    assert main(argv) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["schema_version"] == 1 and d["model"] == "tiny-border" and d["input"] == [1, 16, 16]
    assert d["data"]["ref"] == "synthetic:scales:d=4,n=200,test=100,noise=0.2,seed=0" and d["data"]["classes"] == [
        "horizontal", "vertical", "diagonal"]
    assert d["epochs"] == 2 and d["seed"] == 0 and d["border_layer"] == "c3" and d["complete"] is True
    assert 0 <= d["train_accuracy"] <= 1 and 0 <= d["test_accuracy"] <= 1
    assert [x["name"] for x in d["layers"]] == ["c0", "c1", "c2", "c3", "c4", "c5", "c6", "head"]
    for x in d["layers"]:
        assert {"name", "rf_min", "unproductive", "saturation", "probe_accuracy"} <= set(x)
    assert d["layers"][0]["rf_min"] == [3, 3] and d["layers"][-1]["rf_min"] is None
    assert d["verdict"]["status"] in ("agrees", "partly", "disagrees", "inconclusive", "no_prediction")
    # the default checkpoint lives under $CONVSCOPE_CACHE
    assert Path(d["checkpoint"]).parent == tmp_path / "cache" / "probe" and (Path(d["checkpoint"]) / "model.pt").is_file()
    text = html.read_text()
    assert 'data-plot="probe-signals"' in text and 'data-plot="probe-rf"' in text and 'data-plot="probe-history"' in text
    assert "predicted border: c3" in text and "verdict:" in text
    # a rerun resumes from the checkpoint and gives the same numbers
    assert main(argv) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["layers"] == d["layers"] and any("resumed" in n for n in again["notes"])


def test_table(net: Path, capsys: Any) -> None:
    assert main(["probe", str(net), "--data", "synthetic:scales:n=100,test=60", *FAST, "--no-checkpoint",
                 "--width", "150"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "synthetic:scales:d=4" in out  # printed as given (no :emoji: substitution)
    assert "◀ border" in out and "unproductive" in out and "verdict" in out and "(chance 0.333)" in out


@pytest.mark.parametrize("data,msg", [
    ("/nonexistent/cameras", "--data /nonexistent/cameras: no such directory"),
    ("synthetic:blobs", "unknown synthetic data set 'blobs'"),
    ("synthetic:scales:noise=nan", "noise a finite number >= 0, got n=2000, test=1000, noise=nan"),
    ("synthetic:scales:n=1,test=1", "data set too small: 1 training image(s), at least 2 needed"),
])
def test_bad_data_is_exit_2_with_the_path(net: Path, data: str, msg: str, capsys: Any) -> None:
    assert main(["probe", str(net), "--data", data, "--no-checkpoint"]) == 2
    err = capsys.readouterr().err
    assert msg in err and "Traceback" not in err


def test_bad_settings_are_exit_2(net: Path, capsys: Any) -> None:
    for lr in ("-1", "nan", "inf"):
        assert main(["probe", str(net), "--data", "synthetic:scales", "--lr", lr]) == 2
        assert f"argument --lr: must be a positive finite number, got '{lr}'" in capsys.readouterr().err
    assert main(["probe", str(net), "--data", "synthetic:scales", "--device", "tpu", "--no-checkpoint"]) == 2
    assert "--device must be auto, cpu or cuda[:N], got 'tpu'" in capsys.readouterr().err
    for device in ("meta", "mps", "cpu:0:1"):  # devices torch knows, or not, but probe cannot train on
        assert main(["probe", str(net), "--data", "synthetic:scales", "--device", device, "--no-checkpoint"]) == 2
        err = capsys.readouterr().err
        assert f"--device must be auto, cpu or cuda[:N], got '{device}'" in err and "Traceback" not in err
    if not __import__("torch").cuda.is_available():
        assert main(["probe", str(net), "--data", "synthetic:scales", "--device", "cuda", "--no-checkpoint"]) == 2
        assert "no CUDA device is available here" in capsys.readouterr().err
    assert main(["probe", str(net)]) == 2  # --data is required
    assert "--data" in capsys.readouterr().err


def _result(complete: bool = True) -> ProbeResult:
    rows = (
        LayerProbe("c0", "conv", (3, 3), 0.19, False, 8, 0.875, 7, 0.34, 0.45, 128, 1000),
        LayerProbe("c3", "conv", (22, 22), 1.38, False, 16, 0.9375, 15, 0.997, 1.0, 256, 1000),
        LayerProbe("c4", "conv", (30, 30), 1.88, True, 16, 0.75, 12, 0.995, 1.0, 256, 1000),
        LayerProbe("head", "linear", None, None, False, 3, 0.667, 2, 0.99, 1.0, 3, 100),
    )
    return ProbeResult("tiny", (1, 16, 16), DataInfo("synthetic:scales:d=4", "synthetic", ("h", "v", "d"), 600, 600, 5),
                       5, 0, "cpu", {"optimizer": "adam", "lr": 0.003, "batch_size": 32},
                       (EpochRecord(1, 0.7, 0.7, 0.9, 0.2),), 0.99 if complete else None, 0.98 if complete else None, "c3", rows,
                       Verdict("agrees", ("probe reason", "saturation reason"), 0.0, 0.02, 0.9, 0.75, "c3"),
                       complete, "/tmp/ck", ("a note",))


def test_render_reads_the_result() -> None:
    buf = io.StringIO()
    render_probe(_result(), Console(width=140, file=buf, color_system=None))
    out = buf.getvalue()
    lines = {line.split("│")[1].strip(): line for line in out.splitlines() if line.startswith("│")}
    assert "◀ border" in lines["c3"] and "unproductive" in lines["c4"] and "head" in lines["head"]
    assert "0.997" in lines["c3"] and "████" in lines["c3"] and "1.38" in lines["c3"]
    assert re.search(r"│\s+∞\s+│", lines["head"])
    assert "verdict agrees — predicted border c3; probes stop improving at c3" in out
    assert "note: a note" in out and "partial result" not in out
    buf = io.StringIO()
    render_probe(_result(complete=False), Console(width=140, file=buf, color_system=None))
    partial = " ".join(buf.getvalue().split())
    assert "partial result: 1/5 epoch(s) trained, 4 layer(s) measured; rerun the same command to resume" in partial
    # the last finished epoch's test accuracy, said to be that
    assert "accuracy train - · test 0.900 (after epoch 1/5) (chance 0.333)" in partial
    assert "test 0.900 (after epoch 1/5)" in probe_section(_result(complete=False))
    assert "test 0.980 (chance" in out


def test_a_partial_result_without_checkpoint_does_not_promise_a_resume() -> None:
    r = _result(complete=False).with_updates(checkpoint=None)
    buf = io.StringIO()
    render_probe(r, Console(width=140, file=buf, color_system=None))
    out = " ".join(buf.getvalue().split())
    assert "no checkpoint was kept (--no-checkpoint), so a rerun starts over" in out and "resume" not in out
    html = probe_section(r)
    assert "no checkpoint was kept" in html and "resume" not in html
    assert "rerun the same command to resume from the checkpoint" in probe_section(_result(complete=False))


def test_a_capped_saturation_is_marked() -> None:
    r = _result()
    capped = LayerProbe("c5", "conv", (38, 38), 2.38, True, 512, 0.02, 10, 0.99, 1.0, 2048, 15)
    r = r.with_updates(layers=(*r.layers[:3], capped, r.layers[3]))
    buf = io.StringIO()
    render_probe(r, Console(width=140, file=buf, color_system=None))
    out = buf.getvalue()
    lines = {line.split("│")[1].strip(): line for line in out.splitlines() if line.startswith("│")}
    assert "0.020*" in lines["c5"] and "0.750*" not in lines["c4"]
    assert "* saturation capped" in " ".join(out.split())
    assert "0.020*" in probe_section(r) and "* saturation capped" in probe_section(r)
    assert "* saturation capped" not in probe_section(_result())
    d = r.to_dict()
    assert [x["saturation_capped"] for x in d["layers"]] == [False, False, False, True, False]


def test_html_section_escapes_and_marks() -> None:
    r = _result().with_updates(model="<net>")
    html = probe_section(r)
    assert "&lt;net&gt;" in html and "<net>" not in html
    assert '<tr class="border">' in html and '<tr class="unproductive">' in html


def test_ctrl_c_writes_the_partial_result(net: Path, tmp_path: Path, capsys: Any, monkeypatch: Any) -> None:
    from convscope.backends import probe as probe_mod

    def interrupted(*a: Any, **k: Any) -> ProbeResult:
        raise probe_mod.ProbeInterrupted(_result(complete=False))

    monkeypatch.setattr(probe_mod, "probe", interrupted)
    out = tmp_path / "partial.json"
    assert main(["probe", str(net), "--data", "synthetic:scales", "--json", str(out)]) == 130
    d = json.loads(out.read_text())
    assert d["complete"] is False and [x["name"] for x in d["layers"]] == ["c0", "c3", "c4", "head"]
    # the last finished epoch's test accuracy, as the table and the HTML show it, and said to be that
    assert d["test_accuracy"] == 0.9 and d["accuracy_after_epoch"] == 1
    assert d["train_accuracy"] is None  # measured in eval mode after training, which did not finish
    assert _result().to_dict()["test_accuracy"] == 0.98 and _result().to_dict()["accuracy_after_epoch"] == 1
    assert "interrupted; partial results written" in capsys.readouterr().err


def test_an_image_folder_end_to_end(net: Path, tmp_path: Path, capsys: Any) -> None:
    """PNG files in class folders, RGB, another size than the network's; --input changes the channels."""
    from PIL import Image

    for i in range(12):
        for cls, color in (("red", (220, 20, 20)), ("blue", (20, 20, 220))):
            p = tmp_path / "imgs" / cls / f"{i}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (24, 20), color).save(p)
    assert main(["probe", str(net), "--input", "3,16,16", "--data", str(tmp_path / "imgs"), "--epochs", "3",
                 "--batch-size", "4", "--lr", "3e-3", "--threads", "1", "--no-checkpoint", "--json", "-"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["input"] == [3, 16, 16] and d["data"]["kind"] == "folder" and d["data"]["classes"] == ["blue", "red"]
    assert (d["data"]["train"], d["data"]["test"]) == (20, 4)
    assert d["layers"][0]["probe_accuracy"] == 1.0  # colour alone tells the classes apart
    assert d["test_accuracy"] == 1.0
    assert "replaced the head: layer 'head' now has 2 outputs (was 10)" in d["notes"]


@pytest.mark.parametrize("flag,target,msg", [
    ("--json", "missing/r.json", "--json {d}/missing/r.json: cannot write: {d}/missing does not exist"),
    ("--html", "missing/r.html", "--html {d}/missing/r.html: cannot write: {d}/missing does not exist"),
    ("--html", "adir", "--html {d}/adir: is a directory, not a file"),
    ("--json", "afile/r.json", "--json {d}/afile/r.json: cannot write: {d}/afile is not a directory"),
])
def test_an_unwritable_output_is_refused_before_the_run(net: Path, tmp_path: Path, capsys: Any, monkeypatch: Any,
                                                        flag: str, target: str, msg: str) -> None:
    from convscope.backends import probe as probe_mod

    def never(*a: Any, **k: Any) -> ProbeResult:
        raise AssertionError("the run started")  # would be exit status 3

    monkeypatch.setattr(probe_mod, "probe", never)
    (tmp_path / "afile").write_text("x")
    (tmp_path / "adir").mkdir()
    assert main(["probe", str(net), "--data", "synthetic:scales", flag, str(tmp_path / target)]) == 2
    err = capsys.readouterr().err
    assert msg.format(d=tmp_path) in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir", "afile", "tiny.yaml"]  # the check left no file


def test_an_existing_output_file_is_not_touched_by_the_check(net: Path, tmp_path: Path, monkeypatch: Any) -> None:
    from convscope.backends import probe as probe_mod

    out = tmp_path / "old.json"
    out.write_text("old")

    def interrupted(*a: Any, **k: Any) -> ProbeResult:
        assert out.read_text() == "old"
        raise KeyboardInterrupt

    monkeypatch.setattr(probe_mod, "probe", interrupted)
    assert main(["probe", str(net), "--data", "synthetic:scales", "--json", str(out)]) == 130
    assert out.read_text() == "old"


def test_an_output_that_fails_at_the_end_loses_nothing_else(net: Path, tmp_path: Path, capsys: Any,
                                                            monkeypatch: Any) -> None:
    """The check passed, then writing the HTML failed (a full disk): the JSON is written, the table
    printed, the error named, exit status 2."""
    from convscope.backends import probe as probe_mod
    from convscope.errors import InputError
    from convscope.reports import probe_html

    def full(r: Any, path: str) -> None:
        raise InputError(f"--html {path}: cannot write: No space left on device")

    monkeypatch.setattr(probe_mod, "probe", lambda *a, **k: _result())
    monkeypatch.setattr(probe_html, "write_probe_html", full)
    out, html = tmp_path / "r.json", tmp_path / "r.html"
    assert main(["probe", str(net), "--data", "synthetic:scales", "--json", str(out), "--html", str(html),
                 "--width", "140"]) == 2
    captured = capsys.readouterr()
    assert json.loads(out.read_text())["complete"] is True
    assert "verdict agrees" in captured.out and "wrote" not in captured.out
    assert f"--html {html}: cannot write: No space left on device" in captured.err
    # with the JSON on stdout, the JSON is still written
    assert main(["probe", str(net), "--data", "synthetic:scales", "--json", "-", "--html", str(html)]) == 2
    assert json.loads(capsys.readouterr().out)["model"] == "tiny"


def _ctrl_c(*a: Any, **k: Any) -> Any:
    raise KeyboardInterrupt


def test_ctrl_c_before_training_says_there_is_nothing_to_write(net: Path, tmp_path: Path, capsys: Any,
                                                               monkeypatch: Any) -> None:
    from convscope.backends import probe as probe_mod

    monkeypatch.setattr(probe_mod, "load_data", _ctrl_c)
    out = tmp_path / "r.json"
    assert main(["probe", str(net), "--data", "synthetic:scales", "--json", str(out), "--no-checkpoint"]) == 130
    assert "interrupted while loading the model or the data, before training; nothing to write" in \
        capsys.readouterr().err
    assert not out.exists()


def test_ctrl_c_in_the_batchnorm_pass_of_epochs_0_writes_the_partial_result(net: Path, tmp_path: Path, capsys: Any,
                                                                           monkeypatch: Any) -> None:
    from convscope.backends import probe as probe_mod

    monkeypatch.setattr(probe_mod, "_recalibrate_batchnorm", _ctrl_c)
    out = tmp_path / "r.json"
    assert main(["probe", str(net), "--data", "synthetic:scales:n=20,test=10", "--epochs", "0", "--threads", "1",
                 "--no-checkpoint", "--json", str(out)]) == 130
    d = json.loads(out.read_text())
    assert d["complete"] is False and d["layers"] == [] and d["model"] == "tiny-border"
    assert "interrupted; partial results written" in capsys.readouterr().err


@pytest.mark.parametrize("argv,msg", [
    (["--seed", "-5"], "--seed must be an integer with 0 <= seed < 2**32, got -5"),
    (["--seed", "9" * 23], "--seed must be an integer with 0 <= seed < 2**32, got " + "9" * 23),
    (["--seed", "4294967296"], "got 4294967296"),
    (["--data", "synthetic:scales:seed=-1"], "synthetic:scales: seed=-1 is out of range: 0 <= seed < 2**32"),
    (["--data", "synthetic:scales:n=99999999999"], "synthetic:scales: n=99999999999 images of 1x16x16 would take"),
    (["--data", "synthetic:scales:d=2.5"], "d must be an integer, got '2.5'"),
    (["--threads", "9" * 20], "--threads: must be an integer from 1 to 4096, got " + "9" * 20),
    (["--threads", "0"], "--threads: must be an integer from 1 to 4096, got 0"),
    (["--data", ""], "--data is empty: give an image folder"),
    (["--lr", "1e300"], "--lr must be a positive number up to 1e+06, got 1e+300"),
    (["--epochs", "-1"], "epochs (--epochs) must be an integer >= 0, got -1"),
    (["--batch-size", "1"], "batch_size (--batch-size) must be an integer >= 2, got 1"),
    (["--probe-samples", "3"], "probe_samples (--probe-samples) must be an integer >= 10, got 3"),
])
def test_out_of_range_seeds_and_sizes_are_exit_2(net: Path, argv: list[str], msg: str, capsys: Any) -> None:
    args = ["probe", str(net), "--data", "synthetic:scales:n=20,test=10", "--no-checkpoint", "--epochs", "0"]
    assert main(args + argv) == 2
    err = capsys.readouterr().err
    assert msg in err and "internal error" not in err and "Traceback" not in err


def test_an_unwritable_default_checkpoint_names_the_default(net: Path, tmp_path: Path, capsys: Any,
                                                            monkeypatch: Any) -> None:
    (tmp_path / "afile").write_text("x")
    monkeypatch.setenv("CONVSCOPE_CACHE", str(tmp_path / "afile" / "cache"))
    argv = ["probe", str(net), "--data", "synthetic:scales:n=20,test=10", "--epochs", "0", "--threads", "1"]
    assert main(argv) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"the default checkpoint directory {tmp_path}/afile/cache/probe: cannot write there (Not a directory)" in err
    assert "give --checkpoint DIR elsewhere, or --no-checkpoint" in err and "--checkpoint /" not in err
    assert main([*argv, "--checkpoint", str(tmp_path / "afile" / "ck")]) == 2
    assert f"--checkpoint {tmp_path}/afile/ck: cannot write there" in capsys.readouterr().err
    assert main([*argv, "--no-checkpoint"]) == 0


def test_epochs_0_reports_the_test_accuracy_in_its_field(net: Path, capsys: Any) -> None:
    assert main(["probe", str(net), "--data", "synthetic:scales:n=20,test=10", "--epochs", "0", "--threads", "1",
                 "--no-checkpoint", "--json", "-"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["test_accuracy"] in [k / 10 for k in range(11)] and d["history"] == []
    assert d["verdict"]["status"] == "inconclusive" and d["verdict"]["reasons"] == ["the network was not trained"]
    assert "not trained (--epochs 0): random weights" in d["notes"]

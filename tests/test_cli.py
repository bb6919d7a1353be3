"""The command line as a user runs it: tables, JSON, --res, zoo, exit statuses."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest
import yaml
from rich.console import Console

from convscope.api import analyze
from convscope.cli import main
from convscope.reports.terminal import render_analysis


def test_table_marks_border_and_unproductive_layers() -> None:
    buf = io.StringIO()
    render_analysis(analyze("zoo:vgg16-cifar"), Console(width=160, file=buf, color_system=None))
    out = buf.getvalue()
    lines = {line.split("│")[1].strip(): line for line in out.splitlines() if line.startswith("│")}
    assert "◀ border" in lines["block3.2.conv"]
    assert "unproductive" in lines["block5.0.conv"]
    assert "unproductive" not in lines["block2.0.conv"]
    assert "border layer block3.2.conv; 10 unproductive layers holding 92.1% of params" in " ".join(out.split())
    assert "feasible input resolution 165–212 px" in " ".join(out.split())


def test_analyze_json_to_stdout(capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["analyze", "zoo:resnet18-imagenet", "--input", "3,32,32", "--json", "-"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["schema_version"] == 1 and d["input"] == [3, 32, 32]
    assert d["border_layer"] == "layer2.0.conv2"


def test_analyze_several_resolutions(capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["analyze", "zoo:vgg11-cifar", "--res", "32,64,224", "--json", "-"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["schema_version"] == 1
    assert [r["input"] for r in d["results"]] == [[3, 32, 32], [3, 64, 64], [3, 224, 224]]
    shares = [r["unproductive_share"]["params"] for r in d["results"]]
    assert shares[0] > shares[1] > shares[2] == 0.0


def test_one_resolution_is_one_object_and_a_bad_width_is_refused(capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["analyze", "zoo:vgg11-cifar", "--res", "64", "--json", "-"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert "results" not in d and d["input"] == [3, 64, 64]  # FORMATS §4: the wrapper is for several
    for w in ("0", "-3", "5"):
        assert main(["analyze", "zoo:allconv", "--width", w]) == 2
        out, err = capsys.readouterr()
        assert out == "" and f"--width must be at least 20 columns, got {w}" in err


def test_analyze_json_file_and_table(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "a.json"
    assert main(["analyze", "zoo:allconv", "--json", str(out), "--width", "150"]) == 0
    assert "allconv" in capsys.readouterr().out
    assert json.loads(out.read_text())["model"] == "allconv"


def test_spec_file_round_trip_through_the_cli(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    p = tmp_path / "net.yaml"
    p.write_text("name: tiny\ninput: [1, 28, 28]\nlayers:\n  - conv: {out: 8, k: 5}\n  - maxpool: 2\n"
                 "  - conv: {out: 16, k: 5}\n  - gap\n  - linear: 10\n")
    assert main(["analyze", str(p), "--json", "-"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in d["layers"]] == ["layers.0.conv", "layers.1.maxpool", "layers.2.conv",
                                                "layers.3.gap", "layers.4.linear"]
    assert d["totals"]["params"] == 8 * 25 + 16 * 8 * 25 + 16 * 10 + 10


def test_zoo_list_and_show(capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["zoo", "list", "--width", "200"]) == 0
    out = capsys.readouterr().out
    for name in ("zoo:vgg16-cifar", "zoo:resnet152-imagenet", "zoo:resnext50-32x4d", "zoo:wrn28-10",
                 "zoo:mobilenetv2", "zoo:allconv", "zoo:dilated-context", "zoo:nasbench201:ARCH"):
        assert name in out
    assert main(["zoo", "show", "resnet18-cifar"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["name"] == "resnet18-cifar"
    assert main(["zoo", "show", "nasbench201:|none~0|+|skip_connect~0|none~1|+|nor_conv_3x3~0|none~1|avg_pool_3x3~2|"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["input"] == [3, 32, 32]


def test_bad_flags_exit_2(capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["analyze", "zoo:allconv", "--input", "3,32"]) == 2  # C,L: for signal networks only
    assert "zoo:allconv: input C,L is for a signal (a network whose input is C,1,L); this one takes [3, 32, 32]: " \
           "give C,H,W" in capsys.readouterr().err
    assert main(["analyze", "zoo:allconv", "--input", "3,32,32,32"]) == 2
    assert "--input must be three positive integers C,H,W (or C,L for a signal)" in capsys.readouterr().err
    assert main(["analyze", "zoo:allconv", "--res", "32,x"]) == 2
    for flag, value in (("--res", ""), ("--res", "32,,64"), ("--res", "16,"), ("--input", ""), ("--input", "3,,32")):
        capsys.readouterr()
        assert main(["analyze", "zoo:allconv", flag, value]) == 2, (flag, value)
        assert f"{flag} must be" in capsys.readouterr().err
    assert main(["analyze"]) == 2
    assert main(["frobnicate"]) == 2


def test_an_unknown_flag_shows_the_commands_own_usage(capsys) -> None:  # type: ignore[no-untyped-def]
    capsys.readouterr()
    assert main(["analyze", "zoo:allconv", "--bogus"]) == 2
    err = capsys.readouterr().err
    assert "usage: convscope analyze" in err and "convscope analyze: error: unrecognized arguments: --bogus" in err
    assert main(["zoo", "list", "--x"]) == 2
    assert "convscope zoo: error: unrecognized arguments: --x" in capsys.readouterr().err
    assert main(["--bogus"]) == 2
    assert "convscope: error: unrecognized arguments: --bogus" in capsys.readouterr().err


def test_help_reads_like_a_manual(capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["--help"]) == 0
    assert "border layer" in capsys.readouterr().out
    assert main(["analyze", "--help"]) == 0
    out = capsys.readouterr().out
    assert "examples:" in out and "--res" in out


def test_console_script_runs() -> None:
    r = subprocess.run([sys.executable, "-m", "convscope", "analyze", "zoo:allconv", "--json", "-"],
                       capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["model"] == "allconv"


def test_api_returns_objects_and_prints_nothing(capsys) -> None:  # type: ignore[no-untyped-def]
    a = analyze("zoo:vgg16-cifar", input=(3, 32, 32))
    assert capsys.readouterr().out == ""
    assert a.border_layer == "block3.2.conv"
    assert a.layer("block5.2.conv").unproductive
    assert a.feasible_resolution == (165, 212)


def test_analyze_html_is_one_self_contained_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "a.html"
    assert main(["analyze", "zoo:vgg16-cifar", "--res", "32,64", "--html", str(out), "--json", str(tmp_path / "a.json")]) == 0
    text = out.read_text()
    assert text.startswith("<!doctype html>") and text.count('data-plot="rf-growth"') == 2
    assert "border: block3.2.conv" in text
    # after the global pool there is no grid, so no jump: "–" as in the terminal ("?" means unknown)
    assert "<td>classifier</td><td>linear</td><td>10</td><td>5.13K</td><td>5.12K</td><td>∞</td><td>∞</td><td>–</td>" in text
    assert "http://" not in text.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in text


def test_a_thread_count_out_of_range_is_refused_by_every_command(capsys) -> None:  # type: ignore[no-untyped-def]
    for argv in (["analyze", "zoo:vgg11-cifar"], ["measure", "zoo:vgg11-cifar"], ["calibrate"],
                 ["compare", "examples/camera/plan.yaml"], ["probe", "zoo:vgg11-cifar", "--data", "synthetic:scales"]):
        for bad in ("100000", "0", "two"):
            assert main([*argv, "--threads", bad]) == 2
            assert "argument --threads: must be an integer from 1 to 4096" in capsys.readouterr().err


def test_an_input_shape_is_three_integers_never_truncated_nor_a_tensor() -> None:
    """input=(3, 32.5, 32) was analysed at 32 and a tensor raised a bare ValueError: both are an
    InputError that says what was given and what is taken, in analyze, suggest and the module path."""
    import numpy as np
    import pytest
    import torch

    import convscope
    from convscope.errors import InputError
    from convscope.frontends.from_torch import graph_from_module

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3))
    bad = {(3, 32.5, 32): r"input must be three positive integers C,H,W, got \[3, 32.5, 32\]: 32.5 is not an integer",
           torch.zeros(1, 3, 32, 32): r"input must be the shape C,H,W \(three positive integers\), not a tensor or "
                                      r"array \(Tensor of shape \[1, 3, 32, 32\]\); for this one, input=\(3, 32, 32\)",
           torch.tensor([3.0, 32.0, 32.0]): r"got \[3.0, 32.0, 32.0\]: 3.0 is not an integer",
           (1, 3, 32, 32): r"three positive integers C,H,W \(or C,L for a signal\) \(without the batch axis\)",
           224: r"input must be three positive integers C,H,W, got 224"}
    for value, message in bad.items():
        for fn, model in ((convscope.analyze, "zoo:allconv"), (convscope.suggest, net), (convscope.analyze, net)):
            with pytest.raises(InputError, match=message):
                fn(model, input=value)
    with pytest.raises(InputError, match=r"Sequential: the input shape must be three positive integers C,H,W, got "
                                         r"\[3, 32.5, 32\]"):
        graph_from_module(net, (3, 32.5, 32))
    for good in (torch.Size([3, 32, 32]), torch.tensor([3, 32, 32]), np.array([3, 32, 32]), (np.int64(3), 32, 32)):
        assert convscope.analyze(net, input=good).input == (3, 32, 32)


def test_a_module_instance_named_in_a_file_is_the_model(tmp_path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    """file.py:net where net = Net() was called as a factory (forward() without its input)."""
    (tmp_path / "mynet.py").write_text("import torch\n\n"
                                       "def make():\n    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU())\n\n"
                                       "net = make()\n")
    monkeypatch.chdir(tmp_path)
    for ref in ("mynet.py:net", "mynet:net", "mynet.py:make"):
        assert main(["analyze", ref, "--input", "3,16,16", "--json", "-"]) == 0, capsys.readouterr().err
        d = json.loads(capsys.readouterr().out)
        assert [r["name"] for r in d["layers"]][:1] == ["0"] and d["totals"]["params"] == 3 * 8 * 9 + 8


# --- a CLI audit: exit statuses and messages ------------------------------------------------------
def test_nothing_to_time_or_measure_is_exit_1_and_small_usage_errors_are_2(tmp_path, capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("CONVSCOPE_CACHE", str(tmp_path / "cache"))
    (tmp_path / "odd.py").write_text("import torch\nimport torch.nn as nn\n"
                                     "class Odd(nn.Module):\n    def forward(self, x):\n"
                                     "        return torch.fft.fft2(x).real\n"
                                     "def make():\n    return Odd()\n")
    model = str(tmp_path / "odd.py") + ":make"
    assert main(["calibrate", model, "--input", "3,16,16"]) == 1
    assert "every layer is an op convscope does not know, so there is nothing to time" in capsys.readouterr().err
    assert main(["measure", model, "--input", "3,16,16", "--time-limit", "0.2"]) == 1
    assert "convscope does not know" in capsys.readouterr().err
    assert main(["zoo", "list", "extra"]) == 2 and "zoo list takes no NAME" in capsys.readouterr().err
    assert main(["measure", "zoo:allconv", "--batch", "0"]) == 2
    assert "--batch must be a positive integer, got 0" in capsys.readouterr().err
    assert main(["calibrate", "zoo:allconv", "--passes", "0"]) == 2
    assert "--passes must be a positive integer, got 0" in capsys.readouterr().err
    from pathlib import Path

    assert main(["analyze", str(Path(__file__).parent.parent / "examples" / "camera" / "plan.yaml")]) == 2
    assert "this is a deployment plan (it has 'candidates')" in capsys.readouterr().err


def test_the_latency_total_is_the_rows_plus_the_overhead(capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["analyze", "zoo:resnet18-cifar", "--device", "raspi4", "--json", "-"]) == 0
    d = json.loads(capsys.readouterr().out)
    rows = sum(r["ms"] for r in d["layers"])
    assert d["latency"]["overhead_ms"] == 0.0 and abs(d["latency"]["ms"] - rows) < 1e-9 * rows
    from convscope.results import LatencyPrediction

    fitted = LatencyPrediction("fitted", "x", "torch", 1, 1.5, 1.2, 1.8, per_layer=(("a", 1.0), ("b", 0.25)))
    assert fitted.overhead_ms == 0.25 and fitted.to_dict()["overhead_ms"] == 0.25


def test_long_commands_refuse_an_unwritable_output_before_they_run(tmp_path, capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import convscope.backends.measure as measure_mod

    def never(*a, **k):  # type: ignore[no-untyped-def]
        raise AssertionError("measured before the output was checked")

    monkeypatch.setattr(measure_mod, "measure_graph", never)
    missing = tmp_path / "no" / "x.json"
    assert main(["measure", "zoo:allconv", "--json", str(missing)]) == 2
    assert f"--json {missing}: cannot write: {missing.parent} does not exist" in capsys.readouterr().err
    plan = tmp_path / "p.yaml"
    plan.write_text("name: p\ninput: [3, 32, 32]\ndevice: raspi4\ncandidates:\n  a: {single: 'zoo:allconv'}\n")
    assert main(["compare", str(plan), "--html", str(tmp_path)]) == 2
    assert f"--html {tmp_path}: is a directory, not a file" in capsys.readouterr().err


def test_calibrate_without_a_model_takes_the_standard_set(monkeypatch, capsys, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`convscope calibrate` (FORMATS §3, no MODEL) hands calibrate() no graphs: it times the zoo and its
    variants.  It crashed with an internal error (exit 3) before timing anything."""
    import convscope.backends.calibrate as cal

    seen = []

    def record(graphs, **kw):  # type: ignore[no-untyped-def]
        seen.append(graphs)
        raise SystemExit(0)  # what calibrate is asked to time is all this test needs

    monkeypatch.setattr(cal, "calibrate", record)
    with pytest.raises(SystemExit):
        main(["calibrate", "--threads", "1"])
    assert seen == [None]
    # a --json that cannot be written is refused before the minutes of timing, an empty one too
    assert main(["calibrate", "--json", str(tmp_path)]) == 2 and "is a directory" in capsys.readouterr().err
    for argv in (["calibrate"], ["analyze", "zoo:vgg11-cifar"], ["compare", "examples/camera/plan.yaml"]):
        assert main([*argv, "--json", ""]) == 2
        assert "needs a file name, or '-' for stdout" in capsys.readouterr().err
    assert main(["suggest", "zoo:vgg11-cifar", "--write", ""]) == 2 and "needs a directory name" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["analyze", "zoo:vgg11-cifar"],
                                  ["compare", "examples/camera/plan.yaml", "--device", "raspi4"],
                                  ["probe", "examples/probe/tiny-border.yaml", "--data", "synthetic:scales"]])
def test_json_and_html_to_the_same_file_is_refused_before_any_work(argv, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "r.html"
    assert main([*argv, "--json", str(out), "--html", str(tmp_path / "." / "r.html")]) == 2
    assert "--json and --html name the same file" in capsys.readouterr().err
    assert not out.exists()


def test_a_reader_that_closes_the_pipe_early_is_no_failure() -> None:
    """`convscope analyze … | head -1`: rich ended the command with status 1 ("nothing usable")."""
    import subprocess
    import sys

    for args in (["analyze", "zoo:resnet50-imagenet"], ["analyze", "zoo:resnet50-imagenet", "--json", "-"]):
        p = subprocess.Popen([sys.executable, "-m", "convscope", *args], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        assert p.stdout is not None and p.stderr is not None
        p.stdout.close()  # the reader is gone before the first line is written
        err = p.stderr.read().decode()
        assert p.wait() == 0 and "Traceback" not in err and "error" not in err, err


def test_calibrate_list_takes_no_model(capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["calibrate", "--list", "zoo:allconv"]) == 2
    assert "--list shows what the cache holds and takes no model (got zoo:allconv)" in capsys.readouterr().err


MARKUP = """name: "[bold red]net[/]"
input: [3, 16, 16]
layers:
  - conv: {out: 8, k: 3, name: "[/]"}
  - conv: {out: 8, k: 3, name: "[link=http://evil]x[/link]"}
  - conv: {out: 8, k: 3, name: "e\\x1b[31mred"}
  - gap
  - linear: {out: 2}
"""


def test_names_print_as_written_never_as_markup_or_escape_codes(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    """rich read a layer named '[/]' as a closing tag (an internal error) and '[link=…]x[/link]' as a
    link shown as 'x'; an escape character in a name reached the terminal."""
    (tmp_path / "m.yaml").write_text(MARKUP)
    assert main(["analyze", str(tmp_path / "m.yaml"), "--all", "--width", "160"]) == 0
    out = capsys.readouterr().out
    for name in ("[bold red]net[/]", "[/]", "[link=http://evil]x[/link]", "e\\x1b[31mred"):
        assert name in out
    assert "\x1b" not in out
    (tmp_path / "plan.yaml").write_text("name: p\ninput: [3, 16, 16]\ncandidates:\n  '[/]':\n    single: m.yaml\n"
                                        "  '[b]two':\n    single: m.yaml\n")
    for width in ("160", "80"):
        assert main(["compare", str(tmp_path / "plan.yaml"), "--device", "raspi4", "--width", width]) == 0
        out = capsys.readouterr().out
        assert "[/]" in out and "[b]two" in out


@pytest.mark.parametrize("redirect", [">/dev/full", ">&-"])
def test_stdout_that_cannot_be_written_is_an_error_not_a_bug(redirect: str) -> None:
    import os

    if redirect == ">/dev/full" and not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    r = subprocess.run(f"{sys.executable} -m convscope analyze zoo:vgg11-cifar --json - {redirect}", shell=True,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "cannot write to stdout" in r.stderr
    assert "internal error" not in r.stderr and "Traceback" not in r.stderr and "Exception ignored" not in r.stderr


def test_a_factory_that_prints_leaves_json_on_stdout_intact(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("torch")
    (tmp_path / "talk.py").write_text("import torch.nn as nn\nprint('HELLO AT IMPORT')\n"
                                      "class Net(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
                                      "        self.c = nn.Conv2d(3, 4, 3)\n    def forward(self, x):\n"
                                      "        print('shape', x.shape)\n        return self.c(x)\n"
                                      "def make():\n    print('HELLO FROM FACTORY')\n    return Net()\n")
    assert main(["analyze", f"{tmp_path}/talk.py:make", "--input", "3,16,16", "--json", "-"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["model"] == "make" and "HELLO FROM FACTORY" in err and "HELLO AT IMPORT" in err


@pytest.mark.parametrize("command", ["analyze", "compare"])
def test_an_output_that_cannot_be_written_does_not_cost_the_others(tmp_path, capsys, command) -> None:  # type: ignore[no-untyped-def]
    import os

    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    from pathlib import Path

    ref = "zoo:vgg11-cifar" if command == "analyze" else str(Path(__file__).parents[1] / "examples/camera/plan.yaml")
    html = tmp_path / "r.html"
    assert main([command, ref, "--device", "raspi4", "--json", "/dev/full", "--html", str(html)]) == 2
    out, err = capsys.readouterr()
    assert html.stat().st_size > 1000 and f"wrote {html}" in out
    assert ("verdict" if command == "compare" else "summary at") in out  # the table was printed too
    assert "--json /dev/full: cannot write" in err and "(the other outputs were written)" in err
    assert main([command, ref, "--device", "raspi4", "--json", str(tmp_path / "r.json"), "--html", "/dev/full"]) == 2
    out, err = capsys.readouterr()
    assert json.loads((tmp_path / "r.json").read_text()) and "wrote /dev/full" not in out


def test_calibrate_refuses_an_input_without_a_model(capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["calibrate", "--input", "3,16,16"]) == 2
    assert "--input 3,16,16 applies to the MODELs given, and none is" in capsys.readouterr().err


@pytest.mark.parametrize("arch,message", [
    ("-1" + "-0" * 21, "has an empty one at position 1"),
    ("0--0" + "-0" * 20, "has an empty one at position 2"),
    ("0" + "-0" * 21 + "-", "has an empty one at position 23"),
    ("0" + "-0" * 20, "needs 22 block choices, got 21"),
    ("0" + "-9" * 21, "'9' is not one of 0..8"),
])
def test_fbnet_architecture_strings_are_checked(arch: str, message: str, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["analyze", f"zoo:fbnet:{arch}"]) == 2
    assert message in capsys.readouterr().err


def test_fbnet_names_may_be_joined_by_spaces() -> None:
    from convscope.zoo.fbnet import CHOICES, parse_ops

    assert parse_ops("  ".join([CHOICES[1]] * 22)) == [CHOICES[1]] * 22
    assert parse_ops("-".join(["3"] * 22)) == [CHOICES[3]] * 22


def test_a_resolution_that_fails_does_not_cost_the_others(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "r.json"
    assert main(["analyze", "zoo:vgg11-cifar", "--res", "1,32,64", "--device", "raspi4", "--json", str(out)]) == 2
    printed, err = capsys.readouterr()
    d = json.loads(out.read_text())
    assert [r["input"][1] for r in d["results"]] == [32, 64] and [e["resolution"] for e in d["errors"]] == [1]
    assert printed.count("summary at") == 2 and "vgg11-cifar at 1x1" in err and "(the other 2 resolution(s)" in err
    assert main(["analyze", "zoo:vgg11-cifar", "--res", "1,2"]) == 2  # none works: the errors, nothing else
    assert "at 1x1" in capsys.readouterr().err

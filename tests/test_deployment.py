"""Deployment plans: parsing errors, the arithmetic of each plan kind on hand-made networks, the
verdict's tie rule.  A fake predictor (t = MACs / 1e8 ms, band ±10%) makes the numbers exact."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from convscope.analyses.deployment import CandidateResult, Constraints, NetworkResult, compare, decide, load_plan, \
    plan_graphs
from convscope.cli import main
from convscope.errors import SpecError
from convscope.units import fmt_ms
from convscope.results import LatencyPrediction

NET = """name: {name}
input: [3, 32, 32]
layers:
  - conv: {{out: {c}, k: 3, name: a}}
  - relu
  - conv: {{out: {c}, k: 3, s: 2, name: b}}
  - relu
  - conv: {{out: {c}, k: 3, name: c}}
  - gap
  - linear: {{out: 4, name: fc}}
"""
HEAD = """name: head
input: [8, 16, 16]
layers:
  - conv: {out: 8, k: 3, name: h}
  - gap
  - linear: {out: 2, name: fc}
"""


def fake(graph, device, **kw):  # type: ignore[no-untyped-def]
    from convscope.analyses.cost import cost

    if device == "nowhere":
        from convscope.errors import InputError

        raise InputError("unknown device 'nowhere'")
    ms = cost(graph).total.macs / 1e8
    return LatencyPrediction("analytic", device, "test", 1, ms, 0.9 * ms, 1.1 * ms)


@pytest.fixture
def nets(tmp_path: Path) -> Path:
    for name, c in (("big", 16), ("small", 8), ("tiny", 2)):
        (tmp_path / f"{name}.yaml").write_text(NET.format(name=name, c=c))
    (tmp_path / "head.yaml").write_text(HEAD)
    return tmp_path


def plan(tmp: Path, body: str, extra: str = "") -> Path:
    p = tmp / "plan.yaml"
    p.write_text(f"name: test\ninput: [3, 32, 32]\n{extra}device: profile-x\ncandidates:\n{body}")
    return p


def macs(tmp: Path, name: str, shape=(3, 32, 32)) -> int:  # type: ignore[no-untyped-def]
    import convscope

    return convscope.analyze(str(tmp / f"{name}.yaml"), input=shape).totals.macs


def test_single(nets: Path) -> None:
    cmp = compare(str(plan(nets, "  one:\n    single: big.yaml\n")), predictor=fake)
    c = cmp.candidate("one")
    assert c.macs_per_frame == macs(nets, "big")
    assert c.latency_ms == pytest.approx(macs(nets, "big") / 1e8)
    assert c.worst_ms == c.latency_ms and c.fps == pytest.approx(1000 / c.latency_ms)
    assert c.weight_bytes == 4 * c.networks[0].analysis.totals.params


def test_switch_weights_by_schedule_and_keeps_all_resident(nets: Path) -> None:
    body = ("  sw:\n    switch:\n      networks: {day: big.yaml, night: small.yaml}\n"
            "      schedule: {day: 0.75, night: 0.25}\n")
    c = compare(str(plan(nets, body)), predictor=fake).candidate("sw")
    big, small = macs(nets, "big"), macs(nets, "small")
    assert c.macs_per_frame == pytest.approx(0.75 * big + 0.25 * small)
    assert c.latency_ms == pytest.approx((0.75 * big + 0.25 * small) / 1e8)
    assert c.worst_ms == pytest.approx(big / 1e8)
    assert c.weight_bytes == sum(n.analysis.totals.weight_bytes for n in c.networks)


def test_switch_with_one_resident_adds_the_swap_to_the_worst_case(nets: Path) -> None:
    body = "  sw:\n    switch:\n      networks: {a: big.yaml, b: small.yaml}\n      resident: one\n      swap_ms: 7\n"
    c = compare(str(plan(nets, body)), predictor=fake).candidate("sw")
    assert c.latency_ms == pytest.approx((macs(nets, "big") + macs(nets, "small")) / 2 / 1e8)  # uniform schedule
    assert c.worst_ms == pytest.approx(macs(nets, "big") / 1e8 + 7)
    assert c.weight_bytes == max(n.analysis.totals.weight_bytes for n in c.networks)


def test_a_swap_loads_the_specialist_that_then_runs(nets: Path) -> None:
    """Without swap_ms each specialist's load time is its own weights at 200 MB/s, paid on the frame that
    runs it: the worst case is max(t_i + load_i), never the slowest run plus the heaviest load."""
    (nets / "fat.yaml").write_text("name: fat\ninput: [3, 32, 32]\nlayers:\n  - conv: {out: 4, k: 3, s: 4}\n"
                                   "  - flatten\n  - linear: {out: 4000, name: fc}\n")
    body = "  sw:\n    switch:\n      networks: {a: big.yaml, f: fat.yaml}\n      resident: one\n"
    c = compare(str(plan(nets, body)), predictor=fake).candidate("sw")
    big, fat = c.networks
    assert fat.analysis.totals.weight_bytes > 20 * big.analysis.totals.weight_bytes and big.ms > fat.ms
    load = {n.ref: n.analysis.totals.weight_bytes / 200e6 * 1000 for n in c.networks}
    assert c.worst_ms == pytest.approx(max(big.ms + load["big.yaml"], fat.ms + load["fat.yaml"]))
    assert c.worst_ms < big.ms + load["fat.yaml"]
    assert any("'fat.yaml'" in n and fmt_ms(load['fat.yaml']) in n for n in c.notes)


def test_shares_within_rounding_of_one_are_scaled(nets: Path) -> None:
    body = ("  sw:\n    switch:\n      networks: {a: big.yaml, b: small.yaml, c: tiny.yaml}\n"
            "      schedule: {a: 0.3333, b: 0.3333, c: 0.3333}\n")
    c = compare(str(plan(nets, body)), predictor=fake).candidate("sw")
    assert c.macs_per_frame == pytest.approx(sum(macs(nets, n) for n in ("big", "small", "tiny")) / 3)


def test_compare_json_names_backend_and_batch(nets: Path) -> None:
    d = compare(str(plan(nets, "  one:\n    single: big.yaml\n")), predictor=fake).to_dict()
    assert d["backend"] == "test" and d["batch"] == 1 and d["tier"] == "analytic"
    assert all(isinstance(d["candidates"][0][k], float) for k in ("latency_ms", "low_ms", "high_ms", "worst_ms"))


def test_a_cascade_reason_states_the_plans_rate_even_for_an_expert_that_takes_no_time(nets: Path) -> None:
    def free_expert(graph, device, **kw):  # type: ignore[no-untyped-def]
        p = fake(graph, device, **kw)
        return replace(p, ms=0.0, low_ms=0.0, high_ms=0.0) if graph.name == "big" else p
    cmp = compare(str(plan(nets, "  cas:\n    cascade: {gate: tiny.yaml, expert: big.yaml, rate: 0.5}\n")),
                  predictor=free_expert)
    text = " ".join(cmp.verdict.reasons)
    assert "on 50% of them" in text and "never" not in text


def test_parallel_is_the_sum(nets: Path) -> None:
    c = compare(str(plan(nets, "  par:\n    parallel: [big.yaml, small.yaml, tiny.yaml]\n")), predictor=fake).candidate("par")
    total = macs(nets, "big") + macs(nets, "small") + macs(nets, "tiny")
    assert c.macs_per_frame == total and c.latency_ms == pytest.approx(total / 1e8) == pytest.approx(c.worst_ms)
    # big last: its peak (a's and its relu's outputs, 2 × 16×32×32×4 B) is above the others' with the frame held
    assert c.peak_activation_bytes == 2 * 16 * 32 * 32 * 4


def test_a_head_written_for_another_map_size_is_noted(nets: Path) -> None:
    (nets / "head8.yaml").write_text(HEAD.replace("input: [8, 16, 16]", "input: [8, 8, 8]"))
    body = "  tr:\n    trunk: {network: small.yaml, cut: b}\n    heads: [head8.yaml]\n"
    c = compare(str(plan(nets, body)), predictor=fake).candidate("tr")
    assert c.networks[1].analysis.input == (8, 16, 16)
    assert c.notes == ("head 1 'head8.yaml' declares input [8, 8, 8]; it runs on the trunk's output [8, 16, 16], "
                       "and is analysed there",)


def test_peak_activations_keep_an_input_that_a_later_network_reads(nets: Path) -> None:
    frame = 3 * 32 * 32 * 4
    big_peak = 2 * 16 * 32 * 32 * 4  # conv a's output and its relu's; the frame is freed after a
    (nets / "head2.yaml").write_text(HEAD.replace("out: 8, k: 3", "out: 64, k: 3"))
    body = ("  twice:\n    parallel: [big.yaml, big.yaml]\n"
            "  big_gate:\n    cascade: {gate: big.yaml, expert: tiny.yaml, rate: 0.5}\n"
            "  no_expert:\n    cascade: {gate: tiny.yaml, expert: big.yaml, rate: 0}\n"
            "  heads:\n    trunk: {network: small.yaml, cut: b}\n    heads: [head2.yaml, head2.yaml]\n"
            "  only_small:\n    switch:\n      networks: {day: small.yaml, night: big.yaml}\n"
            "      schedule: {day: 1.0, night: 0}\n      resident: one\n")
    cmp = compare(str(plan(nets, body)), predictor=fake)
    assert cmp.candidate("twice").networks[0].peak == big_peak
    assert cmp.candidate("twice").peak_activation_bytes == big_peak + frame  # the frame waits for the second
    assert cmp.candidate("big_gate").peak_activation_bytes == big_peak + frame  # ... and for the expert
    assert cmp.candidate("no_expert").peak_activation_bytes == frame + 2 * 32 * 32 * 4  # tiny alone: frame and a
    # head2: the trunk's output (8×16×16) held under the first head's conv (64×16×16) and its pooled output
    cut, conv = 8 * 16 * 16 * 4, 64 * 16 * 16 * 4
    assert cmp.candidate("heads").peak_activation_bytes == cut + conv + 64 * 4
    sw = cmp.candidate("only_small")  # the night network never runs: it is never loaded and sets no peak
    small = sw.networks[0].analysis.totals
    assert sw.peak_activation_bytes == small.peak_activation_bytes == 2 * 8 * 32 * 32 * 4
    assert sw.weight_bytes == small.weight_bytes


def test_trunk_runs_the_cut_once_and_every_head(nets: Path) -> None:
    body = "  tr:\n    trunk: {network: small.yaml, cut: b}\n    heads: [head.yaml, head.yaml]\n"
    c = compare(str(plan(nets, body)), predictor=fake).candidate("tr")
    trunk, h1, h2 = c.networks
    assert trunk.analysis.layers[-1].name == "b" and trunk.analysis.totals.macs == 8 * 32 * 32 * 27 + 8 * 16 * 16 * 72
    assert h1.analysis.input == (8, 16, 16)  # the heads take the trunk's output shape
    assert not c.notes
    assert c.macs_per_frame == trunk.analysis.totals.macs + 2 * macs(nets, "head", (8, 16, 16))
    body_one = body + "    run: one\n    schedule: [0.25, 0.75]\n"
    one = compare(str(plan(nets, body_one)), predictor=fake).candidate("tr")
    assert one.macs_per_frame == trunk.analysis.totals.macs + macs(nets, "head", (8, 16, 16))


def test_cascade_expected_and_worst(nets: Path) -> None:
    c = compare(str(plan(nets, "  cas:\n    cascade: {gate: tiny.yaml, expert: big.yaml, rate: 0.2}\n")),
                predictor=fake).candidate("cas")
    tiny, big = macs(nets, "tiny"), macs(nets, "big")
    assert c.macs_per_frame == pytest.approx(tiny + 0.2 * big)
    assert c.latency_ms == pytest.approx((tiny + 0.2 * big) / 1e8)
    assert c.worst_ms == pytest.approx((tiny + big) / 1e8)
    assert c.low_ms == pytest.approx(0.9 * c.latency_ms) and c.high_ms == pytest.approx(1.1 * c.latency_ms)


def test_the_same_network_is_analysed_once(nets: Path) -> None:
    calls = []

    def counting(graph, device, **kw):  # type: ignore[no-untyped-def]
        calls.append(graph.name)
        return fake(graph, device)

    body = "  a:\n    single: big.yaml\n  b:\n    cascade: {gate: tiny.yaml, expert: big.yaml, rate: 0.5}\n"
    compare(str(plan(nets, body)), predictor=counting)
    assert sorted(calls) == ["big", "tiny"]


def test_plan_graphs_are_the_distinct_networks_where_they_run(nets: Path) -> None:
    body = ("  a:\n    single: big.yaml\n  b:\n    cascade: {gate: tiny.yaml, expert: big.yaml, rate: 0.5}\n"
            "  tr:\n    trunk: {network: small.yaml, cut: b}\n    heads: [head.yaml, head.yaml]\n")
    gs = plan_graphs(str(plan(nets, body)))
    got = sorted((g.name, g.input_shape, g.outputs[0]) for g in gs)
    assert [(n, s) for n, s, _ in got] == [("big", (3, 32, 32)), ("head", (8, 16, 16)), ("small[:b]", (3, 32, 32)),
                                           ("tiny", (3, 32, 32))]
    assert dict((n, o) for n, _, o in got)["small[:b]"] == "b"  # the trunk, cut where the plan cuts it


def test_calibrate_takes_a_plan_and_refuses_input_with_it(nets: Path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    import convscope.backends.calibrate as cal

    seen = []

    def stop_after_recording(graphs, **kw):  # type: ignore[no-untyped-def]
        seen.append(graphs)
        raise SystemExit(0)  # what calibrate would time is all this test needs

    monkeypatch.setattr(cal, "calibrate", stop_after_recording)
    p = str(plan(nets, "  a:\n    cascade: {gate: tiny.yaml, expert: big.yaml, rate: 0.5}\n"))
    with pytest.raises(SystemExit):
        main(["calibrate", p])
    assert sorted(g.name for g in seen[0]) == ["big", "tiny"]
    assert main(["calibrate", p, "--input", "3,32,32"]) == 2
    assert "the plan states its input" in capsys.readouterr().err


def _cand(name: str, ms: float, band: float = 0.05, **kw) -> CandidateResult:  # type: ignore[no-untyped-def]
    return CandidateResult(name, "single", ms, ms * (1 - band), ms * (1 + band), ms, 1e9, kw.get("w", 1000), 1000, ())


def test_verdict_tie_rule() -> None:
    v = decide([_cand("a", 10.0), _cand("b", 10.8), _cand("c", 20.0)], Constraints())
    assert v.best == "a" and v.tied_with == ("b",)  # [9.5, 10.5] overlaps [10.26, 11.34]
    v = decide([_cand("a", 10.0), _cand("b", 11.5)], Constraints())
    assert v.best == "a" and v.tied_with == () and v.margin == pytest.approx(1.15)


def test_verdict_respects_constraints() -> None:
    k = Constraints(fps=50, weights_mb=0.002)
    v = decide([_cand("fast_but_heavy", 10.0, w=5000), _cand("ok", 15.0), _cand("slow", 30.0)], k)
    assert v.best == "ok" and v.meets_constraints
    assert dict(v.failing)["slow"].startswith("33.3 fps < 50 fps")
    assert "weights 0.01 MB > 0.002 MB" in dict(v.failing)["fast_but_heavy"]
    none = decide([_cand("x", 30.0), _cand("y", 40.0)], k)
    assert none.best == "x" and not none.meets_constraints


def test_reasons_name_the_facts(nets: Path) -> None:
    body = ("  one:\n    single: big.yaml\n  tod:\n    switch:\n      networks: {day: big.yaml, night: big.yaml}\n"
            "  gate:\n    cascade: {gate: tiny.yaml, expert: big.yaml, rate: 0.1}\n")
    cmp = compare(str(plan(nets, body)), predictor=fake)
    text = " ".join(cmp.verdict.reasons)
    assert cmp.verdict.best == "gate"
    assert "the specialists of 'tod' save nothing per frame" in text
    assert "the expert" in text and "on 10% of them" in text
    d = cmp.to_dict()
    assert d["schema_version"] == 1 and d["verdict"]["best"] == "gate"
    assert {"name", "kind", "macs_per_frame", "latency_ms", "low_ms", "high_ms", "worst_ms", "fps", "weight_bytes",
            "peak_activation_bytes", "measured_ms", "networks"} <= set(d["candidates"][0])
    assert set(d["candidates"][0]["networks"][0]) >= {"ref", "border_layer", "unproductive_share"}
    none = compare(str(plan(nets, body, "constraints: {fps: 1e9}\n")), predictor=fake)
    text = " ".join(none.verdict.reasons)
    assert "no candidate meets the constraints" in text and "'gate' fails" in text
    assert "'one' does not meet the constraints" in text and "'tod' does not meet the constraints" in text


# --- every plan error: a clear message naming the file and position, exit status 2 -------------------
ERRORS = {
    "empty_candidate_name": ("  '':\n    single: big.yaml\n", r"plan.yaml:5:3: a candidate needs a name, got ''"),
    "missing_network": ("  one:\n    single: nope.yaml\n", r"plan.yaml:6:13: candidate 'one', network: network file 'nope.yaml' not found"),
    "unknown_cut": ("  t:\n    trunk: {network: big.yaml, cut: layer9}\n    heads: [head.yaml]\n",
                    r"cannot cut 'big.yaml' at 'layer9': no layer named 'layer9'"),
    "head_does_not_fit": ("  t:\n    trunk: {network: big.yaml, cut: b}\n    heads: [big.yaml]\n",
                          r"head 1 does not fit the trunk.s output \[16, 16, 16\]: .big.yaml. takes 3 input channels"),
    "schedule_sum": ("  s:\n    switch:\n      networks: {a: big.yaml, b: small.yaml}\n      schedule: {a: 0.5, b: 0.4}\n",
                     r"schedule: shares must sum to 1 \(within 0.001\), they sum to 0.9"),
    "negative_rate": ("  c:\n    cascade: {gate: tiny.yaml, expert: big.yaml, rate: -0.1}\n",
                      r"'rate' \(the share of frames the expert runs on\) must be in \[0, 1\], got -0.1"),
    "unknown_kind": ("  c:\n    ensemble: [big.yaml]\n", r"candidate 'c' needs exactly one of single, switch, parallel, trunk, cascade"),
    "unknown_schedule_key": ("  s:\n    switch:\n      networks: {a: big.yaml}\n      schedule: {b: 1.0}\n",
                             r"'b' is not one of the networks \(a\)"),
    "schedule_misses_a_network": ("  s:\n    switch:\n      networks: {a: big.yaml, b: small.yaml}\n      schedule: {a: 1.0}\n",
                                  r"plan.yaml:8:17: candidate 's': schedule: no share for 'b'"),
    "swap_without_one_resident": ("  s:\n    switch:\n      networks: {a: big.yaml, b: small.yaml}\n      swap_ms: 3\n",
                                  r"plan.yaml:8:7: candidate 's': 'swap_ms' .* needs resident: one"),
    "cascade_without_rate": ("  c:\n    cascade: {gate: tiny.yaml, expert: big.yaml}\n", r"plan.yaml:6:14: candidate 'c': cascade needs 'rate'"),
    "rate_in_yaml_words": ("  c:\n    cascade: {gate: tiny.yaml, expert: big.yaml, rate: true}\n", r"must be in \[0, 1\], got true"),
    "missing_input_in_yaml_words": ("  c:\n    single: big.yaml\n", r"1:1: 'input' is required and must be \[C, H, W\] \(three positive integers\), it is missing"),
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_plan_errors(case: str, nets: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    import re

    body, pattern = ERRORS[case]
    p = plan(nets, body)
    if case.startswith("missing_input"):
        p.write_text(p.read_text().replace("input: [3, 32, 32]\n", ""))
    with pytest.raises(SpecError) as info:
        compare(str(p), predictor=fake)
    assert re.search(pattern, str(info.value)), str(info.value)
    assert str(p) in str(info.value)


def test_the_camera_comparison_fits_80_columns(capsys) -> None:  # type: ignore[no-untyped-def]
    plan = Path(__file__).parents[1] / "examples" / "camera" / "plan.yaml"
    assert main(["compare", str(plan), "--device", "raspi4", "--width", "80"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert any("expected (worst)" in line for line in lines)
    gate = next(line for line in lines if line.lstrip().startswith("gate_then_expert"))
    assert "ms (" in gate  # the cascade's worst case differs from its expected time: in brackets
    one = next(line for line in lines if line.lstrip().startswith("one_big"))
    assert "ms (" not in one


def test_missing_plan_file_and_unknown_device_through_the_cli(nets: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["compare", str(nets / "absent.yaml")]) == 2
    assert "absent.yaml: no such plan file" in capsys.readouterr().err
    with pytest.raises(Exception, match="unknown device 'nowhere'"):
        compare(str(plan(nets, "  one:\n    single: big.yaml\n")), predictor=fake, device="nowhere")


def test_plan_file_is_checked_before_anything_runs(nets: Path) -> None:
    p = plan(nets, "  one:\n    single: big.yaml\n", extra="constraints: {fps: -3}\n")
    with pytest.raises(SpecError, match=r"constraint 'fps' must be a positive number, got -3"):
        load_plan(p)


def test_network_results_serialise() -> None:
    assert NetworkResult.to_dict  # the JSON of a network is exercised in test_reasons_name_the_facts


# --- found by an audit against FORMATS.md / DESIGN.md on plans of its own --------------------------
def test_nan_and_infinite_numbers_are_plan_errors(nets: Path) -> None:
    for body, extra, what in (
        ("  s:\n    switch:\n      networks: {a: big.yaml, b: small.yaml}\n      schedule: {a: .nan, b: 1}\n", "",
         "the share of 'a' must be a number >= 0, got .nan"),
        ("  one:\n    single: big.yaml\n", "constraints: {fps: .inf}\n", "constraint 'fps' must be a positive number"),
    ):
        with pytest.raises(SpecError, match=what) as info:
            compare(str(plan(nets, body, extra)), predictor=fake)
        assert f"{nets / 'plan.yaml'}:" in str(info.value)


def test_an_unknown_device_names_the_plan_line_or_the_option(nets: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    p = nets / "dev.yaml"
    p.write_text("name: d\ninput: [3, 32, 32]\ndevice: raspi5\ncandidates:\n  one:\n    single: big.yaml\n")
    assert main(["compare", str(p)]) == 2
    assert f"{p}:3:9: device 'raspi5': 'raspi5' is not a device profile (did you mean raspi4?)" in capsys.readouterr().err
    assert main(["compare", str(p), "--device", "nowhere"]) == 2
    err = capsys.readouterr().err
    assert "--device nowhere:" in err and str(p) not in err


def test_compare_predicts_with_the_profiles_own_runtime_like_analyze(nets: Path) -> None:
    from convscope.api import analyze

    p = nets / "r.yaml"
    p.write_text("name: r\ninput: [3, 32, 32]\ndevice: raspi4\ncandidates:\n  one:\n    single: big.yaml\n")
    net = compare(str(p)).candidates[0].networks[0].analysis.latency
    alone = analyze(str(nets / "big.yaml"), device="raspi4").latency
    assert net is not None and alone is not None
    assert (net.backend, net.ms) == (alone.backend, alone.ms) == ("tflite", alone.ms)


def test_python_factories_resolve_relative_to_the_plan(nets: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (nets / "models").mkdir()
    code = ("import torch.nn as nn\n"
            "def small():\n    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1),"
            " nn.Flatten(), nn.Linear(4, 2))\n")
    (nets / "models" / "facts.py").write_text(code)
    (nets / "planpkg_nets.py").write_text(code)
    p = nets / "f.yaml"
    p.write_text("name: f\ninput: [3, 32, 32]\ndevice: raspi4\ncandidates:\n  file:\n    single: models/facts.py:small\n"
                 "  module:\n    single: planpkg_nets:small\n")
    monkeypatch.chdir(nets / "models")  # neither resolves from the working directory
    got = compare(str(p))
    assert [c.networks[0].analysis.totals.params for c in got.candidates] == [3 * 4 * 9 + 4 + 4 * 2 + 2] * 2


def test_heads_are_analysed_in_the_pixels_of_the_plans_input(nets: Path) -> None:
    """A head behind a trunk sees what the trunk saw: its receptive field, border layer and
    unproductive share are those of trunk + head at the plan's input, not of a 16-px 'image'."""
    (nets / "deep_head.yaml").write_text(
        "name: deep\ninput: [16, 16, 16]\nlayers:\n" + "".join(f"  - conv: {{out: 16, k: 3, name: h{i}}}\n" for i in range(8))
        + "  - gap\n  - linear: {out: 2, name: fc}\n")
    p = plan(nets, "  t:\n    trunk: {network: big.yaml, cut: b}\n    heads: [deep_head.yaml]\n")
    head = compare(str(p), predictor=fake).candidates[0].networks[1]
    rows = {r.name: r for r in head.analysis.layers}
    # trunk up to b: a (3x3), b (3x3 / 2) -> rf 5, jump 2 in image pixels; each head conv adds 2·2
    assert [rows[f"h{i}"].rf_min[0] for i in range(8)] == [9, 13, 17, 21, 25, 29, 33, 37]
    assert head.analysis.border_layer == "h6"  # the first past 32 px (alone, at "16 px", it would be h7)
    assert [r.name for r in head.analysis.layers if r.unproductive] == ["h7"]
    assert head.analysis.unproductive_share[0] == pytest.approx(rows["h7"].params / head.analysis.totals.params)


# --- a second audit: worst cases, channels, lower bounds, cut positions ------------------------------
def test_a_worst_case_counts_only_networks_that_run(nets: Path) -> None:
    body = ("  never:\n    cascade: {gate: tiny.yaml, expert: big.yaml, rate: 0}\n"
            "  sometimes:\n    cascade: {gate: tiny.yaml, expert: big.yaml, rate: 0.5}\n"
            "  only_day:\n    switch:\n      networks: {day: small.yaml, night: big.yaml}\n"
            "      schedule: {day: 1.0, night: 0}\n      resident: one\n"
            "  one_head:\n    trunk: {network: small.yaml, cut: b}\n    heads: [head.yaml, head2.yaml]\n"
            "    run: one\n    schedule: [1.0, 0.0]\n")
    (nets / "head2.yaml").write_text(HEAD.replace("out: 8, k: 3", "out: 64, k: 3"))
    cmp = compare(str(plan(nets, body)), predictor=fake)
    big, small, tiny = (macs(nets, n) / 1e8 for n in ("big", "small", "tiny"))
    assert cmp.candidate("never").worst_ms == pytest.approx(tiny)  # the expert never runs
    assert cmp.candidate("sometimes").worst_ms == pytest.approx(tiny + big)
    day = cmp.candidate("only_day")
    assert day.worst_ms == pytest.approx(small) and not day.notes  # no night network, and no swap to it
    one = cmp.candidate("one_head")
    trunk, h1 = one.networks[0].ms, one.networks[1].ms
    assert one.networks[2].ms > h1 and one.worst_ms == pytest.approx(trunk + h1)


def test_a_network_for_other_channels_is_a_plan_error(nets: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    (nets / "gray.yaml").write_text(NET.format(name="gray", c=8).replace("input: [3, 32, 32]", "input: [1, 32, 32]"))
    for body in ("  g:\n    single: gray.yaml\n", "  t:\n    trunk: {network: gray.yaml, cut: b}\n    heads: [head.yaml]\n",
                 "  c:\n    cascade: {gate: tiny.yaml, expert: gray.yaml, rate: 0.5}\n"):
        with pytest.raises(SpecError, match=r"'gray.yaml' takes 1 input channel\(s\), the plan's input \[3, 32, 32\] has 3"):
            compare(str(plan(nets, body)), predictor=fake)
    p = nets / "zoo_gray.yaml"
    p.write_text("name: z\ninput: [1, 32, 32]\ndevice: profile-x\ncandidates:\n  z:\n    single: zoo:resnet18-cifar\n")
    with pytest.raises(SpecError, match=r"zoo_gray.yaml:6:13: candidate 'z': network 'zoo:resnet18-cifar' takes 3"):
        compare(str(p), predictor=fake)


def test_unknown_ops_and_untimed_layers_are_noted_on_the_candidate(nets: Path) -> None:
    pytest.importorskip("torch")

    def untimed(graph, device, **kw):  # type: ignore[no-untyped-def]
        pred = fake(graph, device)
        return LatencyPrediction(pred.tier, pred.device, pred.backend, 1, pred.ms, pred.low_ms, pred.high_ms,
                                 untimed=("c",))

    (nets / "flipnet.py").write_text(
        "import torch, torch.nn as nn\n"
        "class F(nn.Module):\n    def __init__(self):\n        super().__init__(); self.c = nn.Conv2d(3, 4, 3)\n"
        "    def forward(self, x):\n        return torch.cumsum(self.c(x), dim=3).mean((2, 3))\n"
        "def make():\n    return F()\n"
        "def only():\n    class O(nn.Module):\n        def forward(self, x):\n            return torch.cumsum(x, dim=3)\n"
        "    return O()\n")
    cmp = compare(str(plan(nets, "  f:\n    single: flipnet.py:make\n  b:\n    single: big.yaml\n")), predictor=untimed)
    notes = " ".join(cmp.candidate("f").notes)
    assert "network 'flipnet.py:make': 1 unknown op(s) (cumsum)" in notes and "lower bounds" in notes
    assert "network 'flipnet.py:make': 1 layer(s) could not be timed (c): its latency is a lower bound" in notes
    assert "unknown" not in " ".join(cmp.candidate("b").notes)
    assert cmp.verdict.best == "f" and "its time is a lower bound" in cmp.verdict.reasons[0]
    from convscope.errors import NothingUsable

    with pytest.raises(NothingUsable, match=r"plan.yaml:6:13: candidate 'o', network 'flipnet.py:only': every layer"):
        compare(str(plan(nets, "  o:\n    single: flipnet.py:only\n")), predictor=fake)


def test_a_bad_cut_points_at_the_cut_and_names_what_is_there(nets: Path) -> None:
    p = plan(nets, "  t:\n    trunk: {network: big.yaml, cut: stage9}\n    heads: [head.yaml]\n")
    with pytest.raises(SpecError) as info:
        compare(str(p), predictor=fake)
    col = p.read_text().splitlines()[5].index("stage9") + 1
    assert f"plan.yaml:6:{col}:" in str(info.value)
    assert "accepted: one of its layers, a, layers.1.relu, b, layers.3.relu, c, layers.5.gap, fc" in str(info.value)
    p = plan(nets, "  t:\n    trunk: {network: zoo:resnet18-cifar, cut: stage9}\n    heads: [head.yaml]\n")
    with pytest.raises(SpecError, match=r"such as conv1, bn1, relu, layer1, layer2, layer3, layer4, avgpool, fc"):
        compare(str(p), predictor=fake)


def test_compare_given_a_network_spec_says_so(nets: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["compare", str(nets / "big.yaml")]) == 2
    assert "this is a network spec (it has 'layers'), not a deployment plan" in capsys.readouterr().err


def test_the_html_report_links_each_network_to_its_own_numbers(nets: Path) -> None:
    """Anchors are unique even where names read alike ('x-y'/'z' and 'x'/'y-z'); one head behind two
    different cuts is two sections (its receptive fields differ), drawn in the plan's pixels; a
    network used twice with the same numbers is one section; small weights do not read as 0.0 MB."""
    import re
    from collections import Counter

    from convscope.reports.compare_report import comparison_html

    body = ("  t_late:\n    trunk: {network: small.yaml, cut: b}\n    heads: [head.yaml]\n"
            "  t_early:\n    trunk: {network: small.yaml, cut: a}\n    heads: [head.yaml]\n"
            "  x-y:\n    switch:\n      networks: {z: tiny.yaml}\n"
            "  x:\n    switch:\n      networks: {y-z: big.yaml}\n"
            "  again:\n    single: tiny.yaml\n")
    cmp = compare(str(plan(nets, body)), predictor=fake)
    html = comparison_html(cmp)
    ids = Counter(re.findall(r'id="(net-[^"]+)"', html))
    assert len(ids) == 7 and max(ids.values()) == 1
    assert set(re.findall(r'href="#(net-[^"]+)"', html)) == set(ids)
    assert html.count("the same network and numbers as") == 1  # 'again' repeats x-y's tiny
    assert html.count("behind the trunk, in the plan&#x27;s 32×32 input pixels") == 4  # 2 heads: title + aria
    assert "0.0 MB" not in html and " kB" in html


def test_ctrl_c_during_measure_keeps_the_predictions_and_what_was_measured(nets: Path) -> None:
    """The second network's timing is cut short: the first keeps its figure, the second (a partial
    figure) and the third are left unmeasured, every prediction is kept, and the verdict says so."""
    from types import SimpleNamespace

    calls: list[str] = []

    def measurer(graph):  # type: ignore[no-untyped-def]
        calls.append(graph.name)
        return SimpleNamespace(median_ms=1.0, p10_ms=0.9, p90_ms=1.1, interrupted=len(calls) == 2)

    body = "  a:\n    single: big.yaml\n  b:\n    single: small.yaml\n  c:\n    single: tiny.yaml\n"
    cmp = compare(str(plan(nets, body)), predictor=fake, measure=True, measurer=measurer)
    assert calls == ["big", "small"] and cmp.interrupted and cmp.to_dict()["interrupted"] is True
    assert [c.measured_ms for c in cmp.candidates] == [1.0, None, None]
    assert all(c.latency_ms > 0 for c in cmp.candidates)
    assert any("interrupted" in r and "b, c not measured" in r for r in cmp.verdict.reasons)

    def ctrl_c(graph):  # type: ignore[no-untyped-def]  # while the module is built
        raise KeyboardInterrupt

    cmp = compare(str(plan(nets, body)), predictor=fake, measure=True, measurer=ctrl_c)
    assert cmp.interrupted and all(c.measured_ms is None for c in cmp.candidates)


def test_an_uncalibrated_machine_is_told_to_calibrate_the_plan(nets: Path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("CONVSCOPE_CACHE", str(nets / "empty-cache"))
    p = nets / "local.yaml"
    p.write_text("name: t\ninput: [3, 32, 32]\ncandidates:\n  one:\n    single: big.yaml\n")
    assert main(["compare", str(p)]) == 2
    err = capsys.readouterr().err
    assert "no calibration for this machine" in err and f"`convscope calibrate {p}` times only this plan's" in err


# --- a third audit: keys YAML reads as numbers, ONNX node names, messages in a plan's words -------
def test_switch_networks_named_by_numbers_or_booleans_take_their_schedule(nets: Path) -> None:
    body = ("  hours:\n    switch:\n      networks: {6: small.yaml, 18: big.yaml}\n      schedule: {6: 0.25, 18: 0.75}\n"
            "  onoff:\n    switch:\n      networks: {on: small.yaml, off: big.yaml}\n      schedule: {on: 1.0, off: 0}\n")
    cmp = compare(str(plan(nets, body)), predictor=fake)
    big, small = macs(nets, "big"), macs(nets, "small")
    assert cmp.candidate("hours").macs_per_frame == pytest.approx(0.25 * small + 0.75 * big)
    assert cmp.candidate("onoff").macs_per_frame == pytest.approx(small)
    # YAML 1.2: on/off/yes/no are the words written, never True/False (a candidate named 'no' was 'False')
    assert [n.role for n in cmp.candidate("onoff").networks] == ["on", "off"]
    assert compare(str(plan(nets, "  no:\n    single: small.yaml\n")), predictor=fake).verdict.best == "no"
    with pytest.raises(SpecError, match=r"plan.yaml:8:18: candidate 'hours': schedule: '7' is not one of the "
                                        r"networks \(6, 18\)"):
        compare(str(plan(nets, body.replace("{6: 0.25", "{7: 0.25"))), predictor=fake)


def test_an_onnx_trunk_is_cut_at_its_node_name_in_the_file(nets: Path) -> None:
    pytest.importorskip("onnx")
    import torch
    from torch import nn

    m = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU(),
                      nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    torch.onnx.export(m.eval(), (torch.zeros(1, 3, 32, 32),), str(nets / "net.onnx"), dynamo=False)
    body = "  t:\n    trunk: {network: net.onnx, cut: %s}\n    heads: [head.yaml]\n"
    by_file = compare(str(plan(nets, body % "/2/Conv")), predictor=fake).candidate("t")  # the name Netron shows
    by_path = compare(str(plan(nets, body % "'2'")), predictor=fake).candidate("t")  # the module path
    assert by_file.networks[0].role == by_path.networks[0].role == "trunk up to 2"
    assert by_file.macs_per_frame == by_path.macs_per_frame > 0
    p = nets / "gray_onnx.yaml"  # an ONNX network for other channels: said in the plan's words
    p.write_text("name: g\ninput: [1, 32, 32]\ndevice: profile-x\ncandidates:\n  g:\n    single: net.onnx\n")
    with pytest.raises(SpecError, match=r"gray_onnx.yaml:6:13: candidate 'g': network 'net.onnx' takes 3 input "
                                        r"channel\(s\), the plan's input \[1, 32, 32\] has 1"):
        compare(str(p), predictor=fake)
    assert not by_file.notes  # the file's own size
    p = nets / "small_onnx.yaml"  # the file accepts only 32 px: said on the candidate, not only in the HTML
    p.write_text("name: s\ninput: [3, 16, 16]\ndevice: profile-x\ncandidates:\n  s:\n    single: net.onnx\n")
    notes = compare(str(p), predictor=fake).candidate("s").notes
    assert any("network 'net.onnx': the file fixes its input at [3, 32, 32]" in n for n in notes)


def test_errors_loading_a_network_name_the_candidate_and_the_plans_input(nets: Path) -> None:
    (nets / "facts.py").write_text("import torch.nn as nn\ndef net():\n    return nn.Sequential(nn.Conv2d(3, 4, 3), "
                                   "nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))\n")
    p = nets / "gray.yaml"
    p.write_text("name: g\ninput: [1, 32, 32]\ndevice: profile-x\ncandidates:\n  g:\n    single: facts.py:net\n")
    with pytest.raises(SpecError, match=r"candidate 'g': network 'facts.py:net': .*expects 3 input channels but gets 1 "
                                        r"\(the plan's input is \[1, 32, 32\]\)") as e:
        compare(str(p), predictor=fake)
    assert "--input" not in str(e.value)
    p.write_text("name: g\ninput: [3, 32, 32]\ndevice: profile-x\ncandidates:\n  z:\n    single: facts.py:nett\n")
    with pytest.raises(SpecError, match=r"gray.yaml:6:13: candidate 'z': network 'facts.py:nett': .*'nett' is not "
                                        r"defined in .*facts.py \(it defines: net\)"):
        compare(str(p), predictor=fake)
    p.write_text("name: g\ndevice: profile-x\ncandidates:\n  z:\n    single: big.yaml\n")
    with pytest.raises(SpecError, match=r"'input' is required and must be \[C, H, W\].*it is missing"):
        compare(str(p), predictor=fake)


def test_a_specialist_that_never_runs_is_left_out_of_the_reasons(nets: Path) -> None:
    body = ("  one_big:\n    single: small.yaml\n"
            "  sw:\n    switch:\n      networks: {x: tiny.yaml, y: small.yaml}\n      schedule: {x: 0.0, y: 1.0}\n")
    cmp = compare(str(plan(nets, body)), predictor=fake)
    line, = [r for r in cmp.verdict.reasons if "specialists of 'sw'" in r]
    assert "save nothing per frame" in line and "2 of them keep" in line  # y is as costly; both stay resident


def test_an_html_report_needs_a_file_name(nets: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    p = plan(nets, "  a:\n    single: small.yaml\n")
    for cmd in (["compare", str(p)], ["analyze", str(nets / "small.yaml")]):
        assert main([*cmd, "--html", "-"]) == 2
        assert "needs a file name for the report" in capsys.readouterr().err
    assert not (Path.cwd() / "-").exists()


def test_a_cut_at_a_pytorch_module_is_at_what_it_returns() -> None:
    """A trunk cut at a container module ends at what it returns: not at the last layer it ran (a side
    computation), and never at one of several tensors it returns or of several calls, silently."""
    import torch.nn as nn

    from convscope.api import load_graph
    from convscope.errors import GraphError
    from convscope.ir.transform import subgraph_until

    class Side(nn.Module):
        def __init__(self, two: bool) -> None:
            super().__init__()
            self.two, self.c1, self.c2 = two, nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 16, 3, padding=1)

        def forward(self, x):  # type: ignore[no-untyped-def]
            y = self.c1(x).relu()
            if self.two:
                return y, self.c2(y)
            self.stat = self.c2(y)  # a statistic kept on the side: not the block's output
            return y

    class Net(nn.Module):
        def __init__(self, two: bool) -> None:
            super().__init__()
            self.stem, self.mid, self.blk = nn.Conv2d(3, 8, 3, 2, 1), Side(two), nn.Sequential(nn.Conv2d(8, 8, 1))

        def forward(self, x):  # type: ignore[no-untyped-def]
            y = self.mid(self.stem(x))
            y = y[0] if isinstance(y, tuple) else y
            return self.blk(self.blk(y))

    g = load_graph(Net(False), input=(3, 32, 32))
    cut = subgraph_until(g, "mid")
    assert cut.outputs == ("mid.relu",) and "mid.c2" not in cut  # was cut at mid.c2, the last layer run
    with pytest.raises(GraphError, match=r"'mid' returns 2 tensors \(mid.relu, mid.c2\); a trunk has one output"):
        subgraph_until(load_graph(Net(True), input=(3, 32, 32)), "mid")
    with pytest.raises(GraphError, match="'blk' is called 2 times, so its output is not one map"):
        subgraph_until(g, "blk")


@pytest.mark.parametrize("width", [100, 120, 130, 160])
def test_the_table_with_measurements_keeps_every_column_readable(nets: Path, width: int) -> None:
    """With the measured column the full table needs more than 120 columns: at 120 rich squeezed
    the 'kind' column to nothing; below the full table's width the narrow one is drawn."""
    import io
    from types import SimpleNamespace

    from rich.console import Console

    from convscope.reports.compare_report import render_comparison

    body = "  first:\n    single: big.yaml\n  second:\n    parallel: [small.yaml, tiny.yaml]\n"
    cmp = compare(str(plan(nets, body)), predictor=fake, measure=True,
                  measurer=lambda g: SimpleNamespace(median_ms=1.0, p10_ms=0.9, p90_ms=1.1, interrupted=False))
    out = io.StringIO()
    render_comparison(cmp, Console(file=out, width=width, highlight=False))
    header = out.getvalue().splitlines()[2]
    assert "┃┃" not in header and "measured" in header
    assert ("kind" in header) == (width >= 134)

"""`measure`: the structure of a result, runs counted, threads reported, interference set aside,
Ctrl-C keeping partial results, the CLI's JSON (FORMATS.md §5), plans."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from fixtures import TINY

from convscope.backends import _interference as itf
from convscope.backends import measure as M
from convscope.backends.measure import measure_graph, time_runs
from convscope.cli import main
from convscope.errors import InputError
from convscope.frontends.from_spec import graph_from_spec_text

FIELDS = {"schema_version", "model", "backend", "device", "threads", "batch", "input", "median_ms", "p10_ms",
          "p90_ms", "runs"}


@pytest.fixture
def tiny():  # type: ignore[no-untyped-def]
    return graph_from_spec_text(TINY, file="tiny.yaml")


def test_measure_a_tiny_network(tiny) -> None:  # type: ignore[no-untyped-def]
    m = measure_graph(tiny, threads=1, batch=2, time_limit_s=0.5, min_runs=5)
    assert m.threads == 1 and m.batch == 2 and m.input == (3, 16, 16) and m.backend == "torch"
    assert m.runs == len(m.times_ms) >= 3 and m.warmup_runs >= 3
    assert m.p10_ms <= m.median_ms <= m.p90_ms
    assert min(m.times_ms) <= m.median_ms <= max(m.times_ms)
    d = m.to_dict()
    assert FIELDS <= set(d) and d["schema_version"] == 1 and d["input"] == [3, 16, 16]
    json.dumps(d, allow_nan=False)


def test_default_threads_are_reported(tiny, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert measure_graph(tiny, time_limit_s=0.2, min_runs=3).threads == 1


def test_disturbed_runs_are_set_aside(monkeypatch: pytest.MonkeyPatch) -> None:
    flags = iter([False, True] * 100)
    monkeypatch.setattr(itf, "disturbance", lambda a, b, **kw: itf.Disturbance(0.5, None, None, next(flags)))
    t = time_runs(lambda: None, min_runs=10, time_limit_s=5, warmup=1, max_runs=40)
    assert len(t.clean) >= 10 and len(t.disturbed) >= 9 and not t.mixed
    assert t.used == t.clean


def test_a_busy_machine_is_flagged_not_hidden(monkeypatch: pytest.MonkeyPatch, tiny) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(itf, "disturbance", lambda a, b, **kw: itf.Disturbance(0.5, None, None, True))
    monkeypatch.setattr(M.time, "sleep", lambda s: None)
    m = measure_graph(tiny, threads=1, time_limit_s=0.1, min_runs=3)
    assert m.interference and m.disturbed_runs == m.runs > 0
    assert any("disturbed by other processes" in n for n in m.notes)


def test_ctrl_c_keeps_the_runs_so_far() -> None:
    calls = {"n": 0}

    def call() -> None:
        calls["n"] += 1
        if calls["n"] > 8:
            raise KeyboardInterrupt

    t = time_runs(call, min_runs=100, time_limit_s=60, warmup=2, warmup_s=0)
    assert t.interrupted and t.warmup == 2 and len(t.clean) + len(t.disturbed) == 6
    calls["n"] = 7
    with pytest.raises(KeyboardInterrupt):  # nothing measured yet: nothing to keep
        time_runs(call, min_runs=100, time_limit_s=60, warmup=5, warmup_s=0)


def test_stops_when_stable() -> None:
    t = time_runs(lambda: time.sleep(0.001), min_runs=10, time_limit_s=30, warmup=1)
    assert t.stable and t.elapsed_s < 30


def test_a_network_too_fast_for_the_minimum_time_is_judged_on_its_many_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """max_runs reached before min_time_s (a 0.16 ms network): the halves of 200 equal runs agree, so
    the median settled (it was reported as not settled)."""
    monkeypatch.setattr(itf, "disturbance", lambda *a, **k: itf.Disturbance(0.0, 0.0, 0.0, False))
    clock = iter(range(10**6))
    monkeypatch.setattr(M.time, "perf_counter", lambda: next(clock) * 1e-4)  # every call 0.1 ms later
    t = time_runs(lambda: None, min_runs=10, time_limit_s=30, min_time_s=10, warmup=1, warmup_s=0, max_runs=200)
    assert len(t.clean) == 200 and t.stable


def test_enqueued_calls_are_waited_for_once_per_run() -> None:
    """calibrate on cuda: the calls of a run only enqueue work; ``end`` (the synchronisation) runs
    once per run, inside the timed window, so the work it waits for is in the figure."""
    log: list[str] = []

    def end() -> None:
        log.append("end")
        time.sleep(0.004)  # the queued work the synchronisation waits for

    t = time_runs(lambda: log.append("call"), inner=4, min_runs=5, time_limit_s=5, warmup=1, warmup_s=0, end=end)
    runs = len(t.clean) + len(t.disturbed)
    assert log.count("end") == runs + t.warmup and log.count("call") == 4 * runs + t.warmup
    assert min(t.clean) >= 4.0 / 4  # 4 ms of waiting shared by the 4 calls of each run


def test_cpu_runner_has_no_separate_queue(tiny) -> None:  # type: ignore[no-untyped-def]
    from convscope.backends._runners import prepare, threads_set

    with threads_set(1):
        r = prepare(tiny, backend="torch", batch=1, dtype="fp32", threads=1, label="cpu")
        assert r.enqueue is None and r.sync() is None
        assert tuple(r.call().shape) == (1, 4)


def test_interference_signal_from_samples() -> None:
    a = itf.Sample(0.0, 0.0, 0, 0, 0)
    busy = itf.disturbance(a, itf.Sample(0.1, 0.1, 40_000, 10, 0))
    quiet = itf.disturbance(a, itf.Sample(0.1, 0.1, 0, 10, 0))
    assert busy.disturbed and busy.stall_share == pytest.approx(0.4)
    assert not quiet.disturbed


@pytest.mark.skipif("psi" not in itf.available(), reason="needs Linux CPU pressure information")
def test_a_real_competing_process_is_detected(tiny) -> None:  # type: ignore[no-untyped-def]
    import subprocess
    import sys

    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2 * itf._NCPU)]
    try:
        time.sleep(0.3)
        m = measure_graph(tiny, threads=itf._NCPU, time_limit_s=0.5, min_runs=50)
    finally:
        for h in hogs:
            h.kill()
    assert m.disturbed_runs > 0


def test_bad_arguments(tiny) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InputError, match="cannot run here"):
        measure_graph(tiny, backend="tflite")
    with pytest.raises(InputError, match="batch must be a positive integer"):
        measure_graph(tiny, batch=0)
    with pytest.raises(InputError, match="int8"):
        measure_graph(tiny, dtype="int8")


def test_cli_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY)
    assert main(["measure", str(spec), "--threads", "1", "--time-limit", "0.3", "--min-runs", "3", "--json", "-"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert FIELDS <= set(d) and d["threads"] == 1 and d["model"] == "tiny" and d["ref"] == str(spec)
    assert main(["measure", str(spec), "--backend", "torch", "--batch", "0"]) == 2
    for bad in ("nan", "inf", "0"):
        assert main(["measure", str(spec), "--time-limit", bad]) == 2
        assert "--time-limit: must be a positive finite number" in capsys.readouterr().err
    assert main(["measure", str(spec), "--threads", "1", "--time-limit", "0.2", "--width", "120"]) == 0
    assert " thread" in capsys.readouterr().out


def test_measure_a_plan(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("convscope.analyses.deployment")
    (tmp_path / "a.yaml").write_text(TINY)
    (tmp_path / "plan.yaml").write_text("""name: p
input: [3, 16, 16]
candidates:
  one:
    single: a.yaml
  both:
    parallel: [a.yaml, a.yaml]
""")
    assert main(["measure", str(tmp_path / "plan.yaml"), "--threads", "1", "--time-limit", "0.2",
                 "--min-runs", "3", "--json", "-"]) == 0
    d = json.loads(capsys.readouterr().out)
    one, both = d["candidates"]
    assert one["name"] == "one" and both["measured_ms"] == pytest.approx(2 * one["measured_ms"])
    assert len(both["networks"]) == 2 and both["networks"][0]["threads"] == 1
    # the set-up once at the top, like `measure MODEL` (FORMATS.md §5), and each candidate's median
    assert (d["backend"], d["threads"], d["batch"], d["input"]) == ("torch", 1, 1, [3, 16, 16])
    assert d["device"] == both["networks"][0]["device"] and one["median_ms"] == one["measured_ms"]
    # a batch of 2: a candidate's figures are per frame, its networks' per batch (one call)
    assert main(["measure", str(tmp_path / "plan.yaml"), "--threads", "1", "--time-limit", "0.2",
                 "--min-runs", "3", "--batch", "2", "--json", "-"]) == 0
    one = json.loads(capsys.readouterr().out)["candidates"][0]
    assert one["networks"][0]["batch"] == 2
    assert one["measured_ms"] == pytest.approx(one["networks"][0]["median_ms"] / 2)


def test_ctrl_c_while_measuring_a_plan_stops_keeps_the_runs_so_far_and_exits_130(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import replace

    (tmp_path / "a.yaml").write_text(TINY)
    (tmp_path / "b.yaml").write_text(TINY.replace("out: 8", "out: 6"))
    (tmp_path / "c.yaml").write_text(TINY.replace("out: 8", "out: 4"))
    (tmp_path / "plan.yaml").write_text("name: p\ninput: [3, 16, 16]\ncandidates:\n  one:\n    single: a.yaml\n"
                                        "  two:\n    parallel: [a.yaml, b.yaml]\n  three:\n    single: c.yaml\n")
    real, seen = M.measure_graph, []

    def cut_second(g, **kw):  # type: ignore[no-untyped-def]  # Ctrl-C during the second network's runs
        seen.append(g.name)
        m = real(g, **kw)
        return replace(m, interrupted=True) if len(seen) == 2 else m

    monkeypatch.setattr(M, "measure_graph", cut_second)
    assert main(["measure", str(tmp_path / "plan.yaml"), "--threads", "1", "--time-limit", "0.2",
                 "--min-runs", "3", "--json", "-"]) == 130
    d = json.loads(capsys.readouterr().out)
    one, two, three = d["candidates"]
    assert len(seen) == 2 and d["interrupted"] is True  # c.yaml never started
    assert one["measured_ms"] > 0 and two["measured_ms"] is None and three["measured_ms"] is None
    assert [n["ref"] for n in two["networks"]] == ["a.yaml", "b.yaml"] and two["networks"][1]["interrupted"]
    assert three["networks"] == []


def test_python_entry_points(tmp_path: Path) -> None:
    """`convscope.measure` and `convscope.compare`: what the CLI prints, as objects."""
    import convscope

    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY)
    m = convscope.measure(str(spec), threads=1, batch=2, time_limit_s=0.3, min_runs=3)
    assert (m.threads, m.batch, m.input, m.ref, m.model) == (1, 2, (3, 16, 16), str(spec), "tiny")
    assert m.p10_ms <= m.median_ms <= m.p90_ms and m.runs == len(m.times_ms)
    m = convscope.measure(str(spec), input=(3, 24, 24), threads=1, time_limit_s=0.2, min_runs=3)
    assert m.input == (3, 24, 24)
    (tmp_path / "plan.yaml").write_text("name: p\ninput: [3, 16, 16]\ncandidates:\n  one:\n    single: tiny.yaml\n"
                                        "  two:\n    parallel: [tiny.yaml, tiny.yaml]\n")
    pm = convscope.measure(tmp_path / "plan.yaml", threads=1, time_limit_s=0.2, min_runs=3)
    assert [c[0] for c in pm.candidates] == ["one", "two"]
    with pytest.raises(InputError, match="plan states its input"):
        convscope.measure(tmp_path / "plan.yaml", input=(3, 16, 16))
    c = convscope.compare(str(tmp_path / "plan.yaml"), device="raspi4")
    assert c.verdict.best == "one" and [x.name for x in c.candidates] == ["one", "two"]
    assert c.candidates[1].macs_per_frame == 2 * c.candidates[0].macs_per_frame


def test_the_python_api_refuses_what_the_command_line_would(tiny) -> None:  # type: ignore[no-untyped-def]
    """threads=1.5 reached torch.set_num_threads, batch=True torch.randn, time_limit_s=nan ran with a
    'nan s' limit: each is an InputError that names the argument, before anything runs."""
    import convscope

    for kw, message in ((dict(threads=1.5), "threads must be a positive integer, got 1.5"),
                        (dict(batch=True), "batch must be a positive integer, got True"),
                        (dict(batch=0), "batch must be a positive integer, got 0"),
                        (dict(time_limit_s=float("nan")), "time_limit_s must be a positive number of seconds, got nan"),
                        (dict(min_runs=2.5), "min_runs must be a positive integer, got 2.5")):
        with pytest.raises(InputError, match=message):
            convscope.measure(tiny, **kw)
    with pytest.raises(InputError, match="threads must be a positive integer, got 1.5"):
        convscope.analyze(tiny, threads=1.5)


def test_ctrl_c_before_the_first_run_writes_a_record_that_says_so(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY)
    assert main(["measure", str(spec), "--threads", "1", "--time-limit", "0.2", "--min-runs", "3",
                 "--json", str(tmp_path / "full.json")]) == 0
    full = json.loads((tmp_path / "full.json").read_text())

    def stop(*a, **k):  # type: ignore[no-untyped-def]  # Ctrl-C while the network is being built
        raise KeyboardInterrupt

    monkeypatch.setattr(M, "prepare", stop)
    assert main(["measure", str(spec), "--threads", "1", "--json", str(tmp_path / "cut.json")]) == 130
    cut = json.loads((tmp_path / "cut.json").read_text())
    assert set(cut) == set(full)  # the same record, without figures
    assert cut["runs"] == 0 and cut["median_ms"] is None and cut["interrupted"] is True
    assert (cut["threads"], cut["input"], cut["device"]) == (1, full["input"], full["device"])
    assert "interrupted" in capsys.readouterr().err

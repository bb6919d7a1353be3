"""The local tier: the formula on a hand-filled cache, keys (threads), missing layers measured on
demand or refused, and a real (small) calibration feeding `analyze`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from convscope.analyses._latency_kernels import kernels
from convscope.analyses.cost import cost
from convscope.analyses.latency import cold_weight_mb, predict
from convscope.api import analyze
from convscope.backends import _interference as itf
from convscope.backends._cache import Calibration, LayerTiming, default_threads, device_fingerprint, open_store
from convscope.backends.calibrate import calibrate, kernel_graph
from convscope.cli import main
from convscope.errors import InputError
from convscope.frontends.from_spec import graph_from_spec_text

TINY = """name: tiny{i}
input: [3, {r}, {r}]
layers:
  - conv: {{out: {c}, k: 3}}
  - bn
  - relu
  - conv: {{out: {c}, k: 3, s: 2}}
  - relu
  - gap
  - linear: {{out: 4}}
"""


def tiny(i: int = 0, r: int = 16, c: int = 8):  # type: ignore[no-untyped-def]
    return graph_from_spec_text(TINY.format(i=i, r=r, c=c), file=f"tiny{i}.yaml")


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CONVSCOPE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "latency.sqlite"


@pytest.fixture
def quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    """Behaviour, not speed: other processes on a shared test machine must not make runs 'disturbed'."""
    monkeypatch.setattr(itf, "disturbance", lambda a, b, **kw: itf.Disturbance(0.0, 0.0, 0.0, False))
    import convscope.backends.calibrate as cal

    monkeypatch.setattr(cal, "UNSTEADY", math.inf)  # nor a run that a busy machine made bimodal


def fill(graph, scale: float = 1.1, per_node: float = 0.002, fixed: float = 0.05, skip: int = 0,  # type: ignore[no-untyped-def]
         cold: float = 0.0, cache_bytes: int = 0):
    st = open_store()
    fp = device_fingerprint("torch")
    n = default_threads()
    ks = kernels(graph, "torch")
    for i, k in enumerate(ks[skip:]):
        st.put_layer(fp, "torch", n, "fp32", k.signature, LayerTiming(0.1 * (i + 1), 0.1, 0.1, 5))
    st.put_calibration(fp, "torch", n, "fp32", Calibration(scale, per_node, fixed, (0.9, 1.2), (("x", 1.0, 1.0),), "cpu",
                                                                 cold, cache_bytes))
    return ks


def test_local_formula_on_a_hand_filled_cache() -> None:
    g = tiny()
    ks = fill(g)
    pred = predict(g, device="local")
    assert pred is not None and pred.tier == "local" and pred.threads == default_threads()
    nodes = len(g.nodes) - 1
    expect = 1.1 * sum(0.1 * (i + 1) for i in range(len(ks))) + 0.002 * nodes + 0.05
    assert pred.ms == pytest.approx(expect)
    assert (pred.low_ms, pred.high_ms) == pytest.approx((0.9 * expect, 1.2 * expect))
    assert dict(pred.per_layer)[ks[0].name] == pytest.approx(1.1 * 0.1 + 0.002)
    assert predict(g) == pred  # device=None: the local tier, since this machine is calibrated


def test_cold_weights_are_charged_only_when_the_network_outgrows_the_cache() -> None:
    g = tiny(c=64)  # conv weights 3*64*9+64 and 64*64*9+64 floats
    w = {nc.name: nc.weight_bytes for nc in cost(g).nodes}
    total = cost(g).weight_bytes
    ks = kernels(g, "torch")
    per_kernel = [sum(w.get(n, 0) for n in k.nodes) for k in ks]
    assert cold_weight_mb(ks, cost(g), total) == [0.0] * len(ks)  # all weights fit: warm in the network too
    cache = max(per_kernel) - 1000  # the largest kernel's weights overflow it, the network's too
    assert cold_weight_mb(ks, cost(g), cache) == pytest.approx([min(b, cache) / 1e6 for b in per_kernel])
    assert cold_weight_mb(ks, cost(g), 0) == [0.0] * len(ks)  # a calibration from before the term
    fill(g, cold=2.0, cache_bytes=cache)
    base = 1.1 * sum(0.1 * (i + 1) for i in range(len(ks))) + 0.002 * (len(g.nodes) - 1) + 0.05
    assert predict(g, device="local").ms == pytest.approx(base + 2.0 * sum(min(b, cache) for b in per_kernel) / 1e6)


def test_another_thread_count_is_another_calibration() -> None:
    g = tiny()
    fill(g)
    with pytest.raises(InputError, match="no calibration for this machine"):
        predict(g, device="local", threads=default_threads() + 3)
    assert predict(g, threads=default_threads() + 3) is None


def test_missing_layers_refused_or_measured_on_demand(quiet: None) -> None:
    g = tiny()
    ks = fill(g, skip=1)
    with pytest.raises(InputError, match="not in the latency cache .*calibrate MODEL"):
        predict(g, device="local", on_missing="refuse")
    pred = predict(g, device="local", threads=default_threads())
    assert pred is not None and any("measured 1 layer configuration" in n for n in pred.notes)
    st = open_store()
    assert ks[0].signature in st.layers(device_fingerprint("torch"), "torch", default_threads(), "fp32",
                                        [ks[0].signature])


def test_a_layer_that_cannot_be_timed_makes_the_prediction_a_named_lower_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine too busy to time a missing layer: the prediction leaves it out, and says which."""
    import types

    import convscope.backends.calibrate as cal

    g = tiny()
    ks = fill(g, skip=1)
    monkeypatch.setattr(cal, "measure_kernels", lambda *a, **kw: types.SimpleNamespace(interrupted=False, measured=0))
    pred = predict(g, device="local")
    assert pred is not None and pred.untimed == (ks[0].name,)
    assert any(f"1 kernel(s) could not be timed ({ks[0].name})" in n for n in pred.notes)
    nodes = len(g.nodes) - 1
    assert pred.ms == pytest.approx(1.1 * sum(0.1 * (i + 1) for i in range(len(ks) - 1)) + 0.002 * nodes + 0.05)


def test_kernel_graph_is_the_kernel_alone() -> None:
    g = tiny()
    k = kernels(g, "onnxruntime")[0]
    kg = kernel_graph(g, k)
    assert [n.op.value for n in kg.nodes] == ["input", "conv", "bn", "act"]
    assert kg.input_shape == (3, 16, 16)


def test_calibrate_then_analyze_shows_local_predictions(quiet: None, capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    g = tiny(r=24)
    # the first two share a name (one network at two sizes): two rows of the fit, told apart by size
    over = [tiny(max(i - 1, 0), r, c) for i, (r, c) in enumerate([(8, 4), (16, 8), (32, 8), (16, 16), (24, 12), (40, 4)])]
    rep = calibrate([g], threads=1, overhead_graphs=over, overhead_time_s=0.3)
    assert not rep.interrupted and not rep.failed and rep.calibration is not None and rep.refitted
    assert rep.measured == rep.kernels > 0 and rep.cached == 0
    assert rep.calibration.scale >= 0 and len(rep.calibration.networks) == 6
    assert [n for n, _, _ in rep.calibration.networks][:3] == ["tiny0@8x8", "tiny0@16x16", "tiny1@32x32"]
    again = calibrate([g], threads=1)
    assert again.measured == 0 and again.cached == rep.kernels and not again.refitted
    a = analyze(g, threads=1)
    assert a.latency is not None and a.latency.tier == "local" and a.latency.threads == 1
    assert all(r.ms is not None for r in a.layers)
    spec = Path(str(open_store().path)).parent / "tiny.yaml"
    spec.write_text(TINY.format(i=9, r=24, c=8))
    assert main(["analyze", str(spec), "--threads", "1", "--json", "-"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["latency"]["tier"] == "local" and d["latency"]["threads"] == 1
    assert main(["calibrate", "--list", "--json", "-"]) == 0
    assert json.loads(capsys.readouterr().out)["calibrations"][0]["threads"] == 1
    from dataclasses import replace

    from convscope.backends import calibrate as C

    monkeypatch.setattr(C, "calibrate", lambda *a, **k: replace(again, warnings=("latency cache X was unreadable",)))
    for extra in (["--json", "-"], []):  # a warning goes to stderr, as every command's, and into the JSON
        assert main(["calibrate", str(spec), *extra]) == 0
        out = capsys.readouterr()
        assert out.err.splitlines() == ["convscope calibrate: warning: latency cache X was unreadable"]
        assert "was unreadable" not in out.out or json.loads(out.out)["warnings"] == ["latency cache X was unreadable"]


def test_a_machine_that_stays_busy_measures_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    from convscope.backends import calibrate as C

    monkeypatch.setattr(itf, "disturbance", lambda a, b, **kw: itf.Disturbance(0.9, 0.9, 0.0, True))
    waits = []
    monkeypatch.setattr(itf, "wait_quiet", lambda **kw: waits.append(kw) or False)
    monkeypatch.setattr(C.time, "sleep", lambda s: None, raising=False)
    g = tiny()
    ks = kernels(g, "torch")[:2]
    run = C.measure_kernels([(g, k) for k in ks], backend="torch", batch=1, dtype="fp32", threads=1,
                            store=open_store(), fp=device_fingerprint("torch"), passes=1, retries=2, wait_s=0.01)
    assert run.measured == 0 and len(run.failed) == 2 and "stayed busy" in run.failed[0][1]
    assert len(waits) == 2  # the baseline waited twice, then every kernel was refused at once
    assert open_store().count_layers() == 0  # nothing disturbed was cached



def _refuse_to_export(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """The exporter fails on networks called ``name`` as it fails on an op ONNX has no form for:
    it writes the TorchScript graph to file descriptor 1 from C++, then raises."""
    import os

    import torch

    real = torch.onnx.export

    def export(module, *args, **kw):  # type: ignore[no-untyped-def]
        if getattr(getattr(module, "graph", None), "name", None) == name:
            os.write(1, b"graph(%x0 : Float(1, 3, 8, 8)):\n  %1 : Float = aten::made_up(%x0)\n")
            raise RuntimeError("Exporting the operator 'aten::made_up' to ONNX opset version 17 is not supported")
        return real(module, *args, **kw)

    monkeypatch.setattr(torch.onnx, "export", export)


def test_the_overhead_fit_leaves_out_a_network_the_backend_cannot_run(quiet: None, monkeypatch: pytest.MonkeyPatch) -> None:
    over = [tiny(i, r, c) for i, (r, c) in enumerate([(8, 4), (16, 8), (32, 8), (16, 16), (24, 12), (40, 4)])]
    bad = graph_from_spec_text("""name: unexportable
input: [3, 6, 6]
layers:
  - conv: {out: 4, k: 3, s: 2}
  - relu
""", file="unexportable.yaml")
    _refuse_to_export(monkeypatch, "unexportable")
    rep = calibrate([tiny()], backend="onnxruntime", threads=1, overhead_graphs=[*over, bad], overhead_time_s=0.3)
    assert rep.calibration is not None and len(rep.calibration.networks) == 6
    assert "unexportable" not in {n for n, _, _ in rep.calibration.networks}
    assert [name for name, _ in rep.failed if "overhead fit" in name] == ["unexportable@6x6 (overhead fit)"]
    assert any("aten::made_up" in why for _, why in rep.failed)


def test_onnxruntime_runs_a_channel_shuffle_and_non_dividing_adaptive_pools(capfd) -> None:  # type: ignore[no-untyped-def]
    import torch

    from convscope.backends._runners import ort_session
    from convscope.backends.to_torch import build_module

    g = graph_from_spec_text("""name: shuffle
input: [3, 16, 16]
layers:
  - conv: {out: 8, k: 3}
  - channel_shuffle: {groups: 2}
  - conv: {out: 4, k: 3}
""", file="shuffle.yaml")
    m, x = build_module(g), torch.randn(1, 3, 16, 16)
    got = ort_session(m, [x], 1).run(None, {"x0": x.numpy()})[0]
    with torch.inference_mode():
        assert torch.allclose(torch.from_numpy(got), m(x), atol=1e-5)
    # adaptive pools whose output size does not divide the input have no ONNX op: VGG's 7×7 average
    # pool on a 3×3 map exports as two matrix products, a max pool as per-window slices and maxima;
    # both give the same numbers
    up = """name: up
input: [3, 11, 9]
layers:
  - conv: {out: 4, k: 3, s: 2}
  - adaptive_POOL: {size: SIZE}
"""
    x = torch.randn(1, 3, 11, 9)
    for pool in ("avgpool", "maxpool"):
        for size in (7, 3):
            m = build_module(graph_from_spec_text(up.replace("POOL", pool).replace("SIZE", str(size)), file="up.yaml"))
            got = ort_session(m, [x], 1).run(None, {"x0": x.numpy()})[0]
            with torch.inference_mode():
                assert torch.allclose(torch.from_numpy(got), m(x), atol=1e-5), (pool, size)
    assert capfd.readouterr().out == ""


def test_a_network_the_exporter_refuses_is_a_clear_error(capfd, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    import torch

    from convscope.backends._runners import ort_session
    from convscope.backends.to_torch import build_module

    g = graph_from_spec_text("name: refused\ninput: [3, 8, 8]\nlayers:\n  - conv: {out: 4, k: 3}\n", file="r.yaml")
    _refuse_to_export(monkeypatch, "refused")
    with pytest.raises(InputError, match="exporting it to ONNX failed .*aten::made_up"):
        ort_session(build_module(g), [torch.randn(1, 3, 8, 8)], 1)
    assert capfd.readouterr().out == ""  # the exporter's TorchScript dump stays off stdout


HUGE = """name: huge
input: [3, 100000, 100000]
layers:
  - conv: {out: 100000, k: 3}
"""


def test_a_layer_that_does_not_fit_in_memory_is_not_timed_and_said_so(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A valid spec too large to run (120 GB of input, petabytes of output): the machine is
    calibrated, so its layer is measured on demand; it must be refused before anything is allocated,
    listed as not timed with the bytes, the prediction a lower bound, exit 0 (never an internal error)."""
    from convscope.backends import _runners

    monkeypatch.setattr(_runners, "free_memory", lambda device: 2**30, raising=False)  # the same on every machine
    g = graph_from_spec_text(HUGE, file="huge.yaml")
    fill(g, skip=1)
    pred = predict(g, device="local")
    assert pred is not None and pred.untimed == ("layers.0.conv",)
    assert any(n.startswith("not timed: layer 'layers.0.conv' does not fit in memory: running it needs at least ")
               and "this machine has 1.00 GiB free" in n for n in pred.notes)
    assert any("1 kernel(s) could not be timed (layers.0.conv): the prediction is a lower bound" in n for n in pred.notes)
    spec = tmp_path / "huge.yaml"
    spec.write_text(HUGE)
    assert main(["analyze", str(spec), "--json", "-"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["latency"]["tier"] == "local" and any("does not fit in memory" in n for n in d["latency"]["notes"])
    assert main(["measure", str(spec)]) == 2  # measuring it end to end: a clear error naming the network
    assert "network 'huge' does not fit in memory: running it needs at least" in capsys.readouterr().err


ALLOC = ("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you tried to "
         "allocate 120000000000 bytes. Error code 12 (Cannot allocate memory)")


@pytest.mark.parametrize("where", ["inputs", "forward", "onnxruntime"])
def test_an_allocation_that_fails_while_timing_is_a_layer_not_timed(monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    """Past the estimate (memory taken meanwhile), PyTorch's "can't allocate" while a layer's inputs
    are made, while it runs, or while its ONNX Runtime session is built: a layer not timed, in
    PyTorch's words, never an internal error.  The baseline kernel is not touched."""
    import torch

    from convscope.backends import _runners, to_torch
    from convscope.backends import calibrate as C

    def refuse() -> None:
        raise RuntimeError(ALLOC)

    backend = "onnxruntime" if where == "onnxruntime" else "torch"
    g = tiny()
    k = kernels(g, backend)[0]
    mine = f"kernel:{k.name}"
    if where == "inputs":
        real_inputs = _runners._inputs
        monkeypatch.setattr(_runners, "_inputs", lambda graph, *a: refuse() if graph.name == mine else real_inputs(graph, *a))
    elif where == "forward":
        real_build = to_torch.build_module

        class Refuses(torch.nn.Module):
            def forward(self, *xs):  # type: ignore[no-untyped-def]
                refuse()

        monkeypatch.setattr(to_torch, "build_module", lambda graph, **kw: Refuses() if graph.name == mine
                            else real_build(graph, **kw))
    else:
        real_session = _runners.ort_session
        monkeypatch.setattr(_runners, "ort_session", lambda m, xs, n: refuse() if tuple(xs[0].shape) == (1, 3, 16, 16)
                            else real_session(m, xs, n))
    run = C.measure_kernels([(g, k)], backend=backend, batch=1, dtype="fp32", threads=1, store=open_store(),
                            fp=device_fingerprint(backend), passes=1, retries=0)
    assert run.measured == 0 and run.failed == ((k.name, f"layer '{k.name}' does not fit in memory: {ALLOC}"),)

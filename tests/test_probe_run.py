"""`probe` end to end on a network whose border is known by construction, with the synthetic data set
whose needed context is known; checkpoints, resuming, interruption."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from convscope.backends.data import from_arrays, load_data
from convscope.backends.probe import ProbeConfig, ProbeInterrupted, fit_head, probe
from convscope.backends.probe_stats import as_samples
from convscope.backends.to_torch import build_module
from convscope.errors import ConvscopeError, InputError
from convscope.frontends.from_spec import graph_from_spec_data
from convscope.probe.synthetic import make_synthetic


def _conv(name: str, out: int) -> list[Any]:
    return [{"conv": {"out": out, "k": 3, "name": name}}, "bn", "relu"]


# At 16x16: rf_min 3, 8, 12 (c0-c2), 22 for c3 (the border: its input's rf 14 < 16), then 30, 38, 46:
# c4-c6 are predicted unproductive.  synthetic:scales at 16x16 needs 5 px (d = 4): c1 and later see it.
TINY = {"name": "tiny-border", "input": [1, 16, 16], "layers": [
    *_conv("c0", 8), {"maxpool": {"k": 2}}, *_conv("c1", 16), *_conv("c2", 16), {"maxpool": {"k": 2}},
    *_conv("c3", 16), *_conv("c4", 16), *_conv("c5", 16), *_conv("c6", 16),
    "gap", {"linear": {"out": 10, "name": "head"}}]}
DATA = "synthetic:scales:n=600,test=600"
FAST = ProbeConfig(epochs=5, batch_size=32, lr=3e-3, seed=0, threads=1)


@pytest.fixture(scope="module")
def tiny() -> Any:
    return graph_from_spec_data(TINY)


@pytest.fixture(scope="module")
def trained(tiny: Any) -> Any:
    return probe(tiny, DATA, config=FAST, checkpoint=False)


def test_measured_signals_agree_with_the_predicted_border(trained: Any) -> None:
    r = trained
    assert r.border_layer == "c3"
    assert [x.name for x in r.layers if x.unproductive] == ["c4", "c5", "c6"]
    assert r.test_accuracy > 0.75 and r.complete
    acc = {x.name: x.probe_accuracy for x in r.layers}
    sat = {x.name: x.saturation for x in r.layers}
    # Layers that cannot see two marks (c0, rf 3) are at chance; c1 sees 8 px in theory but its
    # effective field is smaller; from c2 on the classes are linearly readable.
    assert acc["c0"] < 0.45 and acc["c1"] < 0.45
    assert min(acc[n] for n in ("c2", "c3", "c4", "c5", "c6")) > 0.9
    v = r.verdict
    assert v.status == "agrees", v.reasons
    assert v.probe_gain <= v.gain_threshold
    assert max(acc[n] for n in ("c4", "c5", "c6")) - max(acc[n] for n in ("c0", "c1", "c2", "c3")) <= 0.02
    assert np.median([sat[n] for n in ("c4", "c5", "c6")]) < np.median([sat[n] for n in ("c0", "c1", "c2", "c3")])
    names = [x.name for x in r.layers]
    assert names.index(v.plateau_layer) <= names.index("c3")  # the probes stop improving by the border
    assert any("replaced the head: layer 'head' now has 3 outputs (was 10)" == n for n in r.notes)
    assert any("needs 5 px of context: the first layer that sees it is c1" in n for n in r.notes)


def test_the_check_can_disagree(tiny: Any) -> None:
    """Negative control: marks half the image apart (d = 8 at 16 px).  In theory c3 (rf 22) sees both,
    but a trained network's effective receptive field is smaller, and here the layers past the border
    still add what the probes read — the verdict must say so rather than rubber-stamp the prediction."""
    r = probe(tiny, "synthetic:scales:d=8,n=1000,test=600", config=FAST, checkpoint=False)
    acc = {x.name: x.probe_accuracy for x in r.layers}
    assert r.test_accuracy > 0.6
    assert r.verdict.status in ("partly", "disagrees") and r.verdict.probe_gain > 0.2
    assert max(acc["c0"], acc["c1"], acc["c2"]) < 0.45 and acc["c5"] > 0.75
    names = [x.name for x in r.layers]
    assert names.index(r.verdict.plateau_layer) > names.index("c3")


def test_saturation_equals_eigh_of_the_stored_activations(tiny: Any, tmp_path: Path) -> None:
    cfg = ProbeConfig(epochs=1, batch_size=32, lr=3e-3, probe_samples=10_000, threads=1)
    r = probe(tiny, "synthetic:scales:n=200,test=150", config=cfg, checkpoint=tmp_path)
    # Rebuild the trained network from the checkpoint and keep every activation of the test split.
    graph, _ = fit_head(tiny, 3)
    module = build_module(graph)
    module.load_state_dict(torch.load(tmp_path / "model.pt", weights_only=True)["model"])
    module.eval()
    ds = load_data("synthetic:scales:n=200,test=150", (1, 16, 16))
    names = [x.name for x in r.layers]
    with torch.no_grad():
        _, cap = module.run(ds.batch(ds.test, torch.arange(150)), capture=names)
    for x in r.layers:
        samples = as_samples(cap[x.name]).double().numpy()
        assert x.samples == samples.shape[0]
        vals = np.sort(np.linalg.eigh(np.cov(samples, rowvar=False))[0])[::-1].clip(min=0)
        k = int(np.argmax(np.cumsum(vals) >= 0.99 * vals.sum() * (1 - 1e-12))) + 1
        assert x.eigendirections == k, x.name
        assert x.saturation == pytest.approx(k / samples.shape[1])


def test_shuffled_labels_leave_every_probe_at_chance(tiny: Any) -> None:
    s = make_synthetic(DATA, (1, 16, 16))
    rng = np.random.default_rng(7)
    ds = from_arrays(s.x_train, rng.permutation(s.y_train), s.x_test, rng.permutation(s.y_test), (1, 16, 16),
                     classes=s.classes, name="shuffled")
    r = probe(tiny, ds, config=FAST, checkpoint=False)
    band = 4 * math.sqrt((1 / 3) * (2 / 3) / 600)
    assert all(abs(x.probe_accuracy - 1 / 3) < band for x in r.layers), [x.probe_accuracy for x in r.layers]
    assert r.verdict.status == "inconclusive"  # the network learnt nothing, so its layers prove nothing


class _StopAt:
    """A progress sink that presses Ctrl-C at a given point."""

    def __init__(self, stage: str, after: int = 0):
        self.stage, self.after, self.current, self.count = stage, after, "", 0
        self.starts: list[tuple[str, int]] = []
        self.first_advance: dict[str, int] = {}

    def start(self, description: str, total: int) -> None:
        self.current = description
        self.count = 0
        self.starts.append((description, total))
        if description == self.stage and self.after == 0:
            raise KeyboardInterrupt

    def advance(self, n: int = 1) -> None:
        self.first_advance.setdefault(self.current, n)
        self.count += 1
        if self.current == self.stage and self.after and self.count == self.after:
            raise KeyboardInterrupt


def _same(a: Any, b: Any) -> None:
    assert [(h.loss, h.train_accuracy, h.test_accuracy) for h in a.history] == \
        [(h.loss, h.train_accuracy, h.test_accuracy) for h in b.history]
    assert [x.to_dict() for x in a.layers] == [x.to_dict() for x in b.layers]
    assert a.verdict == b.verdict


def test_an_interrupted_training_resumes_to_the_same_result(tiny: Any, tmp_path: Path) -> None:
    cfg = ProbeConfig(epochs=2, batch_size=32, lr=3e-3, threads=1)
    data = "synthetic:scales:n=300,test=200"
    whole = probe(tiny, data, config=cfg, checkpoint=False)
    with pytest.raises(ProbeInterrupted) as stop:
        probe(tiny, data, config=cfg, checkpoint=tmp_path, progress=_StopAt("train epoch 2/2"))
    partial = stop.value.partial
    assert not partial.complete and len(partial.history) == 1 and partial.layers == ()
    assert partial.verdict.status == "inconclusive"
    resumed = probe(tiny, data, config=cfg, checkpoint=tmp_path)
    assert "resumed from the checkpoint: 1 of 2 epoch(s) were done" in resumed.notes
    _same(resumed, whole)


def test_ctrl_c_while_the_checkpoint_is_restored_still_reports_its_finished_epochs(
        tiny: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from convscope.backends.probe_run import RunDir

    cfg = ProbeConfig(epochs=2, batch_size=32, lr=3e-3, threads=1)
    data = "synthetic:scales:n=300,test=200"
    with pytest.raises(ProbeInterrupted) as stop:
        probe(tiny, data, config=cfg, checkpoint=tmp_path, progress=_StopAt("train epoch 2/2"))
    first = stop.value.partial.history

    def restoring(*a: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(RunDir, "load_training", restoring)
    with pytest.raises(ProbeInterrupted) as stop:
        probe(tiny, data, config=cfg, checkpoint=tmp_path)
    assert len(stop.value.partial.history) == 1  # not an empty result over the previous one
    assert stop.value.partial.history[0].to_dict() == first[0].to_dict()


def test_an_interrupted_measurement_keeps_the_finished_layers(tiny: Any, tmp_path: Path) -> None:
    cfg = ProbeConfig(epochs=1, batch_size=32, lr=3e-3, threads=1)
    data = "synthetic:scales:n=300,test=200"
    with pytest.raises(ProbeInterrupted) as stop:
        probe(tiny, data, config=cfg, checkpoint=tmp_path, progress=_StopAt("measure layers", after=3))
    partial = stop.value.partial
    assert [x.name for x in partial.layers] == ["c0", "c1", "c2"] and len(partial.history) == 1
    spy = _StopAt("never")
    resumed = probe(tiny, data, config=cfg, checkpoint=tmp_path, progress=spy)
    assert not any(s.startswith("train") for s, _ in spy.starts)  # training came from the checkpoint
    assert spy.first_advance["measure layers"] == 3  # the finished layers were not measured again
    assert [x.to_dict() for x in resumed.layers[:3]] == [x.to_dict() for x in partial.layers]
    _same(resumed, probe(tiny, data, config=cfg, checkpoint=False))


def test_ctrl_c_in_the_final_accuracy_pass_keeps_every_layer(tiny: Any, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """After the last layer was measured, the training accuracy is measured: Ctrl-C there still gives
    the partial result, with every layer and the finished epochs' test accuracy."""
    from convscope.backends import probe as probe_mod

    real = probe_mod._accuracy

    def accuracy(module: Any, ds: Any, split: Any, *a: Any) -> float:
        if split is ds.train:
            raise KeyboardInterrupt
        return real(module, ds, split, *a)

    monkeypatch.setattr(probe_mod, "_accuracy", accuracy)
    cfg = ProbeConfig(epochs=1, batch_size=32, lr=3e-3, threads=1)
    try:
        probe(tiny, "synthetic:scales:n=100,test=60", config=cfg, checkpoint=tmp_path)
    except ProbeInterrupted as stop:
        partial = stop.partial
    except KeyboardInterrupt:  # not raised as such: it would end the test session
        pytest.fail("Ctrl-C escaped without the partial result")
    else:
        pytest.fail("the run was not interrupted")
    assert not partial.complete and len(partial.history) == 1
    assert [x.name for x in partial.layers] == ["c0", "c1", "c2", "c3", "c4", "c5", "c6", "head"]
    assert partial.test_accuracy == partial.history[0].test_accuracy and partial.train_accuracy is None
    monkeypatch.setattr(probe_mod, "_accuracy", real)
    spy = _StopAt("never")
    resumed = probe(tiny, "synthetic:scales:n=100,test=60", config=cfg, checkpoint=tmp_path, progress=spy)
    assert resumed.complete and spy.starts == []  # nothing trained or measured again


def test_a_checkpoint_that_cannot_be_written_midway_does_not_stop_the_run(tiny: Any, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from convscope.backends import probe_run

    def full(path: Path, write: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(probe_run, "_atomic_write", full)
    r = probe(tiny, "synthetic:scales:n=100,test=60", config=ProbeConfig(epochs=1, batch_size=32, threads=1),
              checkpoint=tmp_path)
    assert r.complete and all(x.probe_accuracy is not None for x in r.layers)
    assert f"checkpoints stopped: cannot write {tmp_path}/model.pt (No space left on device); the run went on " \
           "without them, so a rerun may redo some of it" in r.notes


# Linear layers of 2500 features: more than the probe's 2048, so they are randomly projected.
WIDE = {"name": "wide", "input": [1, 12, 12], "layers": [
    {"conv": {"out": 8, "k": 3, "name": "c1"}}, "relu", {"conv": {"out": 8, "k": 3, "name": "c2"}}, "relu",
    "flatten", {"linear": {"out": 2500, "name": "fc1"}}, "relu", {"linear": {"out": 2500, "name": "fc2"}}, "relu",
    {"linear": {"out": 3, "name": "head"}}]}


def test_a_resumed_measurement_projects_wide_layers_as_an_uninterrupted_one(tmp_path: Path) -> None:
    """The projection of a wide layer is seeded by the layer, not by its place among the layers left to do."""
    wide = graph_from_spec_data(WIDE)
    cfg = ProbeConfig(epochs=1, batch_size=32, lr=3e-3, threads=1)
    data = "synthetic:scales:n=300,test=200"
    with pytest.raises(ProbeInterrupted) as stop:
        probe(wide, data, config=cfg, checkpoint=tmp_path, progress=_StopAt("measure layers", after=1))
    assert [x.name for x in stop.value.partial.layers] == ["c1"]
    resumed = probe(wide, data, config=cfg, checkpoint=tmp_path)
    assert [x.probe_dims for x in resumed.layers] == [128, 128, 2048, 2048, 3]
    _same(resumed, probe(wide, data, config=cfg, checkpoint=False))


def test_a_checkpoint_of_another_run_is_not_reused(tiny: Any, tmp_path: Path) -> None:
    cfg = ProbeConfig(epochs=1, batch_size=32, lr=3e-3, threads=1)
    data = "synthetic:scales:n=100,test=60"
    probe(tiny, data, config=cfg, checkpoint=tmp_path)
    other = ProbeConfig(epochs=1, batch_size=32, lr=3e-3, seed=1, threads=1)
    with pytest.raises(InputError, match="holds the checkpoint of another run .*seed 0 there, 1 now.*--fresh"):
        probe(tiny, data, config=other, checkpoint=tmp_path)
    r = probe(tiny, data, config=other, checkpoint=tmp_path, fresh=True)
    assert r.seed == 1 and not any("resumed" in n for n in r.notes)


def test_a_layer_that_fails_is_recorded_and_the_rest_measured(tiny: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from convscope.backends import probe as probe_mod

    real, calls = probe_mod.fit_linear_probe, []

    def flaky(*a: Any, **k: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("out of memory (simulated)")
        return real(*a, **k)

    monkeypatch.setattr(probe_mod, "fit_linear_probe", flaky)
    r = probe(tiny, "synthetic:scales:n=100,test=60", config=ProbeConfig(epochs=1, batch_size=32, threads=1),
              checkpoint=False)
    bad = r.layer("c1")
    assert bad.error == "RuntimeError: out of memory (simulated)" and bad.probe_accuracy is None
    assert all(x.probe_accuracy is not None for x in r.layers if x.name != "c1") and r.complete


def test_a_layer_without_eigendecomposition_is_recorded(tiny: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """numpy's LinAlgError (degenerate activations) is reported on its layer, like out of memory."""
    from convscope.backends import probe as probe_mod

    real, calls = probe_mod.saturation_from_covariance, []

    def degenerate(*a: Any, **k: Any) -> Any:
        calls.append(1)
        if len(calls) == 3:
            raise np.linalg.LinAlgError("Eigenvalues did not converge")
        return real(*a, **k)

    monkeypatch.setattr(probe_mod, "saturation_from_covariance", degenerate)
    r = probe(tiny, "synthetic:scales:n=100,test=60", config=ProbeConfig(epochs=0, batch_size=32, threads=1),
              checkpoint=False)
    assert r.layer("c2").error == "LinAlgError: Eigenvalues did not converge" and r.layer("c2").saturation is None
    assert all(x.saturation is not None for x in r.layers if x.name != "c2") and r.complete


def test_divergence_is_reported_without_a_torch_warning(tiny: Any) -> None:
    s = make_synthetic("synthetic:scales:n=64,test=10", (1, 16, 16))
    x = s.x_train.copy()
    x[0, 0, 0, 0] = np.nan  # every normalised image turns NaN: the first loss is NaN
    ds = from_arrays(x, s.y_train, s.x_test, s.y_test, (1, 16, 16), classes=s.classes, name="nan")
    always = torch.is_warn_always_enabled()
    torch.set_warn_always(True)  # torch warns once per process otherwise: an earlier test may have used it up
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with pytest.raises(ConvscopeError, match=r"training diverged in epoch 1 \(loss nan\): lower --lr"):
                probe(tiny, ds, config=ProbeConfig(epochs=1, batch_size=32, threads=1), checkpoint=False)
    finally:
        torch.set_warn_always(always)


def test_the_readme_example_file_is_this_network() -> None:
    from pathlib import Path

    from convscope.analyses.analyze import analyze_graph
    from convscope.frontends.from_spec import load_spec

    ex = load_spec(Path(__file__).parent.parent / "examples" / "probe" / "tiny-border.yaml")
    a, b = analyze_graph(ex), analyze_graph(graph_from_spec_data(TINY))
    assert [(r.name, r.op, r.params, r.rf_min) for r in a.layers if r.params] == \
        [(r.name, r.op, r.params, r.rf_min) for r in b.layers if r.params]
    assert a.border_layer == b.border_layer == "c3"


def test_the_callers_random_streams_are_left_alone(tiny: Any) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    probe(tiny, "synthetic:scales:n=60,test=30", config=ProbeConfig(epochs=1, batch_size=32, probe_samples=30,
                                                                    threads=1), checkpoint=False)
    assert torch.equal(torch.rand(3), expected)  # training seeded its own generators, not the caller's


@pytest.mark.parametrize("config,msg", [
    (ProbeConfig(probe_dims=0), "probe_dims must be an integer >= 1, got 0"),
    (ProbeConfig(epochs=1.5), "epochs (--epochs) must be an integer >= 0, got 1.5"),  # type: ignore[arg-type]
    (ProbeConfig(delta=-1), "delta (the accuracy gain that counts) must be a number from 0 to 1, got -1"),
    ({"epochs": 1}, "config must be a ProbeConfig, got dict"),
])
def test_python_settings_out_of_range_are_named(tiny: Any, config: Any, msg: str) -> None:
    with pytest.raises(InputError) as e:
        probe(tiny, "synthetic:scales:n=60,test=30", config=config, checkpoint=False)
    assert msg in str(e.value)


@pytest.mark.parametrize("damage", ["model.pt", "run.json"])
def test_a_damaged_checkpoint_is_done_again_and_said_so(tiny: Any, tmp_path: Path, damage: str) -> None:
    cfg = ProbeConfig(epochs=1, batch_size=32, lr=3e-3, probe_samples=30, threads=1)
    data = "synthetic:scales:n=60,test=30"
    first = probe(tiny, data, config=cfg, checkpoint=tmp_path)
    assert not any("could not be read" in n for n in first.notes)
    (tmp_path / damage).write_bytes(b"\x00garbled")
    again = probe(tiny, data, config=cfg, checkpoint=tmp_path)
    assert any(f"the checkpoint {tmp_path / damage} could not be read" in n for n in again.notes)
    assert not any("resumed from the checkpoint" in n for n in again.notes)
    assert again.complete and [x.name for x in again.layers] == [x.name for x in first.layers]

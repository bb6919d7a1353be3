"""Saturation, linear probes, the verdict rule and head replacement, against independent computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from convscope.backends.probe import fit_head
from convscope.backends.probe_stats import (
    OnlineCovariance,
    as_samples,
    fit_linear_probe,
    pooled_dims,
    probe_features,
    projection_for,
)
from convscope.errors import InputError
from convscope.frontends.from_spec import graph_from_spec_data
from convscope.ir.ops import OpKind
from convscope.probe.results import LayerProbe
from convscope.probe.rules import saturation_from_covariance, verdict


def _k_by_eigh(samples: np.ndarray, share: float = 0.99) -> int:
    """The oracle: eigen-decomposition of the stored samples' covariance, counted by hand."""
    cov = np.cov(samples, rowvar=False)
    vals = sorted(np.linalg.eigh(cov)[0], reverse=True)
    total, acc = sum(max(v, 0.0) for v in vals), 0.0
    for k, v in enumerate(vals, start=1):
        acc += max(v, 0.0)
        if acc >= share * total - 1e-12 * total:
            return k
    return len(vals)


# -- covariance and saturation ----------------------------------------------------------------------
def test_online_covariance_equals_numpy_cov() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1000, 12)) @ rng.normal(size=(12, 12)) + 50.0  # far from zero mean
    acc = OnlineCovariance(12)
    start = 0
    for size in (1, 7, 300, 92, 600):  # uneven batches
        acc.update(torch.from_numpy(x[start:start + size]))
        start += size
    assert acc.n == 1000
    assert np.allclose(acc.covariance(), np.cov(x, rowvar=False), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("rank,width", [(1, 8), (3, 8), (5, 16), (16, 16)])
def test_saturation_of_a_flat_subspace_is_rank_over_width(rank: int, width: int) -> None:
    rng = np.random.default_rng(rank)
    basis, _ = np.linalg.qr(rng.normal(size=(width, rank)))
    coeff = rng.choice([-1.0, 1.0], size=(4000, rank))  # equal variance in each direction
    acc = OnlineCovariance(width)
    acc.update(torch.from_numpy(coeff @ basis.T))
    sat, k = saturation_from_covariance(acc.covariance())
    assert k == rank and sat == pytest.approx(rank / width)


def test_saturation_matches_eigh_on_skewed_spectra() -> None:
    rng = np.random.default_rng(3)
    for trial in range(20):
        width = int(rng.integers(2, 40))
        scales = np.exp(rng.normal(0, 2, width))  # eigenvalues over several decades
        x = rng.normal(size=(3000, width)) * scales
        acc = OnlineCovariance(width)
        for part in np.array_split(x, 5):
            acc.update(torch.from_numpy(part))
        sat, k = saturation_from_covariance(acc.covariance())
        assert k == _k_by_eigh(x), trial
        assert sat == k / width


def test_constant_output_has_zero_saturation() -> None:
    acc = OnlineCovariance(4)
    acc.update(torch.ones(10, 4))
    assert saturation_from_covariance(acc.covariance()) == (0.0, 0)


def test_conv_outputs_are_sampled_channel_wise() -> None:
    out = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2)
    s = as_samples(out)
    assert s.shape == (8, 3)
    assert s[0].tolist() == [out[0, 0, 0, 0], out[0, 1, 0, 0], out[0, 2, 0, 0]]


# -- probe features ---------------------------------------------------------------------------------
def test_probe_features_are_bounded() -> None:
    assert probe_features(torch.zeros(2, 16, 16, 16)).shape == (2, 16 * 16)  # 4x4 pooling
    assert probe_features(torch.zeros(2, 512, 8, 8)).shape == (2, 512 * 4)  # 2x2 keeps <= 2048
    assert probe_features(torch.zeros(2, 2048, 7, 7)).shape == (2, 2048)  # 1x1
    assert probe_features(torch.zeros(2, 8, 3, 3)).shape == (2, 8 * 4)  # a 3x3 map pools to 2x2
    assert pooled_dims((4096,)) == 4096
    proj = projection_for(4096, 2048, 0, "cpu")
    assert proj is not None and probe_features(torch.zeros(2, 4096), projection=proj).shape == (2, 2048)
    assert projection_for(100, 2048, 0, "cpu") is None
    # pooling is an average over regions, not a selection
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    assert probe_features(x, budget=4).tolist() == [[2.5, 4.5, 10.5, 12.5]]


# -- linear probes ----------------------------------------------------------------------------------
def _blobs(n: int, k: int, dims: int, seed: int, sep: float) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(k, dims, generator=torch.Generator().manual_seed(99)) * sep
    y = torch.randint(0, k, (n,), generator=g)
    return centers[y] + torch.randn(n, dims, generator=g), y


def test_probe_beats_chance_on_separable_data() -> None:
    xtr, ytr = _blobs(400, 4, 32, 1, sep=1.0)
    xte, yte = _blobs(2000, 4, 32, 2, sep=1.0)
    acc, train_acc = fit_linear_probe(xtr, ytr, xte, yte, 4)
    assert acc > 0.95 and train_acc > 0.95


def test_probe_is_at_chance_on_shuffled_labels() -> None:
    """The same separable inputs, labels shuffled (in both splits): nothing links them to the input."""
    xtr, ytr = _blobs(400, 4, 32, 1, sep=1.0)
    xte, yte = _blobs(2000, 4, 32, 2, sep=1.0)
    g = torch.Generator().manual_seed(5)
    acc, train_acc = fit_linear_probe(xtr, ytr[torch.randperm(400, generator=g)], xte,
                                      yte[torch.randperm(2000, generator=g)], 4)
    sigma = math.sqrt(0.25 * 0.75 / 2000)
    assert abs(acc - 0.25) < 4 * sigma  # chance on held-out data ...
    assert train_acc > 0.4  # ... although it fits the shuffled training labels well above chance


# -- the verdict rule -------------------------------------------------------------------------------
def _row(name: str, probe: float, sat: float, unproductive: bool, spatial: bool = True) -> LayerProbe:
    return LayerProbe(name, "conv", (5, 5) if spatial else None, 0.5 if spatial else None, unproductive, 16, sat,
                      round(sat * 16), probe, 1.0, 64, 1000)


def test_verdict_agrees_partly_disagrees() -> None:
    before = [_row("a", 0.5, 0.9, False), _row("b", 0.8, 0.8, False), _row("c", 0.9, 0.85, False)]
    kw: dict = {"test_accuracy": 0.9, "chance": 0.1, "n_test": 1000, "n_probe_test": 1000}
    v = verdict(before + [_row("d", 0.905, 0.5, True), _row("head", 0.99, 0.1, False, spatial=False)], **kw)
    assert v.status == "agrees" and v.probe_gain == pytest.approx(0.005) and v.plateau_layer == "c"
    assert v.saturation_before == pytest.approx(0.85) and v.saturation_after == pytest.approx(0.5)
    assert verdict(before + [_row("d", 0.9, 0.95, True)], **kw).status == "partly"  # saturation not lower
    assert verdict(before + [_row("d", 0.97, 0.5, True)], **kw).status == "partly"  # probe still gains
    v = verdict(before + [_row("d", 0.97, 0.95, True)], **kw)
    assert v.status == "disagrees" and "still add information" in v.reasons[0]


def test_verdict_noise_band_follows_the_probe_sample_size() -> None:
    rows = [_row("a", 0.80, 0.9, False), _row("b", 0.83, 0.5, True)]
    few = verdict(rows, test_accuracy=0.8, chance=0.1, n_test=1000, n_probe_test=100)
    many = verdict(rows, test_accuracy=0.8, chance=0.1, n_test=1000, n_probe_test=100000)
    assert few.gain_threshold == pytest.approx(2 * math.sqrt(0.8 * 0.2 / 100)) and few.status == "agrees"
    assert many.gain_threshold == pytest.approx(0.02) and many.status == "partly"


def test_verdict_inconclusive_and_no_prediction() -> None:
    rows = [_row("a", 0.3, 0.9, False), _row("b", 0.3, 0.5, True)]
    v = verdict(rows, test_accuracy=0.36, chance=1 / 3, n_test=600, n_probe_test=600)
    assert v.status == "inconclusive" and "no better than chance" in v.reasons[0]
    tiny = verdict(rows, test_accuracy=1.0, chance=0.5, n_test=5, n_probe_test=5)  # perfect, but 5 images
    assert tiny.status == "inconclusive" and "too few test images (5)" in tiny.reasons[0]
    assert "no better than chance" not in tiny.reasons[0]
    v = verdict(rows[:1], test_accuracy=0.9, chance=1 / 3, n_test=600, n_probe_test=600)
    assert v.status == "no_prediction"
    assert verdict(rows[1:], test_accuracy=0.9, chance=1 / 3, n_test=600, n_probe_test=600).status == "inconclusive"
    assert verdict(rows, test_accuracy=None, chance=1 / 3, n_test=600, n_probe_test=600).status == "inconclusive"


def test_saturation_is_capped_when_samples_do_not_exceed_the_width() -> None:
    """n samples give a covariance of rank <= n - 1: with n <= width the saturation measures the sample count."""
    rng = np.random.default_rng(0)
    acc = OnlineCovariance(32)
    acc.update(torch.from_numpy(rng.normal(size=(16, 32))))  # full-rank data, 16 samples
    sat, k = saturation_from_covariance(acc.covariance())
    assert k <= 15 and sat < 0.5
    row = LayerProbe("c", "conv", (5, 5), 0.5, True, 32, sat, k, 0.5, 1.0, 64, samples=16)
    assert row.saturation_capped and row.to_dict()["saturation_capped"] is True
    assert not LayerProbe("c", "conv", (5, 5), 0.5, True, 32, 0.9, 29, 0.5, 1.0, 64, samples=33).saturation_capped
    assert not LayerProbe("c", "conv", (5, 5), 0.5, True, 32, None, None, None, None, 64, samples=16,
                          error="x").saturation_capped


def test_verdict_leaves_capped_saturations_out() -> None:
    kw: dict = {"test_accuracy": 0.9, "chance": 0.1, "n_test": 1000, "n_probe_test": 1000}
    before = [_row("a", 0.8, 0.9, False), _row("b", 0.9, 0.7, False)]
    capped = LayerProbe("d", "conv", (9, 9), 1.2, True, 512, 0.02, 10, 0.9, 1.0, 2048, samples=15)
    # the only unproductive layer's saturation (0.02) is capped: no saturation criterion, so not "agrees"
    v = verdict([*before, capped], **kw)
    assert v.status == "partly" and v.saturation_after is None and v.saturation_before is None
    assert "saturation not compared" in v.reasons[1] and "capped by too few samples: d" in v.reasons[1]
    # a capped productive layer is left out of the median of the productive ones
    low = LayerProbe("e", "conv", (9, 9), 0.5, False, 512, 0.01, 5, 0.5, 1.0, 2048, samples=15)
    v = verdict([*before, low, _row("u", 0.9, 0.75, True)], **kw)
    assert v.saturation_before == pytest.approx(0.8) and v.status == "agrees"
    assert "(left out, saturation capped by too few samples: e)" in v.reasons[1]


# -- the head ---------------------------------------------------------------------------------------
def _net(head: list) -> dict:  # type: ignore[type-arg]
    return {"name": "t", "input": [3, 8, 8], "layers": [{"conv": {"out": 4, "k": 3, "name": "c"}}, "relu", *head]}


def test_fit_head_resizes_the_last_linear_layer() -> None:
    g = graph_from_spec_data(_net(["gap", {"linear": {"out": 10, "name": "fc"}}, "dropout"]))
    g3, note = fit_head(g, 3)
    assert g3.node(g3.outputs[0]).out.shape == (3,) and g3.node("fc").attrs.out_features == 3  # type: ignore[union-attr]
    assert note == "replaced the head: layer 'fc' now has 3 outputs (was 10)"
    assert fit_head(g, 10) == (g, None)


def test_fit_head_resizes_a_conv_classifier() -> None:
    g = graph_from_spec_data(_net([{"conv": {"out": 10, "k": 1, "name": "cls"}}, "bn", "gap"]))
    g5, note = fit_head(g, 5)
    assert g5.node("cls").op is OpKind.CONV and g5.node(g5.outputs[0]).out.shape == (5,)
    assert note is not None and "'cls'" in note


def test_fit_head_refuses_a_non_classifier() -> None:
    with pytest.raises(InputError, match=r"probe needs a classifier output \(K,\), the network gives \[4, 8, 8\]"):
        fit_head(graph_from_spec_data(_net([])), 3)

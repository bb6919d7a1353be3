"""The cuda backend on a machine with a GPU (skipped elsewhere: CI has none).  What it checks:
measure synchronises (a run's time covers the GPU's work), calibrate times a layer as enqueued
calls (its cost inside an eager network is at most its launch-and-wait round trip), and a
calibrated network's prediction lands near its measurement."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from convscope.backends._cache import open_store
from convscope.backends._runners import prepare, threads_set
from convscope.backends.calibrate import calibrate, time_kernel
from convscope.backends.measure import measure_graph
from convscope.frontends.from_spec import graph_from_spec_text

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

NET = """name: gpu-net
input: [3, 64, 64]
layers:
  - conv: {out: 32, k: 3}
  - bn
  - relu
  - conv: {out: 64, k: 3, s: 2}
  - bn
  - relu
  - conv: {out: 64, k: 3}
  - gap
  - linear: {out: 10}
"""
BIG = """name: big-conv
input: [256, 128, 128]
layers:
  - conv: {out: 256, k: 3}
"""


def test_measure_waits_for_the_gpu() -> None:
    g = graph_from_spec_text(BIG, file="big.yaml")
    m = measure_graph(g, backend="cuda", batch=8, time_limit_s=2)
    macs = 8 * 256 * 256 * 9 * 128 * 128
    assert m.backend == "cuda"
    # 77 GMACs: no GPU does that in under 0.1 ms; an unsynchronised timer would say it did
    assert m.median_ms > macs / 1e15 * 1e3 * 0.5 and m.median_ms > 0.1


def test_enqueued_layer_timing_is_at_most_the_round_trip() -> None:
    g = graph_from_spec_text(NET, file="net.yaml")
    with threads_set(2):
        r = prepare(g, backend="cuda", batch=1, dtype="fp32", threads=2, label="")
        assert r.enqueue is not None
    t = time_kernel(g, backend="cuda", batch=1, dtype="fp32", threads=2)
    m = measure_graph(g, backend="cuda", time_limit_s=2)
    assert 0 < t.ms <= 1.2 * m.median_ms


def test_calibrated_prediction_is_near_the_measurement(tmp_path: Path) -> None:
    g = graph_from_spec_text(NET, file="net.yaml")
    store = open_store(tmp_path / "latency.sqlite")
    rep = calibrate([g], backend="cuda", store=store, overhead_time_s=1.0, passes=1)
    assert rep.calibration is not None and not rep.failed
    from convscope.analyses.latency import predict

    p = predict(g, device="local", backend="cuda", store=store)
    m = measure_graph(g, backend="cuda", time_limit_s=2)
    assert p is not None and p.tier == "local" and p.backend == "cuda"
    assert 0.5 * m.median_ms < p.ms < 2.0 * m.median_ms

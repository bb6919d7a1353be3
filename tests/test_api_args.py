"""The Python API refuses bad arguments with an InputError that names the argument and the value
(what the command line's parser would have turned away), and leaves the caller's model alone."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fixtures import TINY

import convscope
from convscope.analyses.latency import predict
from convscope.errors import InputError

PLAN = Path(__file__).resolve().parents[1] / "examples" / "camera" / "plan.yaml"


@pytest.mark.parametrize("call,message", [
    (lambda: convscope.analyze("zoo:vgg11-cifar", device=3), "device must be 'local', a profile name"),
    (lambda: convscope.analyze("", input=(3, 8, 8)), "the model is an empty string"),
    (lambda: convscope.analyze_resolutions("zoo:vgg16-cifar", 32), "resolutions must be a list of positive integers"),
    (lambda: convscope.analyze_resolutions("zoo:vgg16-cifar", "32,64"), "got '32,64'"),
    (lambda: convscope.analyze_resolutions("zoo:vgg16-cifar", [(32, 64)]), "each resolution must be a positive integer"),
    (lambda: convscope.analyze_resolutions("zoo:vgg16-cifar", [0]), "each resolution must be a positive integer, got 0"),
    (lambda: convscope.compare(42), "compare takes a plan file path"),
    (lambda: convscope.compare(str(PLAN), device="raspi4", batch=2.5), "batch must be a positive integer, got 2.5"),
    (lambda: convscope.compare(str(PLAN), device="raspi4", batch="2"), "batch must be a positive integer, got '2'"),
    (lambda: predict("zoo:vgg11-cifar", device="raspi4"), "predict takes a Graph, got a str"),
    (lambda: predict(convscope.load_graph("zoo:vgg11-cifar"), device="raspi4", batch=2.5),
     "batch must be a positive integer, got 2.5"),
    (lambda: convscope.suggest("zoo:vgg11-cifar", options={"x": 1}), "options must be a"),
])
def test_bad_arguments_are_named(call, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InputError) as e:
        call()
    assert message in str(e.value)


def test_numpy_integers_are_plain_ints_in_the_json() -> None:
    a = convscope.analyze("zoo:vgg11-cifar", batch=np.int64(2), input=np.array([3, 32, 32]))
    assert json.loads(json.dumps(a.to_dict()))["batch"] == 2


def test_only_takes_one_key_as_a_string() -> None:
    adv = convscope.suggest("zoo:vgg16-cifar", only="truncate")
    assert [s.key for s in adv.suggestions] == ["truncate"]


def test_measure_records_have_the_same_keys_whatever_the_model(tmp_path: Path) -> None:
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY)
    by_path = convscope.measure(str(spec), threads=1, time_limit_s=0.2, min_runs=3).to_dict()
    by_graph = convscope.measure(convscope.load_graph(str(spec)), threads=1, time_limit_s=0.2, min_runs=3).to_dict()
    assert set(by_path) == set(by_graph) and by_path["ref"] == str(spec) and by_graph["ref"] is None


def test_capture_leaves_the_models_buffers_as_they_were() -> None:
    """A forward that counts its calls or keeps an average (in place, or by reassigning the buffer)
    runs during capture: the user's model must not see it."""
    torch = pytest.importorskip("torch")
    nn = torch.nn

    class Counting(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1 = nn.Conv2d(3, 8, 3, padding=1)
            self.register_buffer("n", torch.zeros(()))
            self.register_buffer("ema", torch.zeros(8))

        def forward(self, x):  # type: ignore[no-untyped-def]
            self.n += 1
            y = self.c1(x)
            self.ema = self.ema * 0.9 + y.mean((0, 2, 3))
            if y.sum() > 0:  # data-dependent: fx gives up, the eager capture runs it on zeros
                y = y * 2
            return y

    m = Counting()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    n, ema = m.n, m.ema
    for run in (lambda: convscope.analyze(m, input=(3, 8, 8)), lambda: convscope.suggest(m, input=(3, 8, 8))):
        run()
        assert m.n is n and m.ema is ema  # the same tensors, with the same values
        assert all(torch.equal(v, before[k]) for k, v in m.state_dict().items())

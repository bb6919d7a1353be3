"""Contract over every zoo network at 32, 64 and 224 px: every suggested variant (recommended or
refused) is written as a spec file, read back by `analyze`, and must reproduce the suggestion's
numbers exactly; and every variant builds as a torch module and runs.

The torch check, kept cheap on purpose:
* every variant is built for real on the ``meta`` device (no memory, no initialisation), and its
  ``sum(p.numel())`` must equal the predicted params — an independent oracle; identical structures
  (the same rewrite at another resolution) are built once;
* the forward pass (batch 1, CPU) runs on a width-reduced copy: channels ×1/8 by the width
  rewrite's own ``scale_width`` (the layers that set the output keep theirs), because a full VGG-16
  at 224 px costs seconds per variant; its output must have the shape the graph predicts.  It runs
  once per distinct structure, at the smallest resolution that structure is suggested for (the same
  rewrite at 64 and 224 px is the same module; its shapes there are checked by the graph builder).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import pytest

from convscope.advice_api import write_variants
from convscope.analyses._rewrite_conv import scale_width
from convscope.analyses.advice import Advice, suggest_graph
from convscope.api import analyze
from convscope.errors import SpecError
from convscope.ir.graph import Graph
from convscope.ir.ops import OpKind
from convscope.zoo import load_zoo, zoo_entries

NETS = [e.name for e in zoo_entries()]
RESOLUTIONS = (32, 64, 224)


@functools.cache
def _advice(name: str, res: int) -> Advice:
    return suggest_graph(load_zoo(name, input_shape=(3, res, res)))


def _resolutions(name: str) -> list[int]:
    """RESOLUTIONS at which the network exists (AlexNet's stride-4 stem and three pools need 67 px)."""
    out = []
    for res in RESOLUTIONS:
        try:
            load_zoo(name, input_shape=(3, res, res))
        except SpecError as exc:
            assert "larger than the padded input" in str(exc), exc
            continue
        out.append(res)
    assert out, name
    return out


def _strip(d: dict) -> dict:  # type: ignore[type-arg]
    for row in d["layers"]:
        row.pop("source", None)  # where the layer was defined: the written file, not the zoo
    return d


@pytest.mark.parametrize("name", NETS)
def test_every_variant_spec_reproduces_its_numbers(name: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    count = 0
    for res in _resolutions(name):
        adv = _advice(name, res)
        assert not [r for _, _, r in adv.not_applicable if "internal error" in r], (name, res)
        written = write_variants(adv, tmp_path / str(res), ref=f"zoo:{name}", include_refused=True)
        assert set(written) == {"original"} | {s.key for s in adv.suggestions}
        for s in adv.suggestions:
            again = analyze(str(written[s.key]))
            assert _strip(again.to_dict()) == _strip(s.analysis.to_dict()), (name, res, s.key)
            count += 1
    assert count >= 2 * len(_resolutions(name))  # at least the width variants apply everywhere


def _signature(g: Graph) -> tuple[object, ...]:
    """What the torch module depends on: layers, attributes, wiring and input widths."""
    return tuple((n.name, n.op, n.attrs, n.inputs, tuple(g.node(i).out.shape[0] if g.node(i).out.is_image
                                                          else g.node(i).out.shape for i in n.inputs))
                 for n in g.nodes if n.op is not OpKind.INPUT)


_BUILT: dict[tuple[object, ...], int] = {}


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Tiny tensors: one thread is faster, and idle OpenMP threads do not spin on a busy machine."""
    try:
        import torch
    except ImportError:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name", NETS)
def test_every_variant_builds_and_runs_in_torch(name: str) -> None:
    torch = pytest.importorskip("torch")
    from convscope.backends.to_torch import build_module

    for res in _resolutions(name):  # smallest first: a structure is run at the smallest size it is suggested for
        for s in _advice(name, res).suggestions:
            sig = _signature(s.graph)
            if sig not in _BUILT:
                with torch.device("meta"):
                    _BUILT[sig] = sum(p.numel() for p in build_module(s.graph).parameters())
                small, _ = scale_width(s.graph, 1 / 8)
                with torch.inference_mode():
                    y = build_module(small)(torch.randn(1, *small.input_shape))
                assert tuple(y.shape[1:]) == small.node(small.outputs[0]).out.shape, (name, res, s.key)
            assert _BUILT[sig] == s.analysis.totals.params, (name, res, s.key)


@pytest.mark.parametrize("name", ["vgg16-cifar", "resnet18-imagenet", "mobilenetv2", "dilated-context", "fbnet"])
def test_variant_macs_match_flop_counter(name: str) -> None:
    """MACs oracle on the rewritten structures (width-reduced copies, 32 px): FlopCounterMode ÷ 2."""
    torch = pytest.importorskip("torch")
    from torch.utils.flop_counter import FlopCounterMode

    from convscope.analyses.cost import cost
    from convscope.backends.to_torch import build_module

    for s in _advice(name, 32).suggestions:
        if s.key == "resolution":
            continue  # the same layers at a larger input: the core's oracle tests cover it
        small, _ = scale_width(s.graph, 1 / 8)
        module = build_module(small)
        with FlopCounterMode(display=False) as fc, torch.inference_mode():
            module(torch.randn(1, *small.input_shape))
        assert fc.get_total_flops() // 2 == cost(small).total.macs, (name, s.key)

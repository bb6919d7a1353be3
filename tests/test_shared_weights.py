"""Shared weights: a module called twice (or a parameter reused by a functional op) holds its
parameters once.  ``params`` stays ``sum(p.numel())`` of the model (DESIGN.md, Cost), the second call
still costs MACs and reads the weights, and the sharing survives every path a Graph takes: the ONNX
export, JSON, spec files (``shares:``), rebuilds, trunk cuts and rewrites."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from oracles import torch_macs, torch_params
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from convscope.analyses.analyze import analyze_graph
from convscope.analyses.cost import cost
from convscope.api import load_graph
from convscope.cli import main
from convscope.frontends.from_spec import graph_from_spec_text
from convscope.frontends.from_torch import graph_from_module
from convscope.frontends.to_spec import graph_to_spec_text
from convscope.ir.graph import Graph
from convscope.ir.ops import OpKind
from convscope.ir.transform import subgraph_until, with_input


class Recurrent(nn.Module):
    """One block applied twice, a dilated reuse of a conv's weight (functional), a shared head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.block = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.head = nn.Linear(16, 16)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.block(x)
        x = self.block(x)
        x = F.conv2d(x, self.block[0].weight, padding=2, dilation=2)  # the same weight, dilated
        x = x.mean((2, 3))
        return self.fc(self.head(self.head(x)))


def _flop_macs(m: nn.Module, shape: tuple[int, ...]) -> float:
    with FlopCounterMode(display=False) as c, torch.inference_mode():
        m(torch.zeros(1, *shape))
    return c.get_total_flops() / 2


def _check(g: Graph, model: nn.Module) -> None:
    a = analyze_graph(g)
    assert a.totals.params == sum(p.numel() for p in model.parameters())
    assert a.totals.macs == _flop_macs(model, g.input_shape)
    shared = {r.name: r.shares for r in a.layers if r.shares}
    assert len(shared) == 4, shared  # block.0 twice more, block.1 (bn) once more, head once more
    assert all(a.layers[[r.name for r in a.layers].index(n)].params == 0 for n in shared)
    assert not [n for n in a.notes if "counted" in n]
    # built back into a module, the weights are tied: same count, same MACs
    assert torch_params(g) == a.totals.params and torch_macs(g) == a.totals.macs


def test_a_module_called_twice_is_counted_once() -> None:
    m = Recurrent().eval()
    g = graph_from_module(m, (3, 16, 16))
    _check(g, m)
    c = cost(g)
    w = 16 * 16 * 9 * 4
    convs = [r for r in c.nodes if r.weights_read == w]
    assert len(convs) == 3 and sum(r.weight_bytes for r in convs) == w  # held once, read by every call


def test_the_onnx_export_shares_the_same_weights(tmp_path: Path) -> None:
    m = Recurrent().eval()
    path = tmp_path / "recurrent.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, (torch.zeros(1, 3, 16, 16),), str(path), dynamo=False, do_constant_folding=False)
    g = load_graph(str(path))
    _check(g, m)
    # each call of a module is named as the PyTorch front end names it: path, path_1, path_2
    weighted = {OpKind.CONV, OpKind.LINEAR}
    names = [n.name for n in g.nodes if n.op in weighted]
    assert names == [n.name for n in graph_from_module(m, (3, 16, 16)).nodes if n.op in weighted]
    assert {"block.0", "block.0_1", "conv2d", "head", "head_1"} <= set(names)


def test_sharing_only_part_of_an_ops_weights_is_counted_again_with_a_note() -> None:
    class Half(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(3, 8, 3, padding=1)
            self.b = nn.Conv2d(8, 8, 3, padding=1)
            self.c = nn.Conv2d(8, 8, 3, padding=1)
            self.c.weight = self.b.weight  # the weight shared, the biases not

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.c(self.b(self.a(x)))

    m = Half().eval()
    a = analyze_graph(graph_from_module(m, (3, 8, 8)))
    assert not any(r.shares for r in a.layers)
    assert a.totals.params == sum(p.numel() for p in m.parameters()) + 8 * 8 * 9  # the weight twice...
    assert any("b.weight is used by 2 calls and counted 2 times" in n for n in a.notes)  # ...and said so


class Reused(nn.Module):
    """A module's weight reused functionally without its bias (SAC, TridentNet), and a raw weight
    passed once with and once without the bias."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.weight = nn.Parameter(torch.randn(8, 8, 3, 3))
        self.bias = nn.Parameter(torch.zeros(8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x) + F.conv2d(x, self.conv.weight, padding=2, dilation=2)
        return F.conv2d(y, self.weight, self.bias, padding=1) + F.conv2d(y, self.weight, None, padding=1)


@pytest.mark.parametrize("via", ["torch", "onnx"])
def test_a_weight_reused_without_its_bias_is_counted_once(via: str, tmp_path: Path) -> None:
    m = Reused().eval()
    if via == "onnx":
        path = tmp_path / "reused.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(m, (torch.zeros(1, 3, 12, 12),), str(path), dynamo=False, do_constant_folding=False)
        g = load_graph(str(path))
    else:
        g = graph_from_module(m, (3, 12, 12))
    a = analyze_graph(g)
    assert a.totals.params == sum(p.numel() for p in m.parameters()) == 224 + 584
    assert a.totals.macs == _flop_macs(m, (3, 12, 12))
    assert sum(1 for r in a.layers if r.shares) == 2 and not [n for n in a.notes if "counted" in n]
    assert torch_params(g) == a.totals.params and torch_macs(g) == a.totals.macs  # built back: tied


SPEC = """name: siamese
input: [3, 16, 16]
layers:
  - conv: {out: 8, k: 3, name: a}
  - relu
  - conv: {out: 8, k: 3, name: b1}
  - bn: {name: n1}
  - conv: {out: 8, k: 3, d: 2, name: b2, shares: b1, from: a}
  - bn: {name: n2, shares: n1}
  - add: {from: [n1, n2], name: merge}
  - se: {ratio: 0.5, name: se1}
  - se: {ratio: 0.5, name: se2, shares: se1}
  - gap
  - linear: {out: 4, name: fc}
"""


def test_spec_shares_and_round_trips() -> None:
    g = graph_from_spec_text(SPEC, file="siamese.yaml")
    assert {n.name: n.shares for n in g.nodes if n.shares} == {
        "b2": "b1", "n2": "n1", "se2.fc1": "se1.fc1", "se2.fc2": "se1.fc2"}
    a = analyze_graph(g)
    assert a.totals.params == torch_params(g)
    assert a.totals.macs == torch_macs(g)
    for again in (Graph.from_dict(g.to_dict()), graph_from_spec_text(graph_to_spec_text(g), file="w.yaml"),
                  with_input(g, (3, 24, 24))):
        assert {n.name: n.shares for n in again.nodes} == {n.name: n.shares for n in g.nodes}
    assert analyze_graph(graph_from_spec_text(graph_to_spec_text(g), file="w.yaml")).totals == a.totals


def test_a_cut_that_leaves_the_owner_out_hands_the_weights_to_the_sharer() -> None:
    g = graph_from_spec_text(SPEC, file="siamese.yaml")
    t = subgraph_until(g, "n2")  # b1 and n1 are not ancestors of n2
    assert "b1" not in t and t.node("b2").shares is None and t.node("n2").shares is None
    assert analyze_graph(t).totals.params == torch_params(t) == 3 * 8 * 9 + 8 * 8 * 9 + 2 * 8


@pytest.mark.parametrize(("text", "message"), [
    ("  - conv: {out: 8, k: 3, name: c, shares: a}", "cannot share the weights of 'a': its weights have another shape"),
    ("  - conv: {out: 4, k: 3, name: c, shares: nope}", "'shares': no earlier layer named 'nope'"),
    ("  - relu: {shares: a}", "has no weights to share"),
    ("  - conv: {out: 4, k: 3, shares: later}\n  - conv: {out: 4, k: 3, name: later}", "defined later"),
    ("  - residual: {body: [relu], shares: a}", "'shares' applies to a single op"),
])
def test_bad_shares_are_clear_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str,
                                     message: str) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text(f"name: bad\ninput: [3, 8, 8]\nlayers:\n  - conv: {{out: 4, k: 3, name: a}}\n{text}\n")
    assert main(["analyze", str(p)]) == 2
    err = capsys.readouterr().err
    assert message in err and f"{p}:5:" in err and "Traceback" not in err


def test_suggested_variants_keep_or_hand_over_the_weights(tmp_path: Path) -> None:
    from convscope.advice_api import suggest, write_variants

    g = graph_from_spec_text(SPEC, file="siamese.yaml")
    advice = suggest(g, input=(3, 16, 16))
    written = write_variants(advice, tmp_path)
    assert len(written) > 2
    kept = 0
    for path in written.values():
        back = load_graph(str(path))
        assert analyze_graph(back).totals.params == torch_params(back)
        kept += any(n.shares for n in back.nodes)
    assert kept >= 2  # the original, and the variants that leave the shared layers alone


SHARED_CHAIN = """\
name: shared-chain
input: [3, 20, 12]
layers:
  - conv: {out: 32, k: 3, name: s1}
  - relu
  - conv: {out: 32, k: 3, name: s2}
  - relu
  - conv: {out: 32, k: 3, name: s3, shares: s2}
  - relu
  - conv: {out: 32, k: 3, s: 2, name: s4}
  - relu
  - conv: {out: 32, k: 3, name: s5, shares: s2}
  - relu
  - gap
  - linear: 4
"""


@pytest.mark.parametrize("key", ["depthwise-separable", "bottleneck"])
def test_a_rewrite_that_replaces_a_shared_conv_keeps_its_calls_tied(key: str) -> None:
    """s3 and s5 call s2's weights: their replacements call s2's replacements (they were untied,
    each with weights of its own, and the parameters overstated)."""
    from convscope.analyses.advice import suggest_graph

    s = suggest_graph(graph_from_spec_text(SHARED_CHAIN), only=[key]).suggestion(key)
    tied = {n.name: n.shares for n in s.graph.nodes if n.shares}
    assert tied["s3"] == tied["s5"] == "s2" and len(tied) >= 4
    assert s.analysis.totals.params == torch_params(s.graph)
    once = sum(p for n, p in ((r.name, r.params) for r in s.analysis.layers) if n.startswith(("s1", "s2", "s4")))
    head = 32 * 4 + 4
    assert s.analysis.totals.params == once + head  # the sharers add no parameters

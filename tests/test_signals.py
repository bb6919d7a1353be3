"""Networks on 1-D signals (N, C, L), given as --input C,L: the ops a temporal CNN, a 1-D U-Net or a
keyword-spotting net use, checked against the oracles (sum(p.numel()), FlopCounterMode ÷ 2, and the
input-gradient support along the length) through PyTorch and through ONNX."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from test_from_onnx import export
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import convscope
from convscope.analyses.advice import suggest_graph
from convscope.api import load_graph
from convscope.frontends.from_spec import graph_from_spec_text


def _macs(m: nn.Module, shape: tuple[int, ...]) -> float:
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        m.eval()(torch.zeros(1, *shape))
    return fc.get_total_flops() / 2


def _support(m: nn.Module, shape: tuple[int, ...], layer: str) -> int:
    """The widest input-gradient support along L over the layer's positions that stay inside the
    input (positive weights, float64, average pools for max pools)."""
    m = m.double().eval()
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(p.abs() + 0.05)
    out: dict[str, torch.Tensor] = {}
    dict(m.named_modules())[layer].register_forward_hook(lambda mod, i, o: out.setdefault("y", o))
    x = torch.ones(1, *shape, dtype=torch.float64, requires_grad=True)
    m(x)
    y, best = out["y"], 0
    for pos in range(y.shape[-1] // 4, 3 * y.shape[-1] // 4):
        (g,) = torch.autograd.grad(y[..., pos].sum(), x, retain_graph=True)
        cols = torch.nonzero(g[0].abs().sum(0) > 0).flatten()
        if len(cols) and cols.min() > 0 and cols.max() < shape[-1] - 1:
            best = max(best, int(cols.max() - cols.min() + 1))
    return best


class CausalTCN(nn.Module):
    """Dilated causal convolutions, padded on the left with F.pad (and nn.ConstantPad1d once)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.ConstantPad1d((2, 0), 0.0), nn.Conv1d(2, 8, 3))
        self.blocks = nn.ModuleList(nn.Conv1d(8, 8, 3, dilation=d) for d in (2, 4, 8))
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for b in self.blocks:
            x = x + F.relu(b(F.pad(x, (2 * b.dilation[0], 0))))
        return self.fc(x.mean(-1))


class UNet1d(nn.Module):
    """Encoder with max pools, a ConvTranspose1d and a linear interpolation back up, skip concats."""

    def __init__(self, mode: str = "linear") -> None:
        super().__init__()
        self.mode = mode
        self.e1, self.e2 = nn.Conv1d(1, 4, 9, padding=4), nn.Conv1d(4, 8, 9, padding=4)
        self.e3 = nn.Conv1d(8, 8, 9, padding=4)
        self.up = nn.ConvTranspose1d(8, 8, 2, stride=2)
        self.d2, self.d1 = nn.Conv1d(16, 8, 9, padding=4), nn.Conv1d(12, 4, 9, padding=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.e1(x)
        b = self.e2(F.avg_pool1d(a, 2))
        c = self.e3(F.avg_pool1d(b, 2))
        y = self.d2(torch.cat([self.up(c), b], 1))
        if self.mode == "linear":
            y = F.interpolate(y, scale_factor=2, mode="linear", align_corners=False)
        else:
            y = F.interpolate(y, size=a.shape[-1], mode="nearest")
        return self.d1(torch.cat([y, a], 1))


class Strided(nn.Module):
    """x[..., ::2] between convolutions: a stride of 2 along the length."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2, self.c3 = nn.Conv1d(2, 4, 3, padding=1), nn.Conv1d(4, 4, 3, padding=1), nn.Conv1d(4, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c3(self.c2(self.c1(x)[..., ::2])[:, :, 1::2])


class SamePad(nn.Module):
    """padding='same' (an even kernel: one more zero on the right; ONNX writes auto_pad SAME_UPPER)
    after a reflect-padded conv."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv1d(2, 4, 3, padding=1, padding_mode="reflect")
        self.c2, self.c3 = nn.Conv1d(4, 4, 4, padding="same"), nn.Conv1d(4, 4, 3, padding="same", dilation=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c3(self.c2(self.c1(x)))


@pytest.mark.parametrize("make,shape,layers", [
    (SamePad, (2, 60), {"c1": 3, "c2": 6, "c3": 10}),
    (CausalTCN, (2, 300), {"stem.1": 3, "blocks.0": 7, "blocks.1": 15, "blocks.2": 31}),
    (lambda: UNet1d("linear"), (1, 256), {"d2": 76, "d1": 88}),
    (lambda: UNet1d("nearest"), (1, 256), {"d2": 76, "d1": 84}),
    (Strided, (2, 200), {"c2": 7, "c3": 15}),
], ids=["same-pad", "tcn", "unet-linear", "unet-nearest", "strided-slice"])
def test_signal_ops_match_the_oracles_through_pytorch_and_onnx(make, shape, layers, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """F.pad and ConstantPad1d (a causal TCN), ConvTranspose1d and 1-D interpolation were unknown
    (MACs missing, every receptive field '?'); x[..., ::2] on a signal grew the height instead of the
    length (c3 came out 7 for 15); the linear interpolation's phases were averaged (86 for 88)."""
    m = make().eval()
    params = sum(p.numel() for p in m.parameters())
    onnx = export(m, shape, tmp_path / "m.onnx", input_names=["x"], dynamic_axes={"x": {0: "n", 2: "length"}})
    for a in (convscope.analyze(m, input=shape), convscope.analyze(onnx, input=shape)):
        assert a.unknown_ops == () and a.totals.params == params and a.totals.macs == _macs(m, shape)
        for name, want in layers.items():
            assert a.layer(name).rf_max == (1, want), (name, a.layer(name).rf_max)
    for name, want in layers.items():
        assert _support(make(), shape, name) == want


def test_a_length_made_the_height_or_rows_run_together_are_not_guessed() -> None:
    """unsqueeze(-1) puts the length on the height (a (5, 1) conv after it read it as the width), and
    a map's rows flattened into one axis before a 1xk conv mix across rows: receptive fields are
    unknown from there, with a note, instead of wrong."""

    class Tall(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1, self.c2 = nn.Conv1d(4, 8, 5, padding=2), nn.Conv2d(8, 8, (5, 1), padding=(2, 0))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.c2(self.c1(x).unsqueeze(-1))

    a = convscope.analyze(Tall(), input=(4, 64))
    assert a.layer("c1").rf_max == (1, 5) and a.layer("c2").rf_max is None
    assert any("a length made the height" in n for n in a.notes)
    g = graph_from_spec_text(
        "name: rows\ninput: [3, 8, 8]\nlayers:\n  - conv: {out: 4, k: 3, name: c1}\n  - flatten: {axis: 1}\n"
        "  - unsqueeze: {axis: 1}\n  - conv: {out: 4, k: [1, 5], name: c2}\n")
    b = convscope.analyze(g)
    assert b.layer("c1").rf_max == (3, 3) and b.layer("c2").rf_max is None


class Head(nn.Module):
    def __init__(self, head: str) -> None:
        super().__init__()
        self.head = head
        self.convs = nn.Sequential(*[nn.Sequential(nn.Conv1d(8 if i == 0 else 16, 16, 5, padding=2), nn.ReLU())
                                     for i in range(6)])
        self.fc = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.convs(x)
        return self.fc(x.mean(-1) if self.head == "mean" else F.adaptive_avg_pool1d(x, 1).flatten(1))


@pytest.mark.parametrize("head", ["mean", "adaptive"])
def test_truncating_a_conv1d_net_keeps_the_last_activation(head: str) -> None:
    """After x.mean(-1) truncate was 'not applicable' (the cut fell on a (C, 1, L) map the 1-D mean
    cannot read); with a 1-D pool it dropped the ReLU after the last kept conv."""
    g = load_graph(Head(head), input=(8, 16))
    adv = suggest_graph(g, only=["truncate"])
    assert [s.key for s in adv.suggestions] == ["truncate"], adv.not_applicable
    s = adv.suggestions[0]
    assert "convs.3.1" in s.graph and "convs.4.0" not in s.graph
    assert {"convs.4.0", "convs.5.0"} <= set(s.removed) and "convs.3.1" not in s.removed

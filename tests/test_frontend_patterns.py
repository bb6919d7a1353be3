"""Patterns users write that the fixtures do not: tokens turned back into a map, the classic SENet
``expand_as``, GroupNorm and ``adaptive_max_pool2d(x, 1)`` as ONNX exporters write them, an op the
ONNX front end does not know (its weights still count), mixed batch and no-batch values.  Each model
goes through the PyTorch front end and its ONNX export; the numbers are checked against
``sum(p.numel())``, FlopCounterMode ÷ 2 and each other."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from oracles import torch_macs, torch_params
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from convscope.analyses.analyze import analyze_graph
from convscope.frontends.from_onnx import load_onnx
from convscope.frontends.from_torch import graph_from_module
from convscope.results import Analysis

SHAPE = (3, 32, 32)


class TokensBack(nn.Module):
    """A transformer-style stage inside a CNN: map -> tokens -> map (also a non-local block's view)."""

    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Conv2d(3, 8, 3, padding=1)
        self.mix = nn.Linear(8, 8)
        self.d = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.c(x)
        b, c, h, w = x.shape
        t = self.mix(x.flatten(2).transpose(1, 2))
        return self.d(t.transpose(1, 2).reshape(b, c, h, w))


class ClassicSE(nn.Module):
    """SENet's own code: view(b, c), two Linear layers, view(b, c, 1, 1), x * y.expand_as(x)."""

    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Conv2d(3, 16, 3, padding=1)
        self.fc = nn.Sequential(nn.Linear(16, 4, bias=False), nn.ReLU(), nn.Linear(4, 16, bias=False), nn.Sigmoid())
        self.o = nn.Conv2d(16, 16, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.c(x)
        b, c, _, _ = x.size()
        y = self.fc(F.adaptive_avg_pool2d(x, 1).view(b, c)).view(b, c, 1, 1)
        return self.o(x * y.expand_as(x))


class GroupNormNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 16, 3, padding=1)
        self.gn = nn.GroupNorm(4, 16)
        self.c2 = nn.Conv2d(16, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c2(F.relu(self.gn(self.c1(x))))


class MaxGate(nn.Module):
    """A channel gate on global *max* pooling (CBAM's channel half)."""

    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Conv2d(3, 16, 3, padding=1)
        self.e = nn.Conv2d(16, 16, 1)
        self.o = nn.Conv2d(16, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.c(x)
        return self.o(x * torch.sigmoid(self.e(F.adaptive_max_pool2d(x, 1))))


class ECA(nn.Module):
    """ECA: a Conv1d across the pooled channels (a 1-D conv on the gate's path), then LayerNorm over
    (C, H, W) (GroupNorm with one group and an affine per position)."""

    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Conv2d(3, 16, 3, padding=1)
        self.k = nn.Conv1d(1, 1, 3, padding=1, bias=False)
        self.ln = nn.LayerNorm([16, 32, 32])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.c(x)
        y = F.adaptive_avg_pool2d(x, 1)
        y = self.k(y.squeeze(-1).transpose(-1, -2)).transpose(-1, -2).unsqueeze(-1)
        return self.ln(x * torch.sigmoid(y))


class StackSum(nn.Module):
    """torch.stack along a new first axis (the batch is no longer first), summed back."""

    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Conv2d(3, 24, 1)
        self.d = nn.Conv2d(24, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b, c = torch.split(self.c(x), 8, dim=1)
        return self.d(torch.cat([a, torch.stack([a, b, c], 0).sum(0), c], 1))


class L2Norm(nn.Module):
    """SSD's L2Norm, written out (the norm over channels expanded to them) and as F.normalize, which
    ONNX writes as ReduceL2 and an Expand of the channels."""

    def __init__(self) -> None:
        super().__init__()
        self.c, self.d = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 8, 3, padding=1)
        self.w = nn.Parameter(torch.ones(16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.c(x)
        n = y.pow(2).sum(1, keepdim=True).sqrt() + 1e-10
        return self.d(self.w[None, :, None, None] * (y / n.expand_as(y))) + self.d(F.normalize(y, dim=1))


class WhereAct(nn.Module):
    """A hand-written leaky activation with torch.where and a comparison, and a mask of two maps."""

    def __init__(self) -> None:
        super().__init__()
        self.c, self.d = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.e = nn.Conv2d(8, 8, 5, padding=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.c(x)
        y = torch.where(y > 0, y, 0.1 * y)
        z = self.d(y)
        return self.e(torch.where(z >= y, z, 0.0))  # e's input reads c's map (5 px) and d's (5 px + 2)


class LayerNormMap(nn.Module):
    """LayerNorm over the whole (C, H, W) map: GroupNorm with one group and an affine per position."""

    def __init__(self) -> None:
        super().__init__()
        self.c, self.d = nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.ln = nn.LayerNorm([8, SHAPE[1] // 2, SHAPE[2] // 2])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.d(self.ln(self.c(x)))


class SpatialLayerNorm(nn.Module):
    """LayerNorm over (H, W) only, per channel: not an op convscope expresses (unknown on both paths)."""

    def __init__(self) -> None:
        super().__init__()
        self.c, self.d = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.ln = nn.LayerNorm([SHAPE[1], SHAPE[2]])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.d(self.ln(self.c(x)))


class NonLocal(nn.Module):
    """A non-local block: the map made tokens, attention, reshaped back to (B, C, H, W), then
    BatchNorm and GroupNorm (they needed a channel axis the reshape had lost)."""

    def __init__(self) -> None:
        super().__init__()
        self.c, self.d = nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.bn, self.gn = nn.BatchNorm2d(8), nn.GroupNorm(2, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.c(x)
        b, c, h, w = y.shape
        t = y.flatten(2).transpose(1, 2)
        t = F.scaled_dot_product_attention(t, t, t)
        return self.d(self.gn(self.bn(t.transpose(1, 2).reshape(b, c, h, w))))


class NarrowDivisor(nn.Module):
    """x.narrow / torch.narrow (slices) and an average pool with divisor_override (a scale): were unknown."""

    def __init__(self) -> None:
        super().__init__()
        self.c, self.d = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(4, 4, 3)
        self.p = nn.AvgPool2d(2, divisor_override=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.p(self.c(x)).narrow(1, 2, 4)
        return self.d(torch.narrow(y, 3, 1, 6))


class UpToSkip(nn.Module):
    """A U-Net decoder step: the transposed conv sized to the skip connection with output_size."""

    def __init__(self) -> None:
        super().__init__()
        self.down = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose2d(8, 3, 3, stride=2, padding=1)
        self.fuse = nn.Conv2d(6, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fuse(torch.cat([x, self.up(self.down(x), output_size=x.shape[-2:])], 1))


MODELS = {"tokens_back": TokensBack, "classic_se": ClassicSE, "group_norm": GroupNormNet, "max_gate": MaxGate,
          "eca": ECA, "stack_sum": StackSum, "l2norm": L2Norm, "where": WhereAct, "layer_norm_map": LayerNormMap, "up_to_skip": UpToSkip,
          "spatial_layer_norm": SpatialLayerNorm, "non_local": NonLocal,
          "narrow_divisor": NarrowDivisor}
EXACT = {"eca", "non_local", "narrow_divisor", "tokens_back", "classic_se", "group_norm", "max_gate", "stack_sum", "l2norm", "where", "layer_norm_map",
         "up_to_skip"}  # nothing unknown: MACs exact too


def _onnx(m: nn.Module, path: Path) -> Analysis:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        try:
            torch.onnx.export(m, (torch.zeros(1, *SHAPE),), str(path), dynamo=False, do_constant_folding=False)
        finally:
            logging.disable(logging.NOTSET)
    return analyze_graph(load_onnx(str(path)))


def _flop_macs(m: nn.Module) -> float:
    with FlopCounterMode(display=False) as c, torch.inference_mode():
        m(torch.zeros(1, *SHAPE))
    return c.get_total_flops() / 2


@pytest.mark.parametrize("name", sorted(MODELS))
def test_params_and_macs_through_both_front_ends(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    m = MODELS[name]().eval()
    params = sum(p.numel() for p in m.parameters())
    a = analyze_graph(graph_from_module(m, SHAPE))
    b = _onnx(m, tmp_path / f"{name}.onnx")
    for got in (a, b):
        assert got.totals.params == params, (name, got.unknown_ops)  # unknown ops keep their weights
        assert not [n for n in got.notes if "counted 2 times" in n]
    if name in EXACT:
        assert not a.unknown_ops and not b.unknown_ops, (a.unknown_ops, b.unknown_ops)
        assert a.totals.macs == b.totals.macs == _flop_macs(m)
        spatial = [r.name for r in a.layers if r.op == "conv"]
        assert [a.layer(n).rf_max for n in spatial] == [b.layer(n).rf_max for n in spatial]
    else:  # an op we cannot express is reported, never guessed
        assert a.unknown_ops and b.unknown_ops


def test_a_gate_on_global_max_pooling_is_global_in_both() -> None:
    a = analyze_graph(graph_from_module(MaxGate().eval(), SHAPE))
    assert a.layer("o").rf_max == (float("inf"), float("inf")) and a.border_layer is None
    assert not any(r.unproductive for r in a.layers)


def test_a_pool_over_the_whole_map_is_global_pooling() -> None:
    class OldHead(nn.Module):  # pre-adaptive ResNets: AvgPool2d(7) on the last 7x7 map
        def __init__(self) -> None:
            super().__init__()
            self.c = nn.Conv2d(3, 8, 3, padding=1)
            self.pool = nn.AvgPool2d(7)
            self.fc = nn.Linear(8, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.pool(self.c(x)).flatten(1))

    a = analyze_graph(graph_from_module(OldHead().eval(), (3, 7, 7)))
    assert a.layer("pool").op == "gap" and not a.layer("pool").unproductive


class BlurPool(nn.Module):
    """Anti-aliased downsampling: a fixed binomial filter kept in a buffer, applied with F.conv2d."""

    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Conv2d(3, 8, 3, padding=1)
        a = torch.tensor([1.0, 2.0, 1.0])
        self.register_buffer("filt", (a[:, None] * a[None, :] / 16)[None, None].repeat(8, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(self.c(x), (1, 1, 1, 1), mode="reflect"), self.filt, stride=2, groups=8)


def test_a_filter_held_in_a_buffer_is_no_parameter() -> None:
    m = BlurPool().eval()
    g = graph_from_module(m, SHAPE)
    a = analyze_graph(g)
    blur = a.layers[-1]
    assert g.node(blur.name).attrs.fixed and blur.params == 0  # type: ignore[union-attr]
    assert a.totals.params == sum(p.numel() for p in m.parameters()) == torch_params(g)
    assert a.totals.macs == _flop_macs(m) == torch_macs(g)
    assert blur.bytes_read == 4 * (8 * 34 * 34 + 8 * 9)  # the filter is still read


def test_fixed_weights_in_a_spec_round_trip() -> None:
    from convscope.frontends.from_spec import graph_from_spec_text
    from convscope.frontends.to_spec import graph_to_spec_text

    g = graph_from_spec_text("name: f\ninput: [3, 16, 16]\nlayers:\n  - conv: {out: 4, k: 3, bias: true}\n"
                             "  - conv: {out: 4, k: 3, g: 4, fixed: true, bias: true, name: blur}\n"
                             "  - convT: {out: 4, k: 2, s: 2, g: 4, fixed: true, bias: true, name: up}\n", file="f.yaml")
    a = analyze_graph(g)
    assert a.layer("blur").params == 4 and a.layer("up").params == 4  # the biases only
    assert torch_params(g) == a.totals.params
    back = graph_from_spec_text(graph_to_spec_text(g), file="w.yaml")
    assert analyze_graph(back).totals == a.totals and back.node("blur").attrs.fixed  # type: ignore[union-attr]


class WeightNormed(nn.Module):
    """Weights computed by parametrizations, through the modules and through a user's F.conv2d."""

    def __init__(self) -> None:
        super().__init__()
        from torch.nn.utils.parametrizations import spectral_norm, weight_norm

        self.a = weight_norm(nn.Conv2d(3, 8, 3, padding=1))
        self.b = spectral_norm(nn.Conv2d(8, 8, 3, padding=1))
        self.up = weight_norm(nn.ConvTranspose2d(8, 8, 4, stride=2, padding=1))
        self.c = weight_norm(nn.Conv2d(8, 8, 3, padding=1))
        self.fc = weight_norm(nn.Linear(8, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.up(self.b(torch.relu(self.a(x))))
        x = F.conv2d(x, self.c.weight, self.c.bias, padding=2, dilation=2)  # the weight read by the user
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def test_weights_computed_by_a_parametrization_are_the_layers_weights() -> None:
    m = WeightNormed().eval()
    g = graph_from_module(m, SHAPE)
    a = analyze_graph(g)
    assert not a.unknown_ops
    assert [r.op for r in a.layers if r.params] == ["conv", "conv", "convT", "conv", "linear"]
    with FlopCounterMode(display=False) as c, torch.no_grad():  # spectral_norm refuses inference_mode
        m(torch.zeros(1, *SHAPE))
    assert a.totals.macs == c.get_total_flops() / 2 == torch_macs(g)
    # Counted as the weights they compute (the deployed layer); weight_norm's magnitudes are named.
    held = sum(p.numel() for p in m.parameters())
    magnitudes = 8 + 8 + 8 + 4  # one per output channel (the transposed conv's dim 0 is its input)
    assert a.totals.params == held - magnitudes == torch_params(g)
    notes = [n for n in g.meta_dict()["notes"] if "computed from" in n]
    assert len(notes) == 4 and "a.parametrizations.weight.original0" in notes[0]
    dilated = g.node(a.layers[-4].name).attrs
    assert dilated.dilation == (2, 2) and a.layers[-4].macs == 8 * 8 * 9 * 64 * 64  # type: ignore[union-attr]


class Unpooling(nn.Module):
    """SegNet's decoder: max pooling that returns its indices, unpooled by them later."""

    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Conv2d(3, 8, 3, padding=1)
        self.p = nn.MaxPool2d(2, return_indices=True)
        self.m = nn.Conv2d(8, 8, 3, padding=1)
        self.u = nn.MaxUnpool2d(2)
        self.d = nn.Conv2d(8, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, i = self.p(self.c(x))
        y = self.u(self.m(y), i, output_size=x.shape[-2:])
        y2, i2 = F.max_pool2d(y, 2, return_indices=True)
        return self.d(F.max_unpool2d(y2, i2, 2))


def test_max_unpooling_by_the_pools_indices() -> None:
    m = Unpooling().eval()
    g = graph_from_module(m, SHAPE)
    a = analyze_graph(g)
    assert not a.unknown_ops
    assert [r.op for r in a.layers] == ["conv", "maxpool", "conv", "upsample", "maxpool", "upsample", "conv"]
    assert a.layer("u").out_shape == (8, 32, 32) and a.layer("d").out_shape == (4, 32, 32)
    assert a.totals.params == sum(p.numel() for p in m.parameters()) == torch_params(g)
    assert a.totals.macs == _flop_macs(m) == torch_macs(g)
    # c 3 (j 1) -> pool 4 (j 2) -> m 4 + 2·2 = 8 -> unpool 8 (each pair of outputs reads one m
    # position) -> pool 8 (a pair) -> unpool 8 -> d: three neighbours read two m positions, 8 + 2 = 10
    assert [a.layer(n).rf_max for n in ("p", "m", "u", "d")] == [(4, 4), (8, 8), (8, 8), (10, 10)]
    assert sum("max_unpool2d analysed as a nearest upsampling" in n for n in g.meta_dict()["notes"]) == 2


class TokenGroups(nn.Module):
    """Tokens whose features are split into groups for a per-group MLP, then turned back into a map:
    positions are untouched, so the 3x3 conv after it grows the receptive field (4 + 2·4 = 12)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 4, 4)
        self.mlp = nn.Linear(8, 8)
        self.conv = nn.Conv2d(32, 16, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        b, c, h, w = x.shape
        t = self.mlp(x.flatten(2).transpose(1, 2).reshape(b, h * w, 4, 8))
        return self.conv(t.reshape(b, h * w, c).transpose(1, 2).reshape(b, c, h, w))


def test_splitting_token_features_keeps_positions_and_the_range_is_found() -> None:
    from convscope.api import analyze

    a = analyze(TokenGroups(), input=SHAPE)
    assert a.layer("mlp").rf_max == (4, 4) and a.layer("conv").rf_max == (12, 12)
    # the map is rebuilt from tokens (its sizes are not followed through the reshapes): the range is
    # found by capturing the model again at each size
    assert a.feasible_resolution == (16, 12)  # a 3x3 conv needs a 4x4 map: 16 px; it sees 12 px


class AfterUnknown(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.c = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c(torch.fft.fft2(self.a(x)).real)


def test_the_ranges_top_is_unknown_when_the_last_layers_receptive_field_is() -> None:
    a = analyze_graph(graph_from_module(AfterUnknown(), SHAPE))
    assert a.unknown_ops and a.layer("c").rf_max is None
    assert a.feasible_resolution[1] is None  # not layer a's 3 px


class WindowAttention(nn.Module):
    """Swin's window attention: the map split into 4x4 windows (batch and windows merged by reshape),
    attention inside each window, the windows put back; a residual around it."""

    def __init__(self, c: int = 16, w: int = 4) -> None:
        super().__init__()
        self.w = w
        self.stem = nn.Conv2d(3, c, 2, 2)
        self.attn = nn.MultiheadAttention(c, 2, batch_first=True)
        self.head = nn.Linear(c, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x).permute(0, 2, 3, 1)
        b, h, w_, c = x.shape
        y = x.view(b, h // self.w, self.w, w_ // self.w, self.w, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, self.w ** 2, c)
        y = self.attn(y, y, y, need_weights=False)[0]
        y = y.view(b, h // self.w, w_ // self.w, self.w, self.w, c).permute(0, 1, 3, 2, 4, 5).reshape(b, h, w_, c)
        return self.head((x + y).mean((1, 2)))


def test_window_attention_is_reported_never_guessed(tmp_path: Path) -> None:
    """Positions split into windows are not followed: the receptive field after the split is unknown
    (it is the window's, 8 px here, not the whole image's), said in a note or as an unknown op; the
    windows' attention never becomes a constant of the zero input the model was run on."""
    torch.manual_seed(0)
    m = WindowAttention().eval()
    a = analyze_graph(graph_from_module(m, SHAPE))
    assert [u[0] for u in a.unknown_ops] == ["add"]  # the batch merged with the windows: not followed
    assert "constant" not in {r.op for r in a.layers} and a.layer("head").rf_max is None
    params = sum(p.numel() for p in m.parameters())
    assert a.totals.params == params  # the total counts them, as sum(numel) does; no layer row holds them
    assert a.totals.unlisted_params == sum(p.numel() for p in m.attn.parameters())
    assert sum(r.params for r in a.layers) == params - a.totals.unlisted_params
    assert any("attn.in_proj_weight" in n for n in a.notes)  # the ones in no layer, named
    b = _onnx(m, tmp_path / "window.onnx")  # batch 1: the windows are a reshape within the sample
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:  # attention's products
        m(torch.zeros(1, *SHAPE))  # counted (autograd on: not the fused inference kernel, which is not)
    assert not b.unknown_ops and b.totals.params == params and b.totals.macs == counter.get_total_flops() / 2
    assert b.layer("stem").rf_max == (2, 2) and b.layer("head").rf_max is None
    assert any(n.startswith("receptive fields are unknown from ") and "[16, 16, 16] to [4, 4, 4, 4, 16]" in n
               for n in b.notes)


def test_where_and_comparisons_are_elementwise() -> None:
    a = analyze_graph(graph_from_module(WhereAct(), SHAPE))
    assert a.layer("e").rf_min == (7, 7) and a.layer("e").rf_max == (9, 9)  # the union of both paths
    assert a.unknown_ops == ()


class TokenNorm(nn.Module):
    """Windows folded into the batch, a LayerNorm over the tokens' features (MobileViT, Swin)."""

    def __init__(self) -> None:
        super().__init__()
        self.c, self.ln, self.fc = nn.Conv2d(3, 16, 3, padding=1), nn.LayerNorm(16), nn.Linear(16, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.c(x)
        b, c, h, w = y.shape
        t = y.reshape(b, c, 2, h // 2, 2, w // 2).permute(0, 2, 4, 3, 5, 1).reshape(b * 4, h * w // 4, c)
        t = self.fc(self.ln(t))
        return t.reshape(b, 2, 2, h // 2, w // 2, c).permute(0, 5, 3, 1, 4, 2).reshape(b, c, h, w)


def test_a_layer_norm_on_batch_folded_tokens_holds_its_own_parameters(tmp_path: Path) -> None:
    m = TokenNorm().eval()
    a = _onnx(m, tmp_path / "tokens.onnx")  # batch 1: the windows are an axis of the sample
    assert a.layer("ln").params == 32 and a.totals.params == sum(p.numel() for p in m.parameters())
    assert a.totals.macs == _flop_macs(m)

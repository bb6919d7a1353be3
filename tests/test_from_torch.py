"""The PyTorch front end on networks written as users write them (tests/fixtures), against
independent oracles: params = sum(p.numel()), MACs = FlopCounterMode / 2 (attention through the math
kernel, which FlopCounterMode counts), rf_max = the input-gradient support both of the imported graph
rebuilt by build_module and of the user's original module; names = module paths; nothing unknown."""

from __future__ import annotations

import functools
import importlib
import json
import math
import re
import textwrap
from collections import namedtuple
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fixtures import FIXTURES
from fixtures.rf_oracles import OFFSETS, graph_rf, module_rf, narrowest, ragged, symmetric
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

import convscope
from convscope.analyses.analyze import analyze_graph
from convscope.analyses.receptive_field import receptive_field
from convscope.cli import main
from convscope.errors import InputError
from convscope.frontends.from_torch import graph_from_factory, graph_from_module
from convscope.ir.ops import OpKind
from convscope.ir.transform import with_input

TESTS = Path(__file__).parent
GOLDEN = TESTS / "golden"
BY_NAME = {f.name: f for f in FIXTURES}
SPATIAL = (OpKind.CONV, OpKind.CONV_T, OpKind.MAXPOOL, OpKind.AVGPOOL, OpKind.ADAPTIVE_AVGPOOL,
           OpKind.ADAPTIVE_MAXPOOL, OpKind.ADD, OpKind.CONCAT, OpKind.MUL, OpKind.UPSAMPLE, OpKind.PIXEL_SHUFFLE,
           OpKind.PIXEL_UNSHUFFLE)


def make(name: str) -> nn.Module:
    mod, fn = BY_NAME[name].factory.split(":")
    torch.manual_seed(0)
    return getattr(importlib.import_module(mod), fn)()  # type: ignore[no-any-return]


@functools.cache
def captured(name: str):  # type: ignore[no-untyped-def]
    m = make(name)
    g = graph_from_module(m, BY_NAME[name].input, name=name)
    return m, g, analyze_graph(g)


def flop_macs(m: nn.Module, shape: tuple[int, ...]) -> float:
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        m.eval()(torch.zeros(1, *shape))
    return counter.get_total_flops() / 2


def sample(names: list[str], k: int) -> list[str]:
    """About k names spread over the depth, the last one included."""
    step = max(1, len(names) // k)
    return list(dict.fromkeys(names[::step][:k] + names[-1:]))


def spatial_layers(g) -> list[str]:  # type: ignore[no-untyped-def]
    rf = receptive_field(g).as_dict()
    return [n.name for n in g.nodes
            if n.op in SPATIAL and n.out.is_image and rf[n.name].known and not rf[n.name].constant]


# -- every fixture ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", [f.name for f in FIXTURES])
def test_params_macs_names_and_nothing_unknown(name: str) -> None:
    m, g, a = captured(name)
    assert a.totals.params == sum(p.numel() for p in m.parameters())
    assert a.totals.macs == flop_macs(m, BY_NAME[name].input)
    assert a.unknown_ops == () and g.meta_dict()["notes"] == () and g.meta_dict()["capture"] == "fx"
    layers = {r.name for r in a.layers}
    weighted = [p for p, mod in m.named_modules() if isinstance(mod, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))
                and not p.endswith("out_proj")]  # nn.MultiheadAttention's projection is '<path>.out_proj' too
    assert weighted and all(p in layers for p in weighted), [p for p in weighted if p not in layers][:5]


@pytest.mark.parametrize("name", [f.name for f in FIXTURES])
def test_rf_matches_the_gradient_support_of_the_rebuilt_graph(name: str) -> None:
    _, g, _ = captured(name)
    layers = sample(spatial_layers(g), 4)
    own = name == "vit"  # a ViT's size is fixed by its position embedding
    checks = graph_rf(g, layers, cap=512, own_size=own)
    reached = [c for c in checks if c.reachable]
    assert all(c.error() == 0 for c in reached), [c for c in reached if c.error()]
    if name != "dilated-seg":  # its pooling branch upsamples to a fixed size: checked on the module below
        # The oracle reaches every sampled layer whose receptive field fits in 512 px.
        assert len(reached) >= (1 if own else 2), checks
        assert all(c.reachable for c in checks if max(c.expected) < 400 or all(map(math.isinf, c.expected))), checks


MODULE_ORACLE = ["vgg11-bn", "resnet18", "inception", "densenet", "squeezenet", "dilated-seg", "unet-bilinear", "vit",
                 "espcn", "rrdbnet-x2", "cbam-resnet", "alexnet"]


@pytest.mark.parametrize("name", MODULE_ORACLE)
def test_rf_matches_the_gradient_support_of_the_original_module(name: str) -> None:
    m, g, _ = captured(name)
    rf = receptive_field(g).as_dict()
    mods = dict(m.named_modules())
    leaves = [n.name for n in g.nodes if n.name in mods and n.op in (OpKind.CONV, OpKind.MAXPOOL, OpKind.AVGPOOL)
              and rf[n.name].known and max(rf[n.name].rf_max) <= 200]  # type: ignore[arg-type]
    layers = {n: (float(rf[n].rf_max[0]), float(rf[n].rf_max[1])) for n in sample(leaves, 4)}  # type: ignore[index]
    jumps = {n: max(float(j) for j in rf[n].jump) for n in layers}  # type: ignore[union-attr]
    axes = (0,) if symmetric(g) else (0, 1)
    kw = {"fixed_side": 32} if name == "vit" else {"cap": 320, "jumps": jumps, "narrow": narrowest(g)}
    checks = module_rf(m, layers, axes=axes, offsets=OFFSETS if ragged(g) else 1, **kw)  # type: ignore[arg-type]
    reached = [c for c in checks if c.reachable]
    assert len(reached) >= max(1, len(checks) - 1), checks
    assert all(c.error() == 0 for c in reached), [c for c in reached if c.error()]


def test_eager_capture_builds_the_same_graph() -> None:
    for name in ("resnet18", "shufflenetv2", "vit", "convnext"):
        _, g, _ = captured(name)
        eager = graph_from_module(make(name), BY_NAME[name].input, name=name, capture="eager")
        assert eager.meta_dict()["capture"] == "eager"
        assert [n.to_dict() for n in eager.nodes] == [n.to_dict() for n in g.nodes]


# -- structure ---------------------------------------------------------------------------------------
def test_squeeze_excitation_is_found_by_structure_whatever_its_name() -> None:
    _, g, a = captured("mobilenetv3")  # the SE class is called ChannelGate
    gates = [n for n in g.nodes if n.name.endswith(".mul") and ".block." in n.name]
    assert len(gates) == 9
    for n in gates:
        row = a.layer(n.name)
        assert row.rf_min is not None and math.isfinite(row.rf_min[0]) and row.rf_max == (math.inf, math.inf)
        gate_in = [g.node(i) for i in n.inputs]
        assert {x.op for x in gate_in} == {OpKind.ACT, OpKind.CONV} or any(x.out.spatial == (1, 1) for x in gate_in)
    after = a.layer("features.4.block.3.0")  # the projection after a gate: finite rf_min, global rf_max
    assert math.isfinite(after.rf_min[0]) and math.isinf(after.rf_max[0])  # type: ignore[index]


class Functional(nn.Module):
    """Every functional spelling the issue lists, in one network."""

    def __init__(self) -> None:
        super().__init__()
        self.w1 = nn.Parameter(torch.randn(16, 3, 3, 3) * 0.1)
        self.b1 = nn.Parameter(torch.zeros(16))
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.ln = nn.LayerNorm(32)
        self.gamma = nn.Parameter(torch.ones(32))
        self.mha = nn.MultiheadAttention(32, 4, batch_first=True)
        self.qkv = nn.Linear(32, 96)
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.hardswish(F.conv2d(x, self.w1, self.b1, stride=1, padding=1))
        x = F.max_pool2d(x, 2) + F.avg_pool2d(x, 3, stride=2, padding=1)
        y = F.silu(self.conv2(x))
        b, c, h, w = y.shape
        y = y.view(b, 4, c // 4, h, w).transpose(1, 2).reshape(b, c, h, w)  # channel shuffle
        y = y * torch.sigmoid(F.adaptive_avg_pool2d(y, 1))
        y = F.interpolate(y, scale_factor=2, mode="nearest")
        y = torch.cat([y[:, :16], y[:, 16:]], dim=1)
        z = self.ln(y.permute(0, 2, 3, 1)).permute(0, 3, 1, 2) * self.gamma[:, None, None]  # LN over channels
        t = z.flatten(2).transpose(1, 2)
        t = t + self.mha(t, t, t, need_weights=False)[0]
        q, k, v = self.qkv(t).reshape(b, -1, 3, 4, 8).permute(2, 0, 3, 1, 4).unbind(0)
        t = t + F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, -1, c)
        pooled = F.gelu(t.mean(1)) + z.mean((2, 3))
        return self.fc(torch.flatten(pooled, 1))


def test_functional_ops_are_understood() -> None:
    m = Functional()
    g = graph_from_module(m, (3, 16, 16))
    a = analyze_graph(g)
    assert a.unknown_ops == ()
    ops = {n.op for n in g.nodes}
    assert {OpKind.CONV, OpKind.MAXPOOL, OpKind.AVGPOOL, OpKind.GLOBAL_AVGPOOL, OpKind.UPSAMPLE, OpKind.CONCAT,
            OpKind.CHANNEL_SHUFFLE, OpKind.LAYERNORM, OpKind.ATTENTION, OpKind.MEAN, OpKind.CONSTANT,
            OpKind.SLICE, OpKind.PERMUTE} <= ops
    fns = {n.attrs.fn for n in g.nodes if n.op is OpKind.ACT}  # type: ignore[union-attr]
    assert {"hswish", "swish", "sigmoid", "gelu"} <= fns
    assert a.totals.params == sum(p.numel() for p in m.parameters())
    assert a.totals.macs == flop_macs(m, (3, 16, 16))
    assert g.node("conv2d").attrs.out_channels == 16  # type: ignore[union-attr]
    assert g.node("mha.attention").attrs.heads == 4  # type: ignore[union-attr]


class SpaceToDepth(nn.Module):
    """Depth-to-space and space-to-depth written by hand (TensorFlow's channel order), reductions
    over channels and over positions, ``torch.max`` with and without a dimension."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(12, 16, 3, padding=1)
        self.gate = nn.Conv2d(2, 1, 7, padding=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        y = x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 3, 5, 1, 2, 4).reshape(b, c * 4, h // 2, w // 2)
        y = self.conv(y)
        y = y.view(b, 2, 2, 4, h // 2, w // 2).permute(0, 3, 4, 1, 5, 2).reshape(b, 4, h, w)
        peak = torch.max(y, dim=1, keepdim=True).values
        low, _ = torch.min(y, 1)
        y = y * torch.sigmoid(self.gate(torch.cat([peak, low.unsqueeze(1)], 1)))
        return y.sum((2, 3)) + torch.max(y, y * 0.5).amax((2, 3))


def test_hand_written_space_to_depth_and_reductions() -> None:
    m = SpaceToDepth()
    g = graph_from_module(m, (3, 16, 16))
    a = analyze_graph(g)
    ops = {r.name: (r.op, r.out_shape) for r in a.layers}
    assert ops["reshape"] == ("pixel_unshuffle", (12, 8, 8)) and ops["reshape_1"] == ("pixel_shuffle", (4, 16, 16))
    assert ops["max"] == ("amax", (1, 16, 16)) and ops["min"] == ("amin", (16, 16)) and ops["sum"] == ("sum", (4,))
    assert a.layer("conv").rf_max == (6, 6) and a.layer("gate").rf_max == (12, 12)  # 6 + 6 px at jump 1
    assert a.layer("sum").rf_max == (math.inf, math.inf)
    # torch.max(a, b) (two tensors) is not a reduction but torch.maximum: an elementwise merge
    assert ops["max_1"] == ("add", (4, 16, 16)) and a.unknown_ops == ()
    assert a.layer("max_1").rf_max == a.layer("gate").rf_max
    assert a.totals.params == sum(p.numel() for p in m.parameters())
    # the same at another resolution: the unsqueezed map follows the input size
    big = analyze_graph(with_input(g, (3, 32, 32)))
    assert big.layer("gate").out_shape == (1, 32, 32) and big.layer("reshape_1").out_shape == (4, 32, 32)


class L2Norm(nn.Module):
    """SSD's L2Norm on conv4_3 (F.normalize over channels times a learned scale) and a normalised
    embedding head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.scale = nn.Parameter(torch.full((1, 8, 1, 1), 20.0))
        self.head = nn.Conv2d(8, 4, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = F.normalize(self.conv(x), dim=1) * self.scale
        return self.head(y), F.normalize(y.mean((2, 3)), p=1.0, dim=1)


def test_normalize_is_pointwise_over_channels_and_global_over_positions() -> None:
    m = L2Norm()
    a = analyze_graph(graph_from_module(m, (3, 16, 16)))
    assert a.unknown_ops == () and a.totals.params == sum(p.numel() for p in m.parameters())
    assert a.layer("normalize").rf_max == (3, 3) and a.layer("head").rf_max == (5, 5)
    assert a.layer("normalize_1").rf_max == (math.inf, math.inf)
    assert a.totals.macs == flop_macs(m, (3, 16, 16))


# -- what is not understood, control flow, in-place ops, parameters ---------------------------------
class Odd(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.lp = nn.LPPool2d(2, 2)  # a power-average pool
        self.lstm_like = nn.Conv1d(8, 8, 1)  # a 1-D conv: not in the 2-D IR
        self.head = nn.Conv2d(8, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.lp(self.conv(x))
        y = torch.fft.fft2(y).real  # a function the tables do not know
        return self.head(y)


def test_an_unknown_op_is_reported_with_its_name_and_shape_never_guessed() -> None:
    m = Odd()
    g = graph_from_module(m, (3, 8, 8))
    a = analyze_graph(g)
    assert [t for _, t in a.unknown_ops] == ["LPPool2d", "fft_fft2", "real"]
    assert g.node("lp").out.shape == (8, 4, 4)
    assert a.layer("head").rf_max is None  # after an unknown op: unknown
    rows = {r["name"]: r for r in a.to_dict()["layers"]}  # JSON: unknown is null, global [null, null]
    assert rows["head"]["rf_max"] is None and rows["conv"]["rf_max"] == [3, 3]
    d = convscope.analyze(m, input=(3, 8, 8), device="raspi4").to_dict()  # with latency: every row its "ms"
    assert all("ms" in r for r in d["layers"]) and [r["name"] for r in d["layers"] if r["ms"] is None] == \
        [n for n, _ in a.unknown_ops]
    unused = m.lstm_like.weight.numel() + m.lstm_like.bias.numel()
    # the total counts every parameter, as sum(p.numel()) does; the unused ones sit in no layer row
    assert a.totals.params == sum(p.numel() for p in m.parameters())
    assert a.totals.unlisted_params == unused == a.totals.params - sum(r.params for r in a.layers)
    assert a.totals.weight_bytes == 4 * a.totals.params
    assert any("never used by forward" in n for n in g.meta_dict()["notes"])


class Branchy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(4, 4, 3, padding=2, dilation=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.a(x)
        if y.abs().sum() > 1e9:  # branches on values: symbolic tracing cannot follow
            y = y * 2
        z = y.clone()
        z.add_(self.b(y))  # in place, not rebound
        return F.relu(z, inplace=True)


def test_data_dependent_control_flow_falls_back_to_running_the_model() -> None:
    g = graph_from_module(Branchy(), (3, 16, 16))
    meta = g.meta_dict()
    assert meta["capture"] == "eager" and "test_from_torch.py" in meta["notes"][0]
    with pytest.raises(InputError, match="symbolic tracing failed"):
        graph_from_module(Branchy(), (3, 16, 16), capture="fx")
    rf = receptive_field(g)
    assert rf.of("relu").rf_max == (7, 7) and g.node("relu").inputs == ("add",)  # x.add_(y) counted
    assert [n.name for n in g.nodes] == ["input", "a", "b", "add", "relu"]


class _NumpyTanh(torch.autograd.Function):
    """The usual wrapper around an extension kernel: the forward leaves torch."""

    @staticmethod
    def forward(ctx, x):  # type: ignore[no-untyped-def, override]
        return torch.from_numpy(np.tanh(x.detach().cpu().numpy()))

    @staticmethod
    def backward(ctx, g):  # type: ignore[no-untyped-def, override]
        return g


class _TorchScale(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):  # type: ignore[no-untyped-def, override]
        return x * 2

    @staticmethod
    def backward(ctx, g):  # type: ignore[no-untyped-def, override]
        return 2 * g


class _Extension(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c2(_NumpyTanh.apply(_TorchScale.apply(self.c1(x))))


def test_a_custom_function_that_leaves_torch_is_an_unknown_op_never_a_constant() -> None:
    a = convscope.analyze(_Extension(), input=(3, 16, 16))
    assert [n for n, _ in a.unknown_ops] == ["_numpytanh"]  # the torch one is followed: a scale
    assert a.layer("c1").rf_max == (3, 3) and a.layer("c2").rf_max is None
    # no border found, but c2 cannot be judged: the summary and the JSON say so
    assert a.border_layer is None and a.to_dict()["rf_unknown_layers"] == ["c2"]
    assert "(1 layer after unknown ops not judged)" in a.summary()
    assert "rf_unknown_layers" not in convscope.analyze(_SizedFPN(), input=(3, 16, 16)).to_dict()
    assert a.totals.params == sum(p.numel() for p in _Extension().parameters())
    assert torch.autograd.Function.__dict__["apply"].__func__.__qualname__ == "Function.apply"  # restored


class Writes(nn.Module):
    """Writes into part of a tensor (symbolic tracing cannot follow item assignment)."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how
        self.a, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 4, 7, padding=3)
        self.c = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.a(x)
        if self.how == "channels":  # exactly cat(b(y), y[:, 4:]) (b reads a copy: the oracle's autograd
            y[:, :4] = self.b(y.clone())  # needs the y it read unchanged)
        elif self.how == "add":  # exactly cat(y[:, :4] + b(y), y[:, 4:])
            y[:, :4] += self.b(y.clone())
        elif self.how == "shift":  # a temporal-shift-style write: unknown, never dropped
            out = torch.zeros_like(y)
            out[:, :, 1:] = y[:, :, :-1]
            y = out
        else:  # an in-place op on a view changes y too
            y[:, :4].mul_(self.b(y))
        return self.c(y)


@pytest.mark.parametrize("how, rf", [("channels", (11, 11)), ("add", (11, 11)), ("shift", None), ("view", None)])
def test_a_write_into_part_of_a_tensor_is_followed_or_unknown_never_dropped(how: str, rf: tuple[int, int] | None) -> None:
    m = Writes(how)
    g = graph_from_module(m, (3, 16, 16))
    a = analyze_graph(g)
    assert g.meta_dict()["capture"] == "eager" and a.layer("c").rf_max == rf
    unused = sum(p.numel() for p in m.b.parameters()) if how == "shift" else 0
    assert a.totals.params == sum(p.numel() for p in m.parameters())  # every parameter, as sum(numel)
    assert sum(r.params for r in a.layers) == a.totals.params - unused and a.totals.unlisted_params == unused
    if rf is not None:
        check, = module_rf(m, {"c": (float(rf[0]), float(rf[1]))}, axes=(0,))
        assert a.unknown_ops == () and check.reachable and check.error() == 0, check
    else:
        assert len(a.unknown_ops) == 1 and g.node("c").inputs == (a.unknown_ops[0][0],)


def test_shared_weights_are_counted_once_and_mode_is_restored() -> None:
    class Shared(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 3, padding=1)
            self.bn = nn.BatchNorm2d(4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(self.bn(self.conv(x)))
    m = Shared().train()
    before = m.bn.running_mean.clone()
    g = graph_from_module(m, (4, 8, 8))
    assert m.training and m.bn.training and torch.equal(m.bn.running_mean, before)
    assert [n.name for n in g.nodes] == ["input", "conv", "bn", "conv_1"]
    assert g.node("conv_1").shares == "conv"  # counted once (tests/test_shared_weights.py)
    assert analyze_graph(g).totals.params == sum(p.numel() for p in m.parameters())


def test_a_reshape_that_folds_the_batch_is_refused_not_guessed() -> None:
    class Fold(nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return x.reshape(-1, 3), x * 2  # (B*H*W/… , 3): the batch mixed into another axis
    g = graph_from_module(Fold(), (3, 4, 4))
    assert g.outputs == ("mul",)  # the folded output is not an image's: it is left out, the other kept
    with pytest.raises(InputError, match="no batch axis in front .*folds the batch axis"):
        graph_from_module(nn.Flatten(0), (3, 4, 4))


def test_wrong_input_channels_is_an_input_error() -> None:
    with pytest.raises(InputError, match="layer 'conv1' expects 3 input channels but gets 1"):
        graph_from_module(make("resnet18"), (1, 32, 32))
    with pytest.raises(InputError, match=r"running the model on a zero input of shape \[3, 32\] .*--input C,L runs the "
                                         r"model on a signal \(N, C, L\): for a model on images give C,H,W; a model that reads \(N, L\)"):
        graph_from_module(make("resnet18"), (3, 32))
    with pytest.raises(InputError, match="three positive integers C,H,W \\(or C,L for a signal\\)"):
        graph_from_module(make("resnet18"), (3, 32, 32, 32))


# -- the API and the command line --------------------------------------------------------------------
def test_api_analyze_takes_a_module() -> None:
    a = convscope.analyze(make("squeezenet"), input=(3, 64, 64))
    assert a.layer("features.3.expand3x3").op == "conv" and a.model == "SqueezeNet"


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_file_factory_and_module_factory(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, _ = run_cli(["analyze", str(TESTS / "fixtures" / "resnet.py") + ":resnet18", "--input", "3,64,64",
                            "--json", "-"], capsys)
    d = json.loads(out)
    assert code == 0 and d["model"] == "resnet18" and d["input"] == [3, 64, 64]
    assert any(r["name"] == "layer3.0.conv2" for r in d["layers"])
    monkeypatch.chdir(TESTS)
    code, out, _ = run_cli(["analyze", "fixtures.squeezenet:squeezenet1_1", "--input", "3,64,64", "--json", "-"], capsys)
    assert code == 0 and json.loads(out)["totals"]["params"] == 1235496


def _user_file(tmp_path: Path, body: str) -> str:
    p = tmp_path / "net.py"
    p.write_text(textwrap.dedent(body))
    return str(p)


@pytest.mark.parametrize("body,fn,args,message", [
    ("from torch import nn\ndef make(): return nn.Conv2d(3, 4, 3)\n", "make", [], "needs --input C,H,W"),
    ("import not_a_package_xyz\n", "make", ["--input", "3,8,8"], "ModuleNotFoundError: No module named 'not_a_package_xyz'"),
    ("def other(): pass\n", "make", ["--input", "3,8,8"], "'make' is not defined in"),
    ("def make(): raise ValueError('bad width')\n", "make", ["--input", "3,8,8"], "raised ValueError: bad width"),
    ("def make(): return 42\n", "make", ["--input", "3,8,8"], "returned a int, not a torch.nn.Module"),
    ("def make(:\n", "make", ["--input", "3,8,8"], "net.py:1: syntax error"),
    ("import sys\nsys.exit('needs a GPU')\n", "make", ["--input", "3,8,8"], "called sys.exit('needs a GPU')"),
    ("import sys\ndef make(): sys.exit(0)\n", "make", ["--input", "3,8,8"], "calling make() called sys.exit(0)"),
    ("import sys, torch\nclass M(torch.nn.Module):\n    def forward(self, x):\n        sys.exit(1)\n"
     "def make(): return M()\n", "make", ["--input", "3,8,8"], "failed: SystemExit: 1"),
    ("from torch import nn\ndef make(): return nn.Conv2d(3, 4, 3)\n", "make", ["--input", "3,8"], "for a model on images give C,H,W"),
])
def test_cli_factory_errors_exit_2_with_a_message(tmp_path: Path, capsys: pytest.CaptureFixture[str], body: str,
                                                 fn: str, args: list[str], message: str) -> None:
    code, _, err = run_cli(["analyze", f"{_user_file(tmp_path, body)}:{fn}", *args], capsys)
    assert code == 2 and message in err and "Traceback" not in err


def test_missing_file_and_module(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        graph_from_factory(str(tmp_path / "absent.py"), "make", (3, 8, 8))
    with pytest.raises(InputError, match="importing no_such_module_xyz failed"):
        graph_from_factory("no_such_module_xyz", "make", (3, 8, 8))


# -- golden JSON ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["resnet18", "mobilenetv3", "unet"])
def test_golden_json(name: str, overwrite: bool) -> None:
    _, _, a = captured(name)
    data = json.loads(json.dumps(a.to_dict(), allow_nan=False))
    rows = data["layers"]
    assert sum(r["params"] for r in rows) == data["totals"]["params"]
    assert sum(r["macs"] for r in rows) == data["totals"]["macs"]
    path = GOLDEN / f"torch-{name}.json"
    if overwrite or not path.exists():
        path.write_text(json.dumps(data, indent=1) + "\n")
        if not overwrite:
            pytest.fail(f"{path.name} was missing and has been written; check it in")
    assert data == json.loads(path.read_text())


def test_a_state_made_from_a_parameter_holds_none_of_its_parameters() -> None:
    """A ConvGRU starts its hidden state as ``weight.new_zeros(...)``: a tensor of the weight's dtype,
    not the weight; params must still equal sum(p.numel())."""
    import torch
    import torch.nn as nn

    from convscope.api import analyze

    class GRUish(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gates = nn.Conv2d(11, 16, 3, padding=1)
            self.cand = nn.Conv2d(11, 8, 3, padding=1)

        def forward(self, x):  # type: ignore[no-untyped-def]
            b, _, h, w = x.shape
            s = self.gates.weight.new_zeros(b, 8, h, w)
            for _ in range(2):
                z, r = torch.sigmoid(self.gates(torch.cat([x, s], 1))).chunk(2, 1)
                s = (1 - z) * s + z * torch.tanh(self.cand(torch.cat([x, r * s], 1)))
            return s

    m = GRUish()
    a = analyze(m, input=(3, 16, 16))
    assert a.totals.params == sum(p.numel() for p in m.parameters())
    assert not [r.name for r in a.layers if r.op == "constant" and r.params]


def test_a_branch_that_folds_the_batch_into_another_axis_is_unknown_never_a_constant() -> None:
    """MobileViT's unfold (``reshape(B*p*p, N, C)``) then a Linear on the tokens: the graph cannot
    follow the batch, so the branch is unknown where it meets the network again, and the Linear's
    parameters are named in a note; never a constant holding them."""
    import torch
    import torch.nn as nn

    from convscope.api import analyze

    class Unfold(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.lin = nn.Linear(8, 8)
            self.head = nn.Conv2d(16, 4, 3, padding=1)

        def forward(self, x):  # type: ignore[no-untyped-def]
            s = x = self.conv(x)
            b, c, h, w = x.shape
            t = x.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 3, 5, 2, 4, 1).reshape(b * 4, h * w // 4, c)
            t = self.lin(t)
            x = t.reshape(b, 2, 2, h // 2, w // 2, c).permute(0, 5, 3, 1, 4, 2).reshape(b, c, h, w)
            return self.head(torch.cat([s, x], 1))

    a = analyze(Unfold(), input=(3, 16, 16))
    assert [n for n, _ in a.unknown_ops] == ["cat"] and a.layer("head").rf_max is None
    assert not [r for r in a.layers if r.op == "constant"]
    assert any("72 parameters in 2 tensors belong to layers that read a tensor convscope cannot follow" in n
               for n in a.notes)
    assert a.totals.params == sum(p.numel() for p in Unfold().parameters()) and a.totals.unlisted_params == 72


class EinsumAttention(nn.Module):
    """Attention over positions written with einsum (as many hybrid CNNs write it), and an einsum
    that is not one matrix product (a sum over two axes), which stays unknown."""

    def __init__(self, c: int = 16, heads: int = 2, trace: bool = False) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        self.qkv = nn.Conv2d(c, 3 * c, 1)
        self.proj = nn.Conv2d(c, c, 1)
        self.heads, self.trace = heads, trace

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        b, c, h, w = x.shape
        q, k, v = self.qkv(x).reshape(b, 3, self.heads, c // self.heads, h * w).unbind(1)
        att = torch.einsum("bhdq,bhdk->bhqk", q, k).softmax(-1)
        y = torch.einsum("bhqk,bhdk->bhdq", att, v).reshape(b, c, h, w)
        if self.trace:
            y = y * torch.einsum("bchw,bchw->bc", y, y).reshape(b, c, 1, 1)
        return self.proj(y) + x


def test_einsum_matrix_products_are_matmuls_and_others_stay_unknown(tmp_path: Path) -> None:
    from test_from_onnx import export

    from convscope.frontends.from_onnx import load_onnx

    m = EinsumAttention()
    shape = (3, 8, 8)
    for g in (graph_from_module(m, shape), load_onnx(str(export(m, shape, tmp_path / "es.onnx", opset_version=17)))):
        a = analyze_graph(g)
        assert a.unknown_ops == ()
        assert a.totals.params == sum(p.numel() for p in m.parameters())
        assert a.totals.macs == flop_macs(m, shape)
        assert [r.out_shape for r in a.layers if r.op == "matmul"] == [(2, 64, 64), (2, 64, 8)]
        assert a.layer("proj").rf_max == (math.inf, math.inf) and a.layer("stem").rf_max == (3, 3)
    odd = analyze_graph(graph_from_module(EinsumAttention(trace=True), shape))
    assert [w for _, w in odd.unknown_ops] == ["einsum (einsum 'bchw,bchw->bc' is not one matrix product (one "
                                               "contracted, one row and one column index))"]


class ECABlock(nn.Module):
    """ECA-Net's channel attention: a 1-D convolution across the pooled channels gates the map."""

    def __init__(self) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(3, 16, 3, padding=1)
        self.eca = nn.Conv1d(1, 1, 3, padding=1, bias=False)
        self.head = nn.Conv2d(16, 8, 3, padding=1)
        self.temporal = nn.Conv1d(8, 4, 5, stride=2, padding=2, dilation=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv0(x)
        y = F.adaptive_avg_pool2d(x, 1)
        y = self.eca(y.squeeze(-1).transpose(-1, -2)).transpose(-1, -2).unsqueeze(-1)
        x = self.head(x * torch.sigmoid(y))
        return self.temporal(x.mean(2))  # a 1-D convolution along the width


def test_one_dimensional_convolutions_are_counted_and_keep_the_receptive_field(tmp_path: Path) -> None:
    from test_from_onnx import export

    from convscope.frontends.from_onnx import load_onnx

    m = ECABlock()
    shape = (3, 16, 16)
    for g in (graph_from_module(m, shape), load_onnx(str(export(m, shape, tmp_path / "eca.onnx")))):
        a = analyze_graph(g)
        assert a.unknown_ops == ()
        assert a.totals.params == sum(p.numel() for p in m.parameters())
        assert a.totals.macs == flop_macs(m, shape)
        assert a.layer("eca").op == "conv" and a.layer("eca").kernel == (1, 3) and a.layer("eca").params == 3
        assert a.layer("head").rf_min == (5, 5) and a.layer("head").rf_max == (math.inf, math.inf)
        assert a.layer("temporal").kernel == (1, 5) and a.layer("temporal").out_shape == (4, 1, 8)


class Seq1d(nn.Module):
    """A temporal CNN over (N, C, L) with 1-D pools (modules and functions)."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv1d(4, 8, 7, padding=3)
        self.pool = nn.AvgPool1d(2)
        self.c2 = nn.Conv1d(8, 8, 5, padding=4, dilation=2)
        self.c3 = nn.Conv1d(8, 8, 3, padding=1)
        self.gap = nn.AdaptiveAvgPool1d(1)
        self.fc = nn.Linear(8, 3)
        self.oracle = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, 1, L): convscope takes C,H,W inputs
        x = self.pool(F.relu(self.c1(x.squeeze(2))))
        pool = F.avg_pool1d if self.oracle else F.max_pool1d  # a max pool's gradient reaches one input
        x = self.c3(pool(self.c2(x), 3, 2, 1))
        return self.fc(self.gap(x).flatten(1))


def test_one_dimensional_pools_are_windows_along_the_length() -> None:
    m = Seq1d().eval()
    a = convscope.analyze(m, input=(4, 1, 64))
    assert a.unknown_ops == () and a.totals.params == sum(p.numel() for p in m.parameters())
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        m(torch.zeros(1, 4, 1, 64))
    assert a.totals.macs == fc.get_total_flops() / 2
    assert a.layer("pool").op == "avgpool" and a.layer("pool").kernel == (1, 2)
    assert a.layer("gap").rf_max == (math.inf, math.inf)
    # the gradient of the centre of c3's output: its support along the length
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(p.abs() + 0.01)
    x = torch.ones(1, 4, 1, 64, dtype=torch.float64, requires_grad=True)
    m.oracle = True
    feats = {}
    m.double().c3.register_forward_hook(lambda mod, i, o: feats.setdefault("c3", o))
    m(x)
    feats["c3"][0, :, feats["c3"].shape[-1] // 2].sum().backward()
    cols = torch.nonzero(x.grad[0, :, 0].abs().sum(0) > 0).flatten()  # type: ignore[union-attr]
    assert tuple(a.layer("c3").rf_max) == (1, int(cols.max() - cols.min() + 1)) == (1, 36)
    assert a.feasible_resolution == (29, 36)


class Signal1d(Seq1d):
    """The same temporal CNN as a user writes it: forward takes (N, C, L), no image axes at all."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.unsqueeze(2))


def test_a_model_on_signals_takes_input_c_l(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    """--input C,L runs a Conv1d model on (N, C, L) (it was refused: three integers only, and C,1,L
    fed a 4-D tensor that Conv1d rejects).  The graph holds the (C, 1, L) map; every number equals
    that of the same network read through an image axis of 1, its ONNX export's too (1-D pools
    included), and other lengths are captured again as (C, L)."""
    from test_from_onnx import export

    m = Signal1d().eval()
    ref = analyze_graph(graph_from_module(Seq1d().eval(), (4, 1, 64)))
    a = convscope.analyze(m, input=(4, 64))
    assert a.input == (4, 1, 64) and a.unknown_ops == ()
    assert a.totals.params == sum(p.numel() for p in m.parameters()) == ref.totals.params
    assert a.totals.macs == flop_macs(m, (4, 64)) == ref.totals.macs
    assert [(r.name, r.rf_min, r.rf_max) for r in a if r.op in ("conv", "avgpool", "maxpool")] == \
        [(r.name, r.rf_min, r.rf_max) for r in ref if r.op in ("conv", "avgpool", "maxpool")]
    assert a.layer("c3").rf_max == (1, 36) and a.feasible_resolution == ref.feasible_resolution == (29, 36)
    longer = convscope.analyze_resolutions(m, [16, 128], input=(4, 64))
    assert [r.input for r in longer] == [(4, 1, 16), (4, 1, 128)]
    assert longer[1].totals.macs == flop_macs(m, (4, 128))
    onnx = export(m, (4, 64), tmp_path / "sig.onnx", input_names=["x"], dynamic_axes={"x": {0: "n", 2: "length"}})
    b = convscope.analyze(onnx, input=(4, 100))
    assert b.unknown_ops == () and b.input == (4, 1, 100) and b.totals.macs == flop_macs(m, (4, 100))
    assert b.layer("pool").op == "avgpool" and b.layer("gap").op == "gap" and b.feasible_resolution == (29, 36)
    with pytest.raises(InputError, match=r"is a signal \['n', 4, 'length'\]: give --input C,L \(or C,1,L\), not 4,5,100"):
        convscope.analyze(onnx, input=(4, 5, 100))
    # the command line, and a spec written from it that reads back to the same numbers
    (tmp_path / "sig.py").write_text("import test_from_torch\ndef make(): return test_from_torch.Signal1d()\n")
    assert main(["suggest", f"{tmp_path / 'sig.py'}:make", "--input", "4,64", "--write", str(tmp_path / "v"),
                 "--json", str(tmp_path / "s.json")]) == 0
    capsys.readouterr()
    original = convscope.analyze(str(tmp_path / "v" / "00-original.yaml"), input=(4, 64))
    assert (original.totals.params, original.totals.macs, original.feasible_resolution) == \
        (a.totals.params, a.totals.macs, a.feasible_resolution)
    written = json.loads((tmp_path / "s.json").read_text())
    for i, s in enumerate(written["suggestions"], 1):
        v = convscope.analyze(next((tmp_path / "v").glob(f"{i:02d}-*.yaml")))
        assert (v.totals.params, v.totals.macs, list(v.feasible_resolution)) == \
            (s["metrics"]["params"], s["metrics"]["macs"], s["metrics"]["feasible_resolution"])


class Mirrored(nn.Module):
    """torch.flip between convolutions (a mirrored branch added back, as symmetric networks do)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 5, padding=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.a(x)
        return self.b(y + torch.flip(y, dims=[3])) + torch.flip(self.b(y), dims=(2, 3))


def test_flip_is_a_slice_read_backwards(tmp_path: Path) -> None:
    from test_from_onnx import export

    from convscope.backends.to_torch import build_module
    from convscope.frontends.from_onnx import load_onnx

    m = Mirrored()
    shape = (3, 16, 16)
    g = graph_from_module(m, shape)
    for graph in (g, load_onnx(str(export(m, shape, tmp_path / "flip.onnx")))):
        a = analyze_graph(graph)
        assert a.unknown_ops == ()
        assert a.totals.params == sum(p.numel() for p in m.parameters()) and a.totals.macs == flop_macs(m, shape)
        # y + flip(y): position k reads the input around k and around 15 - k, which no (r, j) pair is
        assert a.layer("a").rf_max == (3, 3) and a.layer("b").rf_max is None
        assert any("it merges a flipped or transposed map with one that is not" in n for n in a.notes), a.notes
    wide, = module_rf(m, {"b": (7.0, 7.0)}, axes=(1,), fixed_side=16)  # the oracle: wider than any one path
    assert wide.measured[0] is not None and wide.measured[0] > 7, wide
    flips = [n for n in g.nodes if n.op is OpKind.SLICE]
    assert [(n.attrs.axis, n.attrs.reverse) for n in flips] == [(2, True), (1, True), (2, True)]
    # the module convscope builds from the graph flips the same way
    class Flip(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.flip(x, dims=[2, 3]) + 1.0

    x = torch.randn(1, *shape)
    assert torch.equal(build_module(graph_from_module(Flip(), shape))(x), torch.flip(x, dims=[2, 3]) + 1.0)


class FlippedBack(nn.Module):
    """Paths that are flipped or transposed and then turned back line up again (test-time
    augmentation, axial blocks); a channel flip moves no position."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 5, padding=2)
        self.c = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.a(x)
        y = y + torch.flip(self.b(torch.flip(y, dims=[2, 3])), dims=[3, 2]) + torch.flip(y, dims=[1])
        return self.c(y + self.b(y.transpose(2, 3)).transpose(2, 3))


def test_flipped_or_transposed_paths_turned_back_keep_their_receptive_field(tmp_path: Path) -> None:
    from test_from_onnx import export

    from convscope.frontends.from_onnx import load_onnx

    m, shape = FlippedBack(), (3, 16, 16)
    for graph in (graph_from_module(m, shape), load_onnx(str(export(m, shape, tmp_path / "back.onnx")))):
        a = analyze_graph(graph)
        assert a.layer("c").rf_min == (5, 5) and a.layer("c").rf_max == (13, 13), graph.meta_dict().get("frontend")
        assert not any("flipped or transposed" in n for n in a.notes)
    check, = module_rf(m, {"c": (13.0, 13.0)}, axes=(0,))
    assert check.reachable and check.error() == 0, check


class SmallNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn(self.c1(x)))
        return self.fc((self.c2(y) + y).mean((2, 3)))


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")  # torch.jit is deprecated
def test_scripted_traced_and_compiled_modules_are_analysed() -> None:
    """torch.jit.script / trace have no Python forward: they are read through their ONNX export;
    torch.compile wraps the module it compiles, which is analysed."""
    shape = (3, 16, 16)
    macs = flop_macs(SmallNet(), shape)
    for m in (torch.jit.script(SmallNet()), torch.jit.trace(SmallNet().eval(), torch.zeros(1, *shape)),
              torch.compile(SmallNet())):
        g = graph_from_module(m, shape)
        a = analyze_graph(g)
        assert a.totals.params == sum(p.numel() for p in m.parameters())
        assert a.totals.macs == macs and a.unknown_ops == ()
        assert {"c1", "bn", "c2", "fc"} <= {r.name for r in a.layers}
        assert a.layer("c2").rf_max == (5, 5)
        if isinstance(m, torch.jit.ScriptModule):
            assert any("TorchScript module" in n for n in g.meta_dict()["notes"])


def test_less_common_activations_are_understood_and_rebuilt() -> None:
    from convscope.backends.to_torch import build_module

    acts = [nn.CELU(0.5), nn.Softsign(), nn.LogSigmoid(), nn.Tanhshrink(), nn.Hardshrink(0.3), nn.Softshrink(0.2)]
    m = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), *acts, nn.Conv2d(8, 4, 3, padding=1))
    g = graph_from_module(m, (3, 8, 8))
    a = analyze_graph(g)
    assert a.unknown_ops == () and a.totals.params == sum(p.numel() for p in m.parameters())
    fns = [(n.attrs.fn, n.attrs.alpha) for n in g.nodes if n.op is OpKind.ACT]
    assert fns == [("celu", 0.5), ("softsign", None), ("logsigmoid", None), ("tanhshrink", None),
                   ("hardshrink", 0.3), ("softshrink", 0.2)]
    assert a.layer("7").rf_max == (5, 5) and a.layer("7").rf_min == (5, 5)
    built = build_module(g)
    assert [type(x).__name__ for x in built.modules() if type(x) in {type(v) for v in acts}] == \
        [type(v).__name__ for v in acts]
    assert built(torch.randn(1, 3, 8, 8)).shape == (1, 4, 8, 8)


def test_a_half_precision_model_says_which_dtype_the_bytes_are_for() -> None:
    g = graph_from_module(SmallNet().half(), (3, 16, 16))
    assert any("parameters are float16" in n and "--dtype fp16" in n for n in g.meta_dict()["notes"])
    assert analyze_graph(g, dtype="fp16").totals.weight_bytes == 2 * sum(p.numel() for p in SmallNet().parameters())
    assert not any("parameters are" in n for n in graph_from_module(SmallNet(), (3, 16, 16)).meta_dict()["notes"])


# --- found by an audit on models of its own (SK, CBAM, coordinate attention, fixed-size resize) -----
class _StackBranches(nn.Module):
    """SK-style: branches stacked on a new axis, then reduced over it (or flattened into channels)."""

    def __init__(self, dim: int, how: str):
        super().__init__()
        self.a, self.b = nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 1)
        self.out = nn.Conv2d(16 if how == "flatten" else 8, 8, 3, padding=1)
        self.dim, self.how = dim, how

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.stack([self.a(x), self.b(x)], dim=self.dim)
        s = s.flatten(1, 2) if self.how == "flatten" else getattr(s, self.how)(dim=self.dim)
        return self.out(s)


@pytest.mark.parametrize("dim,how", [(1, "sum"), (1, "mean"), (0, "sum"), (1, "flatten")])
def test_stacked_branches_stay_feature_maps(dim: int, how: str) -> None:
    m = _StackBranches(dim, how)
    a = convscope.analyze(m, input=(8, 16, 16))
    assert a.unknown_ops == ()
    assert a.totals.macs == flop_macs(m, (8, 16, 16)) and a.totals.params == sum(p.numel() for p in m.parameters())
    assert a.layer("out").rf_max == (5, 5) and a.layer("out").rf_min == (3, 3)


class _SEExpandAs(nn.Module):
    """The classic SE block, ``x * y.expand_as(x)``: the gate is recorded at the map's size."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 16, 3, padding=1)
        self.fc = nn.Sequential(nn.Linear(16, 4), nn.ReLU(), nn.Linear(4, 16), nn.Sigmoid())
        self.c2, self.c3 = nn.Conv2d(16, 16, 3, padding=1, stride=2), nn.Conv2d(16, 16, 3, padding=1, stride=2)
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.c1(x)
        y = self.fc(x.mean((2, 3))).view(x.shape[0], 16, 1, 1)
        x = self.c3(self.c2(x * y.expand_as(x)))
        return self.head(x.mean((2, 3)))


def test_the_feasible_range_of_a_model_with_fixed_size_ops_does_not_depend_on_the_input() -> None:
    # c3 needs an input map larger than its kernel: at 7 px c2 gives 4×4, at 6 px 3×3
    for r in (16, 32, 40):
        assert convscope.analyze(_SEExpandAs(), input=(3, r, r)).feasible_resolution == (7, 9)


class _FixedSize(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Conv2d(3, 8, 3, padding=1)
        self.d = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.d(F.interpolate(self.c(x), size=(48, 48), mode="nearest"))


def test_res_captures_the_model_again_at_each_size(capsys) -> None:  # type: ignore[no-untyped-def]
    a32, a64 = convscope.api.analyze_resolutions(_FixedSize(), [32, 64], input=(3, 32, 32))
    assert a64.layer("d").out_shape == (8, 48, 48)  # the resize stays at its fixed size
    assert a64.totals.macs == flop_macs(_FixedSize(), (3, 64, 64)) != a32.totals.macs
    flat = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 32 * 32, 10))
    with pytest.raises(InputError, match=r"at 64x64: .*expects 4096 input features but gets 16384"):
        convscope.api.analyze_resolutions(flat, [32, 64], input=(3, 32, 32))


class _Transposed(nn.Module):
    """Coordinate attention's W branch: pool over H, transpose H and W, a (3, 1) conv along what was W."""

    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Conv2d(3, 4, 3, padding=1)
        self.pool_w = nn.AdaptiveAvgPool2d((1, None))
        self.d = nn.Conv2d(4, 4, (3, 1), padding=(1, 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.d(self.pool_w(self.c(x)).permute(0, 1, 3, 2))


def test_receptive_fields_stay_on_the_image_axes_through_a_transpose() -> None:
    a = convscope.analyze(_Transposed(), input=(3, 32, 24))
    # rows of d run along the image's W: H is pooled whole, W grows 3 -> 5 (the gradient's support)
    assert a.layer("d").out_shape == (4, 24, 1)
    assert a.layer("d").rf_max == (math.inf, 5) and a.layer("d").rf_min == (math.inf, 5)


class _Seq(nn.Module):
    def __init__(self, fn: Any, *mods: nn.Module) -> None:
        super().__init__()
        self.conv, self.mods, self.fn = nn.Conv2d(3, 8, 3, padding=1), nn.ModuleList(mods), fn

    def forward(self, x: torch.Tensor) -> Any:
        return self.fn(self, self.conv(x))


@pytest.mark.parametrize("model, message", [
    (_Seq(lambda m, y: torch.split(y, [3, 3], 1)[0]), "split sizes [3, 3] must add up to the 8"),
    (_Seq(lambda m, y: F.pad(y, (16, 16), mode="reflect")), "reflect padding (16, 16) must be smaller than the input width 16"),
    (_Seq(lambda m, y: m.mods[0](y), nn.Conv2d(8, 8, 3, padding=17, padding_mode="circular")), "more than once"),
    (_Seq(lambda m, y: m.mods[0](y), nn.GroupNorm(4, 16)), "expects 16 channels but gets 8"),
    (_Seq(lambda m, y: F.group_norm(y, 3)), "8 channels cannot be split into 3 groups"),
    (_Seq(lambda m, y: m.mods[0](y), nn.InstanceNorm2d(16, affine=True)), "expects 16 channels but gets 8"),
    (_Seq(lambda m, y: m.mods[0](y), nn.PReLU(16)), "expects 16 channels but gets 8"),
])
def test_what_pytorch_would_refuse_to_run_is_an_input_error(model: nn.Module, message: str) -> None:
    with pytest.raises((RuntimeError, ValueError)):
        model(torch.zeros(2, 3, 16, 16))  # PyTorch refuses it too
    with pytest.raises(InputError, match=re.escape(message)):
        graph_from_module(model, (3, 16, 16))


class Patterns(nn.Module):
    """A user's forward hook; ``x += y`` with an alias of x; channels split into groups by view and
    merged again (SKNet's branch sum)."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how
        self.c1, self.c2, self.c3 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        if how == "hook":
            self.c1.register_forward_hook(lambda m, i, o: F.avg_pool2d(o, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.c1(x)
        if self.how == "alias":
            s = x
            x += self.c2(x)  # in place: s is the sum too
            return self.c3(s)
        if self.how == "groups":
            b, c, h, w = x.shape
            y = x.view(b, 2, 4, h, w)
            y = (y * y.mean((3, 4), keepdim=True).softmax(1)).sum(1)  # (B, 4, H, W)
            return self.c2(torch.cat([y, y], 1).view(b, 2, 4, h, w).view(b, 8, h, w))
        return self.c3(self.c2(x))


@pytest.mark.parametrize("how, rf", [("hook", (12, 12)), ("alias", (5, 7)), ("groups", (5, math.inf))])
def test_hooks_in_place_aliases_and_grouped_views_are_followed(how: str, rf: tuple[int, int]) -> None:
    """rf (min, max) of the last conv: after the hook's 2x2 pool 3 -> 4 (jump 2) -> 8 -> 12; the alias
    reads c1 + c2(c1): 3 and 5, then + 2; the grouped view keeps positions: 3 -> 5 (its gate is global)."""
    m = Patterns(how)
    g = graph_from_module(m, (3, 16, 16))
    a = analyze_graph(g)
    assert a.unknown_ops == () and a.totals.macs == flop_macs(m, (3, 16, 16))
    last = a.layer(a.layers[-1].name)
    assert (last.rf_min[0], last.rf_max[0]) == rf  # type: ignore[index]
    if how == "hook":
        assert g.meta_dict()["capture"] == "eager" and "forward hooks on c1" in g.meta_dict()["notes"][0]
        assert [r.name for r in a.layers if r.op == "conv"] == ["c1", "c2", "c3"]  # module paths, hooked or not


class _PreHooked(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.c2 = nn.Conv2d(8, 8, 3, padding=1)
        self.c2.register_forward_pre_hook(lambda m, args: (F.max_pool2d(args[0], 2),))  # halves c2's input
        self.block.register_forward_hook(lambda m, i, o: o * 2)  # on a container: its output doubled


def _pre_hooked_forward(self: _PreHooked, x: torch.Tensor) -> torch.Tensor:
    return self.c2(self.block(x))


_PreHooked.forward = _pre_hooked_forward  # type: ignore[method-assign]


def test_pre_hooks_and_hooks_on_containers_are_followed_under_module_paths() -> None:
    m = _PreHooked()
    a = analyze_graph(graph_from_module(m, (3, 16, 16)))
    assert [r.name for r in a.layers if r.op == "conv"] == ["block.0", "c2"]
    c2 = a.layer("c2")
    assert c2.out_shape == tuple(m(torch.zeros(1, 3, 16, 16)).shape[1:]) == (8, 8, 8)
    assert c2.rf_max == (3 + 1 + 2 * 2, 3 + 1 + 2 * 2)  # 3, pool 2 -> 4 (jump 2), conv 3 -> 8
    assert a.totals.macs == flop_macs(m, (3, 16, 16)) and a.unknown_ops == ()
    assert [r.op for r in a.layers][:5] == ["conv", "relu", "scale", "maxpool", "conv"]  # the hooks' ops recorded


class QueryDecoder(nn.Module):
    """DETR-style: learned queries through self-attention (constants only), then cross-attention."""

    def __init__(self, d: int = 16, nq: int = 6) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, d, 4, 4)
        self.query = nn.Parameter(torch.randn(nq, d))
        self.self_attn = nn.MultiheadAttention(d, 2, batch_first=True)
        self.cross = nn.MultiheadAttention(d, 2, batch_first=True)
        self.head = nn.Linear(d, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mem = self.c1(x).flatten(2).transpose(1, 2)
        q = self.query.unsqueeze(0).expand(x.shape[0], -1, -1)
        q = q + self.self_attn(q, q, q, need_weights=False)[0]
        return self.head(q + self.cross(q, mem, mem, need_weights=False)[0])


def test_a_module_run_on_parameters_alone_keeps_its_parameters() -> None:
    m = QueryDecoder()
    g = graph_from_module(m, (3, 32, 32))
    a = analyze_graph(g)
    assert a.totals.params == sum(p.numel() for p in m.parameters())
    assert not any("never used" in n for n in g.meta_dict()["notes"])


def test_lazy_modules_take_their_shapes_from_a_first_forward() -> None:
    m = nn.Sequential(nn.LazyConv2d(8, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(3))
    a = analyze_graph(graph_from_module(m, (3, 16, 16)))
    assert a.totals.params == sum(p.numel() for p in m.parameters()) == 3 * 8 * 9 + 8 + 8 * 14 * 14 * 3 + 3
    assert a.totals.macs == flop_macs(m, (3, 16, 16)) and any("lazy modules (0, 3)" in n for n in a.notes)
    wrong = nn.Sequential(nn.Conv2d(4, 8, 3), nn.Flatten(), nn.LazyLinear(3))
    with pytest.raises(InputError, match=r"lazy modules \(2\) .* expected input\[2, 3, 16, 16\] to have 4 channels"):
        graph_from_module(wrong, (3, 16, 16))


Pair = namedtuple("Pair", "out aux")


class _Assorted(nn.Module):
    """Less common pieces users write: std/var over positions and channels (a hand-written instance
    norm), Softmax2d, FeatureAlphaDropout, F.logsigmoid, a namedtuple returned."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.soft, self.drop = nn.Softmax2d(), nn.FeatureAlphaDropout(0.2)

    def forward(self, x: torch.Tensor) -> Pair:
        y = self.a(x)
        y = (y - y.mean((2, 3), keepdim=True)) / (y.std((2, 3), keepdim=True) + 1e-5)
        y = self.drop(self.soft(y)) * torch.var(y, 1, keepdim=True, correction=0) + F.logsigmoid(y)
        return Pair(self.b(y), y.mean((2, 3)))


@pytest.mark.parametrize("capture", ["fx", "eager"])
def test_std_var_softmax2d_and_named_tuples_are_followed(capture: str) -> None:
    m = _Assorted()
    g = graph_from_module(m, (3, 16, 16), capture=capture)
    a = analyze_graph(g)
    assert a.unknown_ops == () and a.totals.macs == flop_macs(m, (3, 16, 16))
    assert a.totals.params == sum(p.numel() for p in m.parameters())
    assert list(g.outputs) == ["b", "mean_1"]  # both fields of the named tuple
    assert a.layer("b").rf_min == (5, 5) and a.layer("b").rf_max == (math.inf, math.inf)  # std over positions
    assert a.layer("std").op == "sqrt" and a.layer("var").op == "mean" and a.layer("soft").op == "softmax"
    # the elementwise work of std: mean, deviation, its square, mean, correction, root
    assert [a.layer(n).op for n in ("std.mean", "std.sub", "std.mul", "std.mean_1", "std.mul_1", "std")] == \
        ["mean", "add", "mul", "mean", "scale", "sqrt"]  # (a subtraction is an add)


class EinsumWeight(nn.Module):
    """A 1x1 convolution written as an einsum with a parameter (channel mixing in MLP-style blocks)."""

    def __init__(self, eq: str) -> None:
        super().__init__()
        self.eq = eq
        self.c, self.h = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(16, 4, 3, padding=1)
        self.w = nn.Parameter(torch.randn(16, 8) if eq.startswith("oc") else torch.randn(8, 16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.c(x)
        return self.h(torch.einsum(self.eq, self.w, y) if self.eq.startswith("oc") else torch.einsum(self.eq, y, self.w))


@pytest.mark.parametrize("eq", ["oc,bchw->bohw", "bchw,co->bohw"])
def test_an_einsum_with_a_weight_is_a_linear_layer_over_the_contracted_axis(eq: str) -> None:
    m, shape = EinsumWeight(eq).eval(), (3, 16, 12)
    a = analyze_graph(graph_from_module(m, shape))
    assert a.unknown_ops == () and a.layer("einsum").op == "linear" and a.layer("einsum").params == 128
    assert a.totals.params == sum(p.numel() for p in m.parameters()) and a.totals.macs == flop_macs(m, shape)
    assert a.layer("h").rf_max == (5, 5)
    check, = module_rf(m, {"h": (5.0, 5.0)}, axes=(0,))
    assert check.reachable and check.error() == 0, check


class ConvLSTMHead(nn.Module):
    """A CRNN-style head: columns of a feature map read by an LSTM whose last hidden state is
    classified (the state is (layers, batch, hidden): the batch is not in front)."""

    def __init__(self) -> None:
        super().__init__()
        self.c, self.lstm, self.fc = nn.Conv2d(3, 8, 3, padding=1), nn.LSTM(8, 16, batch_first=True), nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, (h, c) = self.lstm(self.c(x).mean(2).transpose(1, 2))
        return self.fc(h[-1])


def test_an_unknown_ops_nested_outputs_are_followed_where_the_batch_is_not_in_front() -> None:
    m = ConvLSTMHead().eval()
    a = analyze_graph(graph_from_module(m, (3, 16, 16)))
    assert [n for n, _ in a.unknown_ops] == ["lstm.0", "lstm.1.0", "lstm.1.1"]
    assert a.layer("fc").params == 68 and a.layer("fc").rf_max is None  # after the unknown op: unknown
    assert a.totals.params == sum(p.numel() for p in m.parameters())


class _SizedFPN(nn.Module):
    """An FPN step as users write it: the coarse map is interpolated to the fine map's size."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 4, 3, 2, 1)
        self.c2 = nn.Conv2d(4, 4, 3, 2, 1)
        self.head = nn.Conv2d(4, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f1 = self.c1(x)
        return self.head(f1 + F.interpolate(self.c2(f1), size=f1.shape[-2:]))


def _widest_row_support(m: nn.Module, side: int) -> int:
    """rf_max of ``head`` along H by the gradient: every output row (centre column) whose support
    stays off the image border, all weights positive."""
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(p.abs() + 0.01)
    widest = 0
    for row in range((side + 1) // 2):  # head's rows: c1 halves the image
        x = torch.ones(1, 3, side, side, dtype=torch.float64, requires_grad=True)
        out = m.double()(x)
        out[0, :, row, out.shape[3] // 2].sum().backward()
        rows = torch.nonzero(x.grad[0].abs().sum(dim=(0, 2)) > 0).flatten()  # type: ignore[union-attr]
        lo, hi = int(rows.min()), int(rows.max())
        if lo > 0 and hi < side - 1:
            widest = max(widest, hi - lo + 1)
    return widest


@pytest.mark.parametrize("side", [44, 45, 90])
def test_an_interpolation_to_another_maps_size_has_exact_rf_and_a_stable_feasible_range(side: int) -> None:
    # at odd sides the coarse map is not half the fine one (12 -> 23 px): no repeating pattern,
    # and the feasible range must not depend on the size analysed
    a = convscope.analyze(_SizedFPN(), input=(3, side, side))
    assert a.feasible_resolution == (7, 11)
    assert tuple(a.layer("head").rf_max) == (11, 11)
    assert _widest_row_support(_SizedFPN(), side) == 11


class _DeepFPN(nn.Module):
    """Three levels, top-down: at 64 px every level halves exactly (recorded as a 2× upsampling),
    at 49 px they do not (25, 13, 7), yet the model lines them up with ``size=``."""

    def __init__(self) -> None:
        super().__init__()
        self.c = nn.ModuleList(nn.Conv2d(3 if i == 0 else 4, 4, 3, 2, 1) for i in range(3))
        self.out = nn.Conv2d(4, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = []
        for c in self.c:
            x = c(x)
            feats.append(x)
        p = feats[-1]
        for f in reversed(feats[:-1]):
            p = f + F.interpolate(p, size=f.shape[-2:])
        return self.out(p)


def test_the_feasible_range_does_not_depend_on_whether_the_levels_halve_exactly() -> None:
    ranges = {convscope.analyze(_DeepFPN(), input=(3, s, s)).feasible_resolution for s in (64, 56, 49)}
    assert len(ranges) == 1
    lo = ranges.pop()[0]
    assert lo is not None and 8 < lo < 64
    assert not any(r.unproductive for r in convscope.analyze(_DeepFPN(), input=(3, lo, lo)).layers)
    assert any(r.unproductive for r in convscope.analyze(_DeepFPN(), input=(3, lo - 1, lo - 1)).layers)


@pytest.mark.parametrize("side", [9, 10])
def test_an_interpolation_to_another_maps_size_on_an_image_smaller_than_the_receptive_field(side: int) -> None:
    # 3 -> 5 px: PyTorch maps [0, 0, 1, 1, 2] and clamps; a position past the map reads no 4th source
    a = convscope.analyze(_SizedFPN(), input=(3, side, side))
    assert a.feasible_resolution == (7, 11) and tuple(a.layer("head").rf_max) == (11, 11)


class _GRN(nn.Module):
    """ConvNeXt-V2's global response norm, in the forms reference code writes it."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.how, self.c, self.c2 = how, nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.c(x).permute(0, 2, 3, 1)
        if self.how == "norm":
            g = torch.norm(x, p=2, dim=(1, 2), keepdim=True)
        elif self.how == "method":
            g = x.norm(p=2, dim=(1, 2), keepdim=True)
        elif self.how == "vector_norm":
            g = torch.linalg.vector_norm(x, ord=2, dim=(1, 2), keepdim=True)
        elif self.how == "l1":
            g = torch.linalg.vector_norm(x, ord=1, dim=(1, 2), keepdim=True)
        else:
            g = x.pow(2).sum(dim=(1, 2), keepdim=True).sqrt()
        x = x + x * (g / (g.mean(dim=-1, keepdim=True) + 1e-6))
        return self.c2(x.permute(0, 3, 1, 2))


@pytest.mark.parametrize("how", ["norm", "method", "vector_norm", "l1"])
def test_vector_norms_are_the_reductions_they_are(how: str) -> None:
    a, ref = convscope.analyze(_GRN(how), input=(3, 16, 16)), convscope.analyze(_GRN("spelled"), input=(3, 16, 16))
    assert not a.unknown_ops
    assert a.layer("c2").rf_min == ref.layer("c2").rf_min == (5, 5)  # the local path; the gate is global
    assert a.layer("c2").rf_max == ref.layer("c2").rf_max
    assert a.totals.params == ref.totals.params and a.totals.macs == ref.totals.macs
    assert a.totals.macs == flop_macs(_GRN(how), (3, 16, 16))


class _RadixGate(nn.Module):
    """ResNeSt's split attention: the pooled gate reshaped to (cardinality, radix, -1) for a softmax."""

    def __init__(self, card: int) -> None:
        super().__init__()
        self.card, self.conv = card, nn.Conv2d(3, 16, 3, padding=1)
        self.fc, self.after = nn.Conv2d(8, 16, 1), nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        b = x.shape[0]
        a, c = torch.split(x, 8, 1)
        att = self.fc(F.adaptive_avg_pool2d(a + c, 1)).view(b, self.card, 2, -1).transpose(1, 2)
        wa, wc = torch.split(F.softmax(att, dim=1).reshape(b, -1).view(b, -1, 1, 1), 8, 1)
        return self.after(wa * a + wc * c)


@pytest.mark.parametrize("card", [1, 2])
def test_a_pooled_gate_reshaped_into_groups_keeps_the_receptive_field(card: int) -> None:
    a = convscope.analyze(_RadixGate(card), input=(3, 32, 32))
    assert not a.notes and "rf_unknown_layers" not in a.to_dict()
    assert a.layer("after").rf_min == (5, 5) and all(math.isinf(v) for v in a.layer("after").rf_max)


class _Focus(nn.Module):
    """YOLOv5's Focus: four strided slices side by side in the channels."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.conv2 = nn.Conv2d(12, 8, 3, 1, 1), nn.Conv2d(8, 4, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat([x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]], 1)
        return self.conv2(self.conv(x))


class _PatchMerge(nn.Module):
    """Swin's patch merging: strided slices of a channels-last map, concatenated, then a linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.reduction, self.conv2 = nn.Conv2d(3, 8, 3, padding=1), nn.Linear(32, 16), nn.Conv2d(16, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x).permute(0, 2, 3, 1)
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        return self.conv2(self.reduction(x).permute(0, 3, 1, 2))


def _output_support(m: nn.Module, side: int) -> tuple[int, int]:
    """(narrowest, widest) input-gradient support along H of the output rows (centre column) that
    stay off the border, all weights positive (every op here is linear)."""
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(p.abs() + 0.01)
    m = m.double()
    rows = m(torch.ones(1, 3, side, side, dtype=torch.float64)).shape[2]
    widths = []
    for row in range(rows):
        x = torch.ones(1, 3, side, side, dtype=torch.float64, requires_grad=True)
        out = m(x)
        out[0, :, row, out.shape[3] // 2].sum().backward()
        hit = torch.nonzero(x.grad[0].abs().sum(dim=(0, 2)) > 0).flatten()  # type: ignore[union-attr]
        if int(hit.min()) > 0 and int(hit.max()) < side - 1:
            widths.append(int(hit.max()) - int(hit.min()) + 1)
    return min(widths), max(widths)


@pytest.mark.parametrize("make_net, last", [(_Focus, "conv2"), (_PatchMerge, "conv2")])
def test_strided_slices_are_windows_with_a_stride_not_unknown(make_net: Any, last: str, tmp_path: Path) -> None:
    a = convscope.analyze(make_net(), input=(3, 32, 32))
    assert not a.unknown_ops and a.totals.macs == flop_macs(make_net(), (3, 32, 32))
    assert a.totals.params == sum(p.numel() for p in make_net().parameters())
    assert a.layer(last).jump == (2, 2)
    assert a.layer(last).rf_max[0] == _output_support(make_net(), 32)[1]  # type: ignore[index]
    path = tmp_path / "m.onnx"
    torch.onnx.export(make_net().eval(), (torch.zeros(1, 3, 32, 32),), str(path), opset_version=17, dynamo=False)
    o = convscope.analyze(str(path))
    assert not o.unknown_ops and o.totals.macs == a.totals.macs and o.layer(last).rf_max == a.layer(last).rf_max


class _Pyramid(nn.Module):
    """Accepts only multiples of 8 px, as detectors check (an upsampled coarse map is added to a finer
    one, YOLO's neck)."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2, self.c3 = nn.Conv2d(3, 8, 3, 2, 1), nn.Conv2d(8, 8, 3, 2, 1), nn.Conv2d(8, 8, 3, 2, 1)
        self.c4, self.c5 = nn.Conv2d(8, 8, 3, 1, 1), nn.Conv2d(8, 8, 3, 1, 1)
        self.up = nn.Upsample(scale_factor=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 8 or x.shape[-2] % 8:
            raise ValueError("the input side must be a multiple of 8")  # as detectors check it
        p2 = self.c2(self.c1(x))
        return self.c5(self.up(self.c4(self.c3(p2))) + p2)


def test_the_feasible_range_of_a_model_that_takes_only_multiples_of_its_stride() -> None:
    with pytest.raises(InputError):
        convscope.analyze(_Pyramid(), input=(3, 60, 60))
    lo, _ = convscope.analyze(_Pyramid(), input=(3, 64, 64)).feasible_resolution
    assert lo is not None and lo % 8 == 0
    weighted = ("conv",)
    assert not [r for r in convscope.analyze(_Pyramid(), input=(3, lo, lo)).unproductive_layers() if r.op in weighted]
    assert [r for r in convscope.analyze(_Pyramid(), input=(3, lo - 8, lo - 8)).unproductive_layers() if r.op in weighted]


class _Only3D(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Conv3d(1, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c(x.unsqueeze(1)).squeeze(1)


def test_a_model_whose_only_work_is_an_unknown_op_found_nothing_usable(tmp_path: Path, capsys: Any) -> None:
    a = convscope.analyze(_Only3D(), input=(3, 16, 16))
    assert a.all_unknown and [n for n, _ in a.unknown_ops] == ["c"]  # the reshapes around it do no work
    f = tmp_path / "only3d.py"
    f.write_text("import torch.nn as nn\nclass M(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
                 "        self.c = nn.Conv3d(1, 1, 3, padding=1)\n    def forward(self, x):\n"
                 "        return self.c(x.unsqueeze(1)).squeeze(1)\ndef make():\n    return M()\n")
    assert main(["analyze", f"{f}:make", "--input", "3,16,16"]) == 1
    assert "every layer that computes something is an op convscope does not know" in capsys.readouterr().err
    assert not convscope.analyze(_Extension(), input=(3, 16, 16)).all_unknown


class _TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.c(x) * t


def test_a_forward_that_needs_a_second_argument_is_told_how_to_wrap_it() -> None:
    with pytest.raises(InputError, match="missing 1 required positional argument: 't'; convscope calls forward with "
                                         "one image tensor: wrap the model"):
        convscope.analyze(_TwoInputs(), input=(3, 16, 16))


class _PyramidPool(nn.Module):
    """A PSPNet pyramid level as users write it: pool into 2×2 bins, interpolate back to the map's size."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, 2, 1)
        self.post = nn.Conv2d(1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.conv(x)
        up = F.interpolate(F.adaptive_avg_pool2d(f, 2), size=f.shape[-2:], mode="bilinear", align_corners=False)
        return self.post(up)


@pytest.mark.parametrize("side", [98, 128, 200])
def test_a_pyramid_pooling_level_sees_what_its_gradient_shows(side: int) -> None:
    """After an adaptive pool into 2 bins the map's borders are the network's own: a position between
    the bins reads both (the whole image), one near a border reads one bin.  Was 51 px at 98 (both
    bins missed) and rf_min 129 at 128 (one bin missed)."""
    m = _PyramidPool()
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(p.abs() + 0.01)
    widths = []
    n = (side + 1) // 2
    for row in range(n):
        x = torch.ones(1, 1, side, side, dtype=torch.float64, requires_grad=True)
        m.double()(x)[0, 0, row, n // 2].backward()
        rows = torch.nonzero(x.grad[0, 0].abs().sum(dim=1) > 0).flatten()  # type: ignore[union-attr]
        widths.append(int(rows.max()) - int(rows.min()) + 1)
    a = convscope.analyze(_PyramidPool(), input=(1, side, side))
    # as every receptive field, padding counts (the stem's 1 px above the image): the gradient, cut by
    # the image's border, shows one pixel less where a position reads it
    assert max(widths) == side and a.layer("post").rf_max[0] == side + 1
    assert min(widths) <= a.layer("post").rf_min[0] <= min(widths) + 1
    assert a.layer("post").rf_min[0] >= a.layer("adaptive_avg_pool2d").rf_min[0]


class _CRNN(nn.Module):
    """A text-line recogniser: convolutions, the height averaged away, then 1-D convolutions along the width."""

    def __init__(self) -> None:
        super().__init__()
        self.cnn = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
                                 nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2))
        self.seq = nn.Sequential(nn.Conv1d(4, 4, 3, padding=1), nn.Conv1d(4, 4, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(self.cnn(x).mean(2))


class _Strip(nn.Module):
    """Strip pooling along the width, written three ways; then a 3×1 convolution along the height."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.how, self.a, self.b = how, nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, (3, 1), padding=(1, 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.a(x)
        y = {"adaptive": lambda: F.adaptive_avg_pool2d(y, (None, 1)), "pool": lambda: F.avg_pool2d(y, (1, y.shape[3])),
             "mean": lambda: y.mean(3, keepdim=True)}[self.how]()
        return self.b(y)


def _support(m: nn.Module, shape: tuple[int, ...], at: tuple[int, ...], dim: int) -> int:
    """Width along input axis ``dim`` of the gradient support of output position ``at``."""
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(p.abs() + 0.01)
    x = torch.ones(1, *shape, dtype=torch.float64, requires_grad=True)
    m.double()(x)[(0, slice(None), *at)].sum().backward()
    g = x.grad[0].abs()  # type: ignore[union-attr]
    keep = torch.nonzero(g.sum(dim=tuple(d for d in range(g.dim()) if d != dim)) > 0).flatten()
    return int(keep.max()) - int(keep.min()) + 1


def test_a_mean_over_the_height_keeps_the_width_receptive_field() -> None:
    """CRNN: after x.mean(2) the 1-D convolutions along the width still grow the width's receptive
    field (was global on both axes: the convolutions looked like a head and were never flagged)."""
    a = convscope.analyze(_CRNN(), input=(1, 16, 128))
    row = a.layer("seq.1")
    assert row.rf_max[0] == math.inf and row.rf_max[1] == _support(_CRNN(), (1, 16, 128), (15,), 2) == 26
    assert row.rf_min == row.rf_max and row.jump[1] == 4


@pytest.mark.parametrize("how", ["adaptive", "pool", "mean"])
def test_strip_pooling_is_global_along_its_axis_only_however_it_is_written(how: str) -> None:
    a = convscope.analyze(_Strip(how), input=(3, 32, 32))
    row = a.layer("b")
    assert row.rf_max[0] == _support(_Strip(how), (3, 32, 32), (16, 0), 1) == 5
    assert row.rf_max[1] == math.inf and row.rf_min[0] == 5


class _Shifted(nn.Module):
    """Paths centred apart: a spatial shift (ShiftNet) and a branch padded on one side (TensorFlow's "same")."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.how, self.stem, self.out = how, nn.Conv2d(3, 4, 1), nn.Conv2d(4, 4, 1)
        self.a, self.b = nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        if self.how == "shift":  # out[i] = x[i] + x[i - 3] + x[i + 3] along the width
            return self.out(x + F.pad(x, (3, 0))[..., :-3] + F.pad(x, (0, 3))[..., 3:])
        return self.out(self.a(x) + self.b(F.pad(x, (2, 0, 2, 0))))  # reads i-1..i+1 and i-2..i


@pytest.mark.parametrize("how,want", [("shift", (1, 7)), ("one_sided", (4, 4))])
def test_a_merge_of_paths_centred_apart_spans_both(how: str, want: tuple[int, int], tmp_path: Path) -> None:
    """The union of (r, j) pairs centres every path on one pixel; these paths are not, and the
    gradient spans from the leftmost to the rightmost (was 1 and 3)."""
    got = tuple(_support(_Shifted(how), (3, 32, 32), (16, 16), d) for d in (1, 2))
    assert got == want
    assert tuple(convscope.analyze(_Shifted(how), input=(3, 32, 32)).layer("out").rf_max) == want
    torch.onnx.export(_Shifted(how).eval(), (torch.zeros(1, 3, 32, 32),), str(tmp_path / "m.onnx"), dynamo=False)
    assert tuple(convscope.analyze(str(tmp_path / "m.onnx")).layer("out").rf_max) == want


class _CropResized(nn.Module):
    """A map added to a crop of itself interpolated back to its size: the two paths' jumps differ (1
    and 80/88), so their offset grows toward the borders (5 px wide there, 2 in the middle)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.interpolate(x[:, :, :, 4:84], size=x.shape[-2:], mode="bilinear", align_corners=False)
        return self.conv(x + y)


def test_a_merge_of_paths_whose_jumps_differ_is_followed_at_every_position() -> None:
    widths = [_support(_CropResized(), (1, 80, 88), (40, j), 2) for j in (0, 10, 44, 77, 87)]
    assert widths == [5, 5, 2, 5, 5]
    assert convscope.analyze(_CropResized(), input=(1, 80, 88)).layer("conv").rf_max[1] == 5  # was 2


def test_a_2x2_pool_on_a_2x2_map_stays_a_pool_and_a_whole_map_avgpool_is_global() -> None:
    """VGG's last MaxPool2d(2) meets a 2x2 map at 32 px: a downsampling pool like the others (flagged
    unproductive like the spec zoo's pool5), not global pooling; AvgPool2d(4) on the CIFAR ResNet's 4x4
    map is the global pool it stands for."""
    m = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.MaxPool2d(2), nn.Conv2d(4, 4, 3, padding=1), nn.MaxPool2d(2),
                      nn.Conv2d(4, 4, 3, padding=1), nn.MaxPool2d(2), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(4, 2))
    a = convscope.analyze(m, input=(3, 16, 16))
    assert (a.layer("5").op, a.layer("6").op) == ("maxpool", "avgpool") and a.layer("6").unproductive
    r = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.AvgPool2d(4), nn.Flatten(), nn.Linear(4, 2))
    assert convscope.analyze(r, input=(3, 8, 8)).layer("1").op == "gap"


class _ViewShuffle(nn.Module):
    """ShuffleNetV2's channel shuffle as torchvision writes it, between two convolutions."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.g = groups
        self.a = nn.Conv2d(3, 12, 3, padding=1)
        self.b = nn.Conv2d(12, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.a(x)
        n, c, h, w = y.shape
        return self.b(y.view(n, self.g, c // self.g, h, w).transpose(1, 2).reshape(n, c, h, w))


@pytest.mark.parametrize("groups", [2, 3, 4])
def test_a_channel_shuffle_written_out_is_the_permutation_the_model_computes(groups: int, tmp_path: Path) -> None:
    """view(n, g, c/g)·transpose·reshape is nn.ChannelShuffle(g): it was recorded as c/g groups (the
    inverse permutation; costs and receptive fields cannot tell, a built network and a width change
    can).  Through ONNX too; the module built from either graph computes what the model does."""
    from test_from_onnx import export

    from convscope.backends.to_torch import build_module
    from convscope.frontends.from_onnx import load_onnx

    m = _ViewShuffle(groups).eval()
    onnx = export(m, (3, 8, 8), tmp_path / "shuffle.onnx")
    for g in (graph_from_module(m, (3, 8, 8)), load_onnx(str(onnx))):
        shuffles = [n.attrs.groups for n in g.nodes if n.op is OpKind.CHANNEL_SHUFFLE]  # type: ignore[union-attr]
        assert shuffles == [groups]
        built = build_module(g).eval()
        with torch.no_grad():
            built.a.weight.copy_(m.a.weight), built.a.bias.copy_(m.a.bias)
            built.b.weight.copy_(m.b.weight), built.b.bias.copy_(m.b.bias)
            x = torch.randn(2, 3, 8, 8)
            assert torch.allclose(built(x), m(x), atol=1e-6)


def test_the_feasible_search_stops_capturing_when_it_would_take_too_long(monkeypatch: pytest.MonkeyPatch) -> None:
    """A model captured by running it (data-dependent control flow) costs real compute at each size
    the feasible search tries, (r/r0)^4 more for attention over every position (a model ran for
    minutes): the search keeps to its budget and says which end it may have missed."""
    import convscope.api as api

    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.convs = nn.Sequential(*(nn.Conv2d(3 if i == 0 else 8, 8, 3, padding=1) for i in range(6)))

        def forward(self, x):  # type: ignore[no-untyped-def]
            y = self.convs(x)
            if y.sum() > 1e9:  # data-dependent: fx cannot follow it, the model is run instead
                y = y * 2
            b, c, h, w = y.shape  # tokens and back: the sizes are the model's, captured again at each size
            t = y.flatten(2).transpose(1, 2)
            return (t.transpose(1, 2).reshape(b, c, h, w) + 1).mean((2, 3))

    whole = convscope.analyze(Branchy(), input=(3, 8, 8), device="raspi4")
    assert whole.feasible_resolution == (12, 13) and not any("searched" in n for n in whole.notes)
    monkeypatch.setattr(api, "RECAPTURE_BUDGET_S", -1.0)  # spent before the first capture
    cut = convscope.analyze(Branchy(), input=(3, 8, 8), device="raspi4")
    assert any("the feasible range's low end may lie beyond what was searched: capturing the model again at" in n
               for n in cut.notes), cut.notes


def test_the_feasible_search_does_not_start_a_capture_that_would_overrun_its_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """Captures whose cost grows as (r/r0)^4 (attention run at each size): once one takes 0.25 s or
    more (the model's own first capture included), a larger size that would take the search past its
    budget is not tried (a clock stands in for the time: each capture at r costs 0.3·(r/16)^4 s)."""
    import types

    import convscope.api as api

    clock = [0.0]
    tried: list[int] = []
    real = api.load_graph

    def load(model, input=None):  # type: ignore[no-untyped-def]
        if input is not None:
            tried.append(input[-1])
            clock[0] += 0.3 * (input[-1] / 16) ** 4
        return real(model, input=input)

    monkeypatch.setattr(api, "load_graph", load)
    monkeypatch.setattr(api, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))

    class Deep(nn.Module):  # 30 convs: the first size with no unproductive layer is beyond 60 px
        def __init__(self) -> None:
            super().__init__()
            self.convs = nn.Sequential(*(nn.Conv2d(3 if i == 0 else 4, 4, 3, padding=1) for i in range(30)))

        def forward(self, x):  # type: ignore[no-untyped-def]
            b, c, h, w = x.shape
            y = self.convs(x).flatten(2)  # tokens and back: the sizes are captured again at each size
            return y.reshape(b, 4, h, w).mean((2, 3))

    a = convscope.analyze(Deep(), input=(3, 16, 16), device="raspi4")  # the first capture: 0.3 s
    assert tried[0] == 16 and clock[0] <= api.RECAPTURE_BUDGET_S
    assert all(0.3 * (r / 16) ** 4 < api.RECAPTURE_BUDGET_S for r in tried)  # nothing hopeless was started
    assert any("may lie beyond what was searched" in n for n in a.notes), (tried, a.notes)

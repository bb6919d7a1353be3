"""The closed set of operations and their typed attributes.

Every node of a :class:`~convscope.ir.graph.Graph` has one :class:`OpKind` and one attribute record
from this module.  Analyses dispatch on the kind through tables (op kind -> small pure function);
nothing here knows about torch or onnx.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import Enum
from typing import Any, Union

__all__ = [
    "OpKind",
    "ACTIVATIONS",
    "REDUCE_FNS",
    "UPSAMPLE_SPAN",
    "Pair",
    "NoAttrs",
    "InputAttrs",
    "ConvAttrs",
    "PoolAttrs",
    "AdaptivePoolAttrs",
    "GlobalPoolAttrs",
    "UpsampleAttrs",
    "NormAttrs",
    "LRNAttrs",
    "ActAttrs",
    "DropoutAttrs",
    "ScaleAttrs",
    "LinearAttrs",
    "AxisAttrs",
    "SliceAttrs",
    "ShuffleAttrs",
    "FactorAttrs",
    "ReshapeAttrs",
    "PermuteAttrs",
    "ReduceAttrs",
    "AttentionAttrs",
    "PadAttrs",
    "UnknownAttrs",
    "ConstAttrs",
    "Attrs",
    "attrs_from_dict",
    "attrs_to_dict",
    "ATTRS_OF",
    "KERNEL_OPS",
    "SPATIAL_LAYER_OPS",
    "WEIGHTED_OPS",
]

Pair = tuple[int, int]


class OpKind(str, Enum):
    """Closed enum of operations.  Values are the names users see (spec op names where one exists)."""

    INPUT = "input"
    CONV = "conv"
    CONV_T = "convT"
    MAXPOOL = "maxpool"
    AVGPOOL = "avgpool"
    ADAPTIVE_AVGPOOL = "adaptive_avgpool"
    ADAPTIVE_MAXPOOL = "adaptive_maxpool"
    GLOBAL_AVGPOOL = "gap"
    GLOBAL_MAXPOOL = "gmp"
    UPSAMPLE = "upsample"
    BATCHNORM = "bn"
    LAYERNORM = "ln"
    GROUPNORM = "gn"
    LRN = "lrn"
    ACT = "act"
    DROPOUT = "dropout"
    IDENTITY = "identity"
    ZERO = "zero"
    SCALE = "scale"
    ADD = "add"
    MUL = "mul"
    CONCAT = "concat"
    SLICE = "slice"
    CHANNEL_SHUFFLE = "channel_shuffle"
    PIXEL_SHUFFLE = "pixel_shuffle"
    PIXEL_UNSHUFFLE = "pixel_unshuffle"
    FLATTEN = "flatten"
    RESHAPE = "reshape"
    PERMUTE = "permute"
    LINEAR = "linear"
    MATMUL = "matmul"
    ATTENTION = "attention"
    SOFTMAX = "softmax"
    MEAN = "mean"
    PAD = "pad"
    CONSTANT = "constant"
    UNKNOWN = "unknown"


# Activation functions the ACT op accepts (attribute `fn`).  Closed as well.
ACTIVATIONS = frozenset(
    {
        "relu", "relu6", "leaky_relu", "elu", "selu", "prelu", "hswish", "hsigmoid",
        "swish", "gelu", "sigmoid", "tanh", "softplus", "mish", "celu", "softsign", "logsigmoid",
        "tanhshrink", "hardshrink", "softshrink",  # celu: alpha; the shrinks: lambda in `alpha`
        # elementwise math that imported networks spell out (a hand-written LayerNorm's pow/sqrt,
        # GELU's erf): pointwise like the activations above.  pow: exponent in `alpha`;
        # clamp: bounds in `alpha` (min) and `beta` (max), None = unbounded.
        "pow", "sqrt", "rsqrt", "exp", "log", "abs", "neg", "reciprocal", "erf", "clamp",
    }
)

# Interpolation modes of UPSAMPLE, each with its span: how many input steps lie between the first and
# the last input position one output position reads along an axis (2 taps for bilinear, 4 for bicubic).
UPSAMPLE_SPAN = {"nearest": 0, "bilinear": 1, "bicubic": 3}

# Reductions the MEAN op performs (attribute `fn`).
REDUCE_FNS = ("mean", "sum", "max", "min")


@dataclass(frozen=True, slots=True)
class NoAttrs:
    pass


@dataclass(frozen=True, slots=True)
class InputAttrs:
    shape: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ConvAttrs:
    """Convolution or transposed convolution.

    ``padding`` is ((top, bottom), (left, right)).  ``output_padding`` is used by CONV_T only.
    """

    out_channels: int
    kernel: Pair
    stride: Pair = (1, 1)
    padding: tuple[Pair, Pair] = ((0, 0), (0, 0))
    dilation: Pair = (1, 1)
    groups: int = 1
    bias: bool = False
    output_padding: Pair = (0, 0)
    fixed: bool = False  # the weight is a constant (a buffer: a blur or edge filter), not parameters


@dataclass(frozen=True, slots=True)
class PoolAttrs:
    kernel: Pair
    stride: Pair
    padding: tuple[Pair, Pair] = ((0, 0), (0, 0))
    dilation: Pair = (1, 1)
    ceil_mode: bool = False
    count_include_pad: bool = True


@dataclass(frozen=True, slots=True)
class AdaptivePoolAttrs:
    size: Pair


@dataclass(frozen=True, slots=True)
class GlobalPoolAttrs:
    keepdims: bool = False


@dataclass(frozen=True, slots=True)
class UpsampleAttrs:
    """Exactly one of ``scale`` (per axis) and ``size`` is set."""

    mode: str = "nearest"  # a key of UPSAMPLE_SPAN: nearest | bilinear | bicubic
    scale: tuple[float, float] | None = None
    size: Pair | None = None
    align_corners: bool = False


@dataclass(frozen=True, slots=True)
class NormAttrs:
    """BatchNorm (over the channel axis), LayerNorm (over ``axis``), GroupNorm (``groups``)."""

    affine: bool = True
    axis: int | None = None
    groups: int = 1
    eps: float = 1e-5


@dataclass(frozen=True, slots=True)
class LRNAttrs:
    """Local response normalisation across ``size`` neighbouring channels (AlexNet, GoogLeNet v1):
    x / (k + alpha / size · Σ x²) ** beta, the sum over the channel window, position by position."""

    size: int
    alpha: float = 1e-4
    beta: float = 0.75
    k: float = 1.0


@dataclass(frozen=True, slots=True)
class ActAttrs:
    fn: str
    alpha: float | None = None  # leaky_relu slope, elu alpha, pow exponent, clamp min
    channels: int = 0  # prelu: learnable slopes (1 or C)
    beta: float | None = None  # clamp max


@dataclass(frozen=True, slots=True)
class DropoutAttrs:
    p: float = 0.5


@dataclass(frozen=True, slots=True)
class ScaleAttrs:
    value: float


@dataclass(frozen=True, slots=True)
class LinearAttrs:
    out_features: int
    bias: bool = True


@dataclass(frozen=True, slots=True)
class AxisAttrs:
    """CONCAT (axis), SOFTMAX (axis), FLATTEN (start axis)."""

    axis: int = 0


@dataclass(frozen=True, slots=True)
class SliceAttrs:
    axis: int
    start: int
    stop: int
    reverse: bool = False  # read backwards (torch.flip, x[..., ::-1], an ONNX Slice with step -1)
    step: int = 1  # every step-th position from start (x[..., ::2]: YOLOv5's Focus, Swin's patch merging)


@dataclass(frozen=True, slots=True)
class ShuffleAttrs:
    groups: int


@dataclass(frozen=True, slots=True)
class FactorAttrs:
    """PIXEL_SHUFFLE (depth to space: C·r², H, W -> C, H·r, W·r) and PIXEL_UNSHUFFLE (the inverse)."""

    factor: int


@dataclass(frozen=True, slots=True)
class ReshapeAttrs:
    shape: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class PermuteAttrs:
    perm: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ReduceAttrs:
    """MEAN: a reduction over ``axes``; ``fn`` says which (mean, sum, max or min)."""

    axes: tuple[int, ...]
    keepdims: bool = False
    fn: str = "mean"


@dataclass(frozen=True, slots=True)
class AttentionAttrs:
    """Scaled dot-product attention over inputs (q, k, v) shaped (..., L, E)."""

    heads: int = 1


@dataclass(frozen=True, slots=True)
class PadAttrs:
    padding: tuple[Pair, Pair]
    mode: str = "constant"


@dataclass(frozen=True, slots=True)
class UnknownAttrs:
    """An op we do not understand: its name and the output shape the front end observed."""

    target: str
    shape: tuple[int, ...] = ()
    params: int = 0


@dataclass(frozen=True, slots=True)
class ConstAttrs:
    """A tensor the network holds rather than computes: a parameter (a layer scale, a position
    embedding), a buffer, or a literal (the 3 of ``x + 3``).  It has no inputs and its value does not
    depend on the image.  ``shape`` excludes the batch axis; ``params`` counts the trainable values
    it holds (a parameter's numel, counted at its first use only); ``value`` is the fill of a
    literal (None for a learned tensor)."""

    shape: tuple[int, ...]
    params: int = 0
    value: float | None = None


Attrs = Union[
    NoAttrs, InputAttrs, ConvAttrs, PoolAttrs, AdaptivePoolAttrs, GlobalPoolAttrs, UpsampleAttrs,
    NormAttrs, LRNAttrs, ActAttrs, DropoutAttrs, ScaleAttrs, LinearAttrs, AxisAttrs, SliceAttrs, ShuffleAttrs,
    FactorAttrs, ReshapeAttrs, PermuteAttrs, ReduceAttrs, AttentionAttrs, PadAttrs, UnknownAttrs, ConstAttrs,
]

# Which attribute record each op kind carries.
ATTRS_OF: dict[OpKind, type] = {
    OpKind.INPUT: InputAttrs,
    OpKind.CONV: ConvAttrs,
    OpKind.CONV_T: ConvAttrs,
    OpKind.MAXPOOL: PoolAttrs,
    OpKind.AVGPOOL: PoolAttrs,
    OpKind.ADAPTIVE_AVGPOOL: AdaptivePoolAttrs,
    OpKind.ADAPTIVE_MAXPOOL: AdaptivePoolAttrs,
    OpKind.GLOBAL_AVGPOOL: GlobalPoolAttrs,
    OpKind.GLOBAL_MAXPOOL: GlobalPoolAttrs,
    OpKind.UPSAMPLE: UpsampleAttrs,
    OpKind.BATCHNORM: NormAttrs,
    OpKind.LAYERNORM: NormAttrs,
    OpKind.GROUPNORM: NormAttrs,
    OpKind.LRN: LRNAttrs,
    OpKind.ACT: ActAttrs,
    OpKind.DROPOUT: DropoutAttrs,
    OpKind.IDENTITY: NoAttrs,
    OpKind.ZERO: NoAttrs,
    OpKind.SCALE: ScaleAttrs,
    OpKind.ADD: NoAttrs,
    OpKind.MUL: NoAttrs,
    OpKind.CONCAT: AxisAttrs,
    OpKind.SLICE: SliceAttrs,
    OpKind.CHANNEL_SHUFFLE: ShuffleAttrs,
    OpKind.PIXEL_SHUFFLE: FactorAttrs,
    OpKind.PIXEL_UNSHUFFLE: FactorAttrs,
    OpKind.FLATTEN: AxisAttrs,
    OpKind.RESHAPE: ReshapeAttrs,
    OpKind.PERMUTE: PermuteAttrs,
    OpKind.LINEAR: LinearAttrs,
    OpKind.MATMUL: NoAttrs,
    OpKind.ATTENTION: AttentionAttrs,
    OpKind.SOFTMAX: AxisAttrs,
    OpKind.MEAN: ReduceAttrs,
    OpKind.PAD: PadAttrs,
    OpKind.CONSTANT: ConstAttrs,
    OpKind.UNKNOWN: UnknownAttrs,
}

_ATTR_CLASSES: dict[str, type] = {cls.__name__: cls for cls in set(ATTRS_OF.values())}


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def _tupled(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_tupled(v) for v in value)
    return value


def attrs_to_dict(attrs: Attrs) -> dict[str, Any]:
    """A JSON-ready dict of an attribute record (tuples become lists)."""
    return {f.name: _plain(getattr(attrs, f.name)) for f in dataclasses.fields(attrs)}


def attrs_from_dict(op: OpKind, data: dict[str, Any]) -> Attrs:
    """Inverse of :func:`attrs_to_dict` for the record type of ``op``."""
    cls = ATTRS_OF[op]
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"unknown attribute(s) {sorted(unknown)} for op '{op.value}'")
    return cls(**{k: _tupled(v) for k, v in data.items()})  # type: ignore[no-any-return]


KERNEL_OPS: frozenset[OpKind] = frozenset(
    {OpKind.CONV, OpKind.CONV_T, OpKind.MAXPOOL, OpKind.AVGPOOL}
)
"""Ops with a spatial kernel, stride and dilation (receptive-field growth by formula)."""

SPATIAL_LAYER_OPS: frozenset[OpKind] = frozenset(
    {OpKind.CONV, OpKind.CONV_T, OpKind.MAXPOOL, OpKind.AVGPOOL, OpKind.ADAPTIVE_AVGPOOL,
     OpKind.ADAPTIVE_MAXPOOL}
)
"""Layers that may be flagged unproductive (DESIGN.md: convolutions and spatial pools)."""

WEIGHTED_OPS: frozenset[OpKind] = frozenset({OpKind.CONV, OpKind.CONV_T, OpKind.LINEAR})


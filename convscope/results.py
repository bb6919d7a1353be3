"""Result objects of ``analyze``: frozen, with query methods; reports only read them.

``Analysis.to_dict()`` is the JSON of FORMATS.md §4 (schema_version 1).  Receptive-field numbers
are ints (floats after fractional jumps); a global (infinite) receptive field is ``null``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from convscope.units import json_number, plural

__all__ = ["SCHEMA_VERSION", "LayerRow", "Totals", "LatencyPrediction", "Analysis"]

SCHEMA_VERSION = 1
RF = tuple[Any, Any] | None


@dataclass(frozen=True, slots=True)
class LayerRow:
    name: str
    op: str  # the op kind, or the activation function for activations
    inputs: tuple[str, ...]
    out_shape: tuple[int, ...]
    kernel: tuple[int, int] | None
    stride: tuple[int, int] | None
    dilation: tuple[int, int] | None
    groups: int | None
    params: int
    macs: int
    elementwise_ops: int
    activation_bytes: int
    bytes_read: int
    bytes_written: int
    rf_min: RF
    rf_max: RF
    jump: RF
    rf_paths: int
    unproductive: bool
    reason: str | None = None
    source: str | None = None
    target: str | None = None  # what an unknown op was
    ms: float | None = None  # predicted latency, when a prediction was asked for
    shares: str | None = None  # the layer whose weights this one uses again (params counted there)

    @property
    def is_unknown(self) -> bool:
        return self.op == "unknown"

    def to_dict(self) -> dict[str, Any]:
        def pair(v: Any) -> list[Any] | None:
            return None if v is None else [json_number(x) for x in v]

        d: dict[str, Any] = {
            "name": self.name,
            "op": self.op,
            "kernel": list(self.kernel) if self.kernel else None,
            "stride": list(self.stride) if self.stride else None,
            "dilation": list(self.dilation) if self.dilation else None,
            "groups": self.groups,
            "out_shape": list(self.out_shape),
            "params": self.params,
            "macs": self.macs,
            "rf_min": pair(self.rf_min),
            "rf_max": pair(self.rf_max),
            "jump": pair(self.jump),
            "unproductive": self.unproductive,
            "inputs": list(self.inputs),
            "elementwise_ops": self.elementwise_ops,
            "activation_bytes": self.activation_bytes,
            "bytes_read": self.bytes_read,
            "bytes_written": self.bytes_written,
            "rf_paths": self.rf_paths,
        }
        if self.reason:
            d["reason"] = self.reason
        if self.target:
            d["target"] = self.target
        if self.source:
            d["source"] = self.source
        if self.ms is not None:
            d["ms"] = float(self.ms)
        if self.shares:
            d["shares"] = self.shares
        return d


@dataclass(frozen=True, slots=True)
class Totals:
    params: int
    macs: int
    elementwise_ops: int
    weight_bytes: int
    activation_bytes: int
    peak_activation_bytes: int
    bytes_moved: int
    unlisted_params: int = 0  # in ``params``, held by no layer row (see ir.graph.UNLISTED_PARAMS)

    @property
    def flops(self) -> int:
        return 2 * self.macs

    def to_dict(self) -> dict[str, Any]:
        return {
            "params": self.params,
            "macs": self.macs,
            "weight_bytes": self.weight_bytes,
            "peak_activation_bytes": self.peak_activation_bytes,
            "flops": self.flops,
            "elementwise_ops": self.elementwise_ops,
            "activation_bytes": self.activation_bytes,
            "bytes_moved": self.bytes_moved,
            "unlisted_params": self.unlisted_params,
        }


@dataclass(frozen=True, slots=True)
class LatencyPrediction:
    """A latency prediction: total, uncertainty band, and where it holds (FORMATS.md §4)."""

    tier: str  # local | analytic | fitted
    device: str
    backend: str
    batch: int
    ms: float
    low_ms: float
    high_ms: float
    per_layer: tuple[tuple[str, float], ...] = ()
    dtype: str = "fp32"
    threads: int | None = None
    notes: tuple[str, ...] = ()
    untimed: tuple[str, ...] = ()  # layers whose kernels could not be timed: the total is a lower bound

    @property
    def overhead_ms(self) -> float:
        """What the total adds to the sum of the layers' ``ms``: the per-network (per-call) terms the
        local and fitted tiers fit; 0 for the analytic tier, whose per-kernel overhead is inside each
        layer."""
        rows = sum(float(ms) for _, ms in self.per_layer if ms is not None)
        d = float(self.ms) - rows if self.per_layer else 0.0
        return 0.0 if abs(d) < 1e-9 * max(1.0, abs(float(self.ms))) else d  # (a fitted intercept may be negative)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "tier": self.tier, "device": self.device, "backend": self.backend, "batch": self.batch,
            "ms": float(self.ms), "low_ms": float(self.low_ms), "high_ms": float(self.high_ms), "dtype": self.dtype,
            "overhead_ms": self.overhead_ms,
        }
        if self.threads is not None:
            d["threads"] = self.threads
        if self.notes:
            d["notes"] = list(self.notes)
        return d


@dataclass(frozen=True, slots=True)
class Analysis:
    """Everything ``analyze`` knows about one network at one input shape."""

    model: str
    input: tuple[int, ...]
    layers: tuple[LayerRow, ...]
    totals: Totals
    border_layer: str | None
    unproductive_share: tuple[float, float]  # (params, macs)
    feasible_resolution: tuple[int | None, int | None]
    unknown_ops: tuple[tuple[str, str], ...]  # (layer, what it was)
    dtype: str = "fp32"
    batch: int = 1
    latency: LatencyPrediction | None = None
    notes: tuple[str, ...] = ()  # what the front end wants a reader to know (eager fallback, shared weights…)
    _index: dict[str, int] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {r.name: i for i, r in enumerate(self.layers)})

    # -- queries ---------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[LayerRow]:
        return iter(self.layers)

    def layer(self, name: str) -> LayerRow:
        try:
            return self.layers[self._index[name]]
        except KeyError:
            raise KeyError(f"no layer named '{name}' in {self.model}") from None

    @property
    def resolution(self) -> tuple[int, int]:
        return (self.input[1], self.input[2]) if len(self.input) == 3 else (self.input[-1], self.input[-1])

    @property
    def all_unknown(self) -> bool:
        """Every layer that does any work is an op convscope does not know (what is left only moves
        data: a reshape around a Conv3d): nothing to report (exit status 1)."""
        idle = [r for r in self.layers if not r.is_unknown]
        return any(r.is_unknown for r in self.layers) and all(
            r.params == 0 and r.macs == 0 and r.elementwise_ops == 0 for r in idle)

    def unproductive_layers(self) -> list[LayerRow]:
        return [r for r in self.layers if r.unproductive]

    def unjudged_layers(self) -> list[LayerRow]:
        """Convolutions and spatial pools whose receptive field is unknown (behind an op convscope
        does not know): neither the border nor the unproductive flags can speak for them."""
        return [r for r in self.layers if r.rf_max is None and r.kernel is not None and not r.is_unknown]

    def weighted_layers(self) -> list[LayerRow]:
        return [r for r in self.layers if r.params > 0 and r.op in ("conv", "convT", "linear")]

    def with_latency(self, latency: LatencyPrediction) -> "Analysis":
        per = dict(latency.per_layer)
        rows = tuple(replace(r, ms=per.get(r.name)) for r in self.layers)
        return replace(self, layers=rows, latency=latency)

    def summary(self) -> str:
        """One line: border layer, unproductive share, feasible range."""
        r = self.resolution
        border = self.border_layer or "none"
        n = len(self.unproductive_layers())
        lo, hi = self.feasible_resolution
        rng = f"{lo if lo is not None else '?'}–{hi if hi is not None else '?'} px"
        blind = len(self.unjudged_layers())
        if blind:
            border += f" among the layers whose receptive field is known ({plural(blind, 'layer')} after unknown ops not judged)"
        return (f"at {r[0]}x{r[1]}: border layer {border}; {plural(n, 'unproductive layer')} holding "
                f"{100 * self.unproductive_share[0]:.1f}% of params and {100 * self.unproductive_share[1]:.1f}% "
                f"of MACs; feasible input resolution {rng}")

    def to_dict(self) -> dict[str, Any]:
        lo, hi = self.feasible_resolution
        d: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "model": self.model,
            "input": list(self.input),
            "totals": self.totals.to_dict(),
            "border_layer": self.border_layer,
            "unproductive_share": {"params": self.unproductive_share[0], "macs": self.unproductive_share[1]},
            "feasible_resolution": [lo, json_number(hi)],
            "layers": [r.to_dict() for r in self.layers],
            "unknown_ops": [{"name": n, "target": t} for n, t in self.unknown_ops],
            "dtype": self.dtype,
            "batch": self.batch,
        }
        if self.latency is not None:
            d["latency"] = self.latency.to_dict()
            for row in d["layers"]:  # every row has its "ms" (FORMATS.md §4): null for an unknown op
                row.setdefault("ms", None)
        if self.notes:
            d["notes"] = list(self.notes)
        blind = self.unjudged_layers()
        if blind:  # border_layer null and unproductive false cannot speak for these
            d["rf_unknown_layers"] = [r.name for r in blind]
        return d

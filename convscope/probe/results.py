"""Result objects of ``convscope probe``: frozen, with ``to_dict``; reports only read them.

``ProbeResult.to_dict()`` is the JSON of ``convscope probe --json`` (schema_version 1)::

    {"schema_version": 1, "model": ..., "input": [C, H, W], "data": {...}, "epochs": N, "seed": S,
     "train_accuracy": a, "test_accuracy": b, "border_layer": "...",
     "layers": [{"name", "rf_min", "unproductive", "saturation", "saturation_capped", "probe_accuracy", ...}],
     "verdict": {"status": "agrees|partly|disagrees|inconclusive|no_prediction", ...}}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from convscope.units import json_number

__all__ = ["CAPPED_NOTE", "SCHEMA_VERSION", "DataInfo", "EpochRecord", "LayerProbe", "ProbeResult", "Verdict"]

SCHEMA_VERSION = 1
# The footnote of a saturation marked "*" in the reports (see LayerProbe.saturation_capped).
CAPPED_NOTE = ("* saturation capped: the layer has no more covariance samples than its width, so at most "
               "samples − 1 directions can count (left out of the verdict's saturation criterion)")


@dataclass(frozen=True, slots=True)
class DataInfo:
    ref: str  # what the user gave: a directory or synthetic:NAME
    kind: str  # folder | cifar | synthetic | arrays
    classes: tuple[str, ...]
    train: int
    test: int
    context_px: int | None = None  # synthetic data: the receptive field needed to classify

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["classes"] = list(self.classes)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DataInfo:
        return cls(d["ref"], d["kind"], tuple(d["classes"]), d["train"], d["test"], d.get("context_px"))


@dataclass(frozen=True, slots=True)
class EpochRecord:
    epoch: int  # 1-based
    loss: float  # mean training cross-entropy over the epoch
    train_accuracy: float  # running accuracy over the epoch (train mode)
    test_accuracy: float  # held-out accuracy after the epoch (eval mode)
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EpochRecord:
        return cls(**{k: d[k] for k in ("epoch", "loss", "train_accuracy", "test_accuracy", "seconds")})


@dataclass(frozen=True, slots=True)
class LayerProbe:
    """The measured signals of one weighted layer (a convolution or linear layer)."""

    name: str
    op: str
    rf_min: tuple[Any, Any] | None  # per axis; None for a global (infinite) receptive field
    rf_ratio: float | None  # min over axes of rf_min / input size; None when global
    unproductive: bool
    width: int  # channels (convolutions) or features (linear): the saturation's denominator
    saturation: float | None  # eigendirections for 99% of the variance / width
    eigendirections: int | None
    probe_accuracy: float | None  # held-out accuracy of the linear probe
    probe_train_accuracy: float | None
    probe_dims: int | None  # features the probe saw after pooling
    samples: int = 0  # covariance samples (images × positions for convolutions)
    error: str | None = None  # why this layer could not be measured

    @property
    def is_spatial(self) -> bool:
        """A layer before any global operation (the ones the border can flag)."""
        return self.rf_min is not None

    @property
    def saturation_capped(self) -> bool:
        """The saturation is bounded by the samples, not by the layer: n samples give a covariance of
        rank at most n − 1, so with ``samples <= width`` no more than n − 1 of the width directions
        can be counted, whatever the layer represents."""
        return self.saturation is not None and self.samples <= self.width

    def to_dict(self) -> dict[str, Any]:
        d = {
            "name": self.name, "op": self.op,
            "rf_min": None if self.rf_min is None else [json_number(v) for v in self.rf_min],
            "rf_ratio": self.rf_ratio, "unproductive": self.unproductive, "width": self.width,
            "saturation": self.saturation, "saturation_capped": self.saturation_capped,
            "eigendirections": self.eigendirections,
            "probe_accuracy": self.probe_accuracy, "probe_train_accuracy": self.probe_train_accuracy,
            "probe_dims": self.probe_dims, "samples": self.samples,
        }
        if self.error:
            d["error"] = self.error
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LayerProbe:
        rf = d.get("rf_min")
        return cls(d["name"], d["op"], None if rf is None else (rf[0], rf[1]), d.get("rf_ratio"),
                   d["unproductive"], d["width"], d.get("saturation"), d.get("eigendirections"),
                   d.get("probe_accuracy"), d.get("probe_train_accuracy"), d.get("probe_dims"),
                   d.get("samples", 0), d.get("error"))


@dataclass(frozen=True, slots=True)
class Verdict:
    """Do the measured signals agree with the predicted unproductive layers?  See ``rules.verdict``."""

    status: str  # agrees | partly | disagrees | inconclusive | no_prediction
    reasons: tuple[str, ...]
    probe_gain: float | None = None  # best probe after the border minus best probe before it
    gain_threshold: float | None = None
    saturation_before: float | None = None  # median saturation of the productive layers
    saturation_after: float | None = None  # median saturation of the unproductive layers
    plateau_layer: str | None = None  # first layer whose probe is within the threshold of the best

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["reasons"] = list(self.reasons)
        return d


@dataclass(frozen=True, slots=True)
class ProbeResult:
    model: str
    input: tuple[int, ...]
    data: DataInfo
    epochs: int
    seed: int
    device: str
    training: Mapping[str, Any]  # optimizer, lr, batch size
    history: tuple[EpochRecord, ...]
    train_accuracy: float | None
    test_accuracy: float | None
    border_layer: str | None
    layers: tuple[LayerProbe, ...]
    verdict: Verdict
    complete: bool = True  # False for the partial result of an interrupted run
    checkpoint: str | None = None
    notes: tuple[str, ...] = field(default=())

    @property
    def chance(self) -> float:
        return 1.0 / max(1, len(self.data.classes))

    @property
    def resolution(self) -> tuple[int, int]:
        return (self.input[1], self.input[2]) if len(self.input) == 3 else (self.input[-1], self.input[-1])

    def test_accuracy_text(self) -> str:
        """The test accuracy as the reports show it: the final one, else (a partial result) the last
        finished epoch's, marked with that epoch; '-' when there is none."""
        if self.test_accuracy is not None:
            return f"{self.test_accuracy:.3f}"
        if self.history:
            last = self.history[-1]
            return f"{last.test_accuracy:.3f} (after epoch {last.epoch}/{self.epochs})"
        return "-"

    def layer(self, name: str) -> LayerProbe:
        for r in self.layers:
            if r.name == name:
                return r
        raise KeyError(f"no measured layer named '{name}'")

    def with_updates(self, **kw: Any) -> ProbeResult:
        return replace(self, **kw)

    def to_dict(self) -> dict[str, Any]:
        train, test = self.train_accuracy, self.test_accuracy
        last = self.history[-1] if self.history else None
        if test is None and last is not None:  # a partial result: the last finished epoch's test accuracy, as
            test = last.test_accuracy  # the reports; the train accuracy of a finished run is measured in eval
            # mode after training, which a partial run never did (its running epoch figures are in "history")
        return {
            "schema_version": SCHEMA_VERSION,
            "model": self.model,
            "input": list(self.input),
            "data": self.data.to_dict(),
            "epochs": self.epochs,
            "seed": self.seed,
            "device": self.device,
            "training": dict(self.training),
            "train_accuracy": train,
            "test_accuracy": test,
            "accuracy_after_epoch": last.epoch if last is not None and test is not None else None,
            "chance": self.chance,
            "border_layer": self.border_layer,
            "layers": [r.to_dict() for r in self.layers],
            "verdict": self.verdict.to_dict(),
            "history": [h.to_dict() for h in self.history],
            "complete": self.complete,
            "checkpoint": self.checkpoint,
            "notes": list(self.notes),
        }

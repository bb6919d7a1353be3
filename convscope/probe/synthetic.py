"""Synthetic data sets whose recognition needs a known amount of context (numpy only, no download).

``synthetic:scales`` — every image holds identical marks (single bright pixels of random amplitude
on Gaussian noise) arranged on a lattice of period ``P = 2·d``.  Each lattice cell holds two marks,
the second offset from the first by ``d`` pixels:

* class ``horizontal``: offset (0, d); class ``vertical``: offset (d, 0); class ``diagonal``: (d, d).

The lattice phase is uniform, so every mark's position is uniform over the image in every class,
and every class puts the same number of marks in the image (exactly ``2·(R/P)²`` when ``P``
divides the size).  Hence any feature that adds up evidence from single marks — every feature of a
layer whose receptive field cannot hold two marks, pooled over positions — has the same expected
value in every class, and a linear probe on it stays at chance (1/3).  To tell the classes apart a
layer must see two marks of one pair at once: a receptive field of at least ``d + 1`` pixels
(``context_px``).  With ``d = R/2`` the image holds one pair (on a torus: the pair may wrap around
the edge, and still appears ``d`` apart).

The expected border of the data is therefore the first layer whose ``rf_min`` reaches
``context_px``: a probe on earlier layers is at chance, a probe on later layers can be perfect —
in practice a few layers later, since the *effective* receptive field of a trained network is
smaller than its theoretical one.  The default ``d`` is a quarter of the image side, so the data
needs less context than the image holds and layers past the network's border have nothing left to
integrate.

Parameters (``synthetic:scales:d=6,n=4000``): ``d`` offset in pixels (default ``min(H, W) // 4``),
``n`` training images (2000), ``test`` held-out images (1000), ``noise`` (0.2), ``seed`` (0, below
2**32).  ``n`` and ``test`` are bounded so that each split stays within ``MAX_SPLIT_BYTES`` (float32).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from convscope.errors import InputError

__all__ = ["MAX_SEED", "MAX_SPLIT_BYTES", "SYNTHETIC", "SyntheticData", "make_synthetic", "parse_synthetic_ref"]

MAX_SEED = 2**32 - 1  # seeds are 0..MAX_SEED (what every generator of a probe run accepts)
MAX_SPLIT_BYTES = 4 << 30  # one generated split (N×C×H×W float32) at most


@dataclass(frozen=True)
class SyntheticData:
    """Generated images (float32, N×C×H×W) and labels, and what the data needs to be solved."""

    name: str
    params: tuple[tuple[str, Any], ...]
    classes: tuple[str, ...]
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    context_px: int  # a layer must see at least this many pixels (per axis) to classify
    description: str


_OFFSETS = {"horizontal": (0, 1), "vertical": (1, 0), "diagonal": (1, 1)}


def _scales_images(n: int, shape: tuple[int, int, int], d: int, noise: float,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    c, h, w = shape
    period = 2 * d
    y = rng.integers(0, len(_OFFSETS), n)
    x = rng.normal(0.0, noise, (n, 1, h, w)).astype(np.float32)
    offs = np.array(list(_OFFSETS.values()))
    # Lattice cells covering the image for any phase in [0, P): rows/cols phase + i·P, i = -1..
    ci = np.arange(-1, h // period + 2)
    cj = np.arange(-1, w // period + 2)
    for i in range(n):
        pr, pc = rng.integers(0, period, 2)
        oy, ox = offs[y[i]] * d
        rows = (pr + ci * period)[:, None]
        cols = (pc + cj * period)[None, :]
        for dr, dc in ((0, 0), (oy, ox)):
            rr = np.broadcast_to(rows + dr, (len(ci), len(cj))).ravel()
            cc = np.broadcast_to(cols + dc, (len(ci), len(cj))).ravel()
            keep = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
            amp = rng.uniform(0.7, 1.3, int(keep.sum())).astype(np.float32)
            x[i, 0, rr[keep], cc[keep]] += amp
    if c > 1:
        x = np.repeat(x, c, axis=1)
    return x, y.astype(np.int64)


def _make_scales(shape: tuple[int, int, int], p: Mapping[str, Any]) -> SyntheticData:
    _, h, w = shape
    d = int(p.get("d", max(1, min(h, w) // 4)))
    if d < 1 or 2 * d > min(h, w):
        raise InputError(f"synthetic:scales: d={d} must be between 1 and half the image side "
                         f"({min(h, w) // 2} for {h}x{w})")
    n, n_test = int(p.get("n", 2000)), int(p.get("test", 1000))
    noise, seed = float(p.get("noise", 0.2)), int(p.get("seed", 0))
    if n < 1 or n_test < 1 or not (noise >= 0 and math.isfinite(noise)):
        raise InputError(f"synthetic:scales: n, test must be positive and noise a finite number >= 0, got n={n}, "
                         f"test={n_test}, noise={noise}")
    if not 0 <= seed <= MAX_SEED:
        raise InputError(f"synthetic:scales: seed={seed} is out of range: 0 <= seed < 2**32")
    per_image = 4 * shape[0] * h * w
    for key, value in (("n", n), ("test", n_test)):
        if value * per_image > MAX_SPLIT_BYTES:
            given = "" if key in p else " (the default)"
            raise InputError(f"synthetic:scales: {key}={value}{given} images of {shape[0]}x{h}x{w} would take "
                             f"{value * per_image / 2**30:,.1f} GiB; the limit is {MAX_SPLIT_BYTES >> 30} GiB per split "
                             f"({key} <= {MAX_SPLIT_BYTES // per_image} at this size)")
    rng = np.random.default_rng(seed)
    xtr, ytr = _scales_images(n, shape, d, noise, rng)
    xte, yte = _scales_images(n_test, shape, d, noise, rng)
    params = (("d", d), ("n", n), ("test", n_test), ("noise", noise), ("seed", seed))
    desc = (f"two identical marks {d} px apart (horizontal, vertical or diagonal) on a lattice of period "
            f"{2 * d}; a layer must see {d + 1} px to classify")
    return SyntheticData("scales", params, tuple(_OFFSETS), xtr, ytr, xte, yte, d + 1, desc)


SYNTHETIC: dict[str, Callable[[tuple[int, int, int], Mapping[str, Any]], SyntheticData]] = {
    "scales": _make_scales,
}
_KEYS = {"scales": {"d", "n", "test", "noise", "seed"}}


def parse_synthetic_ref(ref: str) -> tuple[str, dict[str, str]]:
    """'synthetic:scales:d=6,n=500' -> ('scales', {'d': '6', 'n': '500'})."""
    body = ref[len("synthetic:"):]
    name, _, rest = body.partition(":")
    if name not in SYNTHETIC:
        raise InputError(f"--data {ref}: unknown synthetic data set '{name}' "
                         f"(known: {', '.join('synthetic:' + k for k in SYNTHETIC)})")
    params: dict[str, str] = {}
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq or key not in _KEYS[name]:
            raise InputError(f"--data {ref}: bad parameter '{item}' (accepted: "
                             f"{', '.join(sorted(_KEYS[name]))}, as key=value)")
        if key in params:
            raise InputError(f"--data {ref}: '{key}' is given twice ({key}={params[key]} and {item})")
        params[key] = value
    return name, params


def make_synthetic(ref: str, shape: tuple[int, ...]) -> SyntheticData:
    """Generate ``synthetic:NAME[:key=value,...]`` at ``shape`` (C, H, W)."""
    name, raw = parse_synthetic_ref(ref)
    if len(shape) != 3:
        raise InputError(f"--data {ref}: synthetic images need a C,H,W input, the network takes {shape}")
    params: dict[str, Any] = {}
    for k, v in raw.items():
        try:
            params[k] = float(v) if k == "noise" else int(v)
        except ValueError:
            kind = "a number" if k == "noise" else "an integer"
            raise InputError(f"--data {ref}: {k} must be {kind}, got '{v}'") from None
    return SYNTHETIC[name]((shape[0], shape[1], shape[2]), params)

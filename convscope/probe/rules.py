"""The numbers behind ``convscope probe``: saturation from a covariance, and the verdict rule.

Saturation (Richter et al., "Feature space saturation during training", used by seeds/002): the
eigenvalues λ₁ ≥ λ₂ ≥ … of the covariance of a layer's outputs; ``k`` = the smallest number of
them whose sum reaches 99% of the total variance; saturation = ``k / width``.  For a convolution
every spatial position of every image is one sample of a C-dimensional vector (channel-wise), so
``width`` is the channel count.  A layer whose outputs do not vary at all has saturation 0.

Verdict (seeds/002: layers past the border show no probe gain and low saturation).  Only layers
before any global operation take part (the head cannot be flagged); P = the measured layers that
``analyze`` predicts productive, U = those it predicts unproductive.

* ``inconclusive`` — the trained network is not better than chance (test accuracy ≤ chance +
  max(0.05, 3σ) with σ the binomial standard error of chance on the test set): its layers have
  learnt nothing to measure; or no productive layer was measured.
* ``no_prediction`` — no layer is predicted unproductive at this resolution: nothing to confirm.
* probe criterion: ``gain = max acc(U) − max acc(P)`` is at most ``max(δ, 2σ)``, where δ = 0.02 by
  default and σ = sqrt(p(1−p)/n) is the standard error of the best productive probe accuracy ``p``
  on the ``n`` held-out probe samples (a gain inside that band is noise, not new information);
* saturation criterion: the median saturation of U is below the median saturation of P.  Layers
  whose saturation is capped by the sample count (``samples <= width``: the covariance of n samples
  has rank at most n − 1, see ``LayerProbe.saturation_capped``) take no part in it; if that leaves
  P or U without a layer, the criterion is not evaluated and does not hold.

``agrees`` when both criteria hold, ``partly`` when one does, ``disagrees`` when neither does.
The *plateau layer* is the first measured layer whose probe accuracy is within the same band of
the best one — where the probes stop improving; it is reported, not used by the rule.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from convscope.probe.results import LayerProbe, Verdict

__all__ = ["DEFAULT_DELTA", "VARIANCE_SHARE", "plateau_layer", "saturation_from_covariance", "verdict"]

VARIANCE_SHARE = 0.99
DEFAULT_DELTA = 0.02


def saturation_from_covariance(cov: np.ndarray, share: float = VARIANCE_SHARE) -> tuple[float, int]:
    """(saturation, k) of a width×width covariance matrix (symmetric, float64)."""
    width = cov.shape[0]
    ev = np.linalg.eigvalsh(np.asarray(cov, dtype=np.float64))[::-1]
    ev = np.clip(ev, 0.0, None)  # round-off can make the smallest eigenvalues slightly negative
    total = float(ev.sum())
    if width == 0 or total <= 0.0:
        return 0.0, 0
    cum = np.cumsum(ev) / total
    # The smallest k with cum[k-1] >= share; the tolerance keeps an exact 99% from rounding up.
    k = int(np.searchsorted(cum, share - 1e-12) + 1)
    k = min(k, width)
    return k / width, k


def _band(p: float, n: int, delta: float) -> float:
    sigma = math.sqrt(max(p * (1.0 - p), 0.0) / max(n, 1))
    return max(delta, 2.0 * sigma)


class _Row(NamedTuple):
    name: str
    probe: float
    saturation: float
    unproductive: bool
    capped: bool


def _measured(layers: Sequence[LayerProbe]) -> list[_Row]:
    return [_Row(r.name, r.probe_accuracy, r.saturation, r.unproductive, r.saturation_capped) for r in layers
            if r.is_spatial and r.error is None and r.probe_accuracy is not None and r.saturation is not None]


def _saturation_criterion(rows: Sequence[_Row]) -> tuple[bool, float | None, float | None, str]:
    """The saturation criterion over the layers whose saturation is not capped: (holds, median of P,
    median of U, the reason's text)."""
    capped = [r.name for r in rows if r.capped]
    sat_before = [r.saturation for r in rows if not r.capped and not r.unproductive]
    sat_after = [r.saturation for r in rows if not r.capped and r.unproductive]
    left_out = (f" (left out, saturation capped by too few samples: {', '.join(capped)})" if capped else "")
    if not sat_before or not sat_after:
        side = "after" if not sat_after else "before"
        return False, None, None, (f"saturation not compared: no layer {side} the border has more covariance "
                                   f"samples than its width{left_out}")
    sat_p, sat_u = float(statistics.median(sat_before)), float(statistics.median(sat_after))
    ok = sat_u < sat_p
    return ok, sat_p, sat_u, (f"median saturation {sat_u:.3f} after the border vs {sat_p:.3f} before: "
                              + ("lower, as predicted" if ok else "not lower") + left_out)


def plateau_layer(layers: Sequence[LayerProbe], n_test: int, delta: float = DEFAULT_DELTA) -> str | None:
    rows = _measured(layers)
    if not rows:
        return None
    best = max(r.probe for r in rows)
    band = _band(best, n_test, delta)
    return next(r.name for r in rows if r.probe >= best - band)


def verdict(
    layers: Sequence[LayerProbe],
    *,
    test_accuracy: float | None,
    chance: float,
    n_test: int,
    n_probe_test: int,
    delta: float = DEFAULT_DELTA,
) -> Verdict:
    """Apply the rule of the module docstring.  ``n_test`` is the size of the test set the network's
    accuracy was measured on, ``n_probe_test`` the number of held-out samples each probe was scored on."""
    rows = _measured(layers)
    plateau = plateau_layer(layers, n_probe_test, delta)
    if test_accuracy is None:
        return Verdict("inconclusive", ("the network was not trained",))
    floor = chance + max(0.05, 3.0 * math.sqrt(chance * (1 - chance) / max(n_test, 1)))
    if floor >= 1.0:  # even a perfect score could be luck on so few test images
        why = (f"too few test images ({n_test}) to tell the network's accuracy ({test_accuracy:.3f}) from chance "
               f"({chance:.3f}): the bar, chance + 3 standard errors, is {floor:.2f}, above a perfect score; "
               "give more images")
        return Verdict("inconclusive", (why,), plateau_layer=plateau)
    if test_accuracy <= floor:
        why = (f"the trained network is no better than chance (test accuracy {test_accuracy:.3f}, chance "
               f"{chance:.3f}): train longer or check the data before reading its layers")
        return Verdict("inconclusive", (why,), plateau_layer=plateau)
    before = [r for r in rows if not r.unproductive]
    after = [r for r in rows if r.unproductive]
    if not after:
        why = "no measured layer is predicted unproductive at this resolution: nothing to confirm"
        return Verdict("no_prediction", (why,), plateau_layer=plateau)
    if not before:
        why = "every measured layer is predicted unproductive: no productive layer to compare with"
        return Verdict("inconclusive", (why,), plateau_layer=plateau)
    best_p = max(r.probe for r in before)
    best_u = max(r.probe for r in after)
    band = _band(best_p, n_probe_test, delta)
    gain = best_u - best_p
    probe_ok = gain <= band
    sat_ok, sat_p, sat_u, sat_reason = _saturation_criterion(rows)
    reasons = (
        f"probe accuracy after the border gains {gain:+.3f} over the best productive layer "
        f"({best_u:.3f} vs {best_p:.3f}; noise band {band:.3f}): "
        + ("no gain, as predicted" if probe_ok else "the unproductive layers still add information"),
        sat_reason,
    )
    status = "agrees" if probe_ok and sat_ok else ("partly" if probe_ok or sat_ok else "disagrees")
    return Verdict(status, reasons, probe_gain=gain, gain_threshold=band, saturation_before=sat_p,
                   saturation_after=sat_u, plateau_layer=plateau)

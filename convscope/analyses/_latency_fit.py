"""Fitting latency coefficients: non-negative least squares, a ridge prior, leave-one-out bands.

Used by the ``fitted`` tier (coefficients of the roofline features, fitted from a CSV of networks
measured on the target) and by the local tier's per-network overhead.  Residuals are *relative*
(``(measured - predicted) / measured``): latencies span decades and the question users ask is
"within ±10%".  Coefficients are pulled towards a prior (``lam``) so that features the measured
networks do not separate stay at their prior value instead of wandering off.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["nnls", "LinearFit", "fit_relative", "loo_ratios", "band_from_ratios", "select_columns"]


def nnls(a: np.ndarray, b: np.ndarray, max_iter: int | None = None) -> np.ndarray:
    """min ||a x - b|| subject to x >= 0 (Lawson & Hanson 1974, the active-set algorithm of
    ``scipy.optimize.nnls``).  Small problems only (a few columns)."""
    m, n = a.shape
    x = np.zeros(n)
    passive = np.zeros(n, dtype=bool)
    w = a.T @ (b - a @ x)
    tol = 10 * np.finfo(float).eps * max(1.0, float(np.abs(a).sum())) * max(m, n)
    for _ in range(max_iter or 3 * n + 30):
        if passive.all() or (w[~passive] <= tol).all():
            break
        j = int(np.argmax(np.where(passive, -np.inf, w)))
        passive[j] = True
        while True:
            z = np.zeros(n)
            z[passive] = np.linalg.lstsq(a[:, passive], b, rcond=None)[0]
            if (z[passive] > 0).all():
                x = z
                break
            neg = passive & (z <= 0)
            alpha = np.min(x[neg] / (x[neg] - z[neg]))
            x = x + alpha * (z - x)
            passive &= x > tol
            x[~passive] = 0.0
        w = a.T @ (b - a @ x)
    return x


@dataclass(frozen=True, slots=True)
class LinearFit:
    coef: tuple[float, ...]
    residual: float  # root mean square of the relative residuals

    def predict(self, x: Sequence[float]) -> float:
        return float(np.dot(self.coef, x))


def fit_relative(x: np.ndarray, y: np.ndarray, prior: Sequence[float], lam: float = 1e-3,
                 weights: np.ndarray | None = None) -> LinearFit:
    """Non-negative ``coef`` minimising sum(((y - x coef) / w)^2) + lam * ||coef/prior_scale - prior||^2.

    Rows are divided by ``w`` (default y: relative residuals); the ridge term pulls every coefficient
    towards its prior, in units of the coefficient's own prior scale (1 for a zero prior).
    """
    w = y if weights is None else weights
    p = np.asarray(prior, dtype=float)
    scale = np.where(p > 0, p, 1.0)
    a = np.vstack([x * (scale / w[:, None]), np.sqrt(lam) * np.eye(len(p))])
    b = np.concatenate([y / w, np.sqrt(lam) * p / scale])
    theta = nnls(a, b) * scale
    rel = (y - x @ theta) / w
    return LinearFit(tuple(float(t) for t in theta), float(np.sqrt(np.mean(rel**2))))


def select_columns(x: np.ndarray, y: np.ndarray, order: Sequence[int], tol: float = 1e-3) -> list[int]:
    """Columns (in priority ``order``) that the rows can separate: a column is kept when it adds an
    independent direction to the relative design matrix (unit-norm columns; smallest singular value
    above ``tol``).  The others are held at their prior value by the caller."""
    rel = x / y[:, None]
    keep: list[int] = []
    for j in order:
        col = rel[:, j]
        if not np.any(col):
            continue
        trial = keep + [j]
        m = rel[:, trial] / np.linalg.norm(rel[:, trial], axis=0)
        if len(trial) <= len(y) - 1 and np.linalg.svd(m, compute_uv=False)[-1] > tol:
            keep = trial
    return keep


def loo_ratios(x: np.ndarray, y: np.ndarray, prior: Sequence[float], lam: float = 1e-3) -> np.ndarray:
    """measured / predicted for each row when the fit is made without that row."""
    out = np.empty(len(y))
    for i in range(len(y)):
        mask = np.arange(len(y)) != i
        f = fit_relative(x[mask], y[mask], prior, lam)
        pred = f.predict(x[i])
        out[i] = y[i] / pred if pred > 0 else np.inf
    return out


def band_from_ratios(ratios: np.ndarray) -> tuple[float, float]:
    """(low, high) multipliers of a prediction: the smallest and largest measured/predicted ratio
    seen out of sample, never narrower than [1, 1].  With 5-20 rows the extremes, not quantiles,
    are the honest summary."""
    finite = ratios[np.isfinite(ratios)]
    if not len(finite):
        return (0.5, 2.0)
    return (float(min(1.0, finite.min())), float(max(1.0, finite.max())))

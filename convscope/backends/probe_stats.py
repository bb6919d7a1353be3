"""Per-layer measurements for ``convscope probe``: online covariance (saturation) and linear probes.

* :class:`OnlineCovariance` accumulates the mean and scatter matrix of a layer's outputs batch by
  batch in float64 (the pairwise update of Chan, Golub & LeVeque), so memory is width² whatever
  the number of samples.  Convolution outputs are taken channel-wise: each spatial position of
  each image is one sample of a C-dimensional vector.
* :func:`probe_features` pools a layer's output to a bounded number of features for the probe:
  adaptive average pooling to s×s with s the largest of 4, 2, 1 such that C·s² stays within the
  budget; a layer with more features than the budget (wide linear layers) is reduced by a fixed,
  seeded Gaussian random projection, which preserves linear separability up to small distortion
  (Johnson–Lindenstrauss) — nothing is learnt in the reduction.
* :func:`fit_linear_probe` is multinomial logistic regression on standardised features, fitted
  full-batch with L-BFGS and a small L2 penalty; scored on held-out features.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "DEFAULT_PROBE_DIMS",
    "OnlineCovariance",
    "as_samples",
    "fit_linear_probe",
    "pooled_dims",
    "probe_features",
    "projection_for",
]

DEFAULT_PROBE_DIMS = 2048
_L2 = 1e-3
_MAX_ITER = 150


class OnlineCovariance:
    """Running covariance of width-dimensional samples, float64, on ``device``."""

    def __init__(self, width: int, device: torch.device | str = "cpu"):
        self.width = width
        self.n = 0
        self.mean = torch.zeros(width, dtype=torch.float64, device=device)
        self.scatter = torch.zeros(width, width, dtype=torch.float64, device=device)

    def update(self, x: torch.Tensor) -> None:
        """Add samples ``x`` shaped (m, width)."""
        m = int(x.shape[0])
        if m == 0:
            return
        x = x.detach().to(device=self.mean.device, dtype=torch.float64)
        bmean = x.mean(0)
        xc = x - bmean
        bscatter = xc.T @ xc
        if self.n == 0:
            self.mean, self.scatter, self.n = bmean, bscatter, m
            return
        total = self.n + m
        delta = bmean - self.mean
        # Chan et al.: the scatter of the union is both scatters plus the spread between the means.
        self.scatter += bscatter + torch.outer(delta, delta) * (self.n * m / total)
        self.mean += delta * (m / total)
        self.n = total

    def covariance(self) -> np.ndarray:
        if self.n < 2:
            return np.zeros((self.width, self.width))
        return (self.scatter / (self.n - 1)).cpu().numpy()


def as_samples(out: torch.Tensor) -> torch.Tensor:
    """A layer output as covariance samples: (B, C, H, W) -> (B·H·W, C); (B, F) -> (B, F)."""
    if out.dim() == 4:
        return out.permute(0, 2, 3, 1).reshape(-1, out.shape[1])
    return out.reshape(out.shape[0], -1)


def _pool_size(c: int, h: int, w: int, budget: int) -> int:
    for s in (4, 2):
        if c * s * s <= budget and s <= min(h, w):
            return s
    return 1


def probe_features(out: torch.Tensor, budget: int = DEFAULT_PROBE_DIMS,
                   projection: torch.Tensor | None = None) -> torch.Tensor:
    """Bounded features of one batch of a layer's output (see the module docstring).  ``projection``
    is the (features, budget) matrix from :func:`projection_for` when the pooled size exceeds the budget."""
    if out.dim() == 4:
        s = _pool_size(out.shape[1], out.shape[2], out.shape[3], budget)
        f = F.adaptive_avg_pool2d(out, s).flatten(1)
    else:
        f = out.reshape(out.shape[0], -1)
    f = f.to(torch.float32)
    if projection is not None:
        f = f @ projection
    return f


def pooled_dims(shape: tuple[int, ...], budget: int = DEFAULT_PROBE_DIMS) -> int:
    """Features per sample before any projection, for an output of ``shape`` (without batch)."""
    if len(shape) == 3:
        s = _pool_size(shape[0], shape[1], shape[2], budget)
        return shape[0] * s * s
    return int(np.prod(shape))


def projection_for(dims: int, budget: int, seed: int, device: torch.device | str) -> torch.Tensor | None:
    if dims <= budget:
        return None
    g = torch.Generator().manual_seed(seed)
    proj: torch.Tensor = (torch.randn(dims, budget, generator=g) / budget ** 0.5).to(device)
    return proj


def _standardise(tr: torch.Tensor, te: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean = tr.mean(0, keepdim=True)
    std = tr.std(0, keepdim=True).clamp(min=1e-6)
    return (tr - mean) / std, (te - mean) / std


def fit_linear_probe(x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor,
                     classes: int, *, l2: float = _L2, max_iter: int = _MAX_ITER) -> tuple[float, float]:
    """(held-out accuracy, training accuracy) of a multinomial logistic-regression probe."""
    xtr, xte = _standardise(x_train.to(torch.float32), x_test.to(torch.float32))
    ytr, yte = y_train.to(xtr.device), y_test.to(xtr.device)
    w = torch.zeros(xtr.shape[1], classes, device=xtr.device, requires_grad=True)
    b = torch.zeros(classes, device=xtr.device, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, history_size=20,
                            tolerance_grad=1e-6, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(xtr @ w + b, ytr) + l2 * (w * w).sum()
        loss.backward()  # type: ignore[no-untyped-call]
        return loss

    with torch.enable_grad():
        opt.step(closure)  # type: ignore[no-untyped-call]
    with torch.no_grad():
        test = int(((xte @ w + b).argmax(1) == yte).sum()) / len(yte) if len(yte) else float("nan")
        train = int(((xtr @ w + b).argmax(1) == ytr).sum()) / len(ytr)
    return test, train

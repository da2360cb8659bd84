"""Importance weights: effective sample size (eq. 19) and weighted moments.

All functions take unnormalised log-weights; ``-inf`` weights count as zero.

Example:
    >>> import torch
    >>> effective_sample_size(torch.zeros(8))
    8.0
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "effective_sample_size",
    "log_ess",
    "weighted_cholesky",
    "weighted_covariance",
    "weighted_moments",
    "weighted_quantiles",
]


def log_ess(log_weights: Tensor) -> Tensor:
    """Logarithm of the effective sample size ``(sum w)^2 / sum w^2``, eq. (19).

    ``-inf`` weights count as zero; returns ``-inf`` (a 0-dim tensor) when all weights vanish.

    Example:
        >>> log_ess(torch.zeros(8)).exp()
        tensor(8.)
    """
    value = 2 * torch.logsumexp(log_weights, 0) - torch.logsumexp(2 * log_weights, 0)
    return torch.where(torch.isnan(value), value.new_tensor(-math.inf), value)


def effective_sample_size(log_weights: Tensor) -> float:
    """Effective sample size of unnormalised log-weights, eq. (19), as a float.

    Example:
        >>> effective_sample_size(torch.tensor([0.0, 0.0, -math.inf, 0.0]))
        3.0
    """
    return float(log_ess(log_weights).exp())


def weighted_moments(samples: Tensor, log_weights: Tensor) -> tuple[Tensor, Tensor]:
    """Component-wise weighted mean and standard deviation ``(d,)`` of ``samples`` ``(n, d)``.

    Example:
        >>> x = torch.tensor([[0.0], [2.0], [4.0]])
        >>> weighted_moments(x, torch.tensor([0.0, 0.0, -math.inf]))
        (tensor([1.]), tensor([1.]))
    """
    w = torch.softmax(log_weights, 0)
    mean = (w[:, None] * samples).sum(0)
    std = torch.sqrt((w[:, None] * (samples - mean) ** 2).sum(0))
    return mean, std


def weighted_covariance(x: Tensor, log_weights: Tensor) -> Tensor:
    """The covariance ``(d, d)`` of ``x`` ``(n, d)`` under the weights ``exp(log_weights)``.

    Example:
        >>> weighted_covariance(torch.tensor([[0.0], [2.0]]), torch.zeros(2))
        tensor([[1.]])
    """
    w = torch.softmax(torch.where(torch.isfinite(log_weights), log_weights.to(x.dtype),
                                  x.new_tensor(-math.inf)), 0)
    centred = x - (w[:, None] * x).sum(0)
    return (w[:, None] * centred).T @ centred


def weighted_cholesky(samples: Tensor, log_weights: Tensor) -> Tensor:
    """Cholesky factor ``(d, d)`` of the weighted covariance (jittered, never singular).

    Where the covariance is not positive definite the factor is the diagonal of its widths.

    Example:
        >>> x = torch.randn(4000, 2, generator=torch.Generator().manual_seed(0)) * torch.tensor([1.0, 3.0])
        >>> weighted_cholesky(x, torch.zeros(4000)).diagonal().round()
        tensor([1., 3.])
    """
    w = torch.softmax(torch.where(torch.isnan(log_weights), -math.inf, log_weights), 0)
    w = torch.where(torch.isfinite(w), w, torch.zeros_like(w)).to(samples.dtype)
    mean = (w[:, None] * samples).sum(0)
    centred = samples - mean
    cov = (w[:, None] * centred).T @ centred
    diag = torch.diagonal(cov).clamp_min(0)
    jitter = 1e-9 * diag.max().clamp_min(1e-30)
    eye = torch.eye(samples.shape[1], dtype=samples.dtype, device=samples.device)
    factor, info = torch.linalg.cholesky_ex(cov + jitter * eye)
    fallback = torch.diag_embed(torch.sqrt(diag + jitter))
    return torch.where(info == 0, factor, fallback)


def weighted_quantiles(x: Tensor, log_weights: Tensor, q: Tensor) -> Tensor:
    """``(d, len(q))`` weighted quantiles (float64) of every column of ``x`` ``(n, d)``.

    Example:
        >>> x = torch.arange(10.0)[:, None]
        >>> weighted_quantiles(x, torch.zeros(10), torch.tensor([0.05, 0.5])).tolist()
        [[0.0, 4.0]]
    """
    w = torch.softmax(log_weights.to(torch.float64), 0)
    xs, order = x.to(torch.float64).sort(dim=0)
    cw = w[order].cumsum(0).T.contiguous()  # (d, n)
    idx = torch.searchsorted(cw, q.to(cw).expand(x.shape[1], -1).contiguous())
    return xs.T.gather(1, idx.clamp_max(x.shape[0] - 1))

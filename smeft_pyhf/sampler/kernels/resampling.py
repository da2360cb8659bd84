"""Resampling: indices drawn with probabilities proportional to importance weights (eq. 20).

Example:
    >>> g = torch.Generator().manual_seed(0)
    >>> resample_indices(torch.tensor([0.0, -float("inf")]), 3, generator=g)
    tensor([0, 0, 0])
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

__all__ = ["resample_indices"]


def resample_indices(
    log_weights: Tensor,
    n: int,
    *,
    generator: torch.Generator,
    method: Literal["multinomial", "systematic"] = "multinomial",
) -> Tensor:
    """Indices drawn with probabilities proportional to ``exp(log_weights)``.

    Args:
        log_weights: unnormalised log-weights ``(m,)``; if all are ``-inf`` the draw is uniform.
        n: number of indices.
        generator: random number generator on the device of ``log_weights``.
        method: ``"multinomial"`` (independent draws) or ``"systematic"`` (one uniform number,
            lower variance).

    Returns:
        ``(n,)`` int64 indices on the device of ``log_weights``.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> resample_indices(torch.tensor([0.0, -float("inf")]), 3, generator=g)
        tensor([0, 0, 0])
    """
    finite = torch.isfinite(log_weights).any()
    safe = torch.where(finite, log_weights, torch.zeros_like(log_weights))
    probs = torch.softmax(safe, 0)
    if method == "multinomial":
        return torch.multinomial(probs, n, replacement=True, generator=generator)
    if method == "systematic":
        u = torch.rand((), generator=generator, device=probs.device, dtype=probs.dtype)
        positions = (u + torch.arange(n, device=probs.device, dtype=probs.dtype)) / n
        cdf = torch.cumsum(probs, 0)
        idx = torch.searchsorted(cdf, positions, right=True)
        return idx.clamp_(max=probs.shape[0] - 1)
    raise ValueError(f"unknown resampling method {method!r}")


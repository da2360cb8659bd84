r"""Inverse-temperature schedules :math:`\beta_0 = 0, \dots, \beta_T = 1` of the annealing.

Example:
    >>> annealing_schedule(2).tolist()
    [0.0, 0.5, 1.0]
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["annealing_schedule"]


def annealing_schedule(n_steps: int, kind: str = "linear", beta_min: float = 1e-6) -> Tensor:
    r"""The inverse temperatures :math:`\beta_0 = 0, \beta_1, \dots, \beta_T = 1` (float64).

    ``"linear"``: :math:`\beta_t = t/T` (paper eq. 12). ``"logit"``: :math:`\beta_1, \dots,
    \beta_{T-1}` evenly spaced in :math:`\log(\beta / (1 - \beta))` from ``beta_min`` to
    ``1 - beta_min`` (for ``T <= 2`` the linear schedule).

    Example:
        >>> annealing_schedule(4).tolist()
        [0.0, 0.25, 0.5, 0.75, 1.0]
        >>> [round(b, 4) for b in annealing_schedule(4, "logit", 1e-3).tolist()]
        [0.0, 0.001, 0.5, 0.999, 1.0]
    """
    t = torch.arange(n_steps + 1, dtype=torch.float64)
    if kind not in ("linear", "logit"):
        raise ValueError(f"unknown schedule {kind!r}")
    if kind == "linear" or n_steps <= 2:
        return t / n_steps
    edge = math.log(beta_min / (1.0 - beta_min))
    beta = torch.sigmoid(edge * (1.0 - 2.0 * (t - 1) / (n_steps - 2)))
    beta[0], beta[-1] = 0.0, 1.0
    return beta

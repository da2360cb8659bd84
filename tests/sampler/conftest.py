"""Fixtures of the sampler tests: analytic target densities."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch


def _gaussian(mean: torch.Tensor, std: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """Normalised diagonal Gaussian log-density."""

    def log_prob(x: torch.Tensor) -> torch.Tensor:
        z = (x - mean) / std
        return (-0.5 * z**2 - torch.log(std) - 0.5 * math.log(2 * math.pi)).sum(-1)

    return log_prob


@pytest.fixture
def gaussian() -> Callable[..., Callable[[torch.Tensor], torch.Tensor]]:
    """``gaussian(mean, std)``: a normalised diagonal Gaussian log-density."""
    return _gaussian

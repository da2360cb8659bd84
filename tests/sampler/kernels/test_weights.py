"""Effective sample size of importance weights.
"""

from __future__ import annotations

import math

import pytest
import torch

from smeft_pyhf.sampler.kernels.weights import effective_sample_size, log_ess


def test_effective_sample_size_and_log_ess():
    lw = torch.log(torch.tensor([1.0, 1.0, 2.0, 0.0]))
    assert effective_sample_size(lw) == pytest.approx(16 / 6)
    assert float(log_ess(torch.full((3,), -math.inf))) == -math.inf

"""The annealing schedules.
"""

from __future__ import annotations

import math

import pytest
import torch

from smeft_pyhf.exceptions import ConfigError
from smeft_pyhf.sampler.config import PrescaleConfig
from smeft_pyhf.sampler.kernels.schedules import annealing_schedule


def test_annealing_schedules():

    linear = annealing_schedule(10)
    torch.testing.assert_close(linear, torch.arange(11, dtype=torch.float64) / 10)
    logit = annealing_schedule(402, "logit", 1e-6)
    assert float(logit[0]) == 0.0 and float(logit[-1]) == 1.0
    assert bool((logit[1:] > logit[:-1]).all())
    inner = torch.logit(logit[1:-1])
    # evenly spaced in logit(beta), from logit(1e-6) to logit(1 - 1e-6)
    assert float(inner[0]) == pytest.approx(math.log(1e-6 / (1 - 1e-6)))
    assert float(inner[-1]) == pytest.approx(-math.log(1e-6 / (1 - 1e-6)))
    torch.testing.assert_close(inner.diff(), inner.diff()[:1].expand(400))
    with pytest.raises(ConfigError, match="schedule"):
        PrescaleConfig(schedule="cosine")

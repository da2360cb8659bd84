"""Gaps in profiled intervals judged by a direct constrained maximisation (analytic truths)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from smeft_pyhf.results.intervals import profiled_interval
from smeft_pyhf.sampler import SamplerConfig, run_sampler
from smeft_pyhf.sampler.gaps import check_gaps


def _double_well(x: torch.Tensor) -> torch.Tensor:
    """Two minima along x0 (at -1 and +1, width 0.1 in x0^2); x1 follows x0."""
    return -0.5 * ((x[:, 0] ** 2 - 1.0) / 0.1) ** 2 - 0.5 * (x[:, 1] - 0.3 * x[:, 0]) ** 2


def _gaussian(x: torch.Tensor) -> torch.Tensor:
    """Correlated 2D Gaussian, unit widths, correlation 0.8 (profile of x0: -x0^2 / 2)."""
    rho = 0.8
    q = (x[:, 0] ** 2 - 2 * rho * x[:, 0] * x[:, 1] + x[:, 1] ** 2) / (1 - rho**2)
    return -0.5 * q


def _interval(profile, i: int):
    delta = 2.0 * (profile.best_log_prob - profile.profile1d[i])
    return profiled_interval(profile.centres1d[i].numpy(), delta.numpy(), level="95")


@pytest.fixture(scope="module")
def double_well():
    return run_sampler(_double_well, names=["a", "b"], config=SamplerConfig.reduced(), seed=3,
                       progress=False, init_scale=2.0)


@pytest.fixture(scope="module")
def gaussian():
    return run_sampler(_gaussian, names=["a", "b"], config=SamplerConfig.reduced(), seed=3,
                       progress=False)


def test_a_real_second_minimum_is_confirmed(double_well) -> None:
    prof = double_well.profile_result
    assert len(_interval(prof, 0).segments) == 2
    out = check_gaps(_double_well, prof, ["a", "b"])
    (gap,) = out.gaps
    assert gap.coefficient == "a" and gap.real
    # -2 Delta log L at x0 = c: ((c^2 - 1) / 0.1)^2 (x1 profiled exactly)
    assert gap.delta_chi2 == pytest.approx(((gap.centre**2 - 1) / 0.1) ** 2, rel=1e-6)
    assert gap.delta_chi2 > gap.threshold
    # the binned ends bracket the analytic ones: x0^2 in 1 +- 0.1 sqrt(3.84)
    iv = _interval(out.profile, 0)
    low_in, high_in = math.sqrt(1 - 0.1 * math.sqrt(3.8415)), math.sqrt(1 + 0.1 * math.sqrt(3.8415))
    assert len(iv.segments) == 2
    width = float(prof.centres1d[0, 1] - prof.centres1d[0, 0])
    assert iv.segments[1][0] == pytest.approx(low_in, abs=width)
    assert iv.segments[1][1] == pytest.approx(high_in, abs=width)


def test_a_false_gap_is_closed_and_the_interval_is_whole_again(gaussian) -> None:
    prof = gaussian.profile_result
    assert len(_interval(prof, 0).segments) == 1
    centres = prof.centres1d[0]
    inner = torch.nonzero(centres.abs() < 1.2).squeeze(1)
    broken = prof.profile1d.clone()
    broken[0, inner[len(inner) // 2 - 1: len(inner) // 2 + 1]] -= 25.0  # two bins stopped short
    bad = prof._replace(profile1d=broken)
    assert len(_interval(bad, 0).segments) == 2
    out = check_gaps(_gaussian, bad, ["a", "b"])
    (gap,) = out.gaps
    assert not gap.real
    assert gap.delta_chi2_binned > 40
    assert gap.delta_chi2 == pytest.approx(gap.centre**2, abs=1e-6)  # the profile of x0 is -x0^2/2
    iv = _interval(out.profile, 0)
    assert len(iv.segments) == 1
    width = float(centres[1] - centres[0])
    assert iv.low == pytest.approx(-1.95996, abs=0.2 * width)
    assert iv.high == pytest.approx(1.95996, abs=0.2 * width)
    np.testing.assert_allclose(out.profile.profile1d[0].numpy(), prof.profile1d[0].numpy(),
                               atol=1e-6)


def test_no_gap_no_work(gaussian) -> None:
    out = check_gaps(_gaussian, gaussian.profile_result, ["a", "b"])
    assert out.gaps == () and out.n_evaluations == 0
    assert out.profile is gaussian.profile_result

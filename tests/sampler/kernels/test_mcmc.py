"""The adaptive Metropolis kernel.

Bounds on random results are 5 standard errors computed in the test, or the spread over "the
24 runs": seeds 0-7 of the test's run generator (the target kept) under each of
ATEN_CPU_CAPABILITY=default, =avx2 and the native avx512, measured as mean +- sd of the checked
deviation; a bound is |mean| + 5 sd rounded up unless the comment says otherwise.
"""

from __future__ import annotations

import math

import pytest
import torch

from smeft_pyhf.sampler.kernels.mcmc import adapt_step_size, run_mcmc


def test_adaptive_step_size_reaches_target_acceptance(gaussian):
    target = gaussian(torch.zeros(5), torch.tensor([0.1, 0.5, 1.0, 1.0, 2.0]))
    g = torch.Generator().manual_seed(6)
    x = torch.randn(2048, 5, generator=g)
    burn = run_mcmc(target, x, n_steps=100, step_size=1.0, generator=g)
    res = run_mcmc(target, burn.samples, n_steps=100, step_size=burn.step_size, generator=g)
    # 100 steps x 2048 chains: the acceptance rate is pinned to the target by the adaptation;
    # over the 24 runs it is 0.33 - 0.0001 +- 0.0002 (sd), at most 0.0004 off: mean + 5 sd is
    # 0.001, and 0.002 leaves room for the rounding of the adaptation on other machines
    assert abs(res.acceptance - 0.33) < 0.002
    assert res.n_evaluations == 2048 * 101


def test_mcmc_without_adaptation_keeps_target_invariant(gaussian):
    # exact Metropolis with a fixed step size: samples of N(0,1) stay N(0,1)
    target = gaussian(torch.zeros(1), torch.ones(1))
    g = torch.Generator().manual_seed(7)
    x = torch.randn(20000, 1, generator=g)
    res = run_mcmc(target, x, n_steps=20, step_size=0.5, adapt=False, generator=g)
    assert res.step_size == 0.5
    # each of the 20000 independent chains starts from an exact draw and ends with one: exact
    # independent N(0, 1) draws, so 5 standard errors (1/sqrt(n) for the mean, 1/sqrt(2n) for
    # the std). Pulls over the 24 runs: <= 2.5 and <= 1.05
    se = 1 / math.sqrt(20000)
    assert abs(float(res.samples.mean())) < 5 * se
    assert abs(float(res.samples.std()) - 1) < 5 * se / math.sqrt(2)


def test_adapt_step_size_rule():
    tau = torch.tensor(1.0)
    # tau <- tau * 2**min(a/0.33 - 1, 1)
    assert float(adapt_step_size(tau, torch.tensor(0.33))) == pytest.approx(1.0)
    assert float(adapt_step_size(tau, torch.tensor(0.0))) == pytest.approx(0.5)
    assert float(adapt_step_size(tau, torch.tensor(0.495))) == pytest.approx(2**0.5)
    assert float(adapt_step_size(tau, torch.tensor(1.0))) == pytest.approx(2.0)
    assert float(adapt_step_size(tau, torch.tensor(0.0), bounds=(0.9, 2.0))) == pytest.approx(0.9)

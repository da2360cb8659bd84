"""Annealed importance sampling between analytic densities.

Bounds on random results are 5 standard errors computed in the test, or the spread over "the
24 runs": seeds 0-7 of the test's run generator (the target kept) under each of
ATEN_CPU_CAPABILITY=default, =avx2 and the native avx512, measured as mean +- sd of the checked
deviation; a bound is |mean| + 5 sd rounded up unless the comment says otherwise.
"""

from __future__ import annotations

import math

import torch

from smeft_pyhf.sampler.kernels.ais import anneal


def test_anneal_between_two_gaussians_estimates_log_normaliser(gaussian):
    # components (log N(0,1) normalised, log of N(3, 0.5) times e^2); Z ratio = e^2
    def fn(x: torch.Tensor) -> torch.Tensor:
        a = gaussian(torch.zeros(1), torch.ones(1))(x)
        b = gaussian(torch.tensor([3.0]), torch.tensor([0.5]))(x) + 2.0
        return torch.stack([a, b], -1)

    g = torch.Generator().manual_seed(9)
    x = torch.randn(4096, 1, generator=g)
    beta = torch.linspace(0, 1, 101)[:, None]
    res = anneal(
        fn,
        x,
        fn(x),
        torch.cat([1 - beta, beta], 1),
        generator=g,
        step_size=0.2,
        resample_threshold=0.5,
    )
    # over the 24 runs: log Z - 2 = 0.003 +- 0.018 (sd), at most 0.038 (the weights' own SE,
    # ~0.008, misses the resampling); the weighted mean - 3 = -0.005 +- 0.010. Bounds:
    # mean + 5 sd
    log_z = torch.logsumexp(res.log_weights, 0) - math.log(4096)
    assert abs(float(log_z) - 2.0) < 0.1
    w = torch.softmax(res.log_weights, 0)
    assert abs(float((w * res.samples[:, 0]).sum()) - 3.0) < 0.06

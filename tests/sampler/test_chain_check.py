"""The Markov-chain check of step 4 against analytic Gaussians.

The flow is the untrained one (the standard normal) in coordinates standardised with mean 0
and width 1, so the chains' latent target is the posterior itself. The weighted sample that
the check judges is a real step-4 sample, drawn either for the same posterior (exact: no end
may move) or for a narrower one, a stand-in for a flow that under-samples the tails: its ends
lie too far in, and the chains must find the analytic mass beyond them.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from smeft_pyhf.exceptions import ConfigError
from smeft_pyhf.results.diagnostics import Diagnostics, assess
from smeft_pyhf.sampler.chain_check import ChainCheckConfig, check_with_chains, tail_masses
from smeft_pyhf.sampler.config import FlowConfig
from smeft_pyhf.sampler.flows import build_flow
from smeft_pyhf.sampler.kernels.hmc import run_hmc
from smeft_pyhf.sampler.kernels.standardisation import standardise
from smeft_pyhf.sampler.sampling import SampleConfig, sample_and_histogram


def _normal_tail(end: float, width: float) -> float:
    return 0.5 * math.erfc(abs(end) / width / math.sqrt(2.0))


def _gaussian(widths: tuple[float, ...]):
    w = torch.tensor(widths, dtype=torch.float32)
    return lambda x: -0.5 * ((x / w) ** 2).sum(-1)


def _checked(widths: tuple[float, ...], sampled_widths: tuple[float, ...], seed: int = 0):
    """The check of a posterior ``N(0, widths^2)`` on a sample of ``N(0, sampled_widths^2)``."""
    dim = len(widths)
    flow = build_flow(dim, config=FlowConfig(n_blocks=2, hidden_features=8),
                      generator=torch.Generator().manual_seed(seed))
    coords = standardise(_gaussian(widths), torch.zeros(dim), torch.ones(dim))

    def draw(n: int, generator: torch.Generator | None = None):
        with torch.no_grad():
            z, log_q = flow.sample_and_log_prob(n, generator=generator)
        return coords.to_original(z), log_q - coords.log_det(z)

    names = [f"c{i}" for i in range(dim)]
    sample = sample_and_histogram(
        draw, _gaussian(sampled_widths), ranges=torch.tensor([[-6.0, 6.0]] * dim),
        config=SampleConfig(n_batches=2, batch_size=50_000, histograms_2d=False),
        generator=torch.Generator().manual_seed(seed + 1), names=names)
    config = ChainCheckConfig(n_chains=512, n_iterations=80, burn_in=20)
    return check_with_chains(flow, coords, sample, config=config, names=names,
                             generator=torch.Generator().manual_seed(seed + 2))


def test_hmc_samples_a_correlated_gaussian():
    cov = torch.tensor([[1.0, 0.8], [0.8, 1.0]])
    prec = torch.linalg.inv(cov)
    seen: list[torch.Tensor] = []
    res = run_hmc(lambda x: -0.5 * ((x @ prec) * x).sum(-1), torch.zeros(1000, 2),
                  n_iterations=60, generator=torch.Generator().manual_seed(3),
                  callback=lambda i, x: seen.append(x) if i >= 20 else None)
    x = torch.cat(seen)
    # over seeds 0-9 the largest element deviation is 0.010 +- 0.007 (sd), at most 0.019:
    # 0.05 lies 5.7 sd above the mean
    assert torch.allclose(torch.cov(x.T), cov, atol=0.05)
    assert 0.6 < res.acceptance < 0.9


def test_tail_masses_interpolate_inside_the_end_bin():
    h = np.array([[0.1, 0.2, 0.3, 0.4]])
    edges = np.array([[0.0, 1.0, 2.0, 3.0, 4.0]])
    masses = tail_masses(h, edges, np.array([[1.5, 2.25]]))
    assert masses.tolist() == [[pytest.approx(0.2), pytest.approx(0.75 * 0.3 + 0.4)]]


@pytest.mark.parametrize("seed", [0, 1])
def test_exact_sample_moves_no_end(seed):
    check = _checked((1.0, 1.0), (1.0, 1.0), seed)
    assert check.flagged() == []
    for i in range(2):
        for k in range(2):
            truth = _normal_tail(check.ends[i, k], 1.0)
            assert abs(check.mass_chains[i, k] - truth) < 4 * check.mass_chains_error[i, k]
            assert abs(check.mass_weights[i, k] - truth) < 4 * check.mass_weights_error[i, k]
            assert abs(check.z[i, k]) < 4


def test_sample_with_light_tails_is_caught():
    check = _checked((1.0, 1.0), (0.8, 1.0))
    for k in range(2):
        # the sample's ends are those of N(0, 0.8^2) ...
        assert abs(abs(check.ends[0, k]) - 1.96 * 0.8) < 0.05
        # ... the chains find the analytic mass of N(0, 1) beyond them (5.0 %, not 2.5 %)
        truth = _normal_tail(check.ends[0, k], 1.0)
        assert abs(check.mass_chains[0, k] - truth) < 4 * check.mass_chains_error[0, k]
        assert abs(check.mass_weights[0, k] - 0.025) < 4 * check.mass_weights_error[0, k]
        # the implied move of the end: (truth - 2.5 %) / density at the end, in widths
        density = math.exp(-0.5 * 1.96**2) / math.sqrt(2 * math.pi) / 0.8
        assert check.shift[0, k] == pytest.approx((truth - 0.025) / density / 0.8, rel=0.3)
    assert sorted(check.flagged()) == [("c0", "high"), ("c0", "low")]
    # the warning names the coefficient; c1 is exact
    warnings = assess(Diagnostics(chain_check=check.to_dict()))
    assert [(w.figure, w.coefficients) for w in warnings] == [("chain_check", ("c0",))]
    assert warnings[0].value == pytest.approx(np.abs(check.shift[0]).max())
    assert np.abs(check.z[1]).max() < 4


def test_config_is_checked():
    with pytest.raises(ConfigError, match="burn_in"):
        ChainCheckConfig(n_chains=8, n_iterations=10, burn_in=10)

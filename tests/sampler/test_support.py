"""The flow's coordinates on a prior box: the logit map's Jacobian, and a posterior cut off by
its box edges sampled with its exact evidence and marginal."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import norm

from smeft_pyhf.fit.run import box_prior
from smeft_pyhf.sampler.config import FlowConfig, PrescaleConfig, PretrainConfig, TrainConfig
from smeft_pyhf.sampler.kernels.standardisation import Standardised
from smeft_pyhf.sampler.pipeline import SamplerConfig, run_sampler
from smeft_pyhf.sampler.sampling import SampleConfig

LOW = torch.tensor([-1.0, -1.0, -5.0], dtype=torch.float64)
HIGH = torch.tensor([1.0, 1.0, 5.0], dtype=torch.float64)
# coefficient a is pressed against its upper edge, b against its lower one, c is inside
MU = (1.2, -0.95, 0.0)
SIGMA = (0.3, 0.05, 1.0)


def log_l(c):
    return -0.5 * sum(((c[:, i] - m) / s) ** 2 for i, (m, s) in enumerate(zip(MU, SIGMA, strict=True)))


def truth_log_z() -> float:
    """The integral of exp(log_l) over the box: a product of truncated Gaussians."""
    total = 0.0
    for m, s, lo, hi in zip(MU, SIGMA, LOW.tolist(), HIGH.tolist(), strict=True):
        total += math.log(s * math.sqrt(2 * math.pi) * (norm.cdf((hi - m) / s) - norm.cdf((lo - m) / s)))
    return total


def test_log_det_is_the_jacobian_of_to_original():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 3, generator=g, dtype=torch.float64)
    factor = torch.linalg.cholesky(torch.tensor([[2.0, 0.3, 0.1], [0.3, 1.0, 0.2], [0.1, 0.2, 0.5]],
                                                dtype=torch.float64))
    coords = Standardised(log_l, torch.tensor([0.5, -2.0, 0.1], dtype=torch.float64),
                          torch.ones(3, dtype=torch.float64), factor,
                          support=torch.stack([LOW, HIGH], 1),
                          bounded=torch.tensor([True, True, False]))
    jac = torch.func.vmap(torch.func.jacrev(lambda z: coords.to_original(z[None])[0]))(x)
    exact = torch.linalg.slogdet(jac).logabsdet
    assert torch.allclose(coords.log_det(x), exact, atol=1e-12)
    c = coords.to_original(x)
    assert bool(((c > LOW) & (c < HIGH))[:, :2].all())
    assert torch.allclose(coords.to_standardised(c), x, atol=1e-9)


@pytest.mark.parametrize("support_map", ["logit", "none"])
def test_a_posterior_cut_by_its_prior_box(support_map):
    box = torch.stack([LOW, HIGH], 1).float()
    config = SamplerConfig(
        prescale=PrescaleConfig(n_samples=1024, n_steps=100),
        flow=FlowConfig(n_blocks=3, hidden_features=32),
        pretrain=PretrainConfig(batch_size=256, epochs=4, mcmc_steps=5, burn_in_steps=10),
        train=TrainConfig(batch_size=512, n_batches=20, buffered_per_online=2,
                          buffer_capacity=8192),
        sample=SampleConfig(n_batches=2, batch_size=20_000, profile_bins_2d=8),
        support_map=support_map,
    )
    res = run_sampler(box_prior(log_l, box[:, 0], box[:, 1]), names=("a", "b", "c"), ranges=box,
                      config=config, seed=1, progress=False, init_mean=box.mean(1),
                      init_scale=(box[:, 1] - box[:, 0]) / 4, support=box)
    s = res.sample_result
    pull = (s.log_evidence - truth_log_z()) / s.log_evidence_error
    if support_map == "logit":
        # every draw lies in the box, so the evidence is exact: within 5 of its standard error
        # sqrt(1/ESS - 1/N) (here ~5e-4)
        assert abs(pull) < 5, (s.log_evidence, truth_log_z(), s.log_evidence_error)
        # the marginal of a: the truncated Gaussian's mass in the upper half of its box
        edges = torch.linspace(float(s.ranges[0, 0]), float(s.ranges[0, 1]), s.marginal1d.shape[1] + 1)
        upper = float(s.marginal1d[0][edges[:-1] >= 0.0].sum())
        m, sd = MU[0], SIGMA[0]
        exact = (norm.cdf((1 - m) / sd) - norm.cdf((float(edges[edges >= 0.0][0]) - m) / sd)) / (
            norm.cdf((1 - m) / sd) - norm.cdf((-1 - m) / sd))
        err = float(s.marginal1d_error[0][edges[:-1] >= 0.0].pow(2).sum().sqrt())
        assert abs(upper - exact) < 5 * err + 1e-3
    else:
        # the Gaussian wall of box_prior outside the box adds mass next to each edge the
        # posterior touches: a biased evidence, far beyond its standard error
        assert pull > 20


def test_only_a_posterior_with_weight_at_an_edge_is_mapped():
    """The rule that picks the logit-mapped coordinates, against analytic weights at the edge:
    a standard normal 3 widths below its upper edge (merely near it: weight within half a
    width of the edge P(Z > 2.5) = 0.0062) and a half-normal whose mode is its lower edge
    (P(|Z| < 0.5 sd) with sd = sqrt(1 - 2/pi): 0.2366)."""
    from smeft_pyhf.sampler.coordinates import weight_near_edges

    n = 400_000
    g = torch.Generator().manual_seed(0)
    samples = torch.stack([torch.randn(n, generator=g, dtype=torch.float64),
                           torch.randn(n, generator=g, dtype=torch.float64).abs()], 1)
    box = torch.tensor([[-10.0, 3.0], [0.0, 10.0]], dtype=torch.float64)
    weight = weight_near_edges(samples, torch.zeros(n, dtype=torch.float64),
                                    samples.std(0), box, 0.5)
    sd_half = math.sqrt(1 - 2 / math.pi)
    exact = torch.tensor([norm.sf(2.5), 2 * norm.cdf(0.5 * sd_half) - 1], dtype=torch.float64)
    se = torch.sqrt(exact * (1 - exact) / n)
    assert bool((torch.abs(weight - exact) < 5 * se).all()), (weight, exact, se)
    config = SamplerConfig()
    assert (weight > config.support_weight).tolist() == [False, True]

"""Step 2 (pre-training): maximum likelihood on MCMC-evolved samples fits a Gaussian."""

from __future__ import annotations

import math

import pytest
import torch

from smeft_pyhf.exceptions import ConfigError
from smeft_pyhf.sampler.flows import FlowConfig, build_flow
from smeft_pyhf.sampler.pretrain import PretrainConfig, PretrainStatus, pretrain

FLOW = FlowConfig(n_blocks=4, bins=8, hidden_layers=2, hidden_features=32)
COV = torch.tensor([[1.0, 0.8], [0.8, 1.0]])
TARGET = torch.distributions.MultivariateNormal(torch.zeros(2), COV)
# differential entropy of the target = the minimal expected loss -E[log g]
ENTROPY = 0.5 * math.log((2 * math.pi * math.e) ** 2 * float(torch.det(COV)))


def weighted_start(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Samples of a wide Gaussian with importance weights towards TARGET (like step 1 gives)."""
    x = 1.5 * torch.randn(n, 2, generator=g)
    log_r = torch.distributions.Normal(0.0, 1.5).log_prob(x).sum(-1)
    return x, TARGET.log_prob(x) - log_r


def test_pretrain_fits_mean_and_covariance():
    g = torch.Generator().manual_seed(0)
    x, log_w = weighted_start(2048, g)
    flow = build_flow(2, config=FLOW, generator=g)
    config = PretrainConfig(
        batch_size=256, epochs=8, mcmc_steps=5, burn_in_steps=10, learning_rate=3e-3
    )
    res = pretrain(flow, TARGET.log_prob, x, log_weights=log_w, config=config, generator=g)
    assert res.n_steps == 8 * 8 and len(res.losses) == res.n_steps
    assert res.samples.shape == (2048, 2)
    # Bounds from the spread over "the 24 runs": seeds 0-7 of this generator under each of
    # ATEN_CPU_CAPABILITY=default, =avx2 and the native avx512, as mean +- sd; bound |mean| + 5
    # sd, rounded up.
    # loss goes down towards the entropy (mean of the last epoch): over the 24 runs the first
    # loss is 0.43-0.70 above it; last - entropy is 0.018 +- 0.034 (sd), at most 0.060
    last = sum(res.losses[-8:]) / 8
    assert res.losses[0] > last and abs(last - ENTROPY) < 0.19
    # the adaptive Metropolis kernel sits at the target acceptance: acceptance - 0.33 is
    # 0.0030 +- 0.0002 (sd) over the 24 runs
    assert abs(res.acceptance - 0.33) < 0.004
    # flow samples reproduce mean and covariance. Statistical errors: 20000 flow samples give
    # ~0.01; the 2048 training points (resampled from weights, so duplicated, then moved by
    # MCMC) give more. Over the 24 runs: max |mean| 0.062 +- 0.037 (sd), at most 0.132;
    # max |cov - COV| 0.054 +- 0.030, at most 0.099 (the old bounds 0.15 and 0.12, from seeds
    # 0-2, were only 2.4 and 2.2 sd out)
    samples, _ = flow.draw(20000, generator=g)
    assert torch.allclose(samples.mean(0), torch.zeros(2), atol=0.25)
    assert torch.allclose(torch.cov(samples.T), COV, atol=0.21)


def test_pretrain_counts_evaluations_and_reports_status():
    g = torch.Generator().manual_seed(1)
    x, log_w = weighted_start(300, g)
    statuses: list[PretrainStatus] = []
    config = PretrainConfig(batch_size=128, epochs=2, mcmc_steps=3, burn_in_steps=4, n_samples=256)
    res = pretrain(
        build_flow(2, config=FLOW),
        TARGET.log_prob,
        x,
        log_weights=log_w,
        config=config,
        generator=g,
        callback=statuses.append,
    )
    assert res.samples.shape == (256, 2)
    # burn-in: 256 x (1 + 4); every batch: 128 x 3
    assert res.n_evaluations == 256 * 5 + 4 * 128 * 3
    assert [s.step for s in statuses] == [0, 1, 2, 3]
    assert [s.epoch for s in statuses] == [0, 0, 1, 1]
    assert all(math.isfinite(s.loss) and s.step_size > 0 for s in statuses)


def test_pretrain_mcmc_scope_all():
    g = torch.Generator().manual_seed(2)
    x, _ = weighted_start(256, g)
    config = PretrainConfig(
        batch_size=128, epochs=1, mcmc_steps=2, burn_in_steps=0, mcmc_scope="all"
    )
    res = pretrain(build_flow(2, config=FLOW), TARGET.log_prob, x, config=config, generator=g)
    assert res.n_evaluations == 256 + 2 * 256 * 2


def test_pretrain_is_deterministic_under_a_seed():
    def run(seed: int) -> tuple[tuple[float, ...], torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        x, log_w = weighted_start(256, g)
        flow = build_flow(2, config=FLOW, generator=g)
        res = pretrain(
            flow,
            TARGET.log_prob,
            x,
            log_weights=log_w,
            generator=g,
            config=PretrainConfig(batch_size=64, epochs=1, mcmc_steps=2),
        )
        return res.losses, res.samples

    a, b, c = run(3), run(3), run(4)
    assert a[0] == b[0] and torch.equal(a[1], b[1])
    assert a[0] != c[0]


def test_pretrain_keeps_samples_inside_the_support():
    def half(x: torch.Tensor) -> torch.Tensor:
        lp = TARGET.log_prob(x)
        return torch.where(x[:, 0] > 0, lp, torch.full_like(lp, -math.inf))

    g = torch.Generator().manual_seed(5)
    x = torch.rand(512, 2, generator=g) + 0.01
    res = pretrain(
        build_flow(2, config=FLOW),
        half,
        x,
        generator=g,
        config=PretrainConfig(batch_size=256, epochs=2, mcmc_steps=3),
    )
    assert bool((res.samples[:, 0] > 0).all())
    assert all(math.isfinite(v) for v in res.losses)


def test_pretrain_config_defaults_and_validation():
    assert PretrainConfig() == PretrainConfig.paper("top")
    assert (PretrainConfig().batch_size, PretrainConfig().epochs, PretrainConfig().mcmc_steps) == (
        1024,
        15,
        20,
    )
    assert PretrainConfig.paper("higgs").epochs == 6
    with pytest.raises(ConfigError, match="mcmc_scope"):
        PretrainConfig(mcmc_scope="some")

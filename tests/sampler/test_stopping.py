"""Steps that stop when their job is done: training at an ESS/N plateau, sampling at a
requested effective sample size."""

from __future__ import annotations

import torch

from smeft_pyhf.sampler.config import TrainConfig
from smeft_pyhf.sampler.pipeline import SamplerConfig, run_sampler
from smeft_pyhf.sampler.sampling import SampleConfig
from smeft_pyhf.sampler.training import training_converged


def gaussian(c):
    return -0.5 * ((c - torch.tensor([0.3, -1.0])) ** 2 / torch.tensor([0.04, 4.0])).sum(-1)


def test_plateau_rule():
    cfg = TrainConfig(stop_window=4, stop_tolerance=0.02, stop_ess=0.95)
    rising = [0.1 * k for k in range(1, 9)]
    assert training_converged(rising, cfg) == ""
    assert training_converged(rising[:7], cfg) == ""  # fewer than two windows
    flat = [0.5, 0.6, 0.55, 0.58, 0.56, 0.57, 0.59, 0.55]
    assert "less than 2% better" in training_converged(flat, cfg)
    assert ">= 0.95" in training_converged([0.9] * 4 + [0.96] * 4, cfg)
    assert training_converged(flat, TrainConfig()) == ""  # the paper's fixed count by default


def test_training_and_sampling_stop_when_done():
    base = SamplerConfig.reduced()
    config = base.replace(
        train=TrainConfig(batch_size=512, n_batches=200, buffered_per_online=3,
                          buffer_capacity=16384, stop_window=5, stop_tolerance=0.02),
        sample=SampleConfig(n_batches=50, batch_size=5000, profile_bins_2d=8, target_ess=12_000),
    )
    res = run_sampler(gaussian, names=("a", "b"), config=config, seed=2, progress=False)
    n_batches = len(res.train_result.ess_history)
    # a 2D Gaussian is learnt in a few dozen batches; the window rule ends training there
    assert 10 <= n_batches < 200
    assert training_converged(res.train_result.ess_history, config.train) != ""
    assert training_converged(res.train_result.ess_history[:-1], config.train) == ""
    # sampling stops at the first batch that brings the ESS to 12k, well before 50 batches
    assert res.sample_result.ess >= 12_000
    assert res.sample_result.n_samples % 5000 == 0 and res.sample_result.n_samples < 50 * 5000
    assert res.sample_result.ess - 5000 < 12_000  # one batch fewer would not have reached it

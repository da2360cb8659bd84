"""The mean-force tails against posteriors whose marginal is known in closed form.

The weighted sample that :func:`replace_tails` repairs is a real step-4 sample drawn for a
posterior *without* the far part of the tail (a stand-in for a flow that under-covers it), and
the reconstruction runs on the true posterior: its tail must come out as the analytic one,
while the weighted histogram's end lies far too short.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from smeft_pyhf.exceptions import ConfigError
from smeft_pyhf.results.diagnostics import Diagnostics, assess
from smeft_pyhf.results.intervals import marginalised_interval
from smeft_pyhf.sampler.mean_force import (
    MeanForceConfig,
    flagged_tails,
    replace_tails,
    sample_heavy_weights,
    stratified_target,
    stratify,
)
from smeft_pyhf.sampler.pipeline import SamplerConfig, run_sampler
from smeft_pyhf.sampler.sampling import SampleConfig, bin_centres, sample_and_histogram

SHELF = 0.12  # weight of the shelf N(3, 0.7^2) beside the bulk N(0, 1) in x0


def _log_normal(x: torch.Tensor, mean: torch.Tensor | float, sd: torch.Tensor | float):
    return -0.5 * ((x - mean) / sd) ** 2 - torch.log(torch.as_tensor(sd)) - 0.5 * math.log(
        2 * math.pi)


def _conditional(x: torch.Tensor) -> torch.Tensor:
    """log p(x1, x2 | x0), normalised for every x0: a curved ridge whose mean and width move
    with x0, so only chains that follow the conditional average its x0-derivative to zero.
    The mean is monotone in x0, so every conditional at fixed x0, x1 or x2 has one mode (the
    method's assumption: chains at fixed c must mix across the conditional)."""
    x0, x1, x2 = x[:, 0], x[:, 1], x[:, 2]
    return (_log_normal(x1, 0.6 * x0 + 0.08 * x0**3, 0.5 * (1 + 0.1 * x0**2))
            + _log_normal(x2, 0.5 * x1, 1.0))


def _shelf_marginal(x0: torch.Tensor) -> torch.Tensor:
    return torch.logaddexp(math.log(1 - SHELF) + _log_normal(x0, 0.0, 1.0),
                           math.log(SHELF) + _log_normal(x0, 3.0, 0.7))


def _true(x: torch.Tensor) -> torch.Tensor:
    return _shelf_marginal(x[:, 0]) + _conditional(x)


def _bulk_only(x: torch.Tensor) -> torch.Tensor:
    return _log_normal(x[:, 0], 0.0, 1.0) + _conditional(x)


def _proposal(n: int, generator: torch.Generator):
    """A stand-in for a trained flow: the ridge's shape 1.2 times wider, in x0 a Gaussian
    1.2 wide about 0.3, too light on the shelf's far side."""
    z = torch.randn(n, 3, generator=generator, dtype=torch.float64)
    x0 = 0.3 + 1.2 * z[:, 0]
    mean1, sd1 = 0.6 * x0 + 0.08 * x0**3, 1.2 * 0.5 * (1 + 0.1 * x0**2)
    x1 = mean1 + sd1 * z[:, 1]
    x2 = 0.5 * x1 + 1.2 * z[:, 2]
    log_q = (_log_normal(x0, 0.3, 1.2) + _log_normal(x1, mean1, sd1)
             + _log_normal(x2, 0.5 * x1, 1.2))
    return torch.stack([x0, x1, x2], 1), log_q


RANGES = torch.tensor([[-5.0, 6.0], [-16.0, 24.0], [-10.0, 14.0]], dtype=torch.float64)
NAMES = ["x0", "x1", "x2"]


def _weighted_sample(log_prob, seed: int):
    return sample_and_histogram(
        _proposal, log_prob, ranges=RANGES,
        config=SampleConfig(n_batches=2, batch_size=40_000, histograms_2d=False),
        generator=torch.Generator().manual_seed(seed), names=NAMES)


def _expected(sample, cut: float) -> tuple[np.ndarray, np.ndarray]:
    """What the repaired row must be: the sample's own bulk below the cut (the bulk-only
    posterior's marginal, N(0, 1)) and the true marginal above it, matched over the anchor
    ``[mean, cut]`` as replace_tails matches them, with the row's total kept."""
    x = bin_centres(RANGES, sample.marginal1d.shape[1])[0].numpy()
    bulk = np.exp(_log_normal(torch.as_tensor(x), 0.0, 1.0).numpy())
    true = np.exp(_shelf_marginal(torch.as_tensor(x)).numpy())
    p = sample.marginal1d[0].double().numpy()
    mean = float((p * x).sum() / p.sum())
    anchor = (x >= mean) & (x <= cut)
    scale = float((bulk[anchor] * np.log(bulk[anchor] / true[anchor])).sum() / bulk[anchor].sum())
    row = np.where(x > cut, true * math.exp(scale), bulk)
    return x, row / row.sum()


@pytest.mark.parametrize("seed", [0, 1])
def test_the_mean_force_rebuilds_a_tail_the_sample_misses(seed):
    sample = _weighted_sample(_bulk_only, seed)
    config = MeanForceConfig(n_chains=128, grid_points=24, n_iterations=30)
    out = replace_tails(_true, _proposal, sample, [("x0", "high")], names=NAMES, config=config,
                        generator=torch.Generator().manual_seed(seed + 10))
    (tail,) = out.tails
    assert (tail.name, tail.side) == ("x0", "high")
    x, expected = _expected(sample, tail.cut)
    got = out.marginal1d[0].double().numpy()
    sd = math.sqrt(float((expected * x**2).sum() - (expected * x).sum() ** 2))
    true_end = marginalised_interval(x, expected, level="95").segments[-1][1]
    weighted_end = marginalised_interval(x, sample.marginal1d[0].numpy(),
                                         level="95").segments[-1][1]
    # the weighted sample has no shelf: its end lies 1.3 sd too far in
    assert true_end - weighted_end > 1.0 * sd
    assert tail.end_weights == pytest.approx(weighted_end, abs=1e-9)
    # the rebuilt end: within its own error (0.01-0.02 sd) and a tenth of a bin of the truth
    assert 0 < tail.end_error < 0.05
    assert abs(tail.end_mean_force - true_end) < 4 * tail.end_error * sd + 0.1 * (x[1] - x[0])
    # the masses beyond 2, 3 and 4 (the shelf's bulk and its far side)
    for t in (2.0, 3.0, 4.0):
        m_true, m_got = expected[x > t].sum(), got[x > t].sum() / got.sum()
        assert m_got == pytest.approx(m_true, rel=0.06), t
    # the forces: d log m / dx0 of the true marginal at every grid point, within 5 errors
    g = torch.tensor(tail.grid, requires_grad=True)
    (f_true,) = torch.autograd.grad(_shelf_marginal(g).sum(), g)
    z = (tail.force - f_true.numpy()) / tail.force_error
    assert np.abs(z).max() < 5.0, z.round(1)
    # the other rows and the low side stay as they were; the weighted rows are kept
    assert torch.equal(out.marginal1d[1:], sample.marginal1d[1:])
    assert torch.equal(out.weighted_marginal1d, sample.marginal1d)
    # below the cut the row is the weighted histogram, scaled to keep the row's total
    before = sample.marginal1d[0].double().numpy()
    below = x < tail.cut
    ratio = got[below][before[below] > 0] / before[below][before[below] > 0]
    assert ratio.max() - ratio.min() < 1e-9 * ratio.max()
    assert got.sum() == pytest.approx(before.sum(), rel=1e-9)


def _exact_true(n: int, seed: int) -> torch.Tensor:
    """Exact draws of the true posterior (x0 from its mixture, the rest from the ridge)."""
    g = torch.Generator().manual_seed(seed)
    shelf = torch.rand(n, generator=g, dtype=torch.float64) < SHELF
    z = torch.randn(n, 3, generator=g, dtype=torch.float64)
    x0 = torch.where(shelf, 3.0 + 0.7 * z[:, 0], z[:, 0])
    x1 = 0.6 * x0 + 0.08 * x0**3 + 0.5 * (1 + 0.1 * x0**2) * z[:, 1]
    return torch.stack([x0, x1, 0.5 * x1 + z[:, 2]], 1)


def test_the_other_marginals_take_the_rebuilt_tail():
    """Step 4's draws of the shelf-less posterior weighted again by x0's rebuilt marginal
    (post-stratification): x1 and x2, which follow x0 along the ridge, get the true posterior's
    upper 95 % ends, which the weighted sample misses by 1-2 widths."""
    sample = _weighted_sample(_bulk_only, 0)
    out = replace_tails(_true, _proposal, sample, [("x0", "high")], names=NAMES,
                        config=MeanForceConfig(n_chains=128),
                        generator=torch.Generator().manual_seed(10))
    again = sample_and_histogram(
        _proposal, stratified_target(_bulk_only, sample, out, NAMES), ranges=RANGES,
        config=SampleConfig(n_batches=2, batch_size=40_000, histograms_2d=False),
        generator=torch.Generator().manual_seed(0), names=NAMES)
    final = stratify(sample, out, again, NAMES)
    # x0 keeps its rebuilt row; its stratified histogram is the same up to empty bins
    assert torch.equal(final.marginal1d[0], out.marginal1d[0])
    np.testing.assert_allclose(again.marginal1d[0].numpy(), (out.marginal1d[0]
                               / out.marginal1d[0].sum()).numpy(), atol=2e-4)
    exact = _exact_true(2_000_000, 1)
    x = bin_centres(RANGES, 80).numpy()
    for j in (1, 2):
        truth = np.histogram(exact[:, j].numpy(), bins=80,
                             range=tuple(RANGES[j].tolist()))[0].astype(float)
        sd = float(exact[:, j].std())
        end = marginalised_interval(x[j], truth, level="95").segments[-1][1]
        before = marginalised_interval(x[j], sample.marginal1d[j].numpy(),
                                       level="95").segments[-1][1]
        after = marginalised_interval(x[j], final.marginal1d[j].numpy(),
                                      level="95").segments[-1][1]
        assert end - before > 0.5 * sd, (j, end, before)
        assert abs(after - end) < 0.1 * sd, (j, end, after)


def test_heavy_weights_choose_the_tails_and_the_warnings_leave_them_out():
    """The true posterior sampled with a proposal too light on the shelf: its heaviest weights
    sit on the shelf's far side, high in x0 and, through the ridge, in x1 and x2; those tails
    are flagged. Once they are replaced the heavy_weights warning no longer names them,
    and the reconstruction is precise enough not to warn."""
    sample = _weighted_sample(_true, 3)
    heavy = sample_heavy_weights(sample, NAMES)
    assert heavy["mean_z"]["x0"] > 1.5 and heavy["mean_z"]["x1"] > 1.5  # 2.8, 4.0
    flagged = flagged_tails(sample, NAMES)
    assert {("x0", "high"), ("x1", "high")} <= set(flagged)
    assert all(side == "high" for _, side in flagged)
    assert flagged_tails(sample, NAMES, chain_flags=[("x1", "low"), ("x0", "high")]) == [
        *flagged, ("x1", "low")]
    (warning,) = assess(Diagnostics(heavy_weights=heavy))
    assert warning.figure == "heavy_weights" and set(warning.coefficients) == {
        n for n, _ in flagged}
    out = replace_tails(_true, _proposal, sample, flagged, names=NAMES,
                        config=MeanForceConfig(n_chains=128),
                        generator=torch.Generator().manual_seed(4))
    d = Diagnostics(heavy_weights=heavy, mean_force=out.to_dict(NAMES))
    assert d.replaced_tails() == set(flagged)
    assert [w.figure for w in assess(d)] == []
    only_x0 = out.to_dict(NAMES)
    only_x0["tails"] = {"x0": only_x0["tails"]["x0"]}
    (warning,) = assess(Diagnostics(heavy_weights=heavy, mean_force=only_x0))
    assert warning.figure == "heavy_weights" and "x0" not in warning.coefficients
    noisy = out.to_dict(NAMES)
    noisy["tails"]["x0"]["high"]["end_error"] = 0.3
    (warning,) = assess(Diagnostics(heavy_weights=heavy, mean_force=noisy))
    assert warning.figure == "mean_force" and warning.coefficients == ("x0",)
    round_trip = Diagnostics.from_dict(d.to_dict())
    assert round_trip.replaced_tails() == set(flagged)
    assert round_trip.mean_force["tails"]["x0"]["high"]["end_mean_force"] == pytest.approx(
        out.tails[0].end_mean_force)


def test_the_pipeline_replaces_both_tails_of_a_gaussian():
    """``when: always`` with one sweep on a correlated Gaussian: every rebuilt row keeps the
    analytic 95 % ends, the run reports its tails, and a bad tail name is a clear error."""
    cov = torch.tensor([[1.0, 0.6], [0.6, 2.0]])
    prec = torch.linalg.inv(cov)
    config = SamplerConfig.reduced().replace(
        mean_force=MeanForceConfig(n_chains=64, when="always", grid_points=12, sweeps=1))
    res = run_sampler(lambda x: -0.5 * ((x @ prec) * x).sum(-1), names=["a", "b"],
                      config=config, seed=0, progress=False)
    assert res.mean_force is not None
    assert sorted((t.name, t.side) for t in res.mean_force.tails) == [
        ("a", "high"), ("a", "low"), ("b", "high"), ("b", "low")]
    p = res.sample_result.marginal1d.double().numpy()
    x = bin_centres(res.sample_result.ranges.double(), p.shape[1]).numpy()
    for i, width in enumerate((1.0, math.sqrt(2.0))):
        (lo, hi), = marginalised_interval(x[i], p[i], level="95").segments
        assert lo == pytest.approx(-1.96 * width, abs=0.1 * width)
        assert hi == pytest.approx(1.96 * width, abs=0.1 * width)
    assert torch.equal(res.mean_force.marginal1d, res.sample_result.marginal1d)
    # one sweep: no lag to measure, and results.json says so
    tail = res.mean_force.tails[0]
    assert tail.force_inward is None and tail.end_lag == 0.0
    assert res.mean_force.to_dict(["a", "b"])["tails"][tail.name][tail.side]["force_inward"] is None
    with pytest.raises(ConfigError, match="no tail"):
        replace_tails(lambda x: -0.5 * (x**2).sum(-1), _proposal, _weighted_sample(_true, 0),
                      [("x9", "high")], names=NAMES, config=MeanForceConfig(n_chains=8),
                      generator=torch.Generator().manual_seed(0))


def test_one_coefficient_needs_no_chains():
    """With one coefficient the marginal is the target: the forces are its exact derivative
    (-c for a standard normal) and the rebuilt tails put the 95 % ends at +-1.96."""
    config = SamplerConfig.reduced().replace(
        mean_force=MeanForceConfig(n_chains=8, when="always", grid_points=10))
    res = run_sampler(lambda x: -0.5 * (x**2).sum(-1), names=["a"], config=config, seed=1,
                      progress=False)
    for tail in res.mean_force.tails:
        np.testing.assert_allclose(tail.force, -tail.grid, atol=1e-5)
        assert tail.end_error == 0.0
    p = res.sample_result.marginal1d.double().numpy()
    x = bin_centres(res.sample_result.ranges.double(), p.shape[1]).numpy()
    (lo, hi), = marginalised_interval(x[0], p[0], level="95").segments
    assert lo == pytest.approx(-1.96, abs=0.03) and hi == pytest.approx(1.96, abs=0.03)

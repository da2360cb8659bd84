"""Non-finite target values in the five sampler steps.

A ``+inf`` log-likelihood stops the step with a DataError naming one such point (in the
original coordinates, with the coefficient names); NaN and ``-inf`` count as zero density and
are counted (``nonfinite`` of every step result, ``SampleResult.n_nonfinite`` for the drawn
samples) and logged: a warning when more than ``NAN_WARNING_FRACTION`` of the points are NaN
or every point is non-finite, an info line otherwise.
"""

from __future__ import annotations

import logging
import math
import re

import pytest
import torch

from smeft_pyhf.exceptions import DataError
from smeft_pyhf.sampler.config import FlowConfig, PrescaleConfig, PretrainConfig, TrainConfig
from smeft_pyhf.sampler.flows import build_flow
from smeft_pyhf.sampler.kernels.nonfinite import (
    NAN_WARNING_FRACTION,
    CheckedTarget,
    NonFiniteCounts,
)
from smeft_pyhf.sampler.kernels.standardisation import standardise
from smeft_pyhf.sampler.pipeline import SamplerConfig, run_sampler
from smeft_pyhf.sampler.prescaling import prescale
from smeft_pyhf.sampler.pretrain import pretrain
from smeft_pyhf.sampler.profiling import ProfileConfig, profile
from smeft_pyhf.sampler.sampling import SampleConfig, sample_and_histogram
from smeft_pyhf.sampler.training import train


def reports(caplog) -> list[logging.LogRecord]:
    """The log records of the steps' non-finite reports."""
    return [r for r in caplog.records if "the target was NaN at" in r.getMessage()]


TINY = SamplerConfig(
    prescale=PrescaleConfig(n_samples=256, n_steps=20),
    flow=FlowConfig(n_blocks=2, hidden_features=8),
    pretrain=PretrainConfig(batch_size=128, epochs=1, mcmc_steps=1, burn_in_steps=2),
    train=TrainConfig(batch_size=128, n_batches=3, buffered_per_online=1, buffer_capacity=1024),
    sample=SampleConfig(n_batches=2, batch_size=4000, profile_bins_1d=8, profile_bins_2d=4),
    profile=ProfileConfig(batch_size=4000, max_steps=10, restart_sweeps=0),
    range_pilot=2048,
)


def gauss(x: torch.Tensor) -> torch.Tensor:
    return -0.5 * (x**2).sum(-1)


def where(mask: torch.Tensor, value: float, lp: torch.Tensor) -> torch.Tensor:
    return torch.where(mask, torch.full_like(lp, value), lp)


def point_in_message(err: DataError, names: tuple[str, ...]) -> dict[str, float]:
    """The ``c = (name=value, ...)`` of the error, as a dict."""
    match = re.search(r"\+inf at c = \(([^)]*)\)", str(err))
    assert match, str(err)
    pairs = dict(item.split("=") for item in match.group(1).split(", "))
    assert tuple(pairs) == names
    return {k: float(v) for k, v in pairs.items()}


def uniform_draw(dim: int):
    """Uniform proposal on the unit box: ``log q = 0``."""

    def draw(n: int, generator: torch.Generator | None = None):
        x = torch.rand(n, dim, generator=generator, dtype=torch.float64)
        return x, torch.zeros(n, dtype=torch.float64)

    return draw


# ----------------------------------------------------------------------------- +inf


def test_prescale_plus_inf_names_the_point():
    def target(x):
        return where(x[:, 0] > 1.5, math.inf, gauss(x))

    with pytest.raises(DataError) as info:
        prescale(target, 2, config=PrescaleConfig(n_samples=256, n_steps=20),
                 generator=torch.Generator().manual_seed(0), names=("ctG", "ctZ"))
    assert info.value.where == "pre-scaling"
    assert "check the likelihood" in info.value.hint
    assert point_in_message(info.value, ("ctG", "ctZ"))["ctG"] > 1.5


def test_run_sampler_stops_at_prescaling_on_plus_inf():
    def target(x):
        return where((x[:, 1] < -1.0) & (x[:, 0] > 0.0), math.inf, gauss(x))

    with pytest.raises(DataError) as info:
        run_sampler(target, names=("cA", "cB"), config=TINY, seed=0, progress=False)
    assert info.value.where == "pre-scaling"
    point = point_in_message(info.value, ("cA", "cB"))
    assert point["cB"] < -1.0 and point["cA"] > 0.0


def test_sampling_plus_inf_is_an_error():
    # +inf for a > 2: 2.3 % of the standard-normal draws of the first batch.
    def target(x):
        return where(x[:, 0] > 2.0, math.inf, gauss(x))

    def draw(n, generator=None):
        x = torch.randn(n, 2, generator=generator, dtype=torch.float64)
        return x, gauss(x) - math.log(2 * math.pi)

    with pytest.raises(DataError) as info:
        sample_and_histogram(draw, target, ranges=torch.tensor([[-4.0, 4.0]] * 2),
                             config=SampleConfig(n_batches=2, batch_size=2000),
                             generator=torch.Generator().manual_seed(1), names=("a", "b"))
    assert info.value.where == "sampling"
    assert point_in_message(info.value, ("a", "b"))["a"] > 2.0


def test_training_reports_the_point_in_original_coordinates():
    # The flow works on z = (x - 10) / 2; the error names x, not z.
    def target(x):
        return where(x[:, 0] > 11.0, math.inf, -0.5 * (((x - 10.0) / 2.0) ** 2).sum(-1))

    zlog = standardise(target, torch.full((2,), 10.0), torch.full((2,), 2.0))
    g = torch.Generator().manual_seed(0)
    flow = build_flow(2, config=FlowConfig(n_blocks=2, hidden_features=8), generator=g)
    with pytest.raises(DataError) as info:
        train(flow, zlog, config=TrainConfig(batch_size=256, n_batches=2, buffered_per_online=0),
              generator=g, names=("x", "y"))
    assert info.value.where == "training"
    assert point_in_message(info.value, ("x", "y"))["x"] > 11.0
    with pytest.raises(DataError) as info:
        pretrain(flow, zlog, torch.randn(256, 2, generator=g),
                 config=PretrainConfig(batch_size=128, epochs=1, mcmc_steps=1), generator=g,
                 names=("x", "y"))
    assert info.value.where == "pre-training"
    assert point_in_message(info.value, ("x", "y"))["x"] > 11.0


def test_profiling_plus_inf_is_an_error():
    # The sampling step sees a finite target; the optimiser climbs into the +inf region
    # a > 0.9 next to the maximum at a = 1.
    def finite(x):
        return -0.5 * ((x - 1.0) ** 2).sum(-1)

    def target(x):
        return where(x[:, 0] > 0.9, math.inf, finite(x))

    sr = sample_and_histogram(uniform_draw(2), finite, ranges=torch.tensor([[0.0, 1.0]] * 2),
                              config=SampleConfig(n_batches=1, batch_size=2000,
                                                  profile_bins_1d=4, profile_bins_2d=2),
                              generator=torch.Generator().manual_seed(2))
    with pytest.raises(DataError) as info:
        profile(target, sr, config=ProfileConfig(max_steps=20), names=("a", "b"))
    assert info.value.where == "profiling"
    assert point_in_message(info.value, ("a", "b"))["a"] > 0.9


# ----------------------------------------------------------------------------- NaN and -inf


def test_sampling_counts_nan_on_five_percent_of_the_volume(caplog):
    # Uniform draws on the unit square, NaN where a < 0.05: the NaN fraction of the drawn
    # samples is binomial with p = 0.05 over n = 100k, standard error
    # sqrt(p (1 - p) / n) = 6.9e-4; the count must lie within 4 standard errors of p.
    n_batches, batch = 4, 25_000
    cfg = SampleConfig(n_batches=n_batches, batch_size=batch, profile_bins_2d=4)
    ranges = torch.tensor([[0.0, 1.0]] * 2, dtype=torch.float64)

    def nan_target(x):
        return where(x[:, 0] < 0.05, math.nan, gauss(x))

    def neginf_target(x):
        return where(x[:, 0] < 0.05, -math.inf, gauss(x))

    with caplog.at_level(logging.INFO):
        res = sample_and_histogram(uniform_draw(2), nan_target, ranges=ranges, config=cfg,
                                   generator=torch.Generator().manual_seed(3))
    n = n_batches * batch
    p = 0.05
    se = math.sqrt(p * (1 - p) / n)
    assert abs(res.n_nonfinite / n - p) < 4 * se
    # all evaluations: the drawn samples plus the re-centred profile points
    assert res.nonfinite.n_evaluated == res.n_evaluations
    assert res.nonfinite.n_nan >= res.n_nonfinite
    assert res.nonfinite.n_neginf == 0
    [record] = reports(caplog)
    assert record.levelno == logging.WARNING and record.name == "smeft_pyhf.sampler.sampling"
    assert record.getMessage().startswith(
        f"sampling: the target was NaN at {res.nonfinite.n_nan} of {res.n_evaluations} points")
    assert p > NAN_WARNING_FRACTION

    # NaN is zero density: the same run with -inf instead gives identical results and only
    # an info line (-inf outside the support is normal).
    caplog.clear()
    with caplog.at_level(logging.INFO):
        ref = sample_and_histogram(uniform_draw(2), neginf_target, ranges=ranges, config=cfg,
                                   generator=torch.Generator().manual_seed(3))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    [record] = reports(caplog)
    assert record.levelno == logging.INFO
    assert f"and -inf at {res.nonfinite.n_nan} " in record.getMessage()
    assert ref.n_nonfinite == 0
    assert ref.nonfinite.n_neginf == res.nonfinite.n_nan
    for field in ("marginal1d", "marginal2d", "marginal1d_error", "profile1d_log_prob",
                  "profile2d_log_prob", "weight_histogram"):
        assert torch.equal(getattr(res, field), getattr(ref, field)), field
    assert (res.ess, res.log_evidence, res.best_log_prob) == (
        ref.ess, ref.log_evidence, ref.best_log_prob)
    # the marginal of a: no weight below 0.05 (bins of 1/80 = 0.0125: the first four)
    assert float(res.marginal1d[0, :4].sum()) == 0.0 and float(res.marginal1d[0, 4]) > 0


def test_finite_target_counts_nothing_and_warns_nothing(caplog):
    with caplog.at_level(logging.INFO):
        res = sample_and_histogram(uniform_draw(2), gauss, ranges=torch.tensor([[0.0, 1.0]] * 2),
                                   config=SampleConfig(n_batches=1, batch_size=5000),
                                   generator=torch.Generator().manual_seed(4))
    assert res.n_nonfinite == 0
    assert res.nonfinite == NonFiniteCounts(res.n_evaluations, 0, 0)
    assert not reports(caplog)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_prescale_treats_nan_as_zero_density():
    # Same seed, NaN or -inf on a < -1: identical pre-scaling, the counts swapped.
    cfg = PrescaleConfig(n_samples=512, n_steps=20)

    def run(value):
        return prescale(lambda x: where(x[:, 0] < -1.0, value, gauss(x)), 2, config=cfg,
                        generator=torch.Generator().manual_seed(5), init_scale=2.0)

    a, b = run(math.nan), run(-math.inf)
    assert torch.equal(a.samples, b.samples) and torch.equal(a.log_weights, b.log_weights)
    assert a.nonfinite.n_evaluated == a.n_evaluations == b.nonfinite.n_evaluated
    assert a.nonfinite.n_nan == b.nonfinite.n_neginf > 0
    assert a.nonfinite.n_neginf == b.nonfinite.n_nan == 0


@pytest.mark.parametrize(
    ("n_nan", "n_neginf", "level"),
    [
        (0, 0, None),
        (50, 0, logging.INFO),  # 0.05 % NaN: below NAN_WARNING_FRACTION
        (200, 0, logging.WARNING),  # 0.2 %
        (0, 60_000, logging.INFO),  # -inf outside the support
        (10, 99_990, logging.WARNING),  # every point non-finite
    ],
)
def test_report_levels(caplog, n_nan, n_neginf, level):
    n = 100_000
    values = torch.zeros(n)
    values[:n_nan] = math.nan
    values[n_nan:n_nan + n_neginf] = -math.inf
    checked = CheckedTarget(lambda x: values[x[:, 0].long()], step="demo")
    with caplog.at_level(logging.INFO):
        out = checked(torch.arange(n, dtype=torch.float64)[:, None])
        counts = checked.report()
    assert counts == NonFiniteCounts(n, n_nan, n_neginf)
    assert int(torch.isneginf(out).sum()) == n_nan + n_neginf
    assert [r.levelno for r in reports(caplog)] == ([] if level is None else [level])


def test_counts_survive_a_checkpoint(tmp_path):
    # NaN on a > 2 and -inf on b > 2: every step counts them; a resumed run returns the same
    # counts from the checkpoint.
    def target(x):
        lp = where(x[:, 0] > 2.0, math.nan, gauss(x))
        return where(x[:, 1] > 2.0, -math.inf, lp)

    first = run_sampler(target, names=("a", "b"), config=TINY, seed=0, progress=False,
                        checkpoint_dir=tmp_path, init_scale=2.0)
    results = (first.prescale_result, first.pretrain_result, first.train_result,
               first.sample_result, first.profile_result)
    for res in results:
        assert isinstance(res.nonfinite, NonFiniteCounts)
        assert res.nonfinite.n_evaluated > 0
    assert first.prescale_result.nonfinite.n_nan > 0
    assert first.sample_result.nonfinite.n_nan >= first.sample_result.n_nonfinite > 0
    again = run_sampler(target, names=("a", "b"), config=TINY, seed=0, progress=False,
                        checkpoint_dir=tmp_path, init_scale=2.0)
    assert set(again.resumed_steps) == {"prescale", "pretrain", "train", "sample", "profile"}
    assert again.sample_result.nonfinite == first.sample_result.nonfinite
    assert again.prescale_result.nonfinite == first.prescale_result.nonfinite

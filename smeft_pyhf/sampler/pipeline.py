"""The five steps to happiness as one call: :func:`run_sampler`.

1. pre-scaling (:func:`~smeft_pyhf.sampler.prescaling.prescale`), 2. pre-training
(:func:`~smeft_pyhf.sampler.pretrain.pretrain`), 3. training
(:func:`~smeft_pyhf.sampler.training.train`), 4. sampling
(:func:`~smeft_pyhf.sampler.sampling.sample_and_histogram`), 5. profiling
(:func:`~smeft_pyhf.sampler.profiling.profile`), with per-step timings, progress log lines and
checkpoints.

Device and dtype: the sampler runs on the device of the target (an ``nn.Module`` target's first
parameter or buffer, else ``init_mean``/``ranges``, else the CPU) in ``config.dtype`` (float32 by
default). A target whose parameters are in another dtype (the float64 likelihood) is called with
inputs cast to its dtype and outputs cast back; the profiling step runs in the target's dtype.

Randomness: step ``k`` uses a generator seeded from ``(seed, k)`` (and torch's global generator
is forked and seeded the same way while the step runs, restored afterwards), so the same seed
gives the same result on the same device and a resumed run equals an uninterrupted one.

Checkpoints: with ``checkpoint_dir`` the state after every finished step (step results, flow
weights, timings) is written atomically to ``checkpoint_dir/sampler_checkpoint.pt`` together
with a hash of the configuration, seed, names, ranges and initial scale. A later call with the
same directory and the same hash resumes after the last finished step; a different hash starts
afresh (with a warning) and overwrites the file.

Ranges: when ``ranges`` is ``None`` the histogram ranges are ``mean +- k std`` of the
pre-scaling sample with ``k = config.range_nsigma`` (default 4: 99.99% of a Gaussian marginal
inside, 80 bins of 0.1 sigma), widened where needed to reach every pre-scaling chain (plus 5 %
of their span), so a separate mode with a small weight stays inside.

Example:
    >>> import torch
    >>> from smeft_pyhf.sampler.pipeline import SamplerConfig, run_sampler
    >>> cfg = SamplerConfig.reduced()
    >>> res = run_sampler(lambda x: -0.5 * (x**2).sum(-1), names=("a", "b"), config=cfg,
    ...                   seed=1, progress=False)
    >>> sorted(res.timings)
    ['prescale', 'pretrain', 'profile', 'sample', 'train']
    >>> res.sample_result.ess_fraction > 0.5
    True

References:
    | Five steps to happiness: ML likelihood sampling for global SMEFT analyses (arXiv:2411.00942),
    | Sec. 2.2, Tables 4-5. https://arxiv.org/abs/2411.00942
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor, nn

from smeft_pyhf.cluster import TaskRunner
from smeft_pyhf.exceptions import ConfigError
from smeft_pyhf.sampler.chain_check import ChainCheck, ChainCheckConfig, check_with_chains
from smeft_pyhf.sampler.checkpoint import Checkpoint, config_hash
from smeft_pyhf.sampler.config import (
    FlowConfig,
    PrescaleConfig,
    PretrainConfig,
    TrainConfig,
    check_field,
)
from smeft_pyhf.sampler.coordinates import cover_chains, flow_coordinates, profile_covariance
from smeft_pyhf.sampler.ends import EndRefinement, refine_ends
from smeft_pyhf.sampler.flows import CouplingFlow, build_flow
from smeft_pyhf.sampler.gaps import Gap, check_gaps
from smeft_pyhf.sampler.kernels.standardisation import Standardised
from smeft_pyhf.sampler.mean_force import (
    MeanForce,
    MeanForceConfig,
    replace_tails,
    stratified_target,
    stratify,
    tails_to_replace,
)
from smeft_pyhf.sampler.prescaling import PrescaleResult, prescale
from smeft_pyhf.sampler.pretrain import PretrainResult, pretrain
from smeft_pyhf.sampler.profiling import ProfileConfig, ProfileResult, profile
from smeft_pyhf.sampler.ranges import (
    extend_to_profile,
    histogram_ranges,
    posterior_ranges,
    widen_to_flow,
)
from smeft_pyhf.sampler.sampling import SampleConfig, SampleResult, sample_and_histogram
from smeft_pyhf.sampler.seeding import StepRng, step_seed
from smeft_pyhf.sampler.training import TrainResult, train

__all__ = ["STEPS", "SamplerConfig", "SamplerResult", "run_sampler"]

log = logging.getLogger(__name__)

LogProb = Callable[[Tensor], Tensor]

STEPS: tuple[str, ...] = ("prescale", "pretrain", "train", "sample", "profile")
"""The five steps in order (keys of :attr:`SamplerResult.timings`)."""

_STEP_TITLES = {
    "prescale": "pre-scaling (annealed importance sampling)",
    "pretrain": "pre-training the flow",
    "train": "training the flow (NIS with AIS and buffer)",
    "sample": "sampling and histogramming",
    "profile": "profiling (batched L-BFGS)",
}
_STEP_SEEDS = {"prescale": 1, "pretrain": 2, "train": 3, "sample": 4, "profile": 5}
_PILOT_SEED = 6
_CHAIN_CHECK_SEED = 7
_MEAN_FORCE_SEED = 8
_FLOW_SEED = 99


@dataclass(frozen=True)
class SamplerConfig:
    """All hyperparameters of the five steps; the defaults are the paper's Table 5 ("Top").

    Attributes:
        prescale: step 1 (:class:`~smeft_pyhf.sampler.config.PrescaleConfig`).
        flow: the flow (:class:`~smeft_pyhf.sampler.config.FlowConfig`).
        pretrain: step 2 (:class:`~smeft_pyhf.sampler.config.PretrainConfig`).
        train: step 3 (:class:`~smeft_pyhf.sampler.config.TrainConfig`).
        sample: step 4 (:class:`~smeft_pyhf.sampler.sampling.SampleConfig`).
        profile: step 5 (:class:`~smeft_pyhf.sampler.profiling.ProfileConfig`).
        range_nsigma: ``k`` of the default ranges ``mean +- k std`` (pre-scaling moments),
            widened to reach every pre-scaling chain.
        dtype: floating-point type of the sampler (flow, samples, histograms).
        histogram_ranges: ``"posterior"`` (default) intersects the given ``ranges`` with the
            pre-scaling ranges (``mean +- range_nsigma * std`` and the chains' span), so the
            1D/2D bins resolve the likelihood
            even when the fit ranges (priors) are much wider; ``"given"`` bins the given ranges.
        range_pilot: after training, draw this many points from the flow and widen the
            ``"posterior"`` ranges to their weighted ``range_tail`` and ``1 - range_tail``
            quantiles (plus 5 %), within the given ranges (0: keep the pre-scaling ranges).
            The pre-scaling chains can miss a mode that the trained flow finds; the pilot
            keeps that mode inside the histograms and the profiles' start points.
        range_tail: the tail weight left outside the pilot's ranges on each side.
        whitening: ``"full"`` (default) standardises with the Cholesky factor of the weighted
            pre-scaling covariance, so the flow starts from decorrelated coordinates;
            ``"diagonal"`` uses the weighted means and widths only (the paper's pre-scaling).
        support_map: with a ``support`` box given to :func:`run_sampler`, ``"logit"`` (default)
            maps every coordinate whose posterior is pressed against a box edge through
            ``logit((x - low) / (high - low))`` before standardising
            (:class:`~smeft_pyhf.sampler.kernels.standardisation.Standardised`): the flow never draws
            outside the box, and a posterior cut off by the edge becomes a smooth tail it can
            learn. ``"none"`` leaves all coordinates affine. A coordinate counts as pressed
            when the pre-scaling sample puts more than ``support_weight`` of its weight within
            ``support_nsigma`` pre-scaling widths of an edge; the map costs flow quality
            where a posterior merely comes near an edge, so only those are mapped.
        support_nsigma: the distance to an edge, in pre-scaling widths, that counts as "at
            the edge".
        support_weight: the pre-scaling weight at the edge above which a coordinate is mapped.
        tempered_fraction: the share of the step-4 samples (and of the range pilot's) drawn from
            the trained flow with its Gaussian latent widened by ``tempered_scale``; all samples
            are then weighted by the mixture density ``(1 - f) q(x) + f q_s(x)``, where
            ``q_s(x) = q(x) N(z; 0, s^2) / N(z; 0, 1)`` at the sample's latent point ``z``. The
            wider component puts more samples where the flow's tails are too light, which
            bounds the largest weights there (0: the flow alone, as in the paper).
        tempered_scale: the latent width ``s`` of that component (> 1).
        chain_check: after step 4, Markov chains on the trained flow check that the weighted
            sample holds the right mass beyond every interval end
            (:class:`~smeft_pyhf.sampler.chain_check.ChainCheckConfig`; off by default). It
            changes no histogram and is not part of the checkpoint's hash.
        mean_force: after step 4 (and the chain check), the 1D marginal tails that the flow
            under-covers (step 4's heaviest weights sit there, or the chain check moved the
            end) are replaced by their reconstruction from the mean force
            (:class:`~smeft_pyhf.sampler.mean_force.MeanForceConfig`; off by default). Not part
            of the checkpoint's hash: the steps' results stay as they were.
    """

    prescale: PrescaleConfig = field(default_factory=PrescaleConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    profile: ProfileConfig = field(default_factory=ProfileConfig)
    range_nsigma: float = 4.0
    dtype: Literal["float32", "float64"] = "float32"
    whitening: Literal["full", "diagonal"] = "full"
    histogram_ranges: Literal["posterior", "given"] = "posterior"
    range_pilot: int = 65536
    range_tail: float = 1e-4
    support_map: Literal["logit", "none"] = "logit"
    support_nsigma: float = 0.5
    support_weight: float = 0.02
    tempered_fraction: float = 0.0
    tempered_scale: float = 1.2
    chain_check: ChainCheckConfig = field(default_factory=ChainCheckConfig)
    mean_force: MeanForceConfig = field(default_factory=MeanForceConfig)

    def __post_init__(self) -> None:
        check_field(0 <= self.tempered_fraction < 1, self, "tempered_fraction",
                    "must lie in [0, 1)")
        check_field(self.tempered_scale > 1, self, "tempered_scale", "must be > 1")
        check_field(self.range_pilot >= 0, self, "range_pilot", "must be >= 0")
        check_field(0 < self.range_tail < 0.5, self, "range_tail", "must lie in (0, 0.5)")
        check_field(self.range_nsigma > 0, self, "range_nsigma", "must be > 0")
        check_field(self.support_nsigma > 0, self, "support_nsigma", "must be > 0")
        check_field(0 < self.support_weight < 1, self, "support_weight", "must lie in (0, 1)")
        if self.support_map not in ("logit", "none"):
            raise ConfigError(f"support_map={self.support_map!r} must be 'logit' or 'none'",
                              where="SamplerConfig", hint="change support_map")
        if self.histogram_ranges not in ("posterior", "given"):
            raise ConfigError(f"histogram_ranges={self.histogram_ranges!r} must be 'posterior' "
                              "or 'given'", where="SamplerConfig", hint="change histogram_ranges")
        if self.whitening not in ("full", "diagonal"):
            raise ConfigError(f"whitening={self.whitening!r} must be 'full' or 'diagonal'",
                              where="SamplerConfig", hint="change whitening")
        if self.dtype not in ("float32", "float64"):
            raise ConfigError(f"dtype={self.dtype!r} is not supported", where="SamplerConfig",
                              hint="use 'float32' or 'float64'")

    @classmethod
    def paper(cls, sector: Literal["top", "higgs", "combined"] = "top") -> SamplerConfig:
        """The paper's Table 5 column for ``sector``.

        Example:
            >>> SamplerConfig.paper("higgs").train.n_batches
            2000
        """
        return cls(
            prescale=PrescaleConfig.paper(sector),
            flow=FlowConfig.paper(sector),
            pretrain=PretrainConfig.paper(sector),
            train=TrainConfig.paper(sector),
            sample=SampleConfig.paper(sector),
            profile=ProfileConfig.paper(sector),
        )

    @classmethod
    def reduced(cls) -> SamplerConfig:
        """A small configuration for tests, examples and CPU smoke runs (seconds, not hours).

        1024 AIS chains x 100 steps; a 4-block flow with 32 nodes; 2 pre-training epochs;
        30 training batches of 512; 4 x 20k samples with 10x10 2D profile bins; 50 L-BFGS steps.
        """
        return cls(
            prescale=PrescaleConfig(n_samples=1024, n_steps=100),
            flow=FlowConfig(n_blocks=4, hidden_features=32),
            pretrain=PretrainConfig(batch_size=256, epochs=2, mcmc_steps=5, burn_in_steps=10),
            train=TrainConfig(batch_size=512, n_batches=30, buffered_per_online=3,
                              buffer_capacity=16384),
            sample=SampleConfig(n_batches=4, batch_size=20_000, profile_bins_2d=10),
            profile=ProfileConfig(batch_size=20_000, max_steps=50),
        )

    def replace(self, **changes: Any) -> SamplerConfig:
        """A copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (JSON-serialisable) of all fields."""
        return dataclasses.asdict(self)


class SamplerResult(NamedTuple):
    """Everything :func:`run_sampler` produced: the five step results and the run's figures.

    The histograms, profiles, ESS and evidence live in the step results:
    ``sample_result.ranges``/``marginal1d``/``marginal2d``/``ess``/``log_evidence`` (step 4),
    ``profile_result.profile1d``/``profile2d``/``best_fit``/``best_log_prob`` (step 5),
    ``prescale_result.mean``/``std`` (step 1).

    Attributes:
        names: coefficient names, in the order of the coordinates.
        config: the :class:`SamplerConfig` used.
        seed: the seed.
        prescale_result: step 1 result (pre-scaling moments, chains and weights).
        pretrain_result: step 2 result.
        train_result: step 3 result (ESS history).
        sample_result: step 4 result (histograms, ESS, evidence, profile start points), its
            1D marginals' tails replaced where ``mean_force`` did (and, with
            ``config.mean_force.stratify``, every other marginal weighted again by them).
        profile_result: step 5 result (profiles, best fit, bin centres).
        flow: the trained flow (standardised coordinates).
        timings: seconds per step (keys :data:`STEPS`; resumed steps keep their first timing).
        resumed_steps: steps taken from a checkpoint instead of being run.
        gaps: every gap of a profiled 95 % interval, judged by a direct constrained
            maximisation (:func:`~smeft_pyhf.sampler.gaps.check_gaps`); ``profile_result``
            already carries the bins it raised.
        ends: the re-maximisation of the profile bins beside the 68/95 % interval ends
            (:func:`~smeft_pyhf.sampler.ends.refine_ends`); ``profile_result`` carries the
            bins it raised.
        chain_check: the Markov-chain check of step 4's interval ends
            (:func:`~smeft_pyhf.sampler.chain_check.check_with_chains`), or None when
            ``config.chain_check.n_chains`` is 0.
        mean_force: the 1D marginal tails replaced by their mean-force reconstruction
            (:func:`~smeft_pyhf.sampler.mean_force.replace_tails`, with step 4's weighted
            histograms as they were), or None when no tail was replaced.
    """

    names: tuple[str, ...]
    config: SamplerConfig
    seed: int
    prescale_result: PrescaleResult
    pretrain_result: PretrainResult
    train_result: TrainResult
    sample_result: SampleResult
    profile_result: ProfileResult
    flow: nn.Module
    timings: dict[str, float]
    resumed_steps: tuple[str, ...]
    gaps: tuple[Gap, ...] = ()
    ends: EndRefinement | None = None
    chain_check: ChainCheck | None = None
    mean_force: MeanForce | None = None


def run_sampler(
    log_prob: LogProb,
    *,
    names: Sequence[str],
    ranges: Tensor | None = None,
    config: SamplerConfig | None = None,
    seed: int = 0,
    checkpoint_dir: str | Path | None = None,
    progress: bool = True,
    init_scale: float | Tensor = 1.0,
    init_mean: Tensor | None = None,
    support: Tensor | None = None,
    runner: TaskRunner | None = None,
) -> SamplerResult:
    """Run the five steps on ``log_prob`` and return histograms, profiles, ESS and timings.

    One function because it is the sampler's documented entry point and reads as the five
    steps in order: its body only calls each step's function (``prescale``, ``pretrain``,
    ``train``, ``sample_and_histogram``, ``profile``, then ``refine_ends`` and ``check_gaps``, with the
    optional ``check_with_chains`` and ``replace_tails`` after step 4)
    through the checkpointing step runner; most of its length is this docstring.

    Args:
        log_prob: the target ``log L(x)``, ``(B, d) -> (B,)``, batched and differentiable
            (unnormalised is fine). Put it on the device you want the sampler to run on.
        names: the ``d`` coefficient names.
        ranges: (d, 2) histogram ranges; ``None``: ``mean +- config.range_nsigma * std`` of the
            pre-scaling sample.
        config: the :class:`SamplerConfig` (default: the paper's Table 5, "Top").
        seed: the seed of every random step.
        checkpoint_dir: folder for checkpoints (created if missing); resumes a matching run.
        progress: log progress at INFO level (otherwise DEBUG).
        init_scale: width of the pre-scaling Gaussian base (scalar or (d,)); widen it for
            well-separated modes (the paper's Gaussian mixture with ``d = 10``).
        init_mean: centre of the pre-scaling base (default zeros).
        support: (d, 2) box outside which the target vanishes (a flat prior), or None. With
            ``config.support_map == "logit"`` the flow draws only inside it (see
            :class:`SamplerConfig`).
        runner: where the tasks of steps 4 and 5 run (default: in this process; a
            :class:`~smeft_pyhf.cluster.DaskRunner` sends the flow with its weights and the
            target to its workers once, pickled). The result does not depend on it.

    Returns:
        A :class:`SamplerResult`.

    Raises:
        ConfigError: bad ``names``/``ranges`` shapes, or a failing step (e.g. a target that is
            ``-inf`` everywhere the pre-scaling looked).
        DataError: the target is ``+inf`` at a point some step evaluated; the message names
            the step and the point ``c = (name=value, ...)``. NaN and ``-inf`` values count
            as zero density; every step logs how many there were (a warning above
            :data:`~smeft_pyhf.sampler.kernels.nonfinite.NAN_WARNING_FRACTION` NaN) and keeps the
            counts in its result's ``nonfinite`` field.

    Example:
        >>> import torch
        >>> res = run_sampler(lambda x: -0.5 * ((x - 1.0) ** 2).sum(-1), names=["c1"],
        ...                   config=SamplerConfig.reduced(), seed=0, progress=False)
        >>> abs(float(res.profile_result.best_fit[0]) - 1.0) < 1e-3
        True
    """
    config = config or SamplerConfig()
    level = logging.INFO if progress else logging.DEBUG
    setup = _setup(log_prob, names, ranges, config, init_scale, init_mean)
    names, dtype, target = setup.names, setup.dtype, setup.target
    checkpoint = _open_checkpoint(checkpoint_dir, config, seed, setup, init_scale=init_scale,
                                  init_mean=init_mean, support=support, level=level)
    resumed = tuple(checkpoint.done)
    flow = _build_flow(len(names), config.flow, seed, setup.device, dtype, checkpoint.flow_state)
    steps = _Steps(checkpoint, seed, setup.device, level, flow)

    # 1. pre-scaling, then the flow's coordinates and the histogram ranges
    res1 = steps.run("prescale", lambda gen: prescale(
        target, len(names), config=config.prescale, generator=gen, init_scale=setup.scale0,
        init_mean=setup.mean0, names=names))
    zlog = flow_coordinates(target, res1, whitening=config.whitening, support=support,
                            support_map=config.support_map,
                            support_nsigma=config.support_nsigma,
                            support_weight=config.support_weight, dtype=dtype, names=names,
                            level=level)
    chains = res1.samples[torch.isfinite(res1.log_weights)].to(dtype)  # the live chains
    if config.flow.adaptive_bound:
        cover_chains(flow, zlog, chains, level)
    ranges = histogram_ranges(setup.ranges, posterior_ranges(
        chains, res1.mean.to(dtype), res1.std.to(dtype), config.range_nsigma),
        config.histogram_ranges)

    # 2. pre-training
    steps.run("pretrain", lambda gen: pretrain(
        flow, zlog, zlog.to_standardised(res1.samples.to(dtype)), config=config.pretrain,
        generator=gen, log_weights=res1.log_weights, names=names,
        callback=_progress_callback("pre-training", _n_pretrain_steps(
            config.pretrain, res1.samples.shape[0]), level)))

    # 3. training
    n_train = ((config.train.n_batches + config.train.final_batches)
               * (1 + config.train.buffered_per_online))
    steps.run("train", lambda gen: train(
        flow, zlog, config=config.train, generator=gen, names=names,
        callback=_progress_callback("training", n_train, level)))

    # 4. sampling (after a pilot sample that widens the ranges to the flow's reach)
    flow.eval()
    draw = _flow_sampler(flow, zlog, tempered_fraction=config.tempered_fraction,
                         tempered_scale=config.tempered_scale)
    cov = profile_covariance(zlog, res1, whitening=config.whitening, dtype=dtype)
    res4 = steps.run("sample", lambda gen: sample_and_histogram(
        draw, target, ranges=_sample_ranges(draw, log_prob, chains, cov, setup, ranges, config,
                                            seed, level, support),
        config=config.sample, generator=gen, names=names, runner=runner))

    # the Markov-chain check of the interval ends (no step depends on it)
    chains_checked = None
    if config.chain_check.n_chains > 0:
        with StepRng(seed, _CHAIN_CHECK_SEED, setup.device) as generator:
            chains_checked = check_with_chains(flow, zlog, res4, config=config.chain_check,
                                               generator=generator, names=names, level=level)
    # the tails the flow under-covers, from their mean force
    forced = None
    tails = tails_to_replace(config.mean_force, res4, names, chain_flags=(
        chains_checked.flagged() if chains_checked is not None else ()))
    final4 = res4
    if tails:
        with StepRng(seed, _MEAN_FORCE_SEED, setup.device) as generator:
            forced = replace_tails(log_prob, draw, res4, tails, names=names,
                                   config=config.mean_force, generator=generator,
                                   dtype=setup.target_dtype, level=level)
        final4 = res4._replace(marginal1d=forced.marginal1d,
                               marginal1d_error=forced.marginal1d_error)
        if forced.tails and config.mean_force.stratify:
            # step 4's own draws (its seed) weighted again by the rebuilt marginals
            t0 = time.perf_counter()
            with StepRng(seed, _STEP_SEEDS["sample"], setup.device) as generator:
                again = sample_and_histogram(
                    draw, stratified_target(target, res4, forced, names), ranges=res4.ranges,
                    config=config.sample, generator=generator, names=names, runner=runner)
            final4 = stratify(res4, forced, again, names)
            log.log(level, "step 4's draws weighted again by the rebuilt marginals in %.1f s",
                    time.perf_counter() - t0)

    # 5. profiling, in the target's dtype
    res5 = steps.run("profile", lambda _gen: profile(
        log_prob, _cast_floats(res4, setup.target_dtype), config=config.profile,
        covariance=cov.to(setup.target_dtype), names=names, runner=runner))
    # the bins at the interval ends maximised to convergence, then every gap judged: a second
    # minimum or bins that stopped short?
    ends = refine_ends(log_prob, res5, names, config=config.profile,
                       covariance=cov.to(setup.target_dtype), level_log=level)
    checked = check_gaps(log_prob, ends.profile, names, config=config.profile,
                         covariance=cov.to(setup.target_dtype), level_log=level)

    timings = {s: float(checkpoint.timings[s]) for s in STEPS}
    log.log(level, "sampler finished: %s; ESS/N %.4f of %d samples",
            ", ".join(f"{s} {timings[s]:.1f} s" for s in STEPS), res4.ess_fraction,
            res4.n_samples)
    return SamplerResult(
        names=names,
        config=config,
        seed=int(seed),
        prescale_result=res1,
        pretrain_result=checkpoint.results["pretrain"],
        train_result=checkpoint.results["train"],
        sample_result=final4,
        profile_result=checked.profile,
        flow=flow,
        timings=timings,
        resumed_steps=resumed,
        gaps=checked.gaps,
        ends=ends,
        chain_check=chains_checked,
        mean_force=forced,
    )


class _Setup(NamedTuple):
    """The checked inputs of :func:`run_sampler`."""

    names: tuple[str, ...]
    device: torch.device
    dtype: torch.dtype  # the sampler's
    target_dtype: torch.dtype  # the target's parameters'
    target: LogProb  # the target called in the sampler's dtype
    ranges: Tensor | None  # the given ranges, on the device in the sampler's dtype
    mean0: Tensor
    scale0: float | Tensor


def _reference_tensor(log_prob: LogProb) -> Tensor | None:
    if isinstance(log_prob, nn.Module):
        for t in log_prob.parameters():
            return t
        for t in log_prob.buffers():
            if t.is_floating_point():
                return t
        for t in log_prob.buffers():
            return t
    return None


def _setup(log_prob: LogProb, names: Sequence[str], ranges: Tensor | None,
           config: SamplerConfig, init_scale: float | Tensor,
           init_mean: Tensor | None) -> _Setup:
    """Names, device and dtypes checked and chosen; the target cast to the sampler's dtype."""
    names = tuple(str(n) for n in names)
    dim = len(names)
    if dim < 1 or len(set(names)) != dim:
        raise ConfigError(f"need at least one unique coefficient name, got {names!r}",
                          where="run_sampler", hint="pass distinct names, one per coordinate")
    dtype = getattr(torch, config.dtype)
    ref = _reference_tensor(log_prob)
    if ref is not None:
        device = ref.device
    elif isinstance(init_mean, Tensor):
        device = init_mean.device
    elif isinstance(ranges, Tensor):
        device = ranges.device
    else:
        device = torch.device("cpu")
    target_dtype = ref.dtype if ref is not None and ref.is_floating_point() else dtype
    if ranges is not None:
        ranges = torch.as_tensor(ranges).to(device=device, dtype=dtype)
        if ranges.shape != (dim, 2) or not bool((ranges[:, 1] > ranges[:, 0]).all()):
            raise ConfigError(f"ranges must have shape ({dim}, 2) with low < high",
                              where="run_sampler", hint="one (low, high) per name")

    if target_dtype == dtype:
        target = log_prob
    else:
        def target(x: Tensor) -> Tensor:
            return log_prob(x.to(target_dtype)).to(x.dtype)

    mean0 = (torch.zeros(dim, device=device, dtype=dtype) if init_mean is None
             else torch.as_tensor(init_mean).to(device=device, dtype=dtype))
    scale0 = (init_scale.to(device=device, dtype=dtype) if isinstance(init_scale, Tensor)
              else float(init_scale))
    return _Setup(names, device, dtype, target_dtype, target, ranges, mean0, scale0)


def _open_checkpoint(folder: str | Path | None, config: SamplerConfig, seed: int,
                     setup: _Setup, *, init_scale: float | Tensor, init_mean: Tensor | None,
                     support: Tensor | None, level: int) -> Checkpoint:
    """The run's checkpoint: resumed when ``folder`` holds one of the same configuration."""
    settings = config.to_dict()
    settings.pop("chain_check")  # these run after step 4 on its results: no step depends on them
    settings.pop("mean_force")
    key = config_hash(settings, seed=seed, names=setup.names, ranges=setup.ranges,
                      init_scale=init_scale, init_mean=init_mean, device=setup.device,
                      support=support)
    checkpoint = Checkpoint.open(folder, key, setup.device)
    if checkpoint.done:
        log.log(level, "resuming from %s after step(s): %s", checkpoint.path,
                ", ".join(checkpoint.done))
    return checkpoint


def _pilot_ranges(draw: Callable[[int, torch.Generator], tuple[Tensor, Tensor]],
                  setup: _Setup, ranges: Tensor, config: SamplerConfig, seed: int,
                  level: int) -> Tensor:
    """``ranges`` widened to a pilot sample of the trained flow (its own seeded generator),
    unless ``config.range_pilot`` is 0 or the given ranges are binned as they are."""
    if config.range_pilot <= 0 or (setup.ranges is not None
                                   and config.histogram_ranges != "posterior"):
        return ranges
    with StepRng(seed, _PILOT_SEED, setup.device) as generator:
        return widen_to_flow(draw, setup.target, ranges, setup.ranges, n=config.range_pilot,
                             tail=config.range_tail, chunk=config.sample.eval_chunk,
                             generator=generator, level=level, names=setup.names)


def _sample_ranges(draw: Callable[[int, torch.Generator], tuple[Tensor, Tensor]],
                   log_prob: LogProb, chains: Tensor, cov: Tensor, setup: _Setup,
                   ranges: Tensor, config: SamplerConfig, seed: int, level: int,
                   support: Tensor | None) -> Tensor:
    """The ranges of step 4: widened to the pilot sample (:func:`_pilot_ranges`), then each end
    moved out where the profile there is still inside the 95 % region
    (:func:`~smeft_pyhf.sampler.ranges.extend_to_profile`), under the same conditions."""
    wider = _pilot_ranges(draw, setup, ranges, config, seed, level)
    if config.range_pilot <= 0 or (setup.ranges is not None
                                   and config.histogram_ranges != "posterior"):
        return wider
    given = setup.ranges if setup.ranges is not None else support
    dt = setup.target_dtype
    given = None if given is None else given.to(device=wider.device, dtype=dt)
    out = extend_to_profile(log_prob, wider.to(dt), given, chains.to(dt), config=config.profile,
                            covariance=cov.to(dt), level=level, names=setup.names)
    return out.to(wider)


def _build_flow(dim: int, config: FlowConfig, seed: int, device: torch.device,
                dtype: torch.dtype, state: dict[str, Tensor] | None) -> CouplingFlow:
    """The flow, initialised from its own seeded CPU generator (or a checkpoint's weights)."""
    with StepRng(seed, _FLOW_SEED, device):
        flow_gen = torch.Generator().manual_seed(step_seed(seed, _FLOW_SEED))
        flow = build_flow(dim, config=config, generator=flow_gen).to(device=device, dtype=dtype)
    if state is not None:
        flow.load_state_dict(state)
    return flow


class _Steps:
    """Runs the steps of one :func:`run_sampler` call: each with its seeded generator, timed,
    logged and checkpointed, or taken from the checkpoint when it finished before."""

    def __init__(self, checkpoint: Checkpoint, seed: int, device: torch.device, level: int,
                 flow: nn.Module) -> None:
        self.checkpoint = checkpoint
        self.seed = seed
        self.device = device
        self.level = level
        self.flow = flow

    def run(self, step: str, fn: Callable[[torch.Generator], Any]) -> Any:
        """``fn(generator)``, or the checkpoint's result of ``step``."""
        k = STEPS.index(step) + 1
        if step in self.checkpoint.done:
            log.log(self.level, "[%d/5] %s: taken from the checkpoint", k, step)
            return self.checkpoint.results[step]
        log.log(self.level, "[%d/5] %s ...", k, _STEP_TITLES[step])
        t0 = time.perf_counter()
        with StepRng(self.seed, _STEP_SEEDS[step], self.device) as gen:
            result = fn(gen)
        seconds = time.perf_counter() - t0
        log.log(self.level, "[%d/5] %s: done in %.1f s", k, step, seconds)
        self.checkpoint.record(step, result, seconds, flow_state={
            name: v.detach().clone() for name, v in self.flow.state_dict().items()})
        return result


def _flow_sampler(flow: CouplingFlow, zlog: Standardised, *, tempered_fraction: float = 0.0,
                  tempered_scale: float = 1.2,
                  ) -> Callable[[int, torch.Generator], tuple[Tensor, Tensor]]:
    """``(n, generator) -> (x, log q(x))``: flow samples in the original coordinates; with a
    ``tempered_fraction`` the last ``round(f n)`` rows come from a latent widened by
    ``tempered_scale`` and ``q`` is the mixture density (see :class:`SamplerConfig`)."""
    ref = next(flow.parameters())
    f, s = float(tempered_fraction), float(tempered_scale)

    def draw(n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            if f <= 0:
                z, log_q = flow.sample_and_log_prob(n, generator=generator)
            else:
                noise = torch.randn((n, flow.dim), generator=generator, device=ref.device,
                                    dtype=ref.dtype)
                noise[n - round(f * n):] *= s
                z, log_q = flow.sample_from_noise(noise)
                r2 = (noise * noise).sum(-1)
                log_wide = log_q + 0.5 * r2 * (1.0 - 1.0 / s**2) - flow.dim * math.log(s)
                log_q = torch.logaddexp(math.log1p(-f) + log_q, math.log(f) + log_wide)
        return zlog.to_original(z), log_q - zlog.log_det(z)

    return draw


def _cast_floats(result: Any, dtype: torch.dtype) -> Any:
    """A NamedTuple with its floating-point tensors cast to ``dtype``."""
    changes = {k: v.to(dtype) for k, v in result._asdict().items()
               if isinstance(v, Tensor) and v.is_floating_point()}
    return result._replace(**changes)


def _progress_callback(step: str, total: int, level: int) -> Callable[[Any], None]:
    every = max(1, total // 10)
    start = time.perf_counter()

    def callback(status: Any) -> None:
        k = int(status.step) + 1
        if k % every == 0 or k == total:
            extra = ""
            ess = getattr(status, "ess", None)
            if ess is not None:
                extra = f", ESS/N {ess:.3f}"
            log.log(level, "  %s: step %d/%d, loss %.4g%s (%.1f s)", step, k, total,
                    float(status.loss), extra, time.perf_counter() - start)

    return callback


def _n_pretrain_steps(config: PretrainConfig, n_available: int) -> int:
    n = config.n_samples or n_available
    return max(1, config.epochs * math.ceil(n / config.batch_size))

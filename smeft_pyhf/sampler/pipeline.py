"""The five steps to happiness as one call: :func:`run_sampler`.

1. pre-scaling (:func:`~smeft_pyhf.sampler.annealing.prescale`), 2. pre-training
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
    >>> res.ess_fraction > 0.5
    True

References:
    | Five steps to happiness: ML likelihood sampling for global SMEFT analyses (arXiv:2411.00942),
    | Sec. 2.2, Tables 4-5. https://arxiv.org/abs/2411.00942
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from smeft_pyhf._io import load_tensors, save_tensors
from smeft_pyhf.cluster import TaskRunner
from smeft_pyhf.exceptions import ConfigError
from smeft_pyhf.sampler.annealing import (
    CheckedTarget,
    NonFiniteCounts,
    PrescaleResult,
    Standardised,
    prescale,
    standardise,
    unbounded,
    weighted_cholesky,
)
from smeft_pyhf.sampler.config import (
    FlowConfig,
    PrescaleConfig,
    PretrainConfig,
    TrainConfig,
    check_field,
)
from smeft_pyhf.sampler.flows import build_flow
from smeft_pyhf.sampler.pretrain import PretrainResult, pretrain
from smeft_pyhf.sampler.profiling import ProfileConfig, ProfileResult, profile
from smeft_pyhf.sampler.sampling import (
    SampleConfig,
    SampleResult,
    evaluate_in_chunks,
    sample_and_histogram,
)
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
_RESULT_TYPES: dict[str, type] = {
    "PrescaleResult": PrescaleResult,
    "PretrainResult": PretrainResult,
    "TrainResult": TrainResult,
    "SampleResult": SampleResult,
    "ProfileResult": ProfileResult,
    "NonFiniteCounts": NonFiniteCounts,
}
_CHECKPOINT = "sampler_checkpoint.pt"
_FORMAT = 1


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
            The pre-scaling chains can miss a mode that the trained flow finds: on the whole
            LHC_NLO_QUAD_GLOB selection (reduced CPU settings) the positive cpt mode lay beyond
            every chain, so 14 % of the flow's weight fell outside the histograms, and every
            profile started in the other mode, 0.45 in log L below the global maximum.
        range_tail: the tail weight left outside the pilot's ranges on each side.
        whitening: ``"full"`` (default) standardises with the Cholesky factor of the weighted
            pre-scaling covariance, so the flow starts from decorrelated coordinates;
            ``"diagonal"`` uses the weighted means and widths only (the paper's pre-scaling).
        support_map: with a ``support`` box given to :func:`run_sampler`, ``"logit"`` (default)
            maps every coordinate whose posterior is pressed against a box edge through
            ``logit((x - low) / (high - low))`` before standardising
            (:class:`~smeft_pyhf.sampler.annealing.Standardised`): the flow never draws
            outside the box, and a posterior cut off by the edge becomes a smooth tail it can
            learn. ``"none"`` leaves all coordinates affine. A coordinate counts as pressed
            when the pre-scaling sample puts more than ``support_weight`` of its weight within
            ``support_nsigma`` pre-scaling widths of an edge; the map costs flow quality
            where a posterior merely comes near an edge, so only those are mapped.
        support_nsigma: the distance to an edge, in pre-scaling widths, that counts as "at
            the edge".
        support_weight: the pre-scaling weight at the edge above which a coordinate is mapped.
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

    def __post_init__(self) -> None:
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
    """Everything :func:`run_sampler` produced.

    Attributes:
        names: coefficient names, in the order of the coordinates.
        ranges: (d, 2) histogram ranges.
        pairs: (P, 2) coefficient index pairs of the 2D arrays.
        marginal1d: (d, bins_1d) marginal probabilities per bin.
        marginal2d: (P, bins_2d, bins_2d).
        profile1d: (d, profile_bins_1d) profile ``log L`` at the bin centres.
        profile2d: (P, profile_bins_2d, profile_bins_2d).
        ess: effective sample size of step 4.
        ess_fraction: ``ess / n_samples``.
        n_samples: samples drawn in step 4.
        timings: seconds per step (keys :data:`STEPS`; resumed steps keep their first timing).
        best_fit: (d,) the global maximum of ``log L`` found.
        best_log_prob: ``log L`` there.
        log_evidence: ``log`` of the integral of ``L`` (step 4 estimate).
        configs: the :class:`SamplerConfig` used.
        seed: the seed.
        mean: (d,) pre-scaling mean.
        std: (d,) pre-scaling standard deviation.
        prescale_result: step 1 result.
        pretrain_result: step 2 result.
        train_result: step 3 result.
        sample_result: step 4 result (histogram errors, profile start points, weights).
        profile_result: step 5 result (argmax points, sampled profiles, bin centres).
        flow: the trained flow (standardised coordinates).
        resumed_steps: steps taken from a checkpoint instead of being run.
    """

    names: tuple[str, ...]
    ranges: Tensor
    pairs: Tensor
    marginal1d: Tensor
    marginal2d: Tensor
    profile1d: Tensor
    profile2d: Tensor
    ess: float
    ess_fraction: float
    n_samples: int
    timings: dict[str, float]
    best_fit: Tensor
    best_log_prob: float
    log_evidence: float
    configs: SamplerConfig
    seed: int
    mean: Tensor
    std: Tensor
    prescale_result: PrescaleResult
    pretrain_result: PretrainResult
    train_result: TrainResult
    sample_result: SampleResult
    profile_result: ProfileResult
    flow: nn.Module
    resumed_steps: tuple[str, ...]


# ----------------------------------------------------------------------------- helpers


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


def _step_seed(seed: int, step: int) -> int:
    return int(np.random.SeedSequence([int(seed), step]).generate_state(1, dtype=np.uint32)[0])


class _StepRng:
    """A generator for step ``k`` plus a forked, seeded global torch RNG while the step runs."""

    def __init__(self, seed: int, step: int, device: torch.device) -> None:
        self.seed = _step_seed(seed, step)
        self.device = device
        self.generator = torch.Generator(device=device).manual_seed(self.seed)
        self._fork = None

    def __enter__(self) -> torch.Generator:
        devices = [self.device] if self.device.type == "cuda" else []
        self._fork = torch.random.fork_rng(devices=devices)
        self._fork.__enter__()
        torch.manual_seed(self.seed)
        return self.generator

    def __exit__(self, *exc: object) -> None:
        assert self._fork is not None
        self._fork.__exit__(*exc)


def _config_hash(config: SamplerConfig, *, seed: int, names: Sequence[str],
                 ranges: Tensor | None, init_scale: float | Tensor,
                 init_mean: Tensor | None, device: torch.device,
                 support: Tensor | None = None) -> str:
    def plain(t: Any) -> Any:
        if isinstance(t, Tensor):
            return [float(v) for v in t.detach().reshape(-1).cpu().tolist()]
        return t

    payload = {
        "format": _FORMAT,
        "config": config.to_dict(),
        "seed": int(seed),
        "names": list(names),
        "ranges": plain(ranges),
        "init_scale": plain(init_scale),
        "init_mean": plain(init_mean),
        "device": device.type,
    }
    if support is not None:
        payload["support"] = plain(support)
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    save_tensors(path, state)


def _load_checkpoint(path: Path, device: torch.device) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return load_tensors(path, types=_RESULT_TYPES, map_location=device)
    except (ValueError, TypeError) as err:  # a damaged or foreign file: start afresh
        log.warning("ignoring unreadable checkpoint %s (%s)", path, err)
        return None


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


# ----------------------------------------------------------------------------- the pipeline


def _reach(low: Tensor, high: Tensor, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
    """``[low, high]`` widened to ``[lo, hi]`` plus 5 % of its span on each side."""
    pad = 0.05 * (hi - lo)
    return torch.minimum(low, lo - pad), torch.maximum(high, hi + pad)


def _posterior_ranges(chains: Tensor, mean: Tensor, std: Tensor, k: float) -> Tensor:
    """``mean +- k std``, widened to every pre-scaling chain (plus 5 %), so that a second mode
    with a small weight is not cut off (the top fit's positive cpt mode was)."""
    low, high = mean - k * std, mean + k * std
    if chains.shape[0]:
        low, high = _reach(low, high, chains.min(0).values, chains.max(0).values)
    return torch.stack([low, high], dim=1)


def _weighted_quantiles(x: Tensor, log_w: Tensor, q: Tensor) -> Tensor:
    """(d, len(q)) weighted quantiles of every column of ``x`` (n, d)."""
    w = torch.softmax(log_w.to(torch.float64), 0)
    xs, order = x.to(torch.float64).sort(dim=0)
    cw = w[order].cumsum(0).T.contiguous()  # (d, n)
    idx = torch.searchsorted(cw, q.to(cw).expand(x.shape[1], -1).contiguous())
    return xs.T.gather(1, idx.clamp_max(x.shape[0] - 1))


def _widen_to_flow(draw: Callable[[int, torch.Generator], tuple[Tensor, Tensor]],
                   target: LogProb, ranges: Tensor, given: Tensor | None, *, n: int,
                   tail: float, chunk: int, generator: torch.Generator,
                   level: int, names: Sequence[str] | None = None) -> Tensor:
    """``ranges`` widened to the weighted ``tail`` quantiles of ``n`` flow samples (+5 %)."""
    x, log_q = draw(n, generator)
    checked = CheckedTarget(target, step="sampling (range pilot)", names=names, logger=log)
    log_w = (evaluate_in_chunks(checked, x, chunk) - log_q).to(torch.float64)
    checked.report()
    ok = torch.isfinite(log_w)
    if int(ok.sum()) < 2:
        return ranges
    q = _weighted_quantiles(x[ok], log_w[ok], torch.tensor([tail, 1.0 - tail]))
    q = q.to(ranges)
    low, high = _reach(ranges[:, 0], ranges[:, 1], q[:, 0], q[:, 1])
    if given is not None:
        low, high = torch.maximum(low, given[:, 0]), torch.minimum(high, given[:, 1])
    wider = torch.stack([low, high], dim=1)
    moved = (wider - ranges).abs().amax(dim=1) > 0
    if bool(moved.any()):
        log.log(level, "histogram ranges widened to the flow's weighted samples for %d "
                "coefficient(s)", int(moved.sum()))
    return wider


def _cover_prescale_samples(flow: Any, zlog: Any, chains: Tensor, level: int) -> None:
    """Widen the flow's spline domain to cover every pre-scaling chain (25 % margin)."""
    z = zlog.to_standardised(chains)
    reach = float(z.abs().max()) if z.numel() else 0.0
    bound = max(flow.config.bound, float(math.ceil(1.25 * reach)))
    if bound > flow.config.bound:
        log.log(level, "flow: spline domain widened from +-%g to +-%g to cover the pre-scaling "
                "samples (largest |z| %.2f)", flow.config.bound, bound, reach)
        flow.set_bound(bound)


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
            :data:`~smeft_pyhf.sampler.annealing.NAN_WARNING_FRACTION` NaN) and keeps the
            counts in its result's ``nonfinite`` field.

    Example:
        >>> import torch
        >>> res = run_sampler(lambda x: -0.5 * ((x - 1.0) ** 2).sum(-1), names=["c1"],
        ...                   config=SamplerConfig.reduced(), seed=0, progress=False)
        >>> abs(float(res.best_fit[0]) - 1.0) < 1e-3
        True
    """
    config = config or SamplerConfig()
    names = tuple(str(n) for n in names)
    dim = len(names)
    if dim < 1 or len(set(names)) != dim:
        raise ConfigError(f"need at least one unique coefficient name, got {names!r}",
                          where="run_sampler", hint="pass distinct names, one per coordinate")
    level = logging.INFO if progress else logging.DEBUG
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

    # checkpoint state
    state: dict[str, Any] = {"format": _FORMAT, "done": [], "results": {}, "timings": {},
                             "flow_state": None}
    path: Path | None = None
    resumed: list[str] = []
    if checkpoint_dir is not None:
        folder = Path(checkpoint_dir)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / _CHECKPOINT
        key = _config_hash(config, seed=seed, names=names, ranges=ranges,
                           init_scale=init_scale, init_mean=init_mean, device=device,
                           support=support)
        state["hash"] = key
        old = _load_checkpoint(path, device)
        if old is not None and old.get("hash") == key and old.get("format") == _FORMAT:
            state = old
            resumed = list(old["done"])
            log.log(level, "resuming from %s after step(s): %s", path, ", ".join(resumed))
        elif old is not None:
            log.warning("checkpoint %s belongs to another configuration; starting afresh", path)

    with _StepRng(seed, 99, device):  # flow weights: from their own CPU generator
        flow_gen = torch.Generator().manual_seed(_step_seed(seed, 99))
        flow = build_flow(dim, config=config.flow, generator=flow_gen).to(device=device,
                                                                          dtype=dtype)
    if state["flow_state"] is not None:
        flow.load_state_dict(state["flow_state"])

    def finish(step: str, result: Any, seconds: float) -> None:
        state["done"].append(step)
        state["results"][step] = result
        state["timings"][step] = seconds
        state["flow_state"] = {k: v.detach().clone() for k, v in flow.state_dict().items()}
        log.log(level, "[%d/5] %s: done in %.1f s", STEPS.index(step) + 1, step, seconds)
        if path is not None:
            _save_checkpoint(path, state)

    def begin(step: str) -> bool:
        if step in state["done"]:
            log.log(level, "[%d/5] %s: taken from the checkpoint", STEPS.index(step) + 1,
                    step)
            return False
        log.log(level, "[%d/5] %s ...", STEPS.index(step) + 1, _STEP_TITLES[step])
        return True

    results = state["results"]

    # 1. pre-scaling
    if begin("prescale"):
        t0 = time.perf_counter()
        with _StepRng(seed, 1, device) as gen:
            res1 = prescale(target, dim, config=config.prescale, generator=gen,
                            init_scale=scale0, init_mean=mean0, names=names)
        finish("prescale", res1, time.perf_counter() - t0)
    res1 = results["prescale"]
    mean, std = res1.mean.to(dtype), res1.std.to(dtype)
    zlog = _coordinates(target, res1, config, support, dtype, level, names)
    log_det = zlog.log_det
    # the profiles' L-BFGS preconditioner: the pre-scaling covariance in the original coordinates
    if config.whitening != "full":
        cov = torch.diag(std * std)
    elif zlog.bounded is None:
        cov = zlog.factor @ zlog.factor.T
    else:
        cov = _weighted_covariance(res1.samples.to(torch.float64), res1.log_weights).to(dtype)
    chains = res1.samples[torch.isfinite(res1.log_weights)].to(dtype)  # the live chains
    if config.flow.adaptive_bound:
        _cover_prescale_samples(flow, zlog, chains, level)
    posterior_ranges = _posterior_ranges(chains, mean, std, config.range_nsigma)
    given = None if ranges is None else torch.as_tensor(ranges, dtype=dtype, device=mean.device)
    pilot = config.range_pilot > 0 and (given is None or config.histogram_ranges == "posterior")
    if ranges is None:
        ranges = posterior_ranges
    elif config.histogram_ranges == "posterior":
        clipped = torch.stack([torch.maximum(given[:, 0], posterior_ranges[:, 0]),
                               torch.minimum(given[:, 1], posterior_ranges[:, 1])], dim=1)
        ranges = torch.where((clipped[:, 1] > clipped[:, 0])[:, None], clipped, given)

    # 2. pre-training
    if begin("pretrain"):
        t0 = time.perf_counter()
        with _StepRng(seed, 2, device) as gen:
            res2 = pretrain(flow, zlog, zlog.to_standardised(res1.samples.to(dtype)),
                            config=config.pretrain, generator=gen,
                            log_weights=res1.log_weights, names=names,
                            callback=_progress_callback("pre-training", _n_pretrain_steps(
                                config.pretrain, res1.samples.shape[0]), level))
        finish("pretrain", res2, time.perf_counter() - t0)

    # 3. training
    if begin("train"):
        t0 = time.perf_counter()
        with _StepRng(seed, 3, device) as gen:
            total = config.train.n_batches * (1 + config.train.buffered_per_online)
            res3 = train(flow, zlog, config=config.train, generator=gen, names=names,
                         callback=_progress_callback("training", total, level))
        finish("train", res3, time.perf_counter() - t0)

    # 4. sampling
    flow.eval()

    def draw(n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            z, log_q = flow.sample_and_log_prob(n, generator=generator)
        return zlog.to_original(z), log_q - log_det(z)

    if begin("sample"):
        t0 = time.perf_counter()
        if pilot:
            with _StepRng(seed, 6, device) as gen:
                ranges = _widen_to_flow(draw, target, ranges, given, n=config.range_pilot,
                                        tail=config.range_tail,
                                        chunk=config.sample.eval_chunk, generator=gen,
                                        level=level, names=names)
        with _StepRng(seed, 4, device) as gen:
            res4 = sample_and_histogram(draw, target, ranges=ranges, config=config.sample,
                                        generator=gen, names=names, runner=runner)
        finish("sample", res4, time.perf_counter() - t0)
    res4 = results["sample"]

    # 5. profiling, in the target's dtype
    if begin("profile"):
        t0 = time.perf_counter()
        with _StepRng(seed, 5, device):
            res5 = profile(log_prob, _cast_floats(res4, target_dtype), config=config.profile,
                           covariance=cov.to(target_dtype), names=names, runner=runner)
        finish("profile", res5, time.perf_counter() - t0)
    res5 = results["profile"]

    timings = {s: float(state["timings"][s]) for s in STEPS}
    log.log(level, "sampler finished: %s; ESS/N %.4f of %d samples",
            ", ".join(f"{s} {timings[s]:.1f} s" for s in STEPS), res4.ess_fraction,
            res4.n_samples)
    return SamplerResult(
        names=names,
        ranges=res4.ranges,
        pairs=res4.pairs,
        marginal1d=res4.marginal1d,
        marginal2d=res4.marginal2d,
        profile1d=res5.profile1d,
        profile2d=res5.profile2d,
        ess=res4.ess,
        ess_fraction=res4.ess_fraction,
        n_samples=res4.n_samples,
        timings=timings,
        best_fit=res5.best_fit,
        best_log_prob=res5.best_log_prob,
        log_evidence=res4.log_evidence,
        configs=config,
        seed=int(seed),
        mean=mean,
        std=std,
        prescale_result=res1,
        pretrain_result=results["pretrain"],
        train_result=results["train"],
        sample_result=res4,
        profile_result=res5,
        flow=flow,
        resumed_steps=tuple(resumed),
    )


def _weighted_covariance(x: Tensor, log_weights: Tensor) -> Tensor:
    """The covariance of ``x`` under the normalised weights ``exp(log_weights)``."""
    w = torch.softmax(torch.where(torch.isfinite(log_weights), log_weights.to(x.dtype),
                                  x.new_tensor(-math.inf)), 0)
    centred = x - (w[:, None] * x).sum(0)
    return (w[:, None] * centred).T @ centred


def _pressed_against_edges(samples: Tensor, log_weights: Tensor, std: Tensor, box: Tensor,
                           k: float) -> Tensor:
    """Per coordinate, the weight of ``samples`` within ``k * std`` of an edge of ``box``."""
    w = torch.softmax(torch.where(torch.isfinite(log_weights), log_weights.to(samples.dtype),
                                  samples.new_tensor(-math.inf)), 0)
    near = (samples - box[:, 0] < k * std) | (box[:, 1] - samples < k * std)
    return (w[:, None] * near.to(samples.dtype)).sum(0)


def _coordinates(target: LogProb, res1: PrescaleResult, config: SamplerConfig,
                 support: Tensor | None, dtype: torch.dtype, level: int,
                 names: Sequence[str]) -> Standardised:
    """The flow's coordinates: the pre-scaling moments, whitened, with the logit map on the
    coordinates whose posterior comes close to an edge of ``support``."""
    samples = res1.samples.to(torch.float64)
    mean, std = res1.mean.to(torch.float64), res1.std.to(torch.float64)
    bounded = None
    if support is not None and config.support_map == "logit":
        box = support.to(device=samples.device, dtype=torch.float64)
        bounded = _pressed_against_edges(samples, res1.log_weights, std, box,
                                         config.support_nsigma) > config.support_weight
        if bool(bounded.any()):
            log.log(level, "logit map onto the prior box for %d coefficient(s) near its edges: %s",
                    int(bounded.sum()), ", ".join(n for n, b in zip(names, bounded.tolist(), strict=True) if b))
            u = unbounded(samples, box, bounded, eps=Standardised.EDGE_EPS)
            w = torch.softmax(torch.where(torch.isfinite(res1.log_weights),
                                          res1.log_weights.to(torch.float64),
                                          samples.new_tensor(-math.inf)), 0)
            mean = (w[:, None] * u).sum(0)
            std = torch.sqrt((w[:, None] * (u - mean) ** 2).sum(0))
            samples = u
        else:
            bounded = None
    factor = None
    if config.whitening == "full":
        factor = weighted_cholesky(samples, res1.log_weights.to(torch.float64)).to(dtype)
    return standardise(target, mean.to(dtype), std.to(dtype), factor,
                       support=None if bounded is None else support.to(dtype), bounded=bounded)


def _n_pretrain_steps(config: PretrainConfig, n_available: int) -> int:
    n = config.n_samples or n_available
    return max(1, config.epochs * math.ceil(n / config.batch_size))

"""Frozen configuration dataclasses for sampler steps 1-3 (pre-scaling, flow, pre-training, training).

Every hyperparameter of the paper's Table 5 is a field, with the paper's value (column "Top")
as the default. :meth:`PrescaleConfig.paper` and friends return the "Higgs-gauge" or
"Combined" columns. Fields the paper does not state (resampling threshold, initial step size,
number of coupling blocks, ...) carry our own defaults and say so in their description.

:func:`sampler_costs` estimates the peak memory and the number of likelihood evaluations of
every step from these sizes (and the number of parameters and measurements), and
:func:`check_sampler_costs` refuses settings above :data:`MAX_MEMORY_GB` or
:data:`MAX_EVALUATIONS` before anything is allocated. A field whose metadata says
``allow_inf`` takes ``inf`` in a runcard (``TrainConfig.clip_alpha``); the runcard schema
(:func:`smeft_pyhf.fit.sampler_block.dataclass_schema`) refuses non-finite values elsewhere.

Example:
    >>> from smeft_pyhf.sampler.config import PrescaleConfig, TrainConfig
    >>> PrescaleConfig().n_steps
    1500
    >>> PrescaleConfig.paper("combined").n_samples
    40960
    >>> TrainConfig(n_batches=10).buffer_capacity
    262144

References:
    | Five steps to happiness: ML likelihood sampling for global SMEFT analyses (arXiv:2411.00942),
    | Sec. 2.2 and Table 5. https://arxiv.org/abs/2411.00942
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, TypeVar

from smeft_pyhf.exceptions import ConfigError

__all__ = [
    "MAX_EVALUATIONS",
    "MAX_MEMORY_GB",
    "FlowConfig",
    "PrescaleConfig",
    "PretrainConfig",
    "Sector",
    "StepCost",
    "TrainConfig",
    "check_sampler_costs",
    "sampler_costs",
]

Sector = Literal["top", "higgs", "combined"]
"""The three columns of the paper's Table 5: top sector, Higgs-gauge sector, combined fit."""

_C = TypeVar("_C")

# Per-sector values of Table 5 (arXiv:2411.00942) that differ from the "Top" column.
_PAPER: dict[str, dict[str, dict[str, object]]] = {
    "PrescaleConfig": {
        "top": {},
        "higgs": {"n_samples": 40960, "n_steps": 5500},
        "combined": {"n_samples": 40960, "n_steps": 5500},
    },
    "FlowConfig": {"top": {}, "higgs": {}, "combined": {}},
    "PretrainConfig": {
        "top": {},
        "higgs": {"epochs": 6, "mcmc_steps": 10},
        "combined": {"epochs": 6, "mcmc_steps": 10},
    },
    "TrainConfig": {
        "top": {},
        "higgs": {"n_batches": 2000, "ais_steps": 4},
        "combined": {"n_batches": 6000, "ais_steps": 8},
    },
}


def _paper(cls: type[_C], sector: str, overrides: dict[str, object]) -> _C:
    table = _PAPER[cls.__name__]
    if sector not in table:
        raise ConfigError(
            f"unknown sector {sector!r}",
            where=f"{cls.__name__}.paper",
            hint=f"use one of {sorted(table)}",
        )
    return cls(**{**table[sector], **overrides})


def check_field(condition: bool, cls: object, field: str, message: str) -> None:
    """Raise a :class:`ConfigError` naming ``field`` of the config ``cls`` unless ``condition``.

    Example:
        >>> check_field(True, PrescaleConfig(), "n_steps", "must be >= 1")
    """
    if not condition:
        value = getattr(cls, field)
        raise ConfigError(
            f"{field}={value!r} {message}",
            where=type(cls).__name__,
            hint=f"change {field}",
        )


def _check_step_size(config: object) -> None:
    check_field(config.initial_step_size > 0, config, "initial_step_size", "must be > 0")
    check_field(0 < config.target_acceptance < 1, config, "target_acceptance", "must lie in (0, 1)")
    low, high = config.step_size_bounds
    check_field(0 < low < high, config, "step_size_bounds", "must satisfy 0 < low < high")


def _check_chunk(config: object) -> None:
    check_field(config.chunk_size is None or config.chunk_size > 0, config, "chunk_size",
                "must be > 0")


@dataclass(frozen=True)
class PrescaleConfig:
    """Step 1, pre-scaling by annealed importance sampling (AIS) from a Gaussian base.

    Attributes:
        n_samples: number of parallel AIS chains (Table 5: 10240 top, 40960 Higgs/combined).
        n_steps: number of annealing steps ``T`` (Table 5: 1500 top, 5500 Higgs/combined).
        schedule: the inverse temperatures ``beta_t``. ``"linear"`` is the paper's eq. (12),
            ``beta_t = t/T``. ``"logit"`` (our default) spaces them evenly in
            ``log(beta / (1 - beta))`` from ``beta_min`` at ``t = 1`` to ``1 - beta_min`` at
            ``t = T - 1``: geometric at both ends, so the chains follow the tempered target both
            when the likelihood is orders of magnitude narrower than the base (small ``beta``)
            and when it is wider (``beta`` near 1); see ``docs/benchmarks.md`` for the two
            schedules compared on the global and top fits.
        beta_min: the first non-zero ``beta`` of the logit schedule (and ``1 - beta_min`` the
            last one below 1).
        target_acceptance: Metropolis acceptance the adaptive step size aims at, eq. (18)
            (Table 5: 0.33).
        mcmc_steps: Metropolis steps per annealing temperature ("one or more", Sec. 2.2; not in
            Table 5, our default 1).
        initial_step_size: initial ``tau`` of the proposal ``exp(-(x'-x)^2 / 4 tau)``, eq. (16),
            in units of the squared base width ``init_scale**2`` (our default; it adapts within
            a few steps since ``tau`` changes by up to a factor 2 per step).
        step_size_bounds: ``tau`` is clamped to this range to avoid degenerate chains.
        resample_threshold: resample when ``ESS < resample_threshold * n_samples``, eq. (19)
            (the paper says "a threshold"; our default 0.5).
        resampling: ``"multinomial"`` draws indices with the normalised weights as
            probabilities (the paper's description); ``"systematic"`` is the lower-variance
            variant with one uniform number.
        chunk_size: evaluate the target in chunks of at most this many points (``None``: one
            call per step). Only memory, not results, depends on it.
        proposal: ``"population"`` (default) shapes the Metropolis proposal at every
            temperature with the Cholesky factor of the weighted covariance of the current
            samples, so ``tau`` is in units of that covariance; ``"diagonal"`` uses the fixed
            per-dimension base width (the paper's isotropic step in pre-scaled units). The
            population proposal keeps the acceptance up when the target's widths and
            correlations differ by orders of magnitude from the base, as in real SMEFT
            likelihoods.
    """

    n_samples: int = 10240
    n_steps: int = 1500
    target_acceptance: float = 0.33
    mcmc_steps: int = 1
    initial_step_size: float = 0.1
    step_size_bounds: tuple[float, float] = (1e-12, 1e4)
    resample_threshold: float = 0.5
    resampling: Literal["multinomial", "systematic"] = "multinomial"
    chunk_size: int | None = None
    proposal: Literal["population", "diagonal"] = "population"
    schedule: Literal["linear", "logit"] = "logit"
    beta_min: float = 1e-6

    def __post_init__(self) -> None:
        check_field(self.n_samples >= 2, self, "n_samples", "must be >= 2")
        check_field(
            self.proposal in ("population", "diagonal"),
            self,
            "proposal",
            "must be 'population' or 'diagonal'",
        )
        check_field(self.n_steps >= 1, self, "n_steps", "must be >= 1")
        check_field(self.schedule in ("linear", "logit"), self, "schedule",
                    "must be 'linear' or 'logit'")
        check_field(0 < self.beta_min < 0.5, self, "beta_min", "must lie in (0, 0.5)")
        check_field(self.mcmc_steps >= 0, self, "mcmc_steps", "must be >= 0")
        check_field(0 <= self.resample_threshold <= 1, self, "resample_threshold", "must lie in [0, 1]")
        check_field(
            self.resampling in ("multinomial", "systematic"),
            self,
            "resampling",
            "must be 'multinomial' or 'systematic'",
        )
        _check_step_size(self)
        _check_chunk(self)

    @classmethod
    def paper(cls, sector: Sector = "top", **overrides: object) -> PrescaleConfig:
        """The paper's Table 5 column for ``sector``, with ``overrides`` applied.

        Example:
            >>> PrescaleConfig.paper("higgs").n_steps
            5500
        """
        return _paper(cls, sector, overrides)

    def replace(self, **changes: object) -> PrescaleConfig:
        """A copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class FlowConfig:
    """The normalizing flow: rational-quadratic spline coupling blocks (zuko).

    Attributes:
        n_blocks: number of coupling blocks (Table 5 lists the block type, RQ splines, but not
            the count; our default 6).
        bins: spline bins per dimension (Table 5: 16).
        hidden_layers: hidden layers of each coupling subnet (Table 5: 3).
        hidden_features: nodes per hidden layer (Table 5: 64).
        bound: the splines act on ``[-bound, bound]`` (identity outside); the flow works in
            standardised coordinates, so 5 standard deviations (zuko's default).
        adaptive_bound: widen ``bound`` after pre-scaling so that it covers every pre-scaling
            sample with a margin of 25 % (``max(bound, 1.25 max |z|)``, rounded up). Outside
            the spline domain the flow is the identity and keeps the base's Gaussian tails,
            so mass there is out of its reach.
        slope: minimum slope of the splines (zuko's default 1e-3).
        masks: how the coupling masks alternate: ``"alternating"`` flips the even/odd split each
            block; ``"binary"`` (default) takes the split from successive bits of the dimension
            index, flipped every other block, so that every pair of dimensions is split apart
            by some block once ``n_blocks >= 2 * ceil(log2(dim))`` (MadNIS-style).
        activation: activation function of the subnets.
        identity_init: zero the last layer of every subnet so that the untrained flow is the
            identity map, i.e. the standard normal base (a good start in standardised
            coordinates; not specified in the paper).
        compile: wrap sampling and density evaluation in :func:`torch.compile` (off by default;
            useful on GPU only).
        cpu_chunk: on the CPU, evaluations without gradients (sampling, step 4) run in chunks
            of at most this many points, so that the spline tensors stay in the cache.
            Ignored on GPUs.
    """

    n_blocks: int = 6
    bins: int = 16
    hidden_layers: int = 3
    hidden_features: int = 64
    bound: float = 5.0
    adaptive_bound: bool = True
    slope: float = 1e-3
    masks: Literal["alternating", "binary"] = "binary"
    activation: Literal["relu", "elu", "silu", "leaky_relu"] = "relu"
    identity_init: bool = True
    compile: bool = False
    cpu_chunk: int = 1024

    def __post_init__(self) -> None:
        check_field(self.n_blocks >= 1, self, "n_blocks", "must be >= 1")
        check_field(self.cpu_chunk >= 1, self, "cpu_chunk", "must be >= 1")
        check_field(self.bins >= 2, self, "bins", "must be >= 2")
        check_field(self.hidden_layers >= 1, self, "hidden_layers", "must be >= 1")
        check_field(self.hidden_features >= 1, self, "hidden_features", "must be >= 1")
        check_field(self.bound > 0, self, "bound", "must be > 0")
        check_field(0 < self.slope < 1, self, "slope", "must lie in (0, 1)")
        check_field(self.masks in ("alternating", "binary"), self, "masks", "is not a known mask kind")
        check_field(
            self.activation in ("relu", "elu", "silu", "leaky_relu"),
            self,
            "activation",
            "is not a known activation",
        )

    @classmethod
    def paper(cls, sector: Sector = "top", **overrides: object) -> FlowConfig:
        """The paper's Table 5 column for ``sector`` (the same for all three)."""
        return _paper(cls, sector, overrides)

    def replace(self, **changes: object) -> FlowConfig:
        """A copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class PretrainConfig:
    """Step 2, pre-training: maximum likelihood on MCMC-evolved pre-scaling samples.

    Attributes:
        batch_size: training batch size (Table 5: 1024).
        epochs: passes over the training set (Table 5: 15 top, 6 Higgs/combined).
        mcmc_steps: Metropolis steps between batches (Table 5: 20 top, 10 Higgs/combined).
        burn_in_steps: Metropolis steps after the initial resampling, before training starts
            ("evolve them for a number of MCMC steps"; our default 20).
        learning_rate: Adam learning rate (not in Table 5 for pre-training; we use the training
            value 1e-3).
        n_samples: size of the resampled training set (``None``: as many as given).
        mcmc_scope: ``"batch"`` (default) evolves the batch just used, so every point moves
            ``mcmc_steps`` steps between two uses at the cost of one target call per point and
            step; ``"all"`` evolves the whole training set after every batch (``n/batch_size``
            times more target calls).
        target_acceptance: acceptance the adaptive step size aims at (0.33 as in pre-scaling).
        initial_step_size: initial ``tau`` in standardised coordinates.
        adapt_step_size: adapt ``tau`` with eq. (18) after every Metropolis step.
        step_size_bounds: clamp range for ``tau``.
        max_grad_norm: clip the gradient norm (``None``: no clipping; not in the paper).
        chunk_size: evaluate the target in chunks of at most this many points.
    """

    batch_size: int = 1024
    epochs: int = 15
    mcmc_steps: int = 20
    burn_in_steps: int = 20
    learning_rate: float = 1e-3
    n_samples: int | None = None
    mcmc_scope: Literal["batch", "all"] = "batch"
    target_acceptance: float = 0.33
    initial_step_size: float = 0.1
    adapt_step_size: bool = True
    step_size_bounds: tuple[float, float] = (1e-12, 1e4)
    max_grad_norm: float | None = None
    chunk_size: int | None = None

    def __post_init__(self) -> None:
        check_field(self.batch_size >= 1, self, "batch_size", "must be >= 1")
        check_field(self.epochs >= 0, self, "epochs", "must be >= 0")
        check_field(self.mcmc_steps >= 0, self, "mcmc_steps", "must be >= 0")
        check_field(self.burn_in_steps >= 0, self, "burn_in_steps", "must be >= 0")
        check_field(self.learning_rate > 0, self, "learning_rate", "must be > 0")
        check_field(self.n_samples is None or self.n_samples >= 1, self, "n_samples", "must be >= 1")
        check_field(self.mcmc_scope in ("batch", "all"), self, "mcmc_scope", "must be 'batch' or 'all'")
        check_field(
            self.max_grad_norm is None or self.max_grad_norm > 0,
            self,
            "max_grad_norm",
            "must be > 0",
        )
        _check_step_size(self)
        _check_chunk(self)

    @classmethod
    def paper(cls, sector: Sector = "top", **overrides: object) -> PretrainConfig:
        """The paper's Table 5 column for ``sector``.

        Example:
            >>> PretrainConfig.paper("combined").mcmc_steps
            10
        """
        return _paper(cls, sector, overrides)

    def replace(self, **changes: object) -> PretrainConfig:
        """A copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class TrainConfig:
    """Step 3, neural importance sampling training with AIS and a prioritised buffer.

    One *batch* is one online step (flow samples -> AIS towards ``p^2/g`` -> loss eq. (25))
    followed by ``buffered_per_online`` buffered steps (loss eq. (27)).

    Attributes:
        learning_rate: Adam learning rate (Table 5: 1e-3).
        batch_size: points per online and per buffered step (Table 5: 1024).
        n_batches: number of online steps (Table 5: 100 top, 2000 Higgs, 6000 combined).
        ais_steps: annealing steps from the flow ``g`` to ``p^2/g`` (Table 5: 4, combined 8).
        buffer_capacity: points kept in the buffer, oldest replaced first (Table 5: 262k).
        buffered_per_online: buffered steps per online step (Table 5: 6).
        clip_alpha: ``alpha`` of the soft weight clip ``w' = alpha log(w/alpha + 1)``, eq. (26)
            (paper: 30).
        lr_schedule: ``"constant"`` (the paper states only the rate), ``"cosine"`` (decay to
            ``lr_min_factor * learning_rate`` over all optimiser steps) or ``"exponential"``
            (the same end point, geometric decay).
        lr_min_factor: final learning rate relative to ``learning_rate`` for decaying schedules.
        mcmc_steps: Metropolis steps per AIS temperature (our default 1).
        target_acceptance: acceptance the adaptive AIS step size aims at (0.33).
        initial_step_size: initial ``tau`` in standardised coordinates; it is adapted with
            eq. (18) and carried over from one online step to the next.
        step_size_bounds: clamp range for ``tau``.
        ais_resample_threshold: resample inside the training AIS when ``ESS/N`` drops below
            this (0: never, as in FAB).
        max_grad_norm: clip the gradient norm (``None``: no clipping; not in the paper).
        chunk_size: evaluate the target in chunks of at most this many points.
        stop_window: stop training before ``n_batches`` once it has converged (0: never, the
            paper's fixed count): after every online batch the mean ``ESS/N`` of the last
            ``stop_window`` batches is compared with that of the ``stop_window`` before; when it
            improved by less than ``stop_tolerance`` (relative), or reached ``stop_ess``, the
            flow has learnt what this configuration can learn.
        stop_tolerance: relative improvement below which training counts as converged.
        stop_ess: windowed ``ESS/N`` at which training stops at once.
        final_batches: online batches after the ``n_batches`` (or after an early stop), each
            of ``final_batch_size`` points (online and buffered steps) at the constant
            ``final_learning_rate`` (0: none, as in the paper). Larger batches at a lower rate
            cut the gradient noise that keeps a flow's ``ESS/N`` swinging from batch to batch.
        final_batch_size: points per step of the final batches.
        final_learning_rate: Adam learning rate of the final batches.
    """

    learning_rate: float = 1e-3
    batch_size: int = 1024
    n_batches: int = 100
    ais_steps: int = 4
    buffer_capacity: int = 262144
    buffered_per_online: int = 6
    clip_alpha: float = dataclasses.field(default=30.0, metadata={"allow_inf": True})
    lr_schedule: Literal["constant", "cosine", "exponential"] = "constant"
    lr_min_factor: float = 0.01
    mcmc_steps: int = 1
    target_acceptance: float = 0.33
    initial_step_size: float = 0.1
    step_size_bounds: tuple[float, float] = (1e-12, 1e4)
    ais_resample_threshold: float = 0.0
    max_grad_norm: float | None = None
    chunk_size: int | None = None
    stop_window: int = 0
    stop_tolerance: float = 0.02
    stop_ess: float = 0.95
    final_batches: int = 0
    final_batch_size: int = 4096
    final_learning_rate: float = 3e-4

    def __post_init__(self) -> None:
        check_field(self.stop_window >= 0, self, "stop_window", "must be >= 0 (0: never stop early)")
        check_field(self.final_batches >= 0, self, "final_batches", "must be >= 0 (0: none)")
        check_field(self.final_batch_size >= 1, self, "final_batch_size", "must be >= 1")
        check_field(self.final_learning_rate > 0, self, "final_learning_rate", "must be > 0")
        check_field(self.stop_tolerance >= 0, self, "stop_tolerance", "must be >= 0")
        check_field(0 < self.stop_ess <= 1, self, "stop_ess", "must lie in (0, 1]")
        check_field(self.learning_rate > 0, self, "learning_rate", "must be > 0")
        check_field(self.batch_size >= 2, self, "batch_size", "must be >= 2")
        check_field(self.n_batches >= 0, self, "n_batches", "must be >= 0")
        check_field(self.ais_steps >= 0, self, "ais_steps", "must be >= 0")
        check_field(self.buffer_capacity >= 0, self, "buffer_capacity", "must be >= 0")
        check_field(self.buffered_per_online >= 0, self, "buffered_per_online", "must be >= 0")
        check_field(
            self.clip_alpha > 0 or math.isinf(self.clip_alpha),
            self,
            "clip_alpha",
            "must be > 0 (inf: no clipping)",
        )
        check_field(
            self.lr_schedule in ("constant", "cosine", "exponential"),
            self,
            "lr_schedule",
            "must be 'constant', 'cosine' or 'exponential'",
        )
        check_field(0 < self.lr_min_factor <= 1, self, "lr_min_factor", "must lie in (0, 1]")
        check_field(self.mcmc_steps >= 0, self, "mcmc_steps", "must be >= 0")
        check_field(
            0 <= self.ais_resample_threshold <= 1,
            self,
            "ais_resample_threshold",
            "must lie in [0, 1]",
        )
        check_field(
            self.max_grad_norm is None or self.max_grad_norm > 0,
            self,
            "max_grad_norm",
            "must be > 0",
        )
        _check_step_size(self)
        _check_chunk(self)

    @classmethod
    def paper(cls, sector: Sector = "top", **overrides: object) -> TrainConfig:
        """The paper's Table 5 column for ``sector``.

        Example:
            >>> TrainConfig.paper("combined").ais_steps
            8
        """
        return _paper(cls, sector, overrides)

    def replace(self, **changes: object) -> TrainConfig:
        """A copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)


# ----------------------------------------------------------------------- resource estimates
#: ceiling on the estimated peak memory of one sampler step, in GiB (environment variable
#: ``SMEFT_PYHF_MAX_MEMORY_GB`` overrides it)
MAX_MEMORY_GB: float = 32.0
#: ceiling on the estimated number of target evaluations of one sampler step (environment
#: variable ``SMEFT_PYHF_MAX_EVALUATIONS`` overrides it)
MAX_EVALUATIONS: float = 1e11
MEMORY_ENV = "SMEFT_PYHF_MAX_MEMORY_GB"
EVALUATIONS_ENV = "SMEFT_PYHF_MAX_EVALUATIONS"
_GIB = float(2**30)


class StepCost(NamedTuple):
    """Estimated cost of one sampler step, from the configured sizes alone.

    Attributes:
        step: ``flow`` (its weights and optimiser state), ``prescale``, ``pretrain``,
            ``train``, ``sample`` or ``profile``.
        memory_bytes: estimated peak memory of the step's tensors (the larger terms only).
        memory_field: the setting that drives the memory (``prescale.n_samples``, ...).
        evaluations: estimated number of likelihood evaluations.
        evaluations_field: the setting that drives the number of evaluations (of those the
            number is proportional to, the one largest relative to its default).
    """

    step: str
    memory_bytes: float
    memory_field: str
    evaluations: float
    evaluations_field: str


def _largest(*terms: tuple[str, float]) -> tuple[float, str]:
    """Total of the ``(setting, bytes)`` terms and the setting of the largest one."""
    field = max(terms, key=lambda t: t[1])[0]
    return float(sum(t[1] for t in terms)), field


def _driver(config: object, step: str, *names: str) -> str:
    """The setting among ``names`` that is largest relative to its default (the one a user most
    likely raised), as ``step.name``."""
    defaults = type(config)()

    def ratio(name: str) -> float:
        value, default = getattr(config, name), getattr(defaults, name)
        if value is None:
            return 0.0
        return float(value) / float(default) if default else float(value)

    return f"{step}.{max(names, key=ratio)}"


def _chunk(step: str, points: int, chunk_size: int | None, name: str) -> tuple[str, int]:
    """The points evaluated at once and the setting that sets their number."""
    if chunk_size is not None and chunk_size < points:
        return f"{step}.chunk_size", chunk_size
    return f"{step}.{name}", points


def sampler_costs(config: object, *, dim: int, n_data: int = 256,
                  dtype_bytes: int = 4) -> tuple[StepCost, ...]:
    """Estimate the peak memory and the number of likelihood evaluations of every step.

    The estimate counts the tensors whose size grows with the settings: the chains or batches
    (``points x dim``), one likelihood evaluation per point (the ``dim (dim + 1) / 2``
    quadratic features and a few ``n_data`` vectors, times the chunk evaluated at once), the
    flow's spline parameters (``dim x (3 bins + 1)`` per block and point, all blocks kept for
    the gradient in training), the training buffer, the histograms
    (``bins_2d^2 x dim (dim - 1) / 2`` float64 accumulators) and the best points per profile
    bin. It is meant to catch settings that cannot run (orders of magnitude above a real fit),
    not to predict the memory to a few percent.

    Args:
        config: a ``SamplerConfig`` (or any object with the step configs as attributes
            ``prescale``, ``flow``, ``pretrain``, ``train``, ``sample``, ``profile``; missing
            ones are skipped).
        dim: number of sampled parameters (free coefficients plus theory nuisances).
        n_data: number of measurements in the likelihood.
        dtype_bytes: bytes per element of the sampler's dtype (4: float32, 8: float64).

    Returns:
        One :class:`StepCost` per step present in ``config`` (``flow`` first).

    Example:
        >>> from types import SimpleNamespace
        >>> cfg = SimpleNamespace(prescale=PrescaleConfig(), flow=FlowConfig())
        >>> cost = sampler_costs(cfg, dim=10, n_data=50)[1]
        >>> cost.step, cost.memory_field, round(cost.evaluations / 1e6, 2)
        ('prescale', 'prescale.n_samples', 15.37)
    """
    d = max(int(dim), 1)
    fb = float(dtype_bytes)
    quad = d * (d + 1) / 2
    # one likelihood evaluation: quadratic features (two gathers and their product), the
    # predictions, the residual and its whitened copy, and the point itself
    per_eval = 3 * quad + 3 * max(int(n_data), 1) + 2 * d
    flow = getattr(config, "flow", None)
    if flow is not None:
        per_block = flow.hidden_layers * flow.hidden_features + d * (3 * flow.bins + 1) + 4 * d
        flow_grad = flow.n_blocks * per_block * 3  # activations kept for the backward pass
        flow_eval = 2 * per_block + 4 * d  # no gradient: about two blocks alive at once
    else:
        flow_grad = flow_eval = 0.0
    costs: list[StepCost] = []
    if flow is not None:
        costs.append(_flow_cost(flow, d, fb))
    prescale = getattr(config, "prescale", None)
    n_prescale = 0
    if prescale is not None:
        n_prescale = prescale.n_samples
        costs.append(_prescale_cost(prescale, d, fb, per_eval))
    pretrain = getattr(config, "pretrain", None)
    if pretrain is not None:
        costs.append(_pretrain_cost(pretrain, d, fb, per_eval, flow_grad, n_prescale))
    train = getattr(config, "train", None)
    if train is not None:
        costs.append(_train_cost(train, d, fb, per_eval, flow_grad))
    sample = getattr(config, "sample", None)
    n_starts = 0.0
    if sample is not None:
        pilot = float(getattr(config, "range_pilot", 0) or 0)
        cost, n_starts = _sample_cost(sample, d, fb, per_eval, flow_eval, pilot)
        costs.append(cost)
    profile = getattr(config, "profile", None)
    if profile is not None:
        costs.append(_profile_cost(profile, d, fb, per_eval, n_starts or d * 40.0))
    return tuple(costs)


def _flow_cost(flow: FlowConfig, d: int, fb: float) -> StepCost:
    """The flow's weights: those of the coupling subnets (the last layer gives the spline
    parameters), times four for the gradients and Adam's two moments."""
    out = d * (3 * flow.bins + 1)
    hidden = flow.hidden_features
    params = flow.n_blocks * (d * hidden + (flow.hidden_layers - 1) * hidden**2
                              + hidden * out)
    field = "flow.bins" if out > hidden * flow.hidden_layers else "flow.hidden_features"
    return StepCost("flow", 4 * params * fb, field, 0.0, "flow.n_blocks")


def _prescale_cost(prescale: PrescaleConfig, d: int, fb: float, per_eval: float) -> StepCost:
    """The prescale step: chains, proposals, noise and weights, or a chunk of evaluations."""
    n = prescale.n_samples
    chunk_field, chunk = _chunk("prescale", n, prescale.chunk_size, "n_samples")
    memory, field = _largest(
        ("prescale.n_samples", n * (4 * d + 8) * fb),  # chains, proposals, noise, weights
        (chunk_field, chunk * per_eval * fb),
    )
    memory += 3 * d * d * fb  # population covariance and its Cholesky factor
    evaluations = n * (1 + prescale.n_steps * max(prescale.mcmc_steps, 1))
    return StepCost("prescale", memory, field, evaluations,
                    _driver(prescale, "prescale", "n_samples", "n_steps", "mcmc_steps"))


def _pretrain_cost(pretrain: PretrainConfig, d: int, fb: float, per_eval: float, flow_grad: float,
                   n_prescale: int) -> StepCost:
    """The pretrain step: the samples, a training batch with the flow's gradient, or a chunk."""
    n = pretrain.n_samples or n_prescale or pretrain.batch_size
    per_move = n if pretrain.mcmc_scope == "all" else min(n, pretrain.batch_size)
    chunk_field, chunk = _chunk("pretrain", per_move, pretrain.chunk_size,
                                "n_samples" if pretrain.mcmc_scope == "all" else "batch_size")
    memory, field = _largest(
        ("pretrain.n_samples", n * (3 * d + 4) * fb),
        ("pretrain.batch_size", pretrain.batch_size * (flow_grad + 4 * d) * fb),
        (chunk_field, chunk * per_eval * fb),
    )
    batches = pretrain.epochs * math.ceil(n / pretrain.batch_size)
    evaluations = n * (1 + pretrain.burn_in_steps) + batches * pretrain.mcmc_steps * per_move
    return StepCost("pretrain", memory, field, evaluations,
                    _driver(pretrain, "pretrain", "n_samples", "epochs", "mcmc_steps",
                            "burn_in_steps"))


def _train_cost(train: TrainConfig, d: int, fb: float, per_eval: float, flow_grad: float) -> StepCost:
    """The train step: the buffer, a batch with the flow's gradient and AIS, or a chunk."""
    final = train.final_batch_size if train.final_batches else 0
    batch_field = "train.final_batch_size" if final > train.batch_size else "train.batch_size"
    batch = max(train.batch_size, final)
    chunk_field, chunk = _chunk("train", batch, train.chunk_size, batch_field.split(".")[1])
    memory, field = _largest(
        ("train.buffer_capacity", train.buffer_capacity * (d + 3) * fb),
        (batch_field, batch * (flow_grad + (4 + train.ais_steps) * d) * fb),
        (chunk_field, chunk * per_eval * fb),
    )
    evaluations = ((train.n_batches * train.batch_size + train.final_batches * final)
                   * (1 + train.ais_steps * max(train.mcmc_steps, 1)))
    return StepCost("train", memory, field, evaluations,
                    _driver(train, "train", "n_batches", "batch_size", "ais_steps",
                            "mcmc_steps"))


def _sample_cost(sample: Any, d: int, fb: float, per_eval: float, flow_eval: float,
                 pilot: float) -> tuple[StepCost, float]:
    """The sample step (batches, evaluation chunk, histograms, best points per profile bin,
    kept samples) and the number of best points it stores (the profile step's starts)."""
    pairs = d * (d - 1) / 2 if sample.histograms_2d else 0.0
    batch = sample.batch_size
    eval_points = min(max(batch, pilot), sample.eval_chunk)
    stored = (d * sample.profile_bins_1d + pairs * sample.profile_bins_2d**2) * sample.n_best
    memory, field = _largest(
        ("range_pilot" if pilot > batch else "sample.batch_size",
         max(batch, pilot) * (flow_eval + 8 * d * 2) * fb),
        ("sample.eval_chunk", eval_points * per_eval * fb),
        ("sample.bins_2d", 2 * (d * sample.bins_1d + pairs * sample.bins_2d**2) * 8.0),
        ("sample.n_best" if sample.n_best > sample.profile_bins_2d else
         "sample.profile_bins_2d", stored * (d + 1) * fb),
        ("sample.keep_samples", sample.keep_samples * (d + 1) * fb),
    )
    evaluations = sample.n_batches * (batch + stored) + pilot
    return StepCost("sample", memory, field, evaluations,
                    _driver(sample, "sample", "n_batches", "batch_size", "n_best",
                            "profile_bins_2d")), stored


def _profile_cost(profile: Any, d: int, fb: float, per_eval: float, starts: float) -> StepCost:
    """The profile step: a batch of L-BFGS starts with their histories."""
    batch = min(profile.batch_size, starts)
    memory, field = _largest(
        ("profile.batch_size", batch * ((8 * d + 3 * per_eval) * fb)),
        ("profile.history", batch * 2 * profile.history * d * fb),
    )
    # about two evaluations (value and gradient) per L-BFGS iteration, per sweep
    evaluations = starts * profile.max_steps * 2 * (1 + profile.restart_sweeps)
    return StepCost("profile", memory, field, evaluations,
                    _driver(profile, "profile", "max_steps", "restart_sweeps"))


def _limit(env: str, default: float) -> float:
    text = os.environ.get(env)
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"${env}={text!r} is not a number", where=env,
                          hint="unset it or give a positive number") from None
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"${env}={text!r} must be a positive number", where=env)
    return value


def check_sampler_costs(config: object, *, dim: int, n_data: int = 256, dtype_bytes: int = 4,
                        where: str = "sampler", max_memory_gb: float | None = None,
                        max_evaluations: float | None = None) -> tuple[StepCost, ...]:
    """Refuse settings whose estimated memory or run time is far beyond any real fit.

    The ceilings are :data:`MAX_MEMORY_GB` (estimated peak memory of one step) and
    :data:`MAX_EVALUATIONS` (likelihood evaluations of one step); the environment variables
    ``SMEFT_PYHF_MAX_MEMORY_GB`` and ``SMEFT_PYHF_MAX_EVALUATIONS`` raise or lower them.

    Args:
        config: the sampler configuration (see :func:`sampler_costs`).
        dim: number of sampled parameters.
        n_data: number of measurements.
        dtype_bytes: bytes per element of the sampler's dtype.
        where: the file and block shown in errors (``runcard.yaml: sampler``).
        max_memory_gb: ceiling on the memory estimate (default: environment or
            :data:`MAX_MEMORY_GB`).
        max_evaluations: ceiling on the evaluations (default: environment or
            :data:`MAX_EVALUATIONS`).

    Returns:
        The estimates (:func:`sampler_costs`).

    Raises:
        ConfigError: naming the file, the setting that drives the estimate, the estimate and the
            ceiling.

    Example:
        >>> from types import SimpleNamespace
        >>> cfg = SimpleNamespace(prescale=PrescaleConfig(n_samples=10**9))
        >>> check_sampler_costs(cfg, dim=5, n_data=10, where="rc.yaml: sampler")
        Traceback (most recent call last):
        ...
        smeft_pyhf.exceptions.ConfigError: rc.yaml: sampler: prescale.n_samples: step 'prescale' would need about 421 GiB of memory (estimate for 5 parameters, 10 measurements, 4-byte floats), above the ceiling of 32 GiB. Hint: reduce prescale.n_samples (or prescale.chunk_size); set $SMEFT_PYHF_MAX_MEMORY_GB to raise the ceiling on a machine with more memory
    """
    memory_gb = max_memory_gb if max_memory_gb is not None else _limit(MEMORY_ENV, MAX_MEMORY_GB)
    evaluations = (max_evaluations if max_evaluations is not None
                   else _limit(EVALUATIONS_ENV, MAX_EVALUATIONS))
    costs = sampler_costs(config, dim=dim, n_data=n_data, dtype_bytes=dtype_bytes)
    sizes = f"{dim} parameters, {n_data} measurements, {dtype_bytes}-byte floats"
    for cost in costs:
        if cost.memory_bytes > memory_gb * _GIB:
            others = {"n_samples": "chunk_size", "batch_size": "chunk_size"}
            step, _, name = cost.memory_field.partition(".")
            extra = f" (or {step}.{others[name]})" if name in others and step != "sample" else ""
            raise ConfigError(
                f"step '{cost.step}' would need about {cost.memory_bytes / _GIB:.3g} GiB of "
                f"memory (estimate for {sizes}), above the ceiling of {memory_gb:g} GiB",
                where=f"{where}: {cost.memory_field}",
                hint=f"reduce {cost.memory_field}{extra}; set ${MEMORY_ENV} to raise the "
                     "ceiling on a machine with more memory")
        if cost.evaluations > evaluations:
            raise ConfigError(
                f"step '{cost.step}' would evaluate the likelihood about "
                f"{cost.evaluations:.3g} times (estimate for {sizes}), above the ceiling of "
                f"{evaluations:.3g}",
                where=f"{where}: {cost.evaluations_field}",
                hint=f"reduce {cost.evaluations_field} (or the other sizes of step "
                     f"'{cost.step}'); set ${EVALUATIONS_ENV} to raise the ceiling")
    return costs

r"""Step 3, training: neural importance sampling with AIS and a prioritised buffer (FAB-style).

The variance loss :math:`\langle p^2/(g_\theta q)\rangle_{x\sim q}` (eq. 22) is estimated with the
optimal proposal :math:`q = f_\theta = p^2/g_\theta` (eq. 23), whose samples come from annealed
importance sampling with the flow :math:`g_\theta` as base and :math:`f_\theta` as target. Its
gradient is :math:`-\langle\nabla_\theta\log g_\theta\rangle_{f_\theta}` (eq. 24), so an
*online* step minimises

.. math:: \mathcal L_\mathrm{online} = -\langle w'\,\log g_\theta(x)\rangle,\qquad
          w' = \alpha\log(w/\alpha + 1),

with the AIS weights :math:`w` normalised to mean one per batch and soft-clipped
(eqs. 25-26, :math:`\alpha = 30`). Every online step stores its AIS samples, weights and
:math:`\log g_{\theta'}` in a buffer; ``buffered_per_online`` *buffered* steps then draw from
the buffer with probability :math:`\propto w` and minimise

.. math:: \mathcal L_\mathrm{buffered} = -\Big\langle \frac{g_{\theta'}(x)}{g_\theta(x)}
          \log g_\theta(x)\Big\rangle,

the q-ratio correction of eq. (27) for the change of the AIS target :math:`p^2/g` between the
parameters at sampling (:math:`\theta'`) and at optimisation (:math:`\theta`); the ratio is
treated as a constant and, like the online weights, normalised per batch and soft-clipped.
After each buffered step the buffered weights are multiplied by the ratio and
:math:`\log g_{\theta'}` is replaced by :math:`\log g_\theta` (Midgley et al.). Eq. (27) of the
paper prints the ratio as :math:`q_\theta/q_{\theta'}`; the importance weight that turns
samples of :math:`p^2/g_{\theta'}` into samples of :math:`p^2/g_\theta` is
:math:`g_{\theta'}/g_\theta`, which is what FAB uses and what we implement.

Everything runs in standardised coordinates on the flow's device and dtype.

Example:
    >>> import torch
    >>> from smeft_pyhf.sampler.flows import FlowConfig, build_flow
    >>> from smeft_pyhf.sampler.training import TrainConfig, train
    >>> g = torch.Generator().manual_seed(0)
    >>> flow = build_flow(2, config=FlowConfig(n_blocks=2, hidden_features=16), generator=g)
    >>> res = train(flow, lambda z: -0.5 * (z**2).sum(-1),
    ...             config=TrainConfig(batch_size=256, n_batches=3, buffered_per_online=2),
    ...             generator=g)
    >>> res.n_steps, len(res.ess_history)
    (9, 3)

References:
    | Five steps to happiness (arXiv:2411.00942), Sec. 2.2 "Flow training", Table 5.
    | https://arxiv.org/abs/2411.00942
    | Flow annealed importance sampling bootstrap (Midgley et al.). https://arxiv.org/abs/2208.01893
    | MadNIS - Neural multi-channel importance sampling. https://arxiv.org/abs/2212.06172
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
from torch import Tensor

from smeft_pyhf.sampler.config import TrainConfig
from smeft_pyhf.sampler.flows import CouplingFlow
from smeft_pyhf.sampler.kernels.ais import anneal
from smeft_pyhf.sampler.kernels.evaluation import evaluate_in_chunks
from smeft_pyhf.sampler.kernels.nonfinite import CheckedTarget, NonFiniteCounts
from smeft_pyhf.sampler.kernels.weights import log_ess

__all__ = [
    "PrioritisedBuffer",
    "TrainConfig",
    "TrainResult",
    "TrainingStatus",
    "learning_rate_factor",
    "soft_clip",
    "train",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingStatus:
    """Handed to the ``callback`` of :func:`train` after every optimiser step (madnis style).

    Attributes:
        step: optimiser step (0-based, online and buffered together).
        batch: online batch (0-based) this step belongs to.
        kind: ``"online"`` or ``"buffered"``.
        loss: the step's loss.
        learning_rate: the learning rate used for the step.
        ess: ``ESS/N`` of the flow's importance weights ``p/g`` on the online batch (online
            steps only; the sampling efficiency of step 4).
        ais_ess: ``ESS/N`` of the AIS weights towards ``p^2/g`` (online steps only).
        acceptance: Metropolis acceptance of the AIS (online steps only).
        step_size: the AIS Metropolis ``tau``.
        buffer_size: points in the buffer.
        seconds: time since the start of the training.
    """

    step: int
    batch: int
    kind: Literal["online", "buffered"]
    loss: float
    learning_rate: float
    ess: float | None
    ais_ess: float | None
    acceptance: float | None
    step_size: float
    buffer_size: int
    seconds: float


class TrainResult(NamedTuple):
    """Result of :func:`train`.

    Attributes:
        losses: loss of every optimiser step (online and buffered, in order).
        ess_history: ``ESS/N`` of the flow weights ``p/g`` on every online batch (before its
            update).
        ais_ess_history: ``ESS/N`` of the AIS weights on every online batch.
        n_steps: number of optimiser steps.
        n_evaluations: number of target evaluations (points).
        step_size: final AIS Metropolis ``tau``.
        seconds: wall time.
        nonfinite: how many target evaluations were NaN or ``-inf``.
    """

    losses: tuple[float, ...]
    ess_history: tuple[float, ...]
    ais_ess_history: tuple[float, ...]
    n_steps: int
    n_evaluations: int
    step_size: float
    seconds: float
    nonfinite: NonFiniteCounts = NonFiniteCounts()


def soft_clip(w: Tensor, alpha: float = 30.0) -> Tensor:
    r"""The soft weight clip :math:`w' = \alpha\log(w/\alpha + 1)` of eq. (26).

    About linear with unit slope for :math:`w \ll \alpha`, logarithmic above;
    ``alpha = inf`` returns ``w``.

    Example:
        >>> soft_clip(torch.tensor([0.0, 1.0, 1000.0]))
        tensor([  0.0000,   0.9837, 106.0835])
    """
    if math.isinf(alpha):
        return w
    return alpha * torch.log1p(w / alpha)


def _normalised_weights(log_w: Tensor) -> Tensor:
    """Weights normalised to mean one over the batch (``-inf`` -> 0)."""
    n = log_w.shape[0]
    return torch.exp(log_w - torch.logsumexp(log_w, 0) + math.log(n))


def learning_rate_factor(step: int, total: int, config: TrainConfig) -> float:
    """Learning-rate multiplier of ``config.lr_schedule`` at optimiser ``step`` of ``total``.

    Example:
        >>> cfg = TrainConfig(lr_schedule="cosine", lr_min_factor=0.1)
        >>> [round(learning_rate_factor(s, 10, cfg), 3) for s in (0, 5, 10)]
        [1.0, 0.55, 0.1]
    """
    if config.lr_schedule == "constant" or total <= 0:
        return 1.0
    frac = min(step / total, 1.0)
    low = config.lr_min_factor
    if config.lr_schedule == "cosine":
        return low + (1 - low) * 0.5 * (1 + math.cos(math.pi * frac))
    return low**frac


class PrioritisedBuffer:
    """A ring buffer of AIS samples, drawn with probability proportional to their weight.

    Holds ``x`` ``(capacity, d)``, the AIS log-weights ``log_w`` and ``log_q``, the flow's
    log-density when the weight was last updated. New points overwrite the oldest.

    Args:
        capacity: maximum number of points.
        like: a tensor giving device and dtype; its last dimension is ``d``.

    Example:
        >>> buf = PrioritisedBuffer(4, torch.zeros(1, 2))
        >>> buf.add(torch.ones(3, 2), torch.zeros(3), torch.zeros(3))
        >>> buf.add(torch.ones(3, 2), torch.zeros(3), torch.zeros(3))
        >>> len(buf)
        4
    """

    def __init__(self, capacity: int, like: Tensor) -> None:
        self.capacity = capacity
        self.x = like.new_empty((capacity, like.shape[-1]))
        self.log_w = like.new_full((capacity,), -math.inf)
        self.log_q = like.new_zeros((capacity,))
        self.size = 0
        self.position = 0

    def __len__(self) -> int:
        return self.size

    def add(self, x: Tensor, log_w: Tensor, log_q: Tensor) -> None:
        """Insert points (the newest ``capacity`` ones when more are given)."""
        n = min(x.shape[0], self.capacity)
        if n == 0:
            return
        x, log_w, log_q = x[-n:], log_w[-n:], log_q[-n:]
        idx = (self.position + torch.arange(n, device=x.device)) % self.capacity
        self.x[idx] = x
        self.log_w[idx] = log_w
        self.log_q[idx] = log_q
        self.position = (self.position + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def sample(self, n: int, *, generator: torch.Generator) -> Tensor:
        """``n`` indices drawn with replacement with probability ``exp(log_w)``."""
        log_w = self.log_w[: self.size]
        probs = torch.softmax(log_w, 0)
        return torch.multinomial(probs, n, replacement=True, generator=generator)

    def adjust(self, idx: Tensor, log_q_new: Tensor) -> None:
        """Re-weight points to the current flow: ``log_w += log_q - log_q_new``."""
        self.log_w[idx] = self.log_w[idx] + self.log_q[idx] - log_q_new
        self.log_q[idx] = log_q_new

    def has_weight(self) -> bool:
        """Whether any buffered point has a non-zero weight (synchronises)."""
        return self.size > 0 and bool(torch.isfinite(self.log_w[: self.size]).any())


def _fraction(log_w: Tensor) -> float:
    return float(log_ess(log_w).exp()) / log_w.shape[0]


def training_converged(ess_history: Sequence[float], config: TrainConfig) -> str:
    """Why training may stop now (see ``TrainConfig.stop_window``), or ``""`` to go on.

    Example:
        >>> cfg = TrainConfig(stop_window=3, stop_tolerance=0.05)
        >>> training_converged([0.1, 0.2, 0.3, 0.50, 0.51, 0.50], cfg)
        ''
        >>> training_converged([0.5, 0.5, 0.5, 0.50, 0.51, 0.50], cfg)
        'mean ESS/N of the last 3 batches 0.503 after 0.5 (less than 5% better)'
    """
    k = config.stop_window
    if k <= 0 or len(ess_history) < 2 * k:
        return ""
    last = sum(ess_history[-k:]) / k
    before = sum(ess_history[-2 * k:-k]) / k
    if last >= config.stop_ess:
        return f"mean ESS/N of the last {k} batches {last:.3g} >= {config.stop_ess:g}"
    if last < before * (1 + config.stop_tolerance):
        return (f"mean ESS/N of the last {k} batches {last:.3g} after {before:.3g} "
                f"(less than {100 * config.stop_tolerance:g}% better)")
    return ""


def train(
    flow: CouplingFlow,
    log_prob: Callable[[Tensor], Tensor],
    *,
    config: TrainConfig,
    generator: torch.Generator,
    callback: Callable[[TrainingStatus], None] | None = None,
    names: Sequence[str] | None = None,
) -> TrainResult:
    r"""Train ``flow`` (in place) by neural importance sampling with AIS and a buffer.

    For each of ``config.n_batches`` online batches:

    1. draw ``batch_size`` points from the flow and evaluate the target (this gives the
       flow's sampling efficiency ``ESS/N``, recorded in ``ess_history``);
    2. run ``config.ais_steps`` AIS steps from :math:`g_\theta` to :math:`p^2/g_\theta`
       (:math:`\log\pi_t = (1-2\beta_t)\log g_\theta + 2\beta_t\log p`), with adaptive
       Metropolis moves; with ``ais_steps=0`` the weights are plain :math:`p^2/g^2`;
    3. one Adam step on :math:`-\langle w'\log g_\theta\rangle` (eqs. 25-26), then store the
       AIS points, weights and :math:`\log g_{\theta'}` in the buffer;
    4. ``config.buffered_per_online`` Adam steps on buffered points drawn :math:`\propto w`
       with the q-ratio correction (eq. 27), updating the buffered weights.

    Then ``config.final_batches`` more batches of ``config.final_batch_size`` points each run
    at the constant ``config.final_learning_rate``.

    The learning rate follows ``config.lr_schedule`` over the optimiser steps of the
    ``n_batches``. Points where
    the target is ``-inf`` (or NaN) get zero weight; they are counted and reported in
    :attr:`TrainResult.nonfinite` (see :class:`~smeft_pyhf.sampler.kernels.nonfinite.CheckedTarget`).

    Args:
        flow: the flow to train (a :class:`CouplingFlow`).
        log_prob: the target in standardised coordinates, ``(B, d) -> (B,)``.
        config: a :class:`TrainConfig`.
        generator: random number generator on the flow's device.
        callback: called with a :class:`TrainingStatus` after every optimiser step.
        names: coefficient names, for error messages; the point is given in original
            coordinates when ``log_prob`` has a ``to_original`` method (a
            :class:`~smeft_pyhf.sampler.kernels.standardisation.Standardised` target).

    Returns:
        A :class:`TrainResult`.

    Raises:
        DataError: when the target is ``+inf`` at an evaluated point (named in the message).

    Example:
        >>> from smeft_pyhf.sampler.flows import FlowConfig, build_flow
        >>> g = torch.Generator().manual_seed(2)
        >>> flow = build_flow(2, config=FlowConfig(n_blocks=2, hidden_features=8))
        >>> statuses = []
        >>> _ = train(flow, lambda z: -0.5 * (z**2).sum(-1), generator=g, callback=statuses.append,
        ...           config=TrainConfig(batch_size=64, n_batches=2, buffered_per_online=1))
        >>> [s.kind for s in statuses]
        ['online', 'buffered', 'online', 'buffered']
        >>> res = train(flow, lambda z: -0.5 * (z**2).sum(-1), generator=g,
        ...             config=TrainConfig(batch_size=64, n_batches=2, ais_steps=0,
        ...                                buffered_per_online=0, final_batches=1,
        ...                                final_batch_size=256))
        >>> res.n_evaluations, len(res.ess_history)
        (384, 3)
    """
    start = time.perf_counter()
    checked = CheckedTarget(log_prob, step="training", names=names, logger=log,
                            to_original=getattr(log_prob, "to_original", None))
    run = _Training(flow, checked, config, generator, callback, start)
    for batch in range(config.n_batches):
        if _train_batch(run, batch):
            break
    if config.final_batches:
        log.info("training: %d final batches of %d points at learning rate %.3g",
                 config.final_batches, config.final_batch_size, config.final_learning_rate)
        run.batch_size, run.fixed_lr = config.final_batch_size, config.final_learning_rate
        for batch in range(config.n_batches, config.n_batches + config.final_batches):
            _train_batch(run, batch, may_stop=False)
    nonfinite = checked.report()
    return TrainResult(
        tuple(run.losses),
        tuple(run.ess_history),
        tuple(run.ais_ess_history),
        run.step,
        run.n_eval,
        float(run.step_size),
        time.perf_counter() - start,
        nonfinite,
    )


def _train_batch(run: _Training, batch: int, may_stop: bool = True) -> bool:
    """One online batch and its buffered steps; whether training has converged (a reason is
    logged) when ``may_stop``."""
    config = run.config
    total = config.n_batches + config.final_batches
    online = run.online_samples()
    run.log_prob.check()
    run.ess_history.append(online.ess)
    run.ais_ess_history.append(online.ais_ess)
    run.online_step(batch, online)
    if config.buffered_per_online and run.buffer.has_weight():
        run.buffered_steps(batch)
    stop = training_converged(run.ess_history, config) if may_stop else ""
    if stop or batch % max(1, total // 10) == 0 or batch in (config.n_batches - 1, total - 1):
        log.info(
            "training batch %d/%d: ESS/N %.3f, AIS ESS/N %.3f, acceptance %.2f, loss %.4g",
            batch + 1,
            total,
            online.ess,
            online.ais_ess,
            online.acceptance,
            run.losses[-1] if run.losses else math.nan,
        )
    if stop:
        log.info("training converged after %d of %d batches: %s", batch + 1,
                 config.n_batches, stop)
    return bool(stop)


class _Online(NamedTuple):
    """One online batch after the AIS: points, AIS log-weights and figures for the log."""

    x: Tensor
    log_w: Tensor
    ess: float
    ais_ess: float
    acceptance: float


class _Training:
    """The state of one :func:`train` run: flow, optimiser, buffer, histories, counters."""

    def __init__(self, flow: CouplingFlow, log_prob: CheckedTarget, config: TrainConfig,
                 generator: torch.Generator,
                 callback: Callable[[TrainingStatus], None] | None, start: float) -> None:
        ref = next(flow.parameters())
        self.flow = flow
        self.log_prob = log_prob
        self.config = config
        self.generator = generator
        self.callback = callback
        self.start = start
        self.optimizer = torch.optim.Adam(flow.parameters(), lr=config.learning_rate)
        self.total_steps = config.n_batches * (1 + config.buffered_per_online)
        self.buffer = PrioritisedBuffer(config.buffer_capacity, ref.new_empty((0, flow.dim)))
        T = config.ais_steps
        beta = torch.arange(T + 1, dtype=ref.dtype, device=ref.device)[:, None] / max(T, 1)
        self.coefficients = torch.cat([1 - 2 * beta, 2 * beta], 1)
        self.step_size = torch.as_tensor(config.initial_step_size, dtype=ref.dtype,
                                         device=ref.device)
        self.losses: list[float] = []
        self.ess_history: list[float] = []
        self.ais_ess_history: list[float] = []
        self.n_eval = 0
        self.step = 0
        self.batch_size = config.batch_size  # the final batches' size once they start
        self.fixed_lr: float | None = None  # the final batches' learning rate

    def components(self, x: Tensor) -> Tensor:
        """``(log g, log p)`` at ``x``: the density components of the AIS path."""
        with torch.no_grad():
            log_g = self.flow.log_prob(x)
        return torch.stack([log_g, evaluate_in_chunks(self.log_prob, x, self.config.chunk_size)],
                           -1)

    def online_samples(self) -> _Online:
        """Steps 1-2: draw a batch from the flow and run the AIS from g to p^2/g."""
        config = self.config
        with torch.no_grad():
            x0, log_q0 = self.flow.sample_and_log_prob(self.batch_size,
                                                       generator=self.generator)
            log_p0 = evaluate_in_chunks(self.log_prob, x0, config.chunk_size)
            comp0 = torch.stack([log_q0, log_p0], -1)
            self.n_eval += self.batch_size
            ess = _fraction(comp0[:, 1] - comp0[:, 0])
            if config.ais_steps > 0:
                res = anneal(
                    self.components,
                    x0,
                    comp0,
                    self.coefficients,
                    generator=self.generator,
                    step_size=self.step_size,
                    mcmc_steps=config.mcmc_steps,
                    target_acceptance=config.target_acceptance,
                    bounds=config.step_size_bounds,
                    resample_threshold=config.ais_resample_threshold,
                )
                x, log_w, self.step_size = res.samples, res.log_weights, res.step_size
                acceptance = float(res.acceptance)
                self.n_eval += res.n_evaluations
            else:
                x, acceptance = x0, math.nan
                log_w = 2 * (comp0[:, 1] - comp0[:, 0])  # p^2/g relative to g
            return _Online(x, log_w, ess, _fraction(log_w), acceptance)

    def optimise(self, loss: Tensor) -> float:
        """One Adam step at the scheduled learning rate; returns that rate."""
        config = self.config
        lr = (self.fixed_lr if self.fixed_lr is not None else
              config.learning_rate * learning_rate_factor(self.step, self.total_steps, config))
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.flow.parameters(), config.max_grad_norm)
        self.optimizer.step()
        self.losses.append(float(loss.detach()))
        self.step += 1
        return lr

    def report(self, batch: int, kind: Literal["online", "buffered"], lr: float,
               online: _Online | None) -> None:
        """Hand a :class:`TrainingStatus` of the last optimiser step to the callback."""
        if self.callback is None:
            return
        self.callback(
            TrainingStatus(
                self.step - 1,
                batch,
                kind,
                self.losses[-1],
                lr,
                None if online is None else online.ess,
                None if online is None else online.ais_ess,
                None if online is None else online.acceptance,
                float(self.step_size),
                len(self.buffer),
                time.perf_counter() - self.start,
            )
        )

    def online_step(self, batch: int, online: _Online) -> None:
        """Step 3, eqs. (25)-(26): one step on the AIS points, which then enter the buffer."""
        if not bool(torch.isfinite(online.log_w).any()):
            log.warning(
                "training batch %d: the target vanishes at every AIS sample; skipped", batch
            )
            return
        log_g = self.flow.log_prob(online.x)
        weights = soft_clip(_normalised_weights(online.log_w), self.config.clip_alpha)
        lr = self.optimise(-(weights * log_g).mean())
        self.buffer.add(online.x, online.log_w, log_g.detach())
        self.report(batch, "online", lr, online)

    def buffered_steps(self, batch: int) -> None:
        """Step 4, eq. (27): steps on buffered points with the q-ratio correction."""
        for _ in range(self.config.buffered_per_online):
            idx = self.buffer.sample(self.batch_size, generator=self.generator)
            log_g = self.flow.log_prob(self.buffer.x[idx])
            log_ratio = self.buffer.log_q[idx] - log_g.detach()
            weights = soft_clip(_normalised_weights(log_ratio), self.config.clip_alpha)
            lr = self.optimise(-(weights * log_g).mean())
            with torch.no_grad():
                self.buffer.adjust(idx, log_g.detach())
            self.report(batch, "buffered", lr, None)

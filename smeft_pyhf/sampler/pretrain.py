r"""Step 2, pre-training: maximum-likelihood training of the flow on MCMC-evolved samples.

The weighted pre-scaling samples are resampled once (with their weights), evolved with
Metropolis steps to obtain unweighted training data, and the flow is trained with the
log-likelihood loss :math:`\mathcal L = -\log g_\theta(x)` (eq. 21). Between batches the
samples are evolved with further Metropolis steps, so that a small set (e.g. 10 batches of
1024) does not over-fit. Everything runs in standardised coordinates.

Example:
    >>> import torch
    >>> from smeft_pyhf.sampler.flows import FlowConfig, build_flow
    >>> from smeft_pyhf.sampler.pretrain import PretrainConfig, pretrain
    >>> g = torch.Generator().manual_seed(0)
    >>> target = lambda z: -0.5 * (z**2).sum(-1)
    >>> flow = build_flow(2, config=FlowConfig(n_blocks=2, hidden_features=16), generator=g)
    >>> res = pretrain(flow, target, torch.randn(512, 2, generator=g),
    ...                config=PretrainConfig(batch_size=128, epochs=1, mcmc_steps=2), generator=g)
    >>> res.n_steps
    4

References:
    | Five steps to happiness (arXiv:2411.00942), Sec. 2.2 "Flow pre-training", Table 5.
    | https://arxiv.org/abs/2411.00942
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from smeft_pyhf.sampler.config import PretrainConfig
from smeft_pyhf.sampler.flows import CouplingFlow
from smeft_pyhf.sampler.kernels.mcmc import run_mcmc
from smeft_pyhf.sampler.kernels.nonfinite import CheckedTarget, NonFiniteCounts
from smeft_pyhf.sampler.kernels.resampling import resample_indices

__all__ = ["PretrainConfig", "PretrainResult", "PretrainStatus", "pretrain"]

log = logging.getLogger(__name__)


class PretrainStatus(NamedTuple):
    """Handed to the ``callback`` of :func:`pretrain` after every optimiser step.

    Attributes:
        step: optimiser step (0-based).
        epoch: epoch (0-based).
        loss: the batch loss ``-mean log g(x)``.
        acceptance: Metropolis acceptance of the last evolution (``nan`` before the first).
        step_size: the current Metropolis ``tau``.
        seconds: time since the start of the pre-training.
    """

    step: int
    epoch: int
    loss: float
    acceptance: float
    step_size: float
    seconds: float


class PretrainResult(NamedTuple):
    """Result of :func:`pretrain`.

    Attributes:
        losses: loss of every optimiser step.
        n_steps: number of optimiser steps.
        n_evaluations: number of target evaluations (points).
        acceptance: mean Metropolis acceptance over the whole pre-training.
        step_size: the final Metropolis ``tau``.
        seconds: wall time.
        samples: the training set after the last evolution ``(n, d)`` (standardised).
        nonfinite: how many target evaluations were NaN or ``-inf``.
    """

    losses: tuple[float, ...]
    n_steps: int
    n_evaluations: int
    acceptance: float
    step_size: float
    seconds: float
    samples: Tensor
    nonfinite: NonFiniteCounts = NonFiniteCounts()


def pretrain(
    flow: CouplingFlow,
    log_prob: Callable[[Tensor], Tensor],
    samples: Tensor,
    *,
    config: PretrainConfig,
    generator: torch.Generator,
    log_weights: Tensor | None = None,
    callback: Callable[[PretrainStatus], None] | None = None,
    names: Sequence[str] | None = None,
) -> PretrainResult:
    r"""Pre-train ``flow`` (in place) by maximum likelihood on MCMC-evolved samples.

    1. Resample ``config.n_samples`` points from ``samples`` with probabilities
       :math:`\propto` ``exp(log_weights)`` (uniformly when no weights are given), and evolve
       them ``config.burn_in_steps`` Metropolis steps.
    2. For ``config.epochs`` epochs, loop over shuffled batches of ``config.batch_size``: one
       Adam step on :math:`-\langle\log g_\theta(x)\rangle`, then ``config.mcmc_steps``
       Metropolis steps on the batch just used (``mcmc_scope="batch"``) or on all points.

    The Metropolis step size adapts towards ``config.target_acceptance`` (eq. 18) unless
    ``config.adapt_step_size`` is off. Samples must be on the flow's device and dtype.
    The target's NaN and ``-inf`` values count as zero density and are reported in
    :attr:`PretrainResult.nonfinite` (see :class:`~smeft_pyhf.sampler.kernels.nonfinite.CheckedTarget`).

    Args:
        flow: the flow to train (a :class:`CouplingFlow` or any module with ``log_prob``).
        log_prob: the target in standardised coordinates, ``(B, d) -> (B,)``.
        samples: pre-scaling samples in standardised coordinates ``(m, d)``.
        config: a :class:`PretrainConfig`.
        generator: random number generator on the samples' device.
        log_weights: their log-weights ``(m,)`` (e.g. :attr:`PrescaleResult.log_weights`).
        callback: called with a :class:`PretrainStatus` after every optimiser step.
        names: coefficient names, for error messages; the point is given in original
            coordinates when ``log_prob`` has a ``to_original`` method (a
            :class:`~smeft_pyhf.sampler.kernels.standardisation.Standardised` target).

    Returns:
        A :class:`PretrainResult`.

    Raises:
        DataError: when the target is ``+inf`` at an evaluated point (named in the message).

    Example:
        >>> from smeft_pyhf.sampler.flows import FlowConfig, build_flow
        >>> g = torch.Generator().manual_seed(1)
        >>> flow = build_flow(2, config=FlowConfig(n_blocks=2, hidden_features=8))
        >>> res = pretrain(flow, lambda z: -0.5 * (z**2).sum(-1), torch.randn(256, 2),
        ...                config=PretrainConfig(batch_size=256, epochs=2, mcmc_steps=1),
        ...                generator=g)
        >>> len(res.losses)
        2
    """
    start = time.perf_counter()
    n = config.n_samples or samples.shape[0]
    log_prob = CheckedTarget(log_prob, step="pre-training", names=names, logger=log,
                             to_original=getattr(log_prob, "to_original", None))
    chains = _burn_in(log_prob, samples, n, config=config, generator=generator,
                      log_weights=log_weights)
    log_prob.check()

    optimizer = torch.optim.Adam(flow.parameters(), lr=config.learning_rate)
    losses: list[float] = []
    n_batches = math.ceil(n / config.batch_size)
    step = 0
    for epoch in range(config.epochs):
        perm = torch.randperm(n, generator=generator, device=chains.x.device)
        for b in range(n_batches):
            batch = perm[b * config.batch_size : (b + 1) * config.batch_size]
            losses.append(_likelihood_step(flow, optimizer, chains.x[batch], config))
            if config.mcmc_steps:
                chains.evolve(log_prob, batch if config.mcmc_scope == "batch" else slice(None),
                              config=config, generator=generator)
                log_prob.check()
            if callback is not None:
                callback(PretrainStatus(step, epoch, losses[-1], chains.last_acceptance,
                                        chains.step_size, time.perf_counter() - start))
            step += 1
    nonfinite = log_prob.report()
    seconds = time.perf_counter() - start
    acceptance = chains.acc_total / chains.acc_steps if chains.acc_steps else math.nan
    log.info(
        "pre-training: %d steps (%d epochs x %d batches), final loss %.4g, acceptance %.2f, "
        "%d target evaluations, %.1f s",
        step,
        config.epochs,
        n_batches,
        losses[-1] if losses else math.nan,
        acceptance,
        chains.n_eval,
        seconds,
    )
    return PretrainResult(tuple(losses), step, chains.n_eval, acceptance, chains.step_size,
                          seconds, chains.x, nonfinite)


def _likelihood_step(flow: CouplingFlow, optimizer: torch.optim.Optimizer, x: Tensor,
                     config: PretrainConfig) -> float:
    """One Adam step on the maximum-likelihood loss ``-mean log g(x)`` (eq. 21)."""
    optimizer.zero_grad(set_to_none=True)
    loss = -flow.log_prob(x).mean()
    loss.backward()
    if config.max_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(flow.parameters(), config.max_grad_norm)
    optimizer.step()
    return float(loss.detach())


@dataclass
class _Chains:
    """The training set: Metropolis chains with their log-density and acceptance counters."""

    x: Tensor
    log_p: Tensor
    step_size: float
    n_eval: int
    acc_total: float
    acc_steps: int
    last_acceptance: float

    def evolve(self, log_prob: Callable[[Tensor], Tensor], chosen: Tensor | slice, *,
               config: PretrainConfig, generator: torch.Generator) -> None:
        """``config.mcmc_steps`` Metropolis steps on the ``chosen`` chains."""
        with torch.no_grad():
            mcmc = run_mcmc(
                log_prob,
                self.x[chosen],
                n_steps=config.mcmc_steps,
                step_size=self.step_size,
                generator=generator,
                log_p=self.log_p[chosen],
                target_acceptance=config.target_acceptance,
                adapt=config.adapt_step_size,
                bounds=config.step_size_bounds,
                chunk_size=config.chunk_size,
            )
            self.x[chosen] = mcmc.samples
            self.log_p[chosen] = mcmc.log_prob
            self.step_size = mcmc.step_size
            self.n_eval += mcmc.n_evaluations
            self.acc_total += mcmc.acceptance * config.mcmc_steps
            self.acc_steps += config.mcmc_steps
            self.last_acceptance = mcmc.acceptance


def _burn_in(log_prob: Callable[[Tensor], Tensor], samples: Tensor, n: int, *,
             config: PretrainConfig, generator: torch.Generator,
             log_weights: Tensor | None) -> _Chains:
    """``n`` points resampled from ``samples`` (by weight) and ``config.burn_in_steps``
    Metropolis steps on them."""
    m = samples.shape[0]
    with torch.no_grad():
        if log_weights is not None:
            idx = resample_indices(log_weights, n, generator=generator)
        elif n != m:
            idx = torch.randint(m, (n,), generator=generator, device=samples.device)
        else:
            idx = torch.arange(m, device=samples.device)
        mcmc = run_mcmc(
            log_prob,
            samples[idx].clone(),
            n_steps=config.burn_in_steps,
            step_size=config.initial_step_size,
            generator=generator,
            target_acceptance=config.target_acceptance,
            adapt=config.adapt_step_size,
            bounds=config.step_size_bounds,
            chunk_size=config.chunk_size,
        )
    acc_total = 0.0 if math.isnan(mcmc.acceptance) else mcmc.acceptance * config.burn_in_steps
    return _Chains(mcmc.samples, mcmc.log_prob, mcmc.step_size, mcmc.n_evaluations, acc_total,
                   config.burn_in_steps, mcmc.acceptance)

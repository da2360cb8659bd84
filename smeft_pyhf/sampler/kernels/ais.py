r"""Annealed importance sampling (AIS) along a linear path in log-density components.

The intermediate densities are :math:`\log\pi_t(x) = \sum_k c_{t,k}\, \phi_k(x)`. Every step
re-weights the chains (eq. 14), resamples them when the effective sample size (eq. 19) drops
below a threshold (eq. 20) and moves them with adaptive Metropolis steps (eqs. 16-18). The
pre-scaling anneals from a Gaussian to the target, the training from the flow to
:math:`p^2/g_\theta`.

Example:
    >>> g = torch.Generator().manual_seed(1)
    >>> fn = lambda x: torch.stack([-0.5 * (x**2).sum(-1), -2.0 * (x**2).sum(-1)], -1)
    >>> x = torch.randn(4096, 1, generator=g)
    >>> beta = torch.linspace(0, 1, 21)[:, None]
    >>> res = anneal(fn, x, fn(x), torch.cat([1 - beta, beta], 1), generator=g, step_size=0.3)
    >>> round(float(res.log_weights.logsumexp(0) - math.log(4096)), 1)  # log of 1/2: N(0, 1/4)
    -0.7

References:
    | Five steps to happiness (arXiv:2411.00942), Sec. 2.2, eqs. (12)-(20).
    | https://arxiv.org/abs/2411.00942
    | Annealed importance sampling (Neal, 1998). https://arxiv.org/abs/physics/9803008
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal, NamedTuple

import torch
from torch import Tensor

from smeft_pyhf.sampler.kernels.mcmc import (
    adapt_step_size,
    gaussian_proposal,
    metropolis_accept,
)
from smeft_pyhf.sampler.kernels.resampling import resample_indices
from smeft_pyhf.sampler.kernels.weights import log_ess, weighted_cholesky

__all__ = ["AnnealResult", "anneal"]

Components = Callable[[Tensor], Tensor]
"""Density components of a batch: ``(B, d) -> (B, k)``."""


class AnnealResult(NamedTuple):
    """Result of :func:`anneal` (tensors stay on the device; no synchronisation).

    Attributes:
        samples: the chains after the last step ``(n, d)``.
        components: the density components at ``samples`` ``(n, k)``.
        log_weights: AIS log-weights ``(n,)``.
        step_size: final ``tau`` (0-dim tensor).
        acceptance: mean acceptance of the second half of the Metropolis steps (0-dim tensor).
        n_resamples: number of resampling steps (0-dim tensor).
        n_evaluations: number of evaluations of the component function (points).
    """

    samples: Tensor
    components: Tensor
    log_weights: Tensor
    step_size: Tensor
    acceptance: Tensor
    n_resamples: Tensor
    n_evaluations: int



def _combine(components: Tensor, coefficients: Tensor) -> Tensor:
    """``sum_k c_k * components_k`` with ``0 * (-inf) = 0`` and NaN -> ``-inf``."""
    terms = components * coefficients
    terms = torch.where(coefficients == 0, torch.zeros_like(terms), terms)
    out = terms.sum(-1)
    return torch.where(torch.isnan(out), out.new_tensor(-math.inf), out)



def _reweight(log_weights: Tensor, components: Tensor, delta_c: Tensor) -> Tensor:
    """Eq. (14): ``log w += (c_t - c_{t-1}) . phi(x)``; a vanished weight stays ``-inf``."""
    neg_inf = log_weights.new_tensor(-math.inf)
    delta = _combine(components, delta_c)
    lw = torch.where(torch.isinf(log_weights) & (log_weights < 0), log_weights,
                     log_weights + delta)
    return torch.where(torch.isnan(lw), neg_inf, lw)


def _resample_if_needed(
    x: Tensor, components: Tensor, log_weights: Tensor, *, threshold: float,
    method: Literal["multinomial", "systematic"], generator: torch.Generator,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Eqs. (19)-(20) without a host-device synchronisation: resample every chain when
    ``ESS < threshold * n`` and give each the mean weight; returns ``(x, components,
    log_weights, resampled)`` with ``resampled`` a 0-dim int64 (1 when it did)."""
    n = x.shape[0]
    need = log_ess(log_weights) < math.log(threshold * n)
    idx = resample_indices(log_weights, n, generator=generator, method=method)
    idx = torch.where(need, idx, torch.arange(n, device=x.device))
    mean_lw = torch.logsumexp(log_weights, 0) - math.log(n)
    log_weights = torch.where(need, mean_lw.expand(n), log_weights)
    return x[idx], components[idx], log_weights, need.to(torch.int64)


class _Moves(NamedTuple):
    x: Tensor
    components: Tensor
    step_size: Tensor
    rates: list[Tensor]  # the acceptance rate of every Metropolis step, in order


def _metropolis_moves(
    fn: Components, x: Tensor, components: Tensor, c_t: Tensor, step: Tensor, *,
    n_moves: int, factor: Tensor | None, scale: Tensor | float, generator: torch.Generator,
    adapt: bool, target_acceptance: float, bounds: tuple[float, float],
) -> _Moves:
    """``n_moves`` Metropolis steps on :math:`\\pi_t = c_t \\cdot \\phi` (eqs. 16-18); the
    proposal is shaped by ``factor`` (a Cholesky factor) when given, else by ``scale``."""
    current = _combine(components, c_t)
    rates: list[Tensor] = []
    for _ in range(n_moves):
        if factor is None:
            proposal = gaussian_proposal(x, step, scale, generator)
        else:
            noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            proposal = x + torch.sqrt(2 * step) * (noise @ factor.T)
        comp_new = fn(proposal)
        new = _combine(comp_new, c_t)
        accepted = metropolis_accept(new - current, generator)
        x = torch.where(accepted[:, None], proposal, x)
        components = torch.where(accepted[:, None], comp_new, components)
        current = torch.where(accepted, new, current)
        rate = accepted.to(x.dtype).mean()
        rates.append(rate)
        if adapt:
            step = adapt_step_size(step, rate, target=target_acceptance, bounds=bounds)
    return _Moves(x, components, step, rates)


def anneal(
    components_fn: Callable[[Tensor], Tensor],
    x: Tensor,
    components: Tensor,
    coefficients: Tensor,
    *,
    generator: torch.Generator,
    step_size: Tensor | float,
    mcmc_steps: int = 1,
    target_acceptance: float = 0.33,
    adapt: bool = True,
    bounds: tuple[float, float] = (1e-12, 1e4),
    resample_threshold: float = 0.0,
    resampling: Literal["multinomial", "systematic"] = "multinomial",
    scale: Tensor | float = 1.0,
    log_weights: Tensor | None = None,
    population_proposal: bool = False,
) -> AnnealResult:
    r"""Annealed importance sampling from :math:`\pi_0` to :math:`\pi_T` (see the module).

    The intermediate densities are :math:`\log\pi_t(x) = \sum_k c_{t,k}\, \phi_k(x)` with
    components :math:`\phi(x)` returned by ``components_fn`` and the rows ``c_t`` of
    ``coefficients``. Pre-scaling uses :math:`\phi = (\log p_0, \log p_T)` and
    :math:`c_t = (1-\beta_t, \beta_t)`; the training uses :math:`\phi = (\log g_\theta, \log p)`
    and :math:`c_t = (1-2\beta_t, 2\beta_t)`, which anneals from the flow to :math:`p^2/g_\theta`.

    Every step ``t = 1..T`` (i) re-weights, eq. (14),
    :math:`\log w \mathrel{+}= (c_t - c_{t-1})\cdot\phi(x)`, (ii) resamples when
    ``ESS < resample_threshold * n`` and gives every chain the mean weight, eq. (20), and
    (iii) makes ``mcmc_steps`` Metropolis steps on :math:`\pi_t`, adapting ``tau`` with eq. (18).
    The loop never synchronises with the device.

    Args:
        components_fn: ``(B, d) -> (B, k)`` density components (NaN is treated as ``-inf``).
        x: initial samples from :math:`\pi_0` ``(n, d)``.
        components: ``components_fn(x)`` ``(n, k)``.
        coefficients: ``(T + 1, k)``; row 0 defines :math:`\pi_0`.
        generator: random number generator on the device of ``x``.
        step_size: initial ``tau``.
        mcmc_steps: Metropolis steps per temperature.
        target_acceptance: acceptance the adaptation aims at.
        adapt: adapt ``tau`` after every Metropolis step.
        bounds: clamp range for ``tau``.
        resample_threshold: relative ESS threshold for resampling (0: never).
        resampling: ``"multinomial"`` or ``"systematic"``.
        scale: per-dimension proposal scale.
        log_weights: initial log-weights (default zeros).
        population_proposal: shape the proposal at every temperature with the Cholesky
            factor of the weighted covariance of the current samples (``scale`` is ignored).

    Returns:
        An :class:`AnnealResult`.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> fn = lambda x: torch.stack([-0.5 * (x**2).sum(-1), -0.5 * ((x - 1) ** 2).sum(-1)], -1)
        >>> x = torch.randn(256, 2, generator=g)
        >>> beta = torch.linspace(0, 1, 11)[:, None]
        >>> res = anneal(fn, x, fn(x), torch.cat([1 - beta, beta], 1), generator=g, step_size=0.3)
        >>> res.samples.mean(0).round(decimals=0)
        tensor([1., 1.])
    """
    n = x.shape[0]
    coefficients = coefficients.to(dtype=x.dtype, device=x.device)
    step = torch.as_tensor(step_size, dtype=x.dtype, device=x.device).clone()
    lw = x.new_zeros(n) if log_weights is None else log_weights.clone()
    neg_inf = x.new_tensor(-math.inf)
    n_resamples = torch.zeros((), dtype=torch.int64, device=x.device)
    rates: list[Tensor] = []

    def fn(points: Tensor) -> Tensor:
        out = components_fn(points)
        return torch.where(torch.isnan(out), neg_inf, out)

    with torch.no_grad():
        for t in range(1, coefficients.shape[0]):
            lw = _reweight(lw, components, coefficients[t] - coefficients[t - 1])
            if resample_threshold > 0:
                x, components, lw, resampled = _resample_if_needed(
                    x, components, lw, threshold=resample_threshold, method=resampling,
                    generator=generator)
                n_resamples = n_resamples + resampled
            moves = _metropolis_moves(
                fn, x, components, coefficients[t], step, n_moves=mcmc_steps,
                factor=weighted_cholesky(x, lw) if population_proposal else None, scale=scale,
                generator=generator, adapt=adapt, target_acceptance=target_acceptance,
                bounds=bounds)
            x, components, step = moves.x, moves.components, moves.step_size
            rates.extend(moves.rates)
        acceptance = _mean_of_second_half(rates, x.new_zeros(()))
    return AnnealResult(x, components, lw, step, acceptance, n_resamples, n * len(rates))


def _mean_of_second_half(rates: list[Tensor], zero: Tensor) -> Tensor:
    """The mean of the last ``len - len // 2`` rates (NaN when there are none)."""
    total = zero
    for rate in rates[len(rates) // 2:]:
        total = total + rate
    n_counted = len(rates) - len(rates) // 2
    return total / n_counted if n_counted else zero.new_tensor(math.nan)

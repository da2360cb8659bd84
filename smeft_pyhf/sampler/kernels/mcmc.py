"""The adaptive Metropolis kernel: Gaussian proposal (eq. 16), acceptance (eq. 17) and the
step-size adaptation (eq. 18), batched over independent chains.

Example:
    >>> g = torch.Generator().manual_seed(0)
    >>> x, log_p, accepted = metropolis_step(lambda x: -(x**2).sum(-1), torch.zeros(3, 1),
    ...                                      torch.zeros(3), step_size=0.5, generator=g)
    >>> bool(torch.equal(x[~accepted], torch.zeros_like(x[~accepted])))
    True

References:
    | Five steps to happiness (arXiv:2411.00942), Sec. 2.2, eqs. (16)-(18).
    | https://arxiv.org/abs/2411.00942
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from smeft_pyhf.sampler.kernels.evaluation import evaluate_in_chunks

__all__ = [
    "MCMCResult",
    "adapt_step_size",
    "gaussian_proposal",
    "metropolis_accept",
    "metropolis_step",
    "run_mcmc",
]

LogProb = Callable[[Tensor], Tensor]


class MCMCResult(NamedTuple):
    """Result of :func:`run_mcmc`.

    Attributes:
        samples: the chains after the last step ``(n, d)``.
        log_prob: the target at ``samples`` ``(n,)``.
        step_size: the final ``tau``.
        acceptance: mean acceptance over all steps (``nan`` when no steps were made).
        n_evaluations: number of target evaluations (points).
    """

    samples: Tensor
    log_prob: Tensor
    step_size: float
    acceptance: float
    n_evaluations: int



def adapt_step_size(
    step_size: Tensor,
    acceptance: Tensor,
    *,
    target: float = 0.33,
    bounds: tuple[float, float] = (1e-12, 1e4),
) -> Tensor:
    r"""The adaptive step size of eq. (18): :math:`\tau \leftarrow \tau\, 2^{\min(r, 1)}`.

    With :math:`r = a / a_\mathrm{target} - 1`, so ``tau`` halves at zero acceptance and at most
    doubles. Works on tensors (no device synchronisation).

    Example:
        >>> adapt_step_size(torch.tensor(1.0), torch.tensor(0.0))
        tensor(0.5000)
        >>> adapt_step_size(torch.tensor(1.0), torch.tensor(0.99))
        tensor(2.)
    """
    r = torch.clamp(acceptance / target - 1.0, max=1.0)
    return torch.clamp(step_size * torch.exp2(r), bounds[0], bounds[1])



def gaussian_proposal(
    x: Tensor, step_size: Tensor, scale: Tensor | float, generator: torch.Generator
) -> Tensor:
    """The proposal of eq. (16), ``q(x'|x) ~ exp(-(x'-x)^2 / (4 tau))``: variance ``2 tau``.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> gaussian_proposal(torch.zeros(3, 2), torch.tensor(0.5), 1.0, g).shape
        torch.Size([3, 2])
    """
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return x + torch.sqrt(2 * step_size) * scale * noise


def metropolis_accept(log_ratio: Tensor, generator: torch.Generator) -> Tensor:
    """Eq. (17) with a symmetric proposal: accept where ``log u < log_ratio``.

    A NaN ratio (both densities ``-inf``) is a rejection.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> metropolis_accept(torch.tensor([0.0, -math.inf, math.nan]), g)
        tensor([ True, False, False])
    """
    u = torch.rand(
        log_ratio.shape, generator=generator, device=log_ratio.device, dtype=log_ratio.dtype
    )
    return torch.log(u) < log_ratio


def metropolis_step(
    log_prob: LogProb,
    x: Tensor,
    log_p: Tensor,
    *,
    step_size: Tensor | float,
    generator: torch.Generator,
    scale: Tensor | float = 1.0,
    chunk_size: int | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """One batched Metropolis step with the Gaussian proposal of eq. (16).

    Args:
        log_prob: the target ``(B, d) -> (B,)``.
        x: current states ``(n, d)``.
        log_p: the target at ``x`` ``(n,)``.
        step_size: ``tau``; the proposal is ``x + sqrt(2 tau) * scale * N(0, 1)``.
        generator: random number generator on the device of ``x``.
        scale: per-dimension proposal scale (broadcast against ``x``).
        chunk_size: evaluate the target in chunks of at most this many points.

    Returns:
        ``(x, log_p, accepted)``: new states, their log-density and the boolean acceptance mask.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.zeros(4, 2)
        >>> x, lp, acc = metropolis_step(lambda x: -0.5 * (x**2).sum(-1), x, torch.zeros(4),
        ...                              step_size=0.1, generator=g)
        >>> x.shape, acc.dtype
        (torch.Size([4, 2]), torch.bool)
    """
    step = torch.as_tensor(step_size, dtype=x.dtype, device=x.device)
    proposal = gaussian_proposal(x, step, scale, generator)
    log_p_new = evaluate_in_chunks(log_prob, proposal, chunk_size)
    accepted = metropolis_accept(log_p_new - log_p, generator)
    x = torch.where(accepted[:, None], proposal, x)
    log_p = torch.where(accepted, log_p_new, log_p)
    return x, log_p, accepted


def run_mcmc(
    log_prob: LogProb,
    x: Tensor,
    *,
    n_steps: int,
    step_size: Tensor | float,
    generator: torch.Generator,
    log_p: Tensor | None = None,
    target_acceptance: float = 0.33,
    adapt: bool = True,
    bounds: tuple[float, float] = (1e-12, 1e4),
    scale: Tensor | float = 1.0,
    chunk_size: int | None = None,
) -> MCMCResult:
    """Run ``n_steps`` batched Metropolis steps, adapting ``tau`` with eq. (18) after each.

    Args:
        log_prob: the target ``(B, d) -> (B,)``.
        x: initial states ``(n, d)``.
        n_steps: number of steps (0 returns the input).
        step_size: initial ``tau``.
        generator: random number generator on the device of ``x``.
        log_p: the target at ``x`` if known (saves one evaluation).
        target_acceptance: acceptance that the adaptation aims at.
        adapt: adapt ``tau`` after every step (``False``: keep it fixed, exact detailed balance).
        bounds: clamp range for ``tau``.
        scale: per-dimension proposal scale.
        chunk_size: evaluate the target in chunks of at most this many points.

    Returns:
        An :class:`MCMCResult`.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> res = run_mcmc(lambda x: -0.5 * (x**2).sum(-1), torch.zeros(512, 3), n_steps=50,
        ...                step_size=0.1, generator=g)
        >>> abs(res.acceptance - 0.33) < 0.1
        True
    """
    with torch.no_grad():
        n_eval = 0
        if log_p is None:
            log_p = evaluate_in_chunks(log_prob, x, chunk_size)
            n_eval += x.shape[0]
        step = torch.as_tensor(step_size, dtype=x.dtype, device=x.device).clone()
        total = x.new_zeros(())
        for _ in range(n_steps):
            x, log_p, accepted = metropolis_step(
                log_prob,
                x,
                log_p,
                step_size=step,
                generator=generator,
                scale=scale,
                chunk_size=chunk_size,
            )
            rate = accepted.to(x.dtype).mean()
            total = total + rate
            if adapt:
                step = adapt_step_size(step, rate, target=target_acceptance, bounds=bounds)
            n_eval += x.shape[0]
        acceptance = float(total / n_steps) if n_steps else math.nan
        return MCMCResult(x, log_p, float(step), acceptance, n_eval)


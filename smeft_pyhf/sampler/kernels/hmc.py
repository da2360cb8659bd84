r"""Hamiltonian Monte Carlo, batched over independent chains, with a shared adaptive step size.

One iteration draws Gaussian momenta, makes ``leapfrog_steps`` leapfrog steps of size
:math:`\epsilon` (jittered by +-20 % per chain, so that no trajectory length resonates with
the target) and accepts each chain's end point with probability
:math:`\min(1, e^{-\Delta H})`. During the first ``adapt_iterations`` iterations
:math:`\epsilon \leftarrow \epsilon\, e^{(a - a^*)/2}` moves the mean acceptance ``a`` towards
``target_acceptance``; after them the kernel is fixed and leaves the target invariant.

Points where the target is ``-inf`` or NaN are never accepted; their gradients count as zero.

Example:
    >>> g = torch.Generator().manual_seed(0)
    >>> x0 = torch.zeros(2000, 2)
    >>> seen = []
    >>> res = run_hmc(lambda x: -0.5 * (x**2).sum(-1), x0, n_iterations=60, generator=g,
    ...               callback=lambda i, x: seen.append(x) if i >= 20 else None)
    >>> x = torch.cat(seen)
    >>> round(float(x.var(0).mean()), 1), 0.5 < res.acceptance < 1
    (1.0, True)

References:
    | R. M. Neal, MCMC using Hamiltonian dynamics (2011). https://arxiv.org/abs/1206.1901
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["HMCResult", "run_hmc", "value_and_grad"]

LogProb = Callable[[Tensor], Tensor]


class HMCResult(NamedTuple):
    """Result of :func:`run_hmc`.

    Attributes:
        samples: the chains after the last iteration ``(n, d)``.
        log_prob: the target there ``(n,)``.
        step_size: the leapfrog step size after adaptation.
        acceptance: mean acceptance over the iterations after adaptation (over all of them
            when every iteration adapted).
        n_gradients: number of target gradients evaluated (points).
    """

    samples: Tensor
    log_prob: Tensor
    step_size: float
    acceptance: float
    n_gradients: int


def value_and_grad(log_prob: LogProb, x: Tensor) -> tuple[Tensor, Tensor]:
    """``log p(x)`` (detached, ``-inf`` where NaN) and its gradient, zero where the target or
    the gradient is not finite.

    Example:
        >>> lp, g = value_and_grad(lambda x: -0.5 * (x**2).sum(-1), torch.tensor([[1.0, 2.0]]))
        >>> lp.tolist(), g.tolist()
        ([-2.5], [[-1.0, -2.0]])
    """
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        lp = log_prob(xg)
        finite = torch.isfinite(lp)
        (grad,) = torch.autograd.grad(torch.where(finite, lp, torch.zeros_like(lp)).sum(), xg)
    grad = torch.where(finite[:, None], torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0),
                       torch.zeros_like(grad))
    lp = torch.where(torch.isnan(lp), torch.full_like(lp, -math.inf), lp.detach())
    return lp, grad


def run_hmc(
    log_prob: LogProb,
    x0: Tensor,
    *,
    n_iterations: int,
    generator: torch.Generator,
    leapfrog_steps: int = 8,
    step_size: float = 0.2,
    adapt_iterations: int = 20,
    target_acceptance: float = 0.75,
    callback: Callable[[int, Tensor], None] | None = None,
) -> HMCResult:
    """Run ``n_iterations`` HMC iterations on every chain of ``x0``.

    Args:
        log_prob: the target ``(B, d) -> (B,)``, differentiable.
        x0: start points ``(n, d)`` (one chain each); the target should be finite there.
        n_iterations: iterations (each ``leapfrog_steps`` gradient evaluations per chain).
        generator: random number generator on the device of ``x0``.
        leapfrog_steps: leapfrog steps per iteration.
        step_size: initial leapfrog step size.
        adapt_iterations: iterations during which the step size adapts.
        target_acceptance: the mean acceptance the adaptation aims at.
        callback: called as ``callback(iteration, x)`` after every iteration.

    Returns:
        An :class:`HMCResult`.
    """
    x = x0.detach().clone()
    lp, grad = value_and_grad(log_prob, x)
    eps = float(step_size)
    accepted_after: list[float] = []
    accepted_all: list[float] = []
    n = x.shape[0]
    for it in range(n_iterations):
        p0 = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        jitter = 0.8 + 0.4 * torch.rand((n, 1), generator=generator, device=x.device,
                                        dtype=x.dtype)
        e = eps * jitter
        xn, gn = x, grad
        pn = p0 + 0.5 * e * gn
        for step in range(leapfrog_steps):
            xn = xn + e * pn
            lpn, gn = value_and_grad(log_prob, xn)
            if step < leapfrog_steps - 1:
                pn = pn + e * gn
        pn = pn + 0.5 * e * gn
        log_ratio = (lpn - 0.5 * (pn * pn).sum(-1)) - (lp - 0.5 * (p0 * p0).sum(-1))
        log_ratio = torch.nan_to_num(log_ratio, nan=-math.inf)
        u = torch.rand(log_ratio.shape, generator=generator, device=x.device, dtype=x.dtype)
        accept = (torch.log(u) < log_ratio) & torch.isfinite(lpn)
        x = torch.where(accept[:, None], xn, x)
        lp = torch.where(accept, lpn, lp)
        grad = torch.where(accept[:, None], gn, grad)
        rate = float(accept.to(x.dtype).mean())
        accepted_all.append(rate)
        if it < adapt_iterations:
            eps *= math.exp(0.5 * (rate - target_acceptance))
        else:
            accepted_after.append(rate)
        if callback is not None:
            callback(it, x)
    rates = accepted_after or accepted_all
    return HMCResult(x, lp, eps, sum(rates) / len(rates) if rates else math.nan,
                     n * n_iterations * leapfrog_steps + n)

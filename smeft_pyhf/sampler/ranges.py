"""The histogram ranges of a sampler run, from the pre-scaling chains and the trained flow.

:func:`posterior_ranges` takes ``mean +- k std`` of the pre-scaling sample, widened to reach
every chain (plus 5 % of their span), so a separate mode with a small weight stays inside;
:func:`histogram_ranges` intersects them with given fit ranges; :func:`widen_to_flow` widens
them to the weighted tail quantiles of a pilot sample of the trained flow;
:func:`extend_to_profile` moves an end out (to the given range's edge) where the profile
likelihood there is still inside the 95 % region, which a shallow second minimum with little
posterior mass (a Yukawa's flipped sign against its prior edge) can leave after the first two.

Example:
    >>> chains = torch.tensor([[-1.0], [3.0]])
    >>> posterior_ranges(chains, torch.tensor([0.0]), torch.tensor([0.5]), 4.0)
    tensor([[-2.0000,  3.2000]])
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from smeft_pyhf.sampler.kernels.evaluation import evaluate_in_chunks
from smeft_pyhf.sampler.kernels.nonfinite import CheckedTarget
from smeft_pyhf.sampler.kernels.weights import weighted_quantiles
from smeft_pyhf.sampler.profiling import ProfileConfig, lbfgs_maximise

__all__ = ["extend_to_profile", "histogram_ranges", "posterior_ranges", "widen_to_flow"]

log = logging.getLogger(__name__)

Draw = Callable[[int, torch.Generator], tuple[Tensor, Tensor]]
"""``(n, generator) -> (x, log q)``: points of the flow in original coordinates."""


def _reach(low: Tensor, high: Tensor, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
    """``[low, high]`` widened to ``[lo, hi]`` plus 5 % of its span on each side."""
    pad = 0.05 * (hi - lo)
    return torch.minimum(low, lo - pad), torch.maximum(high, hi + pad)


def posterior_ranges(chains: Tensor, mean: Tensor, std: Tensor, k: float) -> Tensor:
    """``(d, 2)``: ``mean +- k std``, widened to every pre-scaling chain (plus 5 %), so that a
    second mode with a small weight is not cut off."""
    low, high = mean - k * std, mean + k * std
    if chains.shape[0]:
        low, high = _reach(low, high, chains.min(0).values, chains.max(0).values)
    return torch.stack([low, high], dim=1)


def histogram_ranges(given: Tensor | None, posterior: Tensor, mode: str) -> Tensor:
    """The ranges to bin: ``posterior`` without ``given`` ranges; with them, their
    intersection (``mode="posterior"``, falling back to ``given`` where it is empty) or
    ``given`` itself (``mode="given"``).

    Example:
        >>> histogram_ranges(torch.tensor([[-5.0, 5.0]]), torch.tensor([[-1.0, 9.0]]), "posterior")
        tensor([[-1.,  5.]])
    """
    if given is None:
        return posterior
    if mode != "posterior":
        return given
    clipped = torch.stack([torch.maximum(given[:, 0], posterior[:, 0]),
                           torch.minimum(given[:, 1], posterior[:, 1])], dim=1)
    return torch.where((clipped[:, 1] > clipped[:, 0])[:, None], clipped, given)


def widen_to_flow(draw: Draw, target: Callable[[Tensor], Tensor], ranges: Tensor,
                  given: Tensor | None, *, n: int, tail: float, chunk: int,
                  generator: torch.Generator, level: int,
                  names: Sequence[str] | None = None) -> Tensor:
    """``ranges`` widened to the weighted ``tail`` quantiles of ``n`` flow samples (+5 %),
    within ``given`` when it is set.

    The pre-scaling chains can miss a mode that the trained flow finds; this pilot sample
    puts the histograms around it too.
    """
    x, log_q = draw(n, generator)
    checked = CheckedTarget(target, step="sampling (range pilot)", names=names, logger=log)
    log_w = (evaluate_in_chunks(checked, x, chunk) - log_q).to(torch.float64)
    checked.report()
    ok = torch.isfinite(log_w)
    if int(ok.sum()) < 2:
        return ranges
    q = weighted_quantiles(x[ok], log_w[ok], torch.tensor([tail, 1.0 - tail]))
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


def _end_starts(points: Tensor, log_p: Tensor, i: int, value: float, best: Tensor,
                k: int) -> Tensor:
    """The ``k`` best of the ``8 k`` points nearest to ``x_i = value`` and the best point,
    moved onto ``x_i = value``."""
    near = torch.argsort((points[:, i] - value).abs())[: 8 * k]
    top = near[torch.argsort(log_p[near], descending=True)[:k]]
    starts = torch.cat([points[top], best[None]]).clone()
    starts[:, i] = value
    return starts


def extend_to_profile(log_prob: Callable[[Tensor], Tensor], ranges: Tensor,
                      given: Tensor | None, points: Tensor, *, threshold: float = 4.84,
                      rounds: int = 3, n_starts: int = 8,
                      config: ProfileConfig | None = None, covariance: Tensor | None = None,
                      level: int = logging.INFO,
                      names: Sequence[str] | None = None) -> Tensor:
    """``ranges`` with every end moved out where ``-2 Delta log L`` of the profile there is
    below ``threshold``.

    At each end inside ``given`` (every end without it), ``log_prob`` is maximised with the
    coordinate fixed at the end, from the ``n_starts`` best of ``points`` near it and from the
    best point found (maximised freely first). Below ``threshold`` (the 95 % threshold 3.84
    plus a margin), the end moves to ``given``'s edge, or without it by half the range's
    width, and is checked again, at most ``rounds`` times.

    Args:
        log_prob: the batched, differentiable target ``(B, d) -> (B,)``.
        ranges: ``(d, 2)`` histogram ranges.
        given: ``(d, 2)`` fit ranges (a flat prior's box) the ends may not pass, or ``None``.
        points: ``(n, d)`` points in the posterior (e.g. the pre-scaling chains), the starts.
        threshold: ``-2 Delta log L`` an end must reach to stay.
        rounds: the most moves of one end.
        n_starts: start points per end besides the best point.
        config: L-BFGS settings (at least 300 steps are allowed).
        covariance: the L-BFGS preconditioner (the pre-scaling covariance).
        level: the logging level of the line per moved end.
        names: coefficient names, for the log.

    Returns:
        The ``(d, 2)`` ranges, the same where no end moved.

    Example:
        >>> # x0 has a second minimum at 2.5 that the chains never reached
        >>> log_l = lambda x: torch.logaddexp(-0.5 * x[:, 0] ** 2, -0.5 * ((x[:, 0] - 2.5) / 0.3) ** 2
        ...                                   - 1.0) - 0.5 * x[:, 1] ** 2
        >>> chains = torch.randn(500, 2, generator=torch.Generator().manual_seed(0),
        ...                      dtype=torch.float64)
        >>> ranges = torch.tensor([[-3.0, 2.0], [-3.0, 3.0]], dtype=torch.float64)
        >>> given = torch.tensor([[-4.0, 4.0], [-4.0, 4.0]], dtype=torch.float64)
        >>> extend_to_profile(log_l, ranges, given, chains).tolist()   # -2 Delta log L 2.9 at 2
        [[-3.0, 4.0], [-3.0, 3.0]]
    """
    base = config or ProfileConfig()
    config = base.replace(max_steps=max(base.max_steps, 300))
    ranges = ranges.clone()
    points = points.to(ranges)
    d = ranges.shape[0]
    cov = None if covariance is None else covariance.to(ranges)
    with torch.no_grad():
        log_p = evaluate_in_chunks(log_prob, points, 65536).to(ranges)
    log_p = torch.where(torch.isfinite(log_p), log_p, torch.full_like(log_p, -torch.inf))
    top = torch.argsort(log_p, descending=True)[: 4 * n_starts]
    free = lbfgs_maximise(log_prob, points[top], config=config, preconditioner=cov)
    j = int(torch.argmax(free.log_prob))  # finite or -inf
    best, best_lp = free.x[j], float(free.log_prob[j])
    open_ends = [(i, side) for i in range(d) for side in (0, 1)]
    for _ in range(rounds):
        ends = [(i, side) for i, side in open_ends
                if given is None or (ranges[i, side] - given[i, side]).abs() > 0]
        if not ends:
            break
        starts = torch.cat([_end_starts(points, log_p, i, float(ranges[i, side]), best,
                                        n_starts) for i, side in ends])
        per = n_starts + 1
        fixed = torch.zeros_like(starts, dtype=torch.bool)
        for k, (i, _) in enumerate(ends):
            fixed[k * per:(k + 1) * per, i] = True
        res = lbfgs_maximise(log_prob, starts, fixed=fixed, config=config, preconditioner=cov)
        lp = res.log_prob.reshape(len(ends), per)  # finite or -inf
        delta = 2.0 * (best_lp - lp.amax(dim=1))
        widths = ranges[:, 1] - ranges[:, 0]
        open_ends = []
        for k, (i, side) in enumerate(ends):
            if float(delta[k]) >= threshold:
                continue
            old = float(ranges[i, side])
            if given is not None:
                ranges[i, side] = given[i, side]
            else:
                ranges[i, side] += (0.5 if side else -0.5) * float(widths[i])
            open_ends.append((i, side))
            log.log(level, "histogram range of %s: -2 Delta log L of the profile at its %s end "
                    "%.4g is %.2f, below %.2f; the end moves to %.4g",
                    names[i] if names else f"x{i}", "upper" if side else "lower", old,
                    float(delta[k]), threshold, float(ranges[i, side]))
    return ranges

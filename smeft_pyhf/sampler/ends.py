"""The bins at the ends of the profiled intervals, maximised to convergence.

A profiled interval ends where the linear interpolant of ``-2 Delta log L`` through the 1D
profile bins crosses the level's threshold (1 for 68 %, 3.84 for 95 %). Step 5 maximises every
bin with a bounded number of L-BFGS steps from the sampled points in it; a bin whose runs stopped
short sits too low, and where the profile is shallow that moves the interval's end by a sizeable
part of a bin, differently for every seed. :func:`refine_ends` maximises ``log L`` again, with
the coefficient fixed at the bin centre, for the two bins either side of every crossing and
for the profile's lowest bin (an interval is read off ``-2 Delta log L`` less its minimum), from
the profile points of the bin and of its two neighbours and from the best fit (all moved onto
the constraint), with many more L-BFGS steps than step 5 takes. A bin is only raised, never
lowered (every value is a point's ``log L`` at the bin centre, so the higher one is the better
estimate of the maximum), and a raised bin can move the crossing to another bin, so the pass
repeats until no bin gains or ``rounds`` are done.

Example:
    >>> import torch
    >>> from smeft_pyhf.sampler.profiling import ProfileResult
    >>> c = torch.linspace(-4, 4, 17, dtype=torch.float64)
    >>> log_l = lambda x: -0.5 * x[:, 0] ** 2 - 0.5 * (x[:, 1] - x[:, 0]) ** 2
    >>> prof = -0.5 * c**2
    >>> prof[12] -= 1.5                      # the bin at c = 2, beside the 95 % end, short
    >>> pts = torch.stack([c, c], dim=-1)[None]
    >>> res = ProfileResult.from_1d(prof[None], pts, c[None],
    ...                             torch.zeros(2, dtype=torch.float64), 0.0)
    >>> out = refine_ends(log_l, res, ["a"])
    >>> round(float(out.profile.profile1d[0, 12]), 6), out.n_raised
    (-2.0, 1)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from ..formats.intervals import LEVELS, Level
from ..results.intervals import delta_chi2_threshold
from .profiling import ProfileConfig, ProfileResult, lbfgs_maximise

log = logging.getLogger(__name__)

__all__ = ["EndRefinement", "crossing_bins", "refine_ends"]

LogProb = Callable[[Tensor], Tensor]


class EndRefinement(NamedTuple):
    """Outcome of :func:`refine_ends`.

    Attributes:
        profile: the :class:`ProfileResult` with the bins at the interval ends re-maximised
            (only raised; ``best_fit``/``best_log_prob`` updated if a higher point turned up).
        n_bins: bins re-maximised (over all rounds).
        n_raised: bins whose value rose by more than the tolerance.
        largest_gain: the largest rise of a bin, in ``-2 Delta log L``.
        converged_fraction: share of the start points whose L-BFGS run converged.
        rounds: passes made.
        n_evaluations: target evaluations (with gradients) the refinement took.
    """

    profile: ProfileResult
    n_bins: int
    n_raised: int
    largest_gain: float
    converged_fraction: float
    rounds: int
    n_evaluations: int


def crossing_bins(delta: Tensor, thresholds: Sequence[float], width: int = 1) -> Tensor:
    """``(n, p)`` mask of the bins within ``width`` bins of a threshold crossing.

    A crossing lies between bins ``j`` and ``j + 1`` when one is at most the threshold and
    the other above it (non-finite counts as above); both bins and ``width - 1`` more on each
    side are marked.

    Example:
        >>> crossing_bins(torch.tensor([[9.0, 4.0, 1.0, 0.0, 2.0, 9.0]]), [3.84]).int().tolist()
        [[0, 1, 1, 0, 1, 1]]
    """
    n, p = delta.shape
    mask = torch.zeros((n, p), dtype=torch.bool, device=delta.device)
    if p < 2:
        return mask
    finite = torch.where(torch.isfinite(delta), delta, torch.full_like(delta, torch.inf))
    for t in thresholds:
        below = finite <= t
        edge = below[:, :-1] != below[:, 1:]          # a crossing between j and j + 1
        for k in range(width):
            mask[:, : p - 1 - k] |= edge[:, k:]        # bins j - k
            mask[:, 1 + k:] |= edge[:, : p - 1 - k]    # bins j + 1 + k
    return mask


def _rows(points: Tensor, centres: Tensor, best_fit: Tensor,
          selected: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Start rows for every selected ``(i, b)``: the points of bins ``b - 1, b, b + 1`` and the
    best fit with coordinate ``i`` at the centre of bin ``b``; also each row's flat bin index
    and its fixed-coordinate mask."""
    _, p, d = points.shape
    ii, bb = selected.nonzero(as_tuple=True)
    starts, owners, coords = [], [], []
    for shift in (-1, 0, 1):
        nb = bb + shift
        ok = (nb >= 0) & (nb < p)
        x = points[ii[ok], nb[ok]]
        good = torch.isfinite(x).all(dim=-1)
        starts.append(x[good])
        owners.append((ii[ok] * p + bb[ok])[good])
        coords.append(ii[ok][good])
    starts.append(best_fit.expand(ii.numel(), d))
    owners.append(ii * p + bb)
    coords.append(ii)
    x0 = torch.cat(starts).clone()
    owner = torch.cat(owners)
    coord = torch.cat(coords)
    x0[torch.arange(x0.shape[0], device=x0.device), coord] = centres.reshape(-1)[owner]
    fixed = torch.zeros_like(x0, dtype=torch.bool)
    fixed[torch.arange(x0.shape[0], device=x0.device), coord] = True
    return x0, owner, fixed


def refine_ends(
    log_prob: LogProb,
    profile: ProfileResult,
    names: Sequence[str],
    *,
    levels: Sequence[Level] = LEVELS,
    config: ProfileConfig | None = None,
    covariance: Tensor | None = None,
    min_steps: int = 500,
    rounds: int = 4,
    tolerance: float = 1e-3,
    level_log: int = logging.INFO,
) -> EndRefinement:
    """Re-maximise the 1D profile bins beside every crossing of the ``levels``' thresholds and
    each profile's lowest bin.

    Args:
        log_prob: the batched, differentiable target ``(B, d) -> (B,)`` step 5 maximised.
        profile: step 5's :class:`ProfileResult`.
        names: the coefficient names, in coordinate order (for the log).
        levels: the intervals whose ends are refined (68 and 95 %).
        config: L-BFGS settings (default :class:`ProfileConfig`); at least ``min_steps``
            iterations are allowed.
        covariance: the L-BFGS preconditioner (step 5's, the pre-scaling covariance).
        min_steps: the least number of L-BFGS iterations per start point.
        rounds: the most passes (a raised bin can move a crossing to a bin not yet refined).
        tolerance: a rise of a bin's ``log L`` by more than this counts as a gain; a pass
            without one ends the refinement.
        level_log: the logging level of the summary line.

    Returns:
        An :class:`EndRefinement`; its ``profile`` is the input with the end bins raised.
    """
    base = config or ProfileConfig()
    config = base.replace(max_steps=max(base.max_steps, min_steps))
    thresholds = [delta_chi2_threshold(lv) for lv in levels]
    prof = profile.profile1d.clone()
    points = profile.profile1d_points.clone()
    centres = profile.centres1d.to(points)
    best_fit, best_lp = profile.best_fit.clone(), float(profile.best_log_prob)
    cov = None if covariance is None else covariance.to(best_fit)
    n, p = prof.shape
    d = points.shape[-1]
    done = torch.zeros((n, p), dtype=torch.bool, device=prof.device)
    raised = torch.zeros((n, p), dtype=torch.bool, device=prof.device)
    n_eval, n_rows, n_conv, largest, passes = 0, 0, 0, 0.0, 0
    for _ in range(rounds):
        delta = 2.0 * (best_lp - prof)
        # the crossings' bins, and each profile's lowest bin (intervals subtract its value)
        selected = crossing_bins(delta, thresholds)
        lowest = torch.where(torch.isfinite(delta), delta, torch.full_like(delta, torch.inf))
        selected[torch.arange(n, device=delta.device), lowest.argmin(dim=1)] = True
        selected &= ~done
        if not bool(selected.any()):
            break
        passes += 1
        x0, owner, fixed = _rows(points, centres, best_fit, selected)
        res = lbfgs_maximise(log_prob, x0, fixed=fixed, config=config, preconditioner=cov)
        n_eval += res.n_evaluations
        n_rows += x0.shape[0]
        n_conv += int(res.converged.sum())
        lp = res.log_prob  # finite or -inf
        flat = prof.reshape(-1)
        best_per_bin = torch.full_like(flat, -torch.inf).scatter_reduce(
            0, owner, lp, reduce="amax")
        gain = best_per_bin - flat
        up = gain > tolerance
        if bool(up.any()):
            # the argmax row of every raised bin
            winner = torch.full_like(flat, -1, dtype=torch.long)
            is_max = lp == best_per_bin[owner]
            winner.scatter_(0, owner[is_max], torch.nonzero(is_max).squeeze(1))
            bins = torch.nonzero(up).squeeze(1)
            flat[bins] = best_per_bin[bins]
            points.reshape(-1, d)[bins] = res.x[winner[bins]]
            largest = max(largest, 2.0 * float(gain[bins].max()))
            raised.reshape(-1)[bins] = True
        done |= selected
        top = int(torch.argmax(lp))
        if float(lp[top]) > best_lp:
            best_lp, best_fit = float(lp[top]), res.x[top].clone()
        if not bool(up.any()):
            break
    n_raised = int(raised.sum())
    log.log(level_log, "profile ends: %d bins beside the %s %% crossings maximised again "
            "(%d L-BFGS runs, %.1f%% converged); %d raised, by up to %.3g in -2 log L",
            int(done.sum()), "/".join(levels), n_rows,
            100.0 * n_conv / max(n_rows, 1), n_raised, largest)
    new = profile._replace(profile1d=prof, profile1d_points=points, best_fit=best_fit,
                           best_log_prob=best_lp)
    return EndRefinement(new, int(done.sum()), n_raised, largest,
                         n_conv / n_rows if n_rows else 1.0, passes, n_eval)

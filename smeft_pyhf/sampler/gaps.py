"""Is a gap in a profiled interval real? A direct constrained maximisation inside it decides.

A profiled interval in pieces claims that the profile likelihood rises above the threshold
between two minima. The binned profile of step 5 can claim that wrongly: when the L-BFGS runs
of the bins inside the gap stopped short of their maximum, those bins sit too low and the
interval breaks there although the likelihood has one minimum. :func:`check_gaps` maximises
``log L`` with the coefficient fixed at each bin centre inside every gap, from every bin's
profile point and from the best fit (moved onto the constraint), with more L-BFGS steps than
step 5 takes, and keeps the better values. A gap is **real** when ``-2 Delta log L`` at its
centre stays above the interval's threshold; otherwise the profile in it is raised to what the
direct maximisation found, and the interval recomputed from it closes.

Example:
    >>> import torch
    >>> from smeft_pyhf.sampler import SamplerConfig, run_sampler
    >>> def log_l(x):   # two minima along x0, at -1 and +1; x1 follows x0
    ...     return -0.5 * ((x[:, 0] ** 2 - 1) / 0.1) ** 2 - 0.5 * (x[:, 1] - 0.3 * x[:, 0]) ** 2
    >>> res = run_sampler(log_l, names=["a", "b"], config=SamplerConfig.reduced(), seed=1,
    ...                   progress=False, init_scale=2.0)        # doctest: +SKIP
    >>> checked = check_gaps(log_l, res.profile_result, ["a", "b"])   # doctest: +SKIP
    >>> [(g.coefficient, g.real) for g in checked.gaps]             # doctest: +SKIP
    [('a', True)]
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from ..formats.intervals import Level, segments_below
from ..results.intervals import delta_chi2_threshold
from .profiling import ProfileConfig, ProfileResult, lbfgs_maximise

log = logging.getLogger(__name__)

__all__ = ["Gap", "GapCheckResult", "check_gaps"]

LogProb = Callable[[Tensor], Tensor]


class Gap(NamedTuple):
    """One gap between two pieces of a profiled interval, and what the direct maximisation says.

    Attributes:
        coefficient: the coefficient's name.
        index: its coordinate.
        low: upper end of the piece below the gap.
        high: lower end of the piece above it.
        centre: the bin centre nearest the middle of the gap, where it is judged.
        delta_chi2_binned: ``-2 Delta log L`` there in step 5's binned profile.
        delta_chi2: ``-2 Delta log L`` there after the direct constrained maximisation.
        threshold: the interval's threshold (3.84 for 95 %).
        real: ``delta_chi2 >= threshold``: the profile really has two minima.
    """

    coefficient: str
    index: int
    low: float
    high: float
    centre: float
    delta_chi2_binned: float
    delta_chi2: float
    threshold: float
    real: bool

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict (the results file's ``diagnostics.gaps`` entries)."""
        return {k: (float(v) if isinstance(v, float | np.floating) else v)
                for k, v in self._asdict().items()}


class GapCheckResult(NamedTuple):
    """Outcome of :func:`check_gaps`.

    Attributes:
        profile: the :class:`ProfileResult` with the bins inside every gap re-maximised (only
            raised, never lowered; ``best_fit``/``best_log_prob`` updated if a higher point
            turned up).
        gaps: one :class:`Gap` per gap found in the binned profile, real or not.
        n_evaluations: target evaluations (with gradients) the check took.
    """

    profile: ProfileResult
    gaps: tuple[Gap, ...]
    n_evaluations: int


def _starts(points: Tensor, best_fit: Tensor, index: int, value: float) -> Tensor:
    """Every bin's profile point with a finite value and the best fit, moved to ``x_index = value``."""
    finite = torch.isfinite(points).all(dim=-1)
    starts = torch.cat([points[finite], best_fit[None]], dim=0).clone()
    starts[:, index] = value
    return starts


def _maximise_at(log_prob: LogProb, points: Tensor, best_fit: Tensor, index: int,
                 values: Tensor, config: ProfileConfig,
                 covariance: Tensor | None) -> tuple[Tensor, Tensor, int]:
    """Max ``log_prob`` and its argmax with coordinate ``index`` fixed at each of ``values``."""
    d = best_fit.shape[0]
    fixed = torch.zeros(d, dtype=torch.bool, device=best_fit.device)
    fixed[index] = True
    best_lp = torch.full((values.numel(),), -torch.inf, dtype=best_fit.dtype,
                         device=best_fit.device)
    best_x = best_fit.new_zeros((values.numel(), d))
    n_eval = 0
    for k, value in enumerate(values.tolist()):
        res = lbfgs_maximise(log_prob, _starts(points, best_fit, index, value), fixed=fixed,
                             config=config, preconditioner=covariance)
        n_eval += res.n_evaluations
        lp = res.log_prob  # finite or -inf
        j = int(torch.argmax(lp))
        best_lp[k], best_x[k] = lp[j], res.x[j]
    return best_lp, best_x, n_eval


def _log_gap(gap: Gap, level: Level, level_log: int) -> None:
    log.log(level_log, "profiled %s%% interval of %s: gap [%.4g, %.4g] %s (-2 Delta log L at "
            "%.4g: %.2f binned, %.2f maximised directly)", level, gap.coefficient, gap.low,
            gap.high, "confirmed" if gap.real else "NOT real, closed", gap.centre,
            gap.delta_chi2_binned, gap.delta_chi2)


def check_gaps(
    log_prob: LogProb,
    profile: ProfileResult,
    names: Sequence[str],
    *,
    level: Level = "95",
    config: ProfileConfig | None = None,
    covariance: Tensor | None = None,
    min_steps: int = 500,
    level_log: int = logging.INFO,
) -> GapCheckResult:
    """Judge every gap of every coefficient's profiled ``level`` interval by direct maximisation.

    Args:
        log_prob: the batched, differentiable target ``(B, d) -> (B,)`` step 5 maximised.
        profile: step 5's :class:`ProfileResult`.
        names: the coefficient names, in coordinate order.
        level: the interval whose gaps are judged (``"95"``: threshold 3.84).
        config: L-BFGS settings (default :class:`ProfileConfig`); at least ``min_steps``
            iterations are allowed, more than step 5's bins get.
        covariance: the L-BFGS preconditioner (step 5's, the pre-scaling covariance).
        min_steps: the least number of L-BFGS iterations per start point.
        level_log: the logging level of the one line per gap.

    Returns:
        A :class:`GapCheckResult`; its ``profile`` is the input with the gap bins raised.

    Example:
        >>> import math, torch
        >>> from smeft_pyhf.sampler.profiling import ProfileResult
        >>> c = torch.linspace(-3, 3, 13, dtype=torch.float64)
        >>> log_l = lambda x: -0.5 * x[:, 0] ** 2 - 0.5 * (x[:, 1] - x[:, 0]) ** 2
        >>> prof = -0.5 * c**2
        >>> prof[6] = -10.0                       # one bin that stopped short: a false gap at 0
        >>> pts = torch.stack([c, c], dim=-1)[None]
        >>> res = ProfileResult.from_1d(prof[None], pts, c[None],
        ...                             torch.zeros(2, dtype=torch.float64), 0.0)
        >>> out = check_gaps(log_l, res, ["a"])
        >>> g = out.gaps[0]
        >>> (g.centre, g.real, round(g.delta_chi2_binned, 1), abs(g.delta_chi2) < 1e-8)
        (0.0, False, 20.0, True)
        >>> round(float(out.profile.profile1d[0, 6]), 8)
        -0.0
    """
    base = config or ProfileConfig()
    config = base.replace(max_steps=max(base.max_steps, min_steps))
    threshold = delta_chi2_threshold(level)
    prof1d = profile.profile1d.clone()
    best_fit, best_lp = profile.best_fit.clone(), float(profile.best_log_prob)
    gaps: list[Gap] = []
    n_eval = 0
    cov = None if covariance is None else covariance.to(best_fit)
    points = profile.profile1d_points.clone()
    for i, name in enumerate(names):
        centres = profile.centres1d[i]
        delta = 2.0 * (best_lp - prof1d[i])
        x_np = centres.detach().cpu().numpy()
        segments, _, _ = segments_below(x_np, delta.detach().cpu().numpy(), threshold)
        if len(segments) < 2:
            continue
        for (_, b), (a, _) in itertools.pairwise(segments):
            inside = torch.nonzero((centres > b) & (centres < a)).squeeze(1)
            if inside.numel() == 0:
                continue
            values = centres[inside]
            lp, pts, n = _maximise_at(log_prob, profile.profile1d_points[i], best_fit, i,
                                      values, config, cov)
            n_eval += n
            better = lp > prof1d[i, inside]
            before = prof1d[i, inside].clone()
            prof1d[i, inside] = torch.where(better, lp, prof1d[i, inside])
            points[i, inside] = torch.where(better[:, None], pts, points[i, inside])
            top = int(torch.argmax(lp))
            if float(lp[top]) > best_lp:
                best_lp, best_fit = float(lp[top]), pts[top].clone()
            mid = int(torch.argmin((values - 0.5 * (a + b)).abs()))
            delta_mid = 2.0 * (best_lp - float(prof1d[i, inside[mid]]))
            gap = Gap(str(name), i, float(b), float(a), float(values[mid]),
                      float(2.0 * (profile.best_log_prob - before[mid])), delta_mid, threshold,
                      delta_mid >= threshold)
            gaps.append(gap)
            _log_gap(gap, level, level_log)
    if not gaps:
        return GapCheckResult(profile, (), 0)
    new = profile._replace(profile1d=prof1d, profile1d_points=points,
                           best_fit=best_fit, best_log_prob=best_lp)
    return GapCheckResult(new, tuple(gaps), n_eval)

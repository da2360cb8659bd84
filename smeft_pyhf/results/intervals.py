"""Confidence and credible intervals from binned 1D likelihoods.

Two kinds of intervals, both returned as a tuple of disjoint ``(low, high)`` segments (a
multi-modal likelihood can give more than one):

* **profiled** (frequentist, Wilks): the set where the profile ``-2 Delta log L`` lies below
  a threshold, ``1.0`` for 68.27% and ``3.84`` for 95% (one degree of freedom). The profile is
  given at bin centres and linearly interpolated; crossings are found by linear interpolation.
* **marginalised** (Bayesian, flat prior over the fit ranges): the **highest-density interval**
  (HDI) by default, i.e. the smallest region holding the requested posterior mass; the density is
  interpolated linearly between bin centres and the level is found by bisection. A piece of
  that region around a single bin centre is that bin's noise above the level, not a mode.
  Where the region has one mode it is the shortest interval holding
  the mass, read from the cumulative distribution (the same interval for exact inputs): a tail
  bin lifted above the level by one heavy importance weight then adds its mass to the tail
  instead of making a separate piece far out, which would move the interval's end by the
  whole gap. Where there are several modes the pieces are the level set's. A central
  (equal-tailed) credible interval from the cumulative distribution is also available
  (``kind="central"``).

The interval type, the levels (``"68"``, ``"95"``) and their thresholds, among them those for 2D
regions (two degrees of freedom, used for contours, :data:`DELTA_CHI2_2D`), are in
:mod:`smeft_pyhf.formats.intervals`.

Example:
    >>> import numpy as np
    >>> x = np.linspace(-5, 5, 201)
    >>> profiled_interval(x, x**2, level="68")        # doctest: +ELLIPSIS
    Interval(level='68', segments=((-1.0..., 1.0...),), open_low=False, open_high=False)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Literal

import numpy as np

from ..formats.intervals import (
    DELTA_CHI2_1D,
    PROBABILITY,
    Interval,
    Level,
    as_level,
    segments_below,
)

log = logging.getLogger(__name__)

__all__ = [
    "delta_chi2_threshold",
    "hdi_density_level",
    "marginalised_interval",
    "profiled_interval",
]


def delta_chi2_threshold(level: Level, *, dof: int = 1) -> float:
    """``-2 Delta log L`` threshold of a confidence level for ``dof`` parameters (Wilks).

    Example:
        >>> round(delta_chi2_threshold("95"), 3)
        3.841
    """
    from scipy.stats import chi2

    return float(chi2.ppf(PROBABILITY[as_level(level)], dof))


def profiled_interval(
    centres: Sequence[float] | np.ndarray,
    delta_chi2: Sequence[float] | np.ndarray,
    *,
    level: Level = "95",
    threshold: float | None = None,
) -> Interval:
    """Profile-likelihood interval: where ``-2 Delta log L`` is below the Wilks threshold.

    Args:
        centres: bin centres (increasing).
        delta_chi2: ``-2 Delta log L`` at the centres (minimum subtracted inside; inf/nan for
            empty bins).
        level: ``"68"`` (threshold 1) or ``"95"`` (3.84).
        threshold: explicit threshold overriding the level's.

    Returns:
        The :class:`~smeft_pyhf.formats.intervals.Interval` (segments interpolated linearly
        between bin centres).

    Example:
        >>> x = np.linspace(-3, 3, 61)
        >>> iv = profiled_interval(x, (x - 1.0) ** 2 / 0.25, level="95")
        >>> round(iv.low, 2), round(iv.high, 2)
        (0.02, 1.98)
    """
    level = as_level(level)
    x = np.asarray(centres, dtype=float)
    y = np.asarray(delta_chi2, dtype=float)
    if not np.any(np.isfinite(y)):
        return Interval(level, ())
    y = y - np.nanmin(np.where(np.isfinite(y), y, np.nan))
    if threshold is None:
        threshold = DELTA_CHI2_1D[level]
    segments, open_low, open_high = segments_below(x, y, threshold)
    return Interval(level, segments, open_low, open_high)


def _fine_density(x: np.ndarray, p: np.ndarray, refine: int) -> tuple[np.ndarray, np.ndarray]:
    """Linear interpolation of a density on a ``refine`` times finer grid (edges included)."""
    width = x[1] - x[0] if len(x) > 1 else 1.0
    grid_x = np.concatenate([[x[0] - width / 2], x, [x[-1] + width / 2]])
    grid_p = np.concatenate([[p[0]], p, [p[-1]]])
    fine = np.linspace(grid_x[0], grid_x[-1], (len(grid_x) - 1) * refine + 1)
    return fine, np.interp(fine, grid_x, grid_p)


def hdi_density_level(density: np.ndarray, mass: float) -> float:
    """Density level ``h`` such that the bins with ``density >= h`` hold ``mass`` of the total.

    ``mass`` is a probability (``PROBABILITY["68"]`` for the 68% region).

    Works on any array (1D or 2D histogram, equal-size bins); used for the 2D marginalised
    contours. Linear interpolation inside the last bin taken.

    Example:
        >>> hdi_density_level(np.array([1.0, 2.0, 3.0, 4.0]), 0.7)
        3.0
    """
    p = np.asarray(density, dtype=float).ravel()
    p = np.where(np.isfinite(p) & (p > 0), p, 0.0)
    total = p.sum()
    if total <= 0:
        return math.inf
    order = np.sort(p)[::-1]
    cumulative = np.cumsum(order) / total
    k = int(np.searchsorted(cumulative, mass))
    return float(order[min(k, len(order) - 1)])


def marginalised_interval(
    centres: Sequence[float] | np.ndarray,
    density: Sequence[float] | np.ndarray,
    *,
    level: Level = "95",
    kind: Literal["hdi", "central"] = "hdi",
    refine: int = 20,
) -> Interval:
    """Credible interval of a binned 1D marginal posterior.

    Args:
        centres: equally spaced bin centres.
        density: posterior density (or any positive multiple) at the centres.
        level: ``"68"`` (posterior mass 68.27%) or ``"95"``.
        kind: ``"hdi"`` (highest-density, default; may give several segments) or
            ``"central"`` (equal-tailed: ``(1 - level) / 2`` in each tail).
        refine: sub-samples per bin of the linear interpolation of the density.

    Returns:
        The :class:`~smeft_pyhf.formats.intervals.Interval`.

    Example:
        >>> x = np.linspace(-5, 5, 201)
        >>> iv = marginalised_interval(x, np.exp(-x**2 / 2), level="95")
        >>> round(iv.low, 2), round(iv.high, 2)
        (-1.96, 1.96)
    """
    level = as_level(level)
    x = np.asarray(centres, dtype=float)
    p = np.asarray(density, dtype=float)
    p = np.where(np.isfinite(p) & (p > 0), p, 0.0)
    if p.sum() <= 0 or len(x) < 2:
        return Interval(level, ())
    target = PROBABILITY[level]
    fine_x, fine_p = _fine_density(x, p, refine)
    dx = fine_x[1] - fine_x[0]
    # trapezoid masses of the fine cells
    cell = 0.5 * (fine_p[1:] + fine_p[:-1]) * dx
    total = cell.sum()
    cdf = np.concatenate([[0.0], np.cumsum(cell)]) / total
    lo_edge, hi_edge = float(fine_x[0]), float(fine_x[-1])
    if kind == "central":
        tail = (1.0 - target) / 2.0
        low = float(np.interp(tail, cdf, fine_x))
        high = float(np.interp(1.0 - tail, cdf, fine_x))
        return Interval(level, ((low, high),), low <= lo_edge, high >= hi_edge)
    if kind != "hdi":
        raise ValueError(f"unknown interval kind {kind!r}; choose 'hdi' or 'central'")

    def mass_above(h: float) -> float:
        # mass of the region {p > h}: integral of p over it, cell by cell (trapezoids)
        inside = fine_p * (fine_p > h)
        return float((0.5 * (inside[1:] + inside[:-1]) * dx).sum() / total)

    lo_h, hi_h = 0.0, float(fine_p.max())
    for _ in range(60):
        mid = 0.5 * (lo_h + hi_h)
        if mass_above(mid) > target:
            lo_h = mid
        else:
            hi_h = mid
    level_h = 0.5 * (lo_h + hi_h)
    # -log(p) below -log(h) <=> p above h
    with np.errstate(divide="ignore"):
        neg_log = -np.log(np.where(fine_p > 0, fine_p, 0.0))
    segments, open_low, open_high = segments_below(fine_x, neg_log, -math.log(level_h))
    # gaps narrower than one histogram bin are Monte-Carlo noise: merge across them
    bin_width = float(x[1] - x[0])
    merged: list[tuple[float, float]] = []
    for a, b in segments:
        if merged and a - merged[-1][1] < bin_width:
            merged[-1] = (merged[-1][0], b)
        else:
            merged.append((a, b))
    segments = tuple(merged)
    # a piece around a single bin centre is that bin's noise above the level, not a mode
    modes = tuple((a, b) for a, b in segments if np.count_nonzero((x >= a) & (x <= b)) >= 2)
    if len(modes) <= 1:
        low, high = _shortest_interval(fine_x, cdf, target)
        # ``low`` lies on the fine grid, ``high`` within one fine cell of where the mass ends
        return Interval(level, ((low, high),), bool(low <= lo_edge + 0.5 * dx),
                        bool(high >= hi_edge - dx))
    # several modes: their pieces; the range edges (half a bin beyond the outer centres) count
    # as open
    return Interval(level, modes, open_low and modes[0][0] <= lo_edge,
                    open_high and modes[-1][1] >= hi_edge)


def _shortest_interval(x: np.ndarray, cdf: np.ndarray, mass: float) -> tuple[float, float]:
    """Shortest ``(low, high)`` with ``cdf(high) - cdf(low) = mass``; ``low`` on the grid ``x``,
    ``high`` interpolated (``cdf`` non-decreasing from 0 to 1 on ``x``)."""
    starts = np.flatnonzero(cdf + mass <= 1.0 + 1e-12)
    wanted = np.minimum(cdf[starts] + mass, cdf[-1])
    # first grid point where the cdf reaches the wanted mass, interpolated inside its cell
    j = np.clip(np.searchsorted(cdf, wanted, side="left"), 1, len(x) - 1)
    rise = cdf[j] - cdf[j - 1]
    frac = np.where(rise > 0, (wanted - cdf[j - 1]) / np.where(rise > 0, rise, 1.0), 1.0)
    highs = x[j - 1] + np.clip(frac, 0.0, 1.0) * (x[j] - x[j - 1])
    best = int(np.argmin(highs - x[starts]))
    return float(x[starts[best]]), float(highs[best])

"""Confidence and credible intervals from binned 1D likelihoods.

Two kinds of intervals, both returned as a tuple of disjoint ``(low, high)`` segments (a
multi-modal likelihood can give more than one):

* **profiled** (frequentist, Wilks): the set where the profile ``-2 Delta log L`` lies below
  a threshold, ``1.0`` for 68.27% and ``3.84`` for 95% (one degree of freedom). The profile is
  given at bin centres and linearly interpolated; crossings are found by linear interpolation.
* **marginalised** (Bayesian, flat prior over the fit ranges): the **highest-density interval**
  (HDI) by default, i.e. the smallest region holding the requested posterior mass; the density is
  interpolated linearly between bin centres and the level is found by bisection. A central
  (equal-tailed) credible interval from the cumulative distribution is also available
  (``kind="central"``).

Thresholds for 2D regions (two degrees of freedom, used for contours) are in
:data:`DELTA_CHI2_2D`.

Example:
    >>> import numpy as np
    >>> x = np.linspace(-5, 5, 201)
    >>> profiled_interval(x, x**2, level=0.68)        # doctest: +ELLIPSIS
    Interval(segments=((-1.0..., 1.0...),), open_low=False, open_high=False)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Literal, NamedTuple

import numpy as np

log = logging.getLogger(__name__)

__all__ = [
    "DELTA_CHI2_1D",
    "DELTA_CHI2_2D",
    "Interval",
    "delta_chi2_threshold",
    "hdi_density_level",
    "marginalised_interval",
    "profiled_interval",
]

#: ``-2 Delta log L`` thresholds for one parameter (68.27% and 95%).
DELTA_CHI2_1D: dict[float, float] = {0.68: 1.0, 0.95: 3.841458820694124}
#: ``-2 Delta log L`` thresholds for two parameters (68.27% and 95%), for 2D contours.
DELTA_CHI2_2D: dict[float, float] = {0.68: 2.295748928898636, 0.95: 5.991464547107979}


class Interval(NamedTuple):
    """An interval as disjoint segments.

    Attributes:
        segments: sorted ``(low, high)`` pairs; empty when nothing passes the threshold.
        open_low: the region reaches the lower end of the scanned range (limit not found).
        open_high: the region reaches the upper end of the scanned range.
    """

    segments: tuple[tuple[float, float], ...]
    open_low: bool = False
    open_high: bool = False

    @property
    def low(self) -> float:
        """Lowest edge (nan when empty)."""
        return self.segments[0][0] if self.segments else math.nan

    @property
    def high(self) -> float:
        """Highest edge (nan when empty)."""
        return self.segments[-1][1] if self.segments else math.nan

    @property
    def width(self) -> float:
        """Summed length of the segments."""
        return float(sum(b - a for a, b in self.segments))

    def to_dict(self) -> dict:
        """JSON-friendly form."""
        return {
            "segments": [[float(a), float(b)] for a, b in self.segments],
            "open_low": bool(self.open_low),
            "open_high": bool(self.open_high),
        }

    @classmethod
    def from_dict(cls, data: dict) -> Interval:
        """Inverse of :meth:`to_dict`."""
        return cls(
            tuple((float(a), float(b)) for a, b in data.get("segments", [])),
            bool(data.get("open_low", False)),
            bool(data.get("open_high", False)),
        )


def delta_chi2_threshold(level: float, *, dof: int = 1) -> float:
    """``-2 Delta log L`` threshold of a confidence level for ``dof`` parameters (Wilks).

    Example:
        >>> round(delta_chi2_threshold(0.95), 3)
        3.841
    """
    from scipy.stats import chi2

    return float(chi2.ppf(_prob(level), dof))


def _prob(level: float) -> float:
    # "68%" means one Gaussian sigma (0.6827) as in the physics convention.
    return 0.6826894921370859 if abs(level - 0.68) < 5e-3 else float(level)


def _segments_below(
    x: np.ndarray, y: np.ndarray, threshold: float
) -> tuple[tuple[tuple[float, float], ...], bool, bool]:
    """Segments where the linear interpolant of ``y`` through ``x`` is below ``threshold``."""
    finite = np.isfinite(y)
    y = np.where(finite, y, np.inf)
    below = y <= threshold
    segments: list[tuple[float, float]] = []
    n = len(x)
    i = 0
    while i < n:
        if not below[i]:
            i += 1
            continue
        j = i
        while j + 1 < n and below[j + 1]:
            j += 1
        if i == 0:
            low = float(x[0])
        else:
            low = _crossing(x[i - 1], y[i - 1], x[i], y[i], threshold)
        if j == n - 1:
            high = float(x[-1])
        else:
            high = _crossing(x[j], y[j], x[j + 1], y[j + 1], threshold)
        segments.append((low, high))
        i = j + 1
    return tuple(segments), bool(below[0]), bool(below[-1])


def _crossing(x0: float, y0: float, x1: float, y1: float, threshold: float) -> float:
    if not np.isfinite(y0) or not np.isfinite(y1) or y1 == y0:
        return float(x0 if np.isfinite(y0) and y0 <= threshold else x1)
    t = (threshold - y0) / (y1 - y0)
    return float(x0 + min(max(t, 0.0), 1.0) * (x1 - x0))


def profiled_interval(
    centres: Sequence[float] | np.ndarray,
    delta_chi2: Sequence[float] | np.ndarray,
    *,
    level: float = 0.95,
    threshold: float | None = None,
) -> Interval:
    """Profile-likelihood interval: where ``-2 Delta log L`` is below the Wilks threshold.

    Args:
        centres: bin centres (increasing).
        delta_chi2: ``-2 Delta log L`` at the centres (minimum subtracted inside; inf/nan for
            empty bins).
        level: 0.68 (threshold 1) or 0.95 (3.84); other levels use the chi2 quantile.
        threshold: explicit threshold overriding ``level``.

    Returns:
        The :class:`Interval` (segments interpolated linearly between bin centres).

    Example:
        >>> x = np.linspace(-3, 3, 61)
        >>> iv = profiled_interval(x, (x - 1.0) ** 2 / 0.25, level=0.95)
        >>> round(iv.low, 2), round(iv.high, 2)
        (0.02, 1.98)
    """
    x = np.asarray(centres, dtype=float)
    y = np.asarray(delta_chi2, dtype=float)
    if not np.any(np.isfinite(y)):
        return Interval(())
    y = y - np.nanmin(np.where(np.isfinite(y), y, np.nan))
    if threshold is None:
        threshold = DELTA_CHI2_1D.get(level) or delta_chi2_threshold(level)
    segments, open_low, open_high = _segments_below(x, y, threshold)
    return Interval(segments, open_low, open_high)


def _fine_density(x: np.ndarray, p: np.ndarray, refine: int) -> tuple[np.ndarray, np.ndarray]:
    """Linear interpolation of a density on a ``refine`` times finer grid (edges included)."""
    width = x[1] - x[0] if len(x) > 1 else 1.0
    grid_x = np.concatenate([[x[0] - width / 2], x, [x[-1] + width / 2]])
    grid_p = np.concatenate([[p[0]], p, [p[-1]]])
    fine = np.linspace(grid_x[0], grid_x[-1], (len(grid_x) - 1) * refine + 1)
    return fine, np.interp(fine, grid_x, grid_p)


def hdi_density_level(density: np.ndarray, mass: float) -> float:
    """Density level ``h`` such that the bins with ``density >= h`` hold ``mass`` of the total.

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
    k = int(np.searchsorted(cumulative, _prob(mass)))
    return float(order[min(k, len(order) - 1)])


def marginalised_interval(
    centres: Sequence[float] | np.ndarray,
    density: Sequence[float] | np.ndarray,
    *,
    level: float = 0.95,
    kind: Literal["hdi", "central"] = "hdi",
    refine: int = 20,
) -> Interval:
    """Credible interval of a binned 1D marginal posterior.

    Args:
        centres: equally spaced bin centres.
        density: posterior density (or any positive multiple) at the centres.
        level: posterior mass, 0.68 (read as 68.27%) or 0.95.
        kind: ``"hdi"`` (highest-density, default; may give several segments) or
            ``"central"`` (equal-tailed: ``(1 - level) / 2`` in each tail).
        refine: sub-samples per bin of the linear interpolation of the density.

    Returns:
        The :class:`Interval`.

    Example:
        >>> x = np.linspace(-5, 5, 201)
        >>> iv = marginalised_interval(x, np.exp(-x**2 / 2), level=0.95)
        >>> round(iv.low, 2), round(iv.high, 2)
        (-1.96, 1.96)
    """
    x = np.asarray(centres, dtype=float)
    p = np.asarray(density, dtype=float)
    p = np.where(np.isfinite(p) & (p > 0), p, 0.0)
    if p.sum() <= 0 or len(x) < 2:
        return Interval(())
    target = _prob(level)
    fine_x, fine_p = _fine_density(x, p, refine)
    dx = fine_x[1] - fine_x[0]
    # trapezoid masses of the fine cells
    cell = 0.5 * (fine_p[1:] + fine_p[:-1]) * dx
    total = cell.sum()
    lo_edge, hi_edge = float(fine_x[0]), float(fine_x[-1])
    if kind == "central":
        cdf = np.concatenate([[0.0], np.cumsum(cell)]) / total
        tail = (1.0 - target) / 2.0
        low = float(np.interp(tail, cdf, fine_x))
        high = float(np.interp(1.0 - tail, cdf, fine_x))
        return Interval(((low, high),), low <= lo_edge, high >= hi_edge)
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
    segments, open_low, open_high = _segments_below(fine_x, neg_log, -math.log(level_h))
    # gaps narrower than one histogram bin are Monte-Carlo noise: merge across them
    bin_width = float(x[1] - x[0])
    merged: list[tuple[float, float]] = []
    for a, b in segments:
        if merged and a - merged[-1][1] < bin_width:
            merged[-1] = (merged[-1][0], b)
        else:
            merged.append((a, b))
    segments = tuple(merged)
    # the range edges (half a bin beyond the outer centres) count as open
    return Interval(segments, open_low, open_high)

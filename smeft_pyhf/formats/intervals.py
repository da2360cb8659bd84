"""Confidence levels and intervals: the one interval type and the one crossing code.

A level is ``"68"`` or ``"95"`` (:data:`Level`) everywhere inside the package: results files key
their intervals by it, and the thresholds and probabilities below are looked up with it.
:func:`as_level` is the one converter for what a user may type (``"68%"``, ``68``, ``0.68``).
``"68"`` means one Gaussian sigma, 68.27% (the physics convention).

:class:`Interval` is what every interval code returns: the profiled and marginalised intervals
of a fit (:mod:`smeft_pyhf.results.intervals`), the analytic Gaussian ones, and the
full-likelihood vs card comparison (:mod:`smeft_pyhf.checks.card_vs_full`). Segments
below a threshold are found by :func:`segments_below`, the one linear-crossing code.

Example:
    >>> import numpy as np
    >>> x = np.linspace(-3, 3, 601)
    >>> segments, open_low, open_high = segments_below(x, x**2, DELTA_CHI2_1D["95"])
    >>> round(Interval("95", segments, open_low, open_high).width, 2)
    3.92
    >>> as_level("68%"), as_level(0.95)
    ('68', '95')
"""

from __future__ import annotations

import math
from typing import Any, Literal, NamedTuple, get_args

import numpy as np

from ..exceptions import ConfigError

__all__ = [
    "DELTA_CHI2_1D",
    "DELTA_CHI2_2D",
    "LEVELS",
    "PROBABILITY",
    "Interval",
    "Level",
    "as_level",
    "crossing",
    "segments_below",
]

#: A confidence (or credibility) level.
Level = Literal["68", "95"]
#: The levels, in increasing order.
LEVELS: tuple[Level, ...] = get_args(Level)
#: Probability content of each level (``"68"`` is one Gaussian sigma, 68.27%).
PROBABILITY: dict[Level, float] = {"68": 0.6826894921370859, "95": 0.95}
#: ``-2 Delta log L`` thresholds for one parameter (Wilks).
DELTA_CHI2_1D: dict[Level, float] = {"68": 1.0, "95": 3.841458820694124}
#: ``-2 Delta log L`` thresholds for two parameters, for 2D contours.
DELTA_CHI2_2D: dict[Level, float] = {"68": 2.295748928898636, "95": 5.991464547107979}


def as_level(value: Any) -> Level:
    """The :data:`Level` of what a user wrote: ``"68"``, ``"68%"``, ``68`` or ``0.68`` (and 95).

    Raises:
        ConfigError: any other value.

    Example:
        >>> as_level("95"), as_level("68%"), as_level(68), as_level(0.95)
        ('95', '68', '68', '95')
    """
    text = str(value).strip().rstrip("%").strip()
    if isinstance(value, float) and value < 1:
        text = f"{100 * value:g}"
    if text in LEVELS:
        return text  # type: ignore[return-value]
    raise ConfigError(f"unknown confidence level {value!r}", where="level",
                      hint='use "68" (one sigma, 68.27%) or "95"')


class Interval(NamedTuple):
    """An interval at one level as disjoint segments.

    Attributes:
        level: the confidence or credibility level (``"68"``, ``"95"``).
        segments: sorted ``(low, high)`` pairs; empty when nothing passes (a multi-modal
            likelihood, e.g. a quadratic SMEFT term, can give several).
        open_low: the region reaches the lower end of the scanned range (limit not found).
        open_high: the region reaches the upper end of the scanned range.
    """

    level: Level
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

    @property
    def threshold(self) -> float:
        """The one-parameter ``-2 Delta log L`` threshold of the level (1.0, 3.84)."""
        return DELTA_CHI2_1D[self.level]

    def to_dict(self) -> dict:
        """JSON-friendly form (without the level, which keys the interval in a results file)."""
        return {
            "segments": [[float(a), float(b)] for a, b in self.segments],
            "open_low": bool(self.open_low),
            "open_high": bool(self.open_high),
        }

    @classmethod
    def from_dict(cls, level: Level, data: dict) -> Interval:
        """Inverse of :meth:`to_dict`."""
        return cls(
            level,
            tuple((float(a), float(b)) for a, b in data.get("segments", [])),
            bool(data.get("open_low", False)),
            bool(data.get("open_high", False)),
        )


def crossing(x0: float, y0: float, x1: float, y1: float, threshold: float) -> float:
    """Where the straight line through ``(x0, y0)`` and ``(x1, y1)`` reaches ``threshold``,
    kept within ``[x0, x1]``; a non-finite or flat pair gives the end that passes.

    Example:
        >>> crossing(0.0, 0.0, 2.0, 4.0, 1.0)
        0.5
    """
    if not np.isfinite(y0) or not np.isfinite(y1) or y1 == y0:
        return float(x0 if np.isfinite(y0) and y0 <= threshold else x1)
    t = (threshold - y0) / (y1 - y0)
    return float(x0 + min(max(t, 0.0), 1.0) * (x1 - x0))


def segments_below(
    x: np.ndarray, y: np.ndarray, threshold: float
) -> tuple[tuple[tuple[float, float], ...], bool, bool]:
    """Segments where the linear interpolant of ``y`` through ``x`` is at most ``threshold``,
    and whether they reach the lower and upper end of ``x`` (non-finite ``y`` counts as above).

    Example:
        >>> segments_below(np.array([0.0, 1.0, 2.0, 3.0]), np.array([2.0, 0.0, 2.0, 0.0]), 1.0)
        (((0.5, 1.5), (2.5, 3.0)), False, True)
    """
    x = np.asarray(x, dtype=float)
    y = np.where(np.isfinite(y), y, np.inf)
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
        low = float(x[0]) if i == 0 else crossing(x[i - 1], y[i - 1], x[i], y[i], threshold)
        high = float(x[-1]) if j == n - 1 else crossing(x[j], y[j], x[j + 1], y[j + 1], threshold)
        segments.append((low, high))
        i = j + 1
    return tuple(segments), bool(below[0]), bool(below[-1])

"""Counting and checking the non-finite values of a sampler step's target.

``-inf`` is the normal value outside the support; NaN counts as zero density too (but usually
means a broken likelihood); ``+inf`` stops the step with a :class:`DataError` naming the point.

Example:
    >>> import torch
    >>> f = CheckedTarget(lambda x: x.sum(-1).log(), step="demo")
    >>> f(torch.tensor([[1.0], [-1.0]]))
    tensor([0., -inf])
    >>> f.report()
    NonFiniteCounts(n_evaluated=2, n_nan=1, n_neginf=0)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from smeft_pyhf.exceptions import DataError

__all__ = ["NAN_WARNING_FRACTION", "CheckedTarget", "NonFiniteCounts"]

log = logging.getLogger(__name__)

LogProb = Callable[[Tensor], Tensor]
"""A batched log-density: ``(B, d) -> (B,)``, ``-inf`` outside the support."""

NAN_WARNING_FRACTION = 1e-3
"""A step whose target is NaN at more than this fraction of its evaluated points logs a
warning (below it, and for ``-inf``, an info line)."""


class NonFiniteCounts(NamedTuple):
    """Target evaluations of one sampler step that were not finite.

    ``-inf`` is the normal value outside the support (a box prior, a physical bound); NaN is
    treated as ``-inf`` (zero density) too, but usually means a broken likelihood. A ``+inf``
    log-likelihood is never counted here: it stops the step with a :class:`DataError`.

    Attributes:
        n_evaluated: points at which the step evaluated the target.
        n_nan: of these, points where it was NaN.
        n_neginf: points where it was ``-inf``.
    """

    n_evaluated: int = 0
    n_nan: int = 0
    n_neginf: int = 0

    @property
    def nan_fraction(self) -> float:
        """``n_nan / n_evaluated`` (0 when nothing was evaluated)."""
        return self.n_nan / self.n_evaluated if self.n_evaluated else 0.0

    @property
    def neginf_fraction(self) -> float:
        """``n_neginf / n_evaluated`` (0 when nothing was evaluated)."""
        return self.n_neginf / self.n_evaluated if self.n_evaluated else 0.0


class CheckedTarget:
    """The target of one sampler step, with its non-finite values counted and checked.

    Calling the object evaluates the wrapped target and returns its values with NaN and
    ``+inf`` replaced by ``-inf`` (zero density, so that no weight or resampling probability
    becomes NaN), gradients flowing through the finite values. Meanwhile it counts the
    evaluated points, the NaN and the ``-inf`` values, and keeps the first point where the
    target was ``+inf``, all on the device without synchronising. :meth:`check` raises a
    :class:`~smeft_pyhf.exceptions.DataError` naming that point; :meth:`report` checks, logs
    the counts (a warning when the NaN fraction exceeds :data:`NAN_WARNING_FRACTION` or every
    point was non-finite) and returns them.

    Args:
        log_prob: the target ``(B, d) -> (B,)``.
        step: the step's name, used in messages (e.g. ``"pre-scaling"``).
        names: coefficient names, for the point in the error message (default ``x[i]``).
        to_original: maps the target's coordinates to the coefficients for that message
            (e.g. :meth:`Standardised.to_original`); default: the target's own coordinates.
        logger: where :meth:`report` logs (default: this module's logger).

    Example:
        >>> f = CheckedTarget(lambda x: x.sum(-1).log(), step="demo", names=["a"])
        >>> f(torch.tensor([[1.0], [-1.0], [0.0]]))
        tensor([0., -inf, -inf])
        >>> f.report()
        NonFiniteCounts(n_evaluated=3, n_nan=1, n_neginf=1)
        >>> f(torch.tensor([[math.inf]]))
        tensor([-inf])
        >>> f.check()  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        smeft_pyhf.exceptions.DataError: demo: the log-likelihood is +inf at c = (a=inf) ...
    """

    def __init__(
        self,
        log_prob: LogProb,
        *,
        step: str,
        names: Sequence[str] | None = None,
        to_original: Callable[[Tensor], Tensor] | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        self.log_prob = log_prob
        self.logger = logger or log
        self.step = step
        self.names = None if names is None else tuple(str(n) for n in names)
        self.to_original = to_original
        self._counts: Tensor | None = None  # (points, NaN, -inf, +inf), int64 on the device
        self._point: Tensor | None = None  # the first point where the target was +inf

    def __call__(self, x: Tensor) -> Tensor:
        """The target at ``x`` ``(B, d)``, with NaN and ``+inf`` replaced by ``-inf``."""
        out = self.log_prob(x)
        if out.shape != x.shape[:1]:
            raise ValueError(
                f"the target returned shape {tuple(out.shape)} for input {tuple(x.shape)}"
            )
        if out.shape[0] == 0:
            return out
        with torch.no_grad():
            nan = torch.isnan(out)
            posinf = torch.isposinf(out)
            new = torch.stack([
                torch.ones_like(nan).sum(), nan.sum(), torch.isneginf(out).sum(), posinf.sum()
            ])
            first = x.detach()[torch.argmax(posinf.to(torch.uint8))]
            if self._counts is None:
                self._counts = torch.zeros_like(new)
                self._point = torch.zeros_like(first)
            seen = self._counts[3] > 0
            self._point = torch.where(seen | ~posinf.any(), self._point, first)
            self._counts = self._counts + new
        return torch.where(nan | posinf, out.new_tensor(-math.inf), out)

    @property
    def n_nan(self) -> int:
        """NaN values so far (synchronises with the device)."""
        return 0 if self._counts is None else int(self._counts[1])

    def counts(self) -> NonFiniteCounts:
        """Points evaluated so far, and how many were NaN and ``-inf`` (synchronises)."""
        if self._counts is None:
            return NonFiniteCounts()
        n, nan, neginf, _ = (int(v) for v in self._counts.tolist())
        return NonFiniteCounts(n, nan, neginf)

    def check(self) -> None:
        """Raise if the target was ``+inf`` anywhere so far (synchronises).

        Raises:
            DataError: naming the first such point and how many there were.
        """
        if self._counts is None or int(self._counts[3]) == 0:
            return
        point = self._point[None]
        if self.to_original is not None:
            with torch.no_grad():
                point = self.to_original(point)
        values = [float(v) for v in point[0].tolist()]
        names = self.names if self.names is not None and len(self.names) == len(values) else [
            f"x[{i}]" for i in range(len(values))
        ]
        coords = ", ".join(f"{n}={v:.6g}" for n, v in zip(names, values, strict=True))
        n_pos, n_all = int(self._counts[3]), int(self._counts[0])
        raise DataError(
            f"the log-likelihood is +inf at c = ({coords}) ({n_pos} of {n_all} evaluated points "
            "were +inf)",
            where=self.step,
            hint="a log-likelihood must be finite or -inf (outside the support); check the "
            "likelihood and its inputs at that point (a zero or negative uncertainty, a "
            "singular covariance, a division by zero in a custom target)",
        )

    def report(self) -> NonFiniteCounts:
        """:meth:`check`, then log and return the counts.

        NaN above :data:`NAN_WARNING_FRACTION` of the points, or a target non-finite at every
        point, is a warning; other NaN or ``-inf`` values are an info line (``-inf`` outside
        the support is normal).
        """
        self.check()
        counts = self.counts()
        n, nan, neginf = counts
        if nan == 0 and neginf == 0:
            return counts
        everywhere = nan + neginf == n
        level = (logging.WARNING if counts.nan_fraction > NAN_WARNING_FRACTION or everywhere
                 else logging.INFO)
        self.logger.log(
            level,
            "%s: the target was NaN at %d of %d points (%.3g%%) and -inf at %d (%.3g%%); "
            "both count as zero density%s",
            self.step,
            nan,
            n,
            100 * counts.nan_fraction,
            neginf,
            100 * counts.neginf_fraction,
            "; NaN usually means a broken likelihood: check it and its inputs there"
            if nan and level == logging.WARNING else "",
        )
        return counts


"""Wilson coefficients: their names and what a runcard says about each one.

The one coefficient type and the one name converter of the package, shared by the SMEFiT
runcard reader (:mod:`smeft_pyhf.likelihood.smefit_runcard`), smeft-pyhf runcards
(:mod:`smeft_pyhf.fit.runcard`) and the likelihood. A light module (no torch), so that reading a
runcard stays quick.

Example:
    >>> coefficient_name("OtG"), operator_name("ctG")
    ('ctG', 'OtG')
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

__all__ = ["CoefficientSpec", "coefficient_name", "operator_name"]


def coefficient_name(operator: str) -> str:
    """Fit-coefficient name of a SMEFiT operator (``OtG`` -> ``ctG``); ``cX`` is kept as is.

    Example:
        >>> coefficient_name("OtG"), coefficient_name("ctG")
        ('ctG', 'ctG')
    """
    if operator.startswith("O") and len(operator) > 1:
        return "c" + operator[1:]
    return operator


def operator_name(coefficient: str) -> str:
    """SMEFiT operator name of a coefficient (``ctG`` -> ``OtG``); ``OX`` is kept as is.

    Example:
        >>> operator_name("ctG")
        'OtG'
    """
    if coefficient.startswith("c") and len(coefficient) > 1:
        return "O" + coefficient[1:]
    return coefficient


class CoefficientSpec(NamedTuple):
    """One Wilson coefficient of a fit: free in ``[minimum, maximum]``, fixed to ``value``, or
    constrained to a linear combination of free ones.

    The one coefficient type of the package: the SMEFiT runcard reader, smeft-pyhf runcards
    (:mod:`smeft_pyhf.fit.runcard`, whose ``min``/``max`` keys are ``minimum``/``maximum``) and
    :func:`~smeft_pyhf.likelihood.combined.build_likelihood` all use it.

    Attributes:
        name: coefficient name (``cX``).
        minimum: lower end of the prior range, ``None`` when not given.
        maximum: upper end of the prior range, ``None`` when not given.
        value: fixed value, or ``None``.
        constrain: ``((name, factor), ...)``: ``c = sum factor * c_name`` (``value`` is then
            ``None``; SMEFiT ignores it for constrained coefficients); empty when not
            constrained.

    Example:
        >>> spec = CoefficientSpec("ctG", -1.0, 1.0)
        >>> spec.is_free, spec.bounds, spec.to_dict()
        (True, (-1.0, 1.0), {'min': -1.0, 'max': 1.0})
        >>> CoefficientSpec("ctW").bounds
        (-inf, inf)
    """

    name: str
    minimum: float | None = None
    maximum: float | None = None
    value: float | None = None
    constrain: tuple[tuple[str, float], ...] = ()

    @property
    def is_free(self) -> bool:
        """True for a fitted coefficient (neither fixed nor constrained)."""
        return self.value is None and not self.constrain

    @property
    def bounds(self) -> tuple[float, float]:
        """``(minimum, maximum)`` with ``-inf``/``inf`` for a missing end."""
        return (-math.inf if self.minimum is None else self.minimum,
                math.inf if self.maximum is None else self.maximum)

    def to_dict(self) -> dict[str, Any]:
        """Runcard form: ``{min, max, value, constrain}``, the keys that are given."""
        out: dict[str, Any] = {}
        if self.minimum is not None:
            out["min"] = self.minimum
        if self.maximum is not None:
            out["max"] = self.maximum
        if self.value is not None:
            out["value"] = self.value
        if self.constrain:
            out["constrain"] = dict(self.constrain)
        return out

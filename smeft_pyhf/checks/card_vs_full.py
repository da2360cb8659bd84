"""The card-vs-workspace check: one coefficient profiled with the full likelihood and with the
Gaussian measurement card of the same measurement, side by side (``smeft-pyhf compare``).

The same ``mu(c)`` (the card's linked SMEFiT table) scales the workspace's signal in the full
likelihood (:mod:`smeft_pyhf.checks.full_likelihood`, scanned exactly with
:mod:`smeft_pyhf.checks.profile_scan`) and predicts the card's signal strength; the 68 %/95 %
intervals of both come from the one interval code (:mod:`smeft_pyhf.formats.intervals`).

Example:
    >>> import numpy as np
    >>> x = np.linspace(-3, 3, 601)
    >>> [i.level for i in intervals_from_curve(x, x**2)]
    ['68', '95']
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np

from smeft_pyhf.checks.full_likelihood import (
    DEFAULT_BOUNDS,
    full_likelihood_model,
    smeft_terms_from_dataset,
)
from smeft_pyhf.checks.profile_scan import CoefficientScan, profile_scan_full
from smeft_pyhf.exceptions import ConfigError, DataError
from smeft_pyhf.formats.intervals import DELTA_CHI2_1D, LEVELS, Interval, Level, segments_below

__all__ = [
    "CARD_MODES",
    "CardComparison",
    "compare_card_vs_full",
    "default_scan_range",
    "intervals_from_curve",
]


CardMode = Literal["total", "gaussian", "profiled", "marginalised"]
CARD_MODES: tuple[str, ...] = ("total", "gaussian", "profiled", "marginalised")


class CardComparison(NamedTuple):
    """A 1D profile in one coefficient: full likelihood vs Gaussian card(s).

    Attributes:
        coefficient: the scanned coefficient.
        card: card name.
        dataset: the SMEFiT theory table that gives ``mu(c)``.
        linear: ``l`` of ``mu(c) = 1 + l c + q c**2``.
        quadratic: ``q``.
        values: the scan points.
        mu: ``mu(c)`` at the scan points.
        full: ``Delta(2NLL)`` of the full likelihood at the scan points.
        cards: ``Delta(2NLL)`` of each card treatment at the scan points, by mode.
        intervals: ``{"full": (68%, 95%), "card:<mode>": (...)}`` (:class:`~smeft_pyhf.formats.intervals.Interval` tuples);
            the full likelihood is interpolated (monotone cubic) through the scan points, its
            global minimum and the minimum's mirror image (same ``mu``), the card is evaluated
            exactly on a dense grid over the scanned range.
        full_scan: the underlying :class:`CoefficientScan`.
        mu_hat: the card's best-fit signal strength.
    """

    coefficient: str
    card: str
    dataset: str
    linear: float
    quadratic: float
    values: np.ndarray
    mu: np.ndarray
    full: np.ndarray
    cards: dict[str, np.ndarray]
    intervals: dict[str, tuple[Interval, ...]]
    full_scan: CoefficientScan
    mu_hat: float


def intervals_from_curve(x: np.ndarray, delta: np.ndarray, *,
                         levels: Sequence[Level] = LEVELS) -> tuple[Interval, ...]:
    """Allowed segments ``Delta(2NLL) <= threshold`` of a curve sampled densely on ``x``.

    Crossings are placed by linear interpolation between neighbouring samples
    (:func:`smeft_pyhf.formats.intervals.segments_below`).

    Example:
        >>> x = np.linspace(-3, 3, 601)
        >>> [(i.level, np.round(i.segments, 3).tolist()) for i in intervals_from_curve(x, x**2)]
        [('68', [[-1.0, 1.0]]), ('95', [[-1.96, 1.96]])]
    """
    x = np.asarray(x, dtype=np.float64)
    delta = np.asarray(delta, dtype=np.float64)
    return tuple(Interval(level, *segments_below(x, delta, DELTA_CHI2_1D[level]))
                 for level in levels)


def _card_total(card: Any) -> tuple[float, float, float]:
    """(best_fit, up, down) of a card's total uncertainty (card, card mapping or card file)."""
    from smeft_pyhf.formats.card import MeasurementCard, load_card

    where = "card"
    if isinstance(card, (str, os.PathLike)):
        where = str(card)
        card = load_card(card)
    measurement = card.measurement if isinstance(card, MeasurementCard) else (
        card.get("measurement") if isinstance(card, Mapping) else None)
    measurement = measurement if isinstance(measurement, Mapping) else {}
    total = measurement.get("total")
    total = total if isinstance(total, Mapping) else {}
    best = measurement.get("best_fit")
    up = total.get("up", total.get("symmetric"))
    down = total.get("down", total.get("symmetric"))
    if best is None or up is None or down is None:
        raise DataError("the card has no measurement.total uncertainty",
                        where=f"{where}: measurement.total",
                        hint="use a card mode other than 'total'")
    return float(best), abs(float(up)), abs(float(down))


def _card_chi2_function(card: Any, mode: str, *, coefficient: str, database: str | Path,
                        order: str, use_quad: bool, linear: float, quadratic: float
                        ) -> Any:
    """Return ``f(c: np.ndarray) -> chi2`` of one card treatment."""
    if mode == "total":
        best, up, down = _card_total(card)

        def total(c: np.ndarray) -> np.ndarray:
            r = 1.0 + linear * c + quadratic * c * c - best
            return (r / np.where(r > 0, up, down)) ** 2

        return total
    import torch

    from smeft_pyhf.likelihood.combined import build_likelihood

    likelihood = build_likelihood(database=database, cards=[card], coefficients=[coefficient],
                                  order=order,  # type: ignore[arg-type]
                                  linear_only=not use_quad, theory_mode=mode)  # type: ignore[arg-type]

    def combined(c: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            x = torch.as_tensor(np.asarray(c, dtype=np.float64).reshape(-1, 1))
            return likelihood.chi2(x).numpy().reshape(np.shape(c))

    return combined


def _minimum_on(function: Any, lo: float, hi: float, n: int = 100_001) -> float:
    from scipy.optimize import minimize_scalar

    grid = np.linspace(lo, hi, n)
    values = function(grid)
    k = int(np.argmin(values))
    a, b = grid[max(k - 1, 0)], grid[min(k + 1, n - 1)]
    if b <= a:
        return float(values[k])
    res = minimize_scalar(lambda t: float(function(np.array([t]))[0]), bounds=(a, b),
                          method="bounded", options={"xatol": 1e-10})
    return float(min(values[k], res.fun))


def compare_card_vs_full(workspace: Any, card: Any, *, coefficient: str,
                         values: Sequence[float] | np.ndarray, database: str | Path,
                         dataset: str | None = None, order: Literal["LO", "NLO_QCD"] = "NLO_QCD",
                         use_quad: bool = True, signal_samples: Sequence[str] | None = None,
                         card_modes: Sequence[str] = ("total", "gaussian", "profiled"),
                         tolerance: float = 0.1, dense: int = 2001) -> CardComparison:
    """Profile one coefficient with the full likelihood and with the card, side by side.

    The same ``mu(c)`` (the card's linked SMEFiT table, summed over bins and divided by the
    summed SM prediction) scales the workspace's signal in the full likelihood and predicts the
    card's signal strength. All other coefficients are zero; every nuisance parameter of the
    workspace is profiled at each point.

    Card treatments (``card_modes``):

    * ``"total"``: Gaussian in ``mu`` with the card's asymmetric total uncertainty
      (``up`` above the best fit, ``down`` below);
    * ``"gaussian"``, ``"profiled"``, ``"marginalised"``: the combined likelihood of
      :func:`smeft_pyhf.likelihood.combined.build_likelihood` with only this card: statistical
      and systematic categories in quadrature, the flat theory categories treated as Gaussian,
      profiled (SFitter: shift towards the data, added linearly) or marginalised.

    Args:
        workspace: workspace path, spec, ``pyhf.Workspace`` or ``LoadedWorkspace``.
        card: measurement card (path or mapping).
        coefficient: the coefficient (``cX``/``OX``).
        values: scan points.
        database: SMEFiT database folder.
        dataset: theory table (default: the card's ``prediction.smefit_dataset``).
        order: ``LO`` or ``NLO_QCD``.
        use_quad: include the quadratic term of ``mu(c)``.
        signal_samples: workspace samples to scale (default: those with the POI normfactor).
        card_modes: card treatments to compare.
        tolerance: iminuit tolerance of the full-likelihood fits.
        dense: grid size for the intervals.

    Returns:
        :class:`CardComparison`.

    Raises:
        ConfigError: unknown card mode or coefficient.
        DataError: the card or the theory table is unusable.
    """
    from smeft_pyhf.formats.coefficients import coefficient_name
    from smeft_pyhf.likelihood.cards import read_card
    from smeft_pyhf.likelihood.smefit_data import load_smefit_dataset

    bad = [m for m in card_modes if m not in CARD_MODES]
    if bad:
        raise ConfigError(f"unknown card modes {bad}", where="card_modes",
                          hint=f"choose among {list(CARD_MODES)}")
    name = coefficient_name(coefficient)
    card_info = read_card(card)
    dataset = dataset or card_info.smefit_dataset
    table = load_smefit_dataset(database, dataset, order=order, use_quad=use_quad)
    linear, quadratic = smeft_terms_from_dataset(table, [name], use_quad=use_quad)
    lin = float(linear.get(name, 0.0))
    quad = float(quadratic.get(f"{name}*{name}", 0.0))
    model, data = full_likelihood_model(workspace, coefficients=[name], linear=linear,
                                        quadratic=quadratic, signal_samples=signal_samples)
    grid = np.sort(np.asarray(values, dtype=np.float64).reshape(-1))
    if grid.size < 2:
        raise ConfigError("need at least two scan points", where="values")
    bounds = model.config.suggested_bounds()[model.config.par_slice(name).start]
    init = np.asarray(model.config.suggested_init(), dtype=np.float64)
    start = _start_value(lin, quad, card_info.best_fit, bounds)
    if start is not None:
        init[model.config.par_slice(name)] = start
    scan = profile_scan_full(model, data, name, grid, init=init, tolerance=tolerance)
    x_dense = np.linspace(grid[0], grid[-1], dense)
    intervals = {"full": intervals_from_curve(x_dense, _full_curve(scan, lin, quad, x_dense))}
    cards: dict[str, np.ndarray] = {}
    for mode in card_modes:
        function = _card_chi2_function(card, mode, coefficient=name, database=database,
                                       order=order, use_quad=use_quad, linear=lin,
                                       quadratic=quad)
        minimum = _minimum_on(function, *bounds)
        cards[mode] = function(grid) - minimum
        intervals[f"card:{mode}"] = intervals_from_curve(x_dense, function(x_dense) - minimum)
    mu = 1.0 + lin * grid + quad * grid**2
    return CardComparison(name, card_info.name, dataset, lin, quad, grid, mu,
                          scan.twice_nll_delta, cards, intervals, scan, card_info.best_fit)


def _start_value(lin: float, quad: float, mu_hat: float,
                 bounds: tuple[float, float]) -> float | None:
    """The solution of ``mu(c) = mu_hat`` nearest to zero inside ``bounds`` (None without
    one): where the global fit starts."""
    roots = np.roots([quad, lin, 1.0 - mu_hat]) if quad else (
        np.array([(mu_hat - 1.0) / lin]) if lin else np.array([]))
    real = [float(r.real) for r in np.atleast_1d(roots) if abs(r.imag) < 1e-12
            and bounds[0] < r.real < bounds[1]]
    return min(real, key=abs) if real else None


def _full_curve(scan: CoefficientScan, lin: float, quad: float,
                x_dense: np.ndarray) -> np.ndarray:
    """The full likelihood's ``Delta(2NLL)`` on ``x_dense``: a monotone cubic through the scan
    points, the global minimum (``Delta = 0``) and, as the likelihood depends on ``c`` only
    through ``mu(c)``, the minimum's mirror image ``-l/q - c_hat``."""
    grid = scan.values
    knots_x, knots_y = list(grid), list(scan.twice_nll_delta)
    extra = [scan.best_value] + ([-lin / quad - scan.best_value] if quad else [])
    for x in extra:
        if grid[0] < x < grid[-1] and np.min(np.abs(grid - x)) > 1e-9:
            knots_x.append(x)
            knots_y.append(0.0)
    by_x = np.argsort(knots_x)
    kx, ky = np.asarray(knots_x)[by_x], np.asarray(knots_y)[by_x]
    if kx.size >= 3:
        from scipy.interpolate import PchipInterpolator

        return PchipInterpolator(kx, ky)(x_dense)
    return np.interp(x_dense, kx, ky)


def default_scan_range(card: Any, *, coefficient: str, database: str | Path,
                       dataset: str | None = None, order: Literal["LO", "NLO_QCD"] = "NLO_QCD",
                       use_quad: bool = True, n_sigma: float = 3.0,
                       bounds: tuple[float, float] = DEFAULT_BOUNDS) -> tuple[float, float]:
    """A scan range covering the card's ``n_sigma`` region in ``coefficient`` (padded by 15%).

    Uses the card's total uncertainty (or stat and systematics in quadrature when the card has
    no total) with ``mu(c)`` from the linked theory table.

    Raises:
        ConfigError: the card allows no value of the coefficient within ``bounds``.
    """
    from smeft_pyhf.formats.coefficients import coefficient_name
    from smeft_pyhf.likelihood.cards import read_card
    from smeft_pyhf.likelihood.smefit_data import load_smefit_dataset

    name = coefficient_name(coefficient)
    info = read_card(card)
    table = load_smefit_dataset(database, dataset or info.smefit_dataset, order=order,
                                use_quad=use_quad)
    linear, quadratic = smeft_terms_from_dataset(table, [name], use_quad=use_quad)
    lin, quad = float(linear.get(name, 0.0)), float(quadratic.get(f"{name}*{name}", 0.0))
    try:
        best, up, down = _card_total(card)
    except DataError:
        best = info.best_fit
        up = down = math.sqrt(info.stat**2 + sum(v**2 for v in info.systematic_impacts.values()))
    grid = np.linspace(bounds[0], bounds[1], 200_001)
    r = 1.0 + lin * grid + quad * grid**2 - best
    chi2 = (r / np.where(r > 0, up, down)) ** 2
    inside = grid[chi2 - chi2.min() < n_sigma**2]
    if inside.size < 2:
        raise ConfigError(f"the card constrains {name} to less than the grid step",
                          where="--range", hint="give the scan range explicitly")
    lo, hi = float(inside[0]), float(inside[-1])
    pad = 0.15 * (hi - lo)
    return max(lo - pad, bounds[0]), min(hi + pad, bounds[1])

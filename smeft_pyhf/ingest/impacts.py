"""Uncertainty breakdown of the POI: total, stat, per category / paper group, per-NP impacts.

Definitions (all uncertainties absolute, on the POI):

* **total**: symmetric from Hesse; asymmetric from the profile likelihood, i.e. the points where
  ``-2 log L`` profiled over all other parameters rises by 1 above the minimum (found by secant
  steps on ``sqrt(Delta 2NLL)``, each step one constrained refit).
* **reduced(G)**: the POI uncertainty of a fit in which the parameters of group ``G`` are fixed
  at their best-fit values. **impact(G) = sqrt(total^2 - reduced(G)^2)**; when the difference is
  negative (numerical noise, strong anti-correlations) the impact is 0 and the fact is recorded.
* **stat**: the POI uncertainty with *all constrained* parameters fixed and the free
  normalisation factors such as ``mu_WZ`` floating (``stat_convention="free-floating"``), or
  with every parameter but the POI fixed (``"all-fixed"``).

These are the rows to put beside a paper's table. Correlated groups share variance, so their
squares do not add up to the total; the breakdown whose squares do is
:mod:`smeft_pyhf.ingest.decomposition`.

Two methods for ``reduced``:

* ``"profile"`` (default): real refits. For each group, two constrained refits with the POI at
  ``mu_hat +/- d`` (``d`` the Hesse estimate of the reduced uncertainty) and the group fixed give
  ``Delta 2NLL = q``; the crossing of ``Delta 2NLL = 1`` is ``d / sqrt(q)`` on each side (exact
  for a parabola, one secant step otherwise); ``reduced`` is the mean of the two sides and the
  total uses the same construction, so the breakdown is consistent.
* ``"hesse"``: fixing parameters at their best-fit values leaves the minimum where it is (the
  gradient vanishes there), so the refit's Hesse uncertainty is the POI entry of the inverse
  of the best fit's Hessian restricted to the remaining free parameters. No minimisation is
  needed; it is exact for a Gaussian likelihood and instantaneous.

Per-NP impacts follow cabinetry's ranking: each NP is fixed at ``hat +/- sigma`` (post-fit,
and pre-fit for constrained NPs) and the POI shift of the refit is recorded. Only the leading
``n`` NPs, ranked cheaply by the linear estimate ``|cov(mu, theta)| / sigma_theta``, are refit.
Every refit starts from the best fit's linear response (see
:func:`smeft_pyhf.ingest.fitting.refit`).

Example:
    >>> from smeft_pyhf._resources import shipped_dir
    >>> from smeft_pyhf.ingest.workspace import load_workspace
    >>> from smeft_pyhf.ingest.fitting import fit
    >>> ws = load_workspace(shipped_dir("workspaces") / "example_ttZ_like.json")
    >>> best = fit(ws.model, ws.data)
    >>> total = total_uncertainty(ws.model, ws.data, best)
    >>> bool(0.1 < total.symmetric < 0.3)
    True
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Literal, NamedTuple

import numpy as np
import pyhf

from ..exceptions import WorkspaceError
from .fitting import LOWER_POINT_TOLERANCE, Objective, WorkspaceFit, parameter_indices, refit

__all__ = [
    "Breakdown",
    "GroupImpact",
    "ParameterImpact",
    "TotalUncertainty",
    "constrained_parameters",
    "grouped_breakdown",
    "parameter_impacts",
    "total_uncertainty",
]

log = logging.getLogger(__name__)

Method = Literal["profile", "hesse"]


class TotalUncertainty(NamedTuple):
    """Total uncertainty on the POI.

    Attributes:
        best_fit: the POI's best-fit value.
        up: distance to the upper ``Delta 2NLL = 1`` crossing (profile likelihood).
        down: distance to the lower crossing, as a positive number.
        symmetric: Hesse uncertainty.
        n_fits: refits used.
    """

    best_fit: float
    up: float
    down: float
    symmetric: float
    n_fits: int


class GroupImpact(NamedTuple):
    """Impact of one category (or paper group, or the stat-only fit) on the POI.

    Attributes:
        name: category or group label (``"Stat"`` for the stat-only fit).
        kind: ``"systematic"``, ``"theory"``, ``"group"`` or ``"stat"``.
        parameters: parameter-set names fixed for the reduced fit.
        reduced: POI uncertainty with those parameters fixed (mean of both sides).
        reduced_up: upper side of ``reduced`` (``"profile"``; equals ``reduced`` for ``"hesse"``).
        reduced_down: lower side.
        impact: ``sqrt(total^2 - reduced^2)`` (``reduced`` itself for ``"stat"``).
        negative: ``total^2 - reduced^2`` came out negative (impact set to 0).
    """

    name: str
    kind: str
    parameters: tuple[str, ...]
    reduced: float
    reduced_up: float
    reduced_down: float
    impact: float
    negative: bool


class Breakdown(NamedTuple):
    """Result of :func:`grouped_breakdown`.

    Attributes:
        total: total uncertainty used for the quadrature subtraction (``"profile"``: the mean of
            the one-step up/down crossings; ``"hesse"``: the Hesse uncertainty).
        stat: the stat-only entry.
        groups: one entry per requested group, in the given order.
        method: ``"profile"`` or ``"hesse"``.
        n_fits: refits used.
    """

    total: float
    stat: GroupImpact
    groups: tuple[GroupImpact, ...]
    method: str
    n_fits: int


class ParameterImpact(NamedTuple):
    """Impact of one nuisance parameter on the POI (cabinetry-style ranking entry).

    Attributes:
        parameter: parameter label (``name`` or ``name[i]``).
        index: its index in ``model.config`` order.
        bestfit: its best-fit value.
        postfit_sigma: its Hesse uncertainty.
        prefit_sigma: its pre-fit width (``None`` for unconstrained parameters).
        postfit_up: POI shift when fixed at ``bestfit + postfit_sigma``.
        postfit_down: POI shift when fixed at ``bestfit - postfit_sigma``.
        prefit_up: POI shift at ``bestfit + prefit_sigma`` (``None`` when not computed).
        prefit_down: POI shift at ``bestfit - prefit_sigma``.
        estimate: the linear estimate used for ranking, ``|cov(mu, theta)| / sigma``.
        twice_nll_up: ``Delta 2NLL`` of the post-fit up refit (a free scan point at +1 sigma).
        twice_nll_down: ``Delta 2NLL`` of the post-fit down refit.
    """

    parameter: str
    index: int
    bestfit: float
    postfit_sigma: float
    prefit_sigma: float | None
    postfit_up: float
    postfit_down: float
    prefit_up: float | None
    prefit_down: float | None
    estimate: float
    twice_nll_up: float
    twice_nll_down: float


def _require_poi(model: pyhf.pdf.Model) -> int:
    if model.config.poi_index is None:
        raise WorkspaceError("the model has no POI; choose one with --poi")
    return int(model.config.poi_index)


def _require_hessian(best: WorkspaceFit) -> np.ndarray:
    if best.hessian is None or best.covariance is None:
        raise WorkspaceError(
            "the best fit has no covariance matrix (Hesse failed), so no breakdown can be made",
            hint="try --minimizer scipy, or check the fit diagnostics",
        )
    return best.hessian


def constrained_parameters(model: pyhf.pdf.Model) -> list[str]:
    """Names of the constrained parameter sets (normsys, histosys, staterror, lumi, ...).

    Example:
        >>> from smeft_pyhf._resources import shipped_dir
        >>> from smeft_pyhf.ingest.workspace import load_workspace
        >>> m = load_workspace(shipped_dir("workspaces") / "example_ttZ_like.json").model
        >>> "mu_WZ" in constrained_parameters(m), "JES_EffectiveNP_1" in constrained_parameters(m)
        (False, True)
    """
    return [name for name in model.config.par_order if model.config.param_set(name).constrained]


def _hesse_reduced(best: WorkspaceFit, poi: int, fixed_idx: Sequence[int]) -> float:
    hessian = _require_hessian(best)
    free_mask = ~best.fixed.copy()
    free_mask[list(fixed_idx)] = False
    free = np.flatnonzero(free_mask)
    if poi not in free:
        return 0.0
    block = hessian[np.ix_(free, free)]
    position = int(np.searchsorted(free, poi))
    unit = np.zeros(len(free))
    unit[position] = 1.0
    try:
        solved = np.linalg.solve(block, unit)
    except np.linalg.LinAlgError:
        solved = np.linalg.lstsq(block, unit, rcond=None)[0]
    return float(math.sqrt(max(2.0 * solved[position], 0.0)))


def _profile_sides(
    objective: Objective,
    best: WorkspaceFit,
    poi: int,
    fixed_idx: Sequence[int],
    guess: float,
    *,
    iterations: int = 1,
) -> tuple[float, float, int]:
    """Distances to the ``Delta 2NLL = 1`` crossings (with ``fixed_idx`` at best fit)."""
    mu_hat = float(best.bestfit[poi])
    lower, upper = objective.lower[poi], objective.upper[poi]
    base = {i: float(best.bestfit[i]) for i in fixed_idx}
    sides = []
    fits = 0
    for sign in (+1.0, -1.0):
        distance = max(guess, 1e-6)
        for _ in range(iterations):
            target = mu_hat + sign * distance
            target = min(max(target, lower), upper)
            step = abs(target - mu_hat)
            if step <= 0:
                break
            result = refit(objective, best, {**base, poi: target})
            fits += 1
            q = result.twice_nll - best.twice_nll
            if not math.isfinite(q) or q <= 1e-9:
                if math.isfinite(q) and q < -LOWER_POINT_TOLERANCE:
                    log.warning(
                        "profile scan: Delta 2NLL = %.3g at mu = %.4g, below the best fit: the "
                        "best fit is not the global minimum", q, target,
                    )
                else:
                    log.debug("profile scan: Delta 2NLL = %.3g at mu = %.4g; keeping the guess",
                              q, target)
                break
            distance = step / math.sqrt(q)
        room = (upper - mu_hat) if sign > 0 else (mu_hat - lower)
        if distance > room:
            # the crossing lies outside the POI's allowed range (e.g. mu_hat at its lower bound
            # of 0): the interval ends at the bound
            log.warning(
                "profile: the Delta 2NLL = 1 crossing %s mu_hat = %.4g lies beyond the POI bound "
                "%.4g; the interval is cut there", "above" if sign > 0 else "below", mu_hat,
                upper if sign > 0 else lower,
            )
            distance = room
        sides.append(distance)
    return sides[0], sides[1], fits


def total_uncertainty(
    model: pyhf.pdf.Model,
    data: Sequence[float],
    best: WorkspaceFit,
    *,
    iterations: int = 2,
    objective: Objective | None = None,
) -> TotalUncertainty:
    """Total POI uncertainty: Hesse (symmetric) and profile-likelihood crossings (asymmetric).

    Args:
        model: the model.
        data: observed + auxiliary data.
        best: the best fit (with Hessian).
        iterations: secant refinements per side (each one refit).
        objective: reuse an :class:`~smeft_pyhf.ingest.fitting.Objective` (it keeps the lowest
            point the refits came across).

    Example:
        >>> from smeft_pyhf._resources import shipped_dir
        >>> from smeft_pyhf.ingest.workspace import load_workspace
        >>> from smeft_pyhf.ingest.fitting import fit
        >>> ws = load_workspace(shipped_dir("workspaces") / "example_ttZ_like.json")
        >>> t = total_uncertainty(ws.model, ws.data, fit(ws.model, ws.data))
        >>> bool(abs(t.up - t.symmetric) < 0.2 * t.symmetric)
        True
    """
    poi = _require_poi(model)
    _require_hessian(best)
    objective = objective or Objective(model, data)
    sym = float(best.uncertainty[poi])
    up, down, fits = _profile_sides(objective, best, poi, (), sym, iterations=iterations)
    return TotalUncertainty(float(best.bestfit[poi]), up, down, sym, fits)


def grouped_breakdown(
    model: pyhf.pdf.Model,
    data: Sequence[float],
    best: WorkspaceFit,
    groups: Mapping[str, Sequence[str]],
    *,
    kinds: Mapping[str, str] | None = None,
    method: Method = "profile",
    objective: Objective | None = None,
    stat_convention: Literal["free-floating", "all-fixed"] = "free-floating",
) -> Breakdown:
    """Impact of each group of parameters on the POI, plus the stat-only uncertainty.

    Args:
        model: the model.
        data: observed + auxiliary data.
        best: the best fit (with Hessian).
        groups: label -> parameter-set names (e.g. SFitter category -> NPs).
        kinds: label -> kind recorded in the result (default ``"group"``).
        method: ``"profile"`` (refits, default) or ``"hesse"`` (see the module docstring).
        objective: reuse an :class:`~smeft_pyhf.ingest.fitting.Objective`.
        stat_convention: which parameters the stat-only fit fixes: the constrained ones
            (``"free-floating"``) or all but the POI (``"all-fixed"``).

    Returns:
        A :class:`Breakdown`.

    Example:
        >>> from smeft_pyhf._resources import shipped_dir
        >>> from smeft_pyhf.ingest.workspace import load_workspace
        >>> from smeft_pyhf.ingest.fitting import fit
        >>> ws = load_workspace(shipped_dir("workspaces") / "example_ttZ_like.json")
        >>> b = grouped_breakdown(ws.model, ws.data, fit(ws.model, ws.data),
        ...                       {"Leptons": ["EL_SF_ID", "MUON_EFF_ID"]}, method="hesse")
        >>> b.groups[0].name, bool(0 < b.groups[0].impact < b.total)
        ('Leptons', True)
    """
    poi = _require_poi(model)
    _require_hessian(best)
    objective = objective or Objective(model, data)
    kinds = dict(kinds or {})
    n_total = len(groups) + 2
    fits = 0

    def reduced_of(label: str, names: Sequence[str], counter: int) -> tuple[float, float, float]:
        nonlocal fits
        indices = [i for name in names for i in parameter_indices(model, name)]
        hesse = _hesse_reduced(best, poi, indices)
        if method == "hesse" or hesse == 0.0:
            return hesse, hesse, hesse
        log.info("fit %d/%d: fixing %s (%d parameters) ...", counter, n_total, label, len(indices))
        up, down, used = _profile_sides(objective, best, poi, indices, hesse)
        fits += used
        return 0.5 * (up + down), up, down

    total, _total_up, _total_down = reduced_of("nothing (total)", (), 1)
    if method == "hesse":
        total = float(best.uncertainty[poi])

    def make(label: str, kind: str, names: Sequence[str], counter: int) -> GroupImpact:
        reduced, up, down = reduced_of(label, names, counter)
        difference = total**2 - reduced**2
        negative = difference < 0
        if negative:
            log.warning(
                "%s: reduced uncertainty %.4g exceeds the total %.4g; impact set to 0",
                label, reduced, total,
            )
        impact = math.sqrt(max(difference, 0.0))
        return GroupImpact(label, kind, tuple(names), reduced, up, down, impact, bool(negative))

    if stat_convention == "all-fixed":
        stat_names = [p for p in model.config.par_order if p != model.config.poi_name]
        stat_label = "Stat (all other parameters fixed)"
    else:
        stat_names = constrained_parameters(model)
        stat_label = "Stat (all constrained NPs fixed)"
    stat_entry = make(stat_label, "stat", stat_names, 2)
    stat_entry = stat_entry._replace(name="Stat", impact=stat_entry.reduced, negative=False)
    entries = [
        make(label, kinds.get(label, "group"), tuple(names), counter)
        for counter, (label, names) in enumerate(groups.items(), start=3)
    ]
    return Breakdown(total, stat_entry, tuple(entries), method, fits)


def _prefit_sigma(model: pyhf.pdf.Model, label_index: int) -> float | None:
    for name in model.config.par_order:
        indices = parameter_indices(model, name)
        if label_index in indices:
            pset = model.config.param_set(name)
            if not pset.constrained:
                return None
            widths = pset.width()
            return float(widths[indices.index(label_index)])
    return None


def parameter_impacts(
    model: pyhf.pdf.Model,
    data: Sequence[float],
    best: WorkspaceFit,
    *,
    n: int = 20,
    prefit: bool = True,
    exclude: Sequence[str] = (),
    objective: Objective | None = None,
) -> tuple[ParameterImpact, ...]:
    """Per-NP impacts on the POI for the leading ``n`` parameters (cabinetry-style ranking).

    Args:
        model: the model.
        data: observed + auxiliary data.
        best: the best fit (with covariance).
        n: how many parameters to refit (ranked by the linear estimate first).
        prefit: also compute pre-fit impacts for constrained parameters.
        exclude: parameter-set names to skip (e.g. ignored ones).
        objective: reuse an :class:`~smeft_pyhf.ingest.fitting.Objective`.

    Returns:
        Impacts sorted by ``max(|postfit_up|, |postfit_down|)``, largest first.

    Example:
        >>> from smeft_pyhf._resources import shipped_dir
        >>> from smeft_pyhf.ingest.workspace import load_workspace
        >>> from smeft_pyhf.ingest.fitting import fit
        >>> ws = load_workspace(shipped_dir("workspaces") / "example_ttZ_like.json")
        >>> ranking = parameter_impacts(ws.model, ws.data, fit(ws.model, ws.data), n=3)
        >>> len(ranking)
        3
    """
    poi = _require_poi(model)
    _require_hessian(best)
    if n <= 0:
        return ()
    objective = objective or Objective(model, data)
    cov = best.covariance
    assert cov is not None
    skip = {i for name in exclude for i in parameter_indices(model, name)}
    candidates = [
        i
        for i in np.flatnonzero(~best.fixed)
        if i != poi and i not in skip and best.uncertainty[i] > 0
    ]
    estimate = {i: abs(cov[poi, i]) / best.uncertainty[i] for i in candidates}
    leading = sorted(candidates, key=lambda i: -estimate[i])[:n]
    results = []
    mu_hat = float(best.bestfit[poi])
    for counter, i in enumerate(leading, start=1):
        label = best.labels[i]
        log.info("impact %d/%d: %s ...", counter, len(leading), label)
        sigma = float(best.uncertainty[i])
        hat = float(best.bestfit[i])

        def shifted(delta: float, i: int = i, hat: float = hat) -> tuple[float, float]:
            value = min(max(hat + delta, objective.lower[i]), objective.upper[i])
            result = refit(objective, best, {i: value}, accept=0.05)
            q = result.twice_nll - best.twice_nll
            if result.twice_nll >= 1e29:
                return float("nan"), float("nan")
            return float(result.values[poi] - mu_hat), float(q)

        up, q_up = shifted(sigma)
        down, q_down = shifted(-sigma)
        pre_sigma = _prefit_sigma(model, int(i))
        pre_up = pre_down = None
        if prefit and pre_sigma is not None:
            if abs(pre_sigma - sigma) < 1e-3 * pre_sigma:
                pre_up, pre_down = up, down
            else:
                pre_up = shifted(pre_sigma)[0]
                pre_down = shifted(-pre_sigma)[0]
        results.append(
            ParameterImpact(
                label, int(i), hat, sigma, pre_sigma, up, down, pre_up, pre_down,
                float(estimate[i]), q_up, q_down,
            )
        )

    def size(item: ParameterImpact) -> float:
        values = [abs(v) for v in (item.postfit_up, item.postfit_down) if math.isfinite(v)]
        return max(values, default=0.0)

    return tuple(sorted(results, key=lambda item: -size(item)))

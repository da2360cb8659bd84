"""The POI's variance split into independent sources: the breakdown that adds up to the total.

Fix-and-refit impacts (:func:`~smeft_pyhf.ingest.impacts.grouped_breakdown`) answer "how much
smaller would the uncertainty be if this group were known exactly"; correlated groups share
variance, so their squares do not add up to the total (with stat and the categories added in
quadrature: 1.20 times the total on ttbar l+jets, 1.16 on the s-channel with the paper's stat,
1.20 with its free normalisations floating in stat). The combined likelihood adds a card's
categories in quadrature, so the numbers it reads must split the variance instead.

**Variance by source** (the covariance-based breakdown of arXiv:2307.04007, Pinto et al.,
proposed for cabinetry in scikit-hep/cabinetry#491 and #514). ``-2 log L`` is the sum of the
main measurement (the Poisson counts) and one constraint term per nuisance parameter (its
auxiliary measurement), so its Hessian at the best fit is ``H = H_data + sum_k H_k`` with
``H_k`` non-zero only in the diagonal entry of parameter ``k``. With ``C = 2 H^-1`` the
covariance,

    V_mu = C_mu,mu = sum_k (C H_k C)_mu,mu / 2  +  (C H_data C)_mu,mu / 2

exactly. The term of parameter ``k`` is ``C_mu,k^2 h_k / 2`` with ``h_k`` the curvature of its
constraint term (``2 / sigma_k^2`` for a Gaussian one): the variance the POI inherits from the
fluctuation of that auxiliary measurement, never negative. The data term ``D = V_mu - sum_k``
is everything the Poisson counts contribute: the POI's own statistics, the free normalisations
(they have no constraint term, the data alone measure them) and the data's in-situ
measurement of the nuisance parameters.

How ``D`` is reported depends on the **stat convention** (``stat_convention``):

* ``"free-floating"`` (default): ``stat`` is the POI uncertainty of a fit with the constrained
  parameters fixed and the free normalisations floating; the free normalisations are
  statistical and their categories carry only their constrained parameters;
* ``"all-fixed"``: ``stat`` is the POI uncertainty with every other parameter fixed (the
  convention of most ATLAS papers); the free normalisations belong to their categories.

Both are read off the best fit's Hessian (fixing at the best fit leaves the minimum in place).
The rest of the data term, ``R = D - stat^2``, is the data's measurement of the parameters
profiled with the POI; it goes to the categories in proportion to each category's *data
excess* ``max(impact_c^2 - a_c, 0)``, where ``a_c`` is the category's constraint share and
``impact_c^2 = V_mu - V_mu(c fixed)`` its fix-and-refit impact (free normalisations count in
it only for ``"all-fixed"``). For one parameter uncorrelated with the others the excess is
exactly its data share; the proportional split distributes what correlations move around. A
category's number is ``sqrt(a_c + R_c)``, stat's ``sqrt(stat^2)``, and

    stat^2 + sum_c (a_c + R_c) = V_mu

to rounding (the closure is 1 unless parameters the mapping ignores float, or the data term is
smaller than the convention's stat, see :class:`Decomposition`).

Example:
    >>> from smeft_pyhf._resources import shipped_dir
    >>> from smeft_pyhf.ingest.workspace import load_workspace
    >>> from smeft_pyhf.ingest.fitting import fit
    >>> ws = load_workspace(shipped_dir("workspaces") / "example_ttZ_like.json")
    >>> best = fit(ws.model, ws.data)
    >>> d = variance_decomposition(ws.model, ws.data, best,
    ...                            {"Jets": ["JES_EffectiveNP_1", "JER_EffectiveNP_1"]})
    >>> round(d.closure, 6) < 1.0      # the other parameters are in no group here
    True
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Literal, NamedTuple, get_args

import numpy as np
import pyhf

from ..exceptions import WorkspaceError
from .fitting import WorkspaceFit, numpy_backend, parameter_indices

__all__ = [
    "DEFAULT_STAT_CONVENTION",
    "STAT_CONVENTIONS",
    "Decomposition",
    "SourceShare",
    "StatConvention",
    "constraint_curvature",
    "free_parameters",
    "stat_uncertainty",
    "variance_decomposition",
]

log = logging.getLogger(__name__)

StatConvention = Literal["free-floating", "all-fixed"]
#: The stat conventions: free normalisations floating (statistical) or everything fixed.
STAT_CONVENTIONS: tuple[str, ...] = get_args(StatConvention)
#: Used when neither the command line nor the mapping chooses one.
DEFAULT_STAT_CONVENTION: StatConvention = "free-floating"
#: Name of the method in the card (``decomposition.method``).
METHOD = "variance-by-source"


class SourceShare(NamedTuple):
    """One category's share of the POI variance (absolute uncertainties, on the POI).

    Attributes:
        name: category label.
        kind: ``"systematic"``, ``"theory"`` or ``"group"``.
        parameters: parameter-set names of the category.
        constraint: ``sqrt(a_c)``, from the auxiliary measurements of its parameters.
        data: ``sqrt(R_c)``, its part of the data term beyond stat.
        absolute: ``sqrt(a_c + R_c)``: the number that enters the combined likelihood.
        impact: the fix-and-refit (Hessian-removal) impact used for the data excess.
    """

    name: str
    kind: str
    parameters: tuple[str, ...]
    constraint: float
    data: float
    absolute: float
    impact: float


class Decomposition(NamedTuple):
    """Result of :func:`variance_decomposition`.

    Attributes:
        total: the Hesse uncertainty of the POI (``sqrt(V_mu)``), the quantity split up.
        stat: the statistical uncertainty reported (``sqrt(stat^2)``).
        stat_convention: ``"free-floating"`` or ``"all-fixed"``.
        stat_hessian: the convention's stat from the Hessian, before any cap (see ``notes``).
        data: ``sqrt(D)``, the whole data term (``nan`` if ``D < 0``).
        in_situ: ``sqrt(R)``, the data term beyond stat that the categories carry.
        constraint: ``sqrt(sum_k a_k)`` over all parameters.
        groups: one :class:`SourceShare` per category, in the given order.
        free_parameters: the free normalisations (unconstrained, floating, not the POI) and
            where their uncertainty goes: their category or ``"Stat"``.
        unassigned: ``sqrt`` of the constraint share of parameters in no category (ignored
            but floating ones); it is in no number of the card.
        implied_total: ``sqrt(stat^2 + sum_c absolute_c^2)``.
        closure: ``implied_total / total``.
        notes: what made the closure differ from 1, if anything.
    """

    total: float
    stat: float
    stat_convention: str
    stat_hessian: float
    data: float
    in_situ: float
    constraint: float
    groups: tuple[SourceShare, ...]
    free_parameters: dict[str, str]
    unassigned: float
    implied_total: float
    closure: float
    notes: tuple[str, ...]


def constraint_curvature(
    model: pyhf.pdf.Model, data: Sequence[float], point: Sequence[float]
) -> np.ndarray:
    """Second derivative of ``-2 log`` (constraint terms) along each parameter at ``point``.

    Every constraint term of a HistFactory model depends on one parameter component, so this
    diagonal is the whole Hessian of the constraint part: ``2 / sigma^2`` for a Gaussian
    constraint (normsys, histosys, lumi, staterror), ``2 a / gamma^2`` for a Poisson one
    (shapesys). It is measured by central differences of pyhf's ``constraint_logpdf``
    (exact for the Gaussian terms up to rounding); unconstrained parameters get 0.

    Args:
        model: the pyhf model.
        data: observed data followed by the auxiliary data.
        point: where to evaluate (the best fit).

    Example:
        >>> from smeft_pyhf._resources import shipped_dir
        >>> from smeft_pyhf.ingest.workspace import load_workspace
        >>> ws = load_workspace(shipped_dir("workspaces") / "example_ttZ_like.json")
        >>> h = constraint_curvature(ws.model, ws.data, ws.model.config.suggested_init())
        >>> i = ws.model.config.par_slice("JES_EffectiveNP_1").start
        >>> round(float(h[i]), 6), float(h[ws.model.config.poi_index])
        (2.0, 0.0)
    """
    config = model.config
    x0 = np.asarray(point, dtype=float)
    aux = np.asarray(data, dtype=float)[-len(config.auxdata):] if config.auxdata else np.zeros(0)
    curvature = np.zeros(len(x0))
    if not len(aux):
        return curvature
    with numpy_backend(), np.errstate(all="ignore"):

        def value(x: np.ndarray) -> float:
            return -2.0 * float(np.sum(model.constraint_logpdf(aux, x)))

        f0 = value(x0)
        for name in config.par_order:
            pset = config.param_set(name)
            if not pset.constrained:
                continue
            widths = np.atleast_1d(np.asarray(pset.width(), dtype=float))
            for j, i in enumerate(parameter_indices(model, name)):
                h = 1e-3 * (widths[j] if widths[j] > 0 else 1.0)
                up, down = x0.copy(), x0.copy()
                up[i] += h
                down[i] -= h
                curvature[i] = (value(up) - 2.0 * f0 + value(down)) / h**2
    return np.where(np.isfinite(curvature), curvature, 0.0)


def free_parameters(model: pyhf.pdf.Model, best: WorkspaceFit) -> list[int]:
    """Indices of the floating unconstrained parameters other than the POI (free normalisations).

    Example:
        >>> from smeft_pyhf._resources import shipped_dir
        >>> from smeft_pyhf.ingest.workspace import load_workspace
        >>> from smeft_pyhf.ingest.fitting import fit
        >>> ws = load_workspace(shipped_dir("workspaces") / "example_ttZ_like.json")
        >>> best = fit(ws.model, ws.data)
        >>> [best.labels[i] for i in free_parameters(ws.model, best)]
        ['mu_WZ']
    """
    poi = model.config.poi_index
    out = []
    for name in model.config.par_order:
        if model.config.param_set(name).constrained:
            continue
        out += [i for i in parameter_indices(model, name) if i != poi and not best.fixed[i]]
    return sorted(out)


def _poi_variance(hessian: np.ndarray, poi: int, keep: Sequence[int]) -> float:
    """``2 (H_KK^-1)_mu,mu``: the POI variance with only ``keep`` floating."""
    keep = sorted(set(keep) | {poi})
    block = hessian[np.ix_(keep, keep)]
    unit = np.zeros(len(keep))
    position = keep.index(poi)
    unit[position] = 1.0
    try:
        solved = np.linalg.solve(block, unit)
    except np.linalg.LinAlgError:
        solved = np.linalg.lstsq(block, unit, rcond=None)[0]
    return max(2.0 * float(solved[position]), 0.0)


def _require(model: pyhf.pdf.Model, best: WorkspaceFit) -> tuple[int, np.ndarray, np.ndarray]:
    if model.config.poi_index is None:
        raise WorkspaceError("the model has no POI; choose one with --poi")
    if best.hessian is None or best.covariance is None:
        raise WorkspaceError(
            "the best fit has no covariance matrix (Hesse failed), so no breakdown can be made",
            hint="try --minimizer scipy, or check the fit diagnostics",
        )
    return int(model.config.poi_index), best.hessian, best.covariance


def stat_uncertainty(
    model: pyhf.pdf.Model, best: WorkspaceFit, *, stat_convention: StatConvention
) -> float:
    """The POI's statistical uncertainty under a stat convention, from the best fit's Hessian.

    ``"free-floating"``: the constrained parameters fixed, free normalisations floating;
    ``"all-fixed"``: every parameter but the POI fixed.

    Example:
        >>> from smeft_pyhf._resources import shipped_dir
        >>> from smeft_pyhf.ingest.workspace import load_workspace
        >>> from smeft_pyhf.ingest.fitting import fit
        >>> ws = load_workspace(shipped_dir("workspaces") / "example_ttZ_like.json")
        >>> best = fit(ws.model, ws.data)
        >>> fixed = stat_uncertainty(ws.model, best, stat_convention="all-fixed")
        >>> bool(fixed < stat_uncertainty(ws.model, best, stat_convention="free-floating"))
        True
    """
    _check_convention(stat_convention)
    poi, hessian, _ = _require(model, best)
    keep = [poi] if stat_convention == "all-fixed" else [poi, *free_parameters(model, best)]
    return math.sqrt(_poi_variance(hessian, poi, keep))


def _check_convention(stat_convention: str) -> None:
    if stat_convention not in STAT_CONVENTIONS:
        raise WorkspaceError(
            f"unknown stat convention {stat_convention!r}",
            where="stat_convention",
            hint="use one of " + ", ".join(STAT_CONVENTIONS),
        )


def _stat_variance(
    hessian: np.ndarray,
    poi: int,
    free: Sequence[int],
    stat_convention: str,
    data_term: float,
    notes: list[str],
) -> tuple[float, float]:
    """The stat variance from the Hessian in ``stat_convention`` and the stat variance used
    (at most the data term); notes when the two disagree or the data term is negative."""
    stat_hessian2 = _poi_variance(hessian, poi, [poi] if stat_convention == "all-fixed"
                                  else [poi, *free])
    stat2 = min(stat_hessian2, max(data_term, 0.0))
    if stat_hessian2 > max(data_term, 0.0) * (1 + 1e-9):
        notes.append(
            f"the {stat_convention} stat from the Hessian ({math.sqrt(stat_hessian2):.4g}) "
            f"exceeds the data term of the variance decomposition "
            f"({math.sqrt(max(data_term, 0.0)):.4g}; the observed Hessian of the Poisson "
            "terms is not positive definite): stat is the data term"
        )
    if data_term < 0:
        notes.append(
            f"the data term of the variance decomposition is negative ({data_term:.3g}): the "
            "categories add up to more than the total"
        )
    return stat_hessian2, stat2


def _hesse_impacts2(
    hessian: np.ndarray,
    poi: int,
    index_of: Mapping[str, Sequence[int]],
    free: Sequence[int],
    all_floating: Sequence[int],
    variance: float,
    stat_convention: str,
) -> dict[str, float]:
    """Each category's squared fix-and-refit impact from the Hessian (free normalisations
    count only under ``"all-fixed"``)."""
    free_set = set(free)
    impacts2: dict[str, float] = {}
    for label, idx in index_of.items():
        counted = [i for i in idx if stat_convention == "all-fixed" or i not in free_set]
        fixed_now = set(counted)
        reduced = _poi_variance(hessian, poi, [i for i in all_floating if i not in fixed_now])
        impacts2[label] = max(variance - reduced, 0.0) if counted else 0.0
    return impacts2


def _free_homes(
    best: WorkspaceFit,
    free: Sequence[int],
    index_of: Mapping[str, Sequence[int]],
    stat_convention: str,
) -> dict[str, str]:
    """Where each free normalisation's share goes: ``"Stat"`` or its category."""
    home = {}
    for i in free:
        label = next((g for g, idx in index_of.items() if i in idx), None)
        home[best.labels[i]] = (
            "Stat" if stat_convention == "free-floating"
            else label if label is not None else "(no category)"
        )
    return home


def _data_shares(remainder: float, impacts2: Mapping[str, float],
                 constraint: Mapping[str, float],
                 notes: list[str]) -> tuple[dict[str, float], float]:
    """Share the data term beyond stat (``remainder``, a variance) among the categories in
    proportion to their data excess (Hesse impact squared minus constraint share, floored at 0).

    Returns the share per category (keys and order of ``constraint``) and the variance that
    goes back to stat: all of ``remainder`` when no category has an excess (noted in
    ``notes``), else 0.

    Example:
        >>> _data_shares(0.5, {"a": 3.0, "b": 1.0}, {"a": 1.0, "b": 0.5}, [])
        ({'a': 0.4, 'b': 0.1}, 0.0)
    """
    excess = {label: max(impacts2[label] - constraint[label], 0.0) for label in constraint}
    total_excess = sum(excess.values())
    if remainder > 0 and total_excess <= 0:
        notes.append(
            "no category has a data excess to carry the data term beyond stat: it stays in stat"
        )
        return dict.fromkeys(constraint, 0.0), remainder
    return {
        label: remainder * excess[label] / total_excess if total_excess > 0 else 0.0
        for label in constraint
    }, 0.0


def variance_decomposition(
    model: pyhf.pdf.Model,
    data: Sequence[float],
    best: WorkspaceFit,
    groups: Mapping[str, Sequence[str]],
    *,
    kinds: Mapping[str, str] | None = None,
    stat_convention: StatConvention = DEFAULT_STAT_CONVENTION,
) -> Decomposition:
    """Split the POI's Hesse variance into stat and one share per category (module docstring).

    Args:
        model: the pyhf model.
        data: observed data followed by the auxiliary data.
        best: the best fit (with Hessian and covariance).
        groups: category -> parameter-set names (a partition of the mapped parameters).
        kinds: category -> kind recorded in the result (default ``"group"``).
        stat_convention: ``"free-floating"`` or ``"all-fixed"``.

    Returns:
        A :class:`Decomposition`; ``stat^2 + sum of the shares^2`` equals ``total^2``.

    Raises:
        WorkspaceError: no POI, no Hessian, or an unknown stat convention.

    Example:
        >>> from smeft_pyhf._resources import shipped_dir
        >>> from smeft_pyhf.ingest.workspace import load_workspace
        >>> from smeft_pyhf.ingest.fitting import fit
        >>> ws = load_workspace(shipped_dir("workspaces") / "example_ttZ_like.json")
        >>> best = fit(ws.model, ws.data)
        >>> names = [p for p in ws.model.config.par_order if p != "mu_ttZ"]
        >>> d = variance_decomposition(ws.model, ws.data, best, {"all": names})
        >>> round(d.closure, 9)
        1.0
    """
    _check_convention(stat_convention)
    poi, hessian, covariance = _require(model, best)
    kinds = dict(kinds or {})
    notes: list[str] = []
    floating = ~np.asarray(best.fixed, dtype=bool)
    variance = float(covariance[poi, poi])
    curvature = constraint_curvature(model, data, best.bestfit) * floating
    shares = covariance[poi] ** 2 * curvature / 2.0  # (C H_k C)_mu,mu / 2 for diagonal H_k
    data_term = variance - float(shares.sum())

    free = free_parameters(model, best)
    stat_hessian2, stat2 = _stat_variance(hessian, poi, free, stat_convention, data_term, notes)
    remainder = max(data_term, 0.0) - stat2

    index_of: dict[str, list[int]] = {
        label: [i for name in names for i in parameter_indices(model, name)]
        for label, names in groups.items()
    }
    constraint = {label: float(shares[idx].sum()) for label, idx in index_of.items()}
    impacts2 = _hesse_impacts2(
        hessian, poi, index_of, free, [int(i) for i in np.flatnonzero(floating)], variance,
        stat_convention,
    )
    data_share, to_stat = _data_shares(remainder, impacts2, constraint, notes)
    if to_stat:
        stat2 += to_stat
        remainder = 0.0
    entries = tuple(
        SourceShare(label, kinds.get(label, "group"), tuple(groups[label]),
                    math.sqrt(constraint[label]), math.sqrt(data_share[label]),
                    math.sqrt(constraint[label] + data_share[label]), math.sqrt(impacts2[label]))
        for label in index_of
    )
    assigned = {i for idx in index_of.values() for i in idx}
    unassigned = float(sum(shares[i] for i in range(len(shares)) if i not in assigned))
    if unassigned > 1e-12 * variance:
        notes.append(
            f"parameters in no category (ignored but floating) hold {math.sqrt(unassigned):.3g} "
            "of the variance; it is in no number of the card"
        )
    home = _free_homes(best, free, index_of, stat_convention)
    implied2 = stat2 + sum(e.absolute**2 for e in entries)
    closure = math.sqrt(implied2 / variance) if variance > 0 else float("nan")
    log.info(
        "variance by source (%s): stat %.4g, categories %.4g, total %.4g, closure %.4f",
        stat_convention, math.sqrt(stat2), math.sqrt(implied2 - stat2), math.sqrt(variance),
        closure,
    )
    return Decomposition(
        total=math.sqrt(variance),
        stat=math.sqrt(stat2),
        stat_convention=stat_convention,
        stat_hessian=math.sqrt(stat_hessian2),
        data=math.sqrt(data_term) if data_term >= 0 else float("nan"),
        in_situ=math.sqrt(max(remainder, 0.0)),
        constraint=math.sqrt(float(shares.sum())),
        groups=entries,
        free_parameters=home,
        unassigned=math.sqrt(unassigned),
        implied_total=math.sqrt(implied2),
        closure=closure,
        notes=tuple(notes),
    )

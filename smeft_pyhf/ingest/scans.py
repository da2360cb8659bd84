"""1D profile-likelihood scans of nuisance parameters and a measure of their non-Gaussianity.

For a parameter ``theta`` with best fit ``hat`` and Hesse uncertainty ``sigma`` the scan
evaluates the profiled ``Delta 2NLL(t)`` at ``theta = hat + t sigma`` for ``t`` in
``points`` (default ``-2, -1.5, ..., 2``), each point a constrained refit of all the other
parameters. For a Gaussian likelihood ``Delta 2NLL(t) = t^2`` exactly. Reported per parameter:

* ``curvature``: the least-squares coefficient ``a`` of ``Delta 2NLL = a t^2`` through the scan
  points (1 when Hesse describes the profile; ``1/a`` is the squared ratio of the profile width
  to the Hesse width);
* ``non_gaussianity``: ``max_t |Delta 2NLL(t) - a t^2| / (a t_max^2)``, the largest departure from
  the best parabola as a fraction of its height at the edge of the scan (0 for a Gaussian; 0.1
  means the shape is off by 10 % of the ``2 sigma`` rise);
* ``asymmetry``: ``(s_up - s_down) / (s_up + s_down)`` from the ``Delta 2NLL = 1`` crossings
  (linear interpolation of ``sqrt(Delta 2NLL)``), 0 for a symmetric profile.

Points outside the parameter bounds are dropped; points where the model is unphysical (negative
yields) are reported as NaN and ignored in the measures.

Example:
    >>> from smeft_pyhf._resources import shipped_dir
    >>> from smeft_pyhf.ingest.workspace import load_workspace
    >>> from smeft_pyhf.ingest.fitting import fit
    >>> ws = load_workspace(shipped_dir("workspaces") / "example_ttZ_like.json")
    >>> best = fit(ws.model, ws.data)
    >>> scan = scan_parameter(ws.model, ws.data, best, "JES_EffectiveNP_1")
    >>> bool(scan.non_gaussianity < 0.1)
    True
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
import pyhf

from ..exceptions import WorkspaceError
from ..formats.intervals import crossing
from .fitting import Objective, WorkspaceFit, refit

__all__ = ["DEFAULT_POINTS", "NuisanceScan", "scan_parameter", "scan_parameters"]

log = logging.getLogger(__name__)

#: Scan points in units of the post-fit (Hesse) uncertainty.
DEFAULT_POINTS: tuple[float, ...] = (-2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0)


class NuisanceScan(NamedTuple):
    """A 1D profile-likelihood scan of one (nuisance) parameter around the workspace's best fit,
    in units of its Hesse uncertainty, with the Gaussianity figures a card's ``scans:`` lists.

    (An exact scan of a SMEFT coefficient in the full workspace is
    :class:`smeft_pyhf.checks.profile_scan.CoefficientScan`.)

    Attributes:
        parameter: parameter label.
        index: index in ``model.config`` order.
        bestfit: best-fit value.
        sigma: Hesse uncertainty used as the unit of the scan.
        values: scanned parameter values.
        delta_twice_nll: profiled ``-2 log L`` minus the minimum at each value (NaN if unphysical).
        curvature: least-squares ``a`` in ``Delta 2NLL = a t^2`` (1 for Hesse-Gaussian).
        non_gaussianity: largest departure from ``a t^2`` relative to ``a t_max^2``.
        asymmetry: ``(s_up - s_down) / (s_up + s_down)`` of the ``Delta 2NLL = 1`` crossings.
        crossing_up: ``s_up`` in units of the parameter (NaN if not reached).
        crossing_down: ``s_down`` (positive; NaN if not reached).
    """

    parameter: str
    index: int
    bestfit: float
    sigma: float
    values: tuple[float, ...]
    delta_twice_nll: tuple[float, ...]
    curvature: float
    non_gaussianity: float
    asymmetry: float
    crossing_up: float
    crossing_down: float


def _one_sigma_distance(t: np.ndarray, q: np.ndarray, sign: float) -> float:
    """Distance (in t units) where Delta 2NLL reaches 1 on one side, by sqrt-interpolation."""
    side = (t * sign > 0) & np.isfinite(q)
    ts = np.abs(t[side])
    order = np.argsort(ts)
    ts = np.concatenate([[0.0], ts[order]])
    roots = np.sqrt(np.clip(np.concatenate([[0.0], q[side][order]]), 0, None))
    above = np.flatnonzero(roots >= 1.0)
    if len(above) == 0:
        if len(ts) > 1 and roots[-1] > 0:
            return float(ts[-1] / roots[-1])  # extrapolate linearly in sqrt(q)
        return float("nan")
    k = int(above[0])
    if k == 0:
        return 0.0
    return crossing(ts[k - 1], roots[k - 1], ts[k], roots[k], 1.0)


def _measures(t: np.ndarray, q: np.ndarray) -> tuple[float, float, float, float, float]:
    ok = np.isfinite(q) & (t != 0)
    if ok.sum() < 2:
        nan = float("nan")
        return nan, nan, nan, nan, nan
    t2 = t[ok] ** 2
    a = float(np.sum(t2 * q[ok]) / np.sum(t2 * t2))
    height = a * float(np.max(t2))
    deviation = float(np.max(np.abs(q[ok] - a * t2)))
    non_gauss = deviation / height if height > 0 else float("nan")
    up, down = _one_sigma_distance(t, q, 1.0), _one_sigma_distance(t, q, -1.0)
    asym = (up - down) / (up + down) if (up + down) > 0 else float("nan")
    return a, non_gauss, asym, up, down


def scan_parameter(
    model: pyhf.pdf.Model,
    data: Sequence[float],
    best: WorkspaceFit,
    parameter: str | int,
    *,
    points: Sequence[float] = DEFAULT_POINTS,
    known: Mapping[float, float] | None = None,
    objective: Objective | None = None,
) -> NuisanceScan:
    """Profile-likelihood scan of one parameter around its best fit.

    Args:
        model: the model.
        data: observed + auxiliary data.
        best: the best fit (with Hessian and uncertainties).
        parameter: a label (``"name"`` or ``"name[i]"``) or an index.
        points: scan points in units of the Hesse uncertainty.
        known: ``t -> Delta 2NLL`` already computed (e.g. by the +/-1 sigma impact refits).
        objective: reuse an :class:`~smeft_pyhf.ingest.fitting.Objective`.

    Returns:
        A :class:`NuisanceScan`.

    Raises:
        WorkspaceError: unknown parameter, or a fixed parameter.

    Example:
        >>> from smeft_pyhf._resources import shipped_dir
        >>> from smeft_pyhf.ingest.workspace import load_workspace
        >>> from smeft_pyhf.ingest.fitting import fit
        >>> ws = load_workspace(shipped_dir("workspaces") / "example_ttZ_like.json")
        >>> scan = scan_parameter(ws.model, ws.data, fit(ws.model, ws.data), "ttZ_Shower",
        ...                       points=(-1, 1))
        >>> [round(q, 1) for q in scan.delta_twice_nll]
        [1.0, 0.0, 1.0]
    """
    labels = list(best.labels)
    if isinstance(parameter, str):
        if parameter not in labels:
            raise WorkspaceError(f"unknown parameter '{parameter}'", hint="see `smeft-pyhf inspect`")
        index = labels.index(parameter)
    else:
        index = int(parameter)
    if best.fixed[index]:
        raise WorkspaceError(f"parameter '{labels[index]}' is fixed; nothing to scan")
    objective = objective or Objective(model, data)
    hat = float(best.bestfit[index])
    sigma = float(best.uncertainty[index])
    known = dict(known or {})
    ts, qs = [0.0], [0.0]
    for t in points:
        if t == 0:
            continue
        value = hat + t * sigma
        if not objective.lower[index] <= value <= objective.upper[index]:
            continue
        if t in known:
            q = known[t]
        else:
            result = refit(objective, best, {index: value}, accept=0.05)
            q = result.twice_nll - best.twice_nll if result.twice_nll < 1e29 else float("nan")
        ts.append(float(t))
        qs.append(float(q))
    order = np.argsort(ts)
    t_arr = np.asarray(ts)[order]
    q_arr = np.asarray(qs)[order]
    a, non_gauss, asym, up, down = _measures(t_arr, q_arr)
    return NuisanceScan(
        parameter=labels[index],
        index=index,
        bestfit=hat,
        sigma=sigma,
        values=tuple(float(hat + t * sigma) for t in t_arr),
        delta_twice_nll=tuple(float(q) for q in q_arr),
        curvature=a,
        non_gaussianity=non_gauss,
        asymmetry=asym,
        crossing_up=up * sigma if math.isfinite(up) else float("nan"),
        crossing_down=down * sigma if math.isfinite(down) else float("nan"),
    )


def scan_parameters(
    model: pyhf.pdf.Model,
    data: Sequence[float],
    best: WorkspaceFit,
    parameters: Sequence[str | int],
    *,
    points: Sequence[float] = DEFAULT_POINTS,
    known: Mapping[str, Mapping[float, float]] | None = None,
    objective: Objective | None = None,
) -> tuple[NuisanceScan, ...]:
    """Scan several parameters (see :func:`scan_parameter`), logging progress.

    ``objective`` reuses an :class:`~smeft_pyhf.ingest.fitting.Objective` (it keeps the lowest
    point the scans came across).

    Example:
        >>> from smeft_pyhf._resources import shipped_dir
        >>> from smeft_pyhf.ingest.workspace import load_workspace
        >>> from smeft_pyhf.ingest.fitting import fit
        >>> ws = load_workspace(shipped_dir("workspaces") / "example_ttZ_like.json")
        >>> scans = scan_parameters(ws.model, ws.data, fit(ws.model, ws.data),
        ...                         ["ttZ_muR", "lumi"], points=(-1, 1))
        >>> [s.parameter for s in scans]
        ['ttZ_muR', 'lumi']
    """
    objective = objective or Objective(model, data)
    known = known or {}
    out = []
    for counter, parameter in enumerate(parameters, start=1):
        label = parameter if isinstance(parameter, str) else best.labels[int(parameter)]
        log.info("scan %d/%d: %s ...", counter, len(parameters), label)
        out.append(
            scan_parameter(
                model, data, best, parameter, points=points,
                known=known.get(label), objective=objective,
            )
        )
    return tuple(out)

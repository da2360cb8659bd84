"""Maximum-likelihood fits of a pyhf model: iminuit (default), scipy fallback, fast refits.

The objective is ``-2 log L`` from ``model.logpdf`` on pyhf's NumPy backend; iminuit runs on it
directly (``errordef = 1``), so pyhf's process-global optimizer is never touched. If the global
backend is not NumPy it is switched for the duration of a call and restored afterwards.

* :func:`fit`: Migrad (strategy 0, tolerance 0.1 by default) and Hesse; if Migrad fails, scipy's
  L-BFGS-B takes over (and Hesse is still attempted at its minimum). A converged fit whose Hesse
  step is flagged (e.g. a barely constrained free normalisation) is returned with
  ``hesse_valid=False`` and a warning, not an error.
* several starts: ``fit(..., n_random_starts=k)`` minimises from the nominal point, from any
  ``extra_starts`` (e.g. lower points that impact refits or scans came across) and from ``k``
  seeded random draws within the NP constraints; the lowest minimum wins, Hesse runs once
  there, and the result records how many starts agreed with it (within
  :data:`START_AGREEMENT` in ``2NLL``). A minimum where ``2NLL`` is not finite, or a fit that
  never left a start point where the gradient does not vanish, is never ``valid``.
* :func:`refit`: a constrained re-minimisation (some parameters fixed at given values) started
  from a good point, by Newton steps with the Hessian of the best fit (central-difference
  gradients, backtracking line search); falls back to Migrad when it does not converge. This
  is what keeps the grouped breakdown, per-NP impacts and scans fast.

Example:
    >>> from smeft_pyhf._resources import shipped_dir
    >>> from smeft_pyhf.ingest.workspace import load_workspace
    >>> ws = load_workspace(shipped_dir("workspaces") / "example_ttZ_like.json")
    >>> result = fit(ws.model, ws.data)
    >>> result.valid, round(float(result.bestfit[ws.model.config.poi_index]), 2)
    (True, 1.15)
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal, NamedTuple

import numpy as np
import pyhf

from .autodiff import compile_objective

__all__ = [
    "LOWER_POINT_TOLERANCE",
    "START_AGREEMENT",
    "Objective",
    "RefitResult",
    "StartResult",
    "WorkspaceFit",
    "fit",
    "new_minuit",
    "numpy_backend",
    "parameter_indices",
    "random_starts",
    "refit",
]

log = logging.getLogger(__name__)

Minimizer = Literal["minuit", "scipy"]

#: Two starts agree when their minima differ by less than this in ``2NLL``.
START_AGREEMENT = 0.01
#: A later evaluation lower than the best fit by more than this (in ``2NLL``) means the best fit
#: is not the global minimum.
LOWER_POINT_TOLERANCE = 0.01
#: Objectives map non-finite values to 1e30; anything above this is "not finite".
_NON_FINITE = 1e29


class StartResult(NamedTuple):
    """Where the minimisation from one start point ended.

    Attributes:
        label: ``"nominal"``, ``"given"``, the key of an extra start, or ``"random k"``.
        twice_nll: ``-2 log L`` at the minimum it reached (``inf`` if not finite).
        poi: the POI there (``nan`` without POI).
        valid: the minimiser converged to a finite minimum.
    """

    label: str
    twice_nll: float
    poi: float
    valid: bool


class WorkspaceFit(NamedTuple):
    """The maximum-likelihood fit of a HistFactory workspace (the result of :func:`fit`).

    Not to be confused with :class:`smeft_pyhf.results.results_file.FitResult`, the results of
    a SMEFT fit (``smeft-pyhf fit``).

    Attributes:
        bestfit: best-fit value of every parameter (``model.config`` order).
        uncertainty: Hesse uncertainty of every parameter (0 for fixed ones; NaN if unknown).
        labels: parameter labels (``name`` or ``name[i]``).
        twice_nll: ``-2 log L`` at the best fit.
        covariance: covariance matrix (``npars x npars``, zero rows for fixed parameters) or
            ``None`` if Hesse failed.
        hessian: Hessian of ``-2 log L`` over all parameters (fixed rows/columns zero) or ``None``.
        minimizer: ``"minuit"`` or ``"scipy"`` (what produced the minimum).
        valid: the minimisation converged.
        hesse_valid: the Hesse step succeeded and Minuit accepted the minimum afterwards.
        fixed: which parameters were held fixed.
        warnings: human-readable diagnostics.
        n_evaluations: objective evaluations used.
        seconds: wall time.
        starts: where each start point's minimisation ended (the chosen one first).
        n_agreeing: how many starts (the chosen one included) reached the chosen minimum
            within :data:`START_AGREEMENT` in ``2NLL``.
    """

    bestfit: np.ndarray
    uncertainty: np.ndarray
    labels: tuple[str, ...]
    twice_nll: float
    covariance: np.ndarray | None
    hessian: np.ndarray | None
    minimizer: str
    valid: bool
    hesse_valid: bool
    fixed: np.ndarray
    warnings: tuple[str, ...]
    n_evaluations: int
    seconds: float
    starts: tuple[StartResult, ...] = ()
    n_agreeing: int = 1


class RefitResult(NamedTuple):
    """Result of :func:`refit`.

    Attributes:
        values: parameter values at the constrained minimum.
        twice_nll: ``-2 log L`` there.
        converged: whether the estimated distance to the minimum went below the tolerance.
        method: ``"newton"`` or ``"minuit"`` (fallback).
        n_evaluations: objective evaluations used.
    """

    values: np.ndarray
    twice_nll: float
    converged: bool
    method: str
    n_evaluations: int


@contextlib.contextmanager
def numpy_backend() -> Iterator[None]:
    """Run a block on pyhf's NumPy backend, restoring the previous backend afterwards.

    Example:
        >>> with numpy_backend():
        ...     pyhf.tensorlib.name
        'numpy'
    """
    backend, optimizer = pyhf.get_backend()
    if backend.name == "numpy":
        yield
        return
    pyhf.set_backend("numpy")
    try:
        yield
    finally:
        pyhf.set_backend(backend, optimizer)


def parameter_indices(model: pyhf.pdf.Model, name: str) -> list[int]:
    """Indices (in ``model.config`` order) of the components of parameter set ``name``.

    Example:
        >>> from smeft_pyhf._resources import shipped_dir
        >>> from smeft_pyhf.ingest.workspace import load_workspace
        >>> m = load_workspace(shipped_dir("workspaces") / "example_ttZ_like.json").model
        >>> len(parameter_indices(m, "staterror_CR_WZ"))
        2
    """
    slc = model.config.par_slice(name)
    return list(range(slc.start, slc.stop))


class Objective:
    """``-2 log L(x)`` of a model on fixed data, counting evaluations.

    Non-finite values (outside the physical region of an interpolation) are mapped to a large
    finite number so the minimisers back off instead of crashing. The lowest value seen so far
    and its point are kept (:attr:`lowest_value`, :attr:`lowest_point`): a constrained refit
    that comes across a point below the best fit shows that the best fit is not the global
    minimum.

    Example:
        >>> from smeft_pyhf._resources import shipped_dir
        >>> from smeft_pyhf.ingest.workspace import load_workspace
        >>> ws = load_workspace(shipped_dir("workspaces") / "example_ttZ_like.json")
        >>> objective = Objective(ws.model, ws.data)
        >>> bool(objective(ws.model.config.suggested_init()) > 0)
        True
    """

    def __init__(
        self, model: pyhf.pdf.Model, data: Sequence[float], *, autodiff: bool = True
    ) -> None:
        self.model = model
        self.data = np.asarray(data, dtype=float)
        self.n_evaluations = 0
        self.compiled = compile_objective(model, self.data) if autodiff else None
        bounds = np.asarray(model.config.suggested_bounds(), dtype=float)
        self.lower = bounds[:, 0]
        self.upper = bounds[:, 1]
        self.labels = tuple(model.config.par_names)
        self.init = np.asarray(model.config.suggested_init(), dtype=float)
        self.suggested_fixed = np.asarray(model.config.suggested_fixed(), dtype=bool)
        self.lowest_value = float("inf")
        self.lowest_point: np.ndarray | None = None

    @property
    def exact_gradient(self) -> bool:
        """Whether gradients are exact (compiled with JAX) rather than finite differences."""
        return self.compiled is not None

    def reset_lowest(self) -> None:
        """Forget the lowest point seen so far."""
        self.lowest_value = float("inf")
        self.lowest_point = None

    def _seen(self, x: Sequence[float] | np.ndarray, value: float) -> float:
        if value < self.lowest_value:
            self.lowest_value = value
            self.lowest_point = np.array(x, dtype=float)
        return value

    def __call__(self, x: Sequence[float] | np.ndarray) -> float:
        self.n_evaluations += 1
        if self.compiled is not None:
            return self._seen(x, self.compiled.value(x))
        with numpy_backend(), np.errstate(all="ignore"):
            value = -2.0 * float(self.model.logpdf(np.asarray(x, dtype=float), self.data)[0])
        return self._seen(x, value if np.isfinite(value) else 1e30)

    def full_gradient(self, x: Sequence[float] | np.ndarray) -> np.ndarray:
        """Exact gradient over all parameters (requires :attr:`exact_gradient`)."""
        if self.compiled is None:
            raise RuntimeError("full_gradient needs the compiled (JAX) objective")
        self.n_evaluations += 1
        value, grad = self.compiled.value_and_grad(x)
        self._seen(x, value)
        return grad

    def gradient(
        self,
        x: np.ndarray,
        free: np.ndarray,
        steps: np.ndarray,
        *,
        central: bool = False,
        value: float | None = None,
    ) -> np.ndarray:
        """Gradient over the ``free`` indices: exact when compiled, else finite differences.

        Forward differences (one evaluation per parameter, ``value`` = f(x) reused) by default;
        central differences with ``central=True``. Steps flip sign at an upper bound.
        """
        if self.compiled is not None:
            self.n_evaluations += 1
            value, grad = self.compiled.value_and_grad(x)
            self._seen(x, value)
            return grad[np.asarray(free, dtype=int)]
        grad = np.zeros(len(free))
        f0 = self(x) if (value is None and not central) else value
        for j, i in enumerate(free):
            h = steps[i]
            if central:
                up, down = x.copy(), x.copy()
                up[i] = min(x[i] + h, self.upper[i])
                down[i] = max(x[i] - h, self.lower[i])
                span = up[i] - down[i]
                if span > 0:
                    grad[j] = (self(up) - self(down)) / span
                continue
            trial = x.copy()
            step = h if x[i] + h <= self.upper[i] else -h
            trial[i] = x[i] + step
            grad[j] = (self(trial) - f0) / step
        return grad


def new_minuit(
    objective: Objective,
    start: np.ndarray,
    fixed: np.ndarray,
    *,
    strategy: int,
    tolerance: float,
    steps: np.ndarray | None = None,
) -> Any:
    """An ``iminuit.Minuit`` on ``objective`` from ``start`` (``fixed``: a mask of parameters
    held fixed), with the model's bounds, ``-2 log L`` error definition and exact gradients
    when the objective has them.

    Example:
        >>> from smeft_pyhf._resources import shipped_dir
        >>> from smeft_pyhf.ingest.workspace import load_workspace
        >>> ws = load_workspace(shipped_dir("workspaces") / "example_ttZ_like.json")
        >>> obj = Objective(ws.model, ws.data, autodiff=False)
        >>> m = new_minuit(obj, obj.init, obj.suggested_fixed, strategy=0, tolerance=0.1)
        >>> bool(m.migrad().valid)
        True
    """
    import iminuit

    grad = objective.full_gradient if objective.exact_gradient else None
    minuit = iminuit.Minuit(objective, start.copy(), grad=grad, name=objective.labels)
    minuit.errordef = iminuit.Minuit.LEAST_SQUARES
    minuit.strategy = strategy
    minuit.tol = tolerance
    minuit.print_level = 0
    minuit.limits = list(zip(objective.lower, objective.upper, strict=False))
    if steps is not None:
        minuit.errors = [max(float(s), 1e-4) for s in steps]
    for i, is_fixed in enumerate(fixed):
        minuit.fixed[i] = bool(is_fixed)
    return minuit


def _hessian_from_covariance(covariance: np.ndarray, fixed: np.ndarray) -> np.ndarray:
    free = np.flatnonzero(~fixed)
    hessian = np.zeros_like(covariance)
    block = covariance[np.ix_(free, free)]
    hessian[np.ix_(free, free)] = 2.0 * np.linalg.pinv(block, hermitian=True)
    return hessian


def _exact_covariance(
    objective: Objective, point: np.ndarray, fixed: np.ndarray
) -> tuple[np.ndarray | None, bool, list[str]]:
    """Covariance ``2 H^-1`` from the exact (JAX) Hessian of ``-2 log L`` at ``point``.

    Returns the covariance (zero rows and columns for fixed parameters; ``None`` when the
    Hessian is not finite there), whether it is valid (Hessian positive definite and estimated
    distance to the minimum below Minuit's goal for tolerance 0.1) and notes.
    """
    assert objective.compiled is not None
    notes: list[str] = []
    free = np.flatnonzero(~fixed)
    npars = len(point)
    hessian = objective.compiled.hessian(point)[np.ix_(free, free)]
    if not np.all(np.isfinite(hessian)):
        return None, False, [
            "Hesse failed: the Hessian of 2NLL is not finite at the minimum (a yield at the "
            "edge of the physical region?)"
        ]
    eigenvalues, eigenvectors = np.linalg.eigh(hessian)
    valid = bool(np.all(np.isfinite(eigenvalues))) and bool(eigenvalues.min(initial=1.0) > 0)
    if not valid:
        floor = 1e-8 * max(float(np.abs(eigenvalues).max(initial=1.0)), 1.0)
        eigenvalues = np.where(np.isfinite(eigenvalues), np.maximum(eigenvalues, floor), floor)
        notes.append("Hesse: covariance not accurate (Hessian made positive definite)")
    block = 2.0 * (eigenvectors / eigenvalues) @ eigenvectors.T
    covariance = np.zeros((npars, npars))
    covariance[np.ix_(free, free)] = block
    grad = objective.full_gradient(point)[free]
    edm = float(grad @ block @ grad) / 4.0  # g^T H^-1 g / 2, H = 2 cov^-1
    goal = 0.002 * 0.1
    if valid and edm > goal:
        valid = False
        notes.append(
            f"Hesse flagged the minimum (edm {edm:.2g} above goal {goal:.2g} with the exact "
            "Hessian); values kept"
        )
    return covariance, valid, notes


def random_starts(
    model: pyhf.pdf.Model,
    n: int,
    *,
    seed: int = 0,
    center: Sequence[float] | None = None,
) -> np.ndarray:
    """``n`` seeded random start points within the parameters' constraints.

    Constrained parameters are drawn uniformly within one constraint width of ``center``
    (``center +- width``); free parameters (normalisation factors, the POI) uniformly within
    ``center +- max(|center|, 1) / 2``; fixed parameters keep their value. All points lie
    within the parameter bounds.

    Args:
        model: the model.
        n: number of points.
        seed: seed of the random generator.
        center: the point to draw around (default ``suggested_init``).

    Returns:
        An ``(n, npars)`` array.

    Example:
        >>> from smeft_pyhf._resources import shipped_dir
        >>> from smeft_pyhf.ingest.workspace import load_workspace
        >>> m = load_workspace(shipped_dir("workspaces") / "example_ttZ_like.json").model
        >>> random_starts(m, 3, seed=1).shape == (3, m.config.npars)
        True
    """
    config = model.config
    x0 = np.asarray(config.suggested_init() if center is None else center, dtype=float)
    bounds = np.asarray(config.suggested_bounds(), dtype=float)
    fixed = np.asarray(config.suggested_fixed(), dtype=bool)
    width = np.zeros_like(x0)
    for name in config.par_order:
        slc = config.par_slice(name)
        pset = config.param_set(name)
        if getattr(pset, "constrained", False):
            width[slc] = np.asarray(pset.width(), dtype=float)
        else:
            width[slc] = 0.5 * np.maximum(np.abs(x0[slc]), 1.0)
    rng = np.random.default_rng(seed)
    points = np.empty((max(int(n), 0), len(x0)))
    for k in range(len(points)):
        point = x0 + width * rng.uniform(-1.0, 1.0, len(x0))
        point[fixed] = x0[fixed]
        points[k] = np.clip(point, bounds[:, 0], bounds[:, 1])
    return points


class _Minimum(NamedTuple):
    best: np.ndarray
    fval: float
    minimizer: str
    valid: bool
    minuit: object | None
    notes: list[str]


def _lbfgsb(objective: Objective, start: np.ndarray, fix: np.ndarray) -> tuple[Any, np.ndarray]:
    """scipy's L-BFGS-B over the free parameters from ``start``: its result and the full point."""
    from scipy.optimize import minimize

    free = np.flatnonzero(~fix)

    def reduced(z: np.ndarray, free: np.ndarray = free) -> float:
        x = start.copy()
        x[free] = z
        return objective(x)

    def reduced_grad(z: np.ndarray, free: np.ndarray = free) -> np.ndarray:
        x = start.copy()
        x[free] = z
        return objective.full_gradient(x)[free]

    res = minimize(
        reduced,
        start[free],
        jac=reduced_grad if objective.exact_gradient else None,
        method="L-BFGS-B",
        bounds=list(zip(objective.lower[free], objective.upper[free], strict=False)),
        options={"maxiter": 5000, "maxfun": 200000, "ftol": 1e-12, "gtol": 1e-6},
    )
    x = start.copy()
    x[free] = res.x
    return res, x


def _stuck_at_start(
    objective: Objective, best: np.ndarray, start: np.ndarray, fix: np.ndarray
) -> str | None:
    """A note when the minimiser never left ``start`` although the gradient there does not
    vanish (``None`` otherwise)."""
    free = np.flatnonzero(~fix)
    if not (len(free) and np.array_equal(best[free], start[free])):
        return None
    steps = 1e-5 * np.maximum(1.0, np.abs(start))
    grad = objective.gradient(start, free, steps, central=True)
    # at a bound only the component pointing into the allowed range counts
    grad = np.where((start[free] <= objective.lower[free]) & (grad > 0), 0.0, grad)
    grad = np.where((start[free] >= objective.upper[free]) & (grad < 0), 0.0, grad)
    size = float(np.max(np.abs(grad))) if np.all(np.isfinite(grad)) else float("inf")
    if size <= 1e-3:
        return None
    return (
        "the fit never left its start point although the gradient there does "
        f"not vanish (largest component {size:.3g})"
    )


def _minimize(
    objective: Objective,
    start: np.ndarray,
    fix: np.ndarray,
    order: Sequence[Minimizer],
    *,
    strategy: int,
    tolerance: float,
) -> _Minimum:
    """Minimise from ``start``: the first minimiser of ``order``, the others as fallbacks."""
    notes: list[str] = []
    best: np.ndarray | None = None
    fval = float("nan")
    used = order[0]
    valid = False
    minuit = None
    for method in order:
        if method == "minuit":
            minuit = new_minuit(objective, start, fix, strategy=strategy, tolerance=tolerance)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                minuit.migrad()
            if minuit.fmin.is_valid or (
                not minuit.fmin.has_reached_call_limit
                and minuit.fmin.edm < 10 * minuit.fmin.edm_goal
            ):
                best, fval, used, valid = (
                    np.array(minuit.values),
                    float(minuit.fval),
                    "minuit",
                    True,
                )
                if not minuit.fmin.is_valid:
                    notes.append(f"Migrad minimum flagged invalid (edm {minuit.fmin.edm:.2g})")
                break
            notes.append(f"Migrad failed (edm {minuit.fmin.edm:.2g}, fval {minuit.fval:.3f})")
            log.debug("Migrad did not converge; trying the fallback")
        else:
            res, x = _lbfgsb(objective, start, fix)
            if res.success or best is None:
                best, fval, used, valid = x, float(res.fun), "scipy", bool(res.success)
            if res.success:
                break
            notes.append(f"scipy L-BFGS-B did not converge: {res.message}")
    assert best is not None
    if not np.isfinite(fval) or fval >= _NON_FINITE:
        valid = False
        notes.append(
            "2NLL is not finite at the minimum (the model predicts a negative or undefined "
            "yield there, or the data are unusable)"
        )
    elif valid:
        stuck = _stuck_at_start(objective, best, start, fix)
        if stuck is not None:
            valid = False
            notes.append(stuck)
    return _Minimum(best, fval, used, valid, minuit, notes)


class _Finished(NamedTuple):
    best: np.ndarray
    fval: float
    minimizer: str
    valid: bool
    covariance: np.ndarray | None
    hessian: np.ndarray | None
    uncertainty: np.ndarray
    hesse_valid: bool
    fixed: np.ndarray
    notes: list[str]

    def result(self, labels: tuple[str, ...]) -> WorkspaceFit:
        return WorkspaceFit(
            self.best, self.uncertainty, labels, self.fval, self.covariance, self.hessian,
            self.minimizer, self.valid, self.hesse_valid, self.fixed, tuple(self.notes), 0, 0.0,
        )


def _finish(
    objective: Objective,
    found: _Minimum,
    fix: np.ndarray,
    *,
    hesse: bool,
    strategy: int,
    tolerance: float,
) -> _Finished:
    """Hesse at a minimum, then a Newton polish with its Hessian (covariance redone there)."""
    best, fval, used, valid, minuit = found.best, found.fval, found.minimizer, found.valid, found.minuit
    notes = list(found.notes)
    npars = len(best)
    covariance = None
    exact_notes: list[str] = []
    wide: list[str] = []
    hessian = None
    hesse_valid = False
    uncertainty = np.full(npars, np.nan)
    if hesse and not fval < _NON_FINITE:
        pass  # no covariance where 2NLL is not finite
    elif hesse and objective.exact_gradient:
        covariance, hesse_valid, exact_notes = _exact_covariance(objective, best, fix)
    elif hesse:
        hesser = minuit if (used == "minuit" and minuit is not None) else None
        if hesser is None:
            hesser = new_minuit(objective, best, fix, strategy=strategy, tolerance=tolerance)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                hesser.hesse()
            covariance = np.array(hesser.covariance)
            hesse_valid = bool(hesser.fmin.has_accurate_covar) and bool(hesser.fmin.is_valid)
            if used == "minuit" and hesser.fval < fval:
                best, fval = np.array(hesser.values), float(hesser.fval)
            if not hesser.fmin.has_accurate_covar:
                notes.append("Hesse: covariance not accurate (forced positive definite?)")
            elif not hesser.fmin.is_valid:
                notes.append(
                    f"Hesse flagged the minimum (edm {hesser.fmin.edm:.2g} above goal "
                    f"{hesser.fmin.edm_goal:.2g} with the exact Hessian); values kept"
                )
        except (RuntimeError, ValueError) as err:
            notes.append(f"Hesse failed: {err}")
    if covariance is not None:
        uncertainty = np.sqrt(np.clip(np.diag(covariance), 0, None))
        hessian = _hessian_from_covariance(covariance, fix)
        wide = [
            objective.labels[i]
            for i in np.flatnonzero(~fix)
            if uncertainty[i] > 0.5 * (objective.upper[i] - objective.lower[i])
        ]
        if wide:
            notes.append(
                "barely constrained (Hesse error above half the allowed range): "
                + ", ".join(wide[:10])
            )
    uncertainty[fix] = 0.0
    if hessian is not None:
        # Migrad with strategy 0 stops at edm ~ 1e-3; a few Newton steps with the exact Hessian
        # land on the minimum so that every refit is measured from the right reference.
        draft = _Finished(
            best, fval, used, valid, covariance, hessian, uncertainty, hesse_valid, fix, []
        ).result(objective.labels)
        polished = refit(
            objective, draft, {}, start=best, tolerance=1e-5, max_iterations=30, fallback=False
        )
        if polished.twice_nll < fval:
            log.debug("Newton polish lowered 2NLL by %.2g", fval - polished.twice_nll)
            best, fval = polished.values, polished.twice_nll
            if objective.exact_gradient:  # covariance at the polished minimum
                covariance, hesse_valid, exact_notes = _exact_covariance(objective, best, fix)
                if covariance is None:
                    uncertainty, hessian = np.full(npars, np.nan), None
                else:
                    uncertainty = np.sqrt(np.clip(np.diag(covariance), 0, None))
                    hessian = _hessian_from_covariance(covariance, fix)
                uncertainty[fix] = 0.0
    if exact_notes:
        notes.extend(exact_notes)
    if wide and objective.exact_gradient:
        # the exact Hessian is fine, but its Gaussian reaches the parameter bounds
        hesse_valid = False
        notes.append("Hesse: covariance flagged, its Gaussian leaves the allowed range")
    return _Finished(
        best, fval, used, valid, covariance, hessian, uncertainty, hesse_valid, fix, notes
    )


def _start_points(
    objective: Objective,
    model: pyhf.pdf.Model,
    *,
    init: Sequence[float] | None,
    fixed: Mapping[int, float] | None,
    extra_starts: Mapping[str, Sequence[float]] | None,
    n_random_starts: int,
    seed: int,
) -> tuple[list[tuple[str, np.ndarray]], np.ndarray]:
    """The labelled start points of :func:`fit` (``fixed`` values set, clipped to the bounds)
    and the mask of fixed parameters."""
    fix = objective.suggested_fixed.copy()
    first = objective.init.copy() if init is None else np.asarray(init, dtype=float).copy()
    candidates: list[tuple[str, np.ndarray]] = [("nominal" if init is None else "given", first)]
    for label, point in (extra_starts or {}).items():
        candidates.append((str(label), np.asarray(point, dtype=float).copy()))
    if n_random_starts > 0:
        for k, point in enumerate(random_starts(model, n_random_starts, seed=seed), start=1):
            candidates.append((f"random {k}", point))
    for index in fixed or {}:
        fix[index] = True
    for _, point in candidates:
        for index, value in (fixed or {}).items():
            point[index] = value
        np.clip(point, objective.lower, objective.upper, out=point)
    return candidates, fix


def _polish_starts(
    objective: Objective,
    minima: Sequence[tuple[str, _Minimum]],
    fix: np.ndarray,
    *,
    hesse: bool,
    strategy: int,
    tolerance: float,
) -> tuple[str, _Finished, dict[str, float]]:
    """Finish the lowest of the sorted ``minima``; polish the higher ones from it.

    Migrad with strategy 0 stops early along flat directions (0.01-0.02 in 2NLL above the
    minimum on the ATLAS ttZ workspaces): a start whose minimum looks higher is polished with
    Newton steps from the chosen minimum's Hessian before it counts as another minimum; if it
    ends lower, it becomes the chosen one.

    Returns:
        The chosen start's label, its finished fit, and the final 2NLL of every start.
    """
    chosen_label, chosen = minima[0]
    finished = _finish(objective, chosen, fix, hesse=hesse, strategy=strategy, tolerance=tolerance)
    final = {label: float(found.fval) for label, found in minima}
    final[chosen_label] = finished.fval
    for label, found in minima[1:]:
        if not found.valid or not found.fval < _NON_FINITE or finished.hessian is None:
            continue
        if found.fval - finished.fval <= START_AGREEMENT:
            continue
        polished = refit(
            objective, finished.result(objective.labels), {}, start=found.best,
            tolerance=1e-5, max_iterations=30, fallback=False,
        )
        final[label] = min(found.fval, polished.twice_nll)
        if final[label] < finished.fval - LOWER_POINT_TOLERANCE:
            log.debug("start %s polished below the %s minimum", label, chosen_label)
            chosen_label = label
            chosen = found._replace(best=polished.values, fval=final[label], minuit=None)
            finished = _finish(
                objective, chosen, fix, hesse=hesse, strategy=strategy, tolerance=tolerance
            )
            final[label] = finished.fval
    return chosen_label, finished, final


def _several_minima_note(
    starts: Sequence[StartResult], fval: float, chosen_label: str, poi: int | None
) -> str | None:
    """A warning when valid starts ended at higher minima than the one used (else ``None``)."""
    higher = [item for item in starts if item.valid and item.twice_nll - fval > START_AGREEMENT]
    if not higher:
        return None
    rises = ", ".join(f"+{item.twice_nll - fval:.3g}" for item in higher[:5])
    where = "" if poi is None else ", POI " + ", ".join(f"{item.poi:.4g}" for item in higher[:5])
    return (
        f"{len(higher)} of {len(starts)} start points ended at a higher minimum (2NLL "
        f"{rises}{where}): the likelihood has more than one minimum; the lowest "
        f"(from the {chosen_label} start) is used"
    )


def _minimise_starts(objective: Objective, candidates: Sequence[tuple[str, np.ndarray]],
                     fix: np.ndarray, order: Sequence[Minimizer], strategy: int,
                     tolerance: float) -> list[tuple[str, _Minimum]]:
    """Minimise from every labelled start point; the minima by label, valid ones first, each
    group by ascending 2NLL (non-finite last)."""
    minima: list[tuple[str, _Minimum]] = []
    for label, point in candidates:
        found = _minimize(objective, point, fix, order, strategy=strategy, tolerance=tolerance)
        minima.append((label, found))
        log.debug("start %s: 2NLL %.4f (valid %s)", label, found.fval, found.valid)
        if not found.valid:
            log.debug("start %s did not converge: %s", label, "; ".join(found.notes))
    minima.sort(
        key=lambda item: (not item[1].valid, item[1].fval if np.isfinite(item[1].fval) else np.inf)
    )
    return minima


def _start_results(minima: Sequence[tuple[str, _Minimum]], chosen_label: str,
                   finished: _Finished, final: Mapping[str, float],
                   poi: int | None) -> list[StartResult]:
    """One :class:`StartResult` per start (its final 2NLL, the POI where it ended: the
    polished point for the chosen start), the chosen start first."""
    starts = [
        StartResult(
            label,
            float(final[label]) if final[label] < _NON_FINITE else float("inf"),
            float((finished.best if label == chosen_label else found.best)[poi])
            if poi is not None else float("nan"),
            bool(found.valid),
        )
        for label, found in minima
    ]
    starts.sort(key=lambda item: item.label != chosen_label)
    return starts


def fit(
    model: pyhf.pdf.Model,
    data: Sequence[float],
    *,
    minimizer: Minimizer = "minuit",
    fixed: Mapping[int, float] | None = None,
    init: Sequence[float] | None = None,
    hesse: bool = True,
    strategy: int = 0,
    tolerance: float = 0.1,
    fallback: bool = True,
    autodiff: bool = True,
    n_random_starts: int = 0,
    seed: int = 0,
    extra_starts: Mapping[str, Sequence[float]] | None = None,
) -> WorkspaceFit:
    """Fit ``model`` to ``data`` (observed + auxiliary), with Hesse uncertainties.

    Args:
        model: a pyhf model (NumPy backend).
        data: observed data followed by auxiliary data.
        minimizer: ``"minuit"`` (default) or ``"scipy"`` (L-BFGS-B).
        fixed: parameter index -> value to hold fixed (in addition to ``suggested_fixed``).
        init: starting point (default ``suggested_init``).
        hesse: compute the covariance matrix.
        strategy: Minuit strategy (0 is fast and enough for these models).
        tolerance: Minuit tolerance.
        fallback: try the other minimiser if the first one fails.
        autodiff: use exact gradients and the exact Hessian compiled with JAX (see
            :mod:`smeft_pyhf.ingest.autodiff`) when available; ``False`` forces finite
            differences and Minuit's numerical Hesse.
        n_random_starts: seeded random start points (:func:`random_starts`) minimised from
            as well as ``init``.
        seed: seed of the random start points.
        extra_starts: more start points, by label (e.g. a lower point a scan came across).

    Returns:
        A :class:`WorkspaceFit` at the lowest minimum the starts reached; ``valid`` is ``False``
        if no minimiser converged to a finite minimum.

    Example:
        >>> from smeft_pyhf._resources import shipped_dir
        >>> from smeft_pyhf.ingest.workspace import load_workspace
        >>> ws = load_workspace(shipped_dir("workspaces") / "example_ttZ_like.json")
        >>> r = fit(ws.model, ws.data, minimizer="scipy")
        >>> r.minimizer, round(float(r.uncertainty[ws.model.config.poi_index]), 2)
        ('scipy', 0.16)
        >>> r = fit(ws.model, ws.data, n_random_starts=2)
        >>> len(r.starts), r.n_agreeing
        (3, 3)
    """
    t0 = time.perf_counter()
    objective = Objective(model, data, autodiff=autodiff)
    candidates, fix = _start_points(
        objective, model, init=init, fixed=fixed, extra_starts=extra_starts,
        n_random_starts=n_random_starts, seed=seed,
    )
    order: list[Minimizer] = [minimizer]
    if fallback:
        order.append("scipy" if minimizer == "minuit" else "minuit")

    poi = model.config.poi_index
    minima = _minimise_starts(objective, candidates, fix, order, strategy, tolerance)
    chosen_label, finished, final = _polish_starts(
        objective, minima, fix, hesse=hesse, strategy=strategy, tolerance=tolerance
    )
    fval, valid = finished.fval, finished.valid
    notes = list(finished.notes)
    starts = _start_results(minima, chosen_label, finished, final, poi)
    n_agreeing = sum(
        1 for item in starts if item.valid and item.twice_nll - fval <= START_AGREEMENT
    ) if valid else 0
    note = _several_minima_note(starts, fval, chosen_label, poi)
    if note:
        notes.append(note)
        log.warning("%s", notes[-1])
    seconds = time.perf_counter() - t0
    log.debug(
        "fit with %s: 2NLL %.4f in %.2fs (%d calls, %d starts, %d agree)",
        finished.minimizer, fval, seconds, objective.n_evaluations, len(starts), n_agreeing,
    )
    return finished.result(objective.labels)._replace(
        warnings=tuple(notes),
        n_evaluations=objective.n_evaluations,
        seconds=seconds,
        starts=tuple(starts),
        n_agreeing=n_agreeing,
    )


def _refit_start(
    objective: Objective,
    best: WorkspaceFit,
    idx: np.ndarray,
    values: np.ndarray,
    start: np.ndarray | None,
) -> np.ndarray:
    """The start of :func:`refit`: ``start``, else the best fit's linear response to the fixed
    shifts; the fixed parameters ``idx`` set to ``values``, clipped to the bounds."""
    if start is None:
        x = best.bestfit.copy()
        if best.covariance is not None and len(idx):
            cov = best.covariance
            block = cov[np.ix_(idx, idx)]
            shift = values - best.bestfit[idx]
            if np.all(np.diag(block) > 0):
                x = x + cov[:, idx] @ np.linalg.lstsq(block, shift, rcond=None)[0]
    else:
        x = np.asarray(start, dtype=float).copy()
    x[idx] = values
    return np.clip(x, objective.lower, objective.upper)


def _newton(
    objective: Objective,
    x: np.ndarray,
    free: np.ndarray,
    hessian: np.ndarray | None,
    *,
    tolerance: float,
    max_iterations: int,
) -> tuple[np.ndarray, float, bool, float]:
    """Newton steps of :func:`refit` over the ``free`` parameters, from ``x``.

    Starts from ``hessian`` (updated by BFGS along the way) with central-difference gradients
    and a backtracking line search; nothing is stepped without a Hessian or free parameters.

    Returns:
        The last point, its 2NLL, whether the Newton decrement fell below ``tolerance``, and
        the last decrement (``inf`` if none was computed).
    """
    # finite-difference steps from the *conditional* widths sqrt(2 / H_ii): along stiff
    # directions the marginal width overstates the scale and forward differences get noisy
    diag = np.diag(hessian) if hessian is not None else np.zeros(len(x))
    steps = np.where(diag > 0, 1e-6 * np.sqrt(2.0 / np.where(diag > 0, diag, 1.0)), 1e-7)
    converged = False
    decrement = float("inf")
    fval = objective(x)
    if hessian is None or not len(free):
        return x, fval, converged, decrement
    h_ff = hessian[np.ix_(free, free)]
    try:
        chol = np.linalg.cholesky(h_ff + 1e-10 * np.eye(len(free)))
    except np.linalg.LinAlgError:
        return x, fval, converged, decrement
    h_ff = h_ff.copy()
    g = objective.gradient(x, free, steps, value=fval)
    for _ in range(max_iterations):
        step = -np.linalg.solve(chol.T, np.linalg.solve(chol, g))
        decrement = float(-g @ step) / 2.0
        log.debug("newton: 2NLL %.6f decrement %.2g", fval, decrement)
        if decrement < tolerance:
            converged = True
            break
        alpha = 1.0
        while alpha > 1e-3:
            trial = x.copy()
            trial[free] = np.clip(
                x[free] + alpha * step, objective.lower[free], objective.upper[free]
            )
            trial_f = objective(trial)
            if trial_f < fval:
                break
            alpha *= 0.5
        else:
            log.debug("newton: line search failed at decrement %.2g", decrement)
            break
        g_new = objective.gradient(trial, free, steps, value=trial_f)
        # BFGS update of the Hessian: the best fit's curvature is only a start, and
        # along flat valleys (a barely constrained normalisation) it can be far off
        s_vec = trial[free] - x[free]
        y_vec = g_new - g
        sy = float(s_vec @ y_vec)
        if sy > 1e-12:
            hs = h_ff @ s_vec
            h_ff += np.outer(y_vec, y_vec) / sy - np.outer(hs, hs) / float(s_vec @ hs)
            try:
                chol = np.linalg.cholesky(h_ff)
            except np.linalg.LinAlgError:
                h_ff = hessian[np.ix_(free, free)].copy()
                chol = np.linalg.cholesky(h_ff + 1e-10 * np.eye(len(free)))
        x, fval, g = trial, trial_f, g_new
    return x, fval, converged, decrement


def refit(
    objective: Objective,
    best: WorkspaceFit,
    fixed: Mapping[int, float],
    *,
    start: np.ndarray | None = None,
    tolerance: float = 1e-3,
    max_iterations: int = 6,
    fallback: bool = True,
    accept: float | None = None,
) -> RefitResult:
    """Minimise again with some parameters fixed, starting close to the answer.

    The start point is ``start`` or the linear response of the best fit to the fixed shifts
    (conditional mean of the Gaussian approximation). Newton steps use the best fit's Hessian
    restricted to the free parameters with central-difference gradients; the loop stops when
    the Newton decrement ``g^T H^-1 g / 2`` drops below ``tolerance`` (in units of
    ``-2 log L``). Without a Hessian, or if the steps stall, Migrad finishes the job.

    Args:
        objective: the :class:`Objective` of the model.
        best: the unconstrained best fit (with ``hessian``).
        fixed: parameter index -> value to hold fixed.
        start: optional starting point.
        tolerance: target Newton decrement.
        max_iterations: Newton iterations before falling back to Migrad.
        fallback: finish with Migrad when Newton does not converge.
        accept: after ``max_iterations``, accept a Newton decrement below this value without
            Migrad (default ``10 * tolerance``).

    Returns:
        A :class:`RefitResult`.

    Example:
        >>> from smeft_pyhf._resources import shipped_dir
        >>> from smeft_pyhf.ingest.workspace import load_workspace
        >>> ws = load_workspace(shipped_dir("workspaces") / "example_ttZ_like.json")
        >>> best = fit(ws.model, ws.data)
        >>> poi = ws.model.config.poi_index
        >>> r = refit(Objective(ws.model, ws.data), best, {poi: best.bestfit[poi] + 0.2})
        >>> r.converged, bool(r.twice_nll > best.twice_nll)
        (True, True)
    """
    calls0 = objective.n_evaluations
    fix = best.fixed.copy()
    idx = np.array(sorted(fixed), dtype=int)
    fix[idx] = True
    free = np.flatnonzero(~fix)
    values = np.array([fixed[i] for i in idx], dtype=float)
    x = _refit_start(objective, best, idx, values, start)
    unc = best.uncertainty
    x, fval, converged, decrement = _newton(
        objective, x, free, best.hessian, tolerance=tolerance, max_iterations=max_iterations
    )
    if not converged and decrement < (10 * tolerance if accept is None else accept):
        converged = True  # close enough: an error below 1e-2 in Delta 2NLL
    if converged or not fallback:
        return RefitResult(x, fval, converged, "newton", objective.n_evaluations - calls0)
    log.debug("Newton refit did not converge (2NLL %.4f); Migrad takes over", fval)
    minuit = new_minuit(objective, x, fix, strategy=0, tolerance=0.1, steps=unc)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        minuit.migrad()
    return RefitResult(
        np.array(minuit.values),
        float(minuit.fval),
        bool(minuit.fmin.is_valid),
        "minuit",
        objective.n_evaluations - calls0,
    )

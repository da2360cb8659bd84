"""Full-likelihood mode: the published workspace with its signal scaled by a SMEFT factor.

Instead of reducing a workspace to a Gaussian measurement card, keep the whole HistFactory model
and multiply the signal sample(s) by the quadratic SMEFT factor of the linked theory table,

    mu(c) = T(c) / T_SM = 1 + sum_a l_a c_a + sum_{a<=b} q_ab c_a c_b,

through a pyhf *custom modifier* (type ``"smeft"``): ``pyhf.Model(spec, modifier_set={
**histfactory_set, "smeft": (smeft_builder, smeft_combined)}, validate=False)``. The Wilson
coefficients become free, unconstrained parameters of the pyhf model (named after the
coefficients, ``ctG``, ``c13qq``, ...); the original POI normfactor is fixed to 1. pyhf runs on
its NumPy backend (its PyTorch backend was removed upstream, pyhf PR #2611).

A profile scan in one coefficient (:func:`profile_scan_full`) minimises ``-2 log L`` over all
nuisance parameters and the other coefficients at each point with iminuit (warm starts from the
neighbouring point), and reports ``Delta(2NLL)`` against the global minimum. This is the exact
reference for the Gaussian card of the same measurement (see :func:`compare_card_vs_full`).

Modifier data (one entry per signal sample)::

    {"name": "smeft", "type": "smeft",
     "data": {"coefficients": ["c13qq", "ctW"], "linear": [1.86, 0.44],
              "quadratic": [[2.30, 0.45], [0.0, 0.11]]}}   # upper triangle, q_ab multiplies c_a c_b

Example:
    >>> import numpy as np
    >>> spec = {"channels": [{"name": "sr", "samples": [
    ...     {"name": "sig", "data": [5.0], "modifiers": [
    ...         {"name": "mu", "type": "normfactor", "data": None}]},
    ...     {"name": "bkg", "data": [10.0], "modifiers": []}]}],
    ...     "observations": [{"name": "sr", "data": [16.0]}],
    ...     "measurements": [{"name": "m", "config": {"poi": "mu", "parameters": []}}],
    ...     "version": "1.0.0"}
    >>> model, data = full_likelihood_model(spec, coefficients=["ctG"], linear={"ctG": 0.5},
    ...                                     quadratic={"ctG*ctG": 0.25})
    >>> pars = model.config.suggested_init()
    >>> pars[model.config.par_slice("ctG")] = [2.0]
    >>> model.expected_actualdata(pars).tolist()   # 5 * (1 + 1 + 1) + 10
    [25.0]
"""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import pyhf
from pyhf import events, get_backend
from pyhf.parameters import ParamViewer

from smeft_pyhf.exceptions import ConfigError, DataError, WorkspaceError
from smeft_pyhf.formats.intervals import DELTA_CHI2_1D, LEVELS, Interval, Level, segments_below

__all__ = [
    "CARD_MODES",
    "MODIFIER_SET",
    "SMEFT_MODIFIER",
    "CardComparison",
    "CoefficientScan",
    "FullLikelihood",
    "ProfileFit",
    "compare_card_vs_full",
    "default_scan_range",
    "fit_full",
    "full_likelihood_model",
    "intervals_from_curve",
    "profile_scan_full",
    "smeft_builder",
    "smeft_combined",
    "smeft_factor",
    "smeft_terms_from_dataset",
]

log = logging.getLogger(__name__)

SMEFT_MODIFIER = "smeft"
DEFAULT_BOUNDS = (-50.0, 50.0)


# ---------------------------------------------------------------------------- the modifier
def _modifier_terms(data: Mapping[str, Any], where: str) -> tuple[tuple[str, ...], np.ndarray,
                                                                   np.ndarray]:
    try:
        names = tuple(str(x) for x in data["coefficients"])
        linear = np.asarray(data["linear"], dtype=np.float64).reshape(len(names))
        quadratic = np.asarray(data.get("quadratic", np.zeros((len(names), len(names)))),
                               dtype=np.float64).reshape(len(names), len(names))
    except (KeyError, TypeError, ValueError) as err:
        raise pyhf.exceptions.InvalidModifier(
            f"{where}: smeft modifier data needs 'coefficients', 'linear' (n) and "
            f"'quadratic' (n x n): {err}") from err
    return names, linear, np.triu(quadratic + quadratic.T - np.diag(np.diag(quadratic)))


def _required_parset() -> dict[str, Any]:
    return {
        "paramset_type": "unconstrained",
        "n_parameters": 1,
        "is_scalar": True,
        "inits": (0.0,),
        "bounds": (DEFAULT_BOUNDS,),
        "fixed": False,
    }


class smeft_builder:
    """pyhf builder of the ``smeft`` modifier: collects bin masks and the factor's terms.

    Every instance of a given modifier name must carry the same data (one factor per name);
    each coefficient becomes an unconstrained scalar parameter (init 0, bounds +-50 unless the
    measurement's ``parameters`` say otherwise).
    """

    is_shared = True

    def __init__(self, config: Any) -> None:
        self.builder_data: dict[str, Any] = {}
        self.config = config
        self.required_parsets: dict[str, list[dict[str, Any]]] = {}

    def append(self, key: str, channel: str, sample: str, thismod: Mapping[str, Any] | None,
               defined_samp: Mapping[str, Any] | None) -> None:
        entry = self.builder_data.setdefault(key, {}).setdefault(sample, {}).setdefault(
            "data", {"mask": []})
        nom = (defined_samp["data"] if defined_samp
               else [0.0] * self.config.channel_nbins[channel])
        entry["mask"] += [bool(thismod)] * len(nom)
        if not thismod:
            return
        names, linear, quadratic = _modifier_terms(thismod["data"], f"{channel}/{sample}")
        terms = self.builder_data[key].setdefault("__terms__", (names, linear, quadratic))
        if (terms[0] != names or not np.allclose(terms[1], linear)
                or not np.allclose(terms[2], quadratic)):
            raise pyhf.exceptions.InvalidModifier(
                f"smeft modifier {thismod['name']!r} carries different data on "
                f"{channel}/{sample}; use one modifier name per distinct factor")
        for name in names:
            self.required_parsets.setdefault(name, [_required_parset()])

    def finalize(self) -> dict[str, Any]:
        return self.builder_data


class smeft_combined:
    """pyhf applier of the ``smeft`` modifiers: multiplies masked bins by ``mu_m(c)``.

    ``apply(pars)`` returns the multiplicative factors with shape
    ``(n_modifiers, n_samples, batch, n_bins)``, like pyhf's ``normfactor``.
    """

    name = SMEFT_MODIFIER
    op_code = "multiplication"

    def __init__(self, modifiers: Sequence[tuple[str, str]], pdfconfig: Any,
                 builder_data: Mapping[str, Any], batch_size: int | None = None) -> None:
        self.batch_size = batch_size
        keys = [f"{mtype}/{m}" for m, mtype in modifiers]
        coefficient_names: list[str] = []
        for key in keys:
            for name in builder_data[key].get("__terms__", ((),))[0]:
                if name not in coefficient_names:
                    coefficient_names.append(name)
        self.coefficient_names = tuple(coefficient_names)
        n_mods, n_coef = len(keys), len(coefficient_names)
        linear = np.zeros((n_mods, n_coef))
        quadratic = np.zeros((n_mods, n_coef, n_coef))
        for m, key in enumerate(keys):
            names, lin, quad = builder_data[key].get("__terms__", ((), (), ()))
            index = [coefficient_names.index(n) for n in names]
            linear[m, index] = lin
            quadratic[m][np.ix_(index, index)] = quad
        self._linear = linear
        self._quadratic = quadratic
        parfield_shape = ((self.batch_size, pdfconfig.npars) if self.batch_size
                          else (pdfconfig.npars,))
        self.param_viewer = ParamViewer(parfield_shape, pdfconfig.par_map,
                                        list(coefficient_names))
        self._mask = [[[builder_data[key][s]["data"]["mask"]] for s in pdfconfig.samples]
                      for key in keys]
        self._precompute()
        events.subscribe("tensorlib_changed")(self._precompute)

    def _precompute(self) -> None:
        tensorlib, _ = get_backend()
        if not self.param_viewer.index_selection:
            return
        self.mask = tensorlib.tile(tensorlib.astensor(self._mask),
                                   (1, 1, self.batch_size or 1, 1))
        self.mask_bool = tensorlib.astensor(self.mask, dtype="bool")
        self.default = tensorlib.ones(self.mask.shape)
        self.linear = tensorlib.astensor(self._linear)
        self.quadratic = tensorlib.astensor(self._quadratic)

    def apply(self, pars: Any) -> Any:
        """Factors ``(n_modifiers, n_samples, batch, n_bins)``, or ``None`` without modifiers."""
        if not self.param_viewer.index_selection:
            return None
        tensorlib, _ = get_backend()
        c = self.param_viewer.get(pars)  # (n_coef,) or (n_coef, batch)
        if self.batch_size is None:
            mu = (1.0 + tensorlib.einsum("mk,k->m", self.linear, c)
                  + tensorlib.einsum("mkl,k,l->m", self.quadratic, c, c))
            factors = tensorlib.einsum("msab,m->msab", self.mask, mu)
        else:
            mu = (1.0 + tensorlib.einsum("mk,ka->ma", self.linear, c)
                  + tensorlib.einsum("mkl,ka,la->ma", self.quadratic, c, c))
            factors = tensorlib.einsum("msab,ma->msab", self.mask, mu)
        return tensorlib.where(self.mask_bool, factors, self.default)


MODIFIER_SET = {**pyhf.modifiers.histfactory_set, SMEFT_MODIFIER: (smeft_builder, smeft_combined)}


# ---------------------------------------------------------------------------- factor helpers
def _pair(key: str | tuple[str, str]) -> tuple[str, str]:
    from smeft_pyhf.formats.coefficients import coefficient_name

    if isinstance(key, str):
        parts = key.split("*")
        if len(parts) != 2:
            raise DataError(f"quadratic key {key!r} is not of the form 'Oa*Ob'",
                            where="quadratic", hint="use 'OtG*OtW' or ('ctG', 'ctW')")
        key = (parts[0], parts[1])
    return coefficient_name(key[0].strip()), coefficient_name(key[1].strip())


def _terms(coefficients: Sequence[str], linear: Mapping[str, float],
           quadratic: Mapping[Any, float] | None) -> tuple[np.ndarray, np.ndarray]:
    """Linear vector and upper-triangular quadratic matrix over ``coefficients``."""
    from smeft_pyhf.formats.coefficients import coefficient_name

    names = [coefficient_name(c) for c in coefficients]
    index = {n: i for i, n in enumerate(names)}
    lin = np.zeros(len(names))
    for key, value in linear.items():
        name = coefficient_name(str(key))
        if name in index:
            lin[index[name]] += float(value)
    quad = np.zeros((len(names), len(names)))
    for key, value in (quadratic or {}).items():
        a, b = _pair(key)
        if a in index and b in index:
            i, j = sorted((index[a], index[b]))
            quad[i, j] += float(value)
    return lin, quad


def smeft_factor(c: Sequence[float] | np.ndarray, linear: Sequence[float] | np.ndarray,
                 quadratic: Sequence[Sequence[float]] | np.ndarray | None = None) -> np.ndarray:
    """``mu(c) = 1 + l . c + c^T Q c`` in NumPy for points ``c (..., n)`` (Q upper triangular).

    Example:
        >>> smeft_factor([[1.0], [2.0]], [0.5], [[0.25]]).tolist()
        [1.75, 3.0]
    """
    c = np.asarray(c, dtype=np.float64)
    lin = np.asarray(linear, dtype=np.float64)
    quad = (np.zeros((lin.size, lin.size)) if quadratic is None
            else np.asarray(quadratic, dtype=np.float64))
    return 1.0 + c @ lin + np.einsum("...k,kl,...l->...", c, quad, c)


def smeft_terms_from_dataset(dataset: Any, coefficients: Sequence[str], *,
                             use_quad: bool = True) -> tuple[dict[str, float], dict[str, float]]:
    """Signal-strength terms of a SMEFiT dataset: ``mu(c) = sum_bins T(c) / sum_bins best_sm``.

    Args:
        dataset: a ``SmefitDataset`` (``best_sm``, ``linear``, ``quadratic`` dicts keyed by
            ``OX`` / ``OX*OY``), e.g. from ``load_smefit_dataset``.
        coefficients: the coefficients to keep (``cX`` or ``OX``).
        use_quad: keep the quadratic terms.

    Returns:
        ``(linear, quadratic)`` dicts of floats keyed by ``cX`` and ``"cX*cY"``, normalised to the
        summed SM prediction (the convention of the measurement cards).

    Raises:
        DataError: the SM prediction sums to zero, or a coefficient has no term at all.
    """
    from smeft_pyhf.formats.coefficients import coefficient_name

    sm = float(np.sum(dataset.best_sm))
    if sm == 0:
        raise DataError("the SM prediction sums to zero", where=getattr(dataset, "name", None))
    wanted = {coefficient_name(c) for c in coefficients}
    linear = {coefficient_name(k): float(np.sum(v)) / sm for k, v in dataset.linear.items()
              if coefficient_name(k) in wanted}
    quadratic: dict[str, float] = {}
    if use_quad:
        for key, value in dataset.quadratic.items():
            a, b = _pair(key)
            if a in wanted and b in wanted:
                quadratic[f"{a}*{b}"] = float(np.sum(value)) / sm
    missing = sorted(wanted - set(linear) - {n for k in quadratic for n in k.split("*")})
    if missing:
        raise DataError(f"no SMEFT term for {missing}", where=getattr(dataset, "name", None),
                        hint="pick coefficients that the theory table contains")
    return linear, quadratic


# ---------------------------------------------------------------------------- the model
class FullLikelihood(NamedTuple):
    """The custom-modifier pyhf model and its data (observations + auxdata)."""

    model: pyhf.pdf.Model
    data: list[float]


def _spec_and_observations(workspace_or_loaded: Any, measurement: str | None
                           ) -> tuple[dict[str, Any], dict[str, Any], str]:
    """(channels+parameters spec, observations by channel, POI) from the supported inputs."""
    source = workspace_or_loaded
    if isinstance(source, (str, os.PathLike)):
        from smeft_pyhf.ingest.workspace import load_workspace

        source = load_workspace(Path(source), measurement=measurement)
    if hasattr(source, "workspace") and hasattr(source, "model"):  # LoadedWorkspace
        ws, model = source.workspace, source.model
        spec = copy.deepcopy(model.spec)
        poi = source.poi or model.config.poi_name
        observations = {c: ws.observations[c] for c in model.config.channels}
        return spec, observations, poi
    if isinstance(source, Mapping):
        try:
            source = pyhf.Workspace(dict(source))
        except pyhf.exceptions.InvalidSpecification as err:
            raise WorkspaceError(f"not a valid HistFactory workspace: {err}",
                                 where="workspace") from err
    if isinstance(source, pyhf.Workspace):
        try:
            meas = source.get_measurement(measurement_name=measurement)
        except pyhf.exceptions.InvalidMeasurement as err:
            raise WorkspaceError(str(err), where="workspace",
                                 hint=f"choose one of {source.measurement_names}") from err
        spec = {"channels": copy.deepcopy(source["channels"]),
                "parameters": copy.deepcopy(meas["config"].get("parameters", []))}
        return spec, dict(source.observations), meas["config"]["poi"]
    raise WorkspaceError(f"cannot use a {type(source).__name__} as a workspace",
                         where="full_likelihood_model",
                         hint="pass a path, a pyhf.Workspace, a spec dict or a LoadedWorkspace")


def _poi_samples(spec: Mapping[str, Any], poi: str) -> list[str]:
    samples: list[str] = []
    for channel in spec["channels"]:
        for sample in channel["samples"]:
            carries = any(m["type"] == "normfactor" and m["name"] == poi
                          for m in sample["modifiers"])
            if carries and sample["name"] not in samples:
                samples.append(sample["name"])
    return samples


def full_likelihood_model(workspace_or_loaded: Any, *, coefficients: Sequence[str],
                          linear: Mapping[str, float],
                          quadratic: Mapping[Any, float] | None = None,
                          signal_samples: Sequence[str] | None = None,
                          measurement: str | None = None,
                          bounds: Mapping[str, tuple[float, float]] | None = None,
                          fix_poi: bool = True) -> FullLikelihood:
    """Build the workspace's pyhf model with its signal scaled by ``mu(c)``.

    Args:
        workspace_or_loaded: a workspace path, a spec dict, a ``pyhf.Workspace`` or a
            ``LoadedWorkspace`` (from ``smeft_pyhf.ingest.workspace.load_workspace``).
        coefficients: the Wilson coefficients (``cX``; ``OX`` is converted) that become model
            parameters, in this order.
        linear: ``l_a`` per coefficient (ratio to the SM, keys ``cX`` or ``OX``).
        quadratic: ``q_ab`` keyed by ``"Oa*Ob"``/``"ca*cb"`` or ``(a, b)`` (multiplies
            ``c_a c_b`` once, the SMEFiT convention).
        signal_samples: samples to scale (default: those carrying the POI normfactor).
        measurement: measurement name (default: the first, or the loaded one).
        bounds: parameter bounds per coefficient (default ``(-50, 50)``).
        fix_poi: fix the original POI normfactor to 1 (the SMEFT factor replaces it).

    Returns:
        :class:`FullLikelihood` ``(model, data)``; the model's POI is the first coefficient.

    Raises:
        WorkspaceError: unknown signal samples, no sample to scale, a coefficient name that
            clashes with a workspace parameter.
        ConfigError: no coefficients.
    """
    from smeft_pyhf.formats.coefficients import coefficient_name

    if not coefficients:
        raise ConfigError("no Wilson coefficients given", where="full_likelihood_model",
                          hint="pass coefficients=['ctG', ...]")
    names = [coefficient_name(c) for c in coefficients]
    spec, observations, poi = _spec_and_observations(workspace_or_loaded, measurement)
    all_samples = {s["name"] for ch in spec["channels"] for s in ch["samples"]}
    if signal_samples is None:
        signal_samples = _poi_samples(spec, poi) if poi else []
        if not signal_samples:
            raise WorkspaceError(f"no sample carries the POI normfactor {poi!r}",
                                 where="full_likelihood_model",
                                 hint="name the signal samples with signal_samples=[...]")
    unknown = sorted(set(signal_samples) - all_samples)
    if unknown:
        raise WorkspaceError(f"unknown signal samples {unknown}", where="signal_samples",
                             hint=f"choose among {sorted(all_samples)}")
    existing = {m["name"] for ch in spec["channels"] for s in ch["samples"]
                for m in s["modifiers"]}
    clash = sorted(set(names) & existing)
    if clash:
        raise WorkspaceError(f"coefficient names {clash} are already workspace parameters",
                             where="coefficients", hint="rename the coefficients")
    lin, quad = _terms(names, linear, quadratic)
    log.info("full-likelihood model: scaling %s by mu(c) in %s", list(signal_samples), names)
    modifier = {"name": SMEFT_MODIFIER, "type": SMEFT_MODIFIER,
                "data": {"coefficients": names, "linear": lin.tolist(),
                         "quadratic": quad.tolist()}}
    for channel in spec["channels"]:
        for sample in channel["samples"]:
            if sample["name"] in signal_samples:
                sample["modifiers"].append(copy.deepcopy(modifier))
    parameters = [p for p in spec.get("parameters", []) if p["name"] not in names]
    if fix_poi and poi:
        parameters = [p for p in parameters if p["name"] != poi]
        parameters.append({"name": poi, "fixed": True, "inits": [1.0]})
    for name in names:
        lo, hi = (bounds or {}).get(name, DEFAULT_BOUNDS)
        parameters.append({"name": name, "bounds": [[float(lo), float(hi)]], "inits": [0.0]})
    spec["parameters"] = parameters
    try:
        model = pyhf.Model(spec, modifier_set=MODIFIER_SET, validate=False, poi_name=names[0])
    except pyhf.exceptions.PyhfException as err:
        raise WorkspaceError(f"cannot build the full-likelihood model: {err}",
                             where="full_likelihood_model") from err
    missing = [c for c in model.config.channels if c not in observations]
    if missing:
        raise WorkspaceError(f"no observations for channels {missing}", where="observations")
    data = [x for c in model.config.channels for x in observations[c]] + list(
        model.config.auxdata)
    return FullLikelihood(model, data)


# ---------------------------------------------------------------------------- fits and scans
class ProfileFit(NamedTuple):
    """One minimisation of ``-2 log L``."""

    parameters: np.ndarray
    twice_nll: float
    valid: bool
    calls: int
    seconds: float


class CoefficientScan(NamedTuple):
    """Exact profile scan of ``-2 log L`` of the full workspace in one parameter (a SMEFT
    coefficient), every other parameter refitted with iminuit at each point.

    (The scans of nuisance parameters around a workspace's best fit that ``smeft-pyhf ingest``
    writes into a card are :class:`smeft_pyhf.ingest.scans.NuisanceScan`.)

    Attributes:
        values: scanned values (sorted).
        twice_nll_delta: ``2NLL(value) - 2NLL_min`` with all other parameters profiled.
        twice_nll: the absolute ``2NLL`` at each point.
        parameter: the scanned parameter.
        best_value: the value at the global minimum.
        twice_nll_min: the reference minimum (the lowest of the global fit and the scan).
        valid: per point, whether iminuit reported a valid minimum.
        seconds: total wall time.
    """

    values: np.ndarray
    twice_nll_delta: np.ndarray
    twice_nll: np.ndarray
    parameter: str
    best_value: float
    twice_nll_min: float
    valid: np.ndarray
    seconds: float


def _check_backend() -> None:
    tensorlib, _ = get_backend()
    if tensorlib.name != "numpy":
        raise ConfigError(f"the full-likelihood fits need pyhf's numpy backend, "
                          f"not {tensorlib.name!r}", where="pyhf.set_backend",
                          hint="call pyhf.set_backend('numpy')")


def _new_minuit(model: Any, data: np.ndarray, init: np.ndarray, fixed: Sequence[bool],
                bounds: Sequence[tuple[float, float]], *, tolerance: float,
                strategy: int) -> Any:
    import iminuit

    _check_backend()

    def twice_nll(x: np.ndarray) -> float:
        value = float(-2.0 * model.logpdf(x, data)[0])
        return value if math.isfinite(value) else 1e300

    minuit = iminuit.Minuit(twice_nll, np.asarray(init, dtype=np.float64),
                            name=list(model.config.par_names))
    minuit.errordef = iminuit.Minuit.LEAST_SQUARES
    minuit.limits = [tuple(b) for b in bounds]
    minuit.strategy = strategy
    minuit.tol = tolerance
    minuit.print_level = 0
    for i, is_fixed in enumerate(fixed):
        minuit.fixed[i] = bool(is_fixed)
    return minuit


def _migrad(minuit: Any) -> ProfileFit:
    """Run Migrad from the Minuit object's current state (values *and* covariance)."""
    calls, start = minuit.nfcn, time.perf_counter()
    minuit.migrad()
    return ProfileFit(np.asarray(minuit.values, dtype=np.float64), float(minuit.fval),
                      bool(minuit.valid), int(minuit.nfcn - calls), time.perf_counter() - start)


def fit_full(model: Any, data: Sequence[float], *, init: Sequence[float] | None = None,
             fixed: Mapping[str, float] | None = None, tolerance: float = 0.1,
             strategy: Literal[0, 1, 2] = 0) -> ProfileFit:
    """Minimise ``-2 log L`` of a (full-likelihood) pyhf model with iminuit.

    Args:
        model: a pyhf model (NumPy backend).
        data: observations + auxdata.
        init: starting point (default: the model's suggested init).
        fixed: parameters to fix, ``{name: value}`` (scalar parameters), on top of the
            model's own fixed ones.
        tolerance: iminuit ``tol`` (EDM goal ``0.002 * tol``).
        strategy: iminuit strategy.

    Returns:
        :class:`ProfileFit`.
    """
    x0 = np.asarray(init if init is not None else model.config.suggested_init(), dtype=np.float64)
    is_fixed = list(model.config.suggested_fixed())
    for name, value in (fixed or {}).items():
        index = _scalar_index(model, name)
        x0[index] = value
        is_fixed[index] = True
    minuit = _new_minuit(model, np.asarray(data, dtype=np.float64), x0, is_fixed,
                         model.config.suggested_bounds(), tolerance=tolerance, strategy=strategy)
    return _migrad(minuit)


def _scalar_index(model: Any, name: str) -> int:
    if name not in model.config.par_map:
        raise ConfigError(f"unknown parameter {name!r}", where="profile_scan_full",
                          hint=f"model parameters include {list(model.config.par_order)[:10]}")
    sl = model.config.par_slice(name)
    if sl.stop - sl.start != 1:
        raise ConfigError(f"parameter {name!r} is not a scalar", where="profile_scan_full")
    return sl.start


def profile_scan_full(model: Any, data: Sequence[float], coefficient: str,
                      values: Sequence[float] | np.ndarray, *,
                      init: Sequence[float] | None = None, tolerance: float = 0.1,
                      strategy: Literal[0, 1, 2] = 0,
                      global_fit: ProfileFit | None = None) -> CoefficientScan:
    """1D profile scan: ``Delta(2NLL)`` with all other parameters profiled at each point.

    The global minimum is fitted first (from ``global_fit`` when given); the points are then
    fitted outwards from it with one iminuit object, so every fit starts from its neighbour's
    parameters *and* covariance (about 10x fewer calls than a fresh Migrad in ~200
    parameters).

    Args:
        model: a pyhf model, e.g. from :func:`full_likelihood_model`.
        data: observations + auxdata.
        coefficient: the scanned parameter (any scalar model parameter).
        values: scan points.
        init: starting point of the global fit.
        tolerance: iminuit ``tol``.
        strategy: iminuit strategy.
        global_fit: an existing global fit to reuse.

    Returns:
        :class:`CoefficientScan`.

    Example:
        >>> import numpy as np
        >>> spec = {"channels": [{"name": "sr", "samples": [
        ...     {"name": "sig", "data": [5.0], "modifiers": [
        ...         {"name": "mu", "type": "normfactor", "data": None}]},
        ...     {"name": "bkg", "data": [10.0], "modifiers": []}]}],
        ...     "observations": [{"name": "sr", "data": [15.0]}],
        ...     "measurements": [{"name": "m", "config": {"poi": "mu", "parameters": []}}],
        ...     "version": "1.0.0"}
        >>> model, data = full_likelihood_model(spec, coefficients=["ctG"], linear={"ctG": 1.0})
        >>> scan = profile_scan_full(model, data, "ctG", [-0.5, 0.0, 0.5])
        >>> np.round(scan.twice_nll_delta, 3).tolist()   # 2 [mu - d + d log(d / mu)], mu = 15 +- 2.5
        [0.47, 0.0, 0.375]
    """
    start = time.perf_counter()
    data_arr = np.asarray(data, dtype=np.float64)
    index = _scalar_index(model, coefficient)
    x0 = np.asarray(global_fit.parameters if global_fit is not None
                    else init if init is not None else model.config.suggested_init(),
                    dtype=np.float64)
    minuit = _new_minuit(model, data_arr, x0, model.config.suggested_fixed(),
                         model.config.suggested_bounds(), tolerance=tolerance,
                         strategy=strategy)
    # One Minuit object for the whole scan: every fit starts from the previous point's values
    # and covariance, so Migrad needs a few gradients instead of rebuilding the Hessian.
    fit = _migrad(minuit)
    if global_fit is None or fit.twice_nll < global_fit.twice_nll:
        global_fit = fit
    log.info("global fit: 2NLL = %.4f at %s = %.4g (%d calls, %.1f s, valid=%s)",
             global_fit.twice_nll, coefficient, global_fit.parameters[index],
             fit.calls, fit.seconds, global_fit.valid)
    best = float(global_fit.parameters[index])
    grid = np.sort(np.asarray(values, dtype=np.float64).reshape(-1))
    twice_nll = np.full(grid.shape, np.nan)
    valid = np.zeros(grid.shape, dtype=bool)
    centre_values = np.asarray(minuit.values, dtype=np.float64)
    minuit.fixed[index] = True
    centre = int(np.argmin(np.abs(grid - best)))
    for order in (range(centre, grid.size), range(centre - 1, -1, -1)):
        minuit.values = centre_values
        for i in order:
            minuit.values[index] = grid[i]
            fit = _migrad(minuit)
            twice_nll[i], valid[i] = fit.twice_nll, fit.valid
            log.info("%s = %.4g: 2NLL = %.4f (%d calls, %.1f s, valid=%s)", coefficient,
                     grid[i], fit.twice_nll, fit.calls, fit.seconds, fit.valid)
    minimum = float(min(global_fit.twice_nll, np.nanmin(twice_nll)))
    if minimum < global_fit.twice_nll - 1e-3:
        log.warning("a scan point lies %.3g below the global fit; the global fit found a "
                    "local minimum (the SMEFT factor is quadratic)",
                    global_fit.twice_nll - minimum)
        best = float(grid[int(np.nanargmin(twice_nll))])
    return CoefficientScan(grid, twice_nll - minimum, twice_nll, coefficient, best, minimum, valid,
                      time.perf_counter() - start)


# ---------------------------------------------------------------------------- card vs full
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
                                  order=order, use_quad=use_quad,  # type: ignore[arg-type]
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
    lo_b, hi_b = model.config.suggested_bounds()[model.config.par_slice(name).start]
    init = np.asarray(model.config.suggested_init(), dtype=np.float64)
    # Start the global fit at the solution of mu(c) = mu_hat nearest to zero, when there is one.
    roots = np.roots([quad, lin, 1.0 - card_info.best_fit]) if quad else (
        np.array([(card_info.best_fit - 1.0) / lin]) if lin else np.array([]))
    real = [float(r.real) for r in np.atleast_1d(roots) if abs(r.imag) < 1e-12
            and lo_b < r.real < hi_b]
    if real:
        init[model.config.par_slice(name)] = min(real, key=abs)
    scan = profile_scan_full(model, data, name, grid, init=init, tolerance=tolerance)
    x_dense = np.linspace(grid[0], grid[-1], dense)
    intervals: dict[str, tuple[Interval, ...]] = {}
    # Interpolation knots: the scan points plus the global minimum (Delta = 0) and, as the
    # likelihood depends on c only through mu(c), its mirror image -l/q - c_hat.
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

        full_dense = PchipInterpolator(kx, ky)(x_dense)
    else:
        full_dense = np.interp(x_dense, kx, ky)
    intervals["full"] = intervals_from_curve(x_dense, full_dense)
    cards: dict[str, np.ndarray] = {}
    for mode in card_modes:
        function = _card_chi2_function(card, mode, coefficient=name, database=database,
                                       order=order, use_quad=use_quad, linear=lin,
                                       quadratic=quad)
        minimum = _minimum_on(function, lo_b, hi_b)
        cards[mode] = function(grid) - minimum
        intervals[f"card:{mode}"] = intervals_from_curve(x_dense, function(x_dense) - minimum)
    mu = 1.0 + lin * grid + quad * grid**2
    return CardComparison(name, card_info.name, dataset, lin, quad, grid, mu,
                          scan.twice_nll_delta, cards, intervals, scan, card_info.best_fit)


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

"""The full likelihood: the published workspace with its signal scaled by a SMEFT factor.

Instead of reducing a workspace to a Gaussian measurement card, keep the whole HistFactory model
and multiply the signal sample(s) by the quadratic SMEFT factor of the linked theory table,

    mu(c) = T(c) / T_SM = 1 + sum_a l_a c_a + sum_{a<=b} q_ab c_a c_b,

through a pyhf *custom modifier* (type ``"smeft"``): ``pyhf.Model(spec, modifier_set={
**histfactory_set, "smeft": (smeft_builder, smeft_combined)}, validate=False)``. The Wilson
coefficients become free, unconstrained parameters of the pyhf model (named after the
coefficients, ``ctG``, ``c13qq``, ...); the original POI normfactor is fixed to 1. pyhf runs on
its NumPy backend (its PyTorch backend was removed upstream, pyhf PR #2611).

The profile scans of this model (:mod:`smeft_pyhf.checks.profile_scan`) are the exact
reference for the Gaussian card of the same measurement (:mod:`smeft_pyhf.checks.card_vs_full`).

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
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyhf
from pyhf import events, get_backend
from pyhf.parameters import ParamViewer

from smeft_pyhf.exceptions import ConfigError, DataError, WorkspaceError

__all__ = [
    "DEFAULT_BOUNDS",
    "MODIFIER_SET",
    "SMEFT_MODIFIER",
    "FullLikelihood",
    "full_likelihood_model",
    "smeft_builder",
    "smeft_combined",
    "smeft_factor",
    "smeft_terms_from_dataset",
]

log = logging.getLogger(__name__)

SMEFT_MODIFIER = "smeft"
DEFAULT_BOUNDS = (-50.0, 50.0)
"""The range of a coefficient parameter in the full-likelihood model."""


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

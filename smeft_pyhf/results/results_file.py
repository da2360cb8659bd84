"""The results file: one machine-readable ``results.json`` per fit.

Layout (``results_version: 1``; all likelihoods stored as ``-2 Delta log L``, i.e. the
minimum over the histogram is 0; empty bins are ``"Infinity"``; values rounded to 5 significant
digits)::

    {
      "format": "smeft-pyhf-results", "results_version": 1,
      "coefficients": ["ctG", ...],                    # fitted (free) coefficients, in order
      "ranges": {"ctG": [-1.0, 1.0], ...},
      "fixed": {"cQt8": 0.0},                          # fixed coefficients (not fitted)
      "best_fit": {"coefficients": {"ctG": 0.01, ...}, "log_likelihood": -3.2},
      "intervals": {"ctG": {"profiled": {"68": {...}, "95": {...}},
                            "marginalised": {"68": {...}, "95": {...}}}},
      "profile1d":   {"ctG": {"edges": [...], "delta_chi2": [...]}},
      "marginal1d":  {"ctG": {"edges": [...], "delta_chi2": [...]}},
      "profile2d":   {"ctG|ctZ": {"x_edges": [...], "y_edges": [...], "delta_chi2": [[...]]}},
      "marginal2d":  {...},
      "weights": {"log10_edges": [...], "counts": [...]},
      "sampling": {"ess": 1.2e5, "n_samples": 2e5, "log_evidence": -4.1},
      "timings": {"prescale": 2.1, "pretrain": ..., "train": ..., "sample": ..., "profile": ...},
      "analytic": {"best_fit": {...}, "covariance": [[...]], "intervals": {...}} | null,
      "config": {...the resolved runcard...},
      "provenance": {"created": "...", "versions": {...}, "inputs": {"path": "sha256"}, ...}
    }

Schema: ``smeft_pyhf/schemas/results.schema.json`` (checked when written and when read).
Non-finite numbers: the file is strict JSON, so NaN, ``+inf`` and ``-inf`` are written as the
strings ``"NaN"``, ``"Infinity"`` and ``"-Infinity"`` and read back as those floats, in every
numeric field and inside ``config`` and ``provenance`` (where these three strings always mean the
numbers). Files written with ``null`` for every non-finite number are read as follows: ``null``
in a ``delta_chi2`` array is ``+inf``, an empty bin (their writer had turned every non-finite
``-2 Delta log L`` into ``+inf`` before writing, so nothing is lost); ``null`` for
``best_fit.log_likelihood``, ``sampling.ess`` and ``sampling.log_evidence`` is ``None``, "not
available" (a ``-inf`` evidence cannot be told apart there); ``null`` in any other numeric field
(edges, coefficient values, ranges, covariance, interval ends, timings) is NaN, since the
writer did not record which non-finite value it was.

Intervals: each is ``{"segments": [[low, high], ...], "open_low": bool, "open_high": bool}``.
Profiled intervals use ``-2 Delta log L < 1 / 3.84``; marginalised ones are highest-density
intervals of the marginal posterior (flat prior in the fit ranges), see
:mod:`smeft_pyhf.results.intervals`.

Example:
    >>> import numpy as np, tempfile, pathlib
    >>> edges = np.linspace(-3, 3, 61)
    >>> c = 0.5 * (edges[1:] + edges[:-1])
    >>> h = Histogram1D(edges, c**2)
    >>> res = make_fit_result(names=("cA",), ranges={"cA": (-3.0, 3.0)},
    ...                       best_fit={"cA": 0.0}, profile1d={"cA": h}, marginal1d={"cA": h})
    >>> res.intervals["cA"]["profiled"]["95"].high  # doctest: +ELLIPSIS
    1.9...
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "results.json"
    >>> write_results(res, path)
    >>> read_results(path).names
    ('cA',)
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from .._io import atomic_write_text
from ..exceptions import DataError, InputError
from ..formats.intervals import LEVELS, Interval, Level, as_level
from ..formats.reader import read_document, validate_document
from .diagnostics import Diagnostics, DiagnosticWarning, assess
from .intervals import marginalised_interval, profiled_interval

log = logging.getLogger(__name__)

__all__ = [
    "RESULTS_FILENAME",
    "RESULTS_VERSION",
    "AnalyticSolution",
    "FitResult",
    "Histogram1D",
    "Histogram2D",
    "WeightHistogram",
    "compute_intervals",
    "gaussian_histograms",
    "make_fit_result",
    "pair_key",
    "read_results",
    "results_to_dict",
    "tool_versions",
    "write_results",
]

RESULTS_VERSION = 1
RESULTS_FILENAME = "results.json"


class Histogram1D(NamedTuple):
    """A binned 1D ``-2 Delta log L`` (profiled or marginalised).

    Attributes:
        edges: bin edges, shape ``(n + 1,)``.
        delta_chi2: ``-2 Delta log L`` per bin, shape ``(n,)``; ``inf`` for empty bins.
    """

    edges: np.ndarray
    delta_chi2: np.ndarray

    @property
    def centres(self) -> np.ndarray:
        """Bin centres."""
        return 0.5 * (self.edges[1:] + self.edges[:-1])

    @property
    def density(self) -> np.ndarray:
        """``exp(-delta_chi2 / 2)`` (peak 1), e.g. the marginal posterior density."""
        return np.exp(-0.5 * np.asarray(self.delta_chi2, dtype=float))


class Histogram2D(NamedTuple):
    """A binned 2D ``-2 Delta log L``; ``delta_chi2[i, j]`` is x-bin ``i``, y-bin ``j``."""

    x_edges: np.ndarray
    y_edges: np.ndarray
    delta_chi2: np.ndarray


class WeightHistogram(NamedTuple):
    """Histogram of ``log10`` of the normalised importance weights (mean weight 1)."""

    log10_edges: np.ndarray
    counts: np.ndarray


class AnalyticSolution(NamedTuple):
    """Linear-Gaussian solution: best fit and covariance, Gaussian 68/95% intervals."""

    best_fit: dict[str, float]
    covariance: np.ndarray
    intervals: dict[str, dict[Level, Interval]]

    @property
    def std(self) -> dict[str, float]:
        """Standard deviations per coefficient."""
        return {n: float(math.sqrt(max(self.covariance[i, i], 0.0))) for i, n in enumerate(self.best_fit)}


class FitResult(NamedTuple):
    """Everything a SMEFT fit (``smeft-pyhf fit``) produced; written to and read back from
    ``results.json``. (The maximum-likelihood fit of a workspace that ``smeft-pyhf ingest``
    makes is :class:`smeft_pyhf.ingest.fitting.WorkspaceFit`.)

    Attributes:
        names: fitted coefficients in order.
        ranges: ``name -> (min, max)``.
        best_fit: ``name -> value`` at the highest likelihood found.
        best_log_likelihood: ``log L`` there (up to the likelihood's constant), or None.
        profile1d, marginal1d: ``name -> Histogram1D``.
        profile2d, marginal2d: ``(x, y) -> Histogram2D`` (names in the order of ``names``).
        intervals: ``name -> {"profiled"|"marginalised" -> {"68"|"95" -> Interval}}``.
        weights: histogram of log10 weights, or None.
        ess, n_samples, log_evidence: sampling diagnostics (None when not sampled).
        timings: seconds per step.
        analytic: the linear-Gaussian solution, or None.
        fixed: fixed coefficients and their values.
        config: the resolved run configuration.
        provenance: creation time, versions, input hashes, seed, device.
        diagnostics: convergence figures (:mod:`smeft_pyhf.results.diagnostics`), or None.
    """

    names: tuple[str, ...]
    ranges: dict[str, tuple[float, float]]
    best_fit: dict[str, float]
    best_log_likelihood: float | None
    profile1d: dict[str, Histogram1D]
    marginal1d: dict[str, Histogram1D]
    profile2d: dict[tuple[str, str], Histogram2D]
    marginal2d: dict[tuple[str, str], Histogram2D]
    intervals: dict[str, dict[str, dict[Level, Interval]]]
    weights: WeightHistogram | None
    ess: float | None
    n_samples: int | None
    log_evidence: float | None
    timings: dict[str, float]
    analytic: AnalyticSolution | None
    fixed: dict[str, float]
    config: dict[str, Any]
    provenance: dict[str, Any]
    diagnostics: Diagnostics | None = None

    def warnings(self) -> list[DiagnosticWarning]:
        """The convergence figures that miss their thresholds (empty when none, or unsampled)."""
        return [] if self.diagnostics is None else assess(self.diagnostics)

    def interval(
        self, name: str, *, method: str = "profiled", level: Level | str | float = "95"
    ) -> Interval:
        """Shortcut: ``intervals[name][method][level]``; ``level`` as a user may write it
        (``"95"``, ``"95%"``, ``0.95``; see :func:`~smeft_pyhf.formats.intervals.as_level`)."""
        return self.intervals[name][method][as_level(level)]


def pair_key(x: str, y: str) -> str:
    """Key of a 2D entry in the JSON file (``"ctG|ctZ"``)."""
    return f"{x}|{y}"


def tool_versions() -> dict[str, str]:
    """Versions of smeft-pyhf and the libraries that shape the results."""
    from importlib import metadata

    versions: dict[str, str] = {}
    for package in ("smeft-pyhf", "torch", "zuko", "numpy", "scipy", "pyhf", "matplotlib"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions


def compute_intervals(
    names: Iterable[str],
    profile1d: Mapping[str, Histogram1D],
    marginal1d: Mapping[str, Histogram1D],
) -> dict[str, dict[str, dict[Level, Interval]]]:
    """68%/95% profiled and marginalised (HDI) intervals for every coefficient."""
    out: dict[str, dict[str, dict[Level, Interval]]] = {}
    for name in names:
        entry: dict[str, dict[Level, Interval]] = {}
        if name in profile1d:
            h = profile1d[name]
            entry["profiled"] = {
                lv: profiled_interval(h.centres, h.delta_chi2, level=lv) for lv in LEVELS
            }
        if name in marginal1d:
            h = marginal1d[name]
            entry["marginalised"] = {
                lv: marginalised_interval(h.centres, h.density, level=lv) for lv in LEVELS
            }
        out[name] = entry
    return out


def make_fit_result(
    *,
    names: Iterable[str],
    ranges: Mapping[str, tuple[float, float]],
    best_fit: Mapping[str, float],
    best_log_likelihood: float | None = None,
    profile1d: Mapping[str, Histogram1D] | None = None,
    marginal1d: Mapping[str, Histogram1D] | None = None,
    profile2d: Mapping[tuple[str, str], Histogram2D] | None = None,
    marginal2d: Mapping[tuple[str, str], Histogram2D] | None = None,
    weights: WeightHistogram | None = None,
    ess: float | None = None,
    n_samples: int | None = None,
    log_evidence: float | None = None,
    timings: Mapping[str, float] | None = None,
    analytic: AnalyticSolution | None = None,
    fixed: Mapping[str, float] | None = None,
    config: Mapping[str, Any] | None = None,
    provenance: Mapping[str, Any] | None = None,
    diagnostics: Diagnostics | None = None,
) -> FitResult:
    """Assemble a :class:`FitResult`, normalising histograms and computing the intervals.

    ``diagnostics`` gets its ``at_prior_edge`` flags from the 95% intervals.
    """
    names = tuple(names)
    p1 = {k: _norm1d(v) for k, v in (profile1d or {}).items()}
    m1 = {k: _norm1d(v) for k, v in (marginal1d or {}).items()}
    p2 = {k: _norm2d(v) for k, v in (profile2d or {}).items()}
    m2 = {k: _norm2d(v) for k, v in (marginal2d or {}).items()}
    intervals = compute_intervals(names, p1, m1)
    if diagnostics is not None:
        diagnostics = diagnostics._replace(at_prior_edge=prior_edge_flags(intervals))
    prov = dict(provenance or {})
    prov.setdefault("created", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    prov.setdefault("versions", tool_versions())
    return FitResult(
        names=names,
        ranges={k: (float(a), float(b)) for k, (a, b) in ranges.items()},
        best_fit={k: float(v) for k, v in best_fit.items()},
        best_log_likelihood=None if best_log_likelihood is None else float(best_log_likelihood),
        profile1d=p1,
        marginal1d=m1,
        profile2d=p2,
        marginal2d=m2,
        intervals=intervals,
        weights=weights,
        ess=None if ess is None else float(ess),
        n_samples=None if n_samples is None else int(n_samples),
        log_evidence=None if log_evidence is None else float(log_evidence),
        timings={k: float(v) for k, v in (timings or {}).items()},
        analytic=analytic,
        fixed={k: float(v) for k, v in (fixed or {}).items()},
        config=dict(config or {}),
        provenance=prov,
        diagnostics=diagnostics,
    )


def prior_edge_flags(
    intervals: Mapping[str, Mapping[str, Mapping[Level, Interval]]], *, level: Level = "95"
) -> dict[str, tuple[str, ...]]:
    """``name -> ("low", "high")`` sides where a ``level`` interval reaches the prior range."""
    flags: dict[str, tuple[str, ...]] = {}
    for name, methods in intervals.items():
        sides = set()
        for levels in methods.values():
            iv = levels.get(level)
            if iv is not None and iv.open_low:
                sides.add("low")
            if iv is not None and iv.open_high:
                sides.add("high")
        if sides:
            flags[name] = tuple(sorted(sides))
    return flags


def _norm1d(h: Histogram1D) -> Histogram1D:
    y = np.asarray(h.delta_chi2, dtype=float)
    y = np.where(np.isfinite(y), y, np.inf)
    if np.any(np.isfinite(y)):
        y = y - y[np.isfinite(y)].min()
    return Histogram1D(np.asarray(h.edges, dtype=float), y)


def _norm2d(h: Histogram2D) -> Histogram2D:
    z = np.asarray(h.delta_chi2, dtype=float)
    z = np.where(np.isfinite(z), z, np.inf)
    if np.any(np.isfinite(z)):
        z = z - z[np.isfinite(z)].min()
    return Histogram2D(np.asarray(h.x_edges, dtype=float), np.asarray(h.y_edges, dtype=float), z)


# ----------------------------------------------------------------------------- JSON I/O
_NONFINITE: dict[str, float] = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
"""The strings that stand for non-finite numbers in the file."""


def _enc(value: float) -> float | str:
    """A float for the file: finite values as they are, NaN/``+-inf`` as their string."""
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def _r(value: float, digits: int = 5) -> float | str:
    """``value`` rounded to ``digits`` significant digits (non-finite values as strings)."""
    value = float(value)
    if not math.isfinite(value):
        return _enc(value)
    return float(f"{value:.{digits}g}")


def _arr(values: Any, digits: int = 5) -> Any:
    arr = np.asarray(values, dtype=float)
    if arr.ndim == 0:
        return _r(arr, digits)
    return [_arr(v, digits) for v in arr]


def _num(value: Any, null: float | None) -> float | None:
    """A number read from the file; ``null`` is what a JSON ``null`` stands for."""
    if value is None:
        return null
    if isinstance(value, str):
        if value in _NONFINITE:
            return _NONFINITE[value]
        raise ValueError(f"{value!r} is not a number")
    return float(value)


def _unarr(values: Any, null: float = math.nan) -> np.ndarray:
    def conv(v: Any) -> Any:
        if isinstance(v, list):
            return [conv(x) for x in v]
        return _num(v, null)

    return np.asarray(conv(values), dtype=float)


def _encode_tree(value: Any) -> Any:
    """``value`` (dicts, lists, scalars) with every non-finite float as its string."""
    if isinstance(value, Mapping):
        return {k: _encode_tree(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode_tree(v) for v in value]
    if isinstance(value, (float, np.floating)) and not math.isfinite(value):
        return _enc(value)
    return value


def _decode_tree(value: Any) -> Any:
    """Inverse of :func:`_encode_tree`."""
    if isinstance(value, dict):
        return {k: _decode_tree(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode_tree(v) for v in value]
    if isinstance(value, str) and value in _NONFINITE:
        return _NONFINITE[value]
    return value


def _interval_json(iv: Interval) -> dict:
    data = iv.to_dict()
    data["segments"] = [[_enc(a), _enc(b)] for a, b in data["segments"]]
    return data


def _interval_from_json(level: str, data: Mapping) -> Interval:
    return Interval(
        as_level(level),
        tuple((_num(a, math.nan), _num(b, math.nan)) for a, b in data.get("segments", [])),
        bool(data.get("open_low", False)),
        bool(data.get("open_high", False)),
    )


def _interval_dict(entry: Mapping[str, Mapping[Level, Interval]]) -> dict:
    return {m: {lv: _interval_json(iv) for lv, iv in levels.items()} for m, levels in entry.items()}


def results_to_dict(result: FitResult) -> dict[str, Any]:
    """The JSON-ready dictionary of a :class:`FitResult` (see the module docstring)."""
    analytic = None
    if result.analytic is not None:
        analytic = {
            "best_fit": {k: _r(v, 8) for k, v in result.analytic.best_fit.items()},
            "covariance": _arr(result.analytic.covariance, 8),
            "intervals": {
                name: {lv: _interval_json(iv) for lv, iv in levels.items()}
                for name, levels in result.analytic.intervals.items()
            },
        }
    weights = None
    if result.weights is not None:
        weights = {
            "log10_edges": _arr(result.weights.log10_edges),
            "counts": [int(c) for c in np.asarray(result.weights.counts)],
        }
    return {
        "format": "smeft-pyhf-results",
        "results_version": RESULTS_VERSION,
        "coefficients": list(result.names),
        "ranges": {k: [_enc(a), _enc(b)] for k, (a, b) in result.ranges.items()},
        "fixed": {k: _enc(v) for k, v in result.fixed.items()},
        "best_fit": {
            "coefficients": {k: _r(v, 8) for k, v in result.best_fit.items()},
            "log_likelihood": None
            if result.best_log_likelihood is None
            else _r(result.best_log_likelihood, 10),
        },
        "intervals": {k: _interval_dict(v) for k, v in result.intervals.items()},
        "profile1d": {
            k: {"edges": _arr(h.edges, 8), "delta_chi2": _arr(h.delta_chi2)}
            for k, h in result.profile1d.items()
        },
        "marginal1d": {
            k: {"edges": _arr(h.edges, 8), "delta_chi2": _arr(h.delta_chi2)}
            for k, h in result.marginal1d.items()
        },
        "profile2d": {pair_key(*k): _h2(h) for k, h in result.profile2d.items()},
        "marginal2d": {pair_key(*k): _h2(h) for k, h in result.marginal2d.items()},
        "weights": weights,
        "sampling": {
            "ess": None if result.ess is None else _r(result.ess, 8),
            "n_samples": result.n_samples,
            "log_evidence": None if result.log_evidence is None else _r(result.log_evidence, 8),
        },
        "timings": {k: round(v, 3) if math.isfinite(v) else _enc(v)
                    for k, v in result.timings.items()},
        "analytic": analytic,
        "config": _encode_tree(result.config),
        "provenance": _encode_tree(result.provenance),
        "diagnostics": None if result.diagnostics is None
        else _encode_tree(result.diagnostics.to_dict()),
    }


def _h2(h: Histogram2D) -> dict:
    return {
        "x_edges": _arr(h.x_edges, 8),
        "y_edges": _arr(h.y_edges, 8),
        "delta_chi2": _arr(h.delta_chi2),
    }


def write_results(result: FitResult, path: str | os.PathLike[str]) -> None:
    """Write ``result`` as JSON to ``path`` (a file, or a folder getting ``results.json``).

    The document is checked against ``smeft_pyhf/schemas/results.schema.json`` first and
    written atomically.

    Raises:
        DataError: the result does not follow the results schema (nothing is written).
        InputError: the folder is missing or not writable (nothing is written).
    """
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_FILENAME
    document = results_to_dict(result)
    validate_document(document, "results", where=str(path), error=DataError)
    text = json.dumps(document, indent=1, sort_keys=False, allow_nan=False)
    atomic_write_text(path, text + "\n")
    log.info("wrote %s (%.1f kB)", path, len(text) / 1e3)


def read_results(path: str | os.PathLike[str]) -> FitResult:
    """Read a results file (or a results folder holding ``results.json``).

    The file is read by :func:`smeft_pyhf.formats.reader.read_document` and checked against
    ``smeft_pyhf/schemas/results.schema.json``; the strings ``"NaN"``, ``"Infinity"`` and
    ``"-Infinity"`` are read back as those floats.

    Raises:
        InputError: missing file, malformed JSON, not a smeft-pyhf results file, or a file
            that breaks the schema (field named).
    """
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_FILENAME
    data = read_document(path, error=InputError, what="results file",
                         hint="give a results folder written by 'smeft-pyhf fit' or its "
                         "results.json")
    if data.get("format") != "smeft-pyhf-results":
        raise InputError(
            "not a smeft-pyhf results file (missing 'format: smeft-pyhf-results')", where=str(path)
        )
    if data.get("results_version") != RESULTS_VERSION:
        raise InputError(
            f"unsupported results_version {data.get('results_version')!r}",
            where=str(path),
            hint=f"this smeft-pyhf reads version {RESULTS_VERSION}",
        )
    validate_document(data, "results", where=str(path), error=InputError)
    try:
        return results_from_dict(data)
    except (KeyError, TypeError, ValueError) as err:
        raise InputError(
            f"malformed results file ({type(err).__name__}: {err})",
            where=str(path),
            hint="write it again with 'smeft-pyhf fit'",
        ) from err


def _read_intervals(entry: Mapping) -> dict[str, dict[Level, Interval]]:
    return {m: {lv: _interval_from_json(lv, iv) for lv, iv in levels.items()}
            for m, levels in entry.items()}


def results_from_dict(data: Mapping[str, Any]) -> FitResult:
    """Inverse of :func:`results_to_dict`."""

    def pair(key: str) -> tuple[str, str]:
        x, y = key.split("|", 1)
        return x, y

    analytic = None
    if data.get("analytic"):
        a = data["analytic"]
        analytic = AnalyticSolution(
            {k: _num(v, math.nan) for k, v in a["best_fit"].items()},
            _unarr(a["covariance"]),
            {
                name: {lv: _interval_from_json(lv, iv) for lv, iv in levels.items()}
                for name, levels in a["intervals"].items()
            },
        )
    weights = None
    if data.get("weights"):
        weights = WeightHistogram(
            _unarr(data["weights"]["log10_edges"]), np.asarray(data["weights"]["counts"], dtype=int)
        )
    sampling = data.get("sampling") or {}
    best = data.get("best_fit") or {}
    inf = math.inf  # null in a delta_chi2 array: an empty bin

    def h1(v: Mapping) -> Histogram1D:
        return Histogram1D(_unarr(v["edges"]), _unarr(v["delta_chi2"], inf))

    def h2(v: Mapping) -> Histogram2D:
        return Histogram2D(_unarr(v["x_edges"]), _unarr(v["y_edges"]),
                           _unarr(v["delta_chi2"], inf))

    return FitResult(
        names=tuple(data["coefficients"]),
        ranges={k: (_num(a, math.nan), _num(b, math.nan)) for k, (a, b) in data["ranges"].items()},
        best_fit={k: _num(v, math.nan) for k, v in best.get("coefficients", {}).items()},
        best_log_likelihood=_num(best.get("log_likelihood"), None),
        profile1d={k: h1(v) for k, v in data.get("profile1d", {}).items()},
        marginal1d={k: h1(v) for k, v in data.get("marginal1d", {}).items()},
        profile2d={pair(k): h2(v) for k, v in data.get("profile2d", {}).items()},
        marginal2d={pair(k): h2(v) for k, v in data.get("marginal2d", {}).items()},
        intervals={k: _read_intervals(v) for k, v in data.get("intervals", {}).items()},
        weights=weights,
        ess=_num(sampling.get("ess"), None),
        n_samples=sampling.get("n_samples"),
        log_evidence=_num(sampling.get("log_evidence"), None),
        timings={k: _num(v, math.nan) for k, v in (data.get("timings") or {}).items()},
        analytic=analytic,
        fixed={k: _num(v, math.nan) for k, v in (data.get("fixed") or {}).items()},
        config=_decode_tree(dict(data.get("config") or {})),
        provenance=_decode_tree(dict(data.get("provenance") or {})),
        diagnostics=None if not data.get("diagnostics")
        else Diagnostics.from_dict(_decode_tree(dict(data["diagnostics"]))),
    )


def gaussian_histograms(
    mean: Mapping[str, float],
    covariance: np.ndarray,
    ranges: Mapping[str, tuple[float, float]],
    *,
    bins_1d: int = 80,
    bins_2d: int = 40,
    profile_bins_1d: int = 40,
    profile_bins_2d: int = 30,
) -> dict[str, dict]:
    """Exact histograms of a multivariate Gaussian likelihood (a reference for validation).

    For a Gaussian, profiled and marginalised likelihoods coincide: ``-2 Delta log L`` of the
    1D marginal is ``(x - mu)^2 / sigma^2``. Marginal 1D bins hold the exact bin probability
    (CDF differences), profiles the value at the bin centre.

    Args:
        mean: ``name -> mu`` (the order of the names is the order of ``covariance``).
        covariance: ``(d, d)`` covariance.
        ranges: ``name -> (min, max)``.
        bins_1d, bins_2d, profile_bins_1d, profile_bins_2d: binning (paper defaults).

    Returns:
        ``{"profile1d": ..., "marginal1d": ..., "profile2d": ..., "marginal2d": ...}``, ready
        for :func:`make_fit_result`.

    Example:
        >>> h = gaussian_histograms({"a": 0.0}, np.eye(1), {"a": (-4.0, 4.0)})
        >>> float(h["profile1d"]["a"].delta_chi2.min()) < 0.01
        True
    """
    from scipy.special import ndtr

    names = list(mean)
    mu = np.array([mean[n] for n in names], dtype=float)
    cov = np.asarray(covariance, dtype=float)
    out: dict[str, dict] = {"profile1d": {}, "marginal1d": {}, "profile2d": {}, "marginal2d": {}}
    for i, n in enumerate(names):
        sigma = math.sqrt(cov[i, i])
        lo, hi = ranges[n]
        edges = np.linspace(lo, hi, profile_bins_1d + 1)
        c = 0.5 * (edges[1:] + edges[:-1])
        out["profile1d"][n] = Histogram1D(edges, ((c - mu[i]) / sigma) ** 2)
        edges = np.linspace(lo, hi, bins_1d + 1)
        prob = np.diff(ndtr((edges - mu[i]) / sigma))
        with np.errstate(divide="ignore"):
            out["marginal1d"][n] = Histogram1D(edges, -2.0 * np.log(prob / prob.max()))
    for i, x in enumerate(names):
        for j in range(i + 1, len(names)):
            y = names[j]
            sub = cov[np.ix_([i, j], [i, j])]
            inv = np.linalg.inv(sub)
            for key, bins in (("profile2d", profile_bins_2d), ("marginal2d", bins_2d)):
                xe = np.linspace(*ranges[x], bins + 1)
                ye = np.linspace(*ranges[y], bins + 1)
                xc = 0.5 * (xe[1:] + xe[:-1]) - mu[i]
                yc = 0.5 * (ye[1:] + ye[:-1]) - mu[j]
                gx, gy = np.meshgrid(xc, yc, indexing="ij")
                z = inv[0, 0] * gx**2 + 2 * inv[0, 1] * gx * gy + inv[1, 1] * gy**2
                out[key][(x, y)] = Histogram2D(xe, ye, z)
    return out

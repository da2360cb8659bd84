"""Reading SMEFiT-format datasets (``commondata/<SET>.yaml`` + ``theory/<SET>.json``).

The file format and the covariance prescription follow the SMEFiT code (``loader.py`` and
``covmat.py``); see ``shared/data/PROVENANCE.md``, section "SMEFiT file format":

* experimental covariance ``C = diag(stat^2 + sum_{UNCORR, THEORYUNCORR} s^2) + sum_{others} s s^T``;
* with the t0 prescription (default), ``MULT`` systematics are rescaled ``s -> s / data * best_sm``;
* systematics named other than ``UNCORR/CORR/THEORYUNCORR/THEORYCORR`` (e.g. ``ATLASLUMI12``) are
  correlated across the datasets that share the name (the k-th occurrence of a name in one dataset
  with the k-th occurrence in another);
* the theory covariance ``theory_cov_current`` (older files: ``theory_cov``) is added on top.

Example:
    >>> from pathlib import Path
    >>> db = Path("../shared/data/smefit_database")
    >>> ds = load_smefit_dataset(db, "ATLAS_t_sch_13TeV_inc")   # doctest: +SKIP
    >>> ds.data_central, ds.best_sm                               # doctest: +SKIP
    (array([8.47]), array([11.2]))
"""

from __future__ import annotations

import difflib
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import yaml

from smeft_pyhf.exceptions import DataError
from smeft_pyhf.formats.reader import read_document

__all__ = [
    "INTRA_DATASET_SYSTEMATICS",
    "ORDERS",
    "SYMMETRY_RTOL",
    "SmefitDataset",
    "available_datasets",
    "available_orders",
    "check_dataset_name",
    "combined_covariance",
    "dataset_covariance",
    "load_smefit_dataset",
    "load_smefit_datasets",
    "top_quark_datasets",
]

log = logging.getLogger(__name__)

Order = Literal["LO", "NLO_QCD"]
ORDERS: tuple[str, ...] = ("LO", "NLO_QCD")
#: systematic names that are *not* correlated across datasets (SMEFiT ``INTRA_DATASET_SYS_NAME``)
INTRA_DATASET_SYSTEMATICS: tuple[str, ...] = ("UNCORR", "CORR", "THEORYUNCORR", "THEORYCORR")
_UNCORRELATED = ("UNCORR", "THEORYUNCORR")
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_TOP_PATTERN = re.compile(r"^(ATLAS_CMS|ATLAS|CMS)_(tt|t_sch|t_tch|tW|tZ|Whel)")
#: relative tolerance of the symmetry check of theory covariances (``|C - C^T| <= tol max|C|``)
SYMMETRY_RTOL = 1e-8


class SmefitDataset(NamedTuple):
    """One SMEFiT dataset: data, systematics and theory tables at one order.

    Attributes:
        name: dataset name (file stem).
        experiment: ``ATLAS``, ``CMS``, ``ATLAS+CMS``, ``LEP``, ... (from the name prefix).
        data_central: measured values, shape ``(N,)``.
        stat: statistical uncertainties, ``(N,)``.
        systematics: absolute systematic uncertainties, ``(S, N)`` (row k = systematic k).
        sys_names: the ``S`` systematic names.
        sys_type: the ``S`` types, ``ADD`` or ``MULT``.
        best_sm: best SM prediction, ``(N,)`` (the SM baseline of the fit).
        sm_order: SM prediction at ``order`` (the ``SM`` entry of the table), ``(N,)``.
        linear: ``{"OX": (N,)}`` linear terms at ``order``.
        quadratic: ``{"OX*OY": (N,)}`` quadratic terms (empty when ``use_quad=False``).
        theory_cov: theory covariance, ``(N, N)`` (zeros when the file has none).
        luminosity: integrated luminosity in fb^-1 (``nan`` when missing).
        units: units of the data.
        order: the perturbative order of the tables.
        sources: ``(commondata path, theory path)``.
    """

    name: str
    experiment: str
    data_central: np.ndarray
    stat: np.ndarray
    systematics: np.ndarray
    sys_names: tuple[str, ...]
    sys_type: tuple[str, ...]
    best_sm: np.ndarray
    sm_order: np.ndarray
    linear: dict[str, np.ndarray]
    quadratic: dict[str, np.ndarray]
    theory_cov: np.ndarray
    luminosity: float
    units: str
    order: str
    sources: tuple[str, str]

    @property
    def n_data(self) -> int:
        """Number of data points ``N``."""
        return int(self.data_central.shape[0])

    @property
    def operators(self) -> tuple[str, ...]:
        """Operators (``OX``) with a linear or quadratic term in the tables."""
        ops = set(self.linear)
        for key in self.quadratic:
            ops.update(key.split("*"))
        return tuple(sorted(ops))

    def systematics_t0(self, *, use_t0: bool = True) -> np.ndarray:
        """Systematics with ``MULT`` rows rescaled to the SM (t0 prescription), ``(S, N)``."""
        sys = self.systematics.copy()
        if use_t0:
            mult = np.array([t == "MULT" for t in self.sys_type], dtype=bool)
            if mult.any():
                sys[mult] = sys[mult] / self.data_central * self.best_sm
        return sys


def _experiment(name: str) -> str:
    if name.startswith("ATLAS_CMS"):
        return "ATLAS+CMS"
    prefix = name.split("_", 1)[0]
    return "LEP" if prefix.startswith("LEP") else prefix


def available_datasets(database: str | Path) -> tuple[str, ...]:
    """Names of the datasets with both a commondata YAML and a theory JSON in ``database``.

    Example:
        >>> available_datasets("/nonexistent")
        ()
    """
    db = Path(database)
    data = {p.stem for p in (db / "commondata").glob("*.yaml")}
    theory = {p.stem for p in (db / "theory").glob("*.json")}
    return tuple(sorted(data & theory))


def available_orders(database: str | Path, name: str) -> tuple[str, ...]:
    """Orders (``LO``, ``NLO_QCD``) with a table in ``theory/<name>.json``.

    Example:
        >>> available_orders("../shared/data/smefit_database", "LEP1_EWPOs_2006")  # doctest: +SKIP
        ('LO',)
    """
    path = Path(database) / "theory" / f"{name}.json"
    if not path.is_file():
        raise _missing_dataset(Path(database), name, path)
    theory = _read_json(path)
    return tuple(o for o in ORDERS if o in theory)


def top_quark_datasets(database: str | Path) -> tuple[str, ...]:
    """The LHC top-quark datasets of ``database`` (ttbar, ttV, tta, ttbb, tttt, single top, tW,
    tZ, W helicity), selected by name.

    Example:
        >>> top_quark_datasets("/nonexistent")
        ()
    """
    return tuple(n for n in available_datasets(database) if _TOP_PATTERN.match(n))


def _read_yaml(path: Path) -> dict:
    return read_document(path, error=DataError, what="SMEFiT data file", loader=_YAML_LOADER)


def _read_json(path: Path) -> dict:
    return read_document(path, error=DataError, what="SMEFiT theory table")


def _field(content: dict, key: str, where: Path) -> object:
    if key not in content:
        raise DataError(f"field {key!r} is missing", where=str(where),
                        hint=f"fields present: {sorted(content)}")
    return content[key]


def _count(content: dict, key: str, where: Path, *, minimum: int) -> int:
    value = _field(content, key, where)
    integral = isinstance(value, float) and value.is_integer()
    if isinstance(value, bool) or not (isinstance(value, int) or integral):
        raise DataError(f"must be an integer, got {value!r}", where=f"{where}: {key}",
                        hint=f"write the number of {'data points' if key == 'num_data' else 'systematics'}"
                             " as a plain integer, e.g. 3")
    number = int(value)  # type: ignore[arg-type]
    if number < minimum:
        raise DataError(f"must be >= {minimum}, got {number}", where=f"{where}: {key}")
    return number


def _vector(value: object, n: int, where: str) -> np.ndarray:
    try:
        arr = np.atleast_1d(np.asarray(value, dtype=np.float64))
    except (TypeError, ValueError) as exc:
        raise DataError(f"is not a list of numbers ({exc})", where=where) from exc
    if arr.ndim != 1:
        raise DataError(f"must be a flat list, got shape {arr.shape}", where=where)
    if arr.shape[0] != n:
        raise DataError(f"has {arr.shape[0]} entries, expected {n} (num_data)", where=where,
                        hint="every array must have exactly one entry per data point; a single "
                             "value is not repeated over the bins")
    if not np.all(np.isfinite(arr)):
        raise DataError(f"contains NaN or infinite values at positions "
                        f"{np.flatnonzero(~np.isfinite(arr)).tolist()}", where=where)
    return arr


def _strings(value: object, n: int, where: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else list(value or [])
    if len(items) != n:
        raise DataError(f"has {len(items)} entries, expected {n} (num_sys)", where=where)
    return tuple(str(v) for v in items)


def check_dataset_name(database: str | Path, name: object, *, where: str,
                       available: Sequence[str] | None = None) -> str:
    """Check that ``name`` is a plain dataset name present in ``database``.

    A name is the stem of ``commondata/<name>.yaml`` and ``theory/<name>.json``; path separators
    and ``..`` are refused so that a name cannot point to a file outside the database.

    Args:
        database: the SMEFiT database folder.
        name: the dataset name to check.
        where: the file and field shown in the error.
        available: the database's datasets, when already listed (:func:`available_datasets`).

    Returns:
        The name.

    Raises:
        DataError: not a string, a path instead of a name, or not in the database (with close
            names).

    Example:
        >>> check_dataset_name("/nonexistent", "../X", where="card.yaml: prediction")
        Traceback (most recent call last):
        ...
        smeft_pyhf.exceptions.DataError: card.yaml: prediction: '../X' is a path, not a dataset name. Hint: give the name of a dataset in /nonexistent (the stem of commondata/<name>.yaml)
    """
    db = Path(database)
    if not isinstance(name, str) or not name.strip():
        raise DataError(f"expected a dataset name, got {name!r}", where=where,
                        hint=f"give the name of a dataset in {db}")
    if "/" in name or "\\" in name or ".." in name or name.startswith("."):
        raise DataError(f"{name!r} is a path, not a dataset name", where=where,
                        hint=f"give the name of a dataset in {db} (the stem of "
                             "commondata/<name>.yaml)")
    names = available_datasets(db) if available is None else available
    if name not in names:
        close = difflib.get_close_matches(name, list(names), n=5, cutoff=0.6)
        hint = (f"close names: {', '.join(close)}" if close else
                f"{len(names)} datasets in {db}; see {db / 'commondata'}")
        raise DataError(f"dataset {name!r} is not in the database {db}", where=where, hint=hint)
    return name


def _missing_dataset(db: Path, name: str, missing: Path) -> DataError:
    close = difflib.get_close_matches(name, available_datasets(db), n=5, cutoff=0.6)
    hint = f"close names: {', '.join(close)}" if close else f"see the files in {db / 'commondata'}"
    return DataError(f"dataset {name!r} not found (no file {missing.name})", where=str(missing),
                     hint=hint)


def _statistical_errors(data: dict[str, Any], n: int, dw: str) -> np.ndarray:
    """The ``statistical_error`` entries (zeros when absent; negative ones made positive)."""
    stat = (np.zeros(n) if "statistical_error" not in data else
            _vector(data["statistical_error"], n, f"{dw}: statistical_error"))
    if np.any(stat < 0):
        # Only stat**2 enters the covariance (as in SMEFiT's covmat), so the sign carries no
        # information; the public SMEFiT database has such entries (ATLAS_CMS_SSinc_RunI).
        log.warning("%s: statistical_error has negative entries at positions %s; only their "
                    "square enters the covariance, their absolute value is used", dw,
                    np.flatnonzero(stat < 0).tolist())
        stat = np.abs(stat)
    return stat


def _systematics(data: dict[str, Any], n_sys: int, n: int, data_path: Path,
                 ) -> tuple[np.ndarray, tuple[str, ...], tuple[str, ...]]:
    """The ``(num_sys, num_data)`` systematics table, their names and types (ADD/MULT)."""
    if n_sys <= 0:
        return np.zeros((0, n)), (), ()
    dw = str(data_path)
    raw = np.asarray(_field(data, "systematics", data_path), dtype=object)
    try:
        sys = np.asarray(raw.tolist(), dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"is not a rectangular table of numbers ({exc})",
                        where=f"{dw}: systematics") from exc
    if sys.size != n_sys * n:
        raise DataError(f"has {sys.size} numbers (shape {sys.shape}), cannot be reshaped to "
                        f"(num_sys, num_data) = ({n_sys}, {n})", where=f"{dw}: systematics")
    if sys.ndim == 2 and sys.shape == (n, n_sys) and n != n_sys:
        raise DataError(f"has shape {sys.shape} = (num_data, num_sys); expected "
                        f"(num_sys, num_data) = ({n_sys}, {n})", where=f"{dw}: systematics",
                        hint="row k must hold systematic k for all data points")
    sys = sys.reshape(n_sys, n)
    if not np.all(np.isfinite(sys)):
        raise DataError("contains NaN or infinite values", where=f"{dw}: systematics")
    names = _strings(_field(data, "sys_names", data_path), n_sys, f"{dw}: sys_names")
    types = _strings(_field(data, "sys_type", data_path), n_sys, f"{dw}: sys_type")
    bad = sorted(set(types) - {"ADD", "MULT"})
    if bad:
        raise DataError(f"unknown systematic types {bad}", where=f"{dw}: sys_type",
                        hint="use ADD or MULT")
    return sys, names, types


def _eft_tables(theory: dict[str, Any], order: str, n: int, tw: str, best_sm: np.ndarray, *,
                use_quad: bool) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The same-order SM prediction and the linear and quadratic EFT terms at ``order``
    (every entry is checked; the quadratic ones are kept only with ``use_quad``)."""
    if order not in theory:
        present = [k for k in ORDERS if k in theory]
        raise DataError(f"has no {order!r} table", where=f"{tw}: {order}",
                        hint=f"orders available for this dataset: {present}")
    table = theory[order]
    if not isinstance(table, dict):
        raise DataError("must be an object of operator -> list", where=f"{tw}: {order}")
    if "SM" in table:
        sm_order = _vector(table["SM"], n, f"{tw}: {order}.SM")
    else:
        log.warning("%s: no %s.SM entry; using best_sm as the same-order SM", tw, order)
        sm_order = best_sm.copy()
    linear: dict[str, np.ndarray] = {}
    quadratic: dict[str, np.ndarray] = {}
    for key, values in table.items():
        if key == "SM":
            continue
        vec = _vector(values, n, f"{tw}: {order}.{key}")
        if "*" in key:
            if use_quad:
                quadratic[key] = vec
        else:
            linear[key] = vec
    return sm_order, linear, quadratic


def _theory_covariance(theory: dict[str, Any], n: int, tw: str) -> np.ndarray:
    """The ``theory_cov_current`` (else ``theory_cov``) matrix, checked; zeros when absent."""
    cov_key = "theory_cov_current" if "theory_cov_current" in theory else "theory_cov"
    if cov_key not in theory:
        log.debug("%s: no theory covariance", tw)
        return np.zeros((n, n))
    try:
        theory_cov = np.asarray(theory[cov_key], dtype=np.float64).reshape(n, n)
    except (TypeError, ValueError) as exc:
        raise DataError(f"is not an {n} x {n} matrix ({exc})",
                        where=f"{tw}: {cov_key}") from exc
    if not np.all(np.isfinite(theory_cov)):
        raise DataError("contains NaN or infinite values", where=f"{tw}: {cov_key}")
    return _symmetric(theory_cov, f"{tw}: {cov_key}")


def load_smefit_dataset(database: str | Path, name: str, *, order: Order = "NLO_QCD",
                        use_quad: bool = True) -> SmefitDataset:
    """Load one SMEFiT dataset and its theory tables.

    Args:
        database: folder holding ``commondata/`` and ``theory/``.
        name: dataset name, e.g. ``ATLAS_ttZ_13TeV_pTZ``.
        order: perturbative order of the EFT tables, ``LO`` or ``NLO_QCD``.
        use_quad: keep the quadratic (``Oa*Ob``) terms.

    Returns:
        The :class:`SmefitDataset`.

    Raises:
        DataError: a name that is a path, missing dataset (close names in the hint), missing
            field, ``num_data``/``num_sys`` not an integer, NaN, an array whose length is not
            ``num_data`` (a single value is not repeated over the bins), systematics that do not
            reshape to ``(num_sys, num_data)``, a theory covariance that is not symmetric
            within rounding (:data:`SYMMETRY_RTOL`) or has negative variances, unknown order.
            Negative ``statistical_error`` entries are logged and their absolute value is used
            (only the square enters the covariance).
        InputError: unreadable or malformed file.

    Example:
        >>> ds = load_smefit_dataset("../shared/data/smefit_database", "ATLAS_ttZ_13TeV_pTZ")  # doctest: +SKIP
        >>> ds.n_data, ds.experiment                                                         # doctest: +SKIP
        (7, 'ATLAS')
    """
    db = Path(database)
    if not isinstance(name, str) or not name or "/" in name or "\\" in name or ".." in name:
        raise DataError(f"{name!r} is not a dataset name", where=str(db),
                        hint="give the stem of a file commondata/<name>.yaml of the database")
    if order not in ORDERS:
        raise DataError(f"unknown order {order!r}", where=f"{name}: order",
                        hint=f"choose one of {list(ORDERS)}")
    data_path = db / "commondata" / f"{name}.yaml"
    theory_path = db / "theory" / f"{name}.json"
    for path in (data_path, theory_path):
        if not path.is_file():
            raise _missing_dataset(db, name, path)
    data = _read_yaml(data_path)
    theory = _read_json(theory_path)
    dw, tw = str(data_path), str(theory_path)

    n = _count(data, "num_data", data_path, minimum=1)
    n_sys = _count(data, "num_sys", data_path, minimum=0)
    central = _vector(_field(data, "data_central", data_path), n, f"{dw}: data_central")
    stat = _statistical_errors(data, n, dw)
    sys, names, types = _systematics(data, n_sys, n, data_path)
    best_sm = _vector(_field(theory, "best_sm", theory_path), n, f"{tw}: best_sm")
    sm_order, linear, quadratic = _eft_tables(theory, order, n, tw, best_sm, use_quad=use_quad)
    theory_cov = _theory_covariance(theory, n, tw)
    lumi = data.get("luminosity")
    return SmefitDataset(
        name=name, experiment=_experiment(name), data_central=central, stat=stat,
        systematics=sys, sys_names=names, sys_type=types, best_sm=best_sm, sm_order=sm_order,
        linear=linear, quadratic=quadratic, theory_cov=theory_cov,
        luminosity=float(lumi) if isinstance(lumi, (int, float)) else float("nan"),
        units=str(data.get("units", "")), order=order, sources=(dw, tw))


def _symmetric(cov: np.ndarray, where: str) -> np.ndarray:
    """Check that a covariance is symmetric within rounding and has non-negative variances."""
    diag = np.diag(cov)
    if np.any(diag < 0):
        bad = np.flatnonzero(diag < 0).tolist()
        raise DataError(f"has negative variances on the diagonal at positions {bad}",
                        where=where, hint="a covariance has the squared uncertainties on its "
                                          "diagonal")
    asym = np.abs(cov - cov.T)
    scale = float(np.abs(cov).max()) if cov.size else 0.0
    if asym.size and float(asym.max()) > SYMMETRY_RTOL * scale:
        i, j = np.unravel_index(int(np.argmax(asym)), asym.shape)
        raise DataError(f"is not symmetric: entry [{i}][{j}] = {cov[i, j]:.6g} but "
                        f"[{j}][{i}] = {cov[j, i]:.6g}", where=where,
                        hint="write the full symmetric N x N matrix (row i = covariances of "
                             "point i)")
    return 0.5 * (cov + cov.T)


def load_smefit_datasets(database: str | Path, names: Sequence[str | tuple[str, str]], *,
                         order: Order = "NLO_QCD",
                         use_quad: bool = True) -> tuple[SmefitDataset, ...]:
    """Load several datasets; an entry may be ``(name, order)`` to override ``order``.

    Example:
        >>> load_smefit_datasets("/tmp", [])
        ()
    """
    out = []
    for entry in names:
        name, ds_order = (entry, order) if isinstance(entry, str) else entry
        out.append(load_smefit_dataset(database, name, order=ds_order,  # type: ignore[arg-type]
                                       use_quad=use_quad))
    return tuple(out)


def dataset_covariance(dataset: SmefitDataset, *, use_t0: bool = True,
                       use_theory_cov: bool = True) -> np.ndarray:
    """Covariance of one dataset alone (experimental, t0, plus theory), ``(N, N)``.

    Example:
        >>> ds = load_smefit_dataset("../shared/data/smefit_database", "ATLAS_t_sch_13TeV_inc")  # doctest: +SKIP
        >>> dataset_covariance(ds)                                                          # doctest: +SKIP
        array([[11.3097...]])
    """
    return combined_covariance([dataset], use_t0=use_t0, use_theory_cov=use_theory_cov)


def combined_covariance(datasets: Sequence[SmefitDataset], *, use_t0: bool = True,
                        use_theory_cov: bool = True, correlate_named: bool = True,
                        check: bool = True) -> np.ndarray:
    """Covariance of the concatenated datasets, as SMEFiT's ``covmat_from_systematics``.

    Args:
        datasets: the datasets, in the order of the concatenated data vector.
        use_t0: rescale ``MULT`` systematics to the SM prediction (t0 prescription).
        use_theory_cov: add each dataset's theory covariance (block diagonal).
        correlate_named: correlate systematics with the same special name across datasets;
            ``False`` gives the block-diagonal matrix (each dataset separately).
        check: raise :class:`DataError` when the matrix is not positive definite.

    Returns:
        The ``(N_total, N_total)`` covariance.

    Example:
        >>> combined_covariance([]).shape
        (0, 0)
    """
    sizes = [ds.n_data for ds in datasets]
    total = int(sum(sizes))
    cov = np.zeros((total, total))
    named: dict[tuple[str, int], np.ndarray] = {}
    start = 0
    for ds, size in zip(datasets, sizes, strict=True):
        block = slice(start, start + size)
        sys = ds.systematics_t0(use_t0=use_t0)
        diag = ds.stat**2
        seen: dict[str, int] = {}
        for row, name in zip(sys, ds.sys_names, strict=True):
            if name in _UNCORRELATED:
                diag = diag + row**2
            elif name in INTRA_DATASET_SYSTEMATICS or not correlate_named:
                cov[block, block] += np.outer(row, row)
            else:
                k = seen.get(name, 0)
                seen[name] = k + 1
                column = named.setdefault((name, k), np.zeros(total))
                column[block] = row
        cov[block, block] += np.diag(diag)
        if use_theory_cov:
            cov[block, block] += ds.theory_cov
        start += size
    for column in named.values():
        cov += np.outer(column, column)
    if check and total:
        _check_positive_definite(cov, datasets, sizes)
    return cov


def _check_positive_definite(cov: np.ndarray, datasets: Sequence[SmefitDataset],
                             sizes: Sequence[int]) -> None:
    try:
        np.linalg.cholesky(cov)
        return
    except np.linalg.LinAlgError:
        pass
    bad = []
    start = 0
    for ds, size in zip(datasets, sizes, strict=True):
        block = cov[start:start + size, start:start + size]
        if size and np.linalg.eigvalsh(block).min() <= 0:
            bad.append(ds.name)
        start += size
    names = bad or [ds.name for ds in datasets]
    raise DataError(f"covariance is not positive definite (datasets: {', '.join(names)})",
                    where=", ".join(ds.sources[0] for ds in datasets if ds.name in names),
                    hint="check statistical_error/systematics for zero or duplicated rows, or "
                         "switch off the t0 prescription/theory covariance to locate the cause")

"""Fit runcards: read, validate and resolve ``smeft-pyhf fit`` configurations.

A runcard is a YAML file (schema ``smeft_pyhf/schemas/runcard.schema.json``,
``runcard_version: 1``)::

    runcard_version: 1
    name: top_example
    database: database                 # SMEFiT-format folder, relative to this file
    datasets:
      - EX_ttbar_13TeV_mtt            # a SMEFiT dataset (commondata/ + theory/)
      - {name: EX_tZ_13TeV, order: LO}
      - {card: cards/ttZ.yaml}         # a measurement card written by 'smeft-pyhf ingest'
    coefficients:
      ctG: {min: -1.0, max: 1.0}
      ctZ: {min: -8.0, max: 8.0}
      cQt8: {value: 0.0}               # fixed
      ctW2: {constrain: {ctW: 1.0}}    # dependent: ctW2 = 1.0 * ctW
    order: NLO_QCD                     # LO | NLO_QCD
    linear_only: false                 # drop the quadratic terms
    rho: 0.99                          # correlation of same-category systematics
    theory: profiled                   # cards' flat theory: profiled | marginalised | gaussian | nuisance
    scale_theory: 1.0                  # 0.5: theory uncertainties halved
    device: cpu                        # cpu | cuda | auto
    dtype: float32                     # sampler precision
    seed: 1
    sampler:                           # partial overrides of the paper defaults, per step
      paper: top                       # Table 5 column to start from: top | higgs | combined
      train: {n_batches: 50}
    output: smeft_pyhf_results
    workers: null                      # worker processes for the likelihood (null: this one)
    scheduler: null                    # address of a running scheduler (null: none)

Coefficient names follow the SMEFiT convention with a ``c`` prefix (``OtG`` -> ``ctG``); the
``O`` spelling is accepted too. When ``database`` is absent, the environment variable
``SMEFT_PYHF_DATABASE`` is used.

A SMEFiT runcard (keys ``coefficients``, ``datasets`` and ``result_ID``/``use_quad``) is read
directly through :func:`smeft_pyhf.likelihood.smefit_runcard.read_smefit_runcard`; see
:func:`load_runcard`.

Validation happens in three stages: YAML parsing (:mod:`smeft_pyhf.formats.reader`; ``1e-3``
is a number there), the JSON schema (:func:`smeft_pyhf.fit.sampler_block.runcard_schema`: keys,
types and choices, the ``sampler`` block's steps and settings included), then semantic checks
(finite ranges with ``min < max`` and finite fixed values, datasets present in the database,
measurement cards valid with their prediction and replaced datasets in the database,
coefficients present in at least one theory table, the sampler settings accepted by its
configuration, the sampler's estimated memory and number of likelihood evaluations below
generous ceilings); any failure raises one :class:`~smeft_pyhf.exceptions.ConfigError` (a
broken card: :class:`~smeft_pyhf.exceptions.DataError`; an unreadable file:
:class:`~smeft_pyhf.exceptions.InputError`) naming the file, the field and the valid choices.
The types (:class:`~smeft_pyhf.formats.runcard.Runcard`,
:class:`~smeft_pyhf.formats.runcard.DatasetSpec`) live in :mod:`smeft_pyhf.formats.runcard`.

Example:
    >>> from smeft_pyhf._resources import examples_dir
    >>> card = load_runcard(examples_dir() / "default_runcard.yaml")
    >>> card.free_names[:2]
    ('ctG', 'ctZ')
"""

from __future__ import annotations

import difflib
import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from ..exceptions import ConfigError, DataError
from ..formats.coefficients import CoefficientSpec, coefficient_name
from ..formats.reader import read_document, validate_document
from ..formats.runcard import (
    DATABASE_ENV,
    RUNCARD_VERSION,
    DatasetSpec,
    Runcard,
    is_smefit_runcard,
    normalise_order,
    resolve_database,
    runcard_from_dict,
)
from .sampler_block import build_sampler_config, runcard_schema

log = logging.getLogger(__name__)

__all__ = [
    "DATABASE_ENV",
    "RUNCARD_VERSION",
    "DatasetSpec",
    "Runcard",
    "build_sampler_config",
    "check_runcard",
    "database_datasets",
    "is_smefit_runcard",
    "load_runcard",
    "parse_runcard",
    "theory_operators",
]


# --------------------------------------------------------------------------- helpers
def _suggest(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=3, cutoff=0.5)
    return f"did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def _hint(word: str, choices: Sequence[str], what: str) -> str:
    suggestion = _suggest(word, choices)
    shown = ", ".join(sorted(choices)[:30]) + (" ..." if len(choices) > 30 else "")
    return (suggestion + " " if suggestion else "") + f"valid {what}: {shown}"


def database_datasets(database: Path) -> tuple[str, ...]:
    """Names of the datasets with both ``commondata/<name>.yaml`` and ``theory/<name>.json``."""
    common = {p.stem for p in (database / "commondata").glob("*.yaml")}
    theory = {p.stem for p in (database / "theory").glob("*.json")}
    return tuple(sorted(common & theory))


@lru_cache(maxsize=256)
def _theory_table(path: Path, mtime: float) -> tuple[dict[str, tuple[str, ...]], int]:
    """The keys per order of a theory table and its number of points (``best_sm``)."""
    data = read_document(path, error=DataError, what="SMEFiT theory table")
    keys = {
        order: tuple(data[order].keys())
        for order in ("LO", "NLO_QCD")
        if isinstance(data.get(order), dict)
    }
    best_sm = data.get("best_sm")
    return keys, len(best_sm) if isinstance(best_sm, list) else 1


def _theory_keys(path: Path, mtime: float) -> dict[str, tuple[str, ...]]:
    return _theory_table(path, mtime)[0]


def theory_operators(database: Path, dataset: str, order: str = "NLO_QCD") -> frozenset[str]:
    """Coefficient names (``c`` prefix) with a linear or quadratic term in a theory table.

    Example:
        >>> from smeft_pyhf._resources import examples_dir
        >>> sorted(theory_operators(examples_dir() / "database", "EX_tZ_13TeV"))
        ['cpQM', 'ctW', 'ctZ']
    """
    path = database / "theory" / f"{dataset}.json"
    keys = _theory_keys(path, path.stat().st_mtime).get(order, ())
    names: set[str] = set()
    for key in keys:
        if key == "SM":
            continue
        for part in key.split("*"):
            names.add(coefficient_name(part))
    return frozenset(names)


# ------------------------------------------------------------------------- public API
def load_runcard(
    path: str | os.PathLike[str],
    *,
    database: str | os.PathLike[str] | None = None,
    restrict: Literal["none", "available", "top"] = "none",
    validate: bool = True,
) -> Runcard:
    """Read and validate a runcard (ours, or a SMEFiT one).

    Args:
        path: the YAML file.
        database: database folder overriding the runcard's ``database`` (and the environment).
        restrict: for SMEFiT runcards: keep only the datasets present in the database
            (``"available"``) or only the top-quark ones among them (``"top"``); coefficients
            absent from every remaining theory table are then dropped too.
        validate: run the semantic checks against the database (:func:`check_runcard`).

    Raises:
        ConfigError: schema violation or semantic error (one paragraph, file and field named).
        InputError: the file does not exist or is not YAML.

    Example:
        >>> from smeft_pyhf._resources import examples_dir
        >>> load_runcard(examples_dir() / "default_runcard.yaml").order
        'NLO_QCD'
    """
    path = Path(path).resolve()
    data = read_document(path, error=ConfigError, what="runcard",
                         hint="start from smeft_pyhf/examples/default_runcard.yaml")
    if is_smefit_runcard(data):
        return _from_smefit(path, database=database, restrict=restrict, validate=validate)
    return parse_runcard(data, source=path, database=database, validate=validate)


def parse_runcard(
    data: Mapping[str, Any],
    *,
    source: str | os.PathLike[str] | None = None,
    database: str | os.PathLike[str] | None = None,
    validate: bool = True,
) -> Runcard:
    """Validate a runcard given as a dict (paths resolved relative to ``source``'s folder).

    The document is checked against :func:`~smeft_pyhf.fit.sampler_block.runcard_schema`, then
    (with ``validate``) against the database by :func:`check_runcard`.

    Example:
        >>> from smeft_pyhf._resources import examples_dir
        >>> rc = parse_runcard({"runcard_version": 1, "datasets": ["EX_tZ_13TeV"],
        ...                     "coefficients": {"ctZ": {"min": -5, "max": 5}}},
        ...                    database=examples_dir() / "database")
        >>> rc.ranges
        {'ctZ': (-5.0, 5.0)}
    """
    src = Path(source).resolve() if source is not None else None
    where = str(src) if src is not None else "runcard"
    validate_document(dict(data), runcard_schema(), where=where, error=ConfigError)
    runcard = runcard_from_dict(data, source=src, database=database)
    if validate:
        check_runcard(runcard)
    return runcard


def check_runcard(runcard: Runcard) -> None:
    """Semantic checks of a parsed runcard.

    Checks the coefficient ranges (finite, ``min < max``) and fixed values (finite), ``rho`` and
    ``scale_theory``, the dataset names against the database, every measurement card (schema,
    categories, and its ``prediction.smefit_dataset`` and ``prediction.replaces`` datasets
    present in the database), the coefficient names against the theory tables, the sampler
    settings (keys and types) and the sampler's estimated memory and number of likelihood
    evaluations (:func:`smeft_pyhf.sampler.config.check_sampler_costs`).

    Raises:
        ConfigError: the first problem found, with the valid choices.
        DataError: a measurement card that does not follow the card schema.
        InputError: a measurement card that cannot be read.
    """
    where = str(runcard.source) if runcard.source else "runcard"
    _check_coefficient_specs(runcard, where)
    if not 0.0 <= runcard.rho <= 1.0:
        raise ConfigError(f"rho = {runcard.rho} is outside [0, 1]", where=f"{where}: rho")
    if not (math.isfinite(runcard.scale_theory) and runcard.scale_theory >= 0):
        raise ConfigError(f"scale_theory = {runcard.scale_theory} must be a finite number >= 0",
                          where=f"{where}: scale_theory", hint="1 keeps the theory uncertainties")
    db = runcard.database
    known: set[str] = set()
    n_data = 0
    if runcard.smefit_datasets:
        if db is None:
            raise ConfigError(
                "no SMEFiT database given",
                where=f"{where}: database",
                hint=f"add 'database: PATH' to the runcard or set ${DATABASE_ENV}",
            )
        if not (db / "commondata").is_dir() or not (db / "theory").is_dir():
            raise ConfigError(
                f"'{db}' is not a SMEFiT database (needs commondata/ and theory/)",
                where=f"{where}: database",
                hint=f"point 'database' (or ${DATABASE_ENV}) to a folder with commondata/ and theory/",
            )
        available = database_datasets(db)
        seen: set[str] = set()
        for spec in runcard.smefit_datasets:
            assert spec.name is not None
            if spec.name not in available:
                raise ConfigError(
                    f"unknown dataset '{spec.name}' (not in {db})",
                    where=f"{where}: datasets",
                    hint=_hint(spec.name, available, "datasets"),
                )
            if spec.name in seen:
                raise ConfigError(f"dataset '{spec.name}' is listed twice", where=f"{where}: datasets")
            seen.add(spec.name)
            known |= theory_operators(db, spec.name, spec.order or runcard.order)
            n_data += _theory_size(db, spec.name)
    check_names = True
    nuisances: set[tuple[str, str]] = set()
    for card in runcard.cards:
        if not card.is_file():
            raise ConfigError(
                "measurement card not found",
                where=f"{where}: datasets: card {card}",
                hint="card paths are relative to the runcard; write cards with 'smeft-pyhf ingest'",
            )
        linked, process, theory = _check_card(card, db, where)
        n_data += 1
        nuisances |= {(process, category) for category in theory}
        if linked is not None and db is not None:
            known |= theory_operators(db, linked, runcard.order)
        else:
            check_names = False  # cannot check names without the linked theory table
    if not check_names:
        known = set()
    if known:
        for c in runcard.coefficients:
            if c.name not in known:
                raise ConfigError(
                    f"coefficient '{c.name}' has no term in the theory tables of the chosen datasets",
                    where=f"{where}: coefficients: {c.name}",
                    hint=_hint(c.name, sorted(known), "coefficients"),
                )
    config = build_sampler_config(runcard.sampler, where=f"{where}: sampler")
    from ..sampler.config import check_sampler_costs

    dim = len(runcard.free) + (len(nuisances) if runcard.theory == "nuisance" else 0)
    check_sampler_costs(config, dim=dim, n_data=max(n_data, 1),
                        dtype_bytes=8 if runcard.dtype == "float64" else 4,
                        where=f"{where}: sampler")


def _theory_size(database: Path, dataset: str) -> int:
    path = database / "theory" / f"{dataset}.json"
    return _theory_table(path, path.stat().st_mtime)[1]


def _check_card(card: Path, database: Path | None,
                where: str) -> tuple[str | None, str, tuple[str, ...]]:
    """Load a measurement card (schema and categories) and check its datasets against the
    database; returns ``(prediction dataset, process, theory categories)``."""
    from ..formats.card import load_card
    from ..likelihood.smefit_data import check_dataset_name

    loaded = load_card(card)
    prediction = loaded.prediction or {}
    linked = prediction.get("smefit_dataset")
    replaces = prediction.get("replaces") or []
    if database is not None:
        names = database_datasets(database)
        fields = [("prediction.smefit_dataset", linked)] if linked is not None else []
        fields += [(f"prediction.replaces[{i}]", r) for i, r in enumerate(replaces)]
        for field, name in fields:
            try:
                check_dataset_name(database, name, where=f"{card}: {field}", available=names)
            except DataError as err:
                raise ConfigError(err.message, where=err.where,
                                  hint=f"{err.hint}; the card is used by {where}") from err
    process = str((loaded.observable or {}).get("process") or linked or loaded.name)
    return linked, process, tuple(loaded.theory)


def _check_coefficient_specs(runcard: Runcard, where: str) -> None:
    names = [c.name for c in runcard.coefficients]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(
            f"coefficient(s) listed twice: {', '.join(duplicates)}",
            where=f"{where}: coefficients",
            hint="OX and cX name the same coefficient",
        )
    free = {c.name for c in runcard.coefficients if c.is_free}
    for c in runcard.coefficients:
        field = f"{where}: coefficients: {c.name}"
        for key, number in (("min", c.minimum), ("max", c.maximum), ("value", c.value),
                            *((f"constrain: {k}", f) for k, f in c.constrain)):
            if number is not None and not math.isfinite(number):
                raise ConfigError(
                    f"{key} = {number} is not a finite number",
                    where=f"{field}: {key}",
                    hint="the sampler draws its first points inside a finite [min, max]; give "
                    "finite bounds wide enough for the posterior (e.g. {min: -10, max: 10}), "
                    "and fixed values and constraint factors as plain numbers",
                )
        if c.is_free:
            if c.minimum is None or c.maximum is None:
                raise ConfigError(
                    "a free coefficient needs both 'min' and 'max'",
                    where=field,
                    hint="write e.g. {min: -1, max: 1}, or {value: 0} to fix it",
                )
            if not c.minimum < c.maximum:
                raise ConfigError(
                    f"bad range: min ({c.minimum:g}) must be smaller than max ({c.maximum:g})",
                    where=field,
                )
        elif c.value is not None and c.constrain:
            raise ConfigError("give either 'value' or 'constrain', not both", where=field)
        elif c.constrain:
            for other, _ in c.constrain:
                if other not in free:
                    raise ConfigError(
                        f"constraint refers to '{other}', which is not a free coefficient",
                        where=field,
                        hint=_hint(other, sorted(free), "free coefficients"),
                    )
    if not free:
        raise ConfigError(
            "no free coefficient to fit",
            where=f"{where}: coefficients",
            hint="give at least one coefficient a {min, max} range",
        )


# -------------------------------------------------------------------- SMEFiT runcards
def _from_smefit(
    path: Path,
    *,
    database: str | os.PathLike[str] | None,
    restrict: Literal["none", "available", "top"],
    validate: bool,
) -> Runcard:
    from ..likelihood.smefit_runcard import read_smefit_runcard

    selection = read_smefit_runcard(path)
    db = resolve_database(None, database, path.parent)
    if restrict != "none":
        if db is None:
            raise ConfigError(
                "restricting a SMEFiT runcard needs a database",
                where=str(path),
                hint=f"pass --database or set ${DATABASE_ENV}",
            )
        n_before = len(selection.datasets)
        selection = selection.restrict(db, top_only=restrict == "top")
        log.info(
            "SMEFiT runcard %s: kept %d of %d datasets and %d coefficients (%s)",
            path.name,
            len(selection.datasets),
            n_before,
            len(selection.coefficients),
            restrict,
        )
        if not selection.datasets:
            raise ConfigError(
                "no dataset of the SMEFiT runcard is in the database",
                where=str(path),
                hint=f"check --database ({db})",
            )
    order = normalise_order(str(selection.order)) or "NLO_QCD"
    datasets = tuple(
        DatasetSpec(name=name, order=normalise_order(d_order))
        for name, d_order in (_selection_dataset(e) for e in selection.datasets)
    )
    coefficients = tuple(
        _selection_coefficient(item) for item in _selection_coefficients(selection)
    )
    runcard = Runcard(
        datasets=datasets,
        coefficients=coefficients,
        database=db,
        name=str(path.stem),
        order=order,
        linear_only=not bool(selection.use_quad),
        use_t0=bool(selection.use_t0),
        use_theory_cov=bool(selection.use_theory_cov),
        source=path,
        source_format="smefit",
    )
    if validate:
        check_runcard(runcard)
    return runcard


def _selection_dataset(entry: Any) -> tuple[str, str | None]:
    if isinstance(entry, str):
        return entry, None
    if isinstance(entry, Mapping):
        return str(entry["name"]), entry.get("order")
    if isinstance(entry, tuple) and len(entry) == 2 and not hasattr(entry, "_fields"):
        return str(entry[0]), entry[1]
    return str(entry.name), getattr(entry, "order", None)


def _selection_coefficients(selection: Any) -> Iterable[Any]:
    coefficients = getattr(selection, "coefficients", ())
    if isinstance(coefficients, Mapping):
        return [(k, v) for k, v in coefficients.items()]
    return list(coefficients)


def _selection_coefficient(item: Any) -> CoefficientSpec:
    if isinstance(item, tuple) and len(item) == 2 and not hasattr(item, "_fields"):
        name, spec = item
    else:
        name, spec = item.name, item
    get = spec.get if isinstance(spec, Mapping) else (lambda k, d=None: getattr(spec, k, d))
    if isinstance(spec, CoefficientSpec):
        return spec._replace(name=coefficient_name(str(name)))
    constrain = get("constrain", None)
    value = get("value", None)
    cons: tuple[tuple[str, float], ...] | None = None
    if isinstance(constrain, Mapping):
        cons = tuple((coefficient_name(k), float(v)) for k, v in constrain.items())
    elif isinstance(constrain, (list, tuple)) and constrain:
        pairs: list[tuple[str, float]] = []
        for term in constrain:
            if isinstance(term, Mapping):
                for k, v in term.items():
                    factor = v[0] * 1.0 if isinstance(v, (list, tuple)) else float(v)
                    pairs.append((coefficient_name(k), factor))
            elif isinstance(term, (list, tuple)) and len(term) == 2:
                pairs.append((coefficient_name(str(term[0])), float(term[1])))
        cons = tuple(pairs) or None
    elif constrain is True and value is None:
        value = 0.0
    return CoefficientSpec(
        name=coefficient_name(str(name)),
        minimum=None if get("min", None) is None else float(get("min")),
        maximum=None if get("max", None) is None else float(get("max")),
        value=None if value is None or cons is not None else float(value),
        constrain=cons or (),
    )

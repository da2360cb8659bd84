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

Coefficient names follow the SMEFiT convention with a ``c`` prefix (``OtG`` -> ``ctG``); the
``O`` spelling is accepted too. When ``database`` is absent, the environment variable
``SMEFT_PYHF_DATABASE`` is used.

A SMEFiT runcard (keys ``coefficients``, ``datasets`` and ``result_ID``/``use_quad``) is read
directly through :func:`smeft_pyhf.likelihood.smefit_runcard.read_smefit_runcard`; see
:func:`load_runcard`.

Validation happens in three stages: YAML parsing, the JSON schema, then semantic checks
(finite ranges with ``min < max`` and finite fixed values, datasets present in the database,
measurement cards valid with their prediction and replaced datasets in the database,
coefficients present in at least one theory table, sampler settings known and of the type of
their field, the sampler's estimated memory and number of likelihood evaluations below
generous ceilings); any failure raises one :class:`~smeft_pyhf.exceptions.ConfigError` (a
broken card: :class:`~smeft_pyhf.exceptions.DataError`) naming the file, the field and the
valid choices.

Example:
    >>> from smeft_pyhf._resources import examples_dir
    >>> card = load_runcard(examples_dir() / "default_runcard.yaml")
    >>> card.free_names[:2]
    ('ctG', 'ctZ')
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import math
import os
import re
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, get_args

import yaml

from ..exceptions import ConfigError, DataError, InputError
from ..formats.coefficients import CoefficientSpec, coefficient_name

log = logging.getLogger(__name__)

__all__ = [
    "DATABASE_ENV",
    "RUNCARD_VERSION",
    "DatasetSpec",
    "Runcard",
    "apply_overrides",
    "build_sampler_config",
    "database_datasets",
    "is_smefit_runcard",
    "load_runcard",
    "parse_runcard",
    "theory_operators",
]

RUNCARD_VERSION = 1
DATABASE_ENV = "SMEFT_PYHF_DATABASE"
_SCHEMA = Path(__file__).resolve().parents[1] / "schemas" / "runcard.schema.json"

Order = Literal["LO", "NLO_QCD"]
TheoryMode = Literal["profiled", "marginalised", "gaussian", "nuisance"]


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """One input: a SMEFiT dataset (``name``, optional ``order``) or a measurement ``card``."""

    name: str | None = None
    order: Order | None = None
    card: Path | None = None

    def to_dict(self) -> dict[str, Any] | str:
        """Runcard form."""
        if self.card is not None:
            return {"card": str(self.card)}
        if self.order is None:
            return str(self.name)
        return {"name": self.name, "order": self.order}


@dataclasses.dataclass(frozen=True)
class Runcard:
    """A validated, resolved runcard (paths absolute). Build with :func:`load_runcard`.

    Example:
        >>> from smeft_pyhf._resources import examples_dir
        >>> rc = load_runcard(examples_dir() / "default_runcard.yaml")
        >>> rc.replace(scale_theory=0.5).scale_theory
        0.5
    """

    datasets: tuple[DatasetSpec, ...]
    coefficients: tuple[CoefficientSpec, ...]
    database: Path | None = None
    name: str = "fit"
    order: Order = "NLO_QCD"
    linear_only: bool = False
    rho: float = 0.99
    theory: TheoryMode = "profiled"
    scale_theory: float = 1.0
    use_t0: bool = True
    use_theory_cov: bool = True
    device: str = "cpu"
    dtype: Literal["float32", "float64"] = "float32"
    seed: int = 1
    analytic: Literal["auto", "always", "never"] = "auto"
    sampler: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    output: Path = Path("smeft_pyhf_results")
    source: Path | None = None
    source_format: Literal["smeft-pyhf", "smefit"] = "smeft-pyhf"

    @property
    def free(self) -> tuple[CoefficientSpec, ...]:
        """Sampled coefficients, in runcard order."""
        return tuple(c for c in self.coefficients if c.is_free)

    @property
    def free_names(self) -> tuple[str, ...]:
        """Names of the sampled coefficients."""
        return tuple(c.name for c in self.free)

    @property
    def ranges(self) -> dict[str, tuple[float, float]]:
        """``name -> (min, max)`` of the sampled coefficients."""
        return {c.name: (float(c.minimum), float(c.maximum)) for c in self.free}  # type: ignore[arg-type]

    @property
    def smefit_datasets(self) -> tuple[DatasetSpec, ...]:
        """The SMEFiT datasets."""
        return tuple(d for d in self.datasets if d.card is None)

    @property
    def cards(self) -> tuple[Path, ...]:
        """The measurement-card paths."""
        return tuple(d.card for d in self.datasets if d.card is not None)

    def replace(self, **changes: Any) -> Runcard:
        """A copy with ``changes`` applied (no re-validation)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The resolved runcard as a plain dict (stored in the results file)."""
        return {
            "runcard_version": RUNCARD_VERSION,
            "name": self.name,
            "database": None if self.database is None else str(self.database),
            "datasets": [d.to_dict() for d in self.datasets],
            "coefficients": {c.name: c.to_dict() for c in self.coefficients},
            "order": self.order,
            "linear_only": self.linear_only,
            "rho": self.rho,
            "theory": self.theory,
            "scale_theory": self.scale_theory,
            "use_t0": self.use_t0,
            "use_theory_cov": self.use_theory_cov,
            "device": self.device,
            "dtype": self.dtype,
            "seed": self.seed,
            "analytic": self.analytic,
            "sampler": _copy_sampler(self.sampler),
            "output": str(self.output),
            "source": None if self.source is None else str(self.source),
            "source_format": self.source_format,
        }


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
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
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


def _normalise_order(order: str | None) -> Order | None:
    if order is None:
        return None
    return "NLO_QCD" if order in ("NLO", "NLO_QCD") else "LO"


def _schema_validate(data: Any, where: str) -> None:
    import jsonschema

    schema = json.loads(_SCHEMA.read_text(encoding="utf-8"))
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(data), key=lambda e: (len(e.absolute_path), e.path))
    if not errors:
        return
    err = errors[0]
    field = "/".join(str(p) for p in err.absolute_path) or "(top level)"
    # friendlier messages for the common mistakes
    if err.validator == "additionalProperties":
        extra = sorted(set(err.instance) - set(err.schema.get("properties", {})))
        valid = sorted(err.schema.get("properties", {}))
        bad = extra[0] if extra else "?"
        raise ConfigError(
            f"unknown key '{bad}' in {field}",
            where=where,
            hint=_hint(bad, valid, "keys"),
        )
    if err.validator == "oneOf" and isinstance(err.instance, dict):
        raise ConfigError(
            f"invalid dataset entry at {field}: {err.instance!r}",
            where=where,
            hint="write a SMEFiT dataset as a name or {name: ..., order: LO|NLO_QCD}, "
            "a measurement card as {card: path}",
        )
    if err.validator == "required":
        raise ConfigError(f"{err.message} (at {field})", where=where, hint="add the missing key")
    if err.validator == "enum":
        raise ConfigError(
            f"invalid value {err.instance!r} for {field}",
            where=where,
            hint="valid choices: " + ", ".join(map(str, err.validator_value)),
        )
    raise ConfigError(f"invalid value at {field}: {err.message}", where=where)


# ------------------------------------------------------------------------- public API
def is_smefit_runcard(data: Mapping[str, Any]) -> bool:
    """True for a SMEFiT runcard (``coefficients`` + ``datasets`` + ``result_ID``/``use_quad``)."""
    return (
        isinstance(data, Mapping)
        and "runcard_version" not in data
        and "coefficients" in data
        and "datasets" in data
        and ("result_ID" in data or "use_quad" in data)
    )


def _read_yaml(path: Path) -> Any:
    if not path.is_file():
        raise InputError("runcard not found", where=str(path), hint="check the path")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        place = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(
            f"malformed YAML{place}: {problem}",
            where=str(path),
            hint="check indentation and quoting",
        ) from err


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
        validate: run the semantic checks against the database.

    Raises:
        ConfigError: malformed YAML, schema violation or semantic error (one paragraph).
        InputError: the file does not exist.

    Example:
        >>> from smeft_pyhf._resources import examples_dir
        >>> load_runcard(examples_dir() / "default_runcard.yaml").order
        'NLO_QCD'
    """
    path = Path(path).resolve()
    data = _read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(
            "a runcard must be a YAML mapping (key: value lines)",
            where=str(path),
            hint="start from smeft_pyhf/examples/default_runcard.yaml",
        )
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
    base = src.parent if src is not None else Path.cwd()
    _schema_validate(dict(data), where)

    db = _resolve_database(data.get("database"), database, base, where)
    datasets = []
    for entry in data["datasets"]:
        if isinstance(entry, str):
            datasets.append(DatasetSpec(name=entry))
        elif "card" in entry:
            datasets.append(DatasetSpec(card=(base / entry["card"]).resolve()))
        else:
            datasets.append(DatasetSpec(name=entry["name"], order=_normalise_order(entry.get("order"))))
    coefficients = []
    for raw_name, spec in data["coefficients"].items():
        constrain = spec.get("constrain")
        coefficients.append(
            CoefficientSpec(
                name=coefficient_name(raw_name),
                minimum=None if spec.get("min") is None else float(spec["min"]),
                maximum=None if spec.get("max") is None else float(spec["max"]),
                value=None if spec.get("value") is None else float(spec["value"]),
                constrain=()
                if constrain is None
                else tuple((coefficient_name(k), float(v)) for k, v in constrain.items()),
            )
        )
    runcard = Runcard(
        datasets=tuple(datasets),
        coefficients=tuple(coefficients),
        database=db,
        name=str(data.get("name", src.stem if src is not None else "fit")),
        order=_normalise_order(data.get("order", "NLO_QCD")) or "NLO_QCD",
        linear_only=bool(data.get("linear_only", False)),
        rho=float(data.get("rho", 0.99)),
        theory=data.get("theory", "profiled"),
        scale_theory=float(data.get("scale_theory", 1.0)),
        use_t0=bool(data.get("use_t0", True)),
        use_theory_cov=bool(data.get("use_theory_cov", True)),
        device=str(data.get("device", "cpu")),
        dtype=data.get("dtype", "float32"),
        seed=int(data.get("seed", 1)),
        analytic=data.get("analytic", "auto"),
        sampler=_copy_sampler(data.get("sampler", {})),
        output=Path(data.get("output", "smeft_pyhf_results")),
        source=src,
    )
    if validate:
        check_runcard(runcard)
    return runcard


def _resolve_database(
    value: str | None, override: str | os.PathLike[str] | None, base: Path, where: str
) -> Path | None:
    if override is not None:
        return Path(override).resolve()
    if value is not None:
        return (base / value).resolve()
    env = os.environ.get(DATABASE_ENV)
    return Path(env).resolve() if env else None


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


# ------------------------------------------------------------------- sampler settings
def _default_sampler_class() -> type:
    try:
        from ..sampler.pipeline import SamplerConfig
    except ImportError:  # pragma: no cover - only while the pipeline module is missing
        return _step_configs()
    return SamplerConfig


@lru_cache(maxsize=1)
def _step_configs() -> type:
    """Aggregate of the per-step configs (used to validate keys without the pipeline)."""
    from ..sampler.config import FlowConfig, PrescaleConfig, PretrainConfig, TrainConfig
    from ..sampler.profiling import ProfileConfig
    from ..sampler.sampling import SampleConfig

    return dataclasses.make_dataclass(
        "StepConfigs",
        [
            ("prescale", PrescaleConfig, dataclasses.field(default_factory=PrescaleConfig)),
            ("flow", FlowConfig, dataclasses.field(default_factory=FlowConfig)),
            ("pretrain", PretrainConfig, dataclasses.field(default_factory=PretrainConfig)),
            ("train", TrainConfig, dataclasses.field(default_factory=TrainConfig)),
            ("sample", SampleConfig, dataclasses.field(default_factory=SampleConfig)),
            ("profile", ProfileConfig, dataclasses.field(default_factory=ProfileConfig)),
        ],
        frozen=True,
    )


def _copy_sampler(block: Mapping[str, Any]) -> dict[str, Any]:
    """A plain copy of a sampler block: per-step mappings and top-level scalars (``paper``,
    ``range_nsigma``, ...)."""
    return {k: dict(v) if isinstance(v, Mapping) else v for k, v in block.items()}


def build_sampler_config(
    overrides: Mapping[str, Any] | None,
    *,
    base: Any = None,
    config_class: type | None = None,
    where: str = "sampler",
) -> Any:
    """Apply partial per-step overrides to the paper-default sampler configuration.

    The key ``paper`` picks the column of the paper's Table 5 to start from (``top``, the
    default; ``higgs``; ``combined``, for fits of 40-50 coefficients).

    Args:
        overrides: ``{step: {field: value}}`` (``step`` in the fields of the config class).
        base: configuration to start from (default: ``config_class()``).
        config_class: the aggregate dataclass (default: ``sampler.pipeline.SamplerConfig``).
        where: file/field shown in errors.

    Raises:
        ConfigError: unknown step or field (with the valid ones and a close match), or a value
            of the wrong type.
    """
    from ..sampler.config import Sector

    overrides = dict(overrides or {})
    column = overrides.pop("paper", None)
    if base is None:
        cls = config_class or _default_sampler_class()
        columns = get_args(Sector)
        if column is None:
            base = cls()
        elif column in columns and hasattr(cls, "paper"):
            base = cls.paper(column)
        else:
            raise ConfigError(f"unknown paper column {column!r}", where=f"{where}: paper",
                              hint=f"use one of {', '.join(columns)} (Table 5)")
    return apply_overrides(base, overrides, where=where)


def apply_overrides(config: Any, overrides: Mapping[str, Any], *, where: str) -> Any:
    """Recursively ``dataclasses.replace`` a (frozen) dataclass with a nested dict.

    Every value is checked against the field's type annotation (``int``, ``float``, ``bool``,
    ``str``, ``Literal[...]``, ``X | None``, ``tuple[float, float]``, nested dataclasses):
    integers take integral numbers, floats take finite numbers (``inf`` only where the field's
    metadata says ``allow_inf``), and numbers written as text (YAML reads ``1e-3`` as a string)
    are read as numbers. The config's own checks (``__post_init__``) run afterwards; their
    errors are raised again with ``where``.

    Raises:
        ConfigError: unknown setting (with close names), a value of the wrong type, or a value
            the config refuses, naming ``where`` and the setting.

    Example:
        >>> @dataclasses.dataclass(frozen=True)
        ... class Step:
        ...     lr: float = 1e-3
        ...     batches: int = 100
        ...     chunk: int | None = None
        >>> apply_overrides(Step(), {"batches": 10, "lr": "1e-2", "chunk": 64}, where="x")
        Step(lr=0.01, batches=10, chunk=64)
        >>> apply_overrides(Step(), {"chunk": "abc"}, where="rc.yaml: sampler: step")
        Traceback (most recent call last):
        ...
        smeft_pyhf.exceptions.ConfigError: rc.yaml: sampler: step: chunk: expected an integer or null, got 'abc'
    """
    if not dataclasses.is_dataclass(config):
        raise ConfigError(f"'{where}' takes a value, not a mapping", where=where)
    fields = {f.name: f for f in dataclasses.fields(config)}
    hints = _field_types(config)
    changes: dict[str, Any] = {}
    for key, value in overrides.items():
        if key not in fields:
            raise ConfigError(
                f"unknown setting '{key}'",
                where=where,
                hint=_hint(key, sorted(fields), "settings here"),
            )
        current = getattr(config, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, Mapping):
                raise ConfigError(f"'{key}' needs a mapping of settings", where=f"{where}: {key}")
            changes[key] = apply_overrides(current, value, where=f"{where}: {key}")
        else:
            changes[key] = _coerce(
                hints.get(key), value, where=f"{where}: {key}", current=current,
                allow_inf=bool(fields[key].metadata.get("allow_inf", False)),
            )
    try:
        return dataclasses.replace(config, **changes)
    except ConfigError as err:  # a check of the config itself: name the runcard
        raise ConfigError(err.message, where=where, hint=err.hint) from err
    except (TypeError, ValueError) as err:
        raise ConfigError(f"invalid settings ({err})", where=where) from err


def _field_types(config: Any) -> dict[str, Any]:
    """The resolved field annotations of a dataclass (empty when they cannot be resolved)."""
    try:
        return typing.get_type_hints(type(config))
    except (NameError, TypeError, AttributeError):
        return {}


_NUMBER_TEXT = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*")


def _describe(annotation: Any) -> str:
    """A type annotation in words (for error messages)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        options = [_describe(a) for a in args if a is not type(None)]
        text = " or ".join(options)
        return text + " or null" if type(None) in args else text
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_describe(args[0]).removeprefix('a ').removeprefix('an ')}s"
        kinds = {_describe(a) for a in args}
        kind = kinds.pop() if len(kinds) == 1 else "values"
        kind = {"a number": "numbers", "an integer": "integers"}.get(kind, kind)
        return f"a list of {len(args)} {kind}"
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(
        annotation, getattr(annotation, "__name__", str(annotation)))


def _number(value: Any) -> float | None:
    """``value`` as a float when it is a number or a number written as text, else ``None``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and _NUMBER_TEXT.fullmatch(value):
        return float(value)
    return None


def _coerce(annotation: Any, value: Any, *, where: str, current: Any = None,
            allow_inf: bool = False) -> Any:
    """Check ``value`` against the type ``annotation`` and convert it (see apply_overrides)."""
    if annotation is None:
        return _coerce_like(current, value, where=where)
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    wrong = ConfigError(f"expected {_describe(annotation)}, got {value!r}", where=where)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            if type(None) in args:
                return None
            raise wrong
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(option, value, where=where, allow_inf=allow_inf)
            except ConfigError:
                continue
        raise wrong
    if origin is Literal:
        for choice in args:
            if type(choice) is type(value) and choice == value:
                return value
        raise wrong
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise wrong
        if len(args) == 2 and args[1] is Ellipsis:
            kinds = (args[0],) * len(value)
        elif args and len(value) != len(args):
            raise ConfigError(f"expected {_describe(annotation)}, got {len(value)} values "
                              f"{list(value)!r}", where=where)
        else:
            kinds = args or (Any,) * len(value)
        pairs = enumerate(zip(kinds, value, strict=True))
        return tuple(_coerce(None if k is Any else k, v, where=f"{where}[{i}]", current=v,
                             allow_inf=allow_inf) for i, (k, v) in pairs)
    if annotation is bool:
        if not isinstance(value, bool):
            raise wrong
        return value
    if annotation is int:
        number = _number(value)
        if number is None or not math.isfinite(number) or not number.is_integer():
            raise wrong
        return int(number)
    if annotation is float:
        number = _number(value)
        if number is None or math.isnan(number) or (math.isinf(number) and not allow_inf):
            raise wrong
        return number
    if annotation is str:
        if not isinstance(value, str):
            raise wrong
        return value
    return _coerce_like(current, value, where=where)


def _coerce_like(current: Any, value: Any, *, where: str) -> Any:
    """Type check by the current value (fields without a usable annotation)."""
    if current is None or value is None:
        return value
    for kind in (bool, int, float, str):
        if isinstance(current, kind):
            return _coerce(kind, value, where=where)
    if isinstance(current, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"expected a list, got {value!r}", where=where)
        return tuple(value)
    return value


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
    db = _resolve_database(None, database, path.parent, str(path))
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
    order = _normalise_order(str(selection.order)) or "NLO_QCD"
    datasets = tuple(
        DatasetSpec(name=name, order=_normalise_order(d_order))
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

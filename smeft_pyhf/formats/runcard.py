"""The fit runcard document: its type (:class:`Runcard`), schema and the dict -> runcard step.

A runcard is a YAML file (schema ``smeft_pyhf/schemas/runcard.schema.json``,
``runcard_version: 1``); :func:`smeft_pyhf.fit.runcard.load_runcard` reads one through
:func:`smeft_pyhf.formats.reader.read_document`, validates it against
:func:`smeft_pyhf.fit.sampler_block.runcard_schema` (this file's schema with the ``sampler``
block generated from the sampler's configuration dataclasses) and checks it against the
database. This module holds the parts without torch or a database: the types and
:func:`runcard_from_dict`, which turns a validated document into a :class:`Runcard` with its
paths resolved.

Example:
    >>> rc = runcard_from_dict({"runcard_version": 1, "datasets": ["EX_tZ_13TeV"],
    ...                         "coefficients": {"OtZ": {"min": -5, "max": 5}}},
    ...                        database="/data/smefit")
    >>> rc.free_names, rc.ranges, str(rc.database)
    (('ctZ',), {'ctZ': (-5.0, 5.0)}, '/data/smefit')
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from .coefficients import CoefficientSpec, coefficient_name

__all__ = [
    "DATABASE_ENV",
    "RUNCARD_VERSION",
    "DatasetSpec",
    "Order",
    "Runcard",
    "TheoryMode",
    "copy_sampler_block",
    "is_smefit_runcard",
    "normalise_order",
    "resolve_database",
    "runcard_from_dict",
]

RUNCARD_VERSION = 1
#: Environment variable naming the SMEFiT database when a runcard has no ``database``.
DATABASE_ENV = "SMEFT_PYHF_DATABASE"

Order = Literal["LO", "NLO_QCD"]
TheoryMode = Literal["profiled", "marginalised", "gaussian", "nuisance"]


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """One input: a SMEFiT dataset (``name``, optional ``order``) or a measurement ``card``."""

    name: str | None = None
    order: Order | None = None
    card: Path | None = None

    def to_dict(self) -> dict[str, Any] | str:
        """Runcard form.

        Example:
            >>> DatasetSpec(name="EX_tZ_13TeV", order="LO").to_dict()
            {'name': 'EX_tZ_13TeV', 'order': 'LO'}
        """
        if self.card is not None:
            return {"card": str(self.card)}
        if self.order is None:
            return str(self.name)
        return {"name": self.name, "order": self.order}


@dataclasses.dataclass(frozen=True)
class Runcard:
    """A validated, resolved runcard (paths absolute).

    Build it with :func:`smeft_pyhf.fit.runcard.load_runcard` (a file, checked against the
    database) or :func:`runcard_from_dict` (a validated document). ``sampler`` is the runcard's
    ``sampler`` block as written (``paper`` and per-step settings);
    :func:`smeft_pyhf.fit.sampler_block.build_sampler_config` turns it into the sampler's
    configuration. ``workers`` and ``scheduler`` choose where the likelihood evaluations run
    (``None``: in this process).

    Example:
        >>> rc = runcard_from_dict({"runcard_version": 1, "datasets": ["X"],
        ...                         "coefficients": {"ctZ": {"min": -5, "max": 5}}})
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
    workers: int | None = None
    scheduler: str | None = None

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
        """The resolved runcard as a plain dict (stored in the results file).

        ``workers`` and ``scheduler`` appear only when set.
        """
        out = {
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
            "sampler": copy_sampler_block(self.sampler),
            "output": str(self.output),
            "source": None if self.source is None else str(self.source),
            "source_format": self.source_format,
        }
        if self.workers is not None:
            out["workers"] = self.workers
        if self.scheduler is not None:
            out["scheduler"] = self.scheduler
        return out


def copy_sampler_block(block: Mapping[str, Any]) -> dict[str, Any]:
    """A plain copy of a sampler block: per-step mappings and top-level scalars.

    Example:
        >>> copy_sampler_block({"paper": "top", "train": {"n_batches": 5}})
        {'paper': 'top', 'train': {'n_batches': 5}}
    """
    return {k: dict(v) if isinstance(v, Mapping) else v for k, v in block.items()}


def normalise_order(order: str | None) -> Order | None:
    """``"NLO"`` and ``"NLO_QCD"`` -> ``"NLO_QCD"``, any other order -> ``"LO"``.

    Example:
        >>> normalise_order("NLO"), normalise_order("LO"), normalise_order(None)
        ('NLO_QCD', 'LO', None)
    """
    if order is None:
        return None
    return "NLO_QCD" if order in ("NLO", "NLO_QCD") else "LO"


def resolve_database(value: str | None, override: str | os.PathLike[str] | None,
                     base: Path) -> Path | None:
    """The database folder: ``override``, else ``value`` relative to ``base``, else
    ``$SMEFT_PYHF_DATABASE``, else ``None``.

    Example:
        >>> str(resolve_database("db", None, Path("/runs")))
        '/runs/db'
    """
    if override is not None:
        return Path(override).resolve()
    if value is not None:
        return (base / value).resolve()
    env = os.environ.get(DATABASE_ENV)
    return Path(env).resolve() if env else None


def is_smefit_runcard(data: Mapping[str, Any]) -> bool:
    """True for a SMEFiT runcard (``coefficients`` + ``datasets`` + ``result_ID``/``use_quad``).

    Example:
        >>> is_smefit_runcard({"coefficients": {}, "datasets": [], "use_quad": True})
        True
    """
    return (
        isinstance(data, Mapping)
        and "runcard_version" not in data
        and "coefficients" in data
        and "datasets" in data
        and ("result_ID" in data or "use_quad" in data)
    )


def runcard_from_dict(
    data: Mapping[str, Any],
    *,
    source: str | os.PathLike[str] | None = None,
    database: str | os.PathLike[str] | None = None,
) -> Runcard:
    """Build a :class:`Runcard` from a document that follows the runcard schema.

    Paths (``database``, cards) are resolved relative to ``source``'s folder (the working
    folder without a source); ``database`` overrides the document's database.

    Example:
        >>> rc = runcard_from_dict({"runcard_version": 1, "datasets": [{"card": "c.yaml"}],
        ...                         "coefficients": {"ctZ": {"min": -1, "max": 1}}},
        ...                        source="/fits/rc.yaml")
        >>> rc.cards, rc.name
        ((PosixPath('/fits/c.yaml'),), 'rc')
    """
    src = Path(source).resolve() if source is not None else None
    base = src.parent if src is not None else Path.cwd()
    datasets = []
    for entry in data["datasets"]:
        if isinstance(entry, str):
            datasets.append(DatasetSpec(name=entry))
        elif "card" in entry:
            datasets.append(DatasetSpec(card=(base / entry["card"]).resolve()))
        else:
            datasets.append(DatasetSpec(name=entry["name"], order=normalise_order(entry.get("order"))))
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
    workers = data.get("workers")
    return Runcard(
        datasets=tuple(datasets),
        coefficients=tuple(coefficients),
        database=resolve_database(data.get("database"), database, base),
        name=str(data.get("name", src.stem if src is not None else "fit")),
        order=normalise_order(data.get("order", "NLO_QCD")) or "NLO_QCD",
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
        sampler=copy_sampler_block(data.get("sampler", {})),
        output=Path(data.get("output", "smeft_pyhf_results")),
        source=src,
        workers=None if workers is None else int(workers),
        scheduler=data.get("scheduler"),
    )

"""Measurement cards (signal strengths from the ingestion layer) as Gaussian rows.

A card (``docs/design.md``, ``ingest/card.py``) is one measured signal strength ``mu`` with its
statistical uncertainty, Gaussian systematic impacts per SFitter category (absolute) and flat
theory impacts per theory category (absolute half-widths); cards written by ``smeft-pyhf ingest``
split the POI's variance by source, so ``stat^2 + sum of the categories^2`` is the workspace's
total (``decomposition:`` in the card). Its prediction is the linked SMEFiT
table normalised to the SM: ``mu(c) = sum_bins T(c) / sum_bins best_sm``.

Correlations between cards (paper eq. 10):

* systematics of the same category *and experiment* are correlated with ``rho`` (0.99);
* within a card the categories are independent (their squares add up);
* theory categories, when treated as Gaussian (``theory_mode="gaussian"``, sigma = half-width) or
  as explicit nuisance parameters, are correlated between cards of the same *process* and
  category, across experiments (the same calculation enters both).

So ``V_ii = stat_i^2 + sum_k s_ik^2`` and ``V_ij = rho sum_k s_ik s_jk`` over the shared keys,
i.e. ``V = diag(stat^2) + (1 - rho) diag(sum_k s_k^2) + rho sum_k s_k s_k^T``, positive definite
for ``rho < 1`` and non-zero ``stat``.

Example:
    >>> card = read_card({"name": "X", "experiment": "ATLAS",
    ...                   "observable": {"poi": "mu", "process": "ttZ"},
    ...                   "prediction": {"smefit_dataset": "ATLAS_ttZ_13TeV_2016"},
    ...                   "measurement": {"best_fit": 1.1, "stat": {"absolute": 0.1}},
    ...                   "systematics": {"Jets": {"absolute": 0.05}},
    ...                   "theory": {"scale": {"absolute": 0.08}}})
    >>> card.best_fit, card.systematics, card.theory
    (1.1, {'Jets': 0.05}, {'scale': 0.08})
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import yaml

from smeft_pyhf.exceptions import DataError, InputError

__all__ = [
    "CardMeasurement",
    "card_covariance",
    "card_theory_shifts",
    "card_theory_widths",
    "read_card",
    "read_cards",
]

log = logging.getLogger(__name__)


class CardMeasurement(NamedTuple):
    """The numbers of one measurement card that enter the likelihood.

    Attributes:
        name: card name.
        experiment: ``ATLAS``, ``CMS``, ...
        process: the process (``ttZ``), used to correlate theory categories.
        poi: the POI of the workspace.
        best_fit: measured signal strength.
        stat: statistical uncertainty (absolute).
        systematics: ``{category: absolute impact}`` (Gaussian).
        theory: ``{category: absolute half-width}`` (flat).
        smefit_dataset: the SMEFiT dataset whose table predicts this measurement.
        replaces: SMEFiT datasets this card replaces in a combination.
        source: the card file (or ``"<mapping>"``).
    """

    name: str
    experiment: str
    process: str
    poi: str
    best_fit: float
    stat: float
    systematics: dict[str, float]
    theory: dict[str, float]
    smefit_dataset: str
    replaces: tuple[str, ...]
    source: str


def _get(obj: Any, key: str, default: Any = None) -> Any:
    if obj is None:
        return default
    if isinstance(obj, Mapping):
        return obj.get(key, default)
    return getattr(obj, key, default)


def _absolute(value: Any, where: str) -> float:
    number = value if isinstance(value, (int, float)) else _get(value, "absolute")
    if isinstance(number, bool) or not isinstance(number, (int, float)):
        raise DataError(f"expected an absolute uncertainty, got {value!r}", where=where,
                        hint="write {absolute: <number>}")
    number = float(number)
    if not math.isfinite(number) or number < 0:
        raise DataError(f"must be a non-negative finite number, got {number}", where=where)
    return number


def _categories(block: Any, where: str) -> dict[str, float]:
    if block is None:
        return {}
    items = block.items() if isinstance(block, Mapping) else getattr(block, "_asdict",
                                                                     dict)().items()
    return {str(k): _absolute(v, f"{where}.{k}") for k, v in items}


def _load_yaml(path: Path) -> dict:
    try:
        content = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise InputError(f"cannot be read ({exc.strerror})", where=str(path)) from exc
    except yaml.YAMLError as exc:
        raise InputError(f"is not valid YAML ({exc})", where=str(path)) from exc
    if not isinstance(content, dict):
        raise DataError("a measurement card must be a mapping", where=str(path))
    return content


def read_card(card: str | Path | Mapping[str, Any] | Any, *,
              database: str | Path | None = None,
              available: Sequence[str] | None = None) -> CardMeasurement:
    """Extract the likelihood inputs of a measurement card.

    Args:
        card: a card file (read with ``smeft_pyhf.ingest.card.load_card`` when available,
            otherwise as plain YAML), a mapping with the card layout, or a loaded card object.
        database: the SMEFiT database the card is used with; when given,
            ``prediction.smefit_dataset`` and every ``prediction.replaces`` entry must be a
            plain dataset name (no path) present in it.
        available: the database's dataset names, when already listed.

    Raises:
        DataError: a missing or invalid field, a category that is neither an SFitter systematic
            category nor one of the card's theory categories, a prediction or replaced dataset
            that is a path or not in ``database`` (all named with the card file and field).
        InputError: unreadable file.

    Example:
        >>> read_card("missing.yaml")
        Traceback (most recent call last):
        ...
        smeft_pyhf.exceptions.InputError: missing.yaml: cannot be read (No such file or directory)
    """
    source = "<card>"
    if isinstance(card, (str, Path)):
        path = Path(card)
        source = str(path)
        if not path.is_file():
            raise InputError("cannot be read (No such file or directory)", where=source)
        try:
            from smeft_pyhf.ingest.card import load_card
        except ImportError:
            card = _load_yaml(path)
        else:
            card = load_card(path)  # schema and categories checked there
    else:
        source = str(_get(_get(card, "provenance"), "card", _get(card, "source", source)))
        _check_categories(card, source)
    name = str(_get(card, "name", ""))
    where = f"{source}: " if source != "<card>" else ""
    if not name:
        raise DataError("field 'name' is missing", where=f"{where}name")
    measurement = _get(card, "measurement")
    best_fit = _get(measurement, "best_fit")
    if isinstance(best_fit, bool) or not isinstance(best_fit, (int, float)) or not math.isfinite(
            float(best_fit)):
        raise DataError(f"must be a finite number, got {best_fit!r}",
                        where=f"{where}measurement.best_fit")
    stat = _absolute(_get(measurement, "stat"), f"{where}measurement.stat")
    prediction = _get(card, "prediction")
    dataset = _get(prediction, "smefit_dataset")
    if not dataset:
        raise DataError("field 'prediction.smefit_dataset' is missing",
                        where=f"{where}prediction.smefit_dataset",
                        hint="link the card to the SMEFiT table that predicts it")
    observable = _get(card, "observable")
    replaces = _get(prediction, "replaces") or ()
    if isinstance(replaces, str):
        replaces = (replaces,)
    if database is not None:
        from smeft_pyhf.likelihood.smefit_data import available_datasets, check_dataset_name

        names = available_datasets(database) if available is None else available
        check_dataset_name(database, dataset, where=f"{where}prediction.smefit_dataset",
                           available=names)
        for index, replaced in enumerate(replaces):
            check_dataset_name(database, replaced, where=f"{where}prediction.replaces[{index}]",
                               available=names)
    return CardMeasurement(
        name=name, experiment=str(_get(card, "experiment", "") or ""),
        process=str(_get(observable, "process", "") or dataset),
        poi=str(_get(observable, "poi", "") or ""), best_fit=float(best_fit), stat=stat,
        systematics=_categories(_get(card, "systematics"), f"{where}systematics"),
        theory=_categories(_get(card, "theory"), f"{where}theory"),
        smefit_dataset=str(dataset), replaces=tuple(str(r) for r in replaces), source=source)


def _check_categories(card: Any, source: str) -> None:
    try:
        from smeft_pyhf.ingest.card import check_card_categories
    except ImportError:  # pragma: no cover - only without the ingestion layer
        return
    check_card_categories(card, where=source)


def read_cards(cards: Sequence[Any], *,
               database: str | Path | None = None) -> tuple[CardMeasurement, ...]:
    """Read several cards; duplicated names raise :class:`DataError`.

    Args:
        cards: card files, mappings, loaded cards or :class:`CardMeasurement` tuples.
        database: check the cards' prediction and replaced datasets against this SMEFiT
            database (see :func:`read_card`).

    Example:
        >>> read_cards([])
        ()
    """
    names = None
    if database is not None and cards:
        from smeft_pyhf.likelihood.smefit_data import available_datasets

        names = available_datasets(database)
    out = tuple(_checked(c, database, names) if isinstance(c, CardMeasurement) else
                read_card(c, database=database, available=names) for c in cards)
    seen: set[str] = set()
    for c in out:
        if c.name in seen:
            raise DataError(f"card {c.name!r} is given twice", where=c.source)
        seen.add(c.name)
    return out


def _checked(card: CardMeasurement, database: str | Path | None,
             names: Sequence[str] | None) -> CardMeasurement:
    _check_categories({"systematics": card.systematics, "theory": card.theory},
                      card.source or "<card>")
    if database is not None:
        from smeft_pyhf.likelihood.smefit_data import check_dataset_name

        where = f"{card.source or '<card>'}: prediction"
        check_dataset_name(database, card.smefit_dataset, where=f"{where}.smefit_dataset",
                           available=names)
        for index, replaced in enumerate(card.replaces):
            check_dataset_name(database, replaced, where=f"{where}.replaces[{index}]",
                               available=names)
    return card


def _correlated(columns: dict[tuple[str, str], np.ndarray], rho: float) -> np.ndarray:
    n = len(next(iter(columns.values()))) if columns else 0
    cov = np.zeros((n, n))
    for col in columns.values():
        cov += rho * np.outer(col, col) + (1.0 - rho) * np.diag(col**2)
    return cov


def card_covariance(cards: Sequence[CardMeasurement], *, rho: float = 0.99,
                    theory_as_gaussian: bool = False, theory_scale: float = 1.0) -> np.ndarray:
    """Gaussian covariance of the cards' signal strengths (see the module docstring).

    Args:
        cards: the cards.
        rho: correlation of the same category (and experiment) between cards.
        theory_as_gaussian: add the theory categories as Gaussian (sigma = half-width),
            correlated between cards of the same process.
        theory_scale: factor on the theory half-widths (with ``theory_as_gaussian``).

    ``Background:*`` categories are correlated only within one card (one per analysis).

    Example:
        >>> a = CardMeasurement("a", "ATLAS", "ttZ", "mu", 1.0, 0.1, {"Jets": 0.1}, {}, "X", (), "")
        >>> b = a._replace(name="b")
        >>> card_covariance([a, b], rho=0.5).round(4).tolist()
        [[0.02, 0.005], [0.005, 0.02]]
    """
    if not 0.0 <= rho <= 1.0:
        raise DataError(f"rho must lie in [0, 1], got {rho}", where="rho")
    n = len(cards)
    columns: dict[tuple[str, str], np.ndarray] = {}
    for i, card in enumerate(cards):
        for cat, value in card.systematics.items():
            # SFitter's Background category is separate for each channel/analysis: a
            # "Background:Fakes" of one analysis is not the same source as another's.
            key = f"{card.experiment}/{card.name}/{cat}" if cat.startswith("Background") else (
                f"{card.experiment}/{cat}")
            columns.setdefault(("sys", key), np.zeros(n))[i] = value
        if theory_as_gaussian:
            for cat, value in card.theory.items():
                columns.setdefault(("theory", f"{card.process}/{cat}"),
                                   np.zeros(n))[i] = value * theory_scale
    cov = np.diag([c.stat**2 for c in cards]).astype(float) if n else np.zeros((0, 0))
    if columns:
        cov = cov + _correlated(columns, rho)
    return cov


def card_theory_widths(cards: Sequence[CardMeasurement]) -> np.ndarray:
    """Flat theory half-widths per card, categories added linearly, shape ``(N,)``.

    Example:
        >>> a = CardMeasurement("a", "ATLAS", "ttZ", "mu", 1.0, 0.1, {}, {"scale": 0.1, "PDF": 0.05}, "X", (), "")
        >>> card_theory_widths([a]).round(3).tolist()
        [0.15]
    """
    return np.array([sum(c.theory.values()) for c in cards], dtype=float)


def card_theory_shifts(cards: Sequence[CardMeasurement]) -> tuple[tuple[str, ...], np.ndarray]:
    """Explicit flat theory nuisance parameters, one per (process, category), correlated
    across cards: ``(names, S (N, K))`` with ``mu_i -> mu_i + sum_k theta_k S_ik``.

    Example:
        >>> a = CardMeasurement("a", "ATLAS", "ttZ", "mu", 1.0, 0.1, {}, {"scale": 0.1}, "X", (), "")
        >>> names, s = card_theory_shifts([a, a._replace(name="b", experiment="CMS")])
        >>> names, s.tolist()
        (('theta_ttZ_scale',), [[0.1], [0.1]])
    """
    keys: dict[str, int] = {}
    for card in cards:
        for cat in card.theory:
            keys.setdefault(f"theta_{card.process}_{cat}", len(keys))
    shifts = np.zeros((len(cards), len(keys)))
    for i, card in enumerate(cards):
        for cat, value in card.theory.items():
            shifts[i, keys[f"theta_{card.process}_{cat}"]] = value
    return tuple(keys), shifts

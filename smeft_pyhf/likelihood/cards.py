"""Measurement cards (signal strengths from the ingestion layer) as Gaussian rows.

A card (``docs/design.md``, :class:`smeft_pyhf.formats.card.MeasurementCard`) is one measured signal strength ``mu`` with its
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
    >>> card.best_fit, card.systematic_impacts, card.theory_widths
    (1.1, {'Jets': 0.05}, {'scale': 0.08})
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from smeft_pyhf.exceptions import DataError, InputError
from smeft_pyhf.formats.card import (
    CARD_VERSION,
    MeasurementCard,
    card_from_dict,
    check_card_categories,
    load_card,
)

__all__ = [
    "card_covariance",
    "card_theory_shifts",
    "card_theory_widths",
    "read_card",
    "read_cards",
]

log = logging.getLogger(__name__)


def _absolute(value: Any, where: str) -> float:
    number = value.get("absolute") if isinstance(value, Mapping) else value
    if isinstance(number, bool) or not isinstance(number, (int, float)):
        raise DataError(f"expected an absolute uncertainty, got {value!r}", where=where,
                        hint="write {absolute: <number>}")
    number = float(number)
    if not math.isfinite(number) or number < 0:
        raise DataError(f"must be a non-negative finite number, got {number}", where=where)
    return number


def _categories(block: Any, where: str) -> dict[str, Any]:
    """A card's category block with each entry ``{absolute: ...}`` (a plain number is the
    absolute value); the absolute values are checked."""
    if block is None:
        return {}
    if not isinstance(block, Mapping):
        raise DataError(f"expected a mapping of categories, got {block!r}", where=where)
    out = {}
    for key, value in block.items():
        absolute = _absolute(value, f"{where}.{key}")
        out[str(key)] = dict(value) if isinstance(value, Mapping) else {"absolute": absolute}
    return out


def _check_measurement(name: Any, measurement: Any, where: str) -> None:
    """The name, best fit and statistical uncertainty the likelihood needs."""
    if not name:
        raise DataError("field 'name' is missing", where=f"{where}name")
    measurement = measurement if isinstance(measurement, Mapping) else {}
    best_fit = measurement.get("best_fit")
    if isinstance(best_fit, bool) or not isinstance(best_fit, (int, float)) or not math.isfinite(
            float(best_fit)):
        raise DataError(f"must be a finite number, got {best_fit!r}",
                        where=f"{where}measurement.best_fit")
    _absolute(measurement.get("stat"), f"{where}measurement.stat")


def _from_mapping(document: Mapping[str, Any], source: str) -> MeasurementCard:
    """A card given as a mapping (the card layout; plain numbers allowed for absolute values)."""
    where = f"{source}: " if source != "<card>" else ""
    check_card_categories(document, where=source)
    measurement = document.get("measurement")
    _check_measurement(document.get("name"), measurement, where)
    filled = {
        "card_version": CARD_VERSION, "observable": {}, "parameters": {}, "diagnostics": {},
        "provenance": {}, **dict(document),
        "systematics": _categories(document.get("systematics"), f"{where}systematics"),
        "theory": _categories(document.get("theory"), f"{where}theory"),
    }
    stat = measurement["stat"]
    plain = isinstance(stat, (int, float)) and not isinstance(stat, bool)
    filled["measurement"] = {**measurement, "stat": {"absolute": stat} if plain else stat}
    return card_from_dict(filled, source=None if source == "<card>" else source)


def _source(provenance: Any, source: str | None) -> str:
    """The file a card came from: ``provenance.card``, else where it was read."""
    default = source or "<card>"
    return str(provenance.get("card", default) if isinstance(provenance, Mapping) else default)


def read_card(card: str | Path | Mapping[str, Any] | MeasurementCard, *,
              database: str | Path | None = None,
              available: Sequence[str] | None = None) -> MeasurementCard:
    """Read a measurement card and check what the likelihood needs of it.

    Args:
        card: a card file (read with :func:`smeft_pyhf.formats.card.load_card`), a mapping with
            the card layout (plain numbers allowed for absolute uncertainties), or a
            :class:`~smeft_pyhf.formats.card.MeasurementCard`.
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
    if isinstance(card, (str, Path)):
        path = Path(card)
        if not path.is_file():
            raise InputError("cannot be read (No such file or directory)", where=str(path))
        card = load_card(path)  # schema and categories checked there
        source = str(path)
    elif isinstance(card, MeasurementCard):
        source = _source(card.provenance, card.source)
        check_card_categories(card, where=source)
    else:
        source = _source(card.get("provenance"), card.get("source"))
        card = _from_mapping(card, source)
    where = f"{source}: " if source != "<card>" else ""
    _check_measurement(card.name, card.measurement, where)
    _categories(card.systematics, f"{where}systematics")
    _categories(card.theory, f"{where}theory")
    if not card.smefit_dataset:
        raise DataError("field 'prediction.smefit_dataset' is missing",
                        where=f"{where}prediction.smefit_dataset",
                        hint="link the card to the SMEFiT table that predicts it")
    if database is not None:
        from smeft_pyhf.likelihood.smefit_data import available_datasets, check_dataset_name

        names = available_datasets(database) if available is None else available
        check_dataset_name(database, card.smefit_dataset,
                           where=f"{where}prediction.smefit_dataset", available=names)
        for index, replaced in enumerate(card.replaces):
            check_dataset_name(database, replaced, where=f"{where}prediction.replaces[{index}]",
                               available=names)
    return card


def read_cards(cards: Sequence[Any], *,
               database: str | Path | None = None) -> tuple[MeasurementCard, ...]:
    """Read several cards (see :func:`read_card`); duplicated names raise :class:`DataError`.

    Args:
        cards: card files, mappings or :class:`~smeft_pyhf.formats.card.MeasurementCard`.
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
    out = tuple(read_card(c, database=database, available=names) for c in cards)
    seen: set[str] = set()
    for c in out:
        if c.name in seen:
            raise DataError(f"card {c.name!r} is given twice", where=c.source or "<card>")
        seen.add(c.name)
    return out


def _correlated(columns: dict[tuple[str, str], np.ndarray], rho: float) -> np.ndarray:
    n = len(next(iter(columns.values()))) if columns else 0
    cov = np.zeros((n, n))
    for col in columns.values():
        cov += rho * np.outer(col, col) + (1.0 - rho) * np.diag(col**2)
    return cov


def card_covariance(cards: Sequence[MeasurementCard], *, rho: float = 0.99,
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
        >>> a = read_card({"name": "a", "experiment": "ATLAS", "prediction": {"smefit_dataset": "X"},
        ...                "measurement": {"best_fit": 1.0, "stat": 0.1}, "systematics": {"Jets": 0.1}})
        >>> b = a._replace(name="b")
        >>> card_covariance([a, b], rho=0.5).round(4).tolist()
        [[0.02, 0.005], [0.005, 0.02]]
    """
    if not 0.0 <= rho <= 1.0:
        raise DataError(f"rho must lie in [0, 1], got {rho}", where="rho")
    n = len(cards)
    columns: dict[tuple[str, str], np.ndarray] = {}
    for i, card in enumerate(cards):
        for cat, value in card.systematic_impacts.items():
            # SFitter's Background category is separate for each channel/analysis: a
            # "Background:Fakes" of one analysis is not the same source as another's.
            experiment = card.experiment or ""
            key = f"{experiment}/{card.name}/{cat}" if cat.startswith("Background") else (
                f"{experiment}/{cat}")
            columns.setdefault(("sys", key), np.zeros(n))[i] = value
        if theory_as_gaussian:
            for cat, value in card.theory_widths.items():
                columns.setdefault(("theory", f"{card.process}/{cat}"),
                                   np.zeros(n))[i] = value * theory_scale
    cov = np.diag([c.stat**2 for c in cards]).astype(float) if n else np.zeros((0, 0))
    if columns:
        cov = cov + _correlated(columns, rho)
    return cov


def card_theory_widths(cards: Sequence[MeasurementCard]) -> np.ndarray:
    """Flat theory half-widths per card, categories added linearly, shape ``(N,)``.

    Example:
        >>> a = read_card({"name": "a", "prediction": {"smefit_dataset": "X"},
        ...                "measurement": {"best_fit": 1.0, "stat": 0.1},
        ...                "theory": {"scale": 0.1, "PDF": 0.05}})
        >>> card_theory_widths([a]).round(3).tolist()
        [0.15]
    """
    return np.array([sum(c.theory_widths.values()) for c in cards], dtype=float)


def card_theory_shifts(cards: Sequence[MeasurementCard]) -> tuple[tuple[str, ...], np.ndarray]:
    """Explicit flat theory nuisance parameters, one per (process, category), correlated
    across cards: ``(names, S (N, K))`` with ``mu_i -> mu_i + sum_k theta_k S_ik``.

    Example:
        >>> a = read_card({"name": "a", "experiment": "ATLAS", "observable": {"process": "ttZ"},
        ...                "prediction": {"smefit_dataset": "X"},
        ...                "measurement": {"best_fit": 1.0, "stat": 0.1}, "theory": {"scale": 0.1}})
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
        for cat, value in card.theory_widths.items():
            shifts[i, keys[f"theta_{card.process}_{cat}"]] = value
    return tuple(keys), shifts

"""Reading SMEFiT runcards: datasets, coefficients (ranges, fixed values, constraints), options.

SMEFiT runcard syntax (``coefficients`` section, names with the ``O`` prefix):

* ``OtG: {min: -1, max: 1}``: a free coefficient with its prior range;
* ``Oll: {constrain: true, value: 0.0, min: ..., max: ...}``: fixed to ``value``;
* ``Opui: {constrain: {OpD: 0.3333}, ...}``: ``c_Opui = 0.3333 c_OpD``;
* ``O3pq: {constrain: [{OpD: -0.87}, {OpWB: -1.87}], ...}``: a list of terms, summed;
  a term with several keys is a product, a value ``[factor, power]`` a power
  (SMEFiT's ``Coefficient.update_constrain``). Only linear relations (one coefficient per term,
  power 1) can be substituted into the quadratic tables; others raise :class:`ConfigError`.

``datasets`` entries are names, or ``{name: X, order: NLO_QCD}``; ``order: NLO`` means
``NLO_QCD``. Datasets absent from the database are reported in
:attr:`SmefitSelection.missing_datasets` by :meth:`SmefitSelection.restrict`.

Example:
    >>> sel = read_smefit_runcard("../shared/data/smefit_runcards/LHC_NLO_QUAD_GLOB.yaml")  # doctest: +SKIP
    >>> sel.use_quad, sel.coefficients["ctG"].maximum                                       # doctest: +SKIP
    (True, 1.0)
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from smeft_pyhf.exceptions import ConfigError
from smeft_pyhf.formats.coefficients import CoefficientSpec, coefficient_name, operator_name
from smeft_pyhf.formats.reader import read_document
from smeft_pyhf.likelihood.smefit_data import (
    ORDERS,
    available_datasets,
    available_orders,
    top_quark_datasets,
)

__all__ = ["SmefitSelection", "read_smefit_runcard", "substitution_matrix"]

log = logging.getLogger(__name__)

_ORDER_ALIASES = {"NLO": "NLO_QCD", "NLO_QCD": "NLO_QCD", "LO": "LO"}


class SmefitSelection(NamedTuple):
    """The content of a SMEFiT runcard.

    Attributes:
        datasets: ``((name, order), ...)``.
        coefficients: ``{cX: CoefficientSpec}`` in runcard order.
        use_quad: keep quadratic EFT terms.
        order: default order (``LO``/``NLO_QCD``).
        use_t0: t0 prescription for ``MULT`` systematics.
        use_theory_cov: add the theory covariance.
        rot_to_fit_basis: the runcard's rotation setting (only ``None`` is supported).
        source: path of the runcard.
        missing_datasets: datasets of the runcard not found in the database (set by
            :meth:`restrict`).
    """

    datasets: tuple[tuple[str, str], ...]
    coefficients: dict[str, CoefficientSpec]
    use_quad: bool = True
    order: str = "NLO_QCD"
    use_t0: bool = True
    use_theory_cov: bool = True
    rot_to_fit_basis: object = None
    source: str = ""
    missing_datasets: tuple[str, ...] = ()

    @property
    def dataset_names(self) -> tuple[str, ...]:
        """Dataset names without orders."""
        return tuple(name for name, _ in self.datasets)

    @property
    def free_coefficients(self) -> tuple[str, ...]:
        """Names of the free (fitted) coefficients, in runcard order."""
        return tuple(n for n, spec in self.coefficients.items() if spec.is_free)

    def restrict(self, database: str | Path, *, top_only: bool = False,
                 operators: Sequence[str] | None = None) -> SmefitSelection:
        """Keep the datasets present in ``database`` (only top-quark ones with ``top_only``) and
        the coefficients appearing in their theory tables (``operators``: the operators of
        those tables, read from the files when ``None``). A dataset without a table at its
        order falls back to the highest order available (a warning is logged).

        Coefficients constrained to a dropped free coefficient lose that term; a coefficient
        whose constraint refers only to dropped coefficients is dropped too.

        Example:
            >>> sel = SmefitSelection(datasets=(("X", "NLO_QCD"),), coefficients={})
            >>> sel.restrict("/nonexistent").missing_datasets
            ('X',)
        """
        present = set(top_quark_datasets(database) if top_only else available_datasets(database))
        all_present = set(available_datasets(database))
        kept_list = []
        fallback = []
        for name, order in self.datasets:
            if name not in present:
                continue
            orders = available_orders(database, name)
            if order not in orders and orders:
                fallback.append(f"{name} ({order} -> {orders[-1]})")
                order = orders[-1]
            kept_list.append((name, order))
        if fallback:
            log.warning("%s: %d datasets have no table at the requested order, using: %s",
                        self.source or "selection", len(fallback), ", ".join(fallback))
        kept = tuple(kept_list)
        missing = tuple(d[0] for d in self.datasets if d[0] not in all_present)
        if missing:
            log.info("%s: %d datasets not in %s: %s", self.source or "selection", len(missing),
                     database, ", ".join(missing))
        if operators is None:
            from smeft_pyhf.likelihood.smefit_data import load_smefit_dataset

            ops: set[str] = set()
            for name, order in kept:
                ds = load_smefit_dataset(database, name, order=order,  # type: ignore[arg-type]
                                         use_quad=self.use_quad)
                ops.update(ds.operators)
        else:
            ops = set(operators)
        in_tables = {coefficient_name(o) for o in ops}
        coefficients: dict[str, CoefficientSpec] = {}
        for name, spec in self.coefficients.items():
            if name not in in_tables:
                continue
            if spec.constrain:
                terms = tuple((k, f) for k, f in spec.constrain if k in in_tables)
                if not terms and spec.value is None:
                    continue
                spec = spec._replace(constrain=terms)
            coefficients[name] = spec
        return self._replace(datasets=kept, coefficients=coefficients, missing_datasets=missing)


def _number(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"expected a number, got {value!r}", where=where)
    return float(value)


def _constraint_terms(raw: object, where: str) -> tuple[tuple[str, float], ...]:
    items = [raw] if isinstance(raw, Mapping) else raw
    if not isinstance(items, list):
        raise ConfigError(f"constrain must be true, a mapping or a list of mappings, got {raw!r}",
                          where=where)
    terms: list[tuple[str, float]] = []
    for item in items:
        if not isinstance(item, Mapping) or len(item) != 1:
            raise ConfigError(f"term {item!r} is a product of several coefficients; only linear "
                              "constraints can be substituted into the theory tables",
                              where=where)
        ((other, factor),) = item.items()
        if isinstance(factor, list):
            if len(factor) != 2 or _number(factor[1], where) != 1.0:
                raise ConfigError(f"term {item!r} is not linear (power != 1)", where=where)
            factor = factor[0]
        terms.append((coefficient_name(str(other)), _number(factor, where)))
    return tuple(terms)


def read_smefit_runcard(path: str | Path) -> SmefitSelection:
    """Read a SMEFiT runcard.

    Args:
        path: the runcard YAML.

    Returns:
        The :class:`SmefitSelection` (all datasets of the card; call
        :meth:`SmefitSelection.restrict` to keep those of a database).

    Raises:
        InputError: unreadable/malformed YAML.
        ConfigError: bad coefficient entry (named with its field), unknown order, constraint on
            an unknown or non-free coefficient, non-linear constraint.

    Example:
        >>> sel = read_smefit_runcard("../shared/data/smefit_runcards/LHC_NLO_LIN_GLOB.yaml")  # doctest: +SKIP
        >>> sel.use_quad                                                                   # doctest: +SKIP
        False
    """
    path = Path(path)
    card = read_document(path, error=ConfigError, what="SMEFiT runcard")
    raw_order = str(card.get("order", "NLO"))
    if raw_order not in _ORDER_ALIASES:
        raise ConfigError(f"unknown order {raw_order!r}", where=f"{path}: order",
                          hint=f"choose one of {sorted(_ORDER_ALIASES)}")
    order = _ORDER_ALIASES[raw_order]
    datasets: list[tuple[str, str]] = []
    for k, entry in enumerate(card.get("datasets") or []):
        where = f"{path}: datasets[{k}]"
        if isinstance(entry, str):
            datasets.append((entry, order))
        elif isinstance(entry, Mapping) and "name" in entry:
            ds_order = _ORDER_ALIASES.get(str(entry.get("order", order)))
            if ds_order not in ORDERS:
                raise ConfigError(f"unknown order {entry.get('order')!r}", where=where)
            datasets.append((str(entry["name"]), ds_order))
        else:
            raise ConfigError(f"expected a name or {{name, order}}, got {entry!r}", where=where)

    raw_coefs = card.get("coefficients") or {}
    if not isinstance(raw_coefs, Mapping):
        raise ConfigError("must be a mapping of operator -> settings",
                          where=f"{path}: coefficients")
    coefficients: dict[str, CoefficientSpec] = {}
    for op, settings in raw_coefs.items():
        where = f"{path}: coefficients.{op}"
        name = coefficient_name(str(op))
        if not isinstance(settings, Mapping):
            raise ConfigError(f"expected a mapping with min/max, got {settings!r}", where=where)
        lo = _number(settings["min"], where) if "min" in settings else None
        hi = _number(settings["max"], where) if "max" in settings else None
        value = _number(settings["value"], where) if "value" in settings else None
        raw_c = settings.get("constrain", False)
        if raw_c is True:
            if value is None:
                raise ConfigError("constrain: true needs a value", where=where)
            terms: tuple[tuple[str, float], ...] = ()
        elif raw_c is False or raw_c is None:
            terms = ()
        else:
            terms = _constraint_terms(raw_c, where)
            value = None
        spec = CoefficientSpec(name, lo, hi, value, terms)
        if spec.is_free and not spec.bounds[0] < spec.bounds[1]:
            low, high = spec.bounds
            raise ConfigError(f"min ({low}) must be smaller than max ({high})", where=where)
        coefficients[name] = spec
    for name, spec in coefficients.items():
        for other, _ in spec.constrain:
            if other not in coefficients:
                raise ConfigError(f"constraint refers to {other!r}, not among the coefficients",
                                  where=f"{path}: coefficients.{operator_name(name)}")
    rot = card.get("rot_to_fit_basis")
    if rot is not None:
        log.warning("%s: rot_to_fit_basis=%r is not supported and ignored", path, rot)
    return SmefitSelection(
        datasets=tuple(datasets), coefficients=coefficients,
        use_quad=bool(card.get("use_quad", True)), order=order,
        use_t0=bool(card.get("use_t0", True)),
        use_theory_cov=bool(card.get("use_theory_covmat", True)),
        rot_to_fit_basis=rot, source=str(path))


def substitution_matrix(table_names: Sequence[str],
                        coefficients: Mapping[str, CoefficientSpec] | Sequence[str],
                        ) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    """Express all table coefficients in terms of the free ones: ``c_table = A c_free + b``.

    Free coefficients map to themselves, fixed ones to their value, constrained ones to their
    linear combination (resolved recursively when a constraint refers to another constrained
    coefficient), and table coefficients not in the selection to zero.

    Args:
        table_names: coefficients present in the theory tables (``cX``).
        coefficients: the selection: specs, or plain names (all free).

    Returns:
        ``(free names, A (n_table, n_free), b (n_table,))``.

    Example:
        >>> specs = {"ca": CoefficientSpec("ca"), "cb": CoefficientSpec("cb", constrain=(("ca", 2.0),))}
        >>> names, a, b = substitution_matrix(["ca", "cb", "cc"], specs)
        >>> names, a.ravel().tolist(), b.tolist()
        (('ca',), [1.0, 2.0, 0.0], [0.0, 0.0, 0.0])
    """
    if not isinstance(coefficients, Mapping):
        coefficients = {coefficient_name(n): CoefficientSpec(coefficient_name(n))
                        for n in coefficients}
    free = tuple(n for n, spec in coefficients.items() if spec.is_free)
    index = {n: k for k, n in enumerate(free)}

    def resolve(name: str, stack: tuple[str, ...]) -> tuple[np.ndarray, float]:
        if name in stack:
            raise ConfigError(f"circular constraint {' -> '.join((*stack, name))}",
                              where=f"coefficients.{name}")
        row = np.zeros(len(free))
        spec = coefficients.get(name)
        if spec is None:
            return row, 0.0
        if spec.is_free:
            row[index[name]] = 1.0
            return row, 0.0
        offset = spec.value if spec.value is not None and not spec.constrain else 0.0
        for other, factor in spec.constrain:
            sub_row, sub_off = resolve(other, (*stack, name))
            row += factor * sub_row
            offset += factor * sub_off
        return row, offset

    a = np.zeros((len(table_names), len(free)))
    b = np.zeros(len(table_names))
    for k, name in enumerate(table_names):
        a[k], b[k] = resolve(name, ())
    return free, a, b

"""The measurement card: a plain, diffable YAML file describing one measured POI.

Layout (``card_version: 1``, schema ``smeft_pyhf/schemas/measurement_card.schema.json``)::

    card_version: 1
    name: ATLAS_ttZ_13TeV_3L
    experiment: ATLAS
    sqrt_s_TeV: 13.0
    luminosity_fb: 139.0
    arxiv: "2103.12603"
    observable: {poi: mu_XS_ttZ, kind: signal_strength, process: ttZ}
    prediction: {smefit_dataset: ..., replaces: [...]}
    measurement:
      best_fit: 1.166
      total: {up: 0.141, down: 0.128, symmetric: 0.134}   # absolute; down as a positive number
      stat: {absolute: 0.060, relative: 0.052}            # relative = absolute / |best_fit|
    systematics: {Jets: {absolute: ..., relative: ..., n_parameters: 41,    # Gaussian
                         constraint: ..., data: ...}, ...}
    theory: {scale: {absolute: ..., relative: ..., n_parameters: 3}}   # flat, absolute = half-width
    decomposition: {method: variance-by-source, stat_convention: all-fixed, total: ...,
                    closure: 1.0, ...}     # stat^2 + sum of categories^2 = total^2
    impact_breakdown: {method: hesse, stat: {...}, categories: {...}, closure: 1.2}  # paper-style
    parameters: {JES_EffectiveNP_1: Jets, ...}                          # NP -> category
    ignored: [lumi]
    groups: [{group, category, reproduced_percent, paper_percent}, ...]
    impacts: [{parameter, category, postfit_up, postfit_down, prefit_up, prefit_down}, ...]
    scans: [{parameter, category, non_gaussianity, ...}, ...]
    diagnostics: {minimizer, fit_valid, hesse_valid, twice_nll, warnings, ...}
    provenance: {input, input_sha256, patch_sha256, mapping, mapping_sha256, created, versions}

``measurement.stat``, ``systematics`` and ``theory`` split the POI's Hesse variance by source
(:mod:`smeft_pyhf.ingest.decomposition`): their squares add up to ``total.symmetric``, which is
what the combined likelihood needs. Theory entries keep the category's share as the half-width
of the flat SFitter uncertainty. The fix-and-refit impacts that a paper's table quotes are under
``impact_breakdown`` and in ``groups``. Cards are validated against the schema when written and when
read; writing is atomic (:func:`smeft_pyhf._io.atomic_write_text`).

Example:
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "card.yaml"
    >>> write_card(example_card(), path)
    >>> load_card(path).measurement["best_fit"]
    1.1
"""

from __future__ import annotations

import difflib
import logging
import math
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import yaml

from .._io import atomic_write_text
from ..exceptions import DataError
from .reader import load_schema, read_document, validate_document

__all__ = [
    "CARD_VERSION",
    "SYSTEMATIC_CATEGORIES",
    "MeasurementCard",
    "card_schema",
    "check_card_categories",
    "example_card",
    "is_valid_category",
    "load_card",
    "validate_card",
    "write_card",
]

log = logging.getLogger(__name__)

#: The SFitter systematic (Gaussian) categories. ``Background`` may carry a suffix
#: (``Background:WZ``): one background category per channel or process.
SYSTEMATIC_CATEGORIES: tuple[str, ...] = (
    "Beam",
    "Background",
    "ETmis",
    "Jets",
    "Leptons",
    "LightTagging",
    "Luminosity",
    "Pileup",
    "Trigger",
    "Tune",
    "bTagging",
    "partonShower",
    "tTagging",
    "tauTagging",
)
_BACKGROUND_RE = re.compile(r"Background:[A-Za-z0-9_.+\-]+")

CARD_VERSION = 1
_HEADER = (
    "# smeft-pyhf measurement card (card_version 1). Written by `smeft-pyhf ingest`;\n"
    "# uncertainties are absolute on the POI unless called relative (= absolute / |best_fit|).\n"
    "# systematics: Gaussian SFitter categories; theory: flat, absolute = half-width.\n"
)


def is_valid_category(category: str, theory_categories: Iterable[str] = ()) -> bool:
    """Whether ``category`` is an SFitter systematic category or one of ``theory_categories``.

    Example:
        >>> is_valid_category("Background:WZ"), is_valid_category("jets")
        (True, False)
        >>> is_valid_category("scale", ["scale", "PDF"])
        True
    """
    return (
        category in SYSTEMATIC_CATEGORIES
        or bool(_BACKGROUND_RE.fullmatch(category))
        or category in set(theory_categories)
    )


class MeasurementCard(NamedTuple):
    """A measurement card; fields mirror the YAML keys (see the module docstring).

    The one card type: ``smeft-pyhf ingest`` writes it, runcards name it, and the likelihood
    (:mod:`smeft_pyhf.likelihood.cards`) reads its numbers through the properties
    :attr:`best_fit`, :attr:`stat`, :attr:`systematic_impacts`, :attr:`theory_widths`,
    :attr:`poi`, :attr:`process`, :attr:`smefit_dataset` and :attr:`replaces`.

    Attributes:
        card_version: format version (1).
        name: card name.
        experiment: ``ATLAS``, ``CMS``, ... (or ``None``).
        sqrt_s_TeV: centre-of-mass energy.
        luminosity_fb: integrated luminosity.
        arxiv: arXiv number of the paper.
        observable: ``{poi, kind, process}``.
        prediction: ``{smefit_dataset, replaces}`` or ``None``.
        measurement: ``{best_fit, total: {up, down, symmetric}, stat: {absolute, relative}}``.
        systematics: Gaussian categories, ``{category: {absolute, relative, n_parameters}}``.
        theory: flat categories, same layout (absolute = half-width).
        parameters: NP -> category.
        ignored: NPs left out through the mapping.
        groups: the paper-group comparison rows.
        impacts: per-NP impacts (leading ones).
        scans: per-NP scan summaries.
        diagnostics: fit diagnostics.
        provenance: inputs, hashes, tool versions, creation time.
        source: the file the card was read from (``None`` if built in memory).
        decomposition: how ``measurement.stat``, ``systematics`` and ``theory`` were made (the
            variance split by source, its stat convention and closure); ``None`` in cards
            written by hand.
        impact_breakdown: the fix-and-refit impacts to compare with the paper (not read by
            the likelihood); ``None`` when absent.
    """

    card_version: int
    name: str
    experiment: str | None
    sqrt_s_TeV: float | None
    luminosity_fb: float | None
    arxiv: str | None
    observable: dict[str, Any]
    prediction: dict[str, Any] | None
    measurement: dict[str, Any]
    systematics: dict[str, dict[str, Any]]
    theory: dict[str, dict[str, Any]]
    parameters: dict[str, str]
    ignored: list[str]
    groups: list[dict[str, Any]]
    impacts: list[dict[str, Any]]
    scans: list[dict[str, Any]]
    diagnostics: dict[str, Any]
    provenance: dict[str, Any]
    source: str | None = None
    decomposition: dict[str, Any] | None = None
    impact_breakdown: dict[str, Any] | None = None

    @property
    def best_fit(self) -> float:
        """The POI's best-fit value."""
        return float(self.measurement["best_fit"])

    @property
    def stat(self) -> float:
        """Absolute statistical uncertainty."""
        return float(self.measurement["stat"]["absolute"])

    @property
    def systematic_impacts(self) -> dict[str, float]:
        """``{category: absolute impact}`` of the Gaussian systematic categories."""
        return {str(k): float(v["absolute"]) for k, v in self.systematics.items()}

    @property
    def theory_widths(self) -> dict[str, float]:
        """``{category: absolute half-width}`` of the flat theory categories."""
        return {str(k): float(v["absolute"]) for k, v in self.theory.items()}

    @property
    def poi(self) -> str:
        """The workspace's parameter of interest (``""`` when not given)."""
        return str((self.observable or {}).get("poi") or "")

    @property
    def smefit_dataset(self) -> str:
        """The SMEFiT dataset whose table predicts the measurement (``""`` when not linked)."""
        return str((self.prediction or {}).get("smefit_dataset") or "")

    @property
    def process(self) -> str:
        """The process (``ttZ``) that correlates theory categories; the dataset if not given."""
        return str((self.observable or {}).get("process") or self.smefit_dataset)

    @property
    def replaces(self) -> tuple[str, ...]:
        """SMEFiT datasets this card replaces in a combination."""
        replaced = (self.prediction or {}).get("replaces") or ()
        return (str(replaced),) if isinstance(replaced, str) else tuple(str(r) for r in replaced)

    def to_dict(self) -> dict[str, Any]:
        """The card as the plain mapping written to YAML (without ``source``)."""
        out = self._asdict()
        out.pop("source")
        for key in ("decomposition", "impact_breakdown"):
            if out[key] is None:
                out.pop(key)
        return out


def card_schema() -> dict[str, Any]:
    """The JSON schema of measurement cards (``smeft_pyhf/schemas/measurement_card.schema.json``).

    Example:
        >>> card_schema()["properties"]["card_version"]
        {'const': 1}
    """
    return load_schema("measurement_card")


def _check_finite(obj: Any, where: str) -> None:
    if isinstance(obj, float) and not math.isfinite(obj):
        raise DataError(f"non-finite number {obj}", where=where, hint="use null for unknown values")
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            _check_finite(value, f"{where}.{key}" if where else str(key))
    elif isinstance(obj, (list, tuple)):
        for index, value in enumerate(obj):
            _check_finite(value, f"{where}[{index}]")


def _category_hint(category: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(category, choices, n=1, cutoff=0.5)
    if not close and category.lower().startswith("background"):
        close = ["Background:<process>"]
    hint = ("valid categories: " + ", ".join(choices)
            + "; flat theory categories go under 'theory:'")
    return f"did you mean '{close[0]}'? {hint}" if close else hint


def check_card_categories(document: Mapping[str, Any] | Any, *, where: str = "<card>") -> None:
    """Check the categories a card uses (SFitter systematic or the card's own theory ones).

    ``systematics`` keys must be SFitter systematic categories (``Beam``, ``Background:<process>``,
    ``ETmis``, ``Jets``, ... see :data:`SYSTEMATIC_CATEGORIES`), since
    the likelihood correlates equal categories across cards and an unknown name would be
    correlated with nothing. ``theory`` keys are the card's flat categories and must not be
    SFitter systematic names. Every category named in ``parameters``, ``impacts`` and ``scans``
    must be one of the two kinds.

    Args:
        document: the card mapping (or a loaded card with the same attributes).
        where: the card file shown in errors.

    Raises:
        DataError: naming the card file, the field and the valid categories.

    Example:
        >>> check_card_categories({"systematics": {"Jetz": {"absolute": 0.1}}}, where="c.yaml")
        Traceback (most recent call last):
        ...
        smeft_pyhf.exceptions.DataError: c.yaml: unknown systematic category 'Jetz' at 'systematics.Jetz'. Hint: did you mean 'Jets'? valid categories: Beam, Background, ETmis, Jets, Leptons, LightTagging, Luminosity, Pileup, Trigger, Tune, bTagging, partonShower, tTagging, tauTagging, Background:<process>; flat theory categories go under 'theory:'
    """
    def get(key: str) -> Any:
        if isinstance(document, Mapping):
            return document.get(key)
        return getattr(document, key, None)

    systematic = [*SYSTEMATIC_CATEGORIES, "Background:<process>"]
    systematics = get("systematics") or {}
    theory = get("theory") or {}
    if not isinstance(systematics, Mapping) or not isinstance(theory, Mapping):
        return  # the schema (or read_card) reports the wrong type
    for name in systematics:
        if not is_valid_category(str(name)):
            raise DataError(f"unknown systematic category {name!r} at 'systematics.{name}'",
                            where=where, hint=_category_hint(str(name), systematic))
    for name in theory:
        if is_valid_category(str(name)):
            raise DataError(
                f"theory category {name!r} at 'theory.{name}' is an SFitter systematic category",
                where=where,
                hint="move it under 'systematics:' (Gaussian), or give the flat theory "
                     "uncertainty its own name such as scale, PDF, modelling")
    theory_names = [str(t) for t in theory]
    known = [*systematic, *theory_names]
    used: list[tuple[str, Any]] = []
    parameters = get("parameters") or {}
    if isinstance(parameters, Mapping):
        used += [(f"parameters.{k}", v) for k, v in parameters.items()]
    for block in ("impacts", "scans"):
        rows = get(block) or []
        if isinstance(rows, (list, tuple)):
            used += [(f"{block}[{i}].category", row.get("category"))
                     for i, row in enumerate(rows) if isinstance(row, Mapping)]
    for field, category in used:
        if category is None or not isinstance(category, str):
            continue
        if not is_valid_category(category, theory_names):
            raise DataError(
                f"unknown category {category!r} at '{field}': neither an SFitter systematic "
                "category nor one of the card's theory categories "
                f"({', '.join(theory_names) or 'none'})",
                where=where, hint=_category_hint(category, known))


def validate_card(document: Mapping[str, Any], *, where: str = "<card>") -> None:
    """Validate a card mapping against the schema, reject NaN/inf and unknown categories
    (:func:`check_card_categories`).

    Raises:
        DataError: naming the field path and the offending value.

    Example:
        >>> validate_card({"card_version": 1})
        Traceback (most recent call last):
        ...
        smeft_pyhf.exceptions.DataError: <card>: (top level): 'name' is a required property. Hint: add the missing key
    """
    validate_document(dict(document), "measurement_card", where=where, error=DataError)
    _check_finite(dict(document), "")
    check_card_categories(document, where=where)


class _Dumper(yaml.SafeDumper):
    pass


def _float_representer(dumper: yaml.SafeDumper, value: float) -> yaml.Node:
    if not math.isfinite(value):
        return dumper.represent_scalar("tag:yaml.org,2002:null", "null")
    text = f"{value:.6g}"
    if "e" not in text and "." not in text:
        text += ".0"
    elif "e" in text and "." not in text.split("e")[0]:
        mantissa, exponent = text.split("e")
        text = f"{mantissa}.0e{exponent}"
    return dumper.represent_scalar("tag:yaml.org,2002:float", text)


_Dumper.add_representer(float, _float_representer)


def _plain(obj: Any) -> Any:
    """Convert numpy scalars/tuples to plain YAML-able Python objects."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        return obj.item()
    return obj


def dump_card(card: MeasurementCard | Mapping[str, Any]) -> str:
    """The YAML text of a card (with a short header comment).

    Example:
        >>> dump_card(example_card()).splitlines()[3]
        'card_version: 1'
    """
    document = card.to_dict() if isinstance(card, MeasurementCard) else dict(card)
    document = _plain(document)
    body = yaml.dump(document, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)
    return _HEADER + body


def write_card(card: MeasurementCard | Mapping[str, Any], path: str | os.PathLike[str]) -> None:
    """Validate ``card`` and write it atomically as YAML to ``path``.

    Raises:
        DataError: the card does not follow the schema (nothing is written).
        InputError: the folder is missing or not writable (nothing is written).

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "c.yaml"
        >>> write_card(example_card(), path)
        >>> path.read_text().startswith("# smeft-pyhf measurement card")
        True
    """
    document = card.to_dict() if isinstance(card, MeasurementCard) else dict(card)
    document = _plain(document)
    validate_card(document, where=str(path))
    atomic_write_text(path, dump_card(document))
    log.info("wrote measurement card %s", path)


def card_from_dict(document: Mapping[str, Any], *, source: str | None = None) -> MeasurementCard:
    """Build a :class:`MeasurementCard` from a validated mapping (optional keys defaulted).

    Example:
        >>> card_from_dict(example_card().to_dict()).name
        'example'
    """
    defaults: dict[str, Any] = {
        "experiment": None, "sqrt_s_TeV": None, "luminosity_fb": None, "arxiv": None,
        "prediction": None, "ignored": [], "groups": [], "impacts": [], "scans": [],
        "decomposition": None, "impact_breakdown": None,
    }
    values = {**defaults, **dict(document)}
    fields = {name: values[name] for name in MeasurementCard._fields if name != "source"}
    return MeasurementCard(**fields, source=source)


def load_card(path: str | os.PathLike[str]) -> MeasurementCard:
    """Read and validate a measurement card.

    Raises:
        InputError: missing file or invalid YAML (with line/column).
        DataError: schema violation (field path and value); see
            :func:`smeft_pyhf.formats.reader.read_document`.

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "c.yaml"
        >>> write_card(example_card(), path)
        >>> load_card(path).systematics["Jets"]["absolute"]
        0.05
    """
    document = read_document(path, error=DataError, what="measurement card")
    validate_card(document, where=str(path))
    return card_from_dict(document, source=str(path))


def example_card() -> MeasurementCard:
    """A tiny valid card (for examples and tests).

    Example:
        >>> example_card().measurement["stat"]["absolute"]
        0.1
    """
    return MeasurementCard(
        card_version=CARD_VERSION,
        name="example",
        experiment="ATLAS",
        sqrt_s_TeV=13.0,
        luminosity_fb=139.0,
        arxiv=None,
        observable={"poi": "mu", "kind": "signal_strength", "process": "ttZ"},
        prediction=None,
        measurement={
            "best_fit": 1.1,
            "total": {"up": 0.13, "down": 0.12, "symmetric": 0.125},
            "stat": {"absolute": 0.1, "relative": 0.0909},
        },
        systematics={"Jets": {"absolute": 0.05, "relative": 0.0455, "n_parameters": 1}},
        theory={"scale": {"absolute": 0.04, "relative": 0.0364, "n_parameters": 1}},
        parameters={"JES_1": "Jets", "muR": "scale"},
        ignored=[],
        groups=[],
        impacts=[],
        scans=[],
        diagnostics={"minimizer": "minuit", "fit_valid": True, "hesse_valid": True, "twice_nll": 1.0},
        provenance={
            "input": "example.json",
            "input_sha256": "0" * 64,
            "created": "2026-01-01T00:00:00+00:00",
            "versions": {},
        },
    )

"""The nuisance-parameter mapping document: its type, schema and reader.

A mapping YAML (schema ``smeft_pyhf/schemas/mapping.schema.json``, ``mapping_version: 1``) lists
ordered rules ``pattern -> category``; the first rule whose pattern matches the whole NP name
(:func:`re.fullmatch`) wins. Categories are the SFitter systematic categories
(:data:`~smeft_pyhf.formats.card.SYSTEMATIC_CATEGORIES`, Gaussian; ``Background`` takes a
per-process suffix such as ``Background:WZ``) or the flat theory categories the mapping declares
in ``theory_categories``.

Loading validates at the boundary (:mod:`smeft_pyhf.formats.reader`): YAML syntax (line and
column), then the JSON schema (field path and valid choices), then semantic checks (each regex
compiles, each category is known). Assigning parameters with a mapping, the naming heuristics and
finding the shipped mapping that fits a workspace are in :mod:`smeft_pyhf.ingest.mapping`.

Example:
    >>> m = load_mapping("generic_atlas")
    >>> m.analysis, m.rules[0].category
    ('generic_atlas', 'Background:MCstat')
"""

from __future__ import annotations

import difflib
import logging
import re
from pathlib import Path
from typing import Any, NamedTuple

from .._io import sha256_file
from .._resources import shipped_dir
from ..exceptions import InputError, MappingError
from .card import SYSTEMATIC_CATEGORIES, is_valid_category
from .reader import read_document, validate_document

__all__ = [
    "MAPPING_VERSION",
    "PLACEHOLDER_RE",
    "CategoryMapping",
    "Rule",
    "load_mapping",
    "parse_mapping",
    "shipped_mappings",
]

log = logging.getLogger(__name__)

MAPPING_VERSION = 1
#: A ``{group}`` placeholder in a ``Background:{group}`` category.
PLACEHOLDER_RE = re.compile(r"\{(\w+)\}")


class Rule(NamedTuple):
    """One mapping rule: NP names fully matching ``pattern`` go to ``category``.

    Attributes:
        pattern: regular expression, matched with :func:`re.fullmatch` on the NP name.
        category: SFitter systematic category (``Background:<process>`` allowed) or a declared
            theory category. ``Background:{name}`` takes the process from the named group
            ``(?P<name>...)`` of the pattern (e.g. pattern ``(?P<proc>\\w+?)_xsec``, category
            ``Background:{proc}``).
        group: the paper's own uncertainty group (row of its breakdown table), if known.
    """

    pattern: str
    category: str
    group: str | None = None


class CategoryMapping(NamedTuple):
    """A validated mapping file: the SFitter category of each nuisance parameter of a workspace.

    Attributes:
        analysis: analysis name (the file name stem).
        metadata: experiment, sqrt_s_TeV, luminosity_fb, arxiv, observable, prediction,
            workspace_sha256, ... (as in the YAML; may be empty).
        theory_categories: the flat (theory) categories this mapping declares.
        rules: ordered rules; the first full match wins.
        ignore: exact names or regexes of parameters left out on purpose.
        paper_breakdown: the paper's uncertainty table, group -> percent of the POI.
        source: where the mapping was read from.
        sha256: sha256 of the mapping file bytes.
        stat_convention: the paper's stat convention (``"free-floating"``: free
            normalisations floating, ``"all-fixed"``: every parameter but the POI fixed), or
            ``None`` when the mapping does not say.
    """

    analysis: str
    metadata: dict[str, Any]
    theory_categories: tuple[str, ...]
    rules: tuple[Rule, ...]
    ignore: tuple[str, ...]
    paper_breakdown: dict[str, float]
    source: str
    sha256: str
    stat_convention: str | None = None


def shipped_mappings() -> tuple[str, ...]:
    """Names of the mappings shipped with the package (file stems), sorted.

    Example:
        >>> "generic_atlas" in shipped_mappings()
        True
    """
    folder = shipped_dir("mappings")
    if not folder.is_dir():
        return ()
    return tuple(sorted({p.stem for p in folder.iterdir() if p.suffix in {".yaml", ".yml"}}))


def _resolve(path_or_name: str | Path) -> Path:
    path = Path(path_or_name)
    if path.is_file():
        return path
    name = str(path_or_name)
    looks_like_name = path.suffix == "" and "/" not in name and "\\" not in name
    if looks_like_name:
        folder = shipped_dir("mappings")
        for suffix in (".yaml", ".yml"):
            candidate = folder / f"{name}{suffix}"
            if candidate.is_file():
                return candidate
    choices = shipped_mappings()
    close = difflib.get_close_matches(path.stem, choices, n=1)
    hint = f"give a path to a mapping YAML or one of the shipped mappings: {', '.join(choices)}"
    if close:
        hint = f"did you mean '{close[0]}'? Otherwise {hint}"
    raise InputError("mapping file not found", where=name, hint=hint)


def _compile(pattern: str, *, where: str, field: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as err:
        raise MappingError(
            f"invalid regular expression {pattern!r} at '{field}': {err}",
            where=where,
            hint="patterns are Python regexes matched with re.fullmatch; quote them with single quotes in YAML",
        ) from err


def _check_category(category: str, theory: tuple[str, ...], *, where: str, field: str) -> None:
    if is_valid_category(category, theory):
        return
    choices = [*SYSTEMATIC_CATEGORIES, "Background:<process>", *theory]
    lowered = {c.lower(): c for c in [*SYSTEMATIC_CATEGORIES, *theory]}
    key = (
        category.lower().split(":")[0]
        if category.lower().startswith("background")
        else category.lower()
    )
    close = [lowered[m] for m in difflib.get_close_matches(key, list(lowered), n=1, cutoff=0.5)]
    if close == ["Background"] and ":" in category:
        close = ["Background:" + category.split(":", 1)[1]]
    hint = "valid categories: " + ", ".join(choices)
    hint += "; declare flat theory categories under 'theory_categories'"
    if close:
        hint = f"did you mean '{close[0]}'? {hint}"
    raise MappingError(f"unknown category {category!r} at '{field}'", where=where, hint=hint)


def parse_mapping(document: Any, *, source: str = "<mapping>", sha256: str = "") -> CategoryMapping:
    """Validate a mapping document (already parsed YAML) and build a :class:`CategoryMapping`.

    Raises:
        MappingError: schema violation, bad regex or unknown category.

    Example:
        >>> m = parse_mapping({"mapping_version": 1, "analysis": "toy",
        ...                    "rules": [{"pattern": "JES_.*", "category": "Jets"}]})
        >>> m.rules[0]
        Rule(pattern='JES_.*', category='Jets', group=None)
    """
    validate_document(document, "mapping", where=source, error=MappingError)
    theory = tuple(document.get("theory_categories", ()))
    for index, name in enumerate(theory):
        if is_valid_category(name):
            raise MappingError(
                f"theory category {name!r} at 'theory_categories[{index}]' is an SFitter "
                "systematic category",
                where=source,
                hint="theory categories are flat; use names such as scale, PDF, modelling",
            )
    rules = []
    for index, raw in enumerate(document["rules"]):
        regex = _compile(raw["pattern"], where=source, field=f"rules[{index}].pattern")
        category = raw["category"]
        placeholders = PLACEHOLDER_RE.findall(category)
        missing = [p for p in placeholders if p not in regex.groupindex]
        if missing:
            raise MappingError(
                f"category {category!r} at 'rules[{index}].category' uses {{{missing[0]}}} but the "
                f"pattern has no named group '{missing[0]}'",
                where=source,
                hint="write the group as (?P<name>...) in the pattern, e.g. '(?P<proc>\\w+)_xsec' with "
                "category 'Background:{proc}'",
            )
        if placeholders and not category.startswith("Background:"):
            raise MappingError(
                f"only 'Background:{{group}}' categories may use a placeholder, got {category!r}",
                where=source,
                hint="use a fixed category or 'Background:{name}' with a named group",
            )
        checked = PLACEHOLDER_RE.sub("X", category)
        _check_category(checked, theory, where=source, field=f"rules[{index}].category")
        rules.append(Rule(raw["pattern"], category, raw.get("group")))
    ignore = tuple(document.get("ignore", ()))
    for index, pattern in enumerate(ignore):
        _compile(pattern, where=source, field=f"ignore[{index}]")
    return CategoryMapping(
        analysis=document["analysis"],
        metadata=dict(document.get("metadata") or {}),
        theory_categories=theory,
        rules=tuple(rules),
        ignore=ignore,
        paper_breakdown={
            str(k): float(v) for k, v in (document.get("paper_breakdown") or {}).items()
        },
        source=source,
        sha256=sha256,
        stat_convention=document.get("stat_convention"),
    )


def load_mapping(path_or_name: str | Path) -> CategoryMapping:
    """Read and validate a mapping YAML: a path, or the name of a shipped mapping.

    Args:
        path_or_name: a file path, or a shipped analysis name such as ``"atlas_ttZ_3L"``
            (see :func:`shipped_mappings`).

    Raises:
        InputError: file missing or not valid YAML (with line and column).
        MappingError: schema violation (field path, valid choices), a regex that does not
            compile (rule index, regex error) or an unknown category (valid choices, closest one).

    Example:
        >>> load_mapping("generic_atlas").analysis
        'generic_atlas'
    """
    path = _resolve(path_or_name)
    document = read_document(path, error=MappingError, what="mapping file",
                             hint="start from one of the shipped mappings under mappings/")
    mapping = parse_mapping(document, source=str(path), sha256=sha256_file(path))
    log.debug("loaded mapping %s (%d rules) from %s", mapping.analysis, len(mapping.rules), path)
    return mapping

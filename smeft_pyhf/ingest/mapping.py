"""Nuisance-parameter mappings: ordered regex rules from NP names to SFitter categories.

A mapping YAML (schema ``smeft_pyhf/schemas/mapping.schema.json``, ``mapping_version: 1``) lists
ordered rules ``pattern -> category``; the first rule whose pattern matches the whole NP name
(:func:`re.fullmatch`) wins. Categories are the SFitter systematic categories
(:data:`SYSTEMATIC_CATEGORIES`, Gaussian; ``Background`` takes a per-process suffix such as
``Background:WZ``) or the flat theory categories the mapping declares in ``theory_categories``.
Every parameter except the POI must be mapped or listed under ``ignore``; otherwise
:func:`assign` raises :class:`~smeft_pyhf.exceptions.UnmappedParametersError` listing every
unmapped NP with a suggested category (:func:`suggest_category`).

Loading validates at the boundary: YAML syntax (line and column), then the JSON schema (field path
and valid choices), then semantic checks (each regex compiles, each category is known).

Example:
    >>> m = load_mapping("generic_atlas")
    >>> a = assign(m, ["JET_EffectiveNP_1", "btag_B_0", "Lumi"])
    >>> a.category["JET_EffectiveNP_1"], a.category["btag_B_0"], a.category["Lumi"]
    ('Jets', 'bTagging', 'Luminosity')
    >>> suggest_category("ttW_norm")
    'Background:ttW'
"""

from __future__ import annotations

import difflib
import functools
import json
import logging
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

import yaml

from .._io import sha256_file
from .._resources import shipped_dir
from ..exceptions import InputError, MappingError, UnmappedParametersError
from ..formats.card import SYSTEMATIC_CATEGORIES, is_valid_category

__all__ = [
    "Assignment",
    "CategoryMapping",
    "Rule",
    "assign",
    "assign_partial",
    "category_kind",
    "find_mapping",
    "load_mapping",
    "parse_mapping",
    "shipped_mappings",
    "suggest_category",
]

log = logging.getLogger(__name__)

#: Name of the shipped fallback mapping (broad ATLAS naming heuristics, no catch-all rule).
GENERIC_MAPPING = "generic_atlas"
_MIN_RULE_SHARE = 0.5

_SCHEMA_PATH = Path(__file__).resolve().parents[1] / "schemas" / "mapping.schema.json"
_PLACEHOLDER_RE = re.compile(r"\{(\w+)\}")


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


class Assignment(NamedTuple):
    """Result of :func:`assign`.

    Attributes:
        category: NP -> category label, in the order the parameters were given.
        group: NP -> paper group (the category when the rule has no group).
        ignored: parameters left out through the mapping's ``ignore`` list.
        kinds: category -> ``"systematic"`` (Gaussian) or ``"theory"`` (flat), for every
            category used.
    """

    category: dict[str, str]
    group: dict[str, str]
    ignored: tuple[str, ...]
    kinds: dict[str, Literal["systematic", "theory"]]


# --------------------------------------------------------------------------------------------
# categories


def category_kind(
    category: str, theory_categories: Iterable[str] = ()
) -> Literal["systematic", "theory"]:
    """``"theory"`` for a declared theory category, ``"systematic"`` otherwise.

    Example:
        >>> category_kind("PDF", ["PDF"]), category_kind("Jets")
        ('theory', 'systematic')
    """
    return "theory" if category in set(theory_categories) else "systematic"


# --------------------------------------------------------------------------------------------
# heuristics

_PROCESS_NORM_RE = re.compile(
    r"(?:mu_|norm_|xsec_|XS_|Xsec_)?(?P<proc>[A-Za-z][A-Za-z0-9]*?)_?"
    r"(?:xsec|XSec|Xsec|XS|xs|norm|Norm|NORM|_?[Nn]ormalisation|_?[Nn]ormalization)(?:_.*)?"
)
_PREFIX_PROCESS_RE = re.compile(
    r"(?:xsec|XSec|Xsec|XS|norm|Norm|NORM|mu)_(?P<proc>[A-Za-z][A-Za-z0-9]*)(?:_.*)?"
)

# Ordered heuristics: (regex searched anywhere in the name, category). The first hit wins.
_B = r"(?:^|(?<=_))"  # start of a name token (start of string or after "_")
_E = r"(?:$|(?=_))"  # end of a name token

# Ordered heuristics: (regex searched anywhere in the name, category). The first hit wins.
_HEURISTICS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), category)
    for pattern, category in (
        (r"^(staterror|shapesys|stat)_|^gamma_stat|MCstat|mcstat", "Background:MCstat"),
        (
            rf"(?i)fake|nonprompt|non_prompt|misid|multijet|{_B}(FF|MM|QCD){_E}",
            "Background:Fakes",
        ),
        (rf"(?i){_B}lumi|luminosity", "Luminosity"),
        (rf"(?i)pileup|pile_up|{_B}PRW{_E}", "Pileup"),
        (r"(?i)trig", "Trigger"),
        (rf"(?i){_B}(tau|taus|TES){_E}|{_B}tau_?(id|eff|sf)", "tauTagging"),
        (
            r"(?i)(btag|b_tag|bTagSF|FT_EFF|MV2c10|DL1|ftag).*light|light.*(btag|tag|mistag)",
            "LightTagging",
        ),
        (r"(?i)btag|b_tag|bTagSF|FT_EFF|MV2c10|DL1|ftag", "bTagging"),
        (r"(?i)toptag|top_tag|ttag", "tTagging"),
        (rf"(?i){_B}(MET|ETmiss){_E}|SoftTrk|SoftTerm|ETmiss", "ETmis"),
        (rf"(?i){_B}(jet|jets|jes|jer|jvt|fjvt){_E}|{_B}(JET|JES|JER)_", "Jets"),
        (
            rf"(?i){_B}(EG|EL|MU|MUON|Muon|Electron|Photon|PH|lep|lepton){_E}|leptonSF|electron|muon|egamma",
            "Leptons",
        ),
        (r"(?i)A14|tune|var3c", "Tune"),
        (rf"(?i)shower|herwig|pythia|hdamp|{_B}(PS|FSR|had){_E}", "partonShower"),
        (rf"(?i){_B}ISR{_E}", "Tune"),
        (r"(?i)muR|muF|scale|renorm|factori[sz]", "scale"),
        (rf"(?i)pdf|{_B}alpha_?s{_E}", "PDF"),
        (
            r"(?i)generator|hard_?scatter|matching|ckkw|csskin|model|aMCatNLO|madgraph|sherpa|powheg|reweight",
            "modelling",
        ),
    )
)


def suggest_category(parameter: str) -> str:
    """Guess an SFitter category for an NP name from ATLAS/CMS naming habits.

    Only a suggestion (used in error messages and by ``smeft-pyhf inspect``): process
    normalisations (``ttW_norm``, ``ZZ_b_xsec``, ``mu_ZZ``) become ``Background:<process>``,
    detector terms their detector category, ``muR``/``muF`` ``scale`` and PDFs ``PDF`` (theory).
    Names it cannot place give ``"?"``.

    Example:
        >>> [suggest_category(n) for n in ["JES_Flavor_Comp", "BTag_B_NP1", "BTag_Light_NP2",
        ...                                  "MET_SoftTrk_Scale", "PRW", "ttZ_muR", "mu_ZZ"]]
        ['Jets', 'bTagging', 'LightTagging', 'ETmis', 'Pileup', 'scale', 'Background:ZZ']
        >>> suggest_category("xyz")
        '?'
    """
    name = parameter.strip()
    generic = _generic_mapping()
    if generic is not None:
        rule = _match(generic, name)
        if rule is not None:
            return rule.category
    for regex, category in _HEURISTICS[:1]:
        if regex.search(name):
            return category
    process = _process_of_normalisation(name)
    if process is not None:
        return f"Background:{process}"
    for regex, category in _HEURISTICS[1:]:
        if regex.search(name):
            return category
    return "?"


def _generic_mapping() -> CategoryMapping | None:
    """The shipped generic ATLAS mapping, or None if it cannot be loaded."""
    folder = shipped_dir("mappings")
    path = folder / f"{GENERIC_MAPPING}.yaml"
    if not path.is_file():
        return None
    try:
        return _load_cached(str(path), path.stat().st_mtime_ns)
    except (MappingError, InputError) as err:  # pragma: no cover - shipped file is tested
        log.warning("cannot load the generic mapping: %s", err)
        return None


def _process_of_normalisation(name: str) -> str | None:
    """The process of a normalisation/cross-section NP (``ttW_norm`` -> ``ttW``), else None."""
    if re.search(r"(?i)lumi|fake|pdf|scale|mu[RF]", name):
        return None
    match = _PROCESS_NORM_RE.fullmatch(name)
    if match is None:
        match = _PREFIX_PROCESS_RE.fullmatch(name)
    if match is None:
        return None
    proc = match.group("proc")
    if proc.lower() in {"sig", "signal", "mu", "poi"}:
        return None
    return proc


# --------------------------------------------------------------------------------------------
# loading


@functools.lru_cache(maxsize=1)
def _schema() -> dict[str, Any]:
    return json.loads(_SCHEMA_PATH.read_text(encoding="utf-8"))


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


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise InputError(f"cannot read mapping file ({err.strerror})", where=str(path)) from err
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = str(path) if mark is None else f"{path}:{mark.line + 1}:{mark.column + 1}"
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise InputError(
            f"is not valid YAML ({problem})",
            where=where,
            hint="check indentation, quoting of regexes (use single quotes) and colons",
        ) from err


def _field_path(parts: Iterable[Any]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _validate_schema(document: Any, where: str) -> None:
    import jsonschema

    validator = jsonschema.Draft202012Validator(_schema())
    errors = sorted(validator.iter_errors(document), key=lambda e: (len(e.path), list(e.path)))
    if not errors:
        return
    # an unknown key is usually a typo of a missing one: report it first
    typos = [e for e in errors if e.validator == "additionalProperties"]
    error = typos[0] if typos else jsonschema.exceptions.best_match(errors)
    field = _field_path(error.absolute_path)
    hint = None
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = (
            sorted(set(error.instance) - set(allowed)) if isinstance(error.instance, dict) else []
        )
        close = [m for key in extra for m in difflib.get_close_matches(key, allowed, n=1)]
        hint = f"valid keys here: {', '.join(allowed)}"
        if close:
            hint = f"did you mean '{close[0]}'? {hint}"
    elif error.validator == "enum":
        hint = "valid choices: " + ", ".join(map(str, error.validator_value))
    elif error.validator == "const":
        hint = f"the only supported value is {error.validator_value!r}"
    elif error.validator == "required":
        hint = "add the missing key (see smeft_pyhf/schemas/mapping.schema.json)"
    raise MappingError(
        f"invalid mapping at '{field}': {error.message}",
        where=where,
        hint=hint or "see smeft_pyhf/schemas/mapping.schema.json",
    )


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
    _validate_schema(document, source)
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
        placeholders = _PLACEHOLDER_RE.findall(category)
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
        checked = _PLACEHOLDER_RE.sub("X", category)
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
    document = _read_yaml(path)
    if not isinstance(document, dict):
        raise MappingError(
            "a mapping file must be a YAML mapping (key: value) at the top level",
            where=str(path),
            hint="start from one of the shipped mappings under mappings/",
        )
    mapping = parse_mapping(document, source=str(path), sha256=sha256_file(path))
    log.debug("loaded mapping %s (%d rules) from %s", mapping.analysis, len(mapping.rules), path)
    return mapping


# --------------------------------------------------------------------------------------------
# assignment


@functools.lru_cache(maxsize=256)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _is_ignored(mapping: CategoryMapping, name: str) -> bool:
    return any(name == item or _compiled(item).fullmatch(name) for item in mapping.ignore)


def _match(mapping: CategoryMapping, name: str) -> Rule | None:
    """The first rule fully matching ``name``, with any ``{group}`` placeholder filled in."""
    for rule in mapping.rules:
        match = _compiled(rule.pattern).fullmatch(name)
        if match:
            if "{" in rule.category:
                groups = match.groupdict()

                def fill(m: re.Match[str], groups: dict[str, str | None] = groups) -> str:
                    return re.sub(r"[^A-Za-z0-9_.+\-]", "_", groups.get(m.group(1)) or "X")

                category = _PLACEHOLDER_RE.sub(fill, rule.category)
                return rule._replace(category=category)
            return rule
    return None


def _partial_assign(mapping: CategoryMapping, parameters: Sequence[str]) -> tuple[Assignment, list[str]]:
    category: dict[str, str] = {}
    group: dict[str, str] = {}
    ignored: list[str] = []
    unmapped: list[str] = []
    for name in parameters:
        if _is_ignored(mapping, name):
            ignored.append(name)
            continue
        rule = _match(mapping, name)
        if rule is None:
            unmapped.append(name)
            continue
        category[name] = rule.category
        group[name] = rule.group or rule.category
    kinds = {
        c: category_kind(c, mapping.theory_categories) for c in dict.fromkeys(category.values())
    }
    return Assignment(category, group, tuple(ignored), kinds), unmapped


def assign(mapping: CategoryMapping, parameters: Sequence[str]) -> Assignment:
    """Assign every parameter to a category (first full match wins; ``ignore`` first).

    Args:
        mapping: a loaded mapping.
        parameters: the NP names to assign (normally all model parameters except the POI).

    Raises:
        UnmappedParametersError: some parameters match no rule and are not ignored; the message
            lists every one with :func:`suggest_category`; the exception carries ``unmapped``
            (tuple of names) and ``suggestions`` (name -> category).

    Example:
        >>> m = parse_mapping({"mapping_version": 1, "analysis": "toy", "ignore": ["lumi"],
        ...                    "rules": [{"pattern": "JES_Flavor.*", "category": "Jets"},
        ...                              {"pattern": "JES_.*", "category": "Background:X"}]})
        >>> a = assign(m, ["JES_Flavor_Resp", "JES_Pileup", "lumi"])
        >>> a.category, a.ignored
        ({'JES_Flavor_Resp': 'Jets', 'JES_Pileup': 'Background:X'}, ('lumi',))
    """
    result, unmapped = _partial_assign(mapping, parameters)
    if unmapped:
        suggestions = {name: suggest_category(name) for name in unmapped}
        listing = "; ".join(f"{name} (suggested: {cat})" for name, cat in suggestions.items())
        err = UnmappedParametersError(
            f"{len(unmapped)} parameter(s) match no rule of mapping '{mapping.analysis}' and are "
            f"not ignored: {listing}",
            where=mapping.source,
            hint="add rules (pattern -> category) for them, list them under 'ignore', or pass "
            "another --mapping; suggested categories are heuristics, check them",
        )
        err.unmapped = tuple(unmapped)  # type: ignore[attr-defined]
        err.suggestions = suggestions  # type: ignore[attr-defined]
        raise err
    unused = [
        r.pattern
        for r in mapping.rules
        if not any(_compiled(r.pattern).fullmatch(p) for p in result.category)
    ]
    if unused:
        log.debug(
            "mapping %s: %d rule(s) matched nothing: %s", mapping.analysis, len(unused), unused
        )
    return result


def assign_partial(
    mapping: CategoryMapping, parameters: Sequence[str]
) -> tuple[Assignment, tuple[str, ...]]:
    """Like :func:`assign` but returns the unmapped parameters instead of raising.

    Example:
        >>> a, unmapped = assign_partial(load_mapping("generic_atlas"), ["JES_1", "weird_np"])
        >>> a.category, unmapped
        ({'JES_1': 'Jets'}, ('weird_np',))
    """
    result, unmapped = _partial_assign(mapping, parameters)
    return result, tuple(unmapped)


# --------------------------------------------------------------------------------------------
# finding a shipped mapping


@functools.lru_cache(maxsize=64)
def _load_cached(path: str, mtime_ns: int) -> CategoryMapping:
    return load_mapping(path)


def _shipped() -> list[CategoryMapping]:
    folder = shipped_dir("mappings")
    out = []
    for name in shipped_mappings():
        path = folder / f"{name}.yaml"
        if not path.is_file():
            path = folder / f"{name}.yml"
        try:
            out.append(_load_cached(str(path), path.stat().st_mtime_ns))
        except (MappingError, InputError) as err:  # a broken shipped file must not hide the others
            log.warning("skipping shipped mapping %s: %s", path, err)
    return out


def find_mapping(
    workspace_sha256: str | None,
    parameter_names: Iterable[str],
    *,
    fallback: bool = True,
) -> CategoryMapping | None:
    """The shipped mapping that fits a workspace, or None.

    Order of preference:

    1. a curated mapping whose ``metadata.workspace_sha256`` equals ``workspace_sha256`` and
       which maps every parameter;
    2. a curated mapping that maps (or ignores) every parameter and at least half of whose
       rules match something (so that a few generic names such as ``JES_1`` do not make a
       small workspace look like that analysis); ties are broken by ``metadata.n_parameters``
       closest to the number of names given, then by the larger share of rules used;
    3. with ``fallback``, the generic ATLAS mapping (:data:`GENERIC_MAPPING`) if it maps at least
       half of the parameters (it has no catch-all rule, so :func:`assign` then reports the rest).

    Args:
        workspace_sha256: sha256 of the workspace file bytes (None if unknown).
        parameter_names: the parameters to map (normally all except the POI).
        fallback: return the generic mapping when no curated one fits.

    Example:
        >>> find_mapping(None, ["JES_1", "btag_B_0", "Lumi"]).analysis
        'generic_atlas'
        >>> find_mapping(None, ["alpha_syst1", "gamma_2"]) is None
        True
    """
    names = list(dict.fromkeys(parameter_names))
    mappings = _shipped()
    curated = [m for m in mappings if m.analysis != GENERIC_MAPPING]
    if workspace_sha256:
        for mapping in curated:
            if mapping.metadata.get("workspace_sha256") == workspace_sha256:
                poi = (mapping.metadata.get("observable") or {}).get("poi")
                _, unmapped = _partial_assign(mapping, [n for n in names if n != poi])
                if not unmapped:
                    log.info("mapping %s chosen by workspace sha256", mapping.analysis)
                    return mapping
                log.warning(
                    "mapping %s was curated for this file but leaves %d parameter(s) unmapped",
                    mapping.analysis,
                    len(unmapped),
                )
    candidates = []
    for mapping in curated:
        # tolerate the POI among the names: a curated mapping does not map its own POI
        poi = (mapping.metadata.get("observable") or {}).get("poi")
        assignment, unmapped = _partial_assign(mapping, [n for n in names if n != poi])
        if unmapped or not names:
            continue
        used = {
            p
            for p in mapping.rules
            if any(_compiled(p.pattern).fullmatch(n) for n in assignment.category)
        }
        share = len(used) / max(len(mapping.rules), 1)
        if share < _MIN_RULE_SHARE:  # covers a few names by chance: another analysis
            continue
        n_expected = mapping.metadata.get("n_parameters")
        distance = abs(n_expected - 1 - len(names)) if isinstance(n_expected, int) else 10**9
        candidates.append((distance, -share, mapping.analysis, mapping))
    if candidates:
        best = min(candidates, key=lambda c: c[:3])[3]
        log.info("mapping %s chosen: it maps every parameter", best.analysis)
        return best
    if fallback and names:
        for mapping in mappings:
            if mapping.analysis == GENERIC_MAPPING:
                assignment, unmapped = _partial_assign(mapping, names)
                if len(assignment.category) + len(assignment.ignored) >= 0.5 * len(names):
                    log.info(
                        "no curated mapping fits; using %s (%d unmapped)",
                        mapping.analysis,
                        len(unmapped),
                    )
                    return mapping
    return None

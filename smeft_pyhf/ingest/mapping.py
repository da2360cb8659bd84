"""Nuisance-parameter mappings: ordered regex rules from NP names to SFitter categories.

A mapping YAML (schema ``smeft_pyhf/schemas/mapping.schema.json``, ``mapping_version: 1``) lists
ordered rules ``pattern -> category``; the first rule whose pattern matches the whole NP name
(:func:`re.fullmatch`) wins. Categories are the SFitter systematic categories
(:data:`~smeft_pyhf.formats.card.SYSTEMATIC_CATEGORIES`, Gaussian; ``Background`` takes a per-process suffix such as
``Background:WZ``) or the flat theory categories the mapping declares in ``theory_categories``.
Every parameter except the POI must be mapped or listed under ``ignore``; otherwise
:func:`assign` raises :class:`~smeft_pyhf.exceptions.UnmappedParametersError` listing every
unmapped NP with a suggested category (:func:`suggest_category`).

The document itself (:class:`CategoryMapping`, :class:`Rule`, its schema and reader
:func:`load_mapping`) lives in :mod:`smeft_pyhf.formats.mapping`; this module assigns parameters
with it, guesses categories from names and finds the shipped mapping that fits a workspace.

Example:
    >>> m = load_mapping("generic_atlas")
    >>> a = assign(m, ["JET_EffectiveNP_1", "btag_B_0", "Lumi"])
    >>> a.category["JET_EffectiveNP_1"], a.category["btag_B_0"], a.category["Lumi"]
    ('Jets', 'bTagging', 'Luminosity')
    >>> suggest_category("ttW_norm")
    'Background:ttW'
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterable, Sequence
from typing import Literal, NamedTuple

from .._resources import shipped_dir
from ..exceptions import InputError, MappingError, UnmappedParametersError
from ..formats.mapping import (
    PLACEHOLDER_RE,
    CategoryMapping,
    Rule,
    load_mapping,
    parse_mapping,
    shipped_mappings,
)

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

                category = PLACEHOLDER_RE.sub(fill, rule.category)
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

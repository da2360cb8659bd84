"""Summarise a HistFactory workspace without fitting it: channels, samples, modifiers, parameters
and the nuisance parameters per SFitter category.

The mapping used for the categories is the one given, else the shipped mapping that fits the
workspace (:func:`~smeft_pyhf.ingest.mapping.find_mapping`: curated by file hash or coverage, else
the generic ATLAS rules). Parameters no mapping covers are listed with a *suggested* category
(:func:`~smeft_pyhf.ingest.mapping.suggest_category`), clearly marked as suggestions. A workspace
whose POI no sample uses (a background-only file) is inspected with ``poi_name=None``.

Example:
    >>> from smeft_pyhf._resources import shipped_dir
    >>> result = inspect_workspace(shipped_dir("workspaces") / "example_ttZ_like.json")
    >>> result.poi, len(result.channels) > 0
    ('mu_ttZ', True)
"""

from __future__ import annotations

import logging
import os
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

from ..exceptions import SmeftPyhfError, WorkspaceError
from ..formats.card import SYSTEMATIC_CATEGORIES
from .mapping import (
    CategoryMapping,
    assign_partial,
    category_kind,
    find_mapping,
    load_mapping,
    suggest_category,
)
from .workspace import LoadedWorkspace, load_workspace

__all__ = [
    "CategorySummary",
    "ChannelSummary",
    "InspectResult",
    "ModifierSummary",
    "draft_mapping",
    "format_inspect",
    "inspect_loaded",
    "inspect_to_dict",
    "inspect_workspace",
]

log = logging.getLogger(__name__)

MappingMode = Literal["given", "curated", "generic", "none"]


class ChannelSummary(NamedTuple):
    """One channel (region).

    Attributes:
        name: channel name.
        n_bins: number of bins.
        observed: observed counts per bin.
        samples: the samples of this channel.
    """

    name: str
    n_bins: int
    observed: tuple[float, ...]
    samples: tuple[str, ...]


class ModifierSummary(NamedTuple):
    """All modifiers of one type.

    Attributes:
        type: modifier type (``normsys``, ``histosys``, ``staterror``, ...).
        n_names: number of distinct modifier names (parameters).
        n_instances: number of (channel, sample, modifier) occurrences.
        names: the distinct names, sorted.
    """

    type: str
    n_names: int
    n_instances: int
    names: tuple[str, ...]


class CategorySummary(NamedTuple):
    """The nuisance parameters of one category.

    Attributes:
        category: category label (``Jets``, ``Background:WZ``, ``scale``, ... or ``?``).
        kind: ``systematic`` (Gaussian), ``theory`` (flat) or ``suggested`` (no mapping rule
            covers these parameters: the category is a naming heuristic, not a decision).
        parameters: parameter names.
    """

    category: str
    kind: Literal["systematic", "theory", "suggested"]
    parameters: tuple[str, ...]


class InspectResult(NamedTuple):
    """Summary of a workspace (see :func:`inspect_workspace`).

    Attributes:
        source: the workspace path as given (with patch/combination noted in ``warnings``).
        sha256: sha256 of the workspace file bytes (of the hashes, for a combination).
        patch_sha256: sha256 of the patch, if any.
        measurement: the measurement used.
        poi: the POI, or None.
        channels: one :class:`ChannelSummary` per channel.
        samples: distinct sample names.
        modifiers: one :class:`ModifierSummary` per modifier type.
        n_parameters: number of model parameters (``model.config.npars``, bins of a
            staterror/shapesys counted one by one).
        n_parameter_sets: number of named parameter sets.
        n_auxdata: number of auxiliary data.
        parameters: the parameter-set names in model order.
        fixed: fixed parameter sets -> their value(s).
        free_normfactors: unconstrained normalisation factors other than the POI.
        mapping: analysis name of the mapping used, or None.
        mapping_source: file of that mapping, or None.
        mapping_mode: ``given`` (``mapping=``), ``curated`` / ``generic`` (found automatically)
            or ``none``.
        categories: NPs per category; parameters not covered by the mapping come last with
            kind ``suggested``.
        ignored: parameters the mapping ignores on purpose.
        unmapped: parameters the mapping does not cover -> suggested category.
        warnings: remarks from loading and mapping.
        parameter_samples: parameter-set name -> the samples its modifiers act on.
    """

    source: str
    sha256: str
    patch_sha256: str | None
    measurement: str
    poi: str | None
    channels: tuple[ChannelSummary, ...]
    samples: tuple[str, ...]
    modifiers: tuple[ModifierSummary, ...]
    n_parameters: int
    n_parameter_sets: int
    n_auxdata: int
    parameters: tuple[str, ...]
    fixed: dict[str, Any]
    free_normfactors: tuple[str, ...]
    mapping: str | None
    mapping_source: str | None
    mapping_mode: MappingMode
    categories: tuple[CategorySummary, ...]
    ignored: tuple[str, ...]
    unmapped: dict[str, str]
    warnings: tuple[str, ...]
    parameter_samples: dict[str, tuple[str, ...]] | None = None


def _parameter_samples(spec: dict[str, Any]) -> dict[str, tuple[str, ...]]:
    found: dict[str, dict[str, None]] = defaultdict(dict)
    for channel in spec["channels"]:
        for sample in channel["samples"]:
            for modifier in sample["modifiers"]:
                found[modifier["name"]][sample["name"]] = None
    return {name: tuple(samples) for name, samples in found.items()}


def _modifier_table(spec: dict[str, Any]) -> tuple[ModifierSummary, ...]:
    names: dict[str, set[str]] = defaultdict(set)
    instances: Counter[str] = Counter()
    for channel in spec["channels"]:
        for sample in channel["samples"]:
            for modifier in sample["modifiers"]:
                names[modifier["type"]].add(modifier["name"])
                instances[modifier["type"]] += 1
    return tuple(
        ModifierSummary(kind, len(names[kind]), instances[kind], tuple(sorted(names[kind])))
        for kind in sorted(names, key=lambda k: (-len(names[k]), k))
    )


def _resolve_mapping(
    mapping: str | os.PathLike[str] | CategoryMapping | None,
    *,
    auto_mapping: bool,
    sha256: str,
    names: Sequence[str],
) -> tuple[CategoryMapping | None, MappingMode]:
    if isinstance(mapping, CategoryMapping):
        return mapping, "given"
    if mapping is not None:
        return load_mapping(mapping), "given"
    if not auto_mapping:
        return None, "none"
    found = find_mapping(sha256, names)
    if found is None:
        return None, "none"
    return found, ("generic" if found.analysis == "generic_atlas" else "curated")


def _channel_summaries(loaded: LoadedWorkspace) -> list[ChannelSummary]:
    """One :class:`ChannelSummary` per channel of the model."""
    config = loaded.model.config
    channels = []
    for channel in loaded.model.spec["channels"]:
        observed = tuple(
            float(x) for x in loaded.workspace.observations.get(channel["name"], ())
        )
        channels.append(
            ChannelSummary(
                name=channel["name"],
                n_bins=int(config.channel_nbins[channel["name"]]),
                observed=observed,
                samples=tuple(sample["name"] for sample in channel["samples"]),
            )
        )
    return channels


def _fixed_and_free(
    config: Any, parameters: Sequence[str], poi: str | None
) -> tuple[dict[str, Any], list[str]]:
    """The fixed parameters (name -> value, or values of a multi-bin set) and the free
    normalisations (unconstrained, floating, not the POI)."""
    fixed_flags = config.suggested_fixed()
    inits = config.suggested_init()
    fixed: dict[str, Any] = {}
    free_normfactors = []
    for name in parameters:
        slc = config.par_slice(name)
        if all(fixed_flags[slc]):
            values = [float(v) for v in inits[slc]]
            fixed[name] = values[0] if len(values) == 1 else values
        paramset = config.param_set(name)
        if name != poi and not getattr(paramset, "constrained", False) and name not in fixed:
            free_normfactors.append(name)
    return fixed, free_normfactors


def _categories(
    chosen: CategoryMapping | None, names: Sequence[str], warnings: list[str]
) -> tuple[list[CategorySummary], tuple[str, ...], dict[str, str]]:
    """The categories of ``names``: the mapping's (by kind), then suggested ones for the
    parameters it does not cover; also the ignored names and the unmapped name -> suggestion.
    Appends a warning when suggestions were needed."""
    categories: list[CategorySummary] = []
    ignored: tuple[str, ...] = ()
    unmapped_names: tuple[str, ...] = tuple(names)
    if chosen is not None:
        assignment, unmapped_names = assign_partial(chosen, names)
        ignored = assignment.ignored
        grouped: dict[str, list[str]] = defaultdict(list)
        for name, category in assignment.category.items():
            grouped[category].append(name)
        for category in sorted(
            grouped, key=lambda c: (category_kind(c, chosen.theory_categories), c)
        ):
            categories.append(
                CategorySummary(
                    category,
                    category_kind(category, chosen.theory_categories),
                    tuple(grouped[category]),
                )
            )
        if unmapped_names:
            warnings.append(
                f"{len(unmapped_names)} parameter(s) not covered by mapping '{chosen.analysis}'; "
                "their categories below are suggestions"
            )
    else:
        warnings.append("no shipped mapping fits this workspace; all categories are suggestions")
    unmapped = {name: suggest_category(name) for name in unmapped_names}
    suggested: dict[str, list[str]] = defaultdict(list)
    for name, category in unmapped.items():
        suggested[category].append(name)
    for category in sorted(suggested):
        categories.append(CategorySummary(category, "suggested", tuple(suggested[category])))
    return categories, ignored, unmapped


def inspect_loaded(
    loaded: LoadedWorkspace,
    *,
    mapping: str | os.PathLike[str] | CategoryMapping | None = None,
    auto_mapping: bool = True,
    measurement: str | None = None,
) -> InspectResult:
    """Summarise an already loaded workspace (see :func:`inspect_workspace`).

    Args:
        loaded: result of :func:`~smeft_pyhf.ingest.workspace.load_workspace`.
        measurement: the measurement the model was built for (for the report; default the
            workspace's first).
        mapping: a mapping (object, path or shipped name); None to look one up.
        auto_mapping: look up a shipped mapping when ``mapping`` is None.

    Raises:
        InputError, MappingError: the given mapping cannot be read or is invalid.
    """
    model = loaded.model
    config = model.config
    workspace = loaded.workspace
    spec = model.spec
    if measurement is None:
        measurement = workspace.measurement_names[0] if workspace.measurement_names else ""

    channels = _channel_summaries(loaded)
    parameters = tuple(config.par_order)
    fixed, free_normfactors = _fixed_and_free(config, parameters, loaded.poi)
    names = [name for name in parameters if name != loaded.poi]
    chosen, mode = _resolve_mapping(
        mapping, auto_mapping=auto_mapping, sha256=loaded.sha256, names=names
    )
    warnings = list(loaded.warnings)
    categories, ignored, unmapped = _categories(chosen, names, warnings)

    samples = tuple(dict.fromkeys(s for c in channels for s in c.samples))
    result = InspectResult(
        source=loaded.source,
        sha256=loaded.sha256,
        patch_sha256=loaded.patch_sha256,
        measurement=measurement,
        poi=loaded.poi,
        channels=tuple(channels),
        samples=samples,
        modifiers=_modifier_table(spec),
        n_parameters=int(config.npars),
        n_parameter_sets=len(parameters),
        n_auxdata=len(config.auxdata),
        parameters=parameters,
        fixed=fixed,
        free_normfactors=tuple(free_normfactors),
        mapping=chosen.analysis if chosen is not None else None,
        mapping_source=chosen.source if chosen is not None else None,
        mapping_mode=mode,
        categories=tuple(categories),
        ignored=ignored,
        unmapped=unmapped,
        warnings=tuple(warnings),
        parameter_samples=_parameter_samples(spec),
    )
    log.debug("inspected %s: %d parameters", loaded.source, result.n_parameters)
    return result


def inspect_workspace(
    path: str | os.PathLike[str],
    *,
    patch: str | os.PathLike[str] | None = None,
    patch_name: str | None = None,
    poi: str | None = None,
    measurement: str | None = None,
    combine: Sequence[str | os.PathLike[str]] = (),
    mapping: str | os.PathLike[str] | CategoryMapping | None = None,
    auto_mapping: bool = True,
    rootdir: str | os.PathLike[str] | None = None,
) -> InspectResult:
    """Load a workspace (no fit) and summarise it.

    Args:
        path: workspace ``.json``/``.json.gz`` or HistFactory ``.xml``.
        patch: JSON Patch, PatchSet entry or PatchSet to apply.
        patch_name: entry of a PatchSet.
        poi: POI to use instead of the measurement's.
        measurement: measurement name (default: the first).
        combine: further workspaces combined with ``path`` (parameters correlated by name).
        mapping: mapping (object, path or shipped name); None to look one up.
        auto_mapping: look up a shipped mapping when ``mapping`` is None.
        rootdir: for HistFactory XML inputs, the folder their ``<Input>`` paths are relative to.

    Returns:
        An :class:`InspectResult`. A background-only workspace (POI used by no sample) is
        built without POI rather than rejected.

    Raises:
        InputError, WorkspaceError: the workspace cannot be read or built (e.g. a patch that
            lists a modifier twice in one sample).
        MappingError: the given mapping is invalid.

    Example:
        >>> from smeft_pyhf._resources import shipped_dir
        >>> r = inspect_workspace(shipped_dir("workspaces") / "example_ttZ_like.json")
        >>> r.n_parameters == len(r.parameters) or r.n_parameters > len(r.parameters)
        True
    """
    try:
        loaded = load_workspace(
            path,
            patch=patch,
            patch_name=patch_name,
            poi=poi,
            measurement=measurement,
            combine=combine,
            require_poi=False,
            rootdir=rootdir,
        )
    except SmeftPyhfError:
        raise
    except (AttributeError, TypeError, KeyError, IndexError, ValueError) as err:
        # a structurally odd file that slipped past the loader's checks: report, no traceback
        log.debug("loading %s failed", path, exc_info=True)
        raise WorkspaceError(
            f"cannot be read as a HistFactory workspace ({type(err).__name__}: {err})",
            where=str(path),
            hint="check that the file is a pyhf workspace (channels, observations, measurements, version)",
        ) from err
    return inspect_loaded(
        loaded, mapping=mapping, auto_mapping=auto_mapping, measurement=measurement
    )


def inspect_to_dict(result: InspectResult) -> dict[str, Any]:
    """A JSON-serialisable dict of an :class:`InspectResult`.

    Example:
        >>> from smeft_pyhf._resources import shipped_dir
        >>> d = inspect_to_dict(inspect_workspace(shipped_dir("workspaces") / "example_ttZ_like.json"))
        >>> sorted(d)[:3]
        ['categories', 'channels', 'fixed']
    """
    out = result._asdict()
    out["channels"] = [c._asdict() for c in result.channels]
    out["modifiers"] = [m._asdict() for m in result.modifiers]
    out["categories"] = [c._asdict() for c in result.categories]
    for key, value in list(out.items()):
        if isinstance(value, tuple):
            out[key] = list(value)
    for entry in (*out["channels"], *out["modifiers"], *out["categories"]):
        for key, value in list(entry.items()):
            if isinstance(value, tuple):
                entry[key] = list(value)
    return out


def _short_list(names: Sequence[str], limit: int = 6) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... (+{len(names) - limit})" if len(names) > limit else "")


def format_inspect(result: InspectResult, *, verbose: bool = False) -> str:
    """A plain-text report of an :class:`InspectResult` (what ``smeft-pyhf inspect`` prints).

    Args:
        result: the summary.
        verbose: list every parameter of each category (default: the first few).

    Example:
        >>> from smeft_pyhf._resources import shipped_dir
        >>> text = format_inspect(inspect_workspace(shipped_dir("workspaces") / "example_ttZ_like.json"))
        >>> text.splitlines()[0].startswith("Workspace:")
        True
    """
    limit = 10**9 if verbose else 4
    lines = [f"Workspace: {result.source}", f"  sha256: {result.sha256}"]
    if result.patch_sha256:
        lines.append(f"  patch sha256: {result.patch_sha256}")
    lines.append(f"  measurement: {result.measurement}    POI: {result.poi or '(none)'}")
    n_bins = sum(c.n_bins for c in result.channels)
    lines.append("")
    lines.append(
        f"Channels: {len(result.channels)}  bins: {n_bins}  samples: {len(result.samples)}"
    )
    width = max([len(c.name) for c in result.channels] + [7])
    lines.append(f"  {'channel':<{width}}  bins  observed  samples")
    for channel in result.channels:
        lines.append(
            f"  {channel.name:<{width}}  {channel.n_bins:>4}  {sum(channel.observed):>8.6g}  "
            f"{len(channel.samples)}"
        )
    lines.append(f"  samples: {_short_list(list(result.samples), 20)}")
    lines.append("")
    lines.append("Modifiers (unique names / instances):")
    for mod in result.modifiers:
        lines.append(
            f"  {mod.type:<11} {mod.n_names:>5} / {mod.n_instances:<6} {_short_list(list(mod.names), 4)}"
        )
    lines.append("")
    lines.append(
        f"Parameters: {result.n_parameters} ({result.n_parameter_sets} named sets, "
        f"{result.n_auxdata} auxiliary data)"
    )
    lines.append(f"  POI: {result.poi or '(none)'}")
    fixed = ", ".join(f"{k}={v}" for k, v in result.fixed.items()) or "(none)"
    lines.append(f"  fixed: {fixed}")
    lines.append(f"  free normalisations: {', '.join(result.free_normfactors) or '(none)'}")
    lines.append("")
    if result.mapping is None:
        lines.append("Mapping: none found")
    else:
        lines.append(f"Mapping: {result.mapping} ({result.mapping_mode}; {result.mapping_source})")
    mapped = [c for c in result.categories if c.kind != "suggested"]
    suggested = [c for c in result.categories if c.kind == "suggested"]
    if mapped:
        lines.append("  NPs by category:")
        for cat in mapped:
            lines.append(
                f"    {cat.category:<22} {cat.kind:<10} {len(cat.parameters):>4}  "
                f"{_short_list(list(cat.parameters), limit)}"
            )
    if result.ignored:
        lines.append(f"  ignored: {', '.join(result.ignored)}")
    if suggested:
        lines.append(
            f"  SUGGESTED categories for {len(result.unmapped)} unmapped NP(s) "
            "(naming heuristics, not a mapping: check them and write rules):"
        )
        for cat in suggested:
            lines.append(
                f"    {cat.category:<22} {'suggested':<10} {len(cat.parameters):>4}  "
                f"{_short_list(list(cat.parameters), limit)}"
            )
    if result.warnings:
        lines.append("")
        lines.extend(f"Note: {w}" for w in result.warnings)
    return "\n".join(lines)


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _guess_category(parameter: str, result: InspectResult) -> str:
    """The category a draft gives a parameter no naming rule places.

    A parameter acting on one background sample goes to ``Background:<sample>``, one acting
    only on the POI's (signal) samples to the flat ``modelling`` category, anything else to the
    plain ``Background`` category.
    """
    samples = (result.parameter_samples or {}).get(parameter, ())
    signal = set((result.parameter_samples or {}).get(result.poi or "", ()))
    if len(samples) == 1 and samples[0] not in signal:
        process = re.sub(r"[^A-Za-z0-9_.+-]", "_", samples[0])
        return f"Background:{process}"
    if samples and set(samples) <= signal:
        return "modelling"
    return "Background"


def draft_mapping(result: InspectResult, *, analysis: str | None = None) -> str:
    """A draft mapping YAML for the inspected workspace: one exact-name rule per NP.

    Categories come from the mapping used (if any) or from :func:`suggest_category`; rules
    with a suggested category are listed under a ``SUGGESTED`` comment. Names the naming
    heuristics cannot place get a best guess from the samples they act on
    (``Background:<sample>``, ``modelling`` for signal-only ones, else ``Background``) and a
    ``# GUESS`` comment, so the draft loads as it is. Fixed parameters go to ``ignore``. Edit the
    draft (check the guesses, merge rules into regexes, add groups and metadata) before using
    it.

    Args:
        result: an inspected workspace.
        analysis: analysis name (default: the workspace file stem).

    Example:
        >>> from smeft_pyhf._resources import shipped_dir
        >>> r = inspect_workspace(shipped_dir("workspaces") / "example_ttZ_like.json")
        >>> draft_mapping(r, analysis="mine").splitlines()[3]
        'mapping_version: 1'
    """
    name = analysis or Path(result.source).name.split(".")[0]
    name = re.sub(r"[^A-Za-z0-9_.+-]", "_", name) or "analysis"
    ignore = list(result.ignored) + [
        p for p in result.fixed if p != result.poi and p not in result.ignored
    ]
    guesses = {
        parameter: _guess_category(parameter, result)
        for category in result.categories
        if category.category == "?"
        for parameter in category.parameters
        if parameter not in ignore
    }
    used = [c.category for c in result.categories if c.category != "?"] + list(guesses.values())
    theory = sorted(
        {c for c in used if c not in SYSTEMATIC_CATEGORIES and not c.startswith("Background:")}
    )
    lines = [
        f"# Draft mapping written by `smeft-pyhf inspect --suggest` for {result.source}",
        "# Check every rule: SUGGESTED categories are naming heuristics, GUESS ones a guess from",
        "# the samples a parameter acts on. Merge rules into regexes, add `group` labels.",
        "mapping_version: 1",
        f"analysis: {_quote(name)}",
        "metadata:",
    ]
    if result.poi:
        lines.append(f"  observable: {{poi: {_quote(result.poi)}, kind: signal_strength}}")
    lines.append(f"  workspace_sha256: {_quote(result.sha256)}")
    lines.append(f"  n_parameters: {result.n_parameters}")
    lines.append(f"theory_categories: [{', '.join(theory)}]")
    lines.append("ignore:" if ignore else "ignore: []")
    lines.extend(f"  - {_quote(re.escape(p))}" for p in dict.fromkeys(ignore))
    lines.append("rules:")
    for category in result.categories:
        if category.category == "?":
            listed = [p for p in category.parameters if p not in ignore]
            if listed:
                lines.append("  # no naming rule places these: GUESSED from the samples they act on")
            for parameter in listed:
                lines.append(
                    f"  - {{pattern: {_quote(re.escape(parameter))}, "
                    f"category: {_quote(guesses[parameter])}}}  # GUESS: check it"
                )
            continue
        source = "SUGGESTED" if category.kind == "suggested" else f"from mapping {result.mapping}"
        lines.append(f"  # {category.category} ({source})")
        for parameter in category.parameters:
            if parameter in ignore:
                continue
            lines.append(
                f"  - {{pattern: {_quote(re.escape(parameter))}, category: {_quote(category.category)}}}"
            )
    return "\n".join(lines) + "\n"

"""``ingest``: published workspace -> measurement card, in one call.

Steps (each timed; progress is logged at INFO level):

1. load the workspace (patch, combination, POI) — :mod:`.workspace`;
2. map every NP to a category — :mod:`.mapping` (a shipped mapping is looked up when none is
   given; unmapped NPs are an error listing each with a suggestion);
3. fit (Migrad + Hesse, scipy fallback) from several starts: the nominal point and seeded
   random draws within the NP constraints; the lowest minimum wins — :mod:`.fitting`;
4. total uncertainty (Hesse and profile crossings); the variance split by source into stat and
   one share per category, the numbers the combined likelihood reads (they add up to the
   total) — :mod:`.decomposition`; the fix-and-refit stat, per-category and per-paper-group
   impacts to compare with the paper's table — :mod:`.impacts`;
5. per-NP impacts of the leading NPs and 1D scans of the leading ones — :mod:`.impacts`,
   :mod:`.scans`;
6. the card, validated and written atomically — :mod:`.card`; with ``plots``, the pulls, the
   impact ranking, pre- and post-fit yields per region (cabinetry) and the breakdown beside the
   paper's rows, next to the card — :mod:`.plots`.

The stat convention (free normalisations floating or everything fixed, see
:mod:`.decomposition`) comes from ``stat_convention``, else from the mapping, else
:data:`~smeft_pyhf.ingest.decomposition.DEFAULT_STAT_CONVENTION`; the card records it.

Every refit of steps 4-5 evaluates the same objective, which keeps the lowest point it came
across. When that point lies below the best fit (by more than
:data:`~smeft_pyhf.ingest.fitting.LOWER_POINT_TOLERANCE` in ``2NLL``) the best fit was a local
minimum: the fit is redone with that point as an extra start and steps 4-5 start again. The
card records how many starts reached the minimum used (``diagnostics.starts``), any such
refit, and a POI at its bound (``diagnostics.poi_at_bound`` and a warning).

Example:
    >>> from smeft_pyhf._resources import shipped_dir
    >>> result = ingest(shipped_dir("workspaces") / "example_ttZ_like.json",
    ...                 mapping=shipped_dir("mappings") / "example_ttZ_like.yaml",
    ...                 n_impacts=2, n_scans=1)
    >>> result.card.observable["poi"], sorted(result.card.theory)
    ('mu_ttZ', ['PDF', 'scale'])
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
import os
import time
from collections.abc import Sequence
from importlib import metadata as _metadata
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np

from .._io import check_writable_parent
from ..exceptions import InputError, MappingError, WorkspaceError
from ..formats.card import CARD_VERSION, MeasurementCard, card_from_dict, validate_card, write_card
from . import mapping as _mapping
from .decomposition import (
    DEFAULT_STAT_CONVENTION,
    METHOD,
    STAT_CONVENTIONS,
    Decomposition,
    StatConvention,
    variance_decomposition,
)
from .fitting import LOWER_POINT_TOLERANCE, START_AGREEMENT, Objective, WorkspaceFit, fit
from .impacts import (
    Breakdown,
    ParameterImpact,
    TotalUncertainty,
    grouped_breakdown,
    parameter_impacts,
    total_uncertainty,
)
from .scans import NuisanceScan, scan_parameters
from .workspace import LoadedWorkspace, load_workspace

__all__ = ["IngestResult", "check_output_path", "ingest", "plot_stem", "tool_versions"]

log = logging.getLogger(__name__)


class IngestResult(NamedTuple):
    """Everything :func:`ingest` computed.

    Attributes:
        card: the measurement card.
        path: where it was written (``None`` if not written).
        loaded: the loaded workspace.
        mapping: the mapping used.
        fit: the best fit.
        total: total uncertainty (Hesse and profile crossings).
        categories: fix-and-refit breakdown per SFitter category (paper-comparable).
        groups: fix-and-refit breakdown per paper group.
        impacts: per-NP impacts.
        scans: per-NP scans.
        timings: seconds per step.
        decomposition: the variance split by source (the card's stat and categories).
        plots: the plot files written beside the card.
    """

    card: MeasurementCard
    path: Path | None
    loaded: LoadedWorkspace
    mapping: _mapping.CategoryMapping
    fit: WorkspaceFit
    total: TotalUncertainty
    categories: Breakdown
    groups: Breakdown
    impacts: tuple[ParameterImpact, ...]
    scans: tuple[NuisanceScan, ...]
    timings: dict[str, float]
    decomposition: Decomposition | None = None
    plots: tuple[Path, ...] = ()


def tool_versions() -> dict[str, str]:
    """Versions of smeft-pyhf and the numerical tools, for provenance.

    Example:
        >>> sorted(tool_versions())[:3]
        ['cabinetry', 'iminuit', 'numpy']
    """
    out = {}
    for name in ("smeft-pyhf", "pyhf", "cabinetry", "iminuit", "numpy", "scipy"):
        try:
            out[name.replace("-", "_")] = _metadata.version(name)
        except _metadata.PackageNotFoundError:
            out[name.replace("-", "_")] = "unknown"
    return dict(sorted(out.items()))


def _resolve_mapping(
    mapping: str | os.PathLike[str] | _mapping.CategoryMapping | None,
    loaded: LoadedWorkspace,
    names: Sequence[str],
) -> _mapping.CategoryMapping:
    if isinstance(mapping, _mapping.CategoryMapping):
        return mapping
    if mapping is not None:
        return _mapping.load_mapping(mapping)
    found = _mapping.find_mapping(loaded.sha256, names)
    if found is None:
        raise MappingError(
            "no shipped mapping fits this workspace's nuisance parameters",
            where=loaded.source,
            hint="write a mapping YAML (see mappings/ and `smeft-pyhf inspect --suggest`) and pass "
            "it with --mapping",
        )
    log.info("using shipped mapping %s", found.analysis)
    return found


def _entry(absolute: float, best: float, n: int | None = None, **extra: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "absolute": float(absolute),
        "relative": float(absolute / abs(best)) if best != 0 else 0.0,
    }
    if n is not None:
        entry["n_parameters"] = int(n)
    entry.update(extra)
    return entry


def _nullable(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def _label_categories(best: WorkspaceFit, assignment: _mapping.Assignment) -> dict[str, str | None]:
    """The category of each fit label (``name[i]`` labels take their parameter's)."""
    return {label: assignment.category.get(label.split("[")[0]) for label in best.labels}


def _share_blocks(
    decomposition: Decomposition, assignment: _mapping.Assignment, mu: float
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The card's ``systematics`` and ``theory`` blocks: each category's variance share."""
    systematics: dict[str, Any] = {}
    theory: dict[str, Any] = {}
    for share in decomposition.groups:
        block = theory if assignment.kinds.get(share.name) == "theory" else systematics
        block[share.name] = _entry(
            share.absolute, mu, len(share.parameters),
            constraint=float(share.constraint), data=float(share.data),
        )
    return systematics, theory


def _impact_rows(categories: Breakdown, mu: float) -> dict[str, Any]:
    """The fix-and-refit impact of each category, as card entries."""
    impact_rows: dict[str, Any] = {}
    for entry in categories.groups:
        extra: dict[str, Any] = {}
        if categories.method == "profile":
            extra = {"up": entry.reduced_up, "down": entry.reduced_down}
        if entry.negative:
            extra["negative"] = True
        impact_rows[entry.name] = _entry(entry.impact, mu, len(entry.parameters), **extra)
    return impact_rows


def _group_rows(
    groups: Breakdown,
    categories: Breakdown,
    assignment: _mapping.Assignment,
    paper: dict[str, Any],
    mu: float,
) -> list[dict[str, Any]]:
    """The card's ``groups`` rows: each paper group's impact beside the paper's, then the
    stat and total rows when the paper quotes them."""
    group_rows = []
    for entry in groups.groups:
        cats = sorted({assignment.category[p] for p in entry.parameters})
        group_rows.append(
            {
                "group": entry.name,
                "category": ", ".join(cats),
                "n_parameters": len(entry.parameters),
                "absolute": float(entry.impact),
                "reproduced_percent": float(100 * entry.impact / abs(mu)) if mu else 0.0,
                "paper_percent": _nullable(paper.get(entry.name)),
            }
        )
    impact_stat = categories.stat.impact
    for key in ("Stat", "stat", "Statistical", "Data statistics"):
        if key in paper:
            group_rows.append(
                {
                    "group": key,
                    "category": "Stat",
                    "absolute": float(impact_stat),
                    "reproduced_percent": float(100 * impact_stat / abs(mu)) if mu else 0.0,
                    "paper_percent": float(paper[key]),
                }
            )
            break
    for key in ("Total", "total"):
        if key in paper:
            group_rows.append(
                {
                    "group": key,
                    "category": "Total",
                    "absolute": float(categories.total),
                    "reproduced_percent": float(100 * categories.total / abs(mu)) if mu else 0.0,
                    "paper_percent": float(paper[key]),
                }
            )
    return group_rows


def _card_notes(
    *,
    loaded: LoadedWorkspace,
    best: WorkspaceFit,
    assignment: _mapping.Assignment,
    categories: Breakdown,
    groups: Breakdown,
    decomposition: Decomposition,
    paper: dict[str, Any],
    group_rows: Sequence[dict[str, Any]],
    extra_notes: Sequence[str],
) -> list[str]:
    """The card's ``diagnostics.warnings``: those of the load, the fit, the caller and the
    decomposition, then paper rows without a group, negative impacts and floating ignored
    parameters."""
    notes = list(loaded.warnings) + list(best.warnings) + list(extra_notes)
    notes += list(decomposition.notes)
    unmatched = [g for g in paper if g not in {row["group"] for row in group_rows}]
    if unmatched:
        notes.append(f"paper_breakdown rows without a mapping group: {', '.join(unmatched)}")
    negative = [e.name for e in categories.groups + groups.groups if e.negative]
    if negative:
        notes.append(
            "fix-and-refit: reduced uncertainty above the total (impact set to 0): "
            + ", ".join(negative)
        )
    free_ignored = [
        p for p in assignment.ignored
        if not all(best.fixed[i] for i in range(*_slice(loaded.model, p)))
    ]
    if free_ignored:
        notes.append(
            "ignored but floating (their impact is in no category): " + ", ".join(free_ignored)
        )
    return notes


def _decomposition_block(decomposition: Decomposition, stat_convention_from: str) -> dict[str, Any]:
    """The card's ``decomposition`` block (the variance split by source)."""
    return {
        "method": METHOD,
        "reference": "arXiv:2307.04007",
        "stat_convention": decomposition.stat_convention,
        "stat_convention_from": stat_convention_from,
        "total": float(decomposition.total),
        "data": _nullable(decomposition.data),
        "stat_hessian": float(decomposition.stat_hessian),
        "in_situ": float(decomposition.in_situ),
        "constraint": float(decomposition.constraint),
        "free_normalisations": dict(decomposition.free_parameters),
        "implied_total": float(decomposition.implied_total),
        "closure": _nullable(decomposition.closure),
    }


def _impact_block(
    categories: Breakdown, decomposition: Decomposition, mu: float
) -> dict[str, Any]:
    """The card's ``impact_breakdown`` block (the paper-comparable fix-and-refit impacts)."""
    impact_stat = categories.stat.impact
    impact_quadrature = math.sqrt(impact_stat**2 + sum(e.impact**2 for e in categories.groups))
    impact_closure = impact_quadrature / categories.total if categories.total > 0 else None
    return {
        "method": categories.method,
        "stat_convention": decomposition.stat_convention,
        "total": float(categories.total),
        "stat": _entry(impact_stat, mu),
        "categories": _impact_rows(categories, mu),
        "closure": _nullable(impact_closure),
    }


def _impact_entries(
    impacts: Sequence[ParameterImpact], label_category: dict[str, str | None]
) -> list[dict[str, Any]]:
    """The card's ``impacts`` list."""
    return [
        {
            "parameter": item.parameter,
            "category": label_category.get(item.parameter),
            "bestfit": float(item.bestfit),
            "postfit_sigma": float(item.postfit_sigma),
            "prefit_sigma": _nullable(item.prefit_sigma),
            "postfit_up": _nullable(item.postfit_up),
            "postfit_down": _nullable(item.postfit_down),
            "prefit_up": _nullable(item.prefit_up),
            "prefit_down": _nullable(item.prefit_down),
        }
        for item in impacts
    ]


def _scan_entries(
    scans: Sequence[NuisanceScan], label_category: dict[str, str | None]
) -> list[dict[str, Any]]:
    """The card's ``scans`` list."""
    return [
        {
            "parameter": scan.parameter,
            "category": label_category.get(scan.parameter),
            "bestfit": float(scan.bestfit),
            "sigma": float(scan.sigma),
            "non_gaussianity": _nullable(scan.non_gaussianity),
            "curvature": _nullable(scan.curvature),
            "asymmetry": _nullable(scan.asymmetry),
            "crossing_up": _nullable(scan.crossing_up),
            "crossing_down": _nullable(scan.crossing_down),
            "values": [float(v) for v in scan.values],
            "delta_twice_nll": [_nullable(q) for q in scan.delta_twice_nll],
        }
        for scan in scans
    ]


def _provenance(
    *,
    loaded: LoadedWorkspace,
    mapping: _mapping.CategoryMapping,
    patch: str | None,
    patch_name: str | None,
    combine: Sequence[str],
    versions: dict[str, str],
) -> dict[str, Any]:
    """The card's ``provenance`` block (inputs, their hashes, creation time, tool versions)."""
    return {
        "input": str(loaded.source),
        "input_sha256": loaded.sha256,
        "combined_with": [str(c) for c in combine],
        "patch": patch,
        "patch_name": patch_name,
        "patch_sha256": loaded.patch_sha256,
        "measurement": loaded.workspace.measurement_names[0]
        if loaded.workspace.measurement_names else None,
        "mapping": mapping.source,
        "mapping_sha256": mapping.sha256 or None,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": versions,
    }


def _build_card(
    *,
    name: str,
    loaded: LoadedWorkspace,
    mapping: _mapping.CategoryMapping,
    assignment: _mapping.Assignment,
    best: WorkspaceFit,
    stages: _Stages,
    stat_convention_from: str,
    timings: dict[str, float],
    patch: str | None,
    patch_name: str | None,
    combine: Sequence[str],
    n_fits: int,
    extra_notes: Sequence[str] = (),
    extra_diagnostics: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The card document (a plain dict in the card schema's key order) from the results of
    :func:`ingest`'s steps."""
    total, categories, groups, decomposition, impacts, scans = stages
    meta = mapping.metadata
    model = loaded.model
    mu = total.best_fit
    label_category = _label_categories(best, assignment)
    systematics, theory = _share_blocks(decomposition, assignment, mu)
    paper = mapping.paper_breakdown
    group_rows = _group_rows(groups, categories, assignment, paper, mu)
    notes = _card_notes(
        loaded=loaded, best=best, assignment=assignment, categories=categories, groups=groups,
        decomposition=decomposition, paper=paper, group_rows=group_rows, extra_notes=extra_notes,
    )
    versions = tool_versions()
    return {
        "card_version": CARD_VERSION,
        "name": name,
        "experiment": meta.get("experiment"),
        "sqrt_s_TeV": _float_or_none(meta.get("sqrt_s_TeV")),
        "luminosity_fb": _float_or_none(meta.get("luminosity_fb")),
        "arxiv": None if meta.get("arxiv") is None else str(meta.get("arxiv")),
        "observable": {
            "kind": "signal_strength",
            **dict(meta.get("observable") or {}),
            "poi": model.config.poi_name,
        },
        "prediction": dict(meta["prediction"]) if meta.get("prediction") else None,
        "measurement": {
            "best_fit": float(mu),
            "total": {
                "up": float(total.up),
                "down": float(total.down),
                "symmetric": float(total.symmetric),
                "breakdown": float(categories.total),
            },
            "stat": _entry(decomposition.stat, mu),
        },
        "systematics": systematics,
        "theory": theory,
        "decomposition": _decomposition_block(decomposition, stat_convention_from),
        "impact_breakdown": _impact_block(categories, decomposition, mu),
        "parameters": dict(assignment.category),
        "ignored": list(assignment.ignored),
        "groups": group_rows,
        "impacts": _impact_entries(impacts, label_category),
        "scans": _scan_entries(scans, label_category),
        "diagnostics": {
            "minimizer": best.minimizer,
            "fit_valid": bool(best.valid),
            "hesse_valid": bool(best.hesse_valid),
            "twice_nll": float(best.twice_nll),
            "warnings": notes,
            "n_parameters": int(model.config.npars),
            "fits": int(n_fits),
            "seconds": float(sum(timings.values())),
            "breakdown_method": categories.method,
            "closure": _nullable(decomposition.closure),
            "timings": {k: round(float(v), 3) for k, v in timings.items()},
            **dict(extra_diagnostics or {}),
        },
        "provenance": _provenance(
            loaded=loaded, mapping=mapping, patch=patch, patch_name=patch_name,
            combine=combine, versions=versions,
        ),
    }


def _slice(model: Any, name: str) -> tuple[int, int]:
    try:
        slc = model.config.par_slice(name)
    except KeyError:
        return (0, 0)
    return (slc.start, slc.stop)


def _require_valid(best: WorkspaceFit, workspace: str | os.PathLike[str]) -> None:
    if not best.valid:
        raise WorkspaceError(
            "the fit did not reach a valid minimum with minuit or scipy: "
            + "; ".join(best.warnings),
            where=str(workspace),
            hint="check the workspace (e.g. with `smeft-pyhf inspect`)",
        )


def check_output_path(path: str | os.PathLike[str]) -> None:
    """Fail early (before any fit) if a card cannot be written to ``path``.

    Raises:
        InputError: the path is a folder, or its folder is missing or not writable.

    Example:
        >>> check_output_path("/nonexistent-folder/card.yaml")
        Traceback (most recent call last):
        ...
        smeft_pyhf.exceptions.InputError: /nonexistent-folder/card.yaml: cannot write output: folder '/nonexistent-folder' does not exist. Hint: create the folder first or choose another --output
    """
    path = Path(path)
    if path.is_dir():
        raise InputError("is a folder; give a file name for the card", where=str(path))
    check_writable_parent(path, option="--output")


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


#: How often the fit is redone from a lower point that a later refit came across.
MAX_LOWER_POINT_REFITS = 3


class _LowerPoint(Exception):
    """A refit of ``stage`` came across a point below the best fit."""

    def __init__(self, stage: str, point: np.ndarray, value: float) -> None:
        super().__init__(stage)
        self.stage = stage
        self.point = point
        self.value = value


class _Stages(NamedTuple):
    total: TotalUncertainty
    categories: Breakdown
    groups: Breakdown
    decomposition: Decomposition
    impacts: tuple[ParameterImpact, ...]
    scans: tuple[NuisanceScan, ...]


def _scan_names(
    best: WorkspaceFit, impacts: Sequence[ParameterImpact], n_scans: int, poi_index: int
) -> list[str]:
    """The ``n_scans`` NPs to scan: the leading ones by impact, topped up (when fewer have a
    finite impact) by the floating NPs most correlated with the POI."""
    leading = [item for item in impacts if np.isfinite(item.postfit_up)][: max(n_scans, 0)]
    if len(leading) >= n_scans:
        return [item.parameter for item in leading]
    assert best.covariance is not None
    weight = np.abs(best.covariance[poi_index]) / np.where(
        best.uncertainty > 0, best.uncertainty, np.inf
    )
    extra = [
        best.labels[i]
        for i in np.argsort(-np.nan_to_num(weight))
        if i != poi_index and not best.fixed[i]
        and best.labels[i] not in {item.parameter for item in leading}
    ]
    return [item.parameter for item in leading] + extra[: n_scans - len(leading)]


def _run_stages(
    model: Any,
    data: Sequence[float],
    best: WorkspaceFit,
    assignment: _mapping.Assignment,
    *,
    breakdown: Literal["hesse", "profile"],
    stat_convention: StatConvention,
    n_impacts: int,
    n_scans: int,
    prefit: bool,
    timings: dict[str, float],
    guard: Objective,
    check: bool,
) -> _Stages:
    """Steps 4-5 of :func:`ingest`; raises :class:`_LowerPoint` (when ``check``) as soon as a
    stage came across a point below the best fit."""
    poi_index = model.config.poi_index
    guard.reset_lowest()

    def done(stage: str, key: str, t0: float) -> None:
        timings[key] = timings.get(key, 0.0) + time.perf_counter() - t0
        if check and guard.lowest_value < best.twice_nll - LOWER_POINT_TOLERANCE:
            assert guard.lowest_point is not None
            raise _LowerPoint(stage, guard.lowest_point.copy(), guard.lowest_value)

    t0 = time.perf_counter()
    log.info("total uncertainty: profile-likelihood crossings ...")
    total = total_uncertainty(model, data, best, objective=guard)
    done("total uncertainty", "total", t0)

    t0 = time.perf_counter()
    by_category: dict[str, list[str]] = {}
    for parameter, category in assignment.category.items():
        by_category.setdefault(category, []).append(parameter)
    by_group: dict[str, list[str]] = {}
    for parameter, group in assignment.group.items():
        by_group.setdefault(group, []).append(parameter)
    categories = grouped_breakdown(
        model, data, best, by_category, kinds=assignment.kinds, method=breakdown, objective=guard,
        stat_convention=stat_convention,
    )
    groups = grouped_breakdown(
        model, data, best, by_group, method=breakdown, objective=guard,
        stat_convention=stat_convention,
    )
    decomposition = variance_decomposition(
        model, data, best, by_category, kinds=assignment.kinds, stat_convention=stat_convention
    )
    done("breakdown", "breakdown", t0)

    t0 = time.perf_counter()
    impacts = parameter_impacts(
        model, data, best, n=n_impacts, prefit=prefit, exclude=assignment.ignored,
        objective=guard,
    )
    done("impact", "impacts", t0)

    t0 = time.perf_counter()
    scan_names = _scan_names(best, impacts, n_scans, poi_index)
    bounds = model.config.suggested_bounds()
    known = {
        item.parameter: {1.0: item.twice_nll_up, -1.0: item.twice_nll_down}
        for item in impacts
        if item.bestfit + item.postfit_sigma <= bounds[item.index][1]
        and item.bestfit - item.postfit_sigma >= bounds[item.index][0]
    }
    scans = (
        scan_parameters(model, data, best, scan_names, known=known, objective=guard)
        if scan_names else ()
    )
    done("scan", "scans", t0)
    return _Stages(total, categories, groups, decomposition, impacts, scans)


def _bound_notes(model: Any, best: WorkspaceFit, total: TotalUncertainty) -> tuple[str | None, list[str]]:
    """Whether the POI sits at a bound, and warnings about intervals cut at a bound."""
    poi = model.config.poi_index
    name = model.config.poi_name
    lower, upper = (float(b) for b in model.config.suggested_bounds()[poi])
    mu = float(best.bestfit[poi])
    sigma = float(best.uncertainty[poi]) if np.isfinite(best.uncertainty[poi]) else 0.0
    closeness = 1e-3 * max(sigma, 1e-9)
    at_bound = "lower" if mu - lower <= closeness else "upper" if upper - mu <= closeness else None
    notes = []
    if at_bound is not None:
        bound = lower if at_bound == "lower" else upper
        notes.append(
            f"the POI {name} = {mu:.4g} is at its {at_bound} bound {bound:g}: the profile "
            f"interval is cut at the bound and uncertainties relative to the best fit are "
            "meaningless (the report does not print them)"
        )
    else:
        for side, room, distance, bound in (
            ("below", mu - lower, total.down, lower),
            ("above", upper - mu, total.up, upper),
        ):
            if distance >= room * (1 - 1e-9):
                notes.append(
                    f"the Delta 2NLL = 1 crossing {side} {name} = {mu:.4g} lies beyond the POI "
                    f"bound {bound:g}; the interval is cut there"
                )
    return at_bound, notes


def _check_options(
    output: str | os.PathLike[str] | None,
    n_starts: int,
    stat_convention: StatConvention | None,
    plot_format: str,
) -> None:
    """Reject bad options of :func:`ingest` before anything is loaded or fitted."""
    if output is not None:
        check_output_path(output)
    if n_starts < 1:
        raise InputError(f"n_starts must be at least 1, not {n_starts}", where="ingest",
                         hint="1 fits from the nominal point only")
    if stat_convention is not None and stat_convention not in STAT_CONVENTIONS:
        raise InputError(f"unknown stat convention {stat_convention!r}", where="stat_convention",
                         hint="use one of " + ", ".join(STAT_CONVENTIONS))
    if plot_format not in ("pdf", "png"):
        raise InputError(f"unknown plot format {plot_format!r}", where="plot_format",
                         hint="use pdf or png")


def _choose_convention(
    stat_convention: StatConvention | None, mapping: _mapping.CategoryMapping
) -> tuple[str, str]:
    """The stat convention and where it came from (the option, the mapping or the default)."""
    if stat_convention is not None:
        convention, convention_from = stat_convention, "option"
    elif mapping.stat_convention is not None:
        convention, convention_from = mapping.stat_convention, "mapping"
    else:
        convention, convention_from = DEFAULT_STAT_CONVENTION, "default"
    log.info("stat convention: %s (from the %s)", convention, convention_from)
    return convention, convention_from


class _Refitted(NamedTuple):
    best: WorkspaceFit
    stages: _Stages
    notes: list[str]
    extra_fits: int


def _stages_with_refits(
    model: Any,
    data: Sequence[float],
    best: WorkspaceFit,
    assignment: _mapping.Assignment,
    *,
    workspace: str | os.PathLike[str],
    minimizer: Literal["minuit", "scipy"],
    n_starts: int,
    seed: int,
    timings: dict[str, float],
    **stage_options: Any,
) -> _Refitted:
    """Steps 4-5 of :func:`ingest`, with the fit redone (at most
    :data:`MAX_LOWER_POINT_REFITS` times) from any point a refit finds below the best fit."""
    poi_index = model.config.poi_index
    guard = Objective(model, data)
    lower_points: dict[str, np.ndarray] = {}
    refit_notes: list[str] = []
    extra_fits = 0
    for attempt in range(MAX_LOWER_POINT_REFITS + 1):
        try:
            stages = _run_stages(
                model, data, best, assignment, timings=timings, guard=guard,
                check=attempt < MAX_LOWER_POINT_REFITS, **stage_options,
            )
            break
        except _LowerPoint as found:
            t0 = time.perf_counter()
            previous = best
            log.warning(
                "a %s refit came across 2NLL %.4f, %.3g below the best fit: redoing the fit "
                "from that point", found.stage, found.value, previous.twice_nll - found.value,
            )
            lower_points[f"lower point {len(lower_points) + 1} ({found.stage})"] = found.point
            best = fit(
                model, data, minimizer=minimizer, n_random_starts=n_starts - 1,
                seed=seed, extra_starts=lower_points,
            )
            _require_valid(best, workspace)
            extra_fits += 1
            refit_notes.append(
                f"a {found.stage} refit came across 2NLL {found.value:.4f}, "
                f"{previous.twice_nll - found.value:.3g} below the best fit "
                f"({model.config.poi_name} = {previous.bestfit[poi_index]:.4g}, 2NLL "
                f"{previous.twice_nll:.4f}): the fit was redone from that point "
                f"({model.config.poi_name} = {best.bestfit[poi_index]:.4g}, 2NLL "
                f"{best.twice_nll:.4f})"
            )
            log.warning("%s", refit_notes[-1])
            timings["refit"] = timings.get("refit", 0.0) + time.perf_counter() - t0
    else:  # pragma: no cover - the last attempt runs with check=False
        raise AssertionError("unreachable")
    if guard.lowest_value < best.twice_nll - LOWER_POINT_TOLERANCE:
        refit_notes.append(
            f"after {MAX_LOWER_POINT_REFITS} refits a later evaluation still found 2NLL "
            f"{guard.lowest_value:.4f} below the best fit's {best.twice_nll:.4f}: the fit "
            "may not be at the global minimum"
        )
        log.warning("%s", refit_notes[-1])
    return _Refitted(best, stages, refit_notes, extra_fits)


def _count_fits(best: WorkspaceFit, extra_fits: int, stages: _Stages) -> int:
    """How many fits :func:`ingest` ran (best fits from every start, then every refit)."""
    n_fits = len(best.starts) * (1 + extra_fits) + stages.total.n_fits
    n_fits += stages.categories.n_fits
    n_fits += stages.groups.n_fits
    n_fits += sum(2 + (2 if item.prefit_up is not None else 0) for item in stages.impacts)
    n_fits += sum(max(len(s.values) - 1, 0) for s in stages.scans)
    return n_fits


def _write_or_validate(
    document: dict[str, Any], output: str | os.PathLike[str] | None,
    timings: dict[str, float], t0: float,
) -> Path | None:
    """Write the card to ``output`` (timing the write from ``t0``), or only validate it."""
    if output is None:
        validate_card(document)
        return None
    path = Path(output)
    timings["write"] = 0.0
    document["diagnostics"]["timings"]["write"] = 0.0
    write_card(document, path)
    timings["write"] = time.perf_counter() - t0
    return path


def _load(workspace: str | os.PathLike[str], **options: Any) -> LoadedWorkspace:
    """Step 1 of :func:`ingest`: load the workspace (``options`` go to
    :func:`.workspace.load_workspace`) and require a POI."""
    log.info("loading %s ...", workspace)
    loaded = load_workspace(workspace, **options)
    if loaded.model.config.poi_index is None:
        raise WorkspaceError("the model has no POI", where=str(workspace), hint="pass --poi")
    return loaded


def _best_fit(
    loaded: LoadedWorkspace,
    workspace: str | os.PathLike[str],
    minimizer: Literal["minuit", "scipy"],
    n_starts: int,
    seed: int,
) -> WorkspaceFit:
    """Step 3 of :func:`ingest`: the best fit from ``n_starts`` starts, required valid."""
    model = loaded.model
    log.info(
        "fitting %d parameters with %s from %d start point(s) ...",
        model.config.npars, minimizer, n_starts,
    )
    best = fit(model, loaded.data, minimizer=minimizer, n_random_starts=n_starts - 1, seed=seed)
    _require_valid(best, workspace)
    log.info(
        "best fit %s = %.4f +- %.4f (Hesse), 2NLL = %.3f; %d of %d start(s) agree",
        model.config.poi_name, best.bestfit[model.config.poi_index],
        best.uncertainty[model.config.poi_index], best.twice_nll, best.n_agreeing,
        len(best.starts),
    )
    return best


def _starts_block(best: WorkspaceFit, seed: int, extra_fits: int) -> dict[str, Any]:
    """The card's ``diagnostics.starts``: how many starts reached the minimum used."""
    return {
        "n": len(best.starts),
        "agreeing": int(best.n_agreeing),
        "tolerance_twice_nll": START_AGREEMENT,
        "seed": int(seed),
        "refits_from_lower_points": extra_fits,
    }


def _plots_beside(
    card: MeasurementCard,
    loaded: LoadedWorkspace,
    best: WorkspaceFit,
    impacts: Sequence[ParameterImpact],
    path: Path,
    plot_format: Literal["pdf", "png"],
    timings: dict[str, float],
) -> tuple[Path, ...]:
    """Write the plots beside the card at ``path`` (timed as ``timings["plots"]``)."""
    from .plots import write_plots

    t0 = time.perf_counter()
    written = write_plots(
        card, loaded.model, loaded.data, best, impacts, folder=path.parent,
        stem=plot_stem(path), plot_format=plot_format,
    )
    timings["plots"] = time.perf_counter() - t0
    return written


def ingest(
    workspace: str | os.PathLike[str],
    *,
    patch: str | os.PathLike[str] | None = None,
    patch_name: str | None = None,
    poi: str | None = None,
    measurement: str | None = None,
    combine: Sequence[str | os.PathLike[str]] = (),
    mapping: str | os.PathLike[str] | _mapping.CategoryMapping | None = None,
    output: str | os.PathLike[str] | None = None,
    name: str | None = None,
    minimizer: Literal["minuit", "scipy"] = "minuit",
    breakdown: Literal["hesse", "profile"] = "hesse",
    stat_convention: StatConvention | None = None,
    n_impacts: int = 20,
    n_scans: int = 10,
    prefit: bool = True,
    n_starts: int = 4,
    seed: int = 0,
    rootdir: str | os.PathLike[str] | None = None,
    default_output: bool = False,
    plots: bool | None = None,
    plot_format: Literal["pdf", "png"] = "pdf",
) -> IngestResult:
    """Turn a published workspace into a measurement card.

    One function because it is the documented entry point (the ``ingest`` command calls it
    with its options): its length is the signature and this docstring, and its body only
    orders the steps, each a helper of this module (``_load``, ``_resolve_mapping``,
    ``_best_fit``, ``_stages_with_refits``, ``_build_card``, ``_write_or_validate``,
    ``_plots_beside``) and records their timings.

    Args:
        workspace: workspace file (``.json``, ``.json.gz`` or HistFactory ``.xml``).
        patch: a patch / PatchSet file to apply.
        patch_name: entry of the PatchSet.
        poi: POI to use instead of the measurement's.
        measurement: measurement name (default: the first).
        combine: more workspaces to combine with this one (parameters correlated by name).
        mapping: mapping YAML path, shipped mapping name, or a loaded mapping; ``None``
            looks for a shipped mapping that fits.
        output: where to write the card (``None``: do not write, unless ``default_output``).
        name: card name (default: ``metadata.card_name`` of the mapping, else its analysis).
        minimizer: ``"minuit"`` (default) or ``"scipy"``.
        breakdown: how the paper-comparable fix-and-refit rows are made: ``"hesse"``
            (default, instantaneous) or ``"profile"`` (two constrained refits per category);
            see :mod:`smeft_pyhf.ingest.impacts`. The card's stat and category numbers are
            the variance split by source in both cases (:mod:`.decomposition`).
        stat_convention: ``"free-floating"`` (free normalisations floating, statistical) or
            ``"all-fixed"`` (every other parameter fixed); ``None``: the mapping's
            ``stat_convention``, else ``"free-floating"``.
        n_impacts: number of leading NPs whose impacts are refit.
        n_scans: number of leading NPs (by impact) to scan.
        prefit: compute pre-fit impacts too.
        n_starts: start points of the best fit: the nominal point and ``n_starts - 1`` seeded
            random draws within the NP constraints (see :func:`~.fitting.fit`).
        seed: seed of the random start points.
        rootdir: for HistFactory XML inputs, the folder their ``<Input>`` paths are relative to.
        default_output: with ``output=None``, write the card to ``<card name>.card.yaml`` in
            the working folder (checked before the fit).
        plots: write the plots beside the card (:func:`.plots.write_plots`); ``None``: when
            a card file is written.
        plot_format: ``"pdf"`` or ``"png"``.

    Returns:
        An :class:`IngestResult`; the card is also written to ``output`` if given.

    Raises:
        InputError, WorkspaceError, MappingError, UnmappedParametersError, DataError: with a
            message naming the file and what to do; nothing is written then.

    Example:
        >>> from smeft_pyhf._resources import shipped_dir
        >>> r = ingest(shipped_dir("workspaces") / "example_ttZ_like.json",
        ...            mapping="example_ttZ_like", n_impacts=0, n_scans=0)
        >>> round(r.card.best_fit, 2)
        1.15
    """
    _check_options(output, n_starts, stat_convention, plot_format)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    loaded = _load(
        workspace, patch=patch, patch_name=patch_name, poi=poi, measurement=measurement,
        combine=combine, rootdir=rootdir,
    )
    model = loaded.model
    names = [p for p in model.config.par_order if p != model.config.poi_name]
    timings["load"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    used_mapping = _resolve_mapping(mapping, loaded, names)
    assignment = _mapping.assign(used_mapping, names)
    card_name = name or used_mapping.metadata.get("card_name") or used_mapping.analysis
    convention, convention_from = _choose_convention(stat_convention, used_mapping)
    if output is None and default_output:
        output = Path(f"{card_name}.card.yaml")
        check_output_path(output)
    if plots and output is None:
        raise InputError("plots are written beside the card, and no card file is written",
                         where="plots", hint="give an output path, or leave plots off")
    timings["mapping"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    best = _best_fit(loaded, workspace, minimizer, n_starts, seed)
    timings["fit"] = time.perf_counter() - t0

    best, stages, refit_notes, extra_fits = _stages_with_refits(
        model, loaded.data, best, assignment, workspace=workspace, minimizer=minimizer,
        n_starts=n_starts, seed=seed, timings=timings, breakdown=breakdown,
        stat_convention=convention, n_impacts=n_impacts, n_scans=n_scans, prefit=prefit,
    )
    total, categories, groups, decomposition, impacts, scans = stages
    at_bound, bound_notes = _bound_notes(model, best, total)
    for note in bound_notes:
        log.warning("%s", note)

    t0 = time.perf_counter()
    starts = _starts_block(best, seed, extra_fits)
    document = _build_card(
        name=str(card_name),
        loaded=loaded,
        mapping=used_mapping,
        assignment=assignment,
        best=best,
        stages=stages,
        stat_convention_from=convention_from,
        timings=timings,
        patch=None if patch is None else str(patch),
        patch_name=patch_name,
        combine=[str(c) for c in combine],
        n_fits=_count_fits(best, extra_fits, stages),
        extra_notes=[*refit_notes, *bound_notes],
        extra_diagnostics={"starts": starts, "poi_at_bound": at_bound},
    )
    path = _write_or_validate(document, output, timings, t0)
    card = card_from_dict(document, source=None if path is None else str(path))
    written: tuple[Path, ...] = ()
    if plots is None:
        plots = path is not None
    if plots and path is not None:
        written = _plots_beside(card, loaded, best, impacts, path, plot_format, timings)
    log.info("done in %.1f s", sum(timings.values()))
    return IngestResult(
        card=card,
        path=path,
        loaded=loaded,
        mapping=used_mapping,
        fit=best,
        total=total,
        categories=categories,
        groups=groups,
        impacts=impacts,
        scans=scans,
        timings=timings,
        decomposition=decomposition,
        plots=written,
    )


def plot_stem(card_path: str | os.PathLike[str]) -> str:
    """The prefix of the plot files written beside a card (its name without ``.card.yaml``).

    Example:
        >>> plot_stem("cards/atlas_schannel.card.yaml"), plot_stem("ttZ.yaml")
        ('atlas_schannel', 'ttZ')
    """
    name = Path(card_path).name
    for suffix in (".card.yaml", ".card.yml", ".yaml", ".yml", ".json"):
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name

"""Human-readable (and JSON) reports of a measurement card.

:func:`format_report` prints, like the "Reproduced vs Paper" table of arXiv:2312.12502:

1. the paper groups: reproduced impact in percent of the POI, the paper's number (when the
   mapping lists it) and the SFitter categories the group's NPs go to;
2. the SFitter breakdown per category as the card holds it (the variance split by source:
   absolute, relative, its constraint and data parts) beside the fix-and-refit impact, stat
   under its convention, total (Hesse and profile-likelihood crossings) and both closures;
3. the leading per-NP impacts and the NP scans (non-Gaussianity);
4. fit diagnostics (start points that agreed, warnings) and timings.

Relative numbers (percent of the best fit) are left out, shown as ``-``, when the best fit is
~0: at a bound of the POI (``diagnostics.poi_at_bound``) or closer to 0 than
:data:`NEAR_ZERO` times its total uncertainty; they would be arbitrarily large there.

:func:`report_json` is the machine-readable equivalent (the card as JSON).

Example:
    >>> from smeft_pyhf.formats.card import example_card
    >>> print(format_report(example_card()).splitlines()[0])
    example: mu = 1.1 +0.13 -0.12 (Hesse +-0.125)
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

from ..formats.card import MeasurementCard

__all__ = ["NEAR_ZERO", "format_report", "relative_meaningful", "report_json"]

#: A best fit within this fraction of its total uncertainty from 0 counts as ~0.
NEAR_ZERO = 0.05


def relative_meaningful(card: MeasurementCard) -> bool:
    """Whether uncertainties relative to the best fit mean something (best fit not ~0).

    Example:
        >>> from smeft_pyhf.formats.card import example_card
        >>> relative_meaningful(example_card())
        True
    """
    m = card.measurement
    mu = float(m["best_fit"])
    scale = float(m["total"].get("symmetric", 0.0))
    if card.diagnostics.get("poi_at_bound"):
        return False
    return abs(mu) > NEAR_ZERO * scale and mu != 0.0


def _pct(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.1f}"


def _num(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}g}"


def format_report(card: MeasurementCard, *, n_impacts: int = 10) -> str:
    """Format a card as the printed ingestion report.

    Args:
        card: the measurement card.
        n_impacts: how many per-NP impacts to list.

    Returns:
        The report text (no trailing newline).

    Example:
        >>> from smeft_pyhf.formats.card import example_card
        >>> "Stat" in format_report(example_card())
        True
    """
    m = card.measurement
    mu = float(m["best_fit"])
    total = m["total"]
    relative = relative_meaningful(card)

    def pct(value: Any) -> str:
        return _pct(value) if relative else "-"

    lines = [
        f"{card.name}: {card.observable['poi']} = {mu:.4g} +{total['up']:.2g} -{total['down']:.2g} "
        f"(Hesse +-{total['symmetric']:.3g})"
    ]
    lines += _group_lines(card, pct)
    lines += _category_lines(card, pct)
    if not relative:
        lines.append(
            f"relative numbers not shown: the best fit {mu:.3g} is ~0 "
            + ("(at the POI's bound)" if card.diagnostics.get("poi_at_bound")
               else f"(within {NEAR_ZERO:g} of its uncertainty)")
        )
    lines += _closure_lines(card)
    lines += _impact_and_scan_lines(card, n_impacts)
    lines += _fit_lines(card.diagnostics)
    return "\n".join(lines)


def _group_lines(card: MeasurementCard, pct: Callable[[Any], str]) -> list[str]:
    """The report's table of paper groups (reproduced beside the paper's percentages)."""
    if not card.groups:
        return []
    width = max(len("Uncertainty"), *(len(row["group"]) for row in card.groups)) + 2
    lines = [
        "",
        f"{'Uncertainty':<{width}}{'Reproduced [%]':>15}{'Paper [%]':>11}   SFitter category"
        "   (fix-and-refit impacts, as papers quote them)",
    ]

    def key(row: dict[str, Any]) -> tuple[int, float]:
        special = row["category"] in ("Stat", "Total")
        return (int(special), -(row["paper_percent"] or row["reproduced_percent"] or 0.0))

    for row in sorted(card.groups, key=key):
        lines.append(
            f"{row['group']:<{width}}{pct(row['reproduced_percent']):>15}"
            f"{_pct(row['paper_percent']):>11}   {row['category']}"
        )
    return lines


def _category_lines(card: MeasurementCard, pct: Callable[[Any], str]) -> list[str]:
    """The report's table of SFitter categories (largest first), then the stat and total rows."""
    m = card.measurement
    mu = float(m["best_fit"])
    total = m["total"]
    entries = [
        (name, "systematic", entry) for name, entry in card.systematics.items()
    ] + [(name, "theory", entry) for name, entry in card.theory.items()]
    entries.sort(key=lambda item: -item[2]["absolute"])
    impact = card.impact_breakdown or {}
    impact_rows = impact.get("categories", {})
    width = max([len("SFitter category"), *(len(name) for name, _, _ in entries)]) + 2
    convention = (card.decomposition or {}).get("stat_convention")
    lines = [
        "",
        f"{'SFitter category':<{width}}{'kind':<12}{'#NP':>5}{'absolute':>11}{'relative [%]':>14}"
        f"{'constraint':>11}{'data':>11}{'fix-refit':>11}",
    ]
    for name, kind, entry in entries:
        flag = "  (fix-and-refit negative: set to 0)" if impact_rows.get(name, {}).get(
            "negative") else ""
        lines.append(
            f"{name:<{width}}{kind:<12}{entry.get('n_parameters', ''):>5}"
            f"{_num(entry['absolute']):>11}{pct(100 * entry['relative']):>14}"
            f"{_num(entry.get('constraint'), 3):>11}{_num(entry.get('data'), 3):>11}"
            f"{_num(impact_rows.get(name, {}).get('absolute'), 3):>11}{flag}"
        )
    stat = m["stat"]
    stat_label = f"Stat ({convention})" if convention else "Stat"
    lines.append(
        f"{stat_label:<{width + 17}}{_num(stat['absolute']):>11}"
        f"{pct(100 * stat['relative']):>14}{'':>22}"
        f"{_num(impact.get('stat', {}).get('absolute'), 3):>11}"
    )
    lines.append(
        f"{'Total':<{width}}{'':<12}{'':>5}{_num(total['symmetric']):>11}"
        f"{pct(100 * total['symmetric'] / abs(mu) if mu else None):>14}"
        f"   (profile +{_num(total['up'], 3)} / -{_num(total['down'], 3)})"
    )
    return lines


def _closure_lines(card: MeasurementCard) -> list[str]:
    """The report's closure lines (variance split and fix-and-refit impacts)."""
    total = card.measurement["total"]
    breakdown_total = total.get("breakdown", total["symmetric"])
    impact = card.impact_breakdown or {}
    decomposition = card.decomposition or {}
    convention = decomposition.get("stat_convention")
    diag = card.diagnostics
    lines = []
    if decomposition:
        free = decomposition.get("free_normalisations") or {}
        lines.append(
            f"closure: sqrt(stat^2 + sum of categories^2) / total = "
            f"{decomposition.get('closure', float('nan')):.4f}   (variance by source; stat "
            f"{convention}, from the {decomposition.get('stat_convention_from', '?')}"
            + (", free normalisations: " + ", ".join(f"{k} -> {v}" for k, v in free.items())
               if free else "")
            + ")"
        )
        if impact.get("closure") is not None:
            lines.append(
                f"fix-and-refit impacts (paper-comparable, not additive): closure "
                f"{impact['closure']:.3f} of the total {_num(breakdown_total)} "
                f"(method: {impact.get('method', '?')})"
            )
    elif diag.get("closure") is not None:
        lines.append(
            f"closure: sqrt(stat^2 + sum of category impacts^2) / total = {diag['closure']:.3f}"
            f"   (breakdown method: {diag.get('breakdown_method', '?')})"
        )
    return lines


def _impact_and_scan_lines(card: MeasurementCard, n_impacts: int) -> list[str]:
    """The report's leading per-NP impacts and NP scans."""
    lines: list[str] = []
    if card.impacts:
        lines += ["", f"Leading NP impacts on {card.observable['poi']} (post-fit +1s / -1s, pre-fit):"]
        for item in card.impacts[:n_impacts]:
            lines.append(
                f"  {item['parameter']:<40} {_num(item['postfit_up'], 3):>9} {_num(item['postfit_down'], 3):>9}"
                f"   pre {_num(item.get('prefit_up'), 3):>9} {_num(item.get('prefit_down'), 3):>9}"
                f"   [{item.get('category') or '-'}]"
            )
    if card.scans:
        lines += ["", "NP scans (non-Gaussianity = max |D2NLL - a t^2| / (a t_max^2); a = curvature):"]
        for scan in card.scans:
            lines.append(
                f"  {scan['parameter']:<40} non-Gauss {_num(scan['non_gaussianity'], 2):>8}"
                f"  curvature {_num(scan.get('curvature'), 3):>6}  asymmetry {_num(scan.get('asymmetry'), 2):>7}"
            )
    return lines


def _fit_lines(diag: dict[str, Any]) -> list[str]:
    """The report's fit diagnostics: fit summary, start points, warnings and timings."""
    lines = [
        "",
        f"fit: {diag['minimizer']}, valid {diag['fit_valid']}, Hesse valid {diag['hesse_valid']}, "
        f"2NLL {diag['twice_nll']:.3f}, {diag.get('n_parameters', '?')} parameters, "
        f"{diag.get('fits', '?')} fits, {diag.get('seconds', 0.0):.1f} s",
    ]
    starts = diag.get("starts")
    if isinstance(starts, dict) and starts.get("n"):
        lines.append(
            f"start points: {starts.get('agreeing', '?')} of {starts['n']} reached this minimum "
            f"(within {starts.get('tolerance_twice_nll', '?')} in 2NLL)"
            + (f"; refit {starts['refits_from_lower_points']}x from lower points found later"
               if starts.get("refits_from_lower_points") else "")
        )
    for warning in diag.get("warnings", []):
        lines.append(f"warning: {warning}")
    if diag.get("timings"):
        lines.append(
            "timings [s]: " + ", ".join(f"{k} {v:.1f}" for k, v in diag["timings"].items())
        )
    return lines


def report_json(card: MeasurementCard, *, plots: Sequence[str | os.PathLike[str]] = ()) -> str:
    """The card as indented JSON (for ``--json``), with ``card_path`` and the ``plots`` written.

    Example:
        >>> from smeft_pyhf.formats.card import example_card
        >>> json.loads(report_json(example_card()))["measurement"]["best_fit"]
        1.1
    """
    document = card.to_dict()
    document["card_path"] = card.source
    document["plots"] = [str(p) for p in plots]
    return json.dumps(document, indent=2, allow_nan=False, default=float)

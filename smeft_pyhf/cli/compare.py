"""``smeft-pyhf compare WORKSPACE --card CARD --coefficient cX``: card vs full likelihood.

Profiles one Wilson coefficient twice: with the published workspace itself (its signal scaled by
``mu(c)`` through the ``smeft`` pyhf modifier, every nuisance parameter profiled) and with the
Gaussian measurement card built from it, and prints the ``Delta(2NLL)`` of both at each scan
point, their 68%/95% intervals and the differences.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import click
import numpy as np

from ..exceptions import ConfigError

log = logging.getLogger(__name__)

__all__ = ["compare_command", "comparison_json", "comparison_table"]

DATABASE_ENV = "SMEFT_PYHF_DATABASE"


def _segments(interval: Any) -> str:
    if not interval.segments:
        return "-"
    text = " U ".join(f"[{a:+.3f}, {b:+.3f}]" for a, b in interval.segments)
    if interval.open_low or interval.open_high:
        text += " (open: widen --range)"
    return text


def _hull(interval: Any) -> tuple[float, float] | None:
    if not interval.segments:
        return None
    return interval.segments[0][0], interval.segments[-1][1]


def comparison_table(result: Any) -> str:
    """Plain-text report of a :class:`~smeft_pyhf.checks.card_vs_full.CardComparison`."""
    modes = list(result.cards)
    head = ["c", "mu(c)", "full"] + [f"card:{m}" for m in modes]
    if modes:
        head.append(f"full-card:{modes[0]}")
    rows = [head]
    for i, value in enumerate(result.values):
        row = [f"{value:+.4f}", f"{result.mu[i]:.4f}", f"{result.full[i]:.3f}"]
        row += [f"{result.cards[m][i]:.3f}" for m in modes]
        if modes:
            row.append(f"{result.full[i] - result.cards[modes[0]][i]:+.3f}")
        if not result.full_scan.valid[i]:
            row[2] += "!"
        rows.append(row)
    widths = [max(len(r[k]) for r in rows) for k in range(len(head))]
    lines = [
        f"{result.coefficient}: full likelihood vs card {result.card!r} "
        f"(mu(c) = 1 {result.linear:+.4g} c {result.quadratic:+.4g} c^2 from {result.dataset}; "
        f"card mu_hat = {result.mu_hat:.4g})",
        "Delta(2NLL) at each scan point (! = fit not valid):",
    ]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(3, "  ".join("-" * w for w in widths))
    lines.append("")
    lines.append("Intervals (Delta(2NLL) < 1 and < 3.84):")
    for key, intervals in result.intervals.items():
        for interval in intervals:
            lines.append(f"  {key:<20} {interval.level + '%':>4}  {_segments(interval)}")
    lines.append("")
    lines.append("Card minus full (hull of each region: lower end, upper end, width ratio):")
    for key, intervals in result.intervals.items():
        if key == "full":
            continue
        for interval, reference in zip(intervals, result.intervals["full"], strict=True):
            a, b = _hull(interval), _hull(reference)
            if a is None or b is None:
                lines.append(f"  {key:<20} {interval.level + '%':>4}  -")
                continue
            ratio = interval.width / reference.width if reference.width else float("nan")
            lines.append(f"  {key:<20} {interval.level + '%':>4}  {a[0] - b[0]:+.3f}  "
                         f"{a[1] - b[1]:+.3f}  x{ratio:.3f}")
    lines.append("")
    lines.append(f"full-likelihood minimum: 2NLL = {result.full_scan.twice_nll_min:.3f} at "
                 f"{result.coefficient} = {result.full_scan.best_value:+.4f} "
                 f"({result.full_scan.seconds:.0f} s of fits)")
    return "\n".join(lines)


def comparison_json(result: Any) -> dict[str, Any]:
    """JSON-ready dict of a comparison."""

    def intervals(items: Any) -> dict[str, Any]:
        return {f"{i.level}%": {"threshold": i.threshold, "segments": [list(s) for s in i.segments],
                          "open_low": i.open_low, "open_high": i.open_high} for i in items}

    return {
        "coefficient": result.coefficient,
        "card": result.card,
        "dataset": result.dataset,
        "mu": {"linear": result.linear, "quadratic": result.quadratic, "mu_hat": result.mu_hat},
        "values": result.values.tolist(),
        "mu_values": result.mu.tolist(),
        "delta_twice_nll": {"full": result.full.tolist(),
                            **{f"card:{k}": v.tolist() for k, v in result.cards.items()}},
        "full_fit_valid": result.full_scan.valid.tolist(),
        "intervals": {k: intervals(v) for k, v in result.intervals.items()},
        "full_minimum": {"twice_nll": result.full_scan.twice_nll_min,
                         "value": result.full_scan.best_value},
        "seconds": result.full_scan.seconds,
    }


@click.command()
@click.argument("workspace", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--card", "card", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Measurement card (YAML) made from the same workspace.")
@click.option("--coefficient", required=True, help="Wilson coefficient to scan (cX or OX).")
@click.option("--points", type=click.IntRange(min=2), default=21, show_default=True,
              help="Number of scan points.")
@click.option("--range", "scan_range", type=(float, float), default=None,
              help="Scan range LO HI (default: the card's 3 sigma region, padded).")
@click.option("--database", type=click.Path(file_okay=False, path_type=Path),
              help=f"SMEFiT database folder (default: ${DATABASE_ENV}).")
@click.option("--dataset", help="Theory table for mu(c) (default: the card's smefit_dataset).")
@click.option("--order", type=click.Choice(["LO", "NLO_QCD"]), default="NLO_QCD",
              show_default=True)
@click.option("--linear-only", is_flag=True, help="Drop the quadratic term of mu(c).")
@click.option("--card-mode", "card_modes", multiple=True,
              type=click.Choice(["total", "gaussian", "profiled", "marginalised"]),
              help="Card treatments to show (repeatable; default: total, gaussian, profiled).")
@click.option("--signal-sample", "signal_samples", multiple=True,
              help="Workspace sample(s) to scale (default: those with the POI normfactor).")
@click.option("--tolerance", type=float, default=0.1, show_default=True,
              help="iminuit tolerance of the full-likelihood fits.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def compare_command(workspace: Path, card: Path, coefficient: str, points: int = 21,
                    scan_range: tuple[float, float] | None = None, database: Path | None = None,
                    dataset: str | None = None, order: str = "NLO_QCD", linear_only: bool = False,
                    card_modes: tuple[str, ...] = (), signal_samples: tuple[str, ...] = (),
                    tolerance: float = 0.1, as_json: bool = False) -> None:
    """Compare the Gaussian CARD with the full likelihood of WORKSPACE in one coefficient."""
    from ..checks.card_vs_full import compare_card_vs_full, default_scan_range

    if database is None:
        env = os.environ.get(DATABASE_ENV)
        if not env:
            raise ConfigError("no SMEFiT database given", where="--database",
                              hint=f"pass --database DIR or set ${DATABASE_ENV}")
        database = Path(env)
    modes = card_modes or ("total", "gaussian", "profiled")
    if scan_range is None:
        scan_range = default_scan_range(card, coefficient=coefficient, database=database,
                                        dataset=dataset, order=order,  # type: ignore[arg-type]
                                        use_quad=not linear_only)
        log.info("scan range %.4g .. %.4g", *scan_range)
    lo, hi = scan_range
    if not lo < hi:
        raise ConfigError(f"empty scan range {lo} .. {hi}", where="--range",
                          hint="give LO < HI")
    result = compare_card_vs_full(
        workspace, card, coefficient=coefficient, values=np.linspace(lo, hi, points),
        database=database, dataset=dataset, order=order,  # type: ignore[arg-type]
        use_quad=not linear_only, signal_samples=signal_samples or None, card_modes=modes,
        tolerance=tolerance)
    if as_json:
        click.echo(json.dumps(comparison_json(result), indent=2))
    else:
        click.echo(comparison_table(result))

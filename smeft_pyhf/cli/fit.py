"""``smeft-pyhf fit [RUNCARD]``: run a fit and write its results folder.

With no RUNCARD the embedded default (``smeft_pyhf/examples/default_runcard.yaml``) is run.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import click

log = logging.getLogger(__name__)

__all__ = ["convergence_lines", "fit_command"]


def _fmt_interval(iv: object) -> str:
    segments = getattr(iv, "segments", ())
    if not segments:
        return "-"
    text = " U ".join(f"[{a:+.3g}, {b:+.3g}]" for a, b in segments)
    if getattr(iv, "open_low", False) or getattr(iv, "open_high", False):
        text += "*"
    return text


def summary_table(result: object) -> str:
    """Plain-text table: best fit and 95% intervals per coefficient."""
    rows = [("coefficient", "best fit", "profiled 95%", "marginalised 95%")]
    for name in result.names:  # type: ignore[attr-defined]
        entry = result.intervals.get(name, {})  # type: ignore[attr-defined]
        best = result.best_fit.get(name)  # type: ignore[attr-defined]
        rows.append(
            (
                name,
                "-" if best is None else f"{best:+.4g}",
                _fmt_interval(entry.get("profiled", {}).get("95")),
                _fmt_interval(entry.get("marginalised", {}).get("95")),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def convergence_lines(result: object) -> str:
    """The convergence figures of a fit as one line (empty when it was not sampled)."""
    d = getattr(result, "diagnostics", None)
    if d is None:
        return ""
    parts = []
    if d.ess_fraction is not None:
        parts.append(f"ESS/N {d.ess_fraction:.3g}")
    if d.max_weight_share is not None:
        parts.append(f"largest weight share {d.max_weight_share:.2g}")
    if d.marginal_ess:
        name, worst = min(d.marginal_ess.items(), key=lambda kv: kv[1])
        parts.append(f"smallest marginal ESS {worst:.3g} ({name})")
    if d.profile_converged_fraction is not None:
        parts.append(f"profile points converged {100 * d.profile_converged_fraction:.1f}%")
    if d.outside_fraction is not None:
        parts.append(f"weight outside the ranges {d.outside_fraction:.2g}")
    if d.chain_check.get("largest_shift"):
        name, worst = max(d.chain_check["largest_shift"].items(), key=lambda kv: kv[1])
        z = (d.chain_check.get("largest_shift_z") or {}).get(name, math.nan)
        parts.append(f"largest end shift by the chain check {worst:.2g} sd ({name}, z {z:.1f})")
    if d.heavy_weights.get("mean_z"):
        name, z = max(d.heavy_weights["mean_z"].items(), key=lambda kv: abs(kv[1]))
        parts.append(f"the {d.heavy_weights['n']} heaviest weights (share "
                     f"{d.heavy_weights['share']:.2g}) sit at {name} {z:+.2f} sd")
    for name, sides in sorted((d.mean_force.get("tails") or {}).items()):
        for side, t in sorted(sides.items()):
            parts.append(f"{name}'s {side} tail from its mean force (95% end {t['end_weights']:.4g}"
                         f" -> {t['end_mean_force']:.4g} +- {t['end_error']:.2g} sd)")
    return "convergence: " + ", ".join(parts) if parts else ""


@click.command()
@click.argument("runcard", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path),
              help="Results folder (default: the runcard's 'output', smeft_pyhf_results).")
@click.option("--device", help="Torch device: cpu, cuda, cuda:N or auto (default: runcard).")
@click.option("--seed", type=int, help="Random seed (default: runcard).")
@click.option("--scale-theory", type=float,
              help="Scale all theory uncertainties (0.5: halved, as in the paper's Fig. 5).")
@click.option("--database", type=click.Path(file_okay=False, path_type=Path),
              help="SMEFiT database folder (default: runcard or $SMEFT_PYHF_DATABASE).")
@click.option("--restrict", type=click.Choice(["none", "available", "top"]), default="none",
              show_default=True,
              help="SMEFiT runcards: keep only datasets in the database (available) or only "
                   "the top-quark ones (top).")
@click.option("--overwrite", is_flag=True, help="Replace an existing results folder.")
@click.option("--format", "plot_format", type=click.Choice(["pdf", "png"]), default="pdf",
              show_default=True, help="Plot file format.")
@click.option("--no-plots", is_flag=True, help="Write results.json only.")
@click.option("--quiet", is_flag=True, help="No progress output.")
@click.option("--json", "as_json", is_flag=True, help="Print the intervals as JSON.")
@click.option("--workers", type=click.IntRange(min=1),
              help="Run sampling and profiling on a local Dask cluster of N worker processes "
                   "(one per GPU with --device cuda if dask-cuda is installed; default: "
                   "runcard, else in this process). Needs the dask extra.")
@click.option("--scheduler", metavar="ADDRESS",
              help="Run sampling and profiling on the Dask cluster whose scheduler is at "
                   "ADDRESS (tcp://host:8786), e.g. a dask-jobqueue SLURMCluster.")
def fit_command(
    runcard: Path | None = None,
    output: Path | None = None,
    device: str | None = None,
    seed: int | None = None,
    scale_theory: float | None = None,
    database: Path | None = None,
    restrict: str = "none",
    overwrite: bool = False,
    plot_format: str = "pdf",
    no_plots: bool = False,
    quiet: bool = False,
    as_json: bool = False,
    workers: int | None = None,
    scheduler: str | None = None,
) -> None:
    """Run a SMEFT fit described by RUNCARD (default: the embedded example).

    RUNCARD is a smeft-pyhf runcard (runcard_version: 1) or a SMEFiT runcard. The results
    folder gets results.json (best fit, profiled and marginalised 1D/2D likelihoods,
    68%/95% intervals, ESS, timings, provenance) and the triangle, summary and weight plots.
    A killed run leaves no results folder; running it again resumes. With --workers or
    --scheduler the sampling and profiling tasks run on a Dask cluster; the results are the
    same as in-process for the same seed.
    """
    package_log = logging.getLogger("smeft_pyhf")
    old_level = package_log.level
    if quiet:  # for this command only: a CLI called in-process leaves the level as it was
        package_log.setLevel(logging.WARNING)
    try:
        _fit(runcard, output, device, seed, scale_theory, database, restrict, overwrite,
             plot_format, no_plots, quiet, as_json, workers, scheduler)
    finally:
        package_log.setLevel(old_level)


def _fit(runcard: Path | None, output: Path | None, device: str | None, seed: int | None,
         scale_theory: float | None, database: Path | None, restrict: str, overwrite: bool,
         plot_format: str, no_plots: bool, quiet: bool, as_json: bool,
         workers: int | None = None, scheduler: str | None = None) -> None:
    """The body of :func:`fit_command`."""
    from ..fit import default_runcard_path
    from ..fit.run import run_fit
    from ..fit.runcard import load_runcard

    path = runcard if runcard is not None else default_runcard_path()
    if runcard is None:
        click.echo(f"No runcard given: running the embedded default {path}", err=True)
    rc = load_runcard(path, database=database, restrict=restrict)  # type: ignore[arg-type]
    if seed is not None:
        rc = rc.replace(seed=seed)
    if output is None and runcard is None:
        output = Path.cwd() / rc.output
    t0 = time.perf_counter()
    result = run_fit(
        rc,
        output=output,
        device=device,
        overwrite=overwrite,
        progress=not quiet,
        scale_theory=scale_theory,
        plots=not no_plots,
        plot_format=plot_format,  # type: ignore[arg-type]
        workers=workers,
        scheduler=scheduler,
    )
    seconds = time.perf_counter() - t0
    folder = result.provenance.get("results_dir")
    if as_json:
        from ..results.results_file import results_to_dict

        data = results_to_dict(result)
        click.echo(
            json.dumps(
                {"results_dir": folder, "best_fit": data["best_fit"], "intervals": data["intervals"],
                 "diagnostics": data.get("diagnostics"), "seconds": round(seconds, 2)},
                indent=1,
            )
        )
        return
    click.echo(summary_table(result))
    if result.analytic is not None:
        click.echo("analytic (linear Gaussian): " + ", ".join(
            f"{n} = {result.analytic.best_fit[n]:+.4g} +- {result.analytic.std[n]:.3g}"
            for n in result.names))
    if convergence_lines(result):
        click.echo(convergence_lines(result))
    ess = f"ESS {result.ess:.3g} of {result.n_samples} samples; " if result.ess else ""
    click.echo(f"{ess}{seconds:.1f} s. Results: {folder}  (* = limit at the edge of the range)")
    warnings = result.warnings()
    if any(w.figure != "at_prior_edge" for w in warnings):
        click.echo("WARNING: this fit has not converged; do not use its numbers as they are:",
                   err=True)
        for warning in warnings:
            click.echo(f"  - {warning.message()}", err=True)
    elif warnings:
        click.echo(f"Note: {warnings[0].message()}", err=True)

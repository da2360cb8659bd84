"""``smeft-pyhf ingest``: published workspace -> measurement card (YAML).

Example (shell):
    smeft-pyhf ingest 3L_workspace.json --mapping atlas_ttZ_3L --output ttZ_3L.yaml
    smeft-pyhf ingest 3L_workspace.json --combine 4L_workspace.json --mapping atlas_ttZ_3L4L
    smeft-pyhf ingest BkgOnly.json --patch patchset.json --patch-name NAME --json
    smeft-pyhf ingest workspace.json --mapping atlas_schannel --stat-convention all-fixed --no-plots
    smeft-pyhf ingest A.json B.json C.json -o cards/ --workers 3

Several workspaces are ingested as independent tasks: one after another in this process, or
on a Dask cluster with ``--workers N`` (a local cluster of N processes) or ``--scheduler
ADDRESS``; their cards go to the folder given by ``--output`` as ``<workspace name>.card.yaml``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import click

from ..cluster import InProcess, open_runner
from ..exceptions import InputError
from ..ingest.pipeline import check_output_path, ingest
from ..ingest.report import format_report, report_json

__all__ = ["ingest_command", "ingest_task"]

log = logging.getLogger(__name__)

_SUFFIXES = (".json.gz", ".json", ".xml")


def _stem(path: Path) -> str:
    """The workspace's file name without its suffix (``A.json.gz`` -> ``A``)."""
    for suffix in _SUFFIXES:
        if path.name.endswith(suffix):
            return path.name[: -len(suffix)]
    return path.stem


def ingest_task(workspace: Path, output: Path | None, options: dict[str, Any],
                as_json: bool) -> tuple[str, str | None, list[str]]:
    """Ingest one workspace (the task of a batch ingestion): the printed report, the card's
    path and the plot paths."""
    result = ingest(workspace, output=output, **options)
    card = result.card
    text = report_json(card, plots=result.plots) if as_json else format_report(card)
    return text, (str(card.source) if card.source else None), [str(p) for p in result.plots]


@click.command()
@click.argument("workspaces", metavar="WORKSPACE...", nargs=-1, required=True,
                type=click.Path(path_type=Path))
@click.option(
    "--patch", type=click.Path(path_type=Path), default=None,
    help="JSON Patch, PatchSet entry or PatchSet to apply to the workspace.",
)
@click.option("--patch-name", default=None, help="Which entry of a PatchSet to apply.")
@click.option("--poi", default=None, help="Parameter of interest (default: the measurement's).")
@click.option("--measurement", default=None, help="Measurement name (default: the first).")
@click.option(
    "--combine", "combine", multiple=True, type=click.Path(path_type=Path),
    help="Another workspace to combine with WORKSPACE (its measurement is renamed to "
    "WORKSPACE's, parameters correlated by name); repeatable.",
)
@click.option(
    "--mapping", default=None,
    help="Mapping YAML path or shipped name (default: the shipped mapping that fits).",
)
@click.option(
    "--output", "-o", type=click.Path(path_type=Path), default=None,
    help="Card file to write (default: <card name>.card.yaml in the current folder).",
)
@click.option("--no-write", is_flag=True, default=False, help="Do not write a card file.")
@click.option("--name", default=None, help="Card name (default: the mapping's analysis name).")
@click.option(
    "--minimizer", type=click.Choice(["minuit", "scipy"]), default="minuit", show_default=True,
    help="Minimiser of the best fit (the other one is the fallback).",
)
@click.option(
    "--breakdown", type=click.Choice(["hesse", "profile"]), default="hesse", show_default=True,
    help="How the paper-comparable fix-and-refit impacts are made: from the Hessian (instant) "
    "or from constrained profile refits. The card's stat and categories are the variance split "
    "by source either way.",
)
@click.option(
    "--stat-convention", type=click.Choice(["free-floating", "all-fixed"]), default=None,
    help="Stat with the free normalisations floating (they count as statistical) or with every "
    "other parameter fixed (they go to their categories). Default: the mapping's "
    "stat_convention, else free-floating.",
)
@click.option(
    "--plots/--no-plots", "plots", default=None,
    help="Write pulls, impact ranking, pre/post-fit yields per region and the breakdown chart "
    "beside the card (default: on when a card file is written).",
)
@click.option("--plot-format", type=click.Choice(["pdf", "png"]), default="pdf",
              show_default=True, help="File format of the plots.")
@click.option("--n-impacts", type=click.IntRange(min=0), default=20, show_default=True,
              help="Leading NPs whose impacts are refit.")
@click.option("--n-scans", type=click.IntRange(min=0), default=10, show_default=True,
              help="Leading NPs to scan (1D profile likelihood).")
@click.option("--no-prefit", is_flag=True, default=False, help="Skip pre-fit impacts.")
@click.option("--starts", "n_starts", type=click.IntRange(min=1), default=4, show_default=True,
              help="Start points of the best fit: the nominal one and seeded random draws "
              "within the NP constraints (the lowest minimum wins).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the random start points.")
@click.option(
    "--rootdir", type=click.Path(path_type=Path), default=None,
    help="For HistFactory XML: the folder the <Input> paths are relative to (default: the "
    "XML's folder or a parent that holds them, else the working folder).",
)
@click.option("--json", "as_json", is_flag=True, default=False,
              help="Print the card as JSON instead of the table (several: a JSON list).")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Ingest several workspaces in parallel on a local Dask cluster of N worker "
              "processes (needs the dask extra).")
@click.option("--scheduler", metavar="ADDRESS", default=None,
              help="Ingest several workspaces on the Dask cluster whose scheduler is at ADDRESS.")
def ingest_command(
    workspaces: tuple[Path, ...],
    patch: Path | None,
    patch_name: str | None,
    poi: str | None,
    measurement: str | None,
    combine: tuple[Path, ...],
    mapping: str | None,
    output: Path | None,
    no_write: bool,
    name: str | None,
    minimizer: str,
    breakdown: str,
    stat_convention: str | None,
    plots: bool | None,
    plot_format: str,
    n_impacts: int,
    n_scans: int,
    no_prefit: bool,
    n_starts: int,
    seed: int,
    rootdir: Path | None,
    as_json: bool,
    workers: int | None,
    scheduler: str | None,
) -> None:
    """Fit WORKSPACE, break its POI uncertainty down into SFitter categories, write a card.

    Accepts .json, .json.gz and HistFactory .xml (+ROOT). Every nuisance parameter must be
    assigned to a category by the mapping (or ignored there); the printed table compares the
    reproduced uncertainty groups with the paper's, then lists the per-category breakdown,
    stat, total, leading NP impacts, NP scans and the fit diagnostics. The card's stat and
    categories split the POI's variance by source, so they add up in quadrature to the total;
    the fix-and-refit impacts a paper quotes are printed beside them. Every output path (the
    default <card name>.card.yaml too) is checked before the fit; the plots go beside the card.

    Several WORKSPACEs are ingested independently (in parallel with --workers/--scheduler),
    each with the same options; --output is then the folder of their cards.
    """
    if output is not None and no_write:
        raise InputError("--output and --no-write exclude each other", where="command line")
    if plots and no_write:
        raise InputError("--plots are written beside the card, and --no-write writes none",
                         where="command line", hint="drop --plots or --no-write")
    options: dict[str, Any] = {
        "patch": patch, "patch_name": patch_name, "poi": poi, "measurement": measurement,
        "combine": combine, "mapping": mapping, "name": name, "minimizer": minimizer,
        "breakdown": breakdown, "stat_convention": stat_convention, "plots": plots,
        "plot_format": plot_format, "n_impacts": n_impacts, "n_scans": n_scans,
        "prefit": not no_prefit, "n_starts": n_starts, "seed": seed, "rootdir": rootdir,
        "default_output": not no_write,
    }
    if len(workspaces) == 1:
        if workers is not None or scheduler is not None:
            log.info("one workspace: ingested in this process (--workers/--scheduler spread "
                     "several workspaces)")
        if output is not None:
            check_output_path(output)
        text, source, plot_paths = ingest_task(workspaces[0], output, options, as_json)
        _echo(text, source, plot_paths, as_json)
        return
    tasks = _batch_tasks(workspaces, output, options, no_write=no_write)
    with open_runner(workers=workers, scheduler=scheduler) as runner:
        results = list((runner or InProcess()).map(
            ingest_task, [(ws, out, options, as_json) for ws, out in tasks], label="ingest"))
    if as_json:
        click.echo("[" + ",\n".join(text for text, _, _ in results) + "]")
        return
    for (workspace, _), (text, source, plot_paths) in zip(tasks, results, strict=True):
        click.echo(f"== {workspace}")
        _echo(text, source, plot_paths, as_json)


def _batch_tasks(workspaces: tuple[Path, ...], output: Path | None, options: dict[str, Any],
                 *, no_write: bool) -> list[tuple[Path, Path | None]]:
    """``(workspace, card path)`` per workspace of a batch (``--output``: their folder, created
    if missing), every output path checked."""
    for option in ("patch", "patch_name", "name", "combine"):
        if options[option]:
            raise InputError(f"--{option.replace('_', '-')} describes one workspace, and "
                             f"{len(workspaces)} were given", where="command line",
                             hint="ingest that workspace on its own")
    stems = [_stem(ws) for ws in workspaces]
    if len(set(stems)) != len(stems):
        raise InputError(f"workspaces with the same file name: {stems}", where="command line",
                         hint="their cards would overwrite each other; rename or ingest "
                         "them separately")
    if no_write:
        return [(ws.absolute(), None) for ws in workspaces]
    folder = (output or Path.cwd()).absolute()
    folder.mkdir(parents=True, exist_ok=True)
    tasks = []
    for ws, stem in zip(workspaces, stems, strict=True):
        card = folder / f"{stem}.card.yaml"
        check_output_path(card)
        tasks.append((ws.absolute(), card))
    return tasks


def _echo(text: str, source: str | None, plot_paths: list[str], as_json: bool) -> None:
    click.echo(text)
    if as_json:
        return
    if source:
        click.echo(f"card written to {source}")
    if plot_paths:
        click.echo(f"plots written ({len(plot_paths)}):")
        for path in plot_paths:
            click.echo(f"  {path}")

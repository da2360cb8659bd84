"""``smeft-pyhf plot RESULTS``: redraw the plots of a results folder or file."""

from __future__ import annotations

from pathlib import Path

import click

__all__ = ["plot_command"]


@click.command()
@click.argument("results", type=click.Path(exists=True, path_type=Path))
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the plots (default: the results folder).")
@click.option("--compare", type=click.Path(exists=True, path_type=Path),
              help="A second results folder/file overlaid in the summary plot.")
@click.option("--labels", default="nominal,compared", show_default=True,
              help="Legend labels of RESULTS and --compare, comma separated.")
@click.option("--format", "plot_format", type=click.Choice(["pdf", "png"]), default="pdf",
              show_default=True)
@click.option("--only", type=click.Choice(["all", "triangle", "summary", "weights"]),
              default="all", show_default=True, help="Which plot to draw.")
def plot_command(
    results: Path,
    output: Path | None = None,
    compare: Path | None = None,
    labels: str = "nominal,compared",
    plot_format: str = "pdf",
    only: str = "all",
) -> None:
    """Draw the triangle, summary (95%/68% intervals) and weight plots of RESULTS.

    RESULTS is a results folder written by 'smeft-pyhf fit' or its results.json. With
    --compare B, B's intervals are overlaid in the summary plot (e.g. a fit with
    --scale-theory 0.5).
    """
    from .._io import record_in_manifest
    from ..exceptions import InputError
    from ..results import plots
    from ..results.results_file import read_results

    result = read_results(results)
    other = read_results(compare) if compare is not None else None
    folder = output or (results if results.is_dir() else results.parent)
    if not folder.exists():
        folder.mkdir(parents=True)
    if not folder.is_dir():
        raise InputError("not a folder", where=str(folder), hint="give --output a folder")
    parts = [p.strip() for p in labels.split(",")]
    pair = (parts[0], parts[1] if len(parts) > 1 else "compared")
    written = []
    if only in ("all", "triangle"):
        path = folder / f"triangle.{plot_format}"
        plots.triangle_plot(result, save_figure=path, close_figure=True)
        written.append(path)
    if only in ("all", "summary"):
        name = "summary_compare" if other is not None else "summary"
        path = folder / f"{name}.{plot_format}"
        plots.summary_plot(result, compare=other, labels=pair if other else ("", ""),
                           save_figure=path, close_figure=True)
        written.append(path)
    if only in ("all", "weights"):
        path = folder / f"weights.{plot_format}"
        plots.weight_plot(result, save_figure=path, close_figure=True)
        written.append(path)
    record_in_manifest(folder, [path.name for path in written])
    for path in written:
        click.echo(str(path))

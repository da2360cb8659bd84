"""Plots of an ingestion, written beside its card: cabinetry's pulls, ranking and yields, and
the uncertainty breakdown beside the paper's rows.

* ``<stem>.pulls.<fmt>``: post-fit pulls of the Gaussian-constrained NPs centred at 0
  (:func:`cabinetry.visualize.pulls` on a :class:`cabinetry.fit.FitResults` built from our fit;
  left out when the model has none);
* ``<stem>.ranking.<fmt>``: the leading per-NP impacts (:func:`cabinetry.visualize.ranking`
  on the refits of :func:`~smeft_pyhf.ingest.impacts.parameter_impacts`);
* ``<stem>.yields_prefit_<region>.<fmt>`` and ``<stem>.yields_postfit_<region>.<fmt>``: stacked
  yields per region with data and the model uncertainty (:func:`cabinetry.visualize.data_mc`,
  post-fit uncertainties from our covariance);
* ``<stem>.breakdown.<fmt>``: the card's categories (variance by source, what the likelihood
  reads) beside their fix-and-refit impacts, and, when the mapping lists the paper's rows, the
  reproduced paper groups beside the paper's numbers (matplotlib).

Every figure is rendered to bytes and written with :func:`smeft_pyhf._io.atomic_write_bytes`.

Example:
    >>> import tempfile, pathlib
    >>> from smeft_pyhf._resources import shipped_dir
    >>> from smeft_pyhf.ingest.pipeline import ingest
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> r = ingest(shipped_dir("workspaces") / "example_ttZ_like.json",
    ...            mapping="example_ttZ_like", n_impacts=2, n_scans=0,
    ...            output=folder / "ex.card.yaml")
    >>> sorted(p.name for p in r.plots)[:2]
    ['ex.breakdown.pdf', 'ex.pulls.pdf']
"""

from __future__ import annotations

import io
import logging
import math
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pyhf
from matplotlib.figure import Figure

from .._io import atomic_write_bytes
from ..formats.card import MeasurementCard
from .fitting import WorkspaceFit, numpy_backend, parameter_indices
from .impacts import ParameterImpact

__all__ = ["cabinetry_fit_results", "write_plots"]

log = logging.getLogger(__name__)


def cabinetry_fit_results(best: WorkspaceFit) -> Any:
    """Our best fit as a :class:`cabinetry.fit.FitResults` (correlations from the covariance).

    Fixed parameters (uncertainty 0) get a unit diagonal and no correlation.

    Example:
        >>> from smeft_pyhf._resources import shipped_dir
        >>> from smeft_pyhf.ingest.workspace import load_workspace
        >>> from smeft_pyhf.ingest.fitting import fit
        >>> ws = load_workspace(shipped_dir("workspaces") / "example_ttZ_like.json")
        >>> results = cabinetry_fit_results(fit(ws.model, ws.data))
        >>> results.corr_mat.shape[0] == len(results.labels), float(results.corr_mat[0, 0])
        (True, 1.0)
    """
    import cabinetry

    uncertainty = np.nan_to_num(np.asarray(best.uncertainty, dtype=float))
    n = len(uncertainty)
    corr = np.eye(n)
    if best.covariance is not None:
        scale = np.where(uncertainty > 0, uncertainty, 1.0)
        corr = np.asarray(best.covariance, dtype=float) / np.outer(scale, scale)
        corr[uncertainty == 0, :] = 0.0
        corr[:, uncertainty == 0] = 0.0
        np.fill_diagonal(corr, 1.0)
    return cabinetry.fit.FitResults(
        np.asarray(best.bestfit, dtype=float), uncertainty, list(best.labels), corr,
        float(best.twice_nll),
    )


def _render(figure: Figure, path: Path, plot_format: str) -> Path:
    buffer = io.BytesIO()
    figure.savefig(buffer, format=plot_format, dpi=150 if plot_format == "png" else "figure")
    plt.close(figure)
    atomic_write_bytes(path, buffer.getvalue())
    log.info("wrote %s", path)
    return path


def _not_pulls(model: pyhf.pdf.Model, labels: Sequence[str]) -> list[str]:
    """Labels that are not Gaussian NPs centred at 0 (normfactors, staterror, lumi, shapesys)."""
    keep: set[int] = set()
    init = np.asarray(model.config.suggested_init(), dtype=float)
    for name in model.config.par_order:
        pset = model.config.param_set(name)
        if getattr(pset, "pdf_type", None) != "normal":
            continue
        for i in parameter_indices(model, name):
            if init[i] == 0.0:
                keep.add(i)
    return [label for i, label in enumerate(labels) if i not in keep]


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", name).strip("_") or "region"


def _breakdown_figure(card: MeasurementCard) -> Figure:
    mu = card.best_fit
    relative = mu != 0 and not card.diagnostics.get("poi_at_bound")
    scale = 100.0 / abs(mu) if relative else 1.0
    unit = "% of the best fit" if relative else "absolute"
    impact = (card.impact_breakdown or {}).get("categories", {})
    rows = [("Stat", card.stat, (card.impact_breakdown or {}).get("stat", {}).get("absolute"))]
    entries = sorted(
        [*card.systematics.items(), *card.theory.items()], key=lambda item: -item[1]["absolute"]
    )
    rows += [(name, e["absolute"], impact.get(name, {}).get("absolute")) for name, e in entries]
    paper_rows = [row for row in card.groups if row.get("paper_percent") is not None]
    convention = (card.decomposition or {}).get("stat_convention", "?")
    closure = (card.decomposition or {}).get("closure")
    n_panels = 2 if paper_rows else 1
    height = max(3.0, 0.32 * max(len(rows), len(card.groups)) + 1.6)
    figure, axes = plt.subplots(1, n_panels, figsize=(6.5 * n_panels, height), squeeze=False)
    ax = axes[0, 0]
    y = np.arange(len(rows))[::-1]
    ax.barh(y + 0.2, [r[1] * scale for r in rows], height=0.4, color="tab:blue",
            label="variance by source (card, likelihood)")
    ax.barh(y - 0.2, [(r[2] or 0.0) * scale for r in rows], height=0.4, color="tab:gray",
            label="fix-and-refit impact")
    ax.set_yticks(y, [r[0] for r in rows], fontsize=8)
    ax.set_xlabel(f"uncertainty on {card.observable['poi']} [{unit}]")
    title = f"{card.name}: stat {convention}"
    if closure is not None:
        title += f", closure {closure:.3f}"
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    if paper_rows:
        ax = axes[0, 1]
        groups = sorted(card.groups, key=lambda r: -(r.get("paper_percent") or 0.0))
        yg = np.arange(len(groups))[::-1]
        ax.barh(yg + 0.2, [r["reproduced_percent"] for r in groups], height=0.4,
                color="tab:gray", label="reproduced (fix-and-refit)")
        ax.barh(yg - 0.2, [r.get("paper_percent") or 0.0 for r in groups], height=0.4,
                color="tab:orange", label="paper")
        ax.set_yticks(yg, [r["group"] for r in groups], fontsize=8)
        ax.set_xlabel(f"uncertainty on {card.observable['poi']} [% of the best fit]")
        ax.set_title("paper groups", fontsize=9)
        ax.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    return figure


def write_plots(
    card: MeasurementCard,
    model: pyhf.pdf.Model,
    data: Sequence[float],
    best: WorkspaceFit,
    impacts: Sequence[ParameterImpact],
    *,
    folder: str | Path,
    stem: str,
    plot_format: Literal["pdf", "png"] = "pdf",
) -> tuple[Path, ...]:
    """Write the plots of one ingestion into ``folder`` (see the module docstring).

    Args:
        card: the measurement card (for the breakdown chart).
        model: the pyhf model.
        data: observed data followed by the auxiliary data.
        best: the best fit.
        impacts: the per-NP impacts (the ranking plot is left out when empty).
        folder: where to write (the card's folder).
        stem: file name prefix (the card's name without ``.card.yaml``).
        plot_format: ``"pdf"`` or ``"png"``.

    Returns:
        The paths written, in the order pulls, ranking, yields, breakdown.

    Example:
        >>> write_plots.__name__
        'write_plots'
    """
    import cabinetry

    folder = Path(folder)
    written: list[Path] = []

    def path(kind: str) -> Path:
        return folder / f"{stem}.{kind}.{plot_format}"

    results = cabinetry_fit_results(best)
    with numpy_backend():
        exclude = _not_pulls(model, results.labels)
        if any(u > 0 for label, u in zip(results.labels, results.uncertainty, strict=True)
               if label not in set(exclude)):
            figure = cabinetry.visualize.pulls(
                results, exclude=exclude, close_figure=False, save_figure=False
            )
            written.append(_render(figure, path("pulls"), plot_format))

        ranked = [item for item in impacts if math.isfinite(item.postfit_up)]
        if ranked:
            ranking = cabinetry.fit.RankingResults(
                np.array([item.bestfit for item in ranked]),
                np.array([item.postfit_sigma for item in ranked]),
                [item.parameter for item in ranked],
                np.array([item.prefit_up or 0.0 for item in ranked]),
                np.array([item.prefit_down or 0.0 for item in ranked]),
                np.array([item.postfit_up for item in ranked]),
                np.array([item.postfit_down for item in ranked]),
            )
            with warnings.catch_warnings():  # the axis is rescaled below
                warnings.filterwarnings("ignore", "Attempting to set identical", UserWarning)
                figure = cabinetry.visualize.ranking(ranking, close_figure=False,
                                                     save_figure=False)
            # cabinetry scales the impact axis to the pre-fit impacts alone; free
            # normalisations (and --no-prefit) have none, so use every bar drawn
            largest = float(np.max(np.abs(np.concatenate(
                [ranking.prefit_up, ranking.prefit_down, ranking.postfit_up,
                 ranking.postfit_down]))))
            for axis in figure.axes:
                if axis.get_xlabel() == r"$\Delta \mu$" and largest > 0:
                    axis.set_xlim(-1.1 * largest, 1.1 * largest)
            written.append(_render(figure, path("ranking"), plot_format))

        observed = list(np.asarray(data, dtype=float)[: model.config.nmaindata])
        for label, fit_results in (("prefit", None), ("postfit", results)):
            prediction = cabinetry.model_utils.prediction(model, fit_results=fit_results)
            figures = cabinetry.visualize.data_mc(
                prediction, observed, close_figure=False, save_figure=False
            ) or []
            for item in figures:
                written.append(_render(
                    item["figure"], path(f"yields_{label}_{_safe(item['region'])}"), plot_format
                ))
    written.append(_render(_breakdown_figure(card), path("breakdown"), plot_format))
    return tuple(written)

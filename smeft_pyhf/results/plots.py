"""Plots of a fit: triangle plot, summary of intervals, weight distribution.

Every function takes a :class:`~smeft_pyhf.results.results_file.FitResult`, returns a
matplotlib ``Figure`` and accepts ``save_figure`` (a path; the format follows the suffix) and
``close_figure`` (close it after saving), as in cabinetry. The Agg backend is used, so nothing
needs a display. Colours follow the paper (arXiv:2411.00942): profiled orange, marginalised blue.

Example:
    >>> import numpy as np
    >>> from smeft_pyhf.results.results_file import Histogram1D, make_fit_result
    >>> e = np.linspace(-3, 3, 41); c = 0.5 * (e[1:] + e[:-1])
    >>> r = make_fit_result(names=("cA",), ranges={"cA": (-3, 3)}, best_fit={"cA": 0.0},
    ...                     profile1d={"cA": Histogram1D(e, c**2)},
    ...                     marginal1d={"cA": Histogram1D(e, c**2)})
    >>> fig = summary_plot(r, close_figure=True)
    >>> len(fig.axes)
    1
"""

from __future__ import annotations

import io
import logging
import math
import os
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from .._io import atomic_write_bytes
from ..formats.intervals import DELTA_CHI2_2D, PROBABILITY
from .intervals import hdi_density_level
from .results_file import FitResult, Histogram2D

log = logging.getLogger(__name__)

__all__ = [
    "MARGINALISED_COLOUR",
    "PROFILED_COLOUR",
    "draw_all",
    "summary_plot",
    "triangle_plot",
    "weight_plot",
]

PROFILED_COLOUR = "tab:orange"
MARGINALISED_COLOUR = "tab:blue"
_COLOURS = {"profiled": PROFILED_COLOUR, "marginalised": MARGINALISED_COLOUR}
#: darker shades for the compared result of the summary plot
_COMPARE_COLOURS = {"profiled": "#8c3d00", "marginalised": "#08306b"}


def _finish(fig: Figure, save_figure: str | os.PathLike[str] | None, close_figure: bool) -> Figure:
    if save_figure is not None:
        # drawn in memory and written atomically: a symbolic link at the path is replaced,
        # never written through
        path = Path(save_figure)
        buffer = io.BytesIO()
        fig.savefig(buffer, format=path.suffix.lstrip(".") or "pdf",
                    dpi=150 if path.suffix == ".png" else None)
        atomic_write_bytes(path, buffer.getvalue())
        log.info("saved %s", path)
    if close_figure:
        plt.close(fig)
    return fig


_WARNING_COLOUR = "tab:red"
_FLAG_TEXT = {"marginal_ess": "noisy marginal", "at_prior_edge": "at prior edge",
              "chain_check": "end moved by chains", "heavy_weights": "heavy weights in tail"}
_GLOBAL_FIGURES = ("ess_fraction", "max_weight_share", "profile_converged_fraction",
                   "outside_fraction")


def _flags(result: FitResult) -> tuple[dict[str, list[str]], list[str]]:
    """Per-coefficient marks and whole-fit warnings from the fit's convergence figures."""
    marks: dict[str, list[str]] = {}
    banner: list[str] = []
    for warning in result.warnings():
        if warning.figure in _FLAG_TEXT:
            for name in warning.coefficients:
                marks.setdefault(name, []).append(_FLAG_TEXT[warning.figure])
        elif warning.figure in _GLOBAL_FIGURES:
            side = "<" if warning.figure in ("ess_fraction", "profile_converged_fraction") else ">"
            banner.append(f"{warning.figure} {warning.value:.2g} {side} {warning.threshold:.2g}")
    return marks, banner


def _banner(fig: Figure, banner: list[str], *, width: int = 70, suptitle: bool = True) -> None:
    """Mark a figure whose fit has not converged (red, wrapped to the figure)."""
    if not banner:
        return
    text = textwrap.fill("NOT CONVERGED: " + ", ".join(banner), width=width)
    if suptitle:
        fig.suptitle(text, color=_WARNING_COLOUR, fontsize=8, weight="bold")
    else:
        fig.text(0.5, 0.995, text, ha="center", va="top", color=_WARNING_COLOUR, fontsize=9,
                 weight="bold")


def _label(name: str) -> str:
    """``ctG`` -> ``$c_{tG}$``."""
    if name.startswith("c") and len(name) > 1:
        return f"$c_{{{name[1:]}}}$"
    return name


def _contour_levels_marginal(h: Histogram2D) -> list[float]:
    density = np.exp(-0.5 * h.delta_chi2)
    levels = [hdi_density_level(density, PROBABILITY[level]) for level in ("95", "68")]
    out = []
    for level in levels:
        if level <= 0 or not math.isfinite(level):
            continue
        out.append(-2.0 * math.log(level))
    return sorted(set(out))


def _draw_2d(ax: plt.Axes, h: Histogram2D, levels: Sequence[float], colour: str) -> None:
    xc = 0.5 * (h.x_edges[1:] + h.x_edges[:-1])
    yc = 0.5 * (h.y_edges[1:] + h.y_edges[:-1])
    z = np.where(np.isfinite(h.delta_chi2), h.delta_chi2, 1e3).T  # rows = y
    levels = sorted(level for level in levels if level > 0)
    if not levels or z.min() > levels[-1]:
        return
    ax.contour(xc, yc, z, levels=levels, colors=colour, linewidths=1.2)
    # inner (68%) region darker than the outer (95%) one
    for level, alpha in zip(levels, (0.3, 0.12)[-len(levels):] if len(levels) > 1 else (0.2,),
                            strict=False):
        ax.contourf(xc, yc, z, levels=[-1.0, level], colors=colour, alpha=alpha)


def triangle_plot(
    result: FitResult,
    *,
    names: Sequence[str] | None = None,
    methods: Sequence[Literal["profiled", "marginalised"]] = ("profiled", "marginalised"),
    show_best_fit: bool = True,
    save_figure: str | os.PathLike[str] | None = None,
    close_figure: bool = False,
) -> Figure:
    """Triangle plot: 1D likelihoods on the diagonal, 68/95% 2D regions below it.

    Profiled (orange) 1D curves are ``exp(-Delta chi2 / 2)``, regions at ``Delta chi2 = 2.30,
    5.99``; marginalised (blue) 1D curves are the posterior density (peak 1), regions are the
    68%/95% highest-density regions.

    Args:
        result: the fit result.
        names: coefficients to show (default all).
        methods: which of profiled/marginalised to draw.
        show_best_fit: mark the best-fit point.
        save_figure: save to this path.
        close_figure: close the figure after saving.
    """
    names = list(names or result.names)
    marks, banner = _flags(result)
    rebuilt: dict[str, list[str]] = {}
    if result.diagnostics is not None:
        for name, side in result.diagnostics.replaced_tails():
            rebuilt.setdefault(name, []).append(side)
    n = len(names)
    size = max(2.0, min(2.4, 14.0 / max(n, 1)))
    fig, axes = plt.subplots(n, n, figsize=(size * n + 0.6, size * n + 0.6), squeeze=False)
    for i, yname in enumerate(names):
        for j, xname in enumerate(names):
            ax = axes[i, j]
            if j > i:
                ax.set_axis_off()
                continue
            if i == j:
                for method in methods:
                    store = result.profile1d if method == "profiled" else result.marginal1d
                    if xname in store:
                        h = store[xname]
                        y = np.exp(-0.5 * h.delta_chi2)
                        if method == "profiled":
                            ax.plot(h.centres, y, color=_COLOURS[method], lw=1.6, label=method)
                        else:
                            ax.stairs(y, h.edges, color=_COLOURS[method], lw=1.4, label=method)
                ax.set_ylim(0, 1.1)
                ax.set_yticks([])
                if xname in marks:
                    ax.text(0.02, 0.97, "! " + ", ".join(marks[xname]), transform=ax.transAxes,
                            ha="left", va="top", fontsize=6, color=_WARNING_COLOUR)
                if xname in rebuilt:
                    ax.text(0.98, 0.97, "\n".join(f"{side} tail from mean force"
                                                   for side in sorted(rebuilt[xname])),
                            transform=ax.transAxes, ha="right", va="top", fontsize=6,
                            color="0.35")
                if show_best_fit and xname in result.best_fit:
                    ax.axvline(result.best_fit[xname], color="0.4", lw=0.8, ls=":")
            else:
                key = (xname, yname)
                swapped = (yname, xname)
                for method in methods:
                    store = result.profile2d if method == "profiled" else result.marginal2d
                    if key in store:
                        h = store[key]
                    elif swapped in store:
                        s = store[swapped]
                        h = Histogram2D(s.y_edges, s.x_edges, s.delta_chi2.T)
                    else:
                        continue
                    levels = (
                        [DELTA_CHI2_2D["68"], DELTA_CHI2_2D["95"]]
                        if method == "profiled"
                        else _contour_levels_marginal(h)
                    )
                    _draw_2d(ax, h, levels, _COLOURS[method])
                if show_best_fit and xname in result.best_fit and yname in result.best_fit:
                    ax.plot(result.best_fit[xname], result.best_fit[yname], "k*", ms=5)
                if yname in result.ranges:
                    ax.set_ylim(*result.ranges[yname])
            if xname in result.ranges:
                ax.set_xlim(*result.ranges[xname])
            if i == n - 1:
                ax.set_xlabel(_label(xname))
            else:
                ax.set_xticklabels([])
            if j == 0 and i > 0:
                ax.set_ylabel(_label(yname))
            elif i != j:
                ax.set_yticklabels([])
            ax.tick_params(labelsize=7)
    handles = [
        plt.Line2D([], [], color=_COLOURS[m], lw=2, label=m) for m in methods
    ]
    handles.append(plt.Line2D([], [], color="none", label="regions: 68% (dark), 95% (light)"))
    fig.legend(handles=handles, loc="upper right", bbox_to_anchor=(0.97, 0.95), frameon=False,
               fontsize=10)
    title = result.config.get("name") if result.config else None
    if title:
        fig.suptitle(str(title), x=0.03, y=0.985, ha="left", fontsize=11)
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.07, top=0.95, hspace=0.08, wspace=0.08)
    _banner(fig, banner, width=40 + 12 * n, suptitle=False)
    return _finish(fig, save_figure, close_figure)


def _scale_factors(results: Sequence[FitResult], names: Sequence[str]) -> dict[str, float]:
    """Powers of ten bringing every coefficient's 95% interval to a comparable size."""
    extent: dict[str, float] = {}
    for name in names:
        values = []
        for res in results:
            for method in res.intervals.get(name, {}).values():
                iv = method.get("95")
                if iv is not None and iv.segments:
                    values.extend([abs(iv.low), abs(iv.high)])
        extent[name] = max(values) if values else 0.0
    finite = [v for v in extent.values() if v > 0]
    if not finite:
        return dict.fromkeys(names, 1.0)
    reference = max(finite)
    factors = {}
    for name, value in extent.items():
        if value <= 0:
            factors[name] = 1.0
            continue
        power = math.floor(math.log10(reference / value))
        factors[name] = 10.0**power if power >= 1 else 1.0
    return factors


def summary_plot(
    result: FitResult,
    *,
    compare: FitResult | None = None,
    labels: tuple[str, str] = ("", "compared"),
    methods: Sequence[Literal["profiled", "marginalised"]] = ("profiled", "marginalised"),
    levels: Sequence[Literal["68", "95"]] = ("95", "68"),
    rescale: bool = True,
    save_figure: str | os.PathLike[str] | None = None,
    close_figure: bool = False,
) -> Figure:
    """Summary of the 95% (and 68%) intervals of all coefficients (paper Fig. 5 style).

    One row per coefficient, horizontal bars: profiled (orange) above, marginalised (blue)
    below; 95% as thin bars, 68% as thick ones. With ``compare`` (e.g. the same fit with the
    theory uncertainties halved, ``--scale-theory 0.5``) its 95% intervals are drawn as hatched
    bars under each bar. With ``rescale``, coefficients with much smaller intervals are scaled
    by a power of ten, shown in the label (``ctG x10``).

    Args:
        result: the fit result.
        compare: a second result drawn next to the first.
        labels: legend labels of ``result`` and ``compare``.
        methods: profiled and/or marginalised.
        levels: which interval levels to draw.
        rescale: allow per-coefficient powers of ten.
        save_figure: save to this path.
        close_figure: close the figure after saving.
    """
    names = list(result.names)
    results = [result] + ([compare] if compare is not None else [])
    factors = _scale_factors(results, names) if rescale else dict.fromkeys(names, 1.0)
    n = len(names)
    fig, ax = plt.subplots(figsize=(7.0, (0.45 if compare is None else 0.6) * n + 2.0))
    n_rows = len(methods) * len(results)
    spacing = 0.8 / max(n_rows, 1)
    widths = {"95": 4.0, "68": 9.0}
    for row, name in enumerate(names):
        y0 = n - 1 - row
        k = 0
        for method in methods:
            for r_index, res in enumerate(results):
                y = y0 + 0.4 - spacing * (k + 0.5)
                k += 1
                entry = res.intervals.get(name, {}).get(method)
                if entry is None:
                    continue
                for level in levels:
                    iv = entry.get(level)
                    if iv is None:
                        continue
                    for a, b in iv.segments:
                        ax.plot(
                            [a * factors[name], b * factors[name]],
                            [y, y],
                            color=(_COMPARE_COLOURS if r_index else _COLOURS)[method],
                            lw=widths[level] * (0.7 if r_index else 1.0),
                            alpha=0.45 if level == "95" else 0.9,
                            solid_capstyle="butt",
                        )
        if name in result.best_fit:
            ax.plot(result.best_fit[name] * factors[name], y0, "k|", ms=10)
    ax.axvline(0.0, color="0.5", lw=0.8, ls="--")
    marks, banner = _flags(result)
    ax.set_yticks(range(n))
    ax.set_yticklabels(
        [
            ("! " if nm in marks else "")
            + _label(nm) + (f" $\\times${factors[nm]:g}" if factors[nm] != 1 else "")
            for nm in reversed(names)
        ]
    )
    for tick, nm in zip(ax.get_yticklabels(), reversed(names), strict=True):
        if nm in marks:
            tick.set_color(_WARNING_COLOUR)
    ax.set_ylim(-0.6, n - 0.4)
    ax.set_xlabel(r"Wilson coefficient $c_i / \Lambda^2$ [TeV$^{-2}$]")
    handles = []
    for method in methods:
        for r_index, lab in enumerate(labels[: len(results)]):
            text = f"{method} {lab}".strip()
            handles.append(
                plt.Line2D(
                    [], [], color=(_COMPARE_COLOURS if r_index else _COLOURS)[method],
                    lw=5 if r_index == 0 else 3.5, label=text
                )
            )
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.13),
              ncol=len(methods), fontsize=8, frameon=False)
    title = "95% (light) and 68% (dark) intervals" if "68" in levels else "95% intervals"
    if marks:
        title += "; ! = " + ", ".join(sorted({m for v in marks.values() for m in v}))
    ax.set_title(title, fontsize=10)
    _banner(fig, banner)
    fig.tight_layout()
    return _finish(fig, save_figure, close_figure)


def weight_plot(
    result: FitResult,
    *,
    save_figure: str | os.PathLike[str] | None = None,
    close_figure: bool = False,
) -> Figure:
    """Distribution of ``log10`` of the importance weights (normalised to mean 1), with the ESS."""
    fig, ax = plt.subplots(figsize=(5.0, 3.6))
    if result.weights is not None and np.sum(result.weights.counts) > 0:
        w = result.weights
        ax.stairs(w.counts, w.log10_edges, color="0.2", fill=True, alpha=0.35)
        ax.stairs(w.counts, w.log10_edges, color="0.1")
        ax.set_yscale("log")
    else:
        ax.text(0.5, 0.5, "no weight histogram", transform=ax.transAxes, ha="center")
    ax.set_xlabel(r"$\log_{10} w$")
    ax.set_ylabel("samples")
    parts = []
    if result.n_samples:
        parts.append(f"N = {result.n_samples:.3g}")
    if result.ess is not None:
        parts.append(f"ESS = {result.ess:.3g}")
        if result.n_samples:
            parts.append(f"({100 * result.ess / result.n_samples:.1f}%)")
    _, banner = _flags(result)
    ax.set_title(" ".join(parts), fontsize=10, color=_WARNING_COLOUR if banner else "black")
    _banner(fig, banner, width=55)
    fig.tight_layout()
    return _finish(fig, save_figure, close_figure)


def draw_all(
    result: FitResult,
    folder: str | os.PathLike[str],
    *,
    file_format: Literal["pdf", "png"] = "pdf",
    compare: FitResult | None = None,
    labels: tuple[str, str] = ("", "compared"),
) -> list[Path]:
    """Draw the triangle, summary and weight plots into ``folder``; returns the paths."""
    folder = Path(folder)
    paths = [
        folder / f"triangle.{file_format}",
        folder / f"summary.{file_format}",
        folder / f"weights.{file_format}",
    ]
    triangle_plot(result, save_figure=paths[0], close_figure=True)
    summary_plot(result, compare=compare, labels=labels, save_figure=paths[1], close_figure=True)
    weight_plot(result, save_figure=paths[2], close_figure=True)
    return paths

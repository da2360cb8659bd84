"""Plots: they draw, return Figures, save files, and use the paper's colours."""

from __future__ import annotations

import numpy as np
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure

from smeft_pyhf.results import plots
from smeft_pyhf.results.results_file import WeightHistogram, gaussian_histograms, make_fit_result

NAMES = ("ctG", "ctZ", "ctW")
MEAN = {"ctG": 0.1, "ctZ": -1.0, "ctW": 0.3}
COV = np.array([[0.04, 0.01, 0.0], [0.01, 1.0, -0.1], [0.0, -0.1, 0.09]])
RANGES = {"ctG": (-1.0, 1.0), "ctZ": (-6.0, 4.0), "ctW": (-1.5, 1.5)}


def result(scale=1.0):
    hists = gaussian_histograms(MEAN, COV * scale, RANGES)
    return make_fit_result(
        names=NAMES, ranges=RANGES, best_fit=MEAN, ess=1e4, n_samples=2e4,
        weights=WeightHistogram(np.linspace(-3, 1, 41), np.arange(40) + 1), **hists,
    )


def test_triangle_plot(tmp_path):
    fig = plots.triangle_plot(result(), save_figure=tmp_path / "t.png")
    assert isinstance(fig, Figure)
    assert (tmp_path / "t.png").stat().st_size > 10_000
    axes = np.array(fig.axes[: 9]).reshape(3, 3)
    diag_colours = {to_rgba(line.get_color()) for line in axes[0, 0].get_lines()}
    assert to_rgba(plots.PROFILED_COLOUR) in diag_colours
    assert len(axes[1, 0].collections) >= 2  # profiled and marginalised regions
    assert not axes[0, 1].axison
    plots.plt.close(fig)


def test_summary_plot_with_compare(tmp_path):
    fig = plots.summary_plot(result(), compare=result(0.25), labels=("nominal", "theory/2"),
                             save_figure=tmp_path / "s.pdf", close_figure=True)
    assert (tmp_path / "s.pdf").is_file()
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert len(labels) == 3
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "profiled theory/2" in legend


def test_weight_plot_and_draw_all(tmp_path):
    fig = plots.weight_plot(result(), close_figure=True)
    assert "ESS" in fig.axes[0].get_title()
    paths = plots.draw_all(result(), tmp_path, file_format="png")
    assert [p.name for p in paths] == ["triangle.png", "summary.png", "weights.png"]
    assert all(p.is_file() for p in paths)

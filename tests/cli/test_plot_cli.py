"""`smeft-pyhf plot`: redraw plots from a results folder or file, overlay a comparison."""

from __future__ import annotations

import numpy as np
from click.testing import CliRunner

from smeft_pyhf.cli import cli
from smeft_pyhf.results.results_file import gaussian_histograms, make_fit_result, write_results

RANGES = {"ctG": (-1.0, 1.0), "ctW": (-2.0, 2.0)}


def results_dir(tmp_path, name, scale):
    folder = tmp_path / name
    folder.mkdir()
    hists = gaussian_histograms({"ctG": 0.0, "ctW": 0.2}, np.diag([0.04, 0.2]) * scale, RANGES)
    res = make_fit_result(names=("ctG", "ctW"), ranges=RANGES, best_fit={"ctG": 0, "ctW": 0.2},
                          **hists)
    write_results(res, folder)
    return folder


def test_plot_folder_and_compare(tmp_path):
    a = results_dir(tmp_path, "a", 1.0)
    b = results_dir(tmp_path, "b", 0.25)
    runner = CliRunner()
    result = runner.invoke(cli, ["plot", str(a), "--format", "png"])
    assert result.exit_code == 0, result.output
    assert {p.name for p in a.glob("*.png")} == {"triangle.png", "summary.png", "weights.png"}
    out = tmp_path / "plots"
    result = runner.invoke(cli, ["plot", str(a / "results.json"), "--compare", str(b),
                                 "--labels", "nominal,theory/2", "--output", str(out),
                                 "--only", "summary"])
    assert result.exit_code == 0, result.output
    assert (out / "summary_compare.pdf").stat().st_size > 1000


def test_plot_bad_input_exit_2(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text('{"format": "something else"}')
    result = CliRunner().invoke(cli, ["plot", str(bad)])
    assert result.exit_code == 2
    assert "pyhf results file (missing" in " ".join(result.output.split())


def test_plot_replaces_planted_symlinks_and_keeps_the_folder_replaceable(tmp_path):
    from smeft_pyhf._io import atomic_directory, check_replaceable_folder

    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    folder = tmp_path / "res"
    with atomic_directory(folder) as tmp:  # a results folder as `smeft-pyhf fit` writes it
        write_results(make_fit_result(names=("ctG",), ranges={"ctG": (-1.0, 1.0)},
                                      best_fit={"ctG": 0.0},
                                      **gaussian_histograms({"ctG": 0.0}, np.eye(1) * 0.04,
                                                            {"ctG": (-1.0, 1.0)})), tmp)
    (folder / "triangle.png").symlink_to(victim)
    result = CliRunner().invoke(cli, ["plot", str(folder), "--format", "png"])
    assert result.exit_code == 0, result.output
    assert victim.read_text() == "precious"
    assert not (folder / "triangle.png").is_symlink()
    assert (folder / "triangle.png").read_bytes()[:4] == b"\x89PNG"
    check_replaceable_folder(folder)  # the new plots are in the folder's manifest

"""results.json: round trip, rounding, errors, intervals of an exact Gaussian."""

from __future__ import annotations

import json

import numpy as np
import pytest

from smeft_pyhf.exceptions import InputError
from smeft_pyhf.formats.intervals import Interval
from smeft_pyhf.results.results_file import (
    AnalyticSolution,
    WeightHistogram,
    gaussian_histograms,
    make_fit_result,
    read_results,
    write_results,
)

NAMES = ("ctG", "ctZ", "ctW")
MEAN = {"ctG": 0.1, "ctZ": -1.0, "ctW": 0.3}
COV = np.array([[0.04, 0.01, 0.0], [0.01, 1.0, -0.1], [0.0, -0.1, 0.09]])
RANGES = {"ctG": (-1.0, 1.0), "ctZ": (-6.0, 4.0), "ctW": (-1.5, 1.5)}


def gaussian_result(**extra):
    hists = gaussian_histograms(MEAN, COV, RANGES)
    return make_fit_result(
        names=NAMES,
        ranges=RANGES,
        best_fit=MEAN,
        best_log_likelihood=-1.234,
        weights=WeightHistogram(np.linspace(-3, 1, 41), np.arange(40)),
        ess=12345.6,
        n_samples=20000,
        log_evidence=-3.5,
        timings={"prescale": 1.0, "train": 2.5},
        config={"name": "gauss"},
        **hists,
        **extra,
    )


def test_gaussian_intervals_are_exact():
    res = gaussian_result()
    for i, name in enumerate(NAMES):
        sigma = np.sqrt(COV[i, i])
        width = (RANGES[name][1] - RANGES[name][0]) / 40
        for method in ("profiled", "marginalised"):
            for level, z in (("68", 1.0), ("95", 1.959963984540054)):
                iv = res.interval(name, method=method, level=level)
                assert iv.low == pytest.approx(MEAN[name] - z * sigma, abs=0.05 * width + 0.01 * sigma)
                assert iv.high == pytest.approx(MEAN[name] + z * sigma, abs=0.05 * width + 0.01 * sigma)
        prof = res.interval(name, method="profiled")
        marg = res.interval(name, method="marginalised")
        assert prof.low == pytest.approx(marg.low, abs=0.02 * sigma)
        assert prof.high == pytest.approx(marg.high, abs=0.02 * sigma)


def test_round_trip(tmp_path):
    analytic = AnalyticSolution(
        dict(MEAN), COV, {n: {"95": Interval("95", ((-1.0, 1.0),))} for n in NAMES}
    )
    res = gaussian_result(analytic=analytic, fixed={"cQt8": 0.0})
    write_results(res, tmp_path)
    back = read_results(tmp_path)
    assert back.names == res.names
    assert back.ranges == res.ranges
    assert back.best_fit == pytest.approx(res.best_fit)
    assert back.fixed == {"cQt8": 0.0}
    assert back.ess == pytest.approx(12345.6)
    assert back.n_samples == 20000
    assert back.timings == {"prescale": 1.0, "train": 2.5}
    assert set(back.profile2d) == {("ctG", "ctZ"), ("ctG", "ctW"), ("ctZ", "ctW")}
    for key, h in res.marginal2d.items():
        np.testing.assert_allclose(back.marginal2d[key].delta_chi2, h.delta_chi2, rtol=1e-4, atol=1e-8)
        np.testing.assert_allclose(back.marginal2d[key].x_edges, h.x_edges)
    for name in NAMES:
        np.testing.assert_allclose(back.profile1d[name].delta_chi2, res.profile1d[name].delta_chi2, rtol=1e-4)
        assert back.intervals[name]["profiled"]["95"].low == pytest.approx(
            res.intervals[name]["profiled"]["95"].low
        )
    np.testing.assert_array_equal(back.weights.counts, np.arange(40))
    assert back.analytic.best_fit == pytest.approx(MEAN)
    np.testing.assert_allclose(back.analytic.covariance, COV)
    assert back.analytic.intervals["ctG"]["95"].segments == ((-1.0, 1.0),)
    assert "versions" in back.provenance and "created" in back.provenance


def test_file_is_compact_and_strict_json(tmp_path):
    res = gaussian_result()
    # an empty bin becomes "Infinity", values have at most 5 significant digits
    res.marginal1d["ctG"].delta_chi2[0] = np.inf
    write_results(res, tmp_path / "r.json")
    text = (tmp_path / "r.json").read_text()

    def refuse(token):
        raise AssertionError(f"non-standard JSON token {token}")

    data = json.loads(text, parse_constant=refuse)  # strict JSON: no NaN/Infinity tokens
    assert data["marginal1d"]["ctG"]["delta_chi2"][0] == "Infinity"
    values = data["profile2d"]["ctG|ctZ"]["delta_chi2"][3]
    assert all(len(f"{v:.10g}".replace("-", "").replace(".", "").lstrip("0")) <= 5 for v in values)
    assert len(text) < 200_000
    back = read_results(tmp_path / "r.json")
    assert np.isinf(back.marginal1d["ctG"].delta_chi2[0])


def test_read_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_results(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="line 1"):
        read_results(bad)
    other = tmp_path / "other.json"
    other.write_text('{"a": 1}')
    with pytest.raises(InputError, match="not a smeft-pyhf results file"):
        read_results(other)

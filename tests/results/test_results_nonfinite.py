"""results.json keeps NaN, +inf and -inf: strict JSON with "NaN"/"Infinity"/"-Infinity"
strings, read back exactly; files that wrote null for them are still read."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from smeft_pyhf.exceptions import InputError
from smeft_pyhf.formats.intervals import Interval
from smeft_pyhf.results.results_file import (
    AnalyticSolution,
    Histogram1D,
    Histogram2D,
    WeightHistogram,
    make_fit_result,
    read_results,
    results_to_dict,
    write_results,
)

NAN, INF = math.nan, math.inf
NAMES = ("cA", "cB")


def _strict(text: str) -> dict:
    """json.loads that refuses the non-standard NaN/Infinity tokens."""

    def refuse(token: str) -> None:
        raise AssertionError(f"non-standard JSON token {token}")

    return json.loads(text, parse_constant=refuse)


def nonfinite_result():
    """A FitResult with NaN, +inf and -inf in histograms, scalars and nested fields.

    Values have at most 5 significant digits, so the file's rounding keeps them exact.
    """
    edges = np.array([-2.0, -1.0, 0.0, 1.0, 2.0])
    h1 = Histogram1D(edges, np.array([0.0, 1.5, 4.0, 9.0]))
    res = make_fit_result(
        names=NAMES,
        ranges={"cA": (-2.0, 2.0), "cB": (-INF, INF)},
        best_fit={"cA": 0.25, "cB": NAN},
        best_log_likelihood=INF,
        profile1d={"cA": h1, "cB": h1},
        marginal1d={"cA": h1, "cB": h1},
        weights=WeightHistogram(np.array([-INF, -1.0, 0.0, 1.0, INF]), np.array([1, 2, 3, 4])),
        ess=NAN,
        n_samples=1000,
        log_evidence=-INF,
        timings={"prescale": 1.5, "sample": NAN},
        analytic=AnalyticSolution(
            {"cA": 0.5, "cB": -INF},
            np.array([[1.0, NAN], [NAN, INF]]),
            {"cA": {"95": Interval("95", ((-INF, 1.5), (2.0, INF)), True, True)},
             "cB": {"95": Interval("95", ((NAN, NAN),))}},
        ),
        fixed={"cC": 0.0, "cD": -INF},
        config={"prior": {"cB": [-INF, INF]}, "scale": NAN, "label": "run 1"},
        provenance={"device": "cpu", "seconds": INF},
    )
    # make_fit_result turns every non-finite -2 Delta log L into +inf (an empty bin); the file
    # must keep whatever the result holds, so put all three in.
    odd1 = Histogram1D(np.array([-INF, -1.0, 0.0, 1.0, INF]), np.array([NAN, INF, -INF, 0.0]))
    odd2 = Histogram2D(np.array([-1.0, 0.0, INF]), np.array([NAN, 0.0, 1.0]),
                       np.array([[0.0, NAN], [INF, -INF]]))
    intervals = dict(res.intervals)
    intervals["cB"] = {"profiled": {"68": Interval("68", ((-INF, NAN),), True, False)}}
    return res._replace(
        profile1d={"cA": odd1, "cB": h1},
        marginal1d={"cA": h1, "cB": odd1},
        profile2d={("cA", "cB"): odd2},
        marginal2d={("cA", "cB"): odd2},
        intervals=intervals,
    )


def _equal(a, b) -> bool:
    return np.array_equal(np.asarray(a, dtype=float), np.asarray(b, dtype=float), equal_nan=True)


def _same_interval(a: Interval, b: Interval) -> bool:
    return (a.level, a.open_low, a.open_high) == (b.level, b.open_low, b.open_high) and _equal(
        np.array(a.segments, dtype=float).reshape(-1, 2),
        np.array(b.segments, dtype=float).reshape(-1, 2))


def test_nonfinite_values_round_trip_exactly(tmp_path):
    res = nonfinite_result()
    write_results(res, tmp_path)
    text = (tmp_path / "results.json").read_text()
    data = _strict(text)
    assert data["profile1d"]["cA"]["delta_chi2"] == ["NaN", "Infinity", "-Infinity", 0.0]
    assert data["sampling"]["ess"] == "NaN" and data["sampling"]["log_evidence"] == "-Infinity"

    back = read_results(tmp_path)
    for field in ("profile1d", "marginal1d", "profile2d", "marginal2d"):
        ours, theirs = getattr(res, field), getattr(back, field)
        assert set(ours) == set(theirs), field
        for key, h in ours.items():
            for a, b in zip(h, theirs[key], strict=True):
                assert _equal(a, b), (field, key, a, b)
    assert _equal(back.weights.log10_edges, res.weights.log10_edges)
    assert np.array_equal(back.weights.counts, res.weights.counts)
    # scalars
    assert back.best_log_likelihood == INF
    assert math.isnan(back.ess) and back.log_evidence == -INF
    assert back.n_samples == 1000
    assert _equal(list(back.best_fit.values()), [0.25, NAN])
    assert back.ranges["cB"] == (-INF, INF)
    assert back.fixed == {"cC": 0.0, "cD": -INF}
    assert back.timings["prescale"] == 1.5 and math.isnan(back.timings["sample"])
    # intervals and the analytic solution
    for name in NAMES:
        for method, levels in res.intervals[name].items():
            for level, iv in levels.items():
                assert _same_interval(back.intervals[name][method][level], iv)
    assert back.analytic.best_fit == {"cA": 0.5, "cB": -INF}
    assert _equal(back.analytic.covariance, res.analytic.covariance)
    for name in NAMES:
        assert _same_interval(back.analytic.intervals[name]["95"], res.analytic.intervals[name]["95"])
    # free-form config and provenance
    assert back.config["prior"] == {"cB": [-INF, INF]} and math.isnan(back.config["scale"])
    assert back.config["label"] == "run 1"
    assert back.provenance["seconds"] == INF

    # writing what was read gives the same file
    write_results(back, tmp_path / "again.json")
    assert _strict((tmp_path / "again.json").read_text()) == data


def test_finite_results_are_written_as_before(tmp_path):
    # Finite values stay plain JSON numbers, rounded as before.
    edges = np.linspace(-1.0, 1.0, 5)
    h = Histogram1D(edges, np.array([1.234567, 0.0, 2.0, 3.0]))
    res = make_fit_result(names=("cA",), ranges={"cA": (-1.0, 1.0)}, best_fit={"cA": 0.123456789},
                          profile1d={"cA": h}, marginal1d={"cA": h}, ess=10.5, log_evidence=-3.25)
    data = results_to_dict(res)
    assert data["profile1d"]["cA"]["delta_chi2"] == [1.2346, 0.0, 2.0, 3.0]
    assert data["best_fit"]["coefficients"] == {"cA": 0.12345679}
    assert data["sampling"] == {"ess": 10.5, "n_samples": None, "log_evidence": -3.25}


def test_old_null_files_are_read(tmp_path):
    # A file from the writer that put null for every non-finite number.
    res = nonfinite_result()
    write_results(res, tmp_path)
    data = _strict((tmp_path / "results.json").read_text())

    def nullify(value):
        if isinstance(value, dict):
            return {k: nullify(v) for k, v in value.items()}
        if isinstance(value, list):
            return [nullify(v) for v in value]
        return None if value in ("NaN", "Infinity", "-Infinity") else value

    old = tmp_path / "old.json"
    old.write_text(json.dumps(nullify(data)))
    back = read_results(old)
    # delta_chi2: null was an empty bin, +inf
    assert _equal(back.profile1d["cA"].delta_chi2, [INF, INF, INF, 0.0])
    assert _equal(back.profile2d[("cA", "cB")].delta_chi2, [[0.0, INF], [INF, INF]])
    # optional scalars: not available
    assert back.best_log_likelihood is None and back.ess is None and back.log_evidence is None
    # anything else: unknown, NaN
    assert _equal(back.profile1d["cA"].edges, [NAN, -1.0, 0.0, 1.0, NAN])
    assert _equal(list(back.best_fit.values()), [0.25, NAN])
    assert _equal(back.ranges["cB"], [NAN, NAN])
    assert _equal(back.analytic.covariance, [[1.0, NAN], [NAN, NAN]])
    assert _equal(back.analytic.intervals["cA"]["95"].segments, [[NAN, 1.5], [2.0, NAN]])
    assert back.config["scale"] is None  # free-form fields keep their null


def test_a_malformed_number_is_an_input_error(tmp_path):
    write_results(nonfinite_result(), tmp_path)
    path = tmp_path / "results.json"
    data = _strict(path.read_text())
    data["profile1d"]["cA"]["delta_chi2"][3] = "lots"
    path.write_text(json.dumps(data))
    with pytest.raises(InputError, match="malformed results file") as info:
        read_results(path)
    assert info.value.where == str(path)

"""The real five-step sampler end to end (slow): a linear-Gaussian fit of the example inputs
reproduces the analytic intervals, with profiled and marginalised agreeing."""

from __future__ import annotations

import pytest

from smeft_pyhf._resources import examples_dir
from smeft_pyhf.fit.run import run_fit, work_dir
from smeft_pyhf.fit.runcard import load_runcard
from smeft_pyhf.results.results_file import read_results


@pytest.mark.slow
def test_linear_gaussian_fit_with_real_sampler(tmp_path):
    from smeft_pyhf.sampler.pipeline import SamplerConfig

    rc = load_runcard(examples_dir() / "default_runcard.yaml")
    # ctW, ctG and c8qt are well inside their ranges in the linear fit
    rc = rc.replace(linear_only=True, theory="gaussian", analytic="always")
    out = tmp_path / "res"
    result = run_fit(rc, output=out, progress=False, plots=False,
                     sampler_config=SamplerConfig.reduced())
    assert (out / "results.json").is_file() and not work_dir(out).exists()
    back = read_results(out)
    assert back.analytic is not None and back.ess > 0
    # Bounds from the spread over seeds 0-7 of the runcard under each of
    # ATEN_CPU_CAPABILITY=default, =avx2 and the native avx512 (24 runs, 1 CPU thread): the
    # largest deviation of the six ends, in sigma, is 0.0023 +- 0.0004 (sd) profiled (at most
    # 0.0028) and 0.035 +- 0.037 marginalised (at most 0.19: default seed 3, where one heavy
    # sample, flagged by the fit as "not converged: max_weight_share", adds an island to ctG's
    # HDI; the other 23 runs are at most 0.07). Bounds: mean + 5 sd, rounded up.
    tolerance = {"profiled": 0.005, "marginalised": 0.25}
    for name in ("ctG", "ctW", "c8qt"):
        sigma = result.analytic.std[name]
        exact = result.analytic.intervals[name]["95"]
        for method in ("profiled", "marginalised"):
            iv = result.interval(name, method=method, level="95")
            tol = tolerance[method] * sigma
            assert iv.low == pytest.approx(exact.low, abs=tol), (name, method)
            assert iv.high == pytest.approx(exact.high, abs=tol), (name, method)

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
    for name in ("ctG", "ctW", "c8qt"):
        sigma = result.analytic.std[name]
        exact = result.analytic.intervals[name]["95"]
        for method in ("profiled", "marginalised"):
            iv = result.interval(name, method=method, level="95")
            assert iv.low == pytest.approx(exact.low, abs=0.15 * sigma), (name, method)
            assert iv.high == pytest.approx(exact.high, abs=0.15 * sigma), (name, method)

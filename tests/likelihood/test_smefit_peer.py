"""Our linear analytic fit equals SMEFiT's own (`smefit A`, smefit 4.0.0) on the same inputs.

Reference: `smefit A` run on the 63 top-quark datasets of configs/top_quark_fit.yaml (NLO_QCD,
t0, theory covariance, linear) with the six coefficients OpQM, O3pQ3, Opt, OtW, OtG, OtZ (the
25 top coefficients together have flat directions at linear order, which smefit rejects too).
Its fit_results.json gave the best fit below and max log-likelihood -106.11651329254524; the
1-sigma errors are its printed table (3 decimals).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

SMEFIT_BEST = {
    "c3pQ3": -0.09757510639807952,
    "cpQM": 2.8293159683642055,
    "cpt": 3.0436379102620656,
    "ctG": 0.11486494026604492,
    "ctW": -0.021084440122679113,
    "ctZ": 2.2939981972167782,
}
SMEFIT_ERRORS = {"c3pQ3": 0.210, "cpQM": 2.653, "cpt": 4.089, "ctG": 0.042, "ctW": 0.082, "ctZ": 2.177}
SMEFIT_MAX_LOGL = -106.11651329254524


def test_linear_solution_equals_smefit_analytic(shared_data):
    from smeft_pyhf.likelihood.combined import build_likelihood, linear_gaussian_solution

    runcard = yaml.safe_load((Path(__file__).parents[2] / "configs" / "top_quark_fit.yaml").read_text())
    datasets = [d for d in runcard["datasets"] if isinstance(d, str)]
    assert len(datasets) == 63
    lik = build_likelihood(database=shared_data / "smefit_database", datasets=datasets,
                           coefficients=list(SMEFIT_BEST), linear_only=True, order="NLO_QCD")
    sol = linear_gaussian_solution(lik)
    for name, best, err in zip(sol.names, sol.best_fit, sol.errors, strict=True):
        assert float(best) == pytest.approx(SMEFIT_BEST[name], rel=1e-6, abs=1e-9)
        assert float(err) == pytest.approx(SMEFIT_ERRORS[name], abs=6e-4)
    assert -0.5 * float(sol.chi2_min) == pytest.approx(SMEFIT_MAX_LOGL, rel=1e-8)

"""PyhfCompatibleModel: pyhf.infer.mle.fit (scipy, minuit) and iminuit agree with the analytic fit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyhf
import pytest
import torch

from smeft_pyhf.likelihood import (
    PyhfCompatibleModel,
    build_likelihood,
    linear_gaussian_solution,
    top_quark_datasets,
)

COEFS = ["ctG", "ctW", "ctZ", "cpQM", "c3pQ3", "c13qq"]


@pytest.fixture(scope="module")
def linear_likelihood(shared_data: Path):
    database = shared_data / "smefit_database"
    return build_likelihood(database=database, datasets=top_quark_datasets(database),
                            coefficients=COEFS, linear_only=True)


@pytest.fixture(autouse=True)
def _numpy_backend():
    pyhf.set_backend("numpy", "scipy")
    yield
    pyhf.set_backend("numpy", "scipy")


@pytest.mark.shared_data
def test_interface(linear_likelihood):
    model = PyhfCompatibleModel(linear_likelihood)
    cfg = model.config
    assert cfg.par_names == COEFS and cfg.npars == 6 and cfg.poi_index == 0
    assert cfg.poi_name == "ctG" and cfg.par_slice("ctW") == slice(1, 2)
    assert cfg.suggested_init() == [0.0] * 6 and cfg.suggested_fixed() == [False] * 6
    assert cfg.suggested_bounds() == [(-100.0, 100.0)] * 6
    names = cfg.par_names
    names[0] = None  # the optimizer edits it in place; the model must not change
    assert cfg.par_names[0] == "ctG"
    lp = model.logpdf(np.zeros(6), model.data)
    assert lp.shape == (1,)
    x0 = torch.zeros(1, 6, dtype=torch.float64)
    assert lp[0] == pytest.approx(linear_likelihood.log_prob(x0).item())
    assert model.expected_data(np.zeros(6)).shape == (204,)
    # data enters through the argument (toys)
    toy = model.expected_data(np.full(6, 0.1))
    assert model.logpdf(np.full(6, 0.1), toy)[0] == pytest.approx(0.0, abs=1e-12)
    value, grad = model.nll_and_grad(np.zeros(6))
    assert value == pytest.approx(-2 * lp[0]) and grad.shape == (6,)


@pytest.mark.shared_data
@pytest.mark.parametrize("optimizer", ["scipy", "minuit"])
def test_pyhf_fit_matches_analytic(linear_likelihood, optimizer):
    sol = linear_gaussian_solution(linear_likelihood)
    model = PyhfCompatibleModel(linear_likelihood)
    if optimizer == "minuit":
        pyhf.set_backend("numpy", pyhf.optimize.minuit_optimizer(tolerance=1e-6, strategy=2))
        best, unc = pyhf.infer.mle.fit(model.data, model, return_uncertainties=True).T
        np.testing.assert_allclose(unc, sol.errors, rtol=1e-3)
    else:
        pyhf.set_backend("numpy", pyhf.optimize.scipy_optimizer(tolerance=1e-12))
        best = pyhf.infer.mle.fit(model.data, model)
    np.testing.assert_allclose(best, sol.best_fit, atol=2e-3 * sol.errors.min())
    twice_nll = pyhf.infer.mle.twice_nll(best, model.data, model)
    assert twice_nll[0] == pytest.approx(sol.chi2_min, abs=1e-5)
    # a fixed-POI fit runs too, and costs chi2 = ((ctG - ctG_hat) / sigma_ctG)^2 in a Gaussian
    pars, value = pyhf.infer.mle.fixed_poi_fit(sol.best_fit[0] + sol.errors[0], model.data,
                                               model, return_fitted_val=True)
    assert pars[0] == pytest.approx(sol.best_fit[0] + sol.errors[0])
    assert value - sol.chi2_min == pytest.approx(1.0, abs=1e-3)


@pytest.mark.shared_data
def test_direct_iminuit_matches_analytic(linear_likelihood):
    iminuit = pytest.importorskip("iminuit")
    sol = linear_gaussian_solution(linear_likelihood)
    model = PyhfCompatibleModel(linear_likelihood)
    data = model.data

    def nll(pars):
        return float(-2.0 * model.logpdf(np.asarray(pars), data)[0])

    m = iminuit.Minuit(nll, np.zeros(6), name=COEFS)
    m.errordef = iminuit.Minuit.LEAST_SQUARES
    m.strategy = 2
    m.tol = 1e-8
    m.migrad()
    m.hesse()
    assert m.valid
    np.testing.assert_allclose(np.array(m.values), sol.best_fit, atol=1e-4 * sol.errors.min())
    np.testing.assert_allclose(np.array(m.errors), sol.errors, rtol=1e-4)
    np.testing.assert_allclose(np.array(m.covariance), sol.covariance, rtol=1e-3,
                               atol=1e-6 * sol.errors.max() ** 2)

"""Fits: minuit vs scipy vs pyhf's own fit, refits against direct iminuit fits, real numbers."""

from __future__ import annotations

from pathlib import Path

import iminuit
import numpy as np
import pyhf
import pytest

from smeft_pyhf._resources import shipped_dir
from smeft_pyhf.ingest.fitting import Objective, fit, numpy_backend, refit
from smeft_pyhf.ingest.workspace import load_workspace

EXAMPLE = shipped_dir("workspaces") / "example_ttZ_like.json"


@pytest.fixture(scope="module")
def example():
    loaded = load_workspace(EXAMPLE)
    return loaded, fit(loaded.model, loaded.data)


def _direct_minuit(model, data, fixed: dict[int, float]) -> iminuit.Minuit:
    """An independent fit: iminuit on pyhf's logpdf, strategy 1, tight tolerance."""
    init = np.array(model.config.suggested_init(), dtype=float)
    for i, v in fixed.items():
        init[i] = v
    m = iminuit.Minuit(lambda x: -2 * model.logpdf(x, np.asarray(data))[0], init)
    m.errordef = 1
    m.strategy = 1
    m.tol = 0.01
    m.limits = model.config.suggested_bounds()
    for i, f in enumerate(model.config.suggested_fixed()):
        m.fixed[i] = f
    for i in fixed:
        m.fixed[i] = True
    m.migrad()
    m.hesse()
    return m


def test_fit_matches_pyhf_and_scipy(example) -> None:
    loaded, best = example
    model, poi = loaded.model, loaded.model.config.poi_index
    assert best.valid and best.hesse_valid and best.minimizer == "minuit"
    reference, twice_nll = pyhf.infer.mle.fit(loaded.data, model, return_fitted_val=True)
    assert best.bestfit[poi] == pytest.approx(reference[poi], abs=2e-3)
    assert best.twice_nll == pytest.approx(float(twice_nll), abs=2e-3)
    other = fit(model, loaded.data, minimizer="scipy")
    assert other.minimizer == "scipy"
    assert other.bestfit[poi] == pytest.approx(best.bestfit[poi], abs=2e-3)
    assert other.uncertainty[poi] == pytest.approx(best.uncertainty[poi], rel=0.02)
    direct = _direct_minuit(model, loaded.data, {})
    assert best.uncertainty[poi] == pytest.approx(direct.errors[poi], rel=0.01)
    assert best.covariance is not None and best.hessian is not None
    assert best.labels == tuple(model.config.par_names)


def test_refit_matches_direct_constrained_fit(example) -> None:
    loaded, best = example
    model, poi = loaded.model, loaded.model.config.poi_index
    objective = Objective(model, loaded.data)
    shower = model.config.par_names.index("ttZ_Shower")
    value = best.bestfit[shower] + best.uncertainty[shower]
    mine = refit(objective, best, {shower: value})
    direct = _direct_minuit(model, loaded.data, {shower: value})
    assert mine.converged
    assert mine.twice_nll == pytest.approx(direct.fval, abs=2e-3)
    assert mine.values[poi] == pytest.approx(direct.values[poi], abs=1e-3)
    target = best.bestfit[poi] + 0.3
    mine = refit(objective, best, {poi: target})
    direct = _direct_minuit(model, loaded.data, {poi: target})
    assert mine.twice_nll == pytest.approx(direct.fval, abs=2e-3)


def test_backend_is_left_alone() -> None:
    before = pyhf.get_backend()
    with numpy_backend():
        assert pyhf.tensorlib.name == "numpy"
    after = pyhf.get_backend()
    assert before[0] is after[0] and before[1] is after[1]


@pytest.mark.shared_data
@pytest.mark.slow
def test_schannel_reference_numbers(shared_data: Path) -> None:
    """PROVENANCE section 1: mu_hat = 0.793, 2NLL = 390.780 (pyhf, scipy)."""
    loaded = load_workspace(shared_data / "atlas_top_schannel_13TeV" / "workspace.json")
    best = fit(loaded.model, loaded.data)
    poi = loaded.model.config.poi_index
    assert best.valid
    assert best.bestfit[poi] == pytest.approx(0.793, abs=0.005)
    assert best.twice_nll == pytest.approx(390.780, abs=0.02)
    assert 0.1 < best.uncertainty[poi] < 0.6

"""Fits: minuit vs scipy vs pyhf's own fit, refits against direct iminuit fits, real numbers."""

from __future__ import annotations

import json
from pathlib import Path

import iminuit
import numpy as np
import pyhf
import pytest

from smeft_pyhf._resources import shipped_dir
from smeft_pyhf.ingest.fitting import Objective, fit, numpy_backend, random_starts, refit
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


# ------------------------------------------------------------------ several starts, local minima
COUPLED = "pyhf_validation/validation/multichan_coupledhistosys_histfactory/config/example.xml"


def _pyhf_scan(model, data, values) -> list[float]:
    """pyhf's own profile 2NLL at each fixed POI value (scipy, pyhf's default optimiser)."""
    pyhf.set_backend("numpy", pyhf.optimize.scipy_optimizer())
    return [
        float(pyhf.infer.mle.fixed_poi_fit(mu, data, model, return_fitted_val=True)[1])
        for mu in values
    ]


@pytest.mark.shared_data
def test_coupled_histosys_reaches_the_global_minimum(shared_data: Path) -> None:
    """Two minima: pyhf's own fit from the nominal point stops in the higher one (mu 0.635,
    2NLL 28.03); the random starts find the lower one, which pyhf confirms."""
    loaded = load_workspace(shared_data / COUPLED)
    model, data, poi = loaded.model, loaded.data, loaded.model.config.poi_index
    before = pyhf.get_backend()
    try:
        local, local_nll = pyhf.infer.mle.fit(data, model, return_fitted_val=True)
        grid = np.linspace(0.0, 2.0, 41)
        profile = _pyhf_scan(model, data, grid)
        start = np.array(model.config.suggested_init(), dtype=float)
        start[poi] = float(grid[int(np.argmin(profile))])  # pyhf, started where its scan is lowest
        start[model.config.par_slice("coupled_histosys")] = 0.4
        reference, reference_nll = pyhf.infer.mle.fit(
            data, model, init_pars=start.tolist(), return_fitted_val=True
        )
    finally:
        pyhf.set_backend(*before)
    assert float(local_nll) - float(reference_nll) > 1.0  # the trap is real

    single = fit(model, data)  # the nominal start alone falls into the trap as well
    assert single.bestfit[poi] == pytest.approx(float(local[poi]), abs=3e-3)
    best = fit(model, data, n_random_starts=3, seed=0)
    assert best.valid
    assert best.bestfit[poi] == pytest.approx(float(reference[poi]), abs=2e-3)
    assert best.bestfit[poi] == pytest.approx(0.427, abs=2e-3)
    assert best.twice_nll == pytest.approx(float(reference_nll), abs=1e-4)
    assert best.twice_nll <= min(profile) + 1e-6
    # the card's record: how many starts agree, and the warning about the other minimum
    assert len(best.starts) == 4 and best.starts[0].label != "nominal"
    assert 1 <= best.n_agreeing < 4
    nominal = next(s for s in best.starts if s.label == "nominal")
    assert nominal.twice_nll - best.twice_nll == pytest.approx(
        float(local_nll) - float(reference_nll), abs=2e-3
    )
    assert any("higher minimum" in w for w in best.warnings)


def test_random_starts_are_seeded_and_within_bounds() -> None:
    model = load_workspace(EXAMPLE).model
    first = random_starts(model, 5, seed=3)
    assert np.array_equal(first, random_starts(model, 5, seed=3))
    assert not np.array_equal(first, random_starts(model, 5, seed=4))
    bounds = np.array(model.config.suggested_bounds())
    assert np.all(first >= bounds[:, 0]) and np.all(first <= bounds[:, 1])
    fixed = np.array(model.config.suggested_fixed())
    init = np.array(model.config.suggested_init())
    assert np.array_equal(first[:, fixed], np.broadcast_to(init[fixed], first[:, fixed].shape))


def test_example_starts_agree(example) -> None:
    loaded, best = example
    several = fit(loaded.model, loaded.data, n_random_starts=3)
    assert several.n_agreeing == len(several.starts) == 4
    assert several.twice_nll == pytest.approx(best.twice_nll, abs=2e-3)


def test_non_finite_likelihood_is_never_a_valid_fit() -> None:
    """A negative observed count makes 2NLL NaN everywhere (the loader refuses such files;
    the model here is built with pyhf directly): the fit stays at its start and is invalid."""
    spec = json.loads(EXAMPLE.read_text())
    spec["observations"][0]["data"][0] = -3.0
    workspace = pyhf.Workspace(spec)
    model = workspace.model()
    result = fit(model, workspace.data(model))
    assert not result.valid
    assert any("not finite" in w for w in result.warnings)

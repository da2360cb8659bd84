"""Breakdown, per-NP impacts and scans against independent iminuit / pyhf computations."""

from __future__ import annotations

import math

import iminuit
import numpy as np
import pyhf
import pytest

from smeft_pyhf.ingest.fitting import fit, parameter_indices
from smeft_pyhf.ingest.impacts import (
    constrained_parameters,
    grouped_breakdown,
    parameter_impacts,
    total_uncertainty,
)
from smeft_pyhf.ingest.scans import _measures, scan_parameter


def _fd_hessian(model, data, x0, free, scale) -> np.ndarray:
    """Independent numerics: central finite-difference Hessian of -2 log L over ``free``."""
    data = np.asarray(data)

    def f(x):
        return -2 * float(model.logpdf(x, data)[0])

    h = 3e-3 * scale
    n = len(free)
    hess = np.zeros((n, n))
    f0 = f(x0)
    for a in range(n):
        for b in range(a, n):
            i, j = free[a], free[b]
            if a == b:
                up, down = x0.copy(), x0.copy()
                up[i] += h[i]
                down[i] -= h[i]
                hess[a, a] = (f(up) - 2 * f0 + f(down)) / h[i] ** 2
                continue
            values = []
            for si, sj in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
                x = x0.copy()
                x[i] += si * h[i]
                x[j] += sj * h[j]
                values.append(f(x))
            hess[a, b] = hess[b, a] = (values[0] - values[1] - values[2] + values[3]) / (4 * h[i] * h[j])
    return hess


def _reduced_sigma(model, data, best, fixed_names) -> float:
    """POI uncertainty with ``fixed_names`` fixed at best fit, from an independent FD Hessian."""
    fixed = set(np.flatnonzero(best.fixed))
    for name in fixed_names:
        fixed.update(parameter_indices(model, name))
    free = [i for i in range(len(best.bestfit)) if i not in fixed]
    scale = np.where(best.uncertainty > 0, best.uncertainty, 1.0)
    hess = _fd_hessian(model, data, best.bestfit.copy(), free, scale)
    position = free.index(model.config.poi_index)
    return float(np.sqrt(2 * np.linalg.inv(hess)[position, position]))


def test_total_uncertainty_crossings(example) -> None:
    loaded, best, _, _ = example
    model, poi = loaded.model, loaded.model.config.poi_index
    total = total_uncertainty(model, loaded.data, best)
    assert total.symmetric == pytest.approx(best.uncertainty[poi])
    assert total.up > total.down  # Poisson: longer tail upwards
    # independent: pyhf fixed-POI fits at the crossings give Delta 2NLL = 1
    for mu in (total.best_fit + total.up, total.best_fit - total.down):
        _, value = pyhf.infer.mle.fixed_poi_fit(mu, loaded.data, model, return_fitted_val=True)
        assert float(value) - best.twice_nll == pytest.approx(1.0, abs=0.02)


def test_breakdown_matches_independent_refits(example) -> None:
    loaded, best, categories, _ = example
    model, poi = loaded.model, loaded.model.config.poi_index
    total = best.uncertainty[poi]
    assert total == pytest.approx(_reduced_sigma(model, loaded.data, best, []), rel=2e-3)
    hesse = grouped_breakdown(model, loaded.data, best, categories, method="hesse")
    assert hesse.total == pytest.approx(total)
    stat_direct = _reduced_sigma(model, loaded.data, best, constrained_parameters(model))
    assert hesse.stat.impact == pytest.approx(stat_direct, rel=5e-3)
    for label in ("Background:WZ", "Jets", "bTagging"):
        reduced = _reduced_sigma(model, loaded.data, best, categories[label])
        entry = next(e for e in hesse.groups if e.name == label)
        assert entry.impact == pytest.approx(math.sqrt(total**2 - reduced**2), rel=0.02)
    # quadrature closure on this small workspace (correlations make it approximate)
    closure = math.sqrt(hesse.stat.impact**2 + sum(e.impact**2 for e in hesse.groups)) / total
    assert closure == pytest.approx(1.0, abs=0.1)
    # the profile-likelihood refits agree with the Hessian version
    profile = grouped_breakdown(
        model, loaded.data, best, {k: categories[k] for k in ("Background:WZ", "Jets")},
        method="profile",
    )
    assert profile.n_fits > 0
    for entry in profile.groups:
        other = next(e for e in hesse.groups if e.name == entry.name)
        assert entry.impact == pytest.approx(other.impact, rel=0.1)
        assert entry.reduced_up >= entry.reduced_down  # Poisson asymmetry survives


def test_parameter_impacts_match_direct_fits(example) -> None:
    loaded, best, _, _ = example
    model, poi = loaded.model, loaded.model.config.poi_index
    ranking = parameter_impacts(model, loaded.data, best, n=4)
    assert len(ranking) == 4
    sizes = [max(abs(r.postfit_up), abs(r.postfit_down)) for r in ranking]
    assert sizes == sorted(sizes, reverse=True)
    top = ranking[0]
    m = iminuit.Minuit(lambda x: -2 * model.logpdf(x, np.asarray(loaded.data))[0], best.bestfit.copy())
    m.errordef = 1
    m.strategy = 1
    m.limits = model.config.suggested_bounds()
    for i, f in enumerate(model.config.suggested_fixed()):
        m.fixed[i] = f
    m.values[top.index] = top.bestfit + top.postfit_sigma
    m.fixed[top.index] = True
    m.migrad()
    assert top.postfit_up == pytest.approx(m.values[poi] - best.bestfit[poi], abs=1e-3)
    assert top.prefit_sigma is None or top.prefit_up is not None


def test_scan_gaussian_measures() -> None:
    t = np.array([-2.0, -1.0, 0.0, 1.0, 2.0])
    a, non_gauss, asym, up, down = _measures(t, t**2)
    assert (a, non_gauss, asym, up, down) == pytest.approx((1.0, 0.0, 0.0, 1.0, 1.0))
    q = np.where(t > 0, t**2 / 1.44, t**2 / 0.64)  # crossings at +1.2 / -0.8
    _, non_gauss, asym, up, down = _measures(t, q)
    assert (up, down) == pytest.approx((1.2, 0.8))
    assert asym == pytest.approx(0.2)
    assert non_gauss > 0.1


def test_scan_of_example_parameter(example) -> None:
    loaded, best, _, _ = example
    scan = scan_parameter(loaded.model, loaded.data, best, "ttZ_Shower")
    assert len(scan.values) == 9
    assert scan.curvature == pytest.approx(1.0, abs=0.1)
    assert scan.non_gaussianity < 0.05
    assert scan.delta_twice_nll[4] == 0.0


def test_crossing_beyond_the_poi_bound_is_cut_at_the_bound(caplog) -> None:
    """A deficit pushes mu_hat to its lower bound 0: the lower crossing is the bound itself."""
    spec = {
        "channels": [{"name": "sr", "samples": [
            {"name": "signal", "data": [5.0],
             "modifiers": [{"name": "mu", "type": "normfactor", "data": None}]},
            {"name": "background", "data": [50.0],
             "modifiers": [{"name": "bkg_norm", "type": "normsys",
                            "data": {"hi": 1.05, "lo": 0.95}}]},
        ]}],
        "observations": [{"name": "sr", "data": [40.0]}],
        "measurements": [{"name": "m", "config": {"poi": "mu", "parameters": []}}],
        "version": "1.0.0",
    }
    workspace = pyhf.Workspace(spec)
    model = workspace.model()
    data = workspace.data(model)
    best = fit(model, data)
    poi = model.config.poi_index
    assert best.bestfit[poi] == pytest.approx(0.0, abs=1e-3)
    with caplog.at_level("WARNING"):
        total = total_uncertainty(model, data, best)
    assert total.down == pytest.approx(float(best.bestfit[poi]), abs=1e-9)
    assert total.up > 0.5
    assert "beyond the POI bound" in caplog.text

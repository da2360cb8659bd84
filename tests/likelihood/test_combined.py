"""The combined likelihood on the SMEFiT top-quark sets: chi2 at the SM, linear fits, options."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from smeft_pyhf.exceptions import ConfigError, DataError
from smeft_pyhf.formats.coefficients import CoefficientSpec
from smeft_pyhf.likelihood import (
    build_likelihood,
    linear_gaussian_solution,
    load_smefit_dataset,
    read_smefit_runcard,
    top_quark_datasets,
)
from smeft_pyhf.likelihood.smefit_runcard import SmefitSelection

# well-constrained at linear order in the top data (the 4-heavy operators are flat directions)
LINEAR_COEFS = ["ctG", "ctW", "ctZ", "cpQM", "c3pQ3", "c13qq", "c81qq", "c8qt"]


def independent_chi2_at_sm(database: Path, name: str) -> tuple[int, float]:
    """chi2 at best_sm (exp. t0 + theory covariance) straight from the raw files (numpy only)."""
    data = yaml.safe_load((database / "commondata" / f"{name}.yaml").read_text())
    theory = json.loads((database / "theory" / f"{name}.json").read_text())
    n, s = data["num_data"], data["num_sys"]
    central = np.broadcast_to(np.asarray(data["data_central"], float), (n,))
    cov = np.diag(np.broadcast_to(np.asarray(data["statistical_error"], float), (n,)) ** 2)
    best_sm = np.asarray(theory["best_sm"], float)
    rows = np.asarray(data["systematics"], float).reshape(s, n)
    for row, nm, tp in zip(rows, np.atleast_1d(data["sys_names"]),
                           np.atleast_1d(data["sys_type"]), strict=True):
        row = row / central * best_sm if tp == "MULT" else row
        cov += np.diag(row**2) if nm in ("UNCORR", "THEORYUNCORR") else np.outer(row, row)
    cov += np.asarray(theory["theory_cov_current"], float).reshape(n, n)
    r = central - best_sm
    return n, float(r @ np.linalg.solve(cov, r))


@pytest.fixture(scope="module")
def database(shared_data: Path) -> Path:
    return shared_data / "smefit_database"


@pytest.fixture(scope="module")
def top_names(database):
    return top_quark_datasets(database)


@pytest.fixture(scope="module")
def top_likelihood(database, top_names):
    return build_likelihood(database=database, datasets=top_names)


@pytest.fixture(scope="module")
def linear_likelihood(database, top_names):
    return build_likelihood(database=database, datasets=top_names, coefficients=LINEAR_COEFS,
                            linear_only=True)


@pytest.mark.shared_data
def test_chi2_at_sm_reproduces_smefit(database, top_names, top_likelihood):
    separate = build_likelihood(database=database, datasets=top_names, correlate_datasets=False)
    x0 = torch.zeros(1, separate.dim, dtype=torch.float64)
    ref = sum(independent_chi2_at_sm(database, n)[1] for n in top_names)
    assert separate.chi2(x0).item() == pytest.approx(ref, rel=1e-10)
    assert ref == pytest.approx(247.5, abs=0.05)
    # correlating ATLAS/CMS luminosity-type systematics across sets changes it slightly
    assert top_likelihood.chi2(x0).item() == pytest.approx(247.42, abs=0.01)
    assert top_likelihood.dim == 41 and top_likelihood.names[0].startswith("c")
    assert top_likelihood.terms[0].term.n_data == 204


@pytest.mark.shared_data
def test_prediction_matches_tables_at_random_point(database, top_likelihood):
    name = "ATLAS_ttZ_13TeV_pTZ"
    ds = load_smefit_dataset(database, name)
    rng = np.random.default_rng(0)
    c = rng.normal(scale=0.3, size=top_likelihood.dim)
    values = dict(zip(top_likelihood.names, c, strict=True))
    ref = ds.best_sm.copy()
    for op, vec in ds.linear.items():
        ref += values["c" + op[1:]] * vec
    for key, vec in ds.quadratic.items():
        a, b = key.split("*")
        ref += values["c" + a[1:]] * values["c" + b[1:]] * vec
    expected = top_likelihood.expected(torch.as_tensor(c)[None])[0].numpy()
    idx = [k for k, o in enumerate(top_likelihood.observables) if o.startswith(name + "[")]
    np.testing.assert_allclose(expected[idx], ref, rtol=1e-12)


@pytest.mark.shared_data
def test_batched_float32_and_gradient(top_likelihood):
    x = torch.randn(64, top_likelihood.dim, dtype=torch.float64) * 0.05
    lp64 = top_likelihood.log_prob(x)
    assert lp64.shape == (64,)
    single = torch.stack([top_likelihood.log_prob(x[k:k + 1])[0] for k in range(3)])
    torch.testing.assert_close(single, lp64[:3])
    import copy

    lik32 = copy.deepcopy(top_likelihood).to(torch.float32)
    assert lik32.dtype == torch.float32
    lp32 = lik32.log_prob(x.float())
    torch.testing.assert_close(lp32.double(), lp64, rtol=1e-4, atol=1e-2)
    # gradient against central differences along random directions
    xg = x[:2].clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(top_likelihood.log_prob(xg).sum(), xg)
    for k in range(3):
        v = torch.randn_like(x[:2], generator=torch.Generator().manual_seed(k))
        h = 1e-6
        fd = (top_likelihood.log_prob(x[:2] + h * v) - top_likelihood.log_prob(x[:2] - h * v)) / (2 * h)
        torch.testing.assert_close((grad * v).sum(-1), fd, rtol=1e-6, atol=1e-6)


def _lbfgs_fit(likelihood, n_iter: int = 5):
    x = torch.zeros(likelihood.dim, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([x], lr=1.0, max_iter=500, tolerance_grad=1e-13,
                            tolerance_change=1e-16, history_size=50,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = likelihood.chi2(x[None])[0]
        loss.backward()
        return loss

    for _ in range(n_iter):
        opt.step(closure)
    best = x.detach()
    hess = torch.autograd.functional.hessian(lambda z: -likelihood.log_prob(z[None])[0], best)
    return best.numpy(), np.linalg.inv(hess.numpy())


@pytest.mark.shared_data
def test_linear_fit_equals_analytic_solution(linear_likelihood):
    sol = linear_gaussian_solution(linear_likelihood)
    best, cov = _lbfgs_fit(linear_likelihood)
    np.testing.assert_allclose(best, sol.best_fit, rtol=1e-6, atol=1e-9 * sol.errors.max())
    np.testing.assert_allclose(np.sqrt(np.diag(cov)), sol.errors, rtol=1e-6)
    np.testing.assert_allclose(cov, sol.covariance, rtol=1e-6, atol=1e-9)
    chi2_min = linear_likelihood.chi2(torch.as_tensor(best)[None]).item()
    assert chi2_min == pytest.approx(sol.chi2_min, rel=1e-9)


@pytest.mark.shared_data
def test_iminuit_linear_fit(linear_likelihood):
    iminuit = pytest.importorskip("iminuit")
    sol = linear_gaussian_solution(linear_likelihood)

    def fcn(v):
        return float(linear_likelihood.chi2(torch.as_tensor(np.asarray(v))[None])[0])

    def grad(v):
        x = torch.as_tensor(np.asarray(v)).requires_grad_(True)
        (g,) = torch.autograd.grad(linear_likelihood.chi2(x[None])[0], x)
        return g.numpy()

    m = iminuit.Minuit(fcn, np.zeros(linear_likelihood.dim), grad=grad,
                       name=linear_likelihood.names)
    m.errordef = iminuit.Minuit.LEAST_SQUARES
    m.strategy = 2
    m.tol = 1e-8
    m.migrad()
    m.hesse()
    assert m.valid
    # Migrad stops at EDM ~ 1e-11: agreement ~1e-5 sigma on the best fit, 1e-6 on the errors
    np.testing.assert_allclose(np.array(m.values), sol.best_fit, atol=1e-4 * sol.errors.min())
    np.testing.assert_allclose(np.array(m.errors), sol.errors, rtol=1e-5)


@pytest.mark.shared_data
def test_unknown_coefficient_and_missing_dataset(database):
    with pytest.raises(ConfigError, match=r"unknown coefficients \['ctGG'\].*did you mean ctG"):
        build_likelihood(database=database, datasets=["ATLAS_ttZ_13TeV_pTZ"],
                         coefficients=["ctZ", "ctGG"])
    with pytest.raises(DataError, match=r"ATLAS_ttZ_13TeV_pTX.*close names: ATLAS_ttZ_13TeV_pTZ"):
        build_likelihood(database=database, datasets=["ATLAS_ttZ_13TeV_pTX"])
    with pytest.raises(ConfigError, match="theory_mode"):
        build_likelihood(database=database, datasets=["ATLAS_ttZ_13TeV_pTZ"],
                         theory_mode="flat")  # type: ignore[arg-type]


@pytest.mark.shared_data
def test_constraints_and_fixed_values(database):
    names = ["ATLAS_t_sch_13TeV_inc", "CMS_t_tch_13TeV_inc"]
    specs = {"c3pQ3": CoefficientSpec("c3pQ3"), "ctW": CoefficientSpec("ctW"),
             "c3pl1": CoefficientSpec("c3pl1", constrain=(("c3pQ3", 0.5), ("ctW", -1.0))),
             "c13qq": CoefficientSpec("c13qq", value=0.2)}
    lik = build_likelihood(database=database, datasets=names, coefficients=specs)
    assert lik.names == ("c3pQ3", "ctW")
    full = build_likelihood(database=database, datasets=names,
                            coefficients=["c3pQ3", "ctW", "c3pl1", "c13qq"])
    x = torch.tensor([[0.3, -0.2], [-0.1, 0.4]], dtype=torch.float64)
    x_full = torch.stack([x[:, 0], x[:, 1], 0.5 * x[:, 0] - x[:, 1],
                          torch.full((2,), 0.2, dtype=torch.float64)], -1)
    torch.testing.assert_close(lik.log_prob(x), full.log_prob(x_full))


@pytest.mark.shared_data
def test_runcard_selection_top(database, shared_data):
    sel = read_smefit_runcard(shared_data / "smefit_runcards" / "LHC_NLO_QUAD_GLOB.yaml")
    top = sel.restrict(database, top_only=True)
    lik = build_likelihood(database=database, datasets=top)
    assert lik.names == top.free_coefficients
    assert lik.bounds[lik.names.index("ctG")].tolist() == [-1.0, 1.0]
    assert np.isfinite(lik.chi2(torch.zeros(1, lik.dim, dtype=torch.float64)).item())


@pytest.mark.shared_data
def test_linear_only_and_a_linear_selection_agree(database):
    # linear_only reads the quadratic tables and drops them; a SMEFiT selection with
    # use_quad: false leaves them unread; both predict T(c) = SM + L c
    names = ["ATLAS_ttZ_13TeV_pTZ"]
    quad = build_likelihood(database=database, datasets=names, coefficients=["ctZ"])
    lin = build_likelihood(database=database, datasets=names, coefficients=["ctZ"],
                           linear_only=True)
    selection = SmefitSelection(datasets=tuple((n, "NLO_QCD") for n in names),
                                coefficients={"ctZ": CoefficientSpec("ctZ")}, use_quad=False)
    unread = build_likelihood(database=database, datasets=selection)
    x = torch.tensor([[0.0], [0.7], [-1.3]], dtype=torch.float64)
    ds = load_smefit_dataset(database, names[0])
    expected = ds.best_sm[None, :] + x.numpy() * ds.linear["OtZ"][None, :]
    np.testing.assert_allclose(lin.expected(x).numpy(), expected, rtol=1e-12)
    torch.testing.assert_close(unread.log_prob(x), lin.log_prob(x))
    assert lin.terms[0].predictions.n_pairs == 1 and unread.terms[0].predictions.n_pairs == 0
    lin.terms[0].predictions.linear_only = False  # the quadratic terms come back
    torch.testing.assert_close(lin.log_prob(x), quad.log_prob(x))


@pytest.mark.shared_data
def test_options_change_the_right_pieces(database):
    names = ["ATLAS_ttZ_13TeV_pTZ"]
    base = build_likelihood(database=database, datasets=names, coefficients=["ctZ"])
    x0 = torch.zeros(1, 1, dtype=torch.float64)
    half = build_likelihood(database=database, datasets=names, coefficients=["ctZ"],
                            scale_theory=0.5)
    no_th = build_likelihood(database=database, datasets=names, coefficients=["ctZ"],
                             use_theory_cov=False)
    cov = base.terms[0].term.covariance
    torch.testing.assert_close(half.terms[0].term.covariance,
                               no_th.terms[0].term.covariance
                               + 0.25 * (cov - no_th.terms[0].term.covariance))
    # multiplicative: best_sm * (1 + L/SM c + ...), differs where best_sm != SM(NLO)
    tch = load_smefit_dataset(database, "CMS_t_tch_13TeV_inc")
    add = build_likelihood(database=database, datasets=[tch.name], coefficients=["ctW"])
    mult = build_likelihood(database=database, datasets=[tch.name], coefficients=["ctW"],
                            prediction="multiplicative")
    torch.testing.assert_close(mult.chi2(x0), add.chi2(x0))  # same SM baseline
    np.testing.assert_allclose(mult.expected(x0 + 1)[0].numpy() - tch.best_sm,
                               (tch.linear["OtW"] + tch.quadratic["OtW*OtW"])
                               * tch.best_sm / tch.sm_order)
    lin = build_likelihood(database=database, datasets=names, coefficients=["ctZ"],
                           linear_only=True)
    quad_part = base.expected(x0 + 1) - lin.expected(x0 + 1)
    ds = load_smefit_dataset(database, names[0])
    np.testing.assert_allclose(quad_part[0].numpy(), ds.quadratic["OtZ*OtZ"])


@pytest.mark.shared_data
def test_whole_runcard_selection_builds(database, shared_data):
    sel = read_smefit_runcard(shared_data / "smefit_runcards" / "LHC_NLO_QUAD_GLOB.yaml")
    full = sel.restrict(database)
    lik = build_likelihood(database=database, datasets=full)
    assert lik.dim == 48 and lik.terms[0].term.n_data == 441
    lp = lik.log_prob(torch.zeros(2, lik.dim, dtype=torch.float64))
    assert torch.isfinite(lp).all()

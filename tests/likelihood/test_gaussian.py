"""GaussianTerm: correlated chi2, profiled and marginalised flat theory, nuisance parameters."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import integrate, optimize, stats

from smeft_pyhf.exceptions import ConfigError, DataError
from smeft_pyhf.likelihood.gaussian import GaussianTerm, box_residual, profiled_residual


def _random_cov(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, n))
    return a @ a.T + n * np.eye(n)


def test_chi2_matches_numpy(device, dtype):
    cov = _random_cov(6)
    rng = np.random.default_rng(1)
    data = rng.normal(size=6)
    pred = rng.normal(size=(4, 6))
    term = GaussianTerm(torch.as_tensor(data), torch.as_tensor(cov)).to(device=device, dtype=dtype)
    got = term.chi2(torch.as_tensor(pred, dtype=dtype, device=device)).cpu().double().numpy()
    r = data - pred
    ref = np.einsum("bi,ij,bj->b", r, np.linalg.inv(cov), r)
    np.testing.assert_allclose(got, ref, rtol=1e-10 if dtype == torch.float64 else 1e-5)
    batched = term.chi2(torch.as_tensor(pred, dtype=dtype, device=device).reshape(2, 2, 6))
    np.testing.assert_allclose(batched.cpu().double().numpy().ravel(), got, rtol=1e-5)
    torch.testing.assert_close(term.covariance.cpu().double(), torch.as_tensor(cov),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(term.log_prob(torch.as_tensor(pred, dtype=dtype,
                                                             device=device)).cpu().numpy(),
                               -0.5 * got, rtol=1e-6)


def test_profiled_equals_exact_profile_for_diagonal_covariance():
    sigma = np.array([0.5, 1.0, 2.0])
    width = np.array([0.3, 1.5, 0.0])
    data = np.array([1.0, -2.0, 0.5])
    term = GaussianTerm(torch.as_tensor(data), torch.as_tensor(np.diag(sigma**2)),
                        theory_width=torch.as_tensor(width), theory_mode="profiled")
    for pred in ([0.0, 0.0, 0.0], [2.0, 1.0, -1.0], [1.1, -2.5, 0.5]):
        p = np.asarray(pred)
        # exact: min over theta_i in [-w_i, w_i] of sum ((d - p - theta)/sigma)^2
        res = optimize.minimize(lambda t, p=p: np.sum(((data - p - t) / sigma) ** 2),
                                np.zeros(3), bounds=list(zip(-width, width, strict=True)),
                                method="L-BFGS-B", options={"ftol": 1e-15, "gtol": 1e-12})
        got = term.chi2(torch.as_tensor(p)[None]).item()
        assert got == pytest.approx(res.fun, abs=1e-8)


def test_profiled_residual_values():
    r = torch.tensor([-2.0, -0.5, 0.0, 0.5, 2.0])
    torch.testing.assert_close(profiled_residual(r, torch.tensor(1.0)),
                               torch.tensor([-1.0, 0.0, 0.0, 0.0, 1.0]))


@pytest.mark.parametrize("r", [0.0, 0.3, 1.7, 4.0, 12.0])
def test_marginalised_equals_numerical_convolution(r):
    sigma, width = 0.8, 1.2

    def like(x: float) -> float:
        val, _ = integrate.quad(lambda t: stats.norm.pdf(x - t, scale=sigma), -width, width,
                                epsabs=1e-300, epsrel=1e-12, limit=200)
        return val / (2 * width)

    ref = -2 * np.log(like(r) / like(0.0))
    term = GaussianTerm(torch.zeros(1, dtype=torch.float64),
                        torch.tensor([[sigma**2]], dtype=torch.float64),
                        theory_width=torch.tensor([width], dtype=torch.float64),
                        theory_mode="marginalised")
    got = term.chi2(torch.tensor([[-r]], dtype=torch.float64)).item()
    assert got == pytest.approx(ref, rel=1e-8, abs=1e-10)


def test_marginalised_limits_and_gradients():
    r = torch.tensor([0.0, 1e-9, 0.2, 3.0, 40.0], dtype=torch.float64, requires_grad=True)
    sigma = torch.ones(5, dtype=torch.float64)
    # zero width: the plain Gaussian
    torch.testing.assert_close(box_residual(r, torch.zeros(5, dtype=torch.float64), sigma), r)
    out = box_residual(r, torch.full((5,), 0.7, dtype=torch.float64), sigma)
    out.sum().backward()
    assert torch.isfinite(r.grad).all() and (r.grad > 0).all()
    # very wide box: flat inside, shifted Gaussian far outside
    wide = box_residual(torch.tensor([0.5, 50.0], dtype=torch.float64),
                        torch.full((2,), 10.0, dtype=torch.float64), torch.ones(2, dtype=torch.float64))
    assert wide[0].abs() < 1e-3
    # float32 stays finite far in the tail
    r32 = torch.tensor([0.0, 5.0, 80.0], requires_grad=True)
    out32 = box_residual(r32, torch.full((3,), 0.5), torch.ones(3))
    out32.sum().backward()
    assert torch.isfinite(out32).all() and torch.isfinite(r32.grad).all()


def test_correlated_marginalised_reduces_to_gaussian_for_zero_width():
    cov = _random_cov(4, seed=2)
    data = torch.as_tensor(np.arange(4.0))
    pred = torch.as_tensor(np.random.default_rng(3).normal(size=(3, 4)))
    plain = GaussianTerm(data, torch.as_tensor(cov))
    marg = GaussianTerm(data, torch.as_tensor(cov), theory_width=torch.zeros(4),
                        theory_mode="marginalised")
    torch.testing.assert_close(marg.chi2(pred), plain.chi2(pred))


def test_nuisance_parameters_and_scale():
    data = torch.tensor([1.0, 1.0], dtype=torch.float64)
    shifts = torch.tensor([[0.5], [0.5]], dtype=torch.float64)  # one correlated theory source
    term = GaussianTerm(data, 0.01 * torch.eye(2, dtype=torch.float64), theory_shifts=shifts)
    pred = torch.tensor([[0.5, 0.5]], dtype=torch.float64)
    assert term.n_nuisances == 1
    assert term.chi2(pred, torch.tensor([[1.0]], dtype=torch.float64)).item() == pytest.approx(0.0)
    assert term.chi2(pred, torch.tensor([[0.0]], dtype=torch.float64)).item() == pytest.approx(50.0)
    # outside [-1, 1] the wall grows fast
    assert term.chi2(pred, torch.tensor([[1.1]], dtype=torch.float64)).item() > 99.0
    half = GaussianTerm(data, 0.01 * torch.eye(2, dtype=torch.float64), theory_shifts=shifts,
                        scale_theory=0.5)
    assert half.chi2(pred, torch.tensor([[1.0]], dtype=torch.float64)).item() == pytest.approx(12.5)
    prof = GaussianTerm(data, 0.01 * torch.eye(2, dtype=torch.float64),
                        theory_width=torch.tensor([0.2, 0.2]), theory_mode="profiled",
                        scale_theory=0.5)
    assert prof.chi2(pred).item() == pytest.approx(2 * 0.4**2 / 0.01)


def test_errors():
    with pytest.raises(DataError, match="not positive definite"):
        GaussianTerm(torch.zeros(2), torch.ones(2, 2), names=("a", "b"))
    with pytest.raises(DataError, match="shape"):
        GaussianTerm(torch.zeros(2), torch.eye(3))
    with pytest.raises(ConfigError, match="theory_mode"):
        GaussianTerm(torch.zeros(1), torch.eye(1), theory_mode="flat")  # type: ignore[arg-type]
    with pytest.raises(DataError, match="NaN"):
        GaussianTerm(torch.tensor([float("nan")]), torch.eye(1))

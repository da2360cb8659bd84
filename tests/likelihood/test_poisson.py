"""Poisson counting measurements: exact profile against scipy, SFitter approximation limits."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy import optimize, special

from smeft_pyhf.exceptions import ConfigError, DataError
from smeft_pyhf.likelihood.poisson import (
    CountingLikelihood,
    PoissonCounting,
    profiled_background,
    systematic_width,
)


def _deviance(obs: float, mu: float) -> float:
    return 2.0 * (mu - obs + special.xlogy(obs, obs) - special.xlogy(obs, mu))


def _scipy_profile(s: float, d: float, n: float, tau: float, theo: float, syst: float) -> float:
    """-2 log L/L_sat minimised over (b, theta, t) with scipy, from two starts."""
    free_theta, free_t = syst > 0, theo > 0

    def objective(x: np.ndarray) -> float:
        b = math.exp(x[0])
        theta = x[1] if free_theta else 0.0
        t = x[-1] if free_t else 0.0
        lam = s + t + syst * theta + b
        if lam <= 0:
            return 1e12
        return _deviance(d, lam) + _deviance(n, tau * b) + theta * theta

    bounds = [(-30.0, 30.0)] + [(-20.0, 20.0)] * free_theta + [(-theo, theo)] * free_t
    best = math.inf
    b0 = max(n / tau, 1e-3) + max(-s, 0.0)
    b1 = max(-s, 0.0) + max(d, 1.0)  # a start with a positive signal-region mean
    for log_b, theta in ((math.log(b0), 0.0), (math.log(b1), 0.5)):
        start = np.array([log_b] + [theta] * free_theta + [0.0] * free_t)
        res = optimize.minimize(objective, start, method="L-BFGS-B", bounds=bounds,
                                options={"ftol": 1e-15, "gtol": 1e-10, "maxiter": 5000})
        res = optimize.minimize(objective, res.x, method="Nelder-Mead", bounds=bounds,
                                options={"xatol": 1e-10, "fatol": 1e-13, "maxiter": 5000})
        best = min(best, float(res.fun))
    return best


CASES = [
    # d, n, tau, theo, syst
    (25.0, 40.0, 2.0, 0.0, 0.0),
    (8.0, 3.0, 1.0, 0.0, 0.0),
    (120.0, 400.0, 4.0, 0.0, 6.0),
    (60.0, 30.0, 0.5, 4.0, 0.0),
    (60.0, 30.0, 0.5, 4.0, 5.0),
    (3.0, 10.0, 3.0, 0.5, 1.0),
]


@pytest.mark.parametrize(("d", "n", "tau", "theo", "syst"), CASES)
def test_profiled_matches_scipy(d: float, n: float, tau: float, theo: float, syst: float) -> None:
    counting = PoissonCounting([d], [n], transfer=tau, sigma_theo=theo, sigma_syst=syst)
    s_hat = d - n / tau
    points = [s_hat - 12.0, s_hat - 4.0, s_hat - 0.5, s_hat + 3.0, s_hat + 15.0]
    ours = counting.chi2(torch.tensor(points, dtype=torch.float64)[:, None]).numpy()
    ref = np.array([_scipy_profile(s, d, n, tau, theo, syst) for s in points])
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-6)


def test_profiled_background_solves_score_equation() -> None:
    s = torch.tensor([-5.0, 0.0, 3.0, 40.0], dtype=torch.float64)
    d, n, tau = torch.tensor(30.0).double(), torch.tensor(12.0).double(), torch.tensor(1.5).double()
    b = profiled_background(s, d, n, tau)
    assert torch.all(b > torch.clamp(-s, min=0))
    score = d / (s + b) + n / b - (1 + tau)
    torch.testing.assert_close(score, torch.zeros_like(score), atol=1e-12, rtol=0)
    # No control events: the background goes to zero once the signal alone exceeds d/(1+tau).
    b0 = profiled_background(torch.tensor([50.0]).double(), d, torch.tensor(0.0).double(), tau)
    assert b0.item() == 0.0


@pytest.mark.parametrize("method", ["profiled", "sfitter"])
def test_zero_at_best_fit_and_positive_elsewhere(method: str) -> None:
    counting = PoissonCounting([50.0, 200.0], [30.0, 90.0], transfer=[1.0, 3.0],
                               sigma_theo=[2.0, 0.0], sigma_syst=[3.0, 1.0], method=method)
    s_hat = counting.signal_hat()
    chi2 = counting.chi2_per_channel(torch.stack([s_hat, s_hat + 1.0, s_hat + 10.0]))
    torch.testing.assert_close(chi2[0], torch.zeros(2, dtype=torch.float64), atol=1e-10, rtol=0)
    assert chi2[1, 0] == 0.0  # inside the flat theory window of the first channel
    assert torch.all(chi2[2] > 0)
    assert torch.all(chi2[2] > chi2[1])


def test_large_counts_sfitter_agrees_with_exact_and_gaussian() -> None:
    """Paper: eq. (9) is exact for Gaussian terms, so for large counts both agree."""
    rel_diffs = []
    for scale in (1.0, 10.0, 100.0, 1000.0):
        d, n, tau, syst = 60.0 * scale, 40.0 * scale, 1.0, 2.0 * math.sqrt(scale)
        var = d + n / tau**2 + syst**2
        r = 2.0 * math.sqrt(var)  # a 2 sigma downward fluctuation of the signal
        s = torch.tensor([[d - n / tau - r]], dtype=torch.float64)
        exact = PoissonCounting([d], [n], transfer=tau, sigma_syst=syst).chi2(s).item()
        approx = PoissonCounting([d], [n], transfer=tau, sigma_syst=syst,
                                 method="sfitter").chi2(s).item()
        rel_diffs.append(abs(approx - exact) / exact)
        if scale == 1000.0:
            assert exact == pytest.approx(4.0, rel=0.02)
            assert approx == pytest.approx(4.0, rel=0.02)
    assert rel_diffs[-1] < 0.005
    assert rel_diffs[0] > rel_diffs[-1]
    assert all(a >= b for a, b in itertools.pairwise(rel_diffs))


def test_small_counts_approximation_differs() -> None:
    """With a few events the approximation is visibly off the exact profile."""
    s = torch.tensor([[-2.0], [10.0]], dtype=torch.float64)
    exact = PoissonCounting([6.0], [2.0]).chi2(s)
    approx = PoissonCounting([6.0], [2.0], method="sfitter").chi2(s)
    assert torch.all(torch.abs(approx - exact) / exact > 0.05)


def test_gradient_matches_finite_differences() -> None:
    counting = PoissonCounting([60.0, 15.0], [30.0, 20.0], transfer=[1.0, 2.0],
                               sigma_theo=[3.0, 1.0], sigma_syst=[5.0, 2.0])
    s = torch.tensor([[20.0, -3.0], [45.0, 12.0]], dtype=torch.float64, requires_grad=True)
    counting.log_prob(s).sum().backward()
    h = 1e-6
    fd = torch.zeros_like(s)
    with torch.no_grad():
        for i in range(2):
            for j in range(2):
                e = torch.zeros_like(s)
                e[i, j] = h
                fd[i, j] = (counting.log_prob(s + e) - counting.log_prob(s - e))[i] / (2 * h)
    torch.testing.assert_close(s.grad, fd, rtol=1e-5, atol=1e-7)


def test_dtype_device_and_batch_shapes(device: torch.device) -> None:
    counting = PoissonCounting([60.0, 15.0], [30.0, 20.0], sigma_syst=2.0).to(device)
    s64 = torch.rand(7, 3, 2, dtype=torch.float64, device=device) * 20
    out64 = counting.log_prob(s64)
    assert out64.shape == (7, 3) and out64.dtype == torch.float64
    out32 = counting.log_prob(s64.float())
    assert out32.dtype == torch.float32 and out32.device == s64.device
    torch.testing.assert_close(out32.double(), out64, rtol=1e-4, atol=1e-4)


def test_systematic_width_and_errors() -> None:
    assert systematic_width([[3.0, 4.0]], [[0.0, 0.0]]).tolist() == [5.0]
    with pytest.raises(DataError, match="non-negative"):
        PoissonCounting([-1.0], [2.0])
    with pytest.raises(DataError, match="channels"):
        PoissonCounting([1.0, 2.0], [2.0, 3.0, 4.0])
    with pytest.raises(ConfigError, match="unknown counting"):
        PoissonCounting([1.0], [2.0], method="magic")  # type: ignore[arg-type]
    with pytest.raises(DataError, match="transfer"):
        PoissonCounting([1.0], [2.0], transfer=0.0)


def test_counting_likelihood_with_quadratic_predictions() -> None:
    from smeft_pyhf.likelihood.predictions import QuadraticPredictions

    signal_sm = 40.0
    pred = QuadraticPredictions.from_tables([1.0], {"OpG": [0.5]}, {"OpG*OpG": [0.1]},
                                                        names=["cpG"])
    pred = pred.row_transform(torch.tensor([[signal_sm]], dtype=torch.float64))
    counting = PoissonCounting([100.0], [55.0])
    like = CountingLikelihood(pred, counting)
    c = torch.tensor([[0.0], [1.0], [-2.0]], dtype=torch.float64)
    expected_signal = signal_sm * (1 + 0.5 * c[:, 0] + 0.1 * c[:, 0] ** 2)
    torch.testing.assert_close(like.log_prob(c), counting.log_prob(expected_signal[:, None]))
    assert like.names == ("cpG",)

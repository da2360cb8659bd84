"""Step 5: batched, per-point independent L-BFGS and the profile step.

Sample sizes: 64 random quadratic problems in 8 dimensions; 32 Rosenbrock problems; the profile
test of a 22-dimensional Gaussian lives in ``test_sampling.py``.
"""

from __future__ import annotations

import math

import pytest
import torch

from smeft_pyhf.exceptions import ConfigError
from smeft_pyhf.sampler.profiling import ProfileConfig, lbfgs_maximise, profile
from smeft_pyhf.sampler.sampling import SampleConfig, sample_and_histogram

TIGHT = ProfileConfig(tolerance_grad=1e-10, tolerance_change=0.0, max_steps=500)


def _quadratics(n: int, d: int, generator: torch.Generator, dtype=torch.float64):
    q, _ = torch.linalg.qr(torch.randn(n, d, d, generator=generator, dtype=dtype))
    eig = torch.exp(torch.empty(n, d, dtype=dtype).uniform_(math.log(0.1), math.log(10.0),
                                                            generator=generator))
    a = q @ torch.diag_embed(eig) @ q.transpose(1, 2)
    x_star = 3 * torch.randn(n, d, generator=generator, dtype=dtype)
    return a, x_star


def _with_ids(x: torch.Tensor) -> torch.Tensor:
    """Prepend the problem index as a coordinate, so the target knows which problem a row is."""
    ids = torch.arange(x.shape[0], dtype=x.dtype)[:, None]
    return torch.cat([ids, x], dim=1)


def _quadratic_target(a: torch.Tensor, x_star: torch.Tensor):
    # The lbfgs evaluates subsets of rows (converged rows drop out), so the problem identity
    # travels with the row as the fixed coordinate 0.
    def target(x: torch.Tensor) -> torch.Tensor:
        i = x[:, 0].round().long()
        r = x[:, 1:] - x_star[i]
        return -0.5 * torch.einsum("bi,bij,bj->b", r, a[i], r)

    return target


def test_random_quadratics_converge_independently() -> None:
    g = torch.Generator().manual_seed(1)
    n, d = 64, 8
    a, x_star = _quadratics(n, d, g)
    target = _quadratic_target(a, x_star)
    x0 = _with_ids(5 * torch.randn(n, d, generator=g, dtype=torch.float64))
    fixed = torch.zeros(d + 1, dtype=torch.bool)
    fixed[0] = True
    res = lbfgs_maximise(target, x0, fixed=fixed, config=TIGHT)
    assert (res.x[:, 1:] - x_star).abs().max() < 1e-6
    assert torch.equal(res.x[:, 0], x0[:, 0])
    assert bool(res.converged.all())
    # every problem took its own number of steps: the optimisations are independent
    assert res.n_steps.unique().numel() > 3
    # the same problem alone gives the same answer and the same number of steps
    for i in (0, 17, 63):
        alone = lbfgs_maximise(target, x0[i : i + 1], fixed=fixed, config=TIGHT)
        assert int(alone.n_steps[0]) == int(res.n_steps[i])
        assert torch.allclose(alone.x[0], res.x[i], atol=1e-9, rtol=0)


def test_fixed_coordinates_give_the_conditional_optimum() -> None:
    g = torch.Generator().manual_seed(2)
    n, d = 32, 6
    a, x_star = _quadratics(n, d, g)
    target = _quadratic_target(a, x_star)
    fixed = torch.zeros(n, d + 1, dtype=torch.bool)
    fixed[:, :2] = True
    fixed[::2, 4] = True
    x0 = _with_ids(torch.randn(n, d, generator=g, dtype=torch.float64))
    res = lbfgs_maximise(target, x0, fixed=fixed, config=TIGHT)
    assert torch.equal(res.x[fixed], x0[fixed])
    x0, fixed, res_x = x0[:, 1:], fixed[:, 1:], res.x[:, 1:]
    for b in range(n):
        f, c = ~fixed[b], fixed[b]
        aff = a[b][f][:, f]
        afc = a[b][f][:, c]
        expect = x_star[b, f] - torch.linalg.solve(aff, afc @ (x0[b, c] - x_star[b, c]))
        assert (res_x[b, f] - expect).abs().max() < 1e-6


def test_rosenbrock_batch() -> None:
    g = torch.Generator().manual_seed(3)

    def target(x: torch.Tensor) -> torch.Tensor:
        return -((1 - x[:, 0]) ** 2 + 100 * (x[:, 1] - x[:, 0] ** 2) ** 2)

    x0 = torch.empty(32, 2, dtype=torch.float64).uniform_(-2, 2, generator=g)
    res = lbfgs_maximise(target, x0, config=TIGHT)
    assert (res.x - 1).abs().max() < 1e-6


def test_nonfinite_regions_are_backtracked() -> None:
    def target(x: torch.Tensor) -> torch.Tensor:
        lp = -0.5 * ((x - 2.0) ** 2).sum(-1)
        return torch.where(x[:, 0] < 2.5, lp, torch.full_like(lp, -math.inf))

    x0 = torch.tensor([[0.0, 0.0], [3.0, 0.0]], dtype=torch.float64)
    res = lbfgs_maximise(target, x0, config=TIGHT)
    assert torch.allclose(res.x[0], torch.tensor([2.0, 2.0], dtype=torch.float64), atol=1e-6)
    assert torch.equal(res.x[1], x0[1])  # started outside: left alone
    assert not torch.isnan(res.log_prob).any()


def test_float32_converges_to_working_precision() -> None:
    g = torch.Generator().manual_seed(4)
    a, x_star = _quadratics(16, 5, g, dtype=torch.float32)
    target = _quadratic_target(a, x_star)
    fixed = torch.tensor([True] + [False] * 5)
    res = lbfgs_maximise(target, _with_ids(torch.zeros(16, 5)), fixed=fixed,
                         config=ProfileConfig(max_steps=200))
    assert res.x.dtype == torch.float32
    assert (res.x[:, 1:] - x_star).abs().max() < 2e-3


def test_profile_never_below_the_sampled_values() -> None:
    # A banana-shaped 3D target: the sampled profile is improved, never worsened.
    def target(x: torch.Tensor) -> torch.Tensor:
        return -0.5 * (x[:, 0] ** 2 + 4 * (x[:, 1] - 0.5 * x[:, 0] ** 2) ** 2 + x[:, 2] ** 2)

    g = torch.Generator().manual_seed(5)

    def draw(n: int, generator: torch.Generator | None = None):
        x = 2 * torch.randn(n, 3, generator=generator, dtype=torch.float64)
        return x, -0.5 * (x**2).sum(-1) / 4

    sr = sample_and_histogram(draw, target, ranges=torch.tensor([[-4.0, 4.0]] * 3,
                                                                dtype=torch.float64),
                              config=SampleConfig(n_batches=2, batch_size=5000,
                                                  profile_bins_1d=20, profile_bins_2d=8),
                              generator=g)
    pr = profile(target, sr, config=ProfileConfig(tolerance_grad=1e-9))
    fin = torch.isfinite(pr.sampled1d)
    assert bool((pr.profile1d[fin] >= pr.sampled1d[fin] - 1e-12).all())
    # analytic 1D profile of coefficient 0: -x0^2 / 2 (the others adjust to zero penalty)
    c = pr.centres1d[0]
    assert torch.allclose(pr.profile1d[0][fin[0]], (-0.5 * c**2)[fin[0]], atol=1e-8)
    # coefficient 1: max over u = x0^2 >= 0 of -u/2 - 2 (x1 - u/2)^2:
    # u = 2 x1 - 1/2 for x1 >= 1/4 (value 1/8 - x1), else u = 0 (value -2 x1^2)
    c1 = pr.centres1d[1]
    expect = torch.where(c1 >= 0.25, 0.125 - c1, -2 * c1**2)
    assert torch.allclose(pr.profile1d[1][fin[1]], expect[fin[1]], atol=1e-6)
    assert abs(pr.best_log_prob) < 1e-10
    assert pr.profile2d.shape == (3, 8, 8)
    assert pr.converged_fraction == 1.0


def test_config_validation() -> None:
    with pytest.raises(ConfigError):
        ProfileConfig(history=0)
    assert ProfileConfig.paper("combined").max_steps == 200


def test_covariance_preconditioner_solves_badly_scaled_profiles() -> None:
    # 30 coefficients with widths from 1e-3 to 10 and correlations up to |rho| ~ 0.9 (like
    # the global SMEFT fit); the 1D profile of a Gaussian is -(x_i - mu_i)^2 / (2 Sigma_ii)
    g = torch.Generator().manual_seed(5)
    d = 30
    corr_q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    eig = torch.exp(torch.linspace(math.log(0.05), math.log(5.0), d, dtype=torch.float64))
    corr = corr_q @ torch.diag(eig) @ corr_q.T
    corr = corr / torch.outer(corr.diagonal().sqrt(), corr.diagonal().sqrt())
    widths = torch.exp(torch.linspace(math.log(1e-3), math.log(10.0), d, dtype=torch.float64))
    cov = corr * torch.outer(widths, widths)
    prec = torch.linalg.inv(cov)
    mu = widths * torch.randn(d, generator=g, dtype=torch.float64)

    def target(x: torch.Tensor) -> torch.Tensor:
        r = x - mu
        return -0.5 * ((r @ prec) * r).sum(-1)

    # start points: random draws, one coordinate fixed per row at 1.5 sigma
    n = 3 * d
    coeff = torch.arange(n) % d
    x0 = mu + (torch.randn(n, d, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(
        cov).T)
    x0[torch.arange(n), coeff] = mu[coeff] + 1.5 * widths[coeff]
    fixed = torch.nn.functional.one_hot(coeff, d).bool()
    config = ProfileConfig(max_steps=60, tolerance_grad=1e-9, tolerance_change=0.0)
    exact = torch.full((n,), -0.5 * 1.5**2, dtype=torch.float64)
    with_h0 = lbfgs_maximise(target, x0, fixed=fixed, config=config, preconditioner=cov)
    plain = lbfgs_maximise(target, x0, fixed=fixed, config=config)
    assert (with_h0.log_prob - exact).abs().max() < 1e-8
    assert bool(with_h0.converged.all()) and float(with_h0.n_steps.double().mean()) < 20
    # without it, 60 iterations leave profile errors far beyond the 0.01 that matters
    assert float((plain.log_prob - exact).abs().max()) > 0.1
    assert torch.equal(with_h0.x[fixed], x0[fixed])
    with pytest.raises(ConfigError, match="preconditioner"):
        lbfgs_maximise(target, x0, preconditioner=cov[:3, :3])


def test_restart_sweeps_lift_bins_that_started_in_the_lower_mode() -> None:
    # two ridges in y for every x: the upper one at y = 0, the lower one (by 2 in log p) at
    # y = 3; for x < 0 the draw only reaches the lower ridge, so those bins' start points sit
    # in its basin and L-BFGS alone keeps them there
    def target(x: torch.Tensor) -> torch.Tensor:
        base = -0.5 * x[:, 0] ** 2 / 25
        upper = -0.5 * x[:, 1] ** 2
        lower = -2.0 - 0.5 * (x[:, 1] - 3.0) ** 2 / 0.25
        return base + torch.logaddexp(upper, lower)

    def draw(n: int, generator: torch.Generator | None = None):
        x0 = 4 * (2 * torch.rand(n, generator=generator, dtype=torch.float64) - 1)
        z = torch.randn(n, generator=generator, dtype=torch.float64)
        x1 = torch.where(x0 < 0, 3.0 + 0.2 * z, z)
        x = torch.stack([x0, x1], dim=1)
        return x, target(x)  # weights do not matter for the start points

    config = SampleConfig(n_batches=1, batch_size=20000, profile_bins_1d=16, profile_bins_2d=4)
    ranges = torch.tensor([[-4.0, 4.0], [-2.0, 5.0]], dtype=torch.float64)
    sr = sample_and_histogram(draw, target, ranges=ranges, config=config,
                              generator=torch.Generator().manual_seed(0))
    # the exact profile in x: the upper ridge's maximum over y (a dense grid of y)
    c = sr.ranges.new_tensor(((torch.arange(16) + 0.5) / 16 * 8 - 4).tolist())
    y = torch.linspace(-1.0, 1.0, 200001, dtype=torch.float64)
    exact = torch.stack([target(torch.stack([ci.expand_as(y), y], 1)).max() for ci in c])
    tight = {"tolerance_grad": 1e-10, "tolerance_change": 0.0, "profile_2d": False}
    stuck = profile(target, sr, config=ProfileConfig(restart_sweeps=0, **tight))
    lifted = profile(target, sr, config=ProfileConfig(restart_sweeps=2, **tight))
    # without restarts the x < 0 bins report the lower ridge, 2 below
    assert float((exact[:8] - stuck.profile1d[0, :8]).min()) > 1.9
    assert torch.allclose(lifted.profile1d[0], exact, atol=1e-6)
    assert torch.allclose(lifted.profile1d[0, 8:], stuck.profile1d[0, 8:], atol=1e-9)

"""The paper's toy targets (Sec. 4.1) and a full pipeline run on the Gaussian mixture d = 4.

Sizes: the spiral density is checked against a brute-force discretised curve at 200 points
and against adaptive quadrature at and beyond the spiral ends;
the pipeline run uses :meth:`SamplerConfig.reduced` with 40k weighted samples kept for the mode
masses (exact mass 10/14 central, 1/14 per corner; MC error ~0.002).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.integrate import quad

from smeft_pyhf.sampler.pipeline import SamplerConfig, run_sampler
from smeft_pyhf.sampler.toys import CorrelatedGaussian, GaussianMixture, TwoSpirals, _arc


def _brute_force_spirals(x: torch.Tensor, sigma: float) -> torch.Tensor:
    tt = torch.linspace(0.36, 1.93, 100001, dtype=torch.float64)
    a = _arc(tt) - _arc(tt[:1])
    k = int(float(a[-1]) / (sigma / 8))
    u = torch.linspace(0, float(a[-1]), k, dtype=torch.float64)
    i = torch.searchsorted(a, u).clamp(1, len(tt) - 1)
    t = tt[i - 1] + (u - a[i - 1]) / (a[i] - a[i - 1]) * (tt[i] - tt[i - 1])
    c = torch.stack([t * torch.cos(2 * math.pi * t), t * torch.sin(2 * math.pi * t)], 1)
    c = torch.cat([c, -c])
    d2 = torch.cdist(x, c) ** 2
    return (torch.logsumexp(-0.5 * d2 / sigma**2, 1) - math.log(2 * math.pi * sigma**2)
            - math.log(c.shape[0]))


@pytest.mark.parametrize("sigma", [0.007, 0.0005])
def test_spiral_density_matches_brute_force(sigma: float) -> None:
    s = TwoSpirals(sigma=sigma)
    g = torch.Generator().manual_seed(0)
    x = s.sample(100, generator=g).double()
    x = torch.cat([x, x + 2 * sigma * torch.randn(100, 2, generator=g, dtype=torch.float64)])
    # the brute-force sum is itself too coarse past the spiral ends (there the reference is
    # adaptive quadrature, next test)
    r = x.norm(dim=1)
    x = x[(r > 0.45) & (r < 1.85)]
    diff = (s.log_prob(x) - _brute_force_spirals(x, sigma)).abs()
    assert float(diff.max()) < 0.05, float(diff.max())
    # symmetric: each spiral holds half the mass
    assert torch.allclose(s.log_prob(x), s.log_prob(-x))
    assert s.log_prob(x.float()).dtype == torch.float32


def _quadrature_spirals(x: np.ndarray, sigma: float, t0: float = 0.36, t1: float = 1.93) -> float:
    """Independent reference: adaptive quadrature of the smearing integral along both spirals."""
    grid = np.linspace(t0, t1, 200_001)
    terms = []
    for sign in (1.0, -1.0):
        curve = sign * np.stack([grid * np.cos(2 * np.pi * grid), grid * np.sin(2 * np.pi * grid)], 1)
        d2 = ((curve - x) ** 2).sum(1)
        k = int(d2.argmin())

        def integrand(t: float, sign: float = sign, d2min: float = float(d2[k])) -> float:
            p = sign * np.array([t * np.cos(2 * np.pi * t), t * np.sin(2 * np.pi * t)])
            speed = math.sqrt(1 + (2 * np.pi * t) ** 2)
            return math.exp(-(((p - x) ** 2).sum() - d2min) / (2 * sigma**2)) * speed

        edges = [max(t0, grid[k] - 50 * sigma), grid[k], min(t1, grid[k] + 50 * sigma)]
        value = sum(quad(integrand, a, b, limit=500, epsabs=0, epsrel=1e-10)[0]
                    for a, b in itertools.pairwise(edges) if b > a)
        terms.append(-math.inf if value <= 0 else
                     math.log(value) - float(d2[k]) / (2 * sigma**2) - math.log(2 * np.pi * sigma**2))
    return float(np.logaddexp(*terms))


@pytest.mark.parametrize("sigma", [0.007, 0.0005])
def test_spiral_density_at_and_beyond_the_ends(sigma: float) -> None:
    """Near and past both ends (where a fixed-node rule fails) against adaptive quadrature."""
    s = TwoSpirals(sigma=sigma)
    rng = np.random.default_rng(4)
    points = []
    for t_end, direction in ((0.36, -1.0), (1.93, 1.0)):
        end = np.array([t_end * np.cos(2 * np.pi * t_end), t_end * np.sin(2 * np.pi * t_end)])
        w = 2 * np.pi
        tangent = np.array([np.cos(w * t_end) - w * t_end * np.sin(w * t_end),
                            np.sin(w * t_end) + w * t_end * np.cos(w * t_end)])
        tangent *= direction / np.linalg.norm(tangent)  # pointing away from the curve
        for k in (-3.0, -1.0, 0.0, 1.0, 3.0, 10.0):
            points.append(end + k * sigma * tangent + sigma * rng.standard_normal(2))
    x = torch.tensor(np.array(points))
    ours = s.log_prob(x)
    half = math.log(2 * float(s.arc_length))
    for xi, value in zip(points, ours.tolist(), strict=True):
        assert value == pytest.approx(_quadrature_spirals(xi, sigma) - half, abs=0.01)


def test_spiral_normalisation() -> None:
    s = TwoSpirals(sigma=0.007)
    g = torch.Generator().manual_seed(1)
    x = 4 * torch.rand(100_000, 2, generator=g, dtype=torch.float64) - 2
    integral = 16 * float(s.log_prob(x).exp().mean())
    assert integral == pytest.approx(1.0, abs=0.07)  # MC error ~0.02


def test_mixture_definition() -> None:
    for d in (4.0, 10.0):
        m = GaussianMixture(d)
        assert torch.allclose(m.weights, torch.tensor([10, 1, 1, 1, 1]) / 14.0)
        lo, hi = m.ranges[:, 0], m.ranges[:, 1]
        assert float(m.box_mass(lo, hi).sum()) == pytest.approx(1.0, abs=1e-6)
        x = m.sample(20000, generator=torch.Generator().manual_seed(2))
        resp = m.responsibilities(x).mean(0)
        assert torch.allclose(resp, m.weights, atol=0.01)
    assert GaussianMixture(10.0).init_scale > GaussianMixture(4.0).init_scale
    n = 400
    grid = torch.linspace(-9, 9, n + 1)
    c = (grid[1:] + grid[:-1]) / 2
    xx, yy = torch.meshgrid(c, c, indexing="ij")
    pts = torch.stack([xx.reshape(-1), yy.reshape(-1)], 1).double()
    assert float(GaussianMixture(4.0).double().log_prob(pts).exp().sum()) * (18 / n) ** 2 == \
        pytest.approx(1.0, abs=1e-3)


def test_correlated_gaussian_profiles() -> None:
    cov = torch.tensor([[1.0, 0.6], [0.6, 2.0]], dtype=torch.float64)
    g = CorrelatedGaussian(torch.tensor([1.0, -1.0], dtype=torch.float64), cov)
    v = torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64)
    # profile: maximise over x2 analytically
    x2 = -1.0 + 0.6 / 1.0 * (v - 1.0)
    direct = g.log_prob(torch.stack([v, x2], 1))
    assert torch.allclose(g.profile1d(0, v), direct)
    assert torch.allclose(g.profile2d(0, 1, v, x2), direct)


def test_mixture_d4_pipeline_finds_all_modes() -> None:
    mix = GaussianMixture(4.0)
    cfg = SamplerConfig.reduced()
    cfg = cfg.replace(sample=cfg.sample.replace(n_batches=2, keep_samples=40_000))
    r = run_sampler(mix, names=["x", "y"], ranges=mix.ranges, config=cfg, seed=2,
                    progress=False, init_scale=mix.init_scale)
    sr = r.sample_result
    w = torch.softmax(sr.samples_log_weight.double(), 0)
    masses = (w[:, None] * mix.responsibilities(sr.samples.double())).sum(0)
    # every mode found, masses within 0.015 (absolute) of 10/14 and 1/14
    assert torch.allclose(masses, mix.weights.double(), atol=0.015), masses
    assert r.ess_fraction > 0.3
    assert r.log_evidence == pytest.approx(0.0, abs=0.05)
    # profile: smooth and equal to the brute-force maximum over y on a fine grid
    c = r.profile_result.centres1d[0].double()
    y = torch.linspace(-8, 8, 16001, dtype=torch.float64)
    exact = torch.stack([mix.double().log_prob(torch.stack([ci.expand_as(y), y], 1)).max()
                         for ci in c])
    fin = torch.isfinite(r.profile1d[0])
    assert (r.profile1d[0][fin].double() - exact[fin]).abs().max() < 2e-3

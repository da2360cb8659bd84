"""The paper's toy targets (Sec. 4.1) and a full pipeline run on the Gaussian mixture d = 4.

Sizes: the spiral density is checked against a brute-force discretised curve at 200 points
and against adaptive quadrature at and beyond the spiral ends;
the pipeline run uses :meth:`SamplerConfig.reduced` with 40k weighted samples kept for the mode
masses (exact mass 10/14 central, 1/14 per corner; MC error ~0.002).

Bounds on random or iterative results are 5 standard errors computed in the test from the
weights, or the spread over "the runs": seeds of ``run_sampler`` (the target kept; how many is
said at each test) under each of ATEN_CPU_CAPABILITY=default, =avx2 and the native avx512 (1 CPU
thread), as mean +- sd; a bound is |mean| + 5 sd rounded up (to the safe side).
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
    p = s.log_prob(x).exp()
    integral = 16 * float(p.mean())
    # 5 standard errors of the plain MC estimate (~0.0165; seeds 0-7: within 1.8 SE)
    error = 16 * float(p.std()) / math.sqrt(x.shape[0])
    assert integral == pytest.approx(1.0, abs=5 * error)


def test_mixture_definition() -> None:
    for d in (4.0, 10.0):
        m = GaussianMixture(d)
        assert torch.allclose(m.weights, torch.tensor([10, 1, 1, 1, 1]) / 14.0)
        lo, hi = m.ranges[:, 0], m.ranges[:, 1]
        assert float(m.box_mass(lo, hi).sum()) == pytest.approx(1.0, abs=1e-6)
        x = m.sample(20000, generator=torch.Generator().manual_seed(2))
        r = m.responsibilities(x)
        # 5 standard errors std / sqrt(n) (<= 0.0032; seeds 0-7: within 2.9 SE, seed 2 the most)
        error = r.std(0) / math.sqrt(x.shape[0])
        assert bool(((r.mean(0) - m.weights).abs() < 5 * error).all())
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


def _masses_and_errors(mix: GaussianMixture, x: torch.Tensor, w: torch.Tensor):
    """Weighted mode masses and their delta-method standard errors (fresh flow draws):
    ``sqrt(sum_i w_i^2 (r_ik - m_k)^2)`` for normalised weights ``w`` and responsibilities ``r``.
    """
    w = w / w.sum()
    r = mix.double().responsibilities(x.double())
    m = (w[:, None] * r).sum(0)
    return m, torch.sqrt((w[:, None] ** 2 * (r - m) ** 2).sum(0))


def test_mixture_d4_pipeline_finds_all_modes() -> None:
    """Spread over seeds 0-7 x 3 ATEN settings (24 runs)."""
    mix = GaussianMixture(4.0)
    cfg = SamplerConfig.reduced()
    cfg = cfg.replace(sample=cfg.sample.replace(n_batches=2, keep_samples=40_000))
    r = run_sampler(mix, names=["x", "y"], ranges=mix.ranges, config=cfg, seed=2,
                    progress=False, init_scale=mix.init_scale)
    sr = r.sample_result
    w = torch.softmax(sr.samples_log_weight.double(), 0)
    masses, errors = _masses_and_errors(mix, sr.samples, w)
    # every mode found, masses within 5 standard errors (~0.0025) of 10/14 and 1/14 (the 24
    # runs: largest pull of the five 1.7 +- 0.6 (sd), at most 2.7)
    assert bool(((masses - mix.weights.double()).abs() < 5 * errors).all()), (masses, errors)
    # ESS/N over the 24 runs: 0.860 +- 0.017 (sd), at least 0.830
    assert r.sample_result.ess_fraction > 0.77
    # normalised target: log Z = 0 within 5 of its standard errors sqrt(1/ESS - 1/N) (~0.002)
    assert abs(r.sample_result.log_evidence) < 5 * sr.log_evidence_error
    # profile: smooth and equal to the brute-force maximum over y on a fine grid
    c = r.profile_result.centres1d[0].double()
    y = torch.linspace(-8, 8, 16001, dtype=torch.float64)
    exact = torch.stack([mix.double().log_prob(torch.stack([ci.expand_as(y), y], 1)).max()
                         for ci in c])
    fin = torch.isfinite(r.profile_result.profile1d[0])
    # 4.7e-7 on all 24 runs (the float32 target's resolution, and the reference grid's
    # spacing); 1e-5 leaves room for a few float32 ulps more on another machine
    assert (r.profile_result.profile1d[0][fin].double() - exact[fin]).abs().max() < 1e-5


def _toy_config(*, train_batches: int = 30, sample_batches: int = 2, sample_size: int = 20_000,
                hidden: int = 32) -> SamplerConfig:
    """The reduced CPU configuration with a longer pre-training (20 epochs of 2048 points).

    With the reduced default (2 epochs = 8 optimiser steps) the flow starts training without
    having learnt all modes and the variance loss cannot find a dropped mode again (GMM d = 10
    lost a corner for 2 of 3 seeds); 20 epochs found all five for every seed tried (1, 3-5).
    """
    base = SamplerConfig.reduced()
    return base.replace(
        prescale=base.prescale.replace(n_samples=2048, n_steps=200),
        pretrain=base.pretrain.replace(epochs=20),
        flow=base.flow.replace(hidden_features=hidden),
        train=base.train.replace(n_batches=train_batches),
        sample=base.sample.replace(n_batches=sample_batches, batch_size=sample_size,
                                   keep_samples=sample_batches * sample_size),
    )


def _weights(result) -> tuple[torch.Tensor, torch.Tensor]:
    sr = result.sample_result
    return sr.samples.double(), torch.softmax(sr.samples_log_weight.double(), 0)


def test_mixture_d10_pipeline_finds_all_modes() -> None:
    """Paper's d = 10 mixture with the widened initial spread: masses 10/14 and 1/14 each.

    Seed 1: 0.7123, 0.0697, 0.0723, 0.0713, 0.0743; ESS/N 0.94 of 40k (MC error of a corner mass
    ~0.0015). Spread over seeds 0-5 x 3 ATEN settings (18 runs; 9 s each).
    """
    mix = GaussianMixture(10.0)
    r = run_sampler(mix, names=["x", "y"], ranges=mix.ranges, config=_toy_config(), seed=1,
                    progress=False, init_scale=mix.init_scale)
    x, w = _weights(r)
    masses, errors = _masses_and_errors(mix, x, w)
    torch.testing.assert_close(masses, mix.double().mode_masses(x, w))
    # within 5 standard errors (~0.0024; the 18 runs: largest pull of the five 2.0 +- 0.6
    # (sd), at most 3.1)
    assert bool(((masses - mix.weights.double()).abs() < 5 * errors).all()), (masses, errors)
    # ESS/N over the 18 runs: 0.929 +- 0.011 (sd), at least 0.903
    assert r.sample_result.ess_fraction > 0.87


@pytest.mark.slow
@pytest.mark.parametrize(
    ("sigma", "kwargs", "ks_scale", "at_peak"),
    [
        # seeds 1-4 x 3 ATEN settings (12 runs): mass - 1/2 0.006 +- 0.007 (sd), within 1.6 SE;
        # sqrt(ESS) x KS 0.91 +- 0.27 (sd), 0.62-1.62, as for the Kolmogorov law with n = ESS,
        # whose tail P(sqrt(n) D > 2.7) ~ 1e-6 is about the two-sided 5-sd tail (mean + 5 sd
        # is 2.3); ESS/N 0.03-0.09 of 40k; every profile bin at the peak
        (0.007, {}, 2.7, 1.0),
        # seeds 1-3 x 3 ATEN settings (9 runs, 2-4 minutes each): ESS 150-650 of 300k (the
        # flow cannot resolve a width of 0.0005; the weights carry the shape, with an MC error
        # of 0.02-0.04 on the mass); mass within 1.7 SE; sqrt(ESS) x KS 1.18 +- 0.72 (sd), up
        # to 2.86 (native seed 3, KS 0.17: with such heavy weights the distance is wider than
        # the Kolmogorov law says), so the bound is mean + 5 sd = 4.8; every profile bin at the
        # peak, but one can end off the ridge (seen once: 0.04 away, L-BFGS from a start 80
        # sigma off)
        (0.0005, {"train_batches": 100, "sample_batches": 6, "sample_size": 50_000}, 4.8, 0.9),
    ],
)
def test_spirals_pipeline_finds_both_spirals(sigma, kwargs, ks_scale, at_peak) -> None:
    """Both spirals found with equal mass and the arc-length-uniform radial distribution."""
    spirals = TwoSpirals(sigma=sigma)
    r = run_sampler(spirals, names=["x", "y"], ranges=spirals.ranges,
                    config=_toy_config(**kwargs), seed=1, progress=False,
                    init_scale=spirals.init_scale)
    x, w = _weights(r)
    summary = spirals.weighted_summary(x, w)
    # the mass of the positive spiral is 1/2 within 5 delta-method standard errors
    # sqrt(sum w^2 (1_plus - m)^2) of the normalised weights w
    plus = (spirals.branch(x) == 0).double()
    error = float(torch.sqrt((w**2 * (plus - summary["mass_plus"]) ** 2).sum() / w.sum() ** 2))
    assert summary["mass_plus"] == pytest.approx(0.5, abs=5 * error), (summary, error)
    assert summary["mass_near_curve"] > 0.999, summary
    # Kolmogorov distance of the weighted radii: below ks_scale / sqrt(ESS), with
    # ESS = (sum w)^2 / sum w^2
    ess = float(w.sum() ** 2 / (w**2).sum())
    assert summary["ks_radius"] < ks_scale / math.sqrt(ess), (summary, ess)
    # profiles: the exact 1D profile of x is the ridge height wherever a spiral crosses the
    # bin's centre line (every bin with |x| < 1.7); the sampled-and-optimised one must be there
    centres = r.profile_result.centres1d[0].double()
    inside = centres.abs() < 1.7
    peak = -0.5 * math.log(2 * math.pi * sigma**2) - math.log(2 * float(spirals.arc_length))
    values = r.profile_result.profile1d[0].double()[inside]
    assert bool(torch.isfinite(values).all())
    close = (values - peak).abs() < 1.5
    assert float(close.double().mean()) >= at_peak, values - peak

"""Step 4 (histograms, profile start points, ESS) and, with step 5, a 22-dimensional Gaussian.

The Gaussian test uses a Gaussian proposal 1.1 times wider than the target (analytic ESS/N),
4 batches of 50k samples (200k in total), 80 marginal bins over +-5 sigma, 40 1D profile bins and
4x4 2D profile bins (231 pairs, ~4k L-BFGS start points).

Its bounds are standard errors computed in the test, or the spread over "the 24 runs": seeds 0-7
of the sampling generator under each of ATEN_CPU_CAPABILITY=default, =avx2 and the native avx512
(1 CPU thread; the three gave identical draws here), as mean +- sd; a bound is |mean| + 5 sd
rounded up.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from smeft_pyhf.exceptions import ConfigError
from smeft_pyhf.sampler.profiling import ProfileConfig, profile
from smeft_pyhf.sampler.sampling import (
    SampleConfig,
    base_seed,
    bin_centres,
    bin_edges,
    chunk_seed,
    pair_indices,
    sample_and_histogram,
)
from smeft_pyhf.sampler.toys import CorrelatedGaussian, random_covariance

Z68, Z95 = 1.0, 1.959963984540054


def _central_interval(prob: np.ndarray, edges: np.ndarray, level: float) -> tuple[float, float]:
    """Equal-tailed interval from a histogram, the CDF interpolated linearly within bins."""
    cdf = np.concatenate([[0.0], np.cumsum(prob)]) / prob.sum()
    lo = np.interp((1 - level) / 2, cdf, edges)
    hi = np.interp((1 + level) / 2, cdf, edges)
    return float(lo), float(hi)


def _profile_interval(delta: np.ndarray, centres: np.ndarray, threshold: float):
    """Crossings of ``-2 Delta log L = threshold``, interpolating ``sqrt(-2 Delta log L)``
    linearly between bin centres (exact for a Gaussian profile)."""
    q = np.sqrt(np.maximum(-2 * delta, 0.0))
    i0 = int(np.argmin(q))
    t = math.sqrt(threshold)
    left, right = q[: i0 + 1][::-1], q[i0:]
    xl = np.interp(t, left, centres[: i0 + 1][::-1])
    xr = np.interp(t, right, centres[i0:])
    return float(xl), float(xr)


@pytest.fixture(scope="module")
def gaussian22():
    g = torch.Generator().manual_seed(22)
    d = 22
    cov = random_covariance(d, generator=g)
    mean = torch.randn(d, generator=g, dtype=torch.float64)
    target = CorrelatedGaussian(mean, cov)
    scale = 1.1
    proposal = CorrelatedGaussian(mean, cov * scale**2)

    def draw(n: int, generator: torch.Generator | None = None):
        x = proposal.sample(n, generator=generator)
        return x, proposal.log_prob(x)

    cfg = SampleConfig(n_batches=4, batch_size=50_000, profile_bins_2d=4)
    sr = sample_and_histogram(draw, target.log_prob, ranges=target.ranges(5.0), config=cfg,
                              generator=g)
    pr = profile(target.log_prob, sr, config=ProfileConfig(tolerance_grad=1e-7, tolerance_change=0.0))
    return target, scale, sr, pr


def test_gaussian22_ess_and_evidence(gaussian22) -> None:
    target, scale, sr, _ = gaussian22
    d = target.dim
    # E_q[w^2] = prod_k s^2 / sqrt(2 s^2 - 1) for a proposal s times wider than the target
    expect = (math.sqrt(2 * scale**2 - 1) / scale**2) ** d
    assert sr.n_samples == 200_000
    # ESS/N - expected over the 24 runs: 0.0003 +- 0.0007 (sd), at most 0.0017
    assert sr.ess_fraction == pytest.approx(expect, abs=0.005)
    # the target is normalised: 4 standard errors sqrt(1/ESS - 1/N) (the 24 runs: <= 1.2 SE)
    assert abs(sr.log_evidence) < 4 * sr.log_evidence_error + 1e-3
    # outside +-5 sigma: 22 x 2 x Phi(-5) = 1.3e-5 expected; over the 24 runs 1.3e-5 +- 0.4e-5
    # (sd), at most 2.3e-5
    assert sr.outside_fraction < 4e-5


def test_gaussian22_marginal_intervals(gaussian22) -> None:
    target, _, sr, _ = gaussian22
    edges = bin_edges(sr.ranges, 80).numpy()
    mu, sd = target.mean.numpy(), target.std.numpy()
    # quantile MC error at ESS ~ 1.4e5: ~0.004 sigma (68%), ~0.007 sigma (95%), plus binning;
    # the largest deviation of the 44 ends over the 24 runs, in sigma: 68 %: 0.009 +- 0.001
    # (sd), at most 0.011; 95 %: 0.015 +- 0.002, at most 0.019
    for i in range(target.dim):
        prob = sr.marginal1d[i].numpy()
        for z, level, tol in ((Z68, 0.6827, 0.02), (Z95, 0.95, 0.03)):
            lo, hi = _central_interval(prob, edges[i], level)
            assert abs(lo - (mu[i] - z * sd[i])) < tol * sd[i]
            assert abs(hi - (mu[i] + z * sd[i])) < tol * sd[i]
    # the histograms agree with the analytic bin probabilities within their MC errors
    normal = torch.distributions.Normal(target.mean[:, None], target.std[:, None])
    e = torch.as_tensor(edges)
    exact = normal.cdf(e[:, 1:]) - normal.cdf(e[:, :-1])
    err = sr.marginal1d_error
    ok = exact > 1e-3
    pulls = ((sr.marginal1d - exact) / err)[ok]
    # ~1300 bins: the largest |pull| of 1300 normal ones is ~3.3 (the 24 runs: 3.29 +- 0.18
    # (sd)); mean square pull 0.977 +- 0.031 (sd), at most 1.018
    assert float(pulls.abs().max()) < 5
    assert float((pulls**2).mean()) < 1.2


def test_gaussian22_marginal2d_correlations(gaussian22) -> None:
    target, _, sr, _ = gaussian22
    centres = bin_centres(sr.ranges, 40)
    cov = target.covariance
    for p in (0, 57, 230):
        i, j = sr.pairs[p].tolist()
        h = sr.marginal2d[p]
        h = h / h.sum()
        ci, cj = centres[i], centres[j]
        mi, mj = (h.sum(1) * ci).sum(), (h.sum(0) * cj).sum()
        cij = (h * (ci - mi)[:, None] * (cj - mj)[None, :]).sum()
        vi = (h.sum(1) * (ci - mi) ** 2).sum()
        vj = (h.sum(0) * (cj - mj) ** 2).sum()
        rho = float(cij / torch.sqrt(vi * vj))
        rho_true = float(cov[i, j] / torch.sqrt(cov[i, i] * cov[j, j]))
        # largest |rho - true| of the three over the 24 runs: 0.003 +- 0.0015 (sd), <= 0.005
        assert rho == pytest.approx(rho_true, abs=0.02)


def test_gaussian22_profiles_match_analytic(gaussian22) -> None:
    target, _, sr, pr = gaussian22
    d = target.dim
    # the sampled profiles lie below the exact ones; after L-BFGS they are exact
    c1 = pr.centres1d
    for i in range(d):
        exact = target.profile1d(i, c1[i])
        fin = torch.isfinite(pr.profile1d[i])
        assert int(fin.sum()) >= 30  # 40 bins over +-5 sigma, the outer ones may stay empty
        assert bool((sr.profile1d_log_prob[i, :, 0][fin] <= exact[fin] + 1e-9).all())
        assert torch.allclose(pr.profile1d[i][fin], exact[fin], atol=1e-6, rtol=0)
        delta = (pr.profile1d[i] - target.log_norm).numpy()
        delta[~fin.numpy()] = -1e9
        for z in (Z68, Z95):
            lo, hi = _profile_interval(delta, c1[i].numpy(), z**2)
            mu, sd = float(target.mean[i]), float(target.std[i])
            assert abs(lo - (mu - z * sd)) < 1e-4 * sd
            assert abs(hi - (mu + z * sd)) < 1e-4 * sd
    c2 = pr.centres2d
    pairs = sr.pairs
    fin = torch.isfinite(pr.profile2d)
    assert fin.float().mean() > 0.9
    for p in range(pairs.shape[0]):
        i, j = pairs[p].tolist()
        exact = target.profile2d(i, j, c2[i][:, None], c2[j][None, :])
        assert torch.allclose(pr.profile2d[p][fin[p]], exact[fin[p]], atol=1e-6, rtol=0)
    assert pr.best_log_prob == pytest.approx(float(target.log_norm), abs=1e-9)
    assert torch.allclose(pr.best_fit, target.mean, atol=1e-5)


def test_histograms_match_numpy_and_brute_force() -> None:
    g = torch.Generator().manual_seed(0)
    x_all = torch.randn(3000, 3, generator=g, dtype=torch.float64) * torch.tensor([1.0, 2.0, 0.5])
    lw = torch.randn(3000, generator=g, dtype=torch.float64)
    counter = {"i": 0}

    def draw(n: int):
        i = counter["i"]
        counter["i"] += n
        return x_all[i : i + n], -lw[i : i + n]  # log p = 0, so log w = lw

    target = lambda x: torch.zeros(x.shape[0], dtype=x.dtype)  # noqa: E731
    ranges = torch.tensor([[-3.0, 3.0], [-5.0, 4.0], [-1.0, 1.5]], dtype=torch.float64)
    cfg = SampleConfig(n_batches=3, batch_size=1000, bins_1d=7, bins_2d=5, profile_bins_1d=4,
                       profile_bins_2d=3, keep_samples=1500)
    sr = sample_and_histogram(draw, target, ranges=ranges, config=cfg)
    w = torch.exp(lw).numpy()
    x = x_all.numpy()
    r = ranges.numpy()
    for i in range(3):
        h, _ = np.histogram(x[:, i], bins=7, range=tuple(r[i]), weights=w)
        np.testing.assert_allclose(sr.marginal1d[i].numpy(), h / w.sum(), rtol=1e-10,
                                   atol=1e-14)
    for p, (i, j) in enumerate(pair_indices(3).tolist()):
        h, _, _ = np.histogram2d(x[:, i], x[:, j], bins=5, range=[r[i], r[j]], weights=w)
        np.testing.assert_allclose(sr.marginal2d[p].numpy(), h / w.sum(), rtol=1e-10,
                                   atol=1e-14)
    assert sr.ess == pytest.approx(w.sum() ** 2 / (w**2).sum(), rel=1e-10)
    assert sr.log_evidence == pytest.approx(math.log(w.mean()), rel=1e-10)
    assert sr.samples.shape == (1500, 3)
    assert torch.allclose(sr.samples_log_weight, lw[:1500])
    assert int(sr.weight_histogram.sum()) == 3000


def test_profile_points_are_the_best_recentred_points() -> None:
    g = torch.Generator().manual_seed(1)

    def target(x):
        return -0.5 * (x**2).sum(-1) - 0.3 * x[:, 0] * x[:, 1]

    def draw(n, generator=None):
        x = 1.5 * torch.randn(n, 2, generator=generator, dtype=torch.float64)
        return x, torch.zeros(n, dtype=torch.float64)

    ranges = torch.tensor([[-3.0, 3.0], [-3.0, 3.0]], dtype=torch.float64)
    cfg = SampleConfig(n_batches=1, batch_size=4000, profile_bins_1d=6, profile_bins_2d=4,
                       n_best=2)
    sr = sample_and_histogram(draw, target, ranges=ranges, config=cfg, generator=g)
    # the one chunk's samples: its generator is seeded by (one draw from g, chunk 0)
    seed0 = chunk_seed(base_seed(torch.Generator().manual_seed(1)), 0)
    x, _ = draw(4000, generator=torch.Generator().manual_seed(seed0))
    lp = target(x)
    centres = bin_centres(ranges, 6)
    for i in range(2):
        b = torch.floor((x[:, i] + 3) / 1.0).long()
        for k in range(6):
            sel = b == k
            best = x[sel][torch.argmax(lp[sel])].clone()
            best[i] = centres[i, k]
            assert torch.allclose(sr.profile1d_points[i, k, 0], best)
            assert float(sr.profile1d_log_prob[i, k, 0]) == pytest.approx(
                float(target(best[None])[0]))
            # one batch gives one candidate per bin: the second slot is empty
            assert sr.profile1d_log_prob[i, k, 1] == -math.inf


def test_large_log_weights_are_stable() -> None:
    g = torch.Generator().manual_seed(3)

    def draw(n, generator=None):
        x = torch.randn(n, 2, generator=generator)
        return x, -0.5 * (x**2).sum(-1)

    base = SampleConfig(n_batches=3, batch_size=2000, histograms_2d=False)
    ranges = torch.tensor([[-4.0, 4.0], [-4.0, 4.0]])
    a = sample_and_histogram(draw, lambda x: -0.5 * (x**2).sum(-1), ranges=ranges,
                             config=base, generator=torch.Generator().manual_seed(3))
    b = sample_and_histogram(draw, lambda x: -0.5 * (x**2).sum(-1) + 5000.0, ranges=ranges,
                             config=base, generator=g)
    assert torch.allclose(a.marginal1d, b.marginal1d, atol=1e-6)
    assert b.log_evidence == pytest.approx(a.log_evidence + 5000.0, abs=1e-2)
    assert b.marginal2d.shape == (0, 40, 40)


def test_config_validation() -> None:
    with pytest.raises(ConfigError):
        SampleConfig(bins_1d=0)
    with pytest.raises(ConfigError):
        sample_and_histogram(lambda n: (torch.zeros(n, 1), torch.zeros(n)), lambda x: x[:, 0],
                             ranges=torch.tensor([[1.0, 0.0]]))
    assert SampleConfig.paper("higgs").n_batches == 2000
    assert SampleConfig().n_samples == 10_000_000

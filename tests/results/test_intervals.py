"""Interval helpers on analytic Gaussians (exact numbers)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import ndtr

from smeft_pyhf.exceptions import ConfigError
from smeft_pyhf.formats.intervals import DELTA_CHI2_1D, DELTA_CHI2_2D, PROBABILITY, as_level
from smeft_pyhf.results.intervals import (
    delta_chi2_threshold,
    hdi_density_level,
    marginalised_interval,
    profiled_interval,
)


def test_thresholds_match_chi2_quantiles():
    assert DELTA_CHI2_1D["95"] == pytest.approx(1.959963984540054**2, rel=1e-12)
    assert delta_chi2_threshold("68") == pytest.approx(1.0, rel=1e-9)
    assert delta_chi2_threshold("95", dof=2) == pytest.approx(DELTA_CHI2_2D["95"], rel=1e-9)
    assert DELTA_CHI2_2D["68"] == pytest.approx(-2 * math.log(1 - 0.6826894921370859), rel=1e-9)


@pytest.mark.parametrize(("mu", "sigma"), [(0.0, 1.0), (0.3, 0.05), (-2.0, 1.7)])
def test_profiled_gaussian(mu, sigma):
    x = np.linspace(mu - 6 * sigma, mu + 6 * sigma, 40)
    y = ((x - mu) / sigma) ** 2
    for level, z in (("68", 1.0), ("95", 1.959963984540054)):
        iv = profiled_interval(x, y, level=level)
        assert len(iv.segments) == 1
        # linear interpolation of a parabola between centres 0.31 sigma apart
        assert iv.low == pytest.approx(mu - z * sigma, abs=0.01 * sigma)
        assert iv.high == pytest.approx(mu + z * sigma, abs=0.01 * sigma)
        assert not iv.open_low and not iv.open_high


def test_profiled_flat_top_and_open_edges():
    # SFitter-like flat profile of width 1 with Gaussian walls of width 0.1
    x = np.linspace(-3, 3, 601)
    y = (np.clip(np.abs(x) - 1.0, 0, None) / 0.1) ** 2
    iv = profiled_interval(x, y, level="95")
    assert iv.low == pytest.approx(-1.196, abs=2e-3)
    assert iv.high == pytest.approx(1.196, abs=2e-3)
    half = profiled_interval(x[x > 0], y[x > 0], level="68")
    assert half.open_low and not half.open_high


def test_profiled_two_modes_and_empty_bins():
    x = np.linspace(-4, 4, 801)
    y = np.minimum((x - 2) ** 2, (x + 2) ** 2) / 0.25
    y[::50] = np.inf  # empty bins are ignored by neighbours' interpolation only locally
    iv = profiled_interval(x, np.where(np.isfinite(y), y, np.nan), level="68")
    assert len(iv.segments) >= 2
    assert iv.low == pytest.approx(-2.5, abs=0.02)
    assert iv.high == pytest.approx(2.5, abs=0.02)


@pytest.mark.parametrize("level", ["68", "95"])
def test_marginalised_gaussian_hdi_and_central(level):
    mu, sigma = 0.4, 0.8
    edges = np.linspace(mu - 5 * sigma, mu + 5 * sigma, 81)
    centres = 0.5 * (edges[1:] + edges[:-1])
    prob = np.diff(ndtr((edges - mu) / sigma))  # exact bin probabilities
    z = 1.0 if level == "68" else 1.959963984540054
    for kind in ("hdi", "central"):
        iv = marginalised_interval(centres, prob, level=level, kind=kind)
        assert iv.low == pytest.approx(mu - z * sigma, abs=0.01 * sigma), kind
        assert iv.high == pytest.approx(mu + z * sigma, abs=0.01 * sigma), kind


def test_marginalised_hdi_is_shorter_than_central_for_skewed():
    x = np.linspace(0.0, 10.0, 200)
    p = x * np.exp(-x)  # Gamma(2)
    hdi = marginalised_interval(x, p, level="95")
    central = marginalised_interval(x, p, level="95", kind="central")
    assert hdi.width < central.width
    # exact central interval of Gamma(2, 1): quantiles 0.0242 and 5.572
    assert central.low == pytest.approx(0.2422, abs=0.02)
    assert central.high == pytest.approx(5.5716, abs=0.03)


def test_marginalised_bimodal_gives_two_segments():
    x = np.linspace(-6, 6, 241)
    p = np.exp(-0.5 * ((x - 3) / 0.5) ** 2) + np.exp(-0.5 * ((x + 3) / 0.5) ** 2)
    spiked = p.copy()
    spiked[120] = 0.5  # one bin in the gap above the level: noise, not a third mode
    for density in (p, spiked):
        iv = marginalised_interval(x, density, level="95")
        assert len(iv.segments) == 2
        for (a, b), m in zip(iv.segments, (-3, 3), strict=True):
            assert a == pytest.approx(m - 1.96 * 0.5, abs=0.02)
            assert b == pytest.approx(m + 1.96 * 0.5, abs=0.02)


def test_hdi_density_level_2d_gaussian():
    # 2D standard normal: the 68.27% HPD region is chi2_2 < 2.2957
    g = np.linspace(-5, 5, 201)
    xx, yy = np.meshgrid(g, g, indexing="ij")
    density = np.exp(-0.5 * (xx**2 + yy**2))
    level = hdi_density_level(density, PROBABILITY["68"])
    assert -2 * math.log(level) == pytest.approx(DELTA_CHI2_2D["68"], rel=0.02)
    level95 = hdi_density_level(density, PROBABILITY["95"])
    assert -2 * math.log(level95) == pytest.approx(DELTA_CHI2_2D["95"], rel=0.02)


def test_empty_inputs():
    x = np.linspace(0, 1, 5)
    assert profiled_interval(x, np.full(5, np.inf)).segments == ()
    assert marginalised_interval(x, np.zeros(5)).segments == ()


def test_one_level_spelling_inside_one_converter_at_the_boundary():
    for spelling in ("68", "68%", " 68 %", 68, 0.68):
        assert as_level(spelling) == "68"
    for spelling in ("95", "95%", 95, 0.95):
        assert as_level(spelling) == "95"
    for bad in ("90", 0.9, "one sigma"):
        with pytest.raises(ConfigError, match="unknown confidence level"):
            as_level(bad)
    x = np.linspace(-3, 3, 61)
    iv = profiled_interval(x, x**2, level="68")
    assert iv.level == "68" and iv.threshold == 1.0


def _flat_tail_model(outside: float = 0.0):
    """Density 0.93 N(0, 1) + 0.07 triangle(1, 1, 5): one mode with a long upper tail, and the
    exact 95% highest-density interval (level h with f(a) = f(b) = h) when a further mass
    ``outside`` (relative to 1) sits beyond it."""
    from scipy.optimize import brentq
    from scipy.stats import norm

    def density(x):
        return 0.93 * norm.pdf(x) + 0.07 * np.where((x >= 1) & (x <= 5), (5 - x) / 8, 0.0)

    def cdf(x):
        return 0.93 * norm.cdf(x) + 0.07 * np.clip(1 - (5 - np.clip(x, 1, 5)) ** 2 / 16, 0, 1)

    def ends(h):
        a = -math.sqrt(-2 * math.log(h / (0.93 * norm.pdf(0.0))))  # left of 1: Gaussian only
        b = brentq(lambda x: density(x) - h, 0.0, 5.0)
        return a, b

    mass = PROBABILITY["95"] * (1 + outside)
    h = brentq(lambda h: cdf(ends(h)[1]) - cdf(ends(h)[0]) - mass, 1e-3, 0.3)
    return density, ends(h)


def test_marginalised_tail_end_within_quantile_noise_and_not_moved_by_one_heavy_bin():
    """Histograms of equal-weight samples: the HDI ends stay within the quantile noise of the
    exact ends. One bin far out in the tail lifted above the density level (what a single heavy
    importance weight does) adds its mass to the tail but is no second mode: the interval stays
    one piece, with the exact end of the density plus that mass."""
    n = 200_000
    edges = np.linspace(-4.5, 5.5, 81)
    centres = 0.5 * (edges[1:] + edges[:-1])
    rng = np.random.default_rng(11)
    spike_bin = int(np.searchsorted(edges, 4.0)) - 1
    for replica in range(10):
        gauss = rng.random(n) < 0.93
        x = np.where(gauss, rng.standard_normal(n), rng.triangular(1, 1, 5, n))
        counts = np.histogram(x, edges)[0].astype(float)
        spike = 0.0
        if replica % 2:  # the tail bin at x = 4 raised to 1.5 times the level's count
            density, (_, b0) = _flat_tail_model()
            spike = 1.5 * density(b0) * (edges[1] - edges[0]) * n - counts[spike_bin]
            counts[spike_bin] += spike
        density, (a, b) = _flat_tail_model(outside=spike / n)
        tail = 1 - 0.93 * ndtr(a) - PROBABILITY["95"]  # mass of the density above b
        noise = math.sqrt(tail * (1 - tail) / n) / density(b)
        iv = marginalised_interval(centres, counts, level="95")
        assert len(iv.segments) == 1, iv
        assert iv.low == pytest.approx(a, abs=0.03)
        assert iv.high == pytest.approx(b, abs=4 * noise + 0.02), (replica, iv.high, b, noise)

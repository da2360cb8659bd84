"""Toy targets of the paper (Sec. 4.1) and a correlated Gaussian with known answers.

All targets are :class:`torch.nn.Module` s with a batched, differentiable, normalised
``log_prob(x: (B, d)) -> (B,)`` (also their ``forward``), exact sampling ``sample(n, generator=)``
and default histogram ``ranges``; constants are buffers, so ``.to(device, dtype)`` moves them.

* :class:`TwoSpirals`: two concentric spirals ``(r, phi) = +-(t, 2 pi t)``, ``t in [0.36, 1.93]``,
  eq. (32), uniform along the arc length and smeared with a Gaussian of width ``sigma``
  (paper: 0.007 and 0.0005). The smearing integral is evaluated exactly up to quadrature: for
  every branch and winding the foot point on the curve is found by Newton's method and the
  Gaussian is integrated along the curve with 31-node Gauss-Legendre over +-7 sigma around it,
  cut exactly at the curve's ends; past an end the integral along the end's tangent is done
  analytically (checked against adaptive quadrature to 0.01 in log p, also at the ends).
* :class:`GaussianMixture`: eq. (33), ``p(x) ~ 10 N(0, 1) + sum_{+-d, +-d} N((+-d, +-d), 0.5)``
  in two dimensions with isotropic widths; each component is normalised, so the central peak
  holds 10/14 of the mass and each corner 1/14 (paper: ``d = 4`` and ``d = 10``; for ``d = 10``
  the paper widens the initial pre-scaling spread, see :attr:`GaussianMixture.init_scale`).
  ``width_factor`` scales all widths (the paper's "narrower by a factor of ten" is 0.1).
* :class:`CorrelatedGaussian`: a multivariate normal with known mean and covariance, whose
  marginal and profile intervals are analytic.

Example:
    >>> import torch
    >>> from smeft_pyhf.sampler.toys import GaussianMixture, TwoSpirals
    >>> mix = GaussianMixture(spacing=4.0)
    >>> [round(float(w), 4) for w in mix.weights]
    [0.7143, 0.0714, 0.0714, 0.0714, 0.0714]
    >>> spirals = TwoSpirals(sigma=0.007)
    >>> x = spirals.sample(4, generator=torch.Generator().manual_seed(0))
    >>> spirals.log_prob(x).shape
    torch.Size([4])

References:
    | Five steps to happiness: ML likelihood sampling for global SMEFT analyses (arXiv:2411.00942),
    | Sec. 4.1, eqs. (32)-(33), Figs. 1-2. https://arxiv.org/abs/2411.00942
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["CorrelatedGaussian", "GaussianMixture", "TwoSpirals", "random_covariance"]

_TWO_PI = 2.0 * math.pi


def _arc(t: Tensor) -> Tensor:
    """Arc length of ``t (cos 2 pi t, sin 2 pi t)`` from 0 to ``t``."""
    u = _TWO_PI * t
    return (u * torch.sqrt(1 + u * u) + torch.asinh(u)) / (2 * _TWO_PI)


class TwoSpirals(nn.Module):
    """Two concentric spirals smeared by a Gaussian of width ``sigma`` (paper eq. 32).

    Args:
        sigma: Gaussian width (paper: 0.007 and 0.0005).
        t_range: the curve parameter range (paper: 0.36 to 1.93).
        nodes: quadrature nodes per winding for the smearing integral.

    Attributes:
        init_scale: a pre-scaling base width that covers the spirals (1.0).

    Example:
        >>> s = TwoSpirals(sigma=0.007)
        >>> round(float(s.arc_length), 3)
        11.427
    """

    init_scale = 1.0

    def __init__(self, sigma: float = 0.007, *, t_range: tuple[float, float] = (0.36, 1.93),
                 nodes: int = 31) -> None:
        super().__init__()
        self.sigma = float(sigma)
        self.t0, self.t1 = map(float, t_range)
        self.nodes = int(nodes)
        t = torch.tensor([self.t0, self.t1], dtype=torch.float64)
        length = _arc(t[1:]) - _arc(t[:1])
        self.register_buffer("arc_length", length[0])
        nodes_, weights_ = np.polynomial.legendre.leggauss(self.nodes)
        self.register_buffer("gl_nodes", torch.as_tensor(nodes_, dtype=torch.float64))
        self.register_buffer("gl_log_weights", torch.as_tensor(np.log(weights_), dtype=torch.float64))
        self.register_buffer("ranges", torch.tensor([[-2.0, 2.0], [-2.0, 2.0]]))

    @staticmethod
    def _curve(t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Point, first and second derivative of the positive branch at ``t``."""
        c, s = torch.cos(_TWO_PI * t), torch.sin(_TWO_PI * t)
        w = _TWO_PI
        pos = torch.stack([t * c, t * s], -1)
        d1 = torch.stack([c - w * t * s, s + w * t * c], -1)
        d2 = torch.stack([-2 * w * s - w * w * t * c, 2 * w * c - w * w * t * s], -1)
        return pos, d1, d2

    def _branch(self, x: Tensor) -> Tensor:
        """(B, windings * nodes) log-terms of the positive branch (float64)."""
        theta = torch.atan2(x[:, 1], x[:, 0])
        k = torch.arange(3, dtype=x.dtype, device=x.device)
        t = (theta[:, None] / _TWO_PI + k).detach()  # (B, 3) radial crossings, one per winding
        xd = x.detach()[:, None, :]
        for _ in range(3):  # Newton on |x - gamma(t)|^2 / 2 for the foot point
            pos, d1, d2 = self._curve(t)
            r = pos - xd
            h = (r * d1).sum(-1)
            hp = (d1 * d1).sum(-1) + (r * d2).sum(-1)
            step = torch.where(hp > 0, h / hp.clamp_min(1e-12), torch.zeros_like(h))
            t = t - step.clamp(-0.05, 0.05)
        below, above = t < self.t0, t > self.t1  # foot point beyond an end of the curve
        t = t.clamp(self.t0, self.t1)
        speed = torch.sqrt(1 + (_TWO_PI * t) ** 2)
        half = (self.sigma / speed)  # (B, 3): one sigma in t
        # Gauss-Legendre over +-7 sigma around the foot point, cut exactly at the curve's ends
        lo = (t - 7.0 * half).clamp(min=self.t0)
        hi = (t + 7.0 * half).clamp(max=self.t1)
        tj = (0.5 * (lo + hi))[..., None] + (0.5 * (hi - lo))[..., None] * self.gl_nodes.to(x)
        log_w = torch.log(0.5 * (hi - lo).clamp_min(1e-300))[..., None] + self.gl_log_weights.to(x)
        pos, d1, _ = self._curve(tj)
        d2 = ((x[:, None, None, :] - pos) ** 2).sum(-1)
        logn = -0.5 * d2 / self.sigma**2 - math.log(_TWO_PI * self.sigma**2)
        term = logn + torch.log(torch.linalg.vector_norm(d1, dim=-1)) + log_w
        # Beyond an end the integrand falls off along the curve on the scale sigma^2 / distance,
        # far below the node spacing: integrate the Gaussian along the end's tangent half-line
        # analytically instead, log N_perp + log Phi(along / sigma) (exact for a straight end).
        end_pos, end_d1, _ = self._curve(t)
        tangent = end_d1 / torch.linalg.vector_norm(end_d1, dim=-1, keepdim=True)
        tangent = torch.where(above[..., None], -tangent, tangent)  # pointing into the curve
        offset = x[:, None, :] - end_pos
        along = (offset * tangent).sum(-1)
        perp2 = ((offset * offset).sum(-1) - along * along).clamp_min(0.0)
        end = (-0.5 * perp2 / self.sigma**2 - 0.5 * math.log(_TWO_PI * self.sigma**2)
               + torch.special.log_ndtr(along / self.sigma))
        # (a foot point beyond the end whose point lies ahead along the tangent belongs to
        # another winding: the half-line is no approximation of the curve there)
        beyond = ((below | above) & (along < 0))[..., None]
        first = torch.zeros_like(term, dtype=torch.bool)
        first[..., 0] = True
        term = torch.where(beyond, torch.where(first, end[..., None], -math.inf), term)
        return term.reshape(x.shape[0], 3 * self.nodes)

    def log_prob(self, x: Tensor) -> Tensor:
        """Normalised ``log p(x)`` for ``x`` of shape (B, 2), in the dtype of ``x``.

        Computed in float64 internally (the narrow spiral needs it).
        """
        xd = x.to(torch.float64)
        terms = torch.cat([self._branch(xd), self._branch(-xd)], dim=1)
        out = torch.logsumexp(terms, dim=1) - torch.log(2 * self.arc_length.to(xd))
        return out.to(x.dtype)

    def forward(self, x: Tensor) -> Tensor:
        """Same as :meth:`log_prob`."""
        return self.log_prob(x)

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """Exact samples: arc-length-uniform ``t`` (inverse CDF), a random branch, Gaussian smear."""
        dev, dt = self.arc_length.device, self.ranges.dtype
        grid = torch.linspace(self.t0, self.t1, 20001, dtype=torch.float64, device=dev)
        cdf = (_arc(grid) - _arc(grid[:1])) / self.arc_length
        u = torch.rand(n, generator=generator, dtype=torch.float64, device=dev)
        i = torch.searchsorted(cdf, u).clamp(1, grid.numel() - 1)
        frac = (u - cdf[i - 1]) / (cdf[i] - cdf[i - 1])
        t = grid[i - 1] + frac * (grid[i] - grid[i - 1])
        pos, _, _ = self._curve(t)
        sign = torch.where(torch.rand(n, generator=generator, dtype=torch.float64, device=dev)
                           < 0.5, -1.0, 1.0)
        noise = torch.randn(n, 2, generator=generator, dtype=torch.float64, device=dev)
        return (sign[:, None] * pos + self.sigma * noise).to(dt)

    def weighted_summary(self, x: Tensor, weights: Tensor) -> dict[str, float]:
        """Checks of weighted samples against the truth.

        Returns ``mass_plus`` (weight on the positive spiral; truth 1/2), ``mass_near_curve``
        (weight within about 5 sigma of either curve; truth ~1) and ``ks_radius``, the
        Kolmogorov distance between the weighted distribution of the radius (which equals the
        curve parameter ``t``) and the exact arc-length-uniform one.

        Example:
            >>> s = TwoSpirals(sigma=0.007)
            >>> x = s.sample(20000, generator=torch.Generator().manual_seed(0))
            >>> summary = s.weighted_summary(x, torch.ones(len(x)))
            >>> abs(summary["mass_plus"] - 0.5) < 0.02, summary["ks_radius"] < 0.02
            (True, True)
        """
        xd, w = x.to(torch.float64), weights.to(torch.float64)
        w = w / w.sum()
        plus, minus = self._spiral_terms(xd)
        # log p of the nearer spiral relative to the peak of a line density: -d^2 / 2 sigma^2
        peak = -0.5 * math.log(_TWO_PI * self.sigma**2)
        near = torch.maximum(plus, minus) > peak - 12.5
        r = xd.norm(dim=1).clamp(self.t0, self.t1)
        order = torch.argsort(r)
        cdf = torch.cumsum(w[order], 0)
        exact = (_arc(r[order]) - _arc(torch.tensor([self.t0], dtype=torch.float64,
                                                     device=r.device))) / float(self.arc_length)
        return {
            "mass_plus": float(w[minus <= plus].sum()),
            "mass_near_curve": float(w[near].sum()),
            "ks_radius": float((cdf - exact).abs().max()),
        }

    def _spiral_terms(self, xd: Tensor) -> tuple[Tensor, Tensor]:
        """(B,) unnormalised log densities of the positive and the negative spiral (float64)."""
        return torch.logsumexp(self._branch(xd), 1), torch.logsumexp(self._branch(-xd), 1)

    def branch(self, x: Tensor) -> Tensor:
        """(B,) 0 for points attributed to the positive spiral, 1 for the negative one."""
        plus, minus = self._spiral_terms(x.to(torch.float64))
        return (minus > plus).long()


class GaussianMixture(nn.Module):
    """The paper's 2D Gaussian mixture, eq. (33): a central peak and four corner peaks.

    Args:
        spacing: ``d``, the corner positions ``(+-d, +-d)`` (paper: 4 and 10).
        width_factor: scales all widths (1: central 1.0, corners 0.5).
        central_weight: weight of the central peak relative to one corner (paper: 10).

    Attributes:
        init_scale: the pre-scaling base width. The paper starts from the width of the central
            peak for ``d = 4`` and widens the initial spread for ``d = 10``; we use 1 for
            ``d < 8`` and ``d / 2`` beyond.

    Example:
        >>> mix = GaussianMixture(spacing=10.0)
        >>> mix.init_scale
        5.0
        >>> mix.ranges.tolist()
        [[-13.0, 13.0], [-13.0, 13.0]]
    """

    def __init__(self, spacing: float = 4.0, *, width_factor: float = 1.0,
                 central_weight: float = 10.0) -> None:
        super().__init__()
        self.spacing = float(spacing)
        d = self.spacing
        means = torch.tensor([[0.0, 0.0], [d, d], [d, -d], [-d, d], [-d, -d]])
        sig = torch.tensor([1.0, 0.5, 0.5, 0.5, 0.5]) * width_factor
        w = torch.tensor([central_weight, 1.0, 1.0, 1.0, 1.0])
        self.register_buffer("means", means)
        self.register_buffer("sigmas", sig)
        self.register_buffer("weights", w / w.sum())
        half = d + 6 * float(sig[1]) if d > 0 else 5.0 * float(sig[0])
        half = max(half, 5.0 * float(sig[0]))
        self.register_buffer("ranges", torch.tensor([[-half, half], [-half, half]]))
        self.init_scale = 1.0 if d < 8 else d / 2

    def component_log_prob(self, x: Tensor) -> Tensor:
        """(B, 5) ``log(pi_k N_k(x))`` for the central peak and the corners in ``means`` order."""
        diff = x[:, None, :] - self.means.to(x)
        sig = self.sigmas.to(x)
        logn = -0.5 * (diff**2).sum(-1) / sig**2 - torch.log(_TWO_PI * sig**2)
        return logn + torch.log(self.weights.to(x))

    def log_prob(self, x: Tensor) -> Tensor:
        """Normalised ``log p(x)`` for ``x`` of shape (B, 2)."""
        return torch.logsumexp(self.component_log_prob(x), dim=1)

    def forward(self, x: Tensor) -> Tensor:
        """Same as :meth:`log_prob`."""
        return self.log_prob(x)

    def responsibilities(self, x: Tensor) -> Tensor:
        """(B, 5) posterior component probabilities; their mean under ``p`` is ``weights``."""
        return torch.softmax(self.component_log_prob(x), dim=1)

    def mode_masses(self, x: Tensor, weights: Tensor) -> Tensor:
        """(5,) weighted mass of each mode (truth: :attr:`weights`).

        Example:
            >>> mix = GaussianMixture(10.0)
            >>> x = mix.sample(40000, generator=torch.Generator().manual_seed(1))
            >>> bool(torch.allclose(mix.mode_masses(x, torch.ones(len(x))), mix.weights, atol=0.01))
            True
        """
        w = weights.to(self.means.dtype)
        return (w[:, None] * self.responsibilities(x.to(self.means.dtype))).sum(0) / w.sum()

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """Exact samples from the mixture."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        eps = torch.randn(n, 2, generator=generator, dtype=self.means.dtype,
                          device=self.means.device)
        return self.means[k] + self.sigmas[k, None] * eps

    def box_mass(self, low: Tensor, high: Tensor) -> Tensor:
        """(5,) mass of each weighted component inside the box ``[low, high]`` (2,)."""
        normal = torch.distributions.Normal(0.0, 1.0)
        a = (low.to(self.means) - self.means) / self.sigmas[:, None]
        b = (high.to(self.means) - self.means) / self.sigmas[:, None]
        return self.weights * (normal.cdf(b) - normal.cdf(a)).prod(-1)


def random_covariance(dim: int, *, generator: torch.Generator | None = None,
                      dtype: torch.dtype = torch.float64, correlation: float = 0.6,
                      scales: tuple[float, float] = (0.2, 3.0)) -> Tensor:
    """A random (dim, dim) covariance with sizeable correlations and widths spread over ``scales``.

    Example:
        >>> c = random_covariance(4, generator=torch.Generator().manual_seed(0))
        >>> bool((torch.linalg.eigvalsh(c) > 0).all())
        True
    """
    a = torch.randn(dim, dim, generator=generator, dtype=dtype)
    m = correlation * (a @ a.T) / dim + (1 - correlation) * torch.eye(dim, dtype=dtype)
    d = torch.sqrt(torch.diagonal(m))
    corr = m / d[:, None] / d[None, :]
    lo, hi = scales
    s = torch.exp(torch.empty(dim, dtype=dtype).uniform_(math.log(lo), math.log(hi),
                                                         generator=generator))
    return corr * s[:, None] * s[None, :]


class CorrelatedGaussian(nn.Module):
    """A normalised multivariate normal with known mean and covariance.

    Marginal and profile likelihoods are both Gaussian with the marginal widths
    ``sqrt(diag(covariance))``; the 2D profile of ``(i, j)`` is the quadratic form of the inverse
    2x2 sub-covariance.

    Example:
        >>> g = CorrelatedGaussian(torch.zeros(2), torch.eye(2))
        >>> round(float(g.log_prob(torch.zeros(1, 2))[0]), 4)
        -1.8379
    """

    def __init__(self, mean: Tensor, covariance: Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean.clone())
        self.register_buffer("covariance", covariance.clone())
        chol = torch.linalg.cholesky(covariance)
        self.register_buffer("chol", chol)
        self.register_buffer("precision", torch.cholesky_inverse(chol))
        self.register_buffer("log_norm", -torch.log(torch.diagonal(chol)).sum()
                             - 0.5 * mean.numel() * math.log(_TWO_PI))

    @property
    def dim(self) -> int:
        """Number of dimensions."""
        return self.mean.numel()

    @property
    def std(self) -> Tensor:
        """Marginal standard deviations."""
        return torch.sqrt(torch.diagonal(self.covariance))

    def ranges(self, nsigma: float = 5.0) -> Tensor:
        """(d, 2) ``mean +- nsigma * std``."""
        return torch.stack([self.mean - nsigma * self.std, self.mean + nsigma * self.std], 1)

    def log_prob(self, x: Tensor) -> Tensor:
        """Normalised ``log p(x)`` for ``x`` of shape (B, d)."""
        r = x - self.mean.to(x)
        return -0.5 * ((r @ self.precision.to(x)) * r).sum(-1) + self.log_norm.to(x)

    def forward(self, x: Tensor) -> Tensor:
        """Same as :meth:`log_prob`."""
        return self.log_prob(x)

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """Exact samples."""
        eps = torch.randn(n, self.dim, generator=generator, dtype=self.mean.dtype,
                          device=self.mean.device)
        return self.mean + eps @ self.chol.T

    def profile1d(self, i: int, values: Tensor) -> Tensor:
        """Analytic 1D profile ``max log p`` with coefficient ``i`` fixed at ``values``."""
        v = (values - self.mean[i]) / self.std[i]
        return self.log_norm - 0.5 * v * v

    def profile2d(self, i: int, j: int, a: Tensor, b: Tensor) -> Tensor:
        """Analytic 2D profile with ``(x_i, x_j) = (a, b)`` (broadcast)."""
        sub = self.covariance[[i, j]][:, [i, j]]
        prec = torch.linalg.inv(sub)
        u, v = a - self.mean[i], b - self.mean[j]
        q = prec[0, 0] * u * u + 2 * prec[0, 1] * u * v + prec[1, 1] * v * v
        return self.log_norm - 0.5 * q

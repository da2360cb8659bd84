"""Gaussian measurements with flat (box) theory uncertainties, as a torch module.

For data ``d`` (N,), predictions ``p`` (B, N) and covariance ``V`` (N, N) the term is

    -2 log L = r_eff^T V^-1 r_eff,    r = d - p,

evaluated as ``|r_eff L^-T|^2`` with the Cholesky factor ``V = L L^T`` computed once and kept as a
buffer (``torch.linalg.solve_triangular``; no explicit inverse in the hot path).

Flat theory uncertainties with half-widths ``s`` (N,) (the half-widths of all theory categories
of one observable added linearly, times ``scale_theory``) enter as an element-wise map
``r -> r_eff``:

* ``"profiled"`` (SFitter, paper eq. 4): the prediction moves towards the data by up to ``s``,
  ``r_eff = sign(r) max(|r| - s, 0)``. This is the exact profile over box nuisances for an
  uncorrelated ``V``; for correlated ``V`` it is the SFitter prescription (each observable is
  shifted on its own, then the correlated Gaussian is evaluated).
* ``"marginalised"``: the Gaussian convolved with a box of half-width ``s``. For one observable
  of width ``sigma`` this is exact and closed form,
  ``L(r) = [Phi((r + s)/sigma) - Phi((r - s)/sigma)] / 2s``. For a correlated ``V`` the box
  integral has no closed form, so we use the *equivalent-residual* approximation:
  ``r_eff_i = sign(r_i) sigma_i sqrt(-2 log(L_i(r_i) / L_i(0)))`` with ``sigma_i = sqrt(V_ii)``,
  then the correlated form ``r_eff^T V^-1 r_eff``. It is exact for a diagonal ``V`` (up to a
  constant), equals the plain Gaussian for ``s = 0``, and is smooth (the small-``r`` limit uses
  the analytic curvature). Log-probabilities use ``log_ndtr`` differences, stable for large ``|r|``.
* ``"none"``: widths ignored (plain Gaussian).

Correlated flat theory uncertainties are also available as explicit nuisance parameters
``theta_k`` in ``[-1, 1]`` (flat prior) with shifts ``p_i -> p_i + sum_k theta_k S_ik``; the
parameters are passed to :meth:`GaussianTerm.chi2` and a steep quadratic wall outside ``[-1, 1]``
keeps the gradient finite.

Example:
    >>> import torch
    >>> term = GaussianTerm(torch.tensor([1.0]), torch.tensor([[0.25]]))
    >>> term.chi2(torch.tensor([[1.5], [1.0]]))
    tensor([1., 0.])
"""

from __future__ import annotations

import logging
import math
from typing import Literal

import torch
from torch import Tensor, nn

from smeft_pyhf.exceptions import ConfigError, DataError

__all__ = ["THEORY_MODES", "GaussianTerm", "TheoryMode", "box_residual", "profiled_residual"]

log = logging.getLogger(__name__)

TheoryMode = Literal["none", "profiled", "marginalised"]
THEORY_MODES: tuple[str, ...] = ("none", "profiled", "marginalised")
_WALL_WIDTH = 1e-2


def profiled_residual(r: Tensor, width: Tensor) -> Tensor:
    """SFitter profiled residual ``sign(r) max(|r| - width, 0)``.

    Example:
        >>> import torch
        >>> profiled_residual(torch.tensor([-2.0, 0.5, 3.0]), torch.tensor([1.0, 1.0, 1.0]))
        tensor([-1.,  0.,  2.])
    """
    return torch.sign(r) * torch.relu(r.abs() - width)


def box_residual(r: Tensor, width: Tensor, sigma: Tensor) -> Tensor:
    """Equivalent Gaussian residual of a Gaussian (width ``sigma``) convolved with a box of
    half-width ``width``: ``r_eff^2 / sigma^2 = -2 log(L(r) / L(0))``.

    Example:
        >>> import torch
        >>> r = torch.tensor([0.0, 1.0, 5.0], dtype=torch.float64)
        >>> box_residual(r, torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64))
        tensor([0., 1., 5.], dtype=torch.float64)
    """
    width = width.expand_as(r)
    sigma = sigma.expand_as(r)
    has_box = width > 0
    w = torch.where(has_box, width, torch.ones_like(width))
    u = r.abs()
    upper = (w - u) / sigma          # -b
    lower = -(u + w) / sigma         # -a, lower <= upper
    log_up = torch.special.log_ndtr(upper)
    log_low = torch.special.log_ndtr(lower)
    log_l = log_up + torch.log(-torch.expm1(log_low - log_up))
    x0 = w / (sigma * math.sqrt(2.0))
    log_l0 = torch.log(torch.erf(x0))
    excess = torch.clamp(-2.0 * (log_l - log_l0), min=0.0)
    # curvature at r = 0: excess ~ kappa r^2, kappa = 2 w phi(w/sigma) / (sigma^3 erf(w/(sqrt2 sigma)))
    phi = torch.exp(-0.5 * (w / sigma) ** 2) / math.sqrt(2.0 * math.pi)
    kappa = 2.0 * w * phi / (sigma**3 * torch.erf(x0))
    tiny = torch.finfo(r.dtype).eps ** 0.5 * sigma
    small = u < tiny
    safe = torch.where(small, torch.ones_like(excess), excess)
    big_branch = torch.sign(r) * sigma * torch.sqrt(safe)
    small_branch = r * sigma * torch.sqrt(kappa)
    boxed = torch.where(small, small_branch, big_branch)
    return torch.where(has_box, boxed, r)


class GaussianTerm(nn.Module):
    """Correlated Gaussian measurements with flat theory uncertainties.

    Args:
        data: measured values ``d``, shape ``(N,)``.
        covariance: Gaussian covariance ``V``, shape ``(N, N)`` (positive definite).
        theory_width: flat half-widths ``s`` per observable, shape ``(N,)`` (``None``: zeros).
        theory_mode: ``"none"``, ``"profiled"`` or ``"marginalised"`` (see the module).
        theory_shifts: shifts ``S`` (N, K) of ``K`` explicit flat theory nuisance parameters.
        scale_theory: factor applied to ``theory_width`` and ``theory_shifts`` (0.5 reproduces the
            paper's "theory uncertainty halved").
        names: optional observable names (for messages).

    Example:
        >>> import torch
        >>> term = GaussianTerm(torch.zeros(2), torch.eye(2), theory_width=torch.ones(2),
        ...                     theory_mode="profiled")
        >>> term.chi2(torch.tensor([[2.0, 0.5]]))
        tensor([1.])
    """

    data: Tensor
    scale_triu: Tensor
    sigma: Tensor
    theory_width: Tensor
    theory_shifts: Tensor

    def __init__(self, data: Tensor, covariance: Tensor, *, theory_width: Tensor | None = None,
                 theory_mode: TheoryMode = "none", theory_shifts: Tensor | None = None,
                 scale_theory: float = 1.0, names: tuple[str, ...] | None = None) -> None:
        super().__init__()
        if theory_mode not in THEORY_MODES:
            raise ConfigError(f"unknown theory_mode {theory_mode!r}",
                              hint=f"choose one of {list(THEORY_MODES)}")
        data = torch.as_tensor(data)
        dtype = data.dtype if data.is_floating_point() else torch.float64
        data = data.to(dtype).reshape(-1)
        n = data.shape[0]
        cov = torch.as_tensor(covariance, dtype=dtype)
        if cov.shape != (n, n):
            raise DataError(f"covariance has shape {tuple(cov.shape)}, expected ({n}, {n})")
        if not torch.isfinite(cov).all() or not torch.isfinite(data).all():
            raise DataError("data or covariance contain NaN or infinite values")
        chol, info = torch.linalg.cholesky_ex(cov.to(torch.float64))
        if int(info) != 0:
            label = f" (first failing row: {names[int(info) - 1]})" if names else ""
            raise DataError(f"covariance is not positive definite{label}",
                            hint="check for zero or duplicated uncertainties")
        width = torch.zeros(n, dtype=dtype) if theory_width is None else torch.as_tensor(
            theory_width, dtype=dtype).reshape(n)
        if (width < 0).any():
            raise DataError("theory half-widths must be non-negative")
        shifts = torch.zeros(n, 0, dtype=dtype) if theory_shifts is None else torch.as_tensor(
            theory_shifts, dtype=dtype).reshape(n, -1)
        self.theory_mode: TheoryMode = theory_mode
        self.names = names
        self.register_buffer("data", data)
        self.register_buffer("scale_triu", chol.mT.contiguous().to(dtype))
        self.register_buffer("sigma", torch.sqrt(torch.diagonal(cov)).to(dtype))
        self.register_buffer("theory_width", width * scale_theory)
        self.register_buffer("theory_shifts", shifts * scale_theory)

    @property
    def n_data(self) -> int:
        """Number of measurements ``N``."""
        return int(self.data.shape[0])

    @property
    def n_nuisances(self) -> int:
        """Number ``K`` of explicit flat theory nuisance parameters."""
        return int(self.theory_shifts.shape[1])

    @property
    def covariance(self) -> Tensor:
        """The covariance ``V = L L^T`` (rebuilt from the Cholesky factor)."""
        return self.scale_triu.mT @ self.scale_triu

    def residual(self, prediction: Tensor, theta: Tensor | None = None,
                 data: Tensor | None = None) -> Tensor:
        """Effective residual ``r_eff(d - p)`` after the theory treatment, ``(B, N)``."""
        d = self.data if data is None else data
        if theta is not None and self.n_nuisances:
            prediction = prediction + theta @ self.theory_shifts.T
        r = d - prediction
        if self.theory_mode == "profiled":
            return profiled_residual(r, self.theory_width)
        if self.theory_mode == "marginalised":
            return box_residual(r, self.theory_width, self.sigma)
        return r

    def chi2(self, prediction: Tensor, theta: Tensor | None = None,
             data: Tensor | None = None) -> Tensor:
        """``-2 log L`` (up to a constant) for predictions ``(B, N)`` (any leading batch shape),
        returns ``(B,)``.

        Args:
            prediction: predicted values, ``(B, N)``.
            theta: explicit theory nuisance parameters ``(B, K)`` (only with ``theory_shifts``).
            data: replaces the stored data (e.g. toys), ``(N,)``.
        """
        r = self.residual(prediction, theta, data)
        flat = r.reshape(-1, self.n_data)
        z = torch.linalg.solve_triangular(self.scale_triu, flat, upper=True, left=False)
        out = (z * z).sum(-1).reshape(r.shape[:-1])
        if theta is not None and self.n_nuisances:
            out = out + ((torch.relu(theta.abs() - 1.0) / _WALL_WIDTH) ** 2).sum(-1)
        return out

    def log_prob(self, prediction: Tensor, theta: Tensor | None = None,
                 data: Tensor | None = None) -> Tensor:
        """``log L = -chi2 / 2`` (up to a constant), shape ``(B,)``."""
        return -0.5 * self.chi2(prediction, theta, data)

    def extra_repr(self) -> str:
        return (f"n_data={self.n_data}, theory_mode={self.theory_mode!r}, "
                f"n_nuisances={self.n_nuisances}")

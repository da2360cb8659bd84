"""Poisson counting measurements with a control-region background (Higgs-type rates).

One counting measurement ("channel") has ``d`` observed events in the signal region (SR) and
``n`` events in a control region (CR) that measures the background: the SR expects ``s + b``
events, the CR ``tau * b`` (``tau`` is the CR/SR transfer factor, the ``k`` of the paper). On top
come a flat theory uncertainty ``sigma_theo`` on the signal (profiled: the signal moves towards
the data by up to that much) and a Gaussian systematic ``sigma_syst`` on the extracted signal
(paper eq. 8: ``sigma_syst**2 = sum_i (sigma_d,i - sigma_b,i)**2``, see
:func:`systematic_width`). Everything is expressed as a generalised chi2 that is zero where data
and prediction match (paper eq. 6); ``log_prob = -chi2 / 2``.

Two treatments:

* ``method="profiled"`` (exact): the background ``b`` is profiled analytically (the stationary
  point of the two Poisson terms is the positive root of a quadratic), the flat theory shift in
  closed form (the profiled Poisson chi2 is convex in the signal), and the Gaussian systematic
  nuisance ``theta`` by a batched bisection on its monotone score; the returned value is then
  ``-2 log [L(s, b_hat, theta_hat) / L_saturated]``. Gradients with respect to the signal are
  exact (envelope theorem: the nuisance optimum is found without autograd and then plugged in).
* ``method="sfitter"`` (the paper's approximation, eqs. 6-9): the SR Poisson term with the
  background fixed to the CR estimate ``n / tau``, the CR Poisson term with the background fixed to
  what the data leaves for it, ``d - s``, and the Gaussian systematic term; the three chi2 values
  are combined as ``1/chi2 = 1/chi2_d + 1/chi2_b + 1/chi2_gauss`` (eq. 9 read as acting on the
  chi2 values, which is what makes it exact for Gaussian terms: variances add). Each term uses the
  Gamma-function form of the paper, ``-2 [(d - p) log p + log(p! / d!)]``; that form can dip a
  little below zero when ``p`` is about ``d + 1/2`` (by about ``1/(4 d)``), so each term is clipped
  at zero.

For large counts the two agree (both tend to ``r**2 / (d + n / tau**2 + sigma_syst**2)`` with
``r`` the signal residual); for a handful of events they differ by tens of percent. Independent
channels add up; correlations between counting measurements (paper eq. 10) are not modelled here.

References:
    T. Heimel, T. Plehn, N. Schmal, "Profile Likelihoods on ML-Steroids" (2025), sec. 2.1,
    eqs. (1) and (5)-(9).

Example:
    >>> import torch
    >>> counting = PoissonCounting([120.0], [400.0], transfer=4.0)
    >>> signal = torch.tensor([[20.0], [40.0]], dtype=torch.float64)
    >>> counting.chi2(signal).round(decimals=3)
    tensor([0.0000, 2.5700], dtype=torch.float64)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from smeft_pyhf.exceptions import ConfigError, DataError

__all__ = [
    "CountingLikelihood",
    "PoissonCounting",
    "profiled_background",
    "systematic_width",
]

log = logging.getLogger(__name__)

Method = Literal["profiled", "sfitter"]
_METHODS = ("profiled", "sfitter")
_BISECTION_STEPS = 64


def systematic_width(sigma_signal_region: Sequence[float] | Tensor,
                     sigma_background: Sequence[float] | Tensor) -> Tensor:
    """Combined Gaussian systematic width of paper eq. (8), ``sqrt(sum_i (s_d,i - s_b,i)**2)``.

    Systematic ``i`` moves the signal-region count by ``sigma_d,i`` and the background estimate
    by ``sigma_b,i`` (absolute events, fully correlated), so the extracted signal moves by the
    difference.

    Args:
        sigma_signal_region: shifts of the SR count, shape ``(..., K)``.
        sigma_background: shifts of the background estimate, same shape.

    Returns:
        The width, shape ``(...)``.

    Example:
        >>> systematic_width([3.0, 1.0], [0.0, 1.0])
        tensor(3., dtype=torch.float64)
    """
    sd = torch.as_tensor(sigma_signal_region, dtype=torch.float64)
    sb = torch.as_tensor(sigma_background, dtype=sd.dtype)
    return torch.sqrt(torch.sum((sd - sb) ** 2, dim=-1))


def profiled_background(signal: Tensor, observed: Tensor, control: Tensor,
                        transfer: Tensor) -> Tensor:
    """Maximum-likelihood background ``b`` of ``Poiss(d | s + b) Poiss(n | tau b)`` at fixed ``s``.

    The score equation ``d / (s + b) + n / b = 1 + tau`` is the quadratic
    ``(1 + tau) b**2 + A b - n s = 0`` with ``A = (1 + tau) s - d - n``; the wanted root is the larger
    one (it is the only one with ``b > max(0, -s)``), computed in the cancellation-free form.

    Args:
        signal: expected signal events ``s``, any shape broadcasting with the others.
        observed: SR count ``d``.
        control: CR count ``n``.
        transfer: CR/SR transfer factor ``tau``.

    Returns:
        ``b_hat`` (differentiable in ``signal``).

    Example:
        >>> import torch
        >>> t = lambda x: torch.tensor(x, dtype=torch.float64)
        >>> profiled_background(t(10.0), t(30.0), t(40.0), t(2.0))
        tensor(20., dtype=torch.float64)
    """
    one_tau = 1.0 + transfer
    a = one_tau * signal - observed - control
    disc = torch.clamp(a * a + 4.0 * one_tau * control * signal, min=0.0)
    root = torch.sqrt(disc)
    neg = a <= 0
    # Both branches are finite wherever they are selected; the other one is made harmless.
    plus = (root - a) / (2.0 * one_tau)
    denom = torch.where(neg, torch.ones_like(a), a + root)
    minus_form = 2.0 * control * signal / denom
    return torch.where(neg, plus, minus_form)


def _poisson_deviance(observed: Tensor, expected: Tensor) -> Tensor:
    """``2 [mu - d + d log(d / mu)]`` with ``0 log 0 = 0`` (the saturated Poisson -2 log ratio)."""
    return 2.0 * (expected - observed + torch.special.xlogy(observed, observed)
                  - torch.special.xlogy(observed, expected))


def _gamma_form(observed: Tensor, predicted: Tensor) -> Tensor:
    """Paper eq. (6)/(7) term ``-2 [(d - p) log p + log Gamma(p + 1) - log Gamma(d + 1)]``."""
    tiny = torch.finfo(predicted.dtype).tiny
    p = torch.clamp(predicted, min=tiny)
    value = -2.0 * ((observed - p) * torch.log(p) + torch.lgamma(p + 1.0)
                    - torch.lgamma(observed + 1.0))
    return torch.clamp(value, min=0.0)


class PoissonCounting(nn.Module):
    """Signal+background counting measurements with a control-region background.

    Args:
        observed: SR counts ``d``, shape ``(N,)`` (one entry per channel).
        control: CR counts ``n``, shape ``(N,)``.
        transfer: CR/SR transfer factor ``tau`` (CR expects ``tau * b``), scalar or ``(N,)``.
        sigma_theo: flat theory half-width on the signal (events), scalar or ``(N,)``.
        sigma_syst: Gaussian systematic width on the extracted signal (events), scalar or
            ``(N,)``; see :func:`systematic_width` for eq. (8).
        method: ``"profiled"`` (exact profile over the nuisances) or ``"sfitter"`` (eqs. 6-9).
        names: optional channel names.

    Buffers (float64, moved with ``.to()``): ``observed``, ``control``, ``transfer``,
    ``sigma_theo``, ``sigma_syst``. Inputs may be of any floating dtype and device; the buffers are
    cast to them.

    Raises:
        DataError: negative counts, non-positive transfer factor, negative widths, or shapes that
            do not match.
        ConfigError: unknown ``method``.

    Example:
        >>> import torch
        >>> exact = PoissonCounting([50.0], [30.0], sigma_syst=3.0)
        >>> approx = PoissonCounting([50.0], [30.0], sigma_syst=3.0, method="sfitter")
        >>> s = torch.tensor([[10.0]], dtype=torch.float64)
        >>> exact.chi2(s).item() > 0 and approx.chi2(s).item() > 0
        True
    """

    observed: Tensor
    control: Tensor
    transfer: Tensor
    sigma_theo: Tensor
    sigma_syst: Tensor

    def __init__(self, observed: Sequence[float] | Tensor, control: Sequence[float] | Tensor, *,
                 transfer: float | Sequence[float] | Tensor = 1.0,
                 sigma_theo: float | Sequence[float] | Tensor = 0.0,
                 sigma_syst: float | Sequence[float] | Tensor = 0.0,
                 method: Method = "profiled",
                 names: Sequence[str] | None = None) -> None:
        super().__init__()
        if method not in _METHODS:
            raise ConfigError(f"unknown counting likelihood method {method!r}",
                              where="PoissonCounting(method=...)",
                              hint=f"choose one of {list(_METHODS)}")
        d = torch.as_tensor(observed, dtype=torch.float64).reshape(-1).clone()
        n_channels = d.shape[0]

        def vector(value: object, label: str) -> Tensor:
            t = torch.as_tensor(value, dtype=torch.float64).reshape(-1).clone()
            if t.shape[0] == 1 and n_channels != 1:
                t = t.expand(n_channels).clone()
            if t.shape[0] != n_channels:
                raise DataError(f"has {t.shape[0]} entries for {n_channels} channels",
                                where=f"PoissonCounting({label}=...)",
                                hint="give one value per channel or a scalar")
            if not torch.all(torch.isfinite(t)):
                raise DataError("contains NaN or infinite values",
                                where=f"PoissonCounting({label}=...)")
            return t

        n = vector(control, "control")
        tau = vector(transfer, "transfer")
        theo = vector(sigma_theo, "sigma_theo")
        syst = vector(sigma_syst, "sigma_syst")
        d = vector(d, "observed")
        if torch.any(d < 0) or torch.any(n < 0):
            raise DataError("event counts must be non-negative", where="PoissonCounting",
                            hint="check the observed and control-region counts")
        if torch.any(tau <= 0):
            raise DataError("transfer factors must be positive",
                            where="PoissonCounting(transfer=...)")
        if torch.any(theo < 0) or torch.any(syst < 0):
            raise DataError("uncertainty widths must be non-negative", where="PoissonCounting")
        if method == "profiled" and torch.any((d == 0) & (n == 0)):
            raise DataError("a channel with no events in either region has no finite profile",
                            where="PoissonCounting", hint="drop empty channels")
        self.method: Method = method
        self.names: tuple[str, ...] = (tuple(names) if names is not None
                                       else tuple(f"channel_{i}" for i in range(n_channels)))
        if len(self.names) != n_channels:
            raise DataError(f"{len(self.names)} names for {n_channels} channels",
                            where="PoissonCounting(names=...)")
        self.register_buffer("observed", d)
        self.register_buffer("control", n)
        self.register_buffer("transfer", tau)
        self.register_buffer("sigma_theo", theo)
        self.register_buffer("sigma_syst", syst)

    @property
    def n_channels(self) -> int:
        """Number of counting channels ``N``."""
        return int(self.observed.shape[0])

    def signal_hat(self) -> Tensor:
        """Best-fit signal per channel, ``d - n / tau`` (where every chi2 term vanishes)."""
        return self.observed - self.control / self.transfer

    # ------------------------------------------------------------------ internals
    def _consts(self, signal: Tensor) -> tuple[Tensor, ...]:
        return tuple(buf.to(device=signal.device, dtype=signal.dtype)
                     for buf in (self.observed, self.control, self.transfer, self.sigma_theo,
                                 self.sigma_syst))

    @staticmethod
    def _flat_shift(signal: Tensor, s_hat: Tensor, sigma_theo: Tensor) -> Tensor:
        """Move the signal towards the data by at most the flat theory half-width."""
        return signal + torch.clamp(s_hat - signal, min=-sigma_theo, max=sigma_theo)

    def _profiled_poisson(self, signal: Tensor, d: Tensor, n: Tensor, tau: Tensor) -> Tensor:
        b = profiled_background(signal, d, n, tau)
        return _poisson_deviance(d, signal + b) + _poisson_deviance(n, tau * b)

    def _profiled_score(self, x: Tensor, d: Tensor, n: Tensor, tau: Tensor, s_hat: Tensor,
                        theo: Tensor) -> Tensor:
        """d/dx of the flat-profiled Poisson chi2 (zero inside the flat window)."""
        shifted = self._flat_shift(x, s_hat, theo)
        b = profiled_background(shifted, d, n, tau)
        score = 2.0 * (1.0 - d / (shifted + b))
        return torch.where(torch.abs(s_hat - x) <= theo, torch.zeros_like(score), score)

    def _chi2_profiled(self, signal: Tensor) -> Tensor:
        d, n, tau, theo, syst = self._consts(signal)
        s_hat = d - n / tau
        with torch.no_grad():
            s0 = signal.detach()
            g0 = self._profiled_score(s0, d, n, tau, s_hat, theo)
            # theta* lies between 0 and -syst * g(s) / 2 (the score is monotone).
            end = -0.5 * syst * g0
            lo = torch.minimum(end, torch.zeros_like(end))
            hi = torch.maximum(end, torch.zeros_like(end))
            for _ in range(_BISECTION_STEPS):
                mid = 0.5 * (lo + hi)
                g = syst * self._profiled_score(s0 + syst * mid, d, n, tau, s_hat, theo) + 2 * mid
                up = g > 0
                hi = torch.where(up, mid, hi)
                lo = torch.where(up, lo, mid)
            theta = torch.where(syst > 0, 0.5 * (lo + hi), torch.zeros_like(lo))
        shifted = self._flat_shift(signal + syst * theta, s_hat, theo)
        return self._profiled_poisson(shifted, d, n, tau) + theta * theta

    def _chi2_sfitter(self, signal: Tensor) -> Tensor:
        d, n, tau, theo, syst = self._consts(signal)
        s_hat = d - n / tau
        shifted = self._flat_shift(signal, s_hat, theo)
        chi2_d = _gamma_form(d, shifted + n / tau)
        chi2_b = _gamma_form(n, tau * (d - shifted))
        tiny = torch.finfo(signal.dtype).tiny
        residual2 = torch.clamp((d - n / tau - shifted) ** 2, min=tiny)
        inverse = (1.0 / torch.clamp(chi2_d, min=tiny) + 1.0 / torch.clamp(chi2_b, min=tiny)
                   + syst * syst / residual2)
        return 1.0 / inverse

    # ------------------------------------------------------------------ public
    def chi2_per_channel(self, signal: Tensor) -> Tensor:
        """Generalised chi2 of every channel.

        Args:
            signal: expected signal events, shape ``(..., N)``.

        Returns:
            Shape ``(..., N)``, zero at ``signal == d - n / tau``.
        """
        if signal.shape[-1] != self.n_channels:
            raise DataError(f"signal has {signal.shape[-1]} channels, expected {self.n_channels}",
                            where="PoissonCounting.chi2")
        if self.method == "profiled":
            return self._chi2_profiled(signal)
        return self._chi2_sfitter(signal)

    def chi2(self, signal: Tensor) -> Tensor:
        """Sum of the channel chi2 values, shape ``(...)`` for ``signal`` of shape ``(..., N)``."""
        return self.chi2_per_channel(signal).sum(dim=-1)

    def log_prob(self, signal: Tensor) -> Tensor:
        """``-chi2 / 2``: log-likelihood ratio to the saturated model, shape ``(...)``."""
        return -0.5 * self.chi2(signal)

    def forward(self, signal: Tensor) -> Tensor:
        """Same as :meth:`log_prob`."""
        return self.log_prob(signal)

    def extra_repr(self) -> str:
        return f"channels={self.n_channels}, method={self.method!r}"


class CountingLikelihood(nn.Module):
    """Counting measurements as a function of the Wilson coefficients.

    Args:
        predictions: a module mapping ``c (B, n)`` to the expected *signal events* ``(B, N)``,
            e.g. ``QuadraticPredictions(...).normalised().scaled(signal_sm)`` (signal strength
            times the SM signal yield).
        counting: the :class:`PoissonCounting` measurements.

    Example:
        >>> import torch
        >>> from smeft_pyhf.likelihood.predictions import QuadraticPredictions
        >>> pred = QuadraticPredictions.from_tables([20.0], {"OpG": [10.0]}, {}, names=["cpG"])
        >>> like = CountingLikelihood(pred, PoissonCounting([120.0], [100.0]))
        >>> like.log_prob(torch.zeros(2, 1, dtype=torch.float64)).shape
        torch.Size([2])
    """

    def __init__(self, predictions: nn.Module, counting: PoissonCounting) -> None:
        super().__init__()
        self.predictions = predictions
        self.counting = counting
        self.names: tuple[str, ...] = tuple(getattr(predictions, "names", ()))

    def chi2(self, c: Tensor) -> Tensor:
        """Chi2 at the coefficient points ``c (B, n)``, shape ``(B,)``."""
        return self.counting.chi2(self.predictions(c))

    def log_prob(self, c: Tensor) -> Tensor:
        """``-chi2 / 2``, shape ``(B,)``, differentiable in ``c``."""
        return -0.5 * self.chi2(c)

    def forward(self, c: Tensor) -> Tensor:
        """Same as :meth:`log_prob`."""
        return self.log_prob(c)


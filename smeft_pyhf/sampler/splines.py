r"""Fused monotonic rational-quadratic splines: the hot path of the sampler's flow.

The same bijection as :class:`zuko.transforms.MonotonicRQSTransform` (same parametrisation,
same soft bounds on widths, heights and knot derivatives, identity outside ``[-bound, bound]``),
written for speed:

* one pass over the raw ``(..., 3K - 1)`` parameter tensor squashes and exponentiates widths,
  heights and derivatives together (zuko runs two softmaxes, three pads and a cumsum per side);
* the bin search compares unnormalised cumulative sums with a rescaled input, so the knots are
  never normalised as a whole; only the two knots of the chosen bin are;
* :func:`rqs_inverse` returns the inverse *and* its log-Jacobian in one pass (zuko's
  ``transform.inv.call_and_ladj`` runs the inverse and then the whole forward spline again).

Parameter layout along the last axis: ``K`` unnormalised widths, ``K`` unnormalised heights,
``K - 1`` unnormalised interior knot derivatives (zuko's ``shapes`` ``[(K,), (K,), (K-1,)]``).

Example:
    >>> import torch
    >>> params = torch.randn(4, 3, 3 * 8 - 1, generator=torch.Generator().manual_seed(0))
    >>> x = torch.randn(4, 3, generator=torch.Generator().manual_seed(1))
    >>> y, ladj = rqs_forward(x, params)
    >>> x_back, ladj_inv = rqs_inverse(y, params)
    >>> torch.allclose(x_back, x, atol=1e-5), torch.allclose(ladj_inv, -ladj, atol=1e-5)
    (True, True)

References:
    | Neural Spline Flows (Durkan et al., 2019), eqs. (4)-(8) and appendix A.
    | https://arxiv.org/abs/1906.04032
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["rqs_forward", "rqs_inverse"]


class _SoftboundExp(torch.autograd.Function):
    """``exp(a / (1 + |a| c))`` element-wise, with the analytic derivative
    ``exp(.) / (1 + |a| c)^2`` (three operations in the backward pass instead of about ten)."""

    @staticmethod
    def forward(a: Tensor, inv_c: Tensor) -> Tensor:  # type: ignore[override]
        return torch.exp(a / (1.0 + torch.abs(a) * inv_c))

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:  # type: ignore[no-untyped-def]
        a, inv_c = inputs
        ctx.save_for_backward(a, inv_c, output)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        a, inv_c, out = ctx.saved_tensors
        den = 1.0 + torch.abs(a) * inv_c
        return grad * out / (den * den), None


def _softbound(params: Tensor, bins: int, slope: float) -> Tensor:
    """``exp`` of the soft-bounded raw parameters (zuko's ``a / (1 + |a / c|)``).

    Widths and heights are bounded by ``c = -log(slope) / 2`` before their softmax, derivatives
    by ``c = -log(slope)`` before their ``exp``; both are done in one pass here.
    """
    inv_c = params.new_full((3 * bins - 1,), -1.0 / math.log(slope))
    inv_c[: 2 * bins] *= 2.0
    return _SoftboundExp.apply(params, inv_c)


class _Spline:
    """The spline's cumulative bins and the knots of the bin each input falls into.

    Args:
        params: raw parameters ``(..., 3K - 1)``.
        value: the inputs ``(...)``, on the horizontal (``axis=0``, forward) or vertical
            (``axis=1``, inverse) axis.
    """

    def __init__(self, params: Tensor, value: Tensor, axis: int, bound: float,
                 slope: float) -> None:
        bins = (params.shape[-1] + 1) // 3
        e = _softbound(params, bins, slope)
        cum = torch.cumsum(e[..., : 2 * bins].unflatten(-1, (2, bins)), dim=-1)  # (..., 2, K)
        total = cum[..., -1]  # (..., 2)
        # bin search on the unnormalised cumulative sums: no normalised knot array is formed
        scaled = (value / bound + 1.0) * 0.5 * total[..., axis]
        k = (cum[..., axis, :-1] < scaled.unsqueeze(-1)).sum(-1)
        first = k == 0
        lo = (k - 1).clamp(min=0).unsqueeze(-1)
        pair = torch.cat([lo, k.unsqueeze(-1)], -1)
        ends = cum.gather(-1, pair.unsqueeze(-2).expand(*k.shape, 2, 2)) / total.unsqueeze(-1)
        ends = torch.stack([torch.where(first.unsqueeze(-1), 0.0, ends[..., 0]), ends[..., 1]], -1)
        knots = bound * (2.0 * ends - 1.0)  # (..., 2 axes, 2 ends)
        self.x0, self.x1 = knots[..., 0, 0], knots[..., 0, 1]
        self.y0, self.y1 = knots[..., 1, 0], knots[..., 1, 1]
        d = e[..., 2 * bins :].gather(-1, torch.cat([lo, k.clamp(max=bins - 2).unsqueeze(-1)], -1))
        self.d0 = torch.where(first, 1.0, d[..., 0])
        self.d1 = torch.where(k == bins - 1, 1.0, d[..., 1])
        self.width = self.x1 - self.x0
        self.height = self.y1 - self.y0
        self.s = self.height / self.width
        self.inside = (value > -bound) & (value <= bound)


def _jacobian(b: _Spline, z: Tensor) -> tuple[Tensor, Tensor]:
    """The rational-quadratic denominator and ``log |f'|`` at bin position ``z``."""
    s = b.s
    zz = z * (1.0 - z)
    denom = s + (b.d0 + b.d1 - 2.0 * s) * zz
    numer = s * s * (b.d1 * z * z + 2.0 * s * zz + b.d0 * (1.0 - z) ** 2)
    return denom, torch.log(numer) - 2.0 * torch.log(denom)


def rqs_forward(
    x: Tensor, params: Tensor, *, bound: float = 5.0, slope: float = 1e-3
) -> tuple[Tensor, Tensor]:
    """The spline ``y = f(x)`` and ``log |f'(x)|``, element-wise.

    Args:
        x: inputs ``(...)``.
        params: raw parameters ``(..., 3K - 1)`` (widths, heights, interior derivatives).
        bound: the spline acts on ``[-bound, bound]``, identity outside.
        slope: minimum slope (zuko's soft bound).

    Returns:
        ``(y, ladj)``, both shaped like ``x``.

    Example:
        >>> y, ladj = rqs_forward(torch.tensor([0.3, 7.0]), torch.zeros(2, 5))
        >>> y, ladj  # zero parameters: the identity
        (tensor([0.3000, 7.0000]), tensor([0., 0.]))
    """
    b = _Spline(params, x, 0, bound, slope)
    z = torch.where(b.inside, (x - b.x0) / b.width, 0.0)
    denom, log_jac = _jacobian(b, z)
    y = b.y0 + b.height * (b.s * z * z + b.d0 * z * (1.0 - z)) / denom
    return torch.where(b.inside, y, x), torch.where(b.inside, log_jac, 0.0)


def rqs_inverse(
    y: Tensor, params: Tensor, *, bound: float = 5.0, slope: float = 1e-3
) -> tuple[Tensor, Tensor]:
    """The inverse ``x = f^{-1}(y)`` and its ``log |dx/dy|`` (``= -log |f'(x)|``), in one pass.

    Args:
        y: inputs ``(...)``.
        params: raw parameters ``(..., 3K - 1)``, as for :func:`rqs_forward`.
        bound: the spline acts on ``[-bound, bound]``, identity outside.
        slope: minimum slope.

    Returns:
        ``(x, ladj)``, both shaped like ``y``.

    Example:
        >>> p = torch.randn(6, 3 * 4 - 1, generator=torch.Generator().manual_seed(2))
        >>> x = torch.linspace(-4, 4, 6)
        >>> torch.allclose(rqs_inverse(rqs_forward(x, p)[0], p)[0], x, atol=1e-5)
        True
    """
    b = _Spline(params, y, 1, bound, slope)
    dy = torch.where(b.inside, y - b.y0, 0.0)
    curve = b.d0 + b.d1 - 2.0 * b.s
    qa = b.height * (b.s - b.d0) + dy * curve
    qb = b.height * b.d0 - dy * curve
    qc = -b.s * dy
    # the root in [0, 1] of qa z^2 + qb z + qc, in the cancellation-free form
    z = 2.0 * qc / (-qb - torch.sqrt(torch.clamp(qb * qb - 4.0 * qa * qc, min=0.0)))
    _, log_jac = _jacobian(b, z)
    return torch.where(b.inside, b.x0 + z * b.width, y), torch.where(b.inside, -log_jac, 0.0)

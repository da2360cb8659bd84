r"""The target in the flow's standardised coordinates :math:`z = A^{-1}(u(x) - \mu)`.

The pre-scaling moments (and, for full whitening, the Cholesky factor of its covariance) define
the affine part; coordinates of a prior box whose posterior is pressed against an edge go
through a logit map first (:class:`Standardised`).

Example:
    >>> f = standardise(lambda x: -0.5 * (x**2).sum(-1), torch.tensor([1.0]), torch.tensor([2.0]))
    >>> f.to_original(torch.tensor([[1.0]]))
    tensor([[3.]])
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["Standardised", "standardise", "unbounded"]

LogProb = Callable[[Tensor], Tensor]


class Standardised:
    r"""The target in standardised coordinates :math:`z = A^{-1}(u(x) - \mu)`.

    With ``factor=None`` the map is diagonal, :math:`A = \mathrm{diag}(\sigma)` (the paper's
    pre-scaling); with a lower-triangular ``factor`` :math:`A = L` (Cholesky factor of the
    pre-scaling covariance: whitening that also removes linear correlations).

    ``u(x) = x`` except for the ``bounded`` coordinates of a ``support`` box ``[low, high]``
    (a flat prior outside which the target vanishes), where
    :math:`u = \mathrm{logit}((x - \mathrm{low}) / (\mathrm{high} - \mathrm{low}))`: the flow
    then lives on all of :math:`\mathbb{R}^d` while every point it draws lies inside the box,
    and a posterior cut off sharply at an edge becomes a smooth exponential tail in ``u``.
    ``mean``, ``std`` and ``factor`` are moments in ``u``.

    :math:`\log p_z(z) = \log p(x(z)) + \log|\partial x / \partial z|`, so the density stays
    normalised; calling the object evaluates it, :meth:`log_det` gives the log-Jacobian.

    Attributes:
        log_prob: the original target.
        mean: :math:`\mu` ``(d,)``.
        std: :math:`\sigma` ``(d,)``.
        factor: ``None`` or the lower-triangular :math:`L` ``(d, d)``.
        support: ``None`` or the ``(d, 2)`` box.
        bounded: ``None`` or the ``(d,)`` mask of the coordinates mapped through the logit.
        log_jacobian: :math:`\log|\det A|` (the affine part of :meth:`log_det`).

    Example:
        >>> box = torch.tensor([[0.0, 1.0]])
        >>> f = Standardised(lambda x: torch.zeros(x.shape[0]), torch.zeros(1), torch.ones(1),
        ...                  support=box, bounded=torch.tensor([True]))
        >>> [round(v, 6) for v in f.to_original(torch.tensor([[-30.0], [0.0], [30.0]])).flatten().tolist()]
        [0.0, 0.5, 1.0]
        >>> round(float(f(torch.tensor([[0.0]]))), 4)  # log(1/4): the logistic density at 0
        -1.3863
    """

    #: points are kept this far inside the box when mapped to ``u`` (relative to its width)
    EDGE_EPS = 1e-6

    def __init__(self, log_prob: LogProb, mean: Tensor, std: Tensor,
                 factor: Tensor | None = None, *, support: Tensor | None = None,
                 bounded: Tensor | None = None) -> None:
        self.log_prob = log_prob
        self.mean = mean
        self.std = std
        self.factor = factor
        if factor is None:
            self.log_jacobian = torch.log(std).sum()
        else:
            self.log_jacobian = torch.log(torch.diagonal(factor)).sum()
        if bounded is not None and (support is None or not bool(bounded.any())):
            bounded = None
        self.support = support
        self.bounded = bounded

    def __call__(self, z: Tensor) -> Tensor:
        """``log p_z(z)`` for ``z`` of shape ``(B, d)``."""
        return self.log_prob(self.to_original(z)) + self.log_det(z)

    def _affine(self, z: Tensor) -> Tensor:
        if self.factor is None:
            return self.mean.to(z.dtype) + self.std.to(z.dtype) * z
        return self.mean.to(z.dtype) + z @ self.factor.to(z.dtype).T

    def log_det(self, z: Tensor) -> Tensor:
        """``log |dx/dz|`` per point, ``(B,)``."""
        out = self.log_jacobian.to(z.dtype).expand(z.shape[0])
        if self.bounded is None:
            return out
        u = self._affine(z)[:, self.bounded]
        width = (self.support[:, 1] - self.support[:, 0])[self.bounded].to(z.dtype)
        # log(width * sigmoid(u) * (1 - sigmoid(u))), stable for large |u|
        terms = torch.log(width) - F.softplus(-u) - F.softplus(u)
        return out + terms.sum(-1)

    def to_original(self, z: Tensor) -> Tensor:
        """Map standardised points to original coordinates."""
        u = self._affine(z)
        if self.bounded is None:
            return u
        low = self.support[:, 0].to(z.dtype)
        width = (self.support[:, 1] - self.support[:, 0]).to(z.dtype)
        return torch.where(self.bounded, low + width * torch.sigmoid(u), u)

    def to_unbounded(self, x: Tensor) -> Tensor:
        """``u(x)``: the logit of the bounded coordinates (points moved inside the box)."""
        if self.bounded is None:
            return x
        return unbounded(x, self.support, self.bounded, eps=self.EDGE_EPS)

    def to_standardised(self, x: Tensor) -> Tensor:
        """Map original points to standardised coordinates: ``A^-1 (u(x) - mean)``."""
        centred = self.to_unbounded(x) - self.mean.to(x.dtype)
        if self.factor is None:
            return centred / self.std.to(x.dtype)
        solved = torch.linalg.solve_triangular(self.factor.to(x.dtype), centred.T, upper=False)
        return solved.T


def unbounded(x: Tensor, support: Tensor, bounded: Tensor, *, eps: float = 1e-6) -> Tensor:
    """``logit((x - low) / (high - low))`` in the ``bounded`` coordinates, ``x`` elsewhere.

    Points on or beyond an edge are moved ``eps`` (relative to the width) inside first.

    Example:
        >>> unbounded(torch.tensor([[0.5, 7.0]]), torch.tensor([[0.0, 1.0], [0.0, 1.0]]),
        ...           torch.tensor([True, False]))
        tensor([[0., 7.]])
    """
    low = support[:, 0].to(x.dtype)
    width = (support[:, 1] - support[:, 0]).to(x.dtype)
    t = ((x - low) / width).clamp(eps, 1 - eps)
    return torch.where(bounded, torch.logit(t), x)


def standardise(log_prob: LogProb, mean: Tensor, std: Tensor,
                factor: Tensor | None = None, *, support: Tensor | None = None,
                bounded: Tensor | None = None) -> Standardised:
    r"""The target in standardised coordinates, :math:`\log p(\mu + \sigma z) + \sum\log\sigma`.

    Args:
        log_prob: the target in original coordinates.
        mean: :math:`\mu` ``(d,)`` (e.g. :attr:`~smeft_pyhf.sampler.prescaling.PrescaleResult.mean`).
        std: :math:`\sigma` ``(d,)``.
        factor: optional lower-triangular Cholesky factor of the covariance (full whitening).
        support: optional ``(d, 2)`` box outside which the target vanishes.
        bounded: which coordinates of ``support`` go through the logit map (moments in ``u``).

    Returns:
        A callable :class:`Standardised` (with ``to_original``/``to_standardised``).

    Example:
        >>> f = standardise(lambda x: -0.5 * (((x - 3) / 2) ** 2).sum(-1), torch.tensor([3.0]),
        ...                 torch.tensor([2.0]))
        >>> f(torch.tensor([[1.0]]))
        tensor([0.1931])
    """
    return Standardised(log_prob, mean, std, factor, support=support, bounded=bounded)

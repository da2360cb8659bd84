"""The flow's coordinates after the pre-scaling, and what depends on them.

:func:`flow_coordinates` standardises the target with the pre-scaling moments (whitened with
the Cholesky factor of their covariance by default), mapping the coordinates whose posterior is
pressed against an edge of the prior box through a logit first;
:func:`profile_covariance` gives the profiles' L-BFGS preconditioner in the original
coordinates; :func:`cover_chains` widens the flow's spline domain to every pre-scaling chain.

Example:
    >>> from smeft_pyhf.sampler.prescaling import PrescaleResult
    >>> x = torch.randn(4000, 2, generator=torch.Generator().manual_seed(0)) * torch.tensor([1.0, 3.0])
    >>> res = PrescaleResult(x.mean(0), x.std(0), x, torch.zeros(4000), 4000.0, 0.3, 0.1, 0)
    >>> z = flow_coordinates(lambda x: -0.5 * (x**2).sum(-1), res, whitening="diagonal",
    ...                      support=None, support_map="none", support_nsigma=0.5,
    ...                      support_weight=0.02, dtype=torch.float32, names=("a", "b"))
    >>> z.std.round()
    tensor([1., 3.])
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from smeft_pyhf.sampler.kernels.standardisation import Standardised, standardise, unbounded
from smeft_pyhf.sampler.kernels.weights import (
    weighted_cholesky,
    weighted_covariance,
    weighted_moments,
)
from smeft_pyhf.sampler.prescaling import PrescaleResult

__all__ = ["cover_chains", "flow_coordinates", "profile_covariance", "weight_near_edges"]

log = logging.getLogger(__name__)


def _finite(log_weights: Tensor, dtype: torch.dtype) -> Tensor:
    """``log_weights`` in ``dtype`` with every non-finite value (NaN, ``+-inf``) ``-inf``."""
    return torch.where(torch.isfinite(log_weights), log_weights.to(dtype),
                       log_weights.new_tensor(-math.inf, dtype=dtype))


def weight_near_edges(samples: Tensor, log_weights: Tensor, std: Tensor, box: Tensor,
                           k: float) -> Tensor:
    """Per coordinate, the weight of ``samples`` within ``k * std`` of an edge of ``box``.

    Example:
        >>> x = torch.tensor([[0.1], [0.5], [0.9]])
        >>> weight_near_edges(x, torch.zeros(3), torch.tensor([0.1]), torch.tensor([[0.0, 1.0]]), 2.0)
        tensor([0.6667])
    """
    w = torch.softmax(_finite(log_weights, samples.dtype), 0)
    near = (samples - box[:, 0] < k * std) | (box[:, 1] - samples < k * std)
    return (w[:, None] * near.to(samples.dtype)).sum(0)


def flow_coordinates(target: Callable[[Tensor], Tensor], prescaled: PrescaleResult, *,
                     whitening: str, support: Tensor | None, support_map: str,
                     support_nsigma: float, support_weight: float, dtype: torch.dtype,
                     names: Sequence[str], level: int = logging.INFO) -> Standardised:
    """The target in the flow's coordinates: the pre-scaling moments, whitened
    (``whitening="full"``), with the logit map on the coordinates of ``support`` whose
    pre-scaling sample puts more than ``support_weight`` within ``support_nsigma`` widths of
    an edge (``support_map="logit"``); see :class:`~smeft_pyhf.sampler.pipeline.SamplerConfig`.
    """
    samples = prescaled.samples.to(torch.float64)
    mean, std = prescaled.mean.to(torch.float64), prescaled.std.to(torch.float64)
    bounded = None
    if support is not None and support_map == "logit":
        box = support.to(device=samples.device, dtype=torch.float64)
        bounded = weight_near_edges(samples, prescaled.log_weights, std, box,
                                         support_nsigma) > support_weight
        if bool(bounded.any()):
            log.log(level, "logit map onto the prior box for %d coefficient(s) near its edges: %s",
                    int(bounded.sum()), ", ".join(n for n, b in zip(names, bounded.tolist(), strict=True) if b))
            samples = unbounded(samples, box, bounded, eps=Standardised.EDGE_EPS)
            mean, std = weighted_moments(samples, _finite(prescaled.log_weights, torch.float64))
        else:
            bounded = None
    factor = None
    if whitening == "full":
        factor = weighted_cholesky(samples, prescaled.log_weights.to(torch.float64)).to(dtype)
    return standardise(target, mean.to(dtype), std.to(dtype), factor,
                       support=None if bounded is None else support.to(dtype), bounded=bounded)


def profile_covariance(coordinates: Standardised, prescaled: PrescaleResult, *,
                       whitening: str, dtype: torch.dtype) -> Tensor:
    """The pre-scaling covariance ``(d, d)`` in the original coordinates (the profiles'
    L-BFGS preconditioner): diagonal without full whitening, else ``L L^T`` or, with a logit
    map, the weighted covariance of the chains."""
    if whitening != "full":
        std = prescaled.std.to(dtype)
        return torch.diag(std * std)
    if coordinates.bounded is None:
        return coordinates.factor @ coordinates.factor.T
    return weighted_covariance(prescaled.samples.to(torch.float64),
                               prescaled.log_weights).to(dtype)


def cover_chains(flow: Any, coordinates: Standardised, chains: Tensor, level: int) -> None:
    """Widen the flow's spline domain to cover every pre-scaling chain (25 % margin)."""
    z = coordinates.to_standardised(chains)
    reach = float(z.abs().max()) if z.numel() else 0.0
    bound = max(flow.config.bound, float(math.ceil(1.25 * reach)))
    if bound > flow.config.bound:
        log.log(level, "flow: spline domain widened from +-%g to +-%g to cover the pre-scaling "
                "samples (largest |z| %.2f)", flow.config.bound, bound, reach)
        flow.set_bound(bound)

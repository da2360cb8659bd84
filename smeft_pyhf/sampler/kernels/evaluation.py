"""The one chunked evaluator of the sampler: a batched function applied to row chunks.

:func:`map_chunks` splits its input's rows into chunks, calls the function on each and
concatenates the outputs (a tensor or a tuple of tensors); the flow uses it for its own
evaluations. :func:`evaluate_in_chunks` evaluates a target log-density that way, without
gradients, checks that it returns one value per point and maps NaN to ``-inf`` (zero density);
wrap the target in a :class:`~smeft_pyhf.sampler.kernels.nonfinite.CheckedTarget` to count NaN
and reject ``+inf``.

Example:
    >>> import torch
    >>> evaluate_in_chunks(lambda x: x.sum(-1).log(), torch.tensor([[1.0], [-1.0], [4.0]]), 2)
    tensor([0.0000,   -inf, 1.3863])
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TypeVar

import torch
from torch import Tensor

__all__ = ["evaluate_in_chunks", "map_chunks"]

Out = TypeVar("Out", Tensor, tuple[Tensor, ...])


def map_chunks(fn: Callable[[Tensor], Out], x: Tensor, chunk_size: int | None) -> Out:
    """``fn(x)`` computed on row chunks of at most ``chunk_size`` points, concatenated.

    ``fn`` returns a tensor or a tuple of tensors whose first dimension runs over the points;
    ``chunk_size=None`` (or a batch that fits) makes one call.

    Example:
        >>> import torch
        >>> map_chunks(lambda x: (x.sum(-1), x.max(-1).values), torch.ones(5, 2), 2)
        (tensor([2., 2., 2., 2., 2.]), tensor([1., 1., 1., 1., 1.]))
    """
    if chunk_size is None or x.shape[0] <= chunk_size:
        return fn(x)
    parts = [fn(part) for part in x.split(chunk_size)]
    if isinstance(parts[0], tuple):
        return tuple(torch.cat(column) for column in zip(*parts, strict=True))  # type: ignore[return-value]
    return torch.cat(parts)  # type: ignore[arg-type]


def evaluate_in_chunks(
    log_prob: Callable[[Tensor], Tensor], x: Tensor, chunk_size: int | None = None
) -> Tensor:
    """``log_prob(x)`` without gradients, in chunks of at most ``chunk_size`` points.

    Args:
        log_prob: the target, ``(B, d) -> (B,)``.
        x: points ``(n, d)``.
        chunk_size: at most this many points per call (``None``: one call).

    Returns:
        ``(n,)`` log-densities in the target's dtype; NaN values become ``-inf`` (``+inf``
        stays ``+inf``).

    Raises:
        ValueError: when the target does not return one value per point.

    Example:
        >>> import torch
        >>> evaluate_in_chunks(lambda x: x.sum(-1), torch.ones(5, 2), 2).tolist()
        [2.0, 2.0, 2.0, 2.0, 2.0]
    """
    if x.shape[0] == 0:
        return x.new_zeros((0,))
    with torch.no_grad():
        out = map_chunks(log_prob, x, chunk_size)
    if out.shape != x.shape[:1]:
        raise ValueError(f"the target returned shape {tuple(out.shape)} for input {tuple(x.shape)}")
    return torch.where(torch.isnan(out), out.new_tensor(-math.inf), out)

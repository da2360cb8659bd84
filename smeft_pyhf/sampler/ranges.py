"""The histogram ranges of a sampler run, from the pre-scaling chains and the trained flow.

:func:`posterior_ranges` takes ``mean +- k std`` of the pre-scaling sample, widened to reach
every chain (plus 5 % of their span), so a separate mode with a small weight stays inside;
:func:`histogram_ranges` intersects them with given fit ranges; :func:`widen_to_flow` widens
them to the weighted tail quantiles of a pilot sample of the trained flow.

Example:
    >>> chains = torch.tensor([[-1.0], [3.0]])
    >>> posterior_ranges(chains, torch.tensor([0.0]), torch.tensor([0.5]), 4.0)
    tensor([[-2.0000,  3.2000]])
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from smeft_pyhf.sampler.kernels.evaluation import evaluate_in_chunks
from smeft_pyhf.sampler.kernels.nonfinite import CheckedTarget
from smeft_pyhf.sampler.kernels.weights import weighted_quantiles

__all__ = ["histogram_ranges", "posterior_ranges", "widen_to_flow"]

log = logging.getLogger(__name__)

Draw = Callable[[int, torch.Generator], tuple[Tensor, Tensor]]
"""``(n, generator) -> (x, log q)``: points of the flow in original coordinates."""


def _reach(low: Tensor, high: Tensor, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
    """``[low, high]`` widened to ``[lo, hi]`` plus 5 % of its span on each side."""
    pad = 0.05 * (hi - lo)
    return torch.minimum(low, lo - pad), torch.maximum(high, hi + pad)


def posterior_ranges(chains: Tensor, mean: Tensor, std: Tensor, k: float) -> Tensor:
    """``(d, 2)``: ``mean +- k std``, widened to every pre-scaling chain (plus 5 %), so that a
    second mode with a small weight is not cut off."""
    low, high = mean - k * std, mean + k * std
    if chains.shape[0]:
        low, high = _reach(low, high, chains.min(0).values, chains.max(0).values)
    return torch.stack([low, high], dim=1)


def histogram_ranges(given: Tensor | None, posterior: Tensor, mode: str) -> Tensor:
    """The ranges to bin: ``posterior`` without ``given`` ranges; with them, their
    intersection (``mode="posterior"``, falling back to ``given`` where it is empty) or
    ``given`` itself (``mode="given"``).

    Example:
        >>> histogram_ranges(torch.tensor([[-5.0, 5.0]]), torch.tensor([[-1.0, 9.0]]), "posterior")
        tensor([[-1.,  5.]])
    """
    if given is None:
        return posterior
    if mode != "posterior":
        return given
    clipped = torch.stack([torch.maximum(given[:, 0], posterior[:, 0]),
                           torch.minimum(given[:, 1], posterior[:, 1])], dim=1)
    return torch.where((clipped[:, 1] > clipped[:, 0])[:, None], clipped, given)


def widen_to_flow(draw: Draw, target: Callable[[Tensor], Tensor], ranges: Tensor,
                  given: Tensor | None, *, n: int, tail: float, chunk: int,
                  generator: torch.Generator, level: int,
                  names: Sequence[str] | None = None) -> Tensor:
    """``ranges`` widened to the weighted ``tail`` quantiles of ``n`` flow samples (+5 %),
    within ``given`` when it is set.

    The pre-scaling chains can miss a mode that the trained flow finds; this pilot sample
    puts the histograms around it too.
    """
    x, log_q = draw(n, generator)
    checked = CheckedTarget(target, step="sampling (range pilot)", names=names, logger=log)
    log_w = (evaluate_in_chunks(checked, x, chunk) - log_q).to(torch.float64)
    checked.report()
    ok = torch.isfinite(log_w)
    if int(ok.sum()) < 2:
        return ranges
    q = weighted_quantiles(x[ok], log_w[ok], torch.tensor([tail, 1.0 - tail]))
    q = q.to(ranges)
    low, high = _reach(ranges[:, 0], ranges[:, 1], q[:, 0], q[:, 1])
    if given is not None:
        low, high = torch.maximum(low, given[:, 0]), torch.minimum(high, given[:, 1])
    wider = torch.stack([low, high], dim=1)
    moved = (wider - ranges).abs().amax(dim=1) > 0
    if bool(moved.any()):
        log.log(level, "histogram ranges widened to the flow's weighted samples for %d "
                "coefficient(s)", int(moved.sum()))
    return wider

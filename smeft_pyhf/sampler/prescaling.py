r"""Step 1, pre-scaling: annealed importance sampling (AIS) from a Gaussian to the target.

AIS moves ``n`` parallel chains from a Gaussian base :math:`p_0 = \mathcal N(\mu_0, \sigma_0)` to
the target :math:`p_T` through the log-linear path
:math:`\log p_t = (1-\beta_t)\log p_0 + \beta_t \log p_T` (eq. 12), with the kernels of
:mod:`smeft_pyhf.sampler.kernels.ais`. The weighted samples give component-wise means and
standard deviations; :func:`~smeft_pyhf.sampler.kernels.standardisation.standardise` maps the
target to the standardised coordinates :math:`z = (x-\mu)/\sigma` used by all later steps.

Everything is batched over the chains; tensors follow the device and dtype of the inputs, and all
randomness comes from the ``torch.Generator`` passed in (it must live on the same device).

Example:
    >>> import torch
    >>> from smeft_pyhf.sampler.config import PrescaleConfig
    >>> from smeft_pyhf.sampler.kernels.standardisation import standardise
    >>> def target(x):  # N((1, -2), diag(0.5, 3)^2), up to a constant
    ...     return -0.5 * (((x - torch.tensor([1.0, -2.0])) / torch.tensor([0.5, 3.0])) ** 2).sum(-1)
    >>> g = torch.Generator().manual_seed(1)
    >>> result = prescale(target, 2, config=PrescaleConfig(n_samples=2048, n_steps=100),
    ...                   generator=g, init_scale=3.0)
    >>> bool(torch.allclose(result.mean, torch.tensor([1.0, -2.0]), atol=0.2))
    True
    >>> bool(torch.allclose(result.std, torch.tensor([0.5, 3.0]), rtol=0.1))
    True
    >>> z_target = standardise(target, result.mean, result.std)

References:
    | Five steps to happiness (arXiv:2411.00942), Sec. 2.2 "Pre-scaling".
    | https://arxiv.org/abs/2411.00942
    | Annealed importance sampling (Neal, 1998). https://arxiv.org/abs/physics/9803008
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from smeft_pyhf.exceptions import ConfigError
from smeft_pyhf.sampler.config import PrescaleConfig
from smeft_pyhf.sampler.kernels.ais import anneal
from smeft_pyhf.sampler.kernels.evaluation import evaluate_in_chunks
from smeft_pyhf.sampler.kernels.nonfinite import CheckedTarget, NonFiniteCounts
from smeft_pyhf.sampler.kernels.schedules import annealing_schedule
from smeft_pyhf.sampler.kernels.weights import log_ess, weighted_moments

__all__ = ["PrescaleResult", "prescale"]

log = logging.getLogger(__name__)

LogProb = Callable[[Tensor], Tensor]


class PrescaleResult(NamedTuple):
    """Result of :func:`prescale`.

    Attributes:
        mean: weighted component-wise mean ``(d,)``.
        std: weighted component-wise standard deviation ``(d,)``.
        samples: the chains after the final step ``(n, d)``, original coordinates.
        log_weights: their AIS log-weights ``(n,)``; ``logsumexp(log_weights) - log(n)``
            estimates ``log Z`` of the target (the base is normalised).
        ess: effective sample size of the final weights, eq. (19).
        acceptance: mean Metropolis acceptance over the second half of the run.
        step_size: the final adaptive ``tau`` (in units of ``init_scale**2``).
        n_evaluations: number of target evaluations (points).
        nonfinite: how many of the evaluations were NaN or ``-inf``.
    """

    mean: Tensor
    std: Tensor
    samples: Tensor
    log_weights: Tensor
    ess: float
    acceptance: float
    step_size: float
    n_evaluations: int
    nonfinite: NonFiniteCounts = NonFiniteCounts()



class _Base(NamedTuple):
    """The Gaussian base :math:`\\mathcal N(\\mu_0, \\sigma_0)` of the annealing."""

    mean: Tensor
    scale: Tensor
    log_norm: Tensor

    def log_prob(self, x: Tensor) -> Tensor:
        return -0.5 * (((x - self.mean) / self.scale) ** 2).sum(-1) + self.log_norm


def _base(dim: int, init_scale: float | Tensor, init_mean: Tensor | None,
          generator: torch.Generator) -> _Base:
    """The base on the device and dtype of ``init_mean`` (or a tensor ``init_scale``, or the
    default dtype on the generator's device)."""
    if isinstance(init_mean, Tensor):
        ref = init_mean
    elif isinstance(init_scale, Tensor):
        ref = init_scale
    else:
        ref = torch.zeros((), dtype=torch.get_default_dtype(), device=generator.device)
    like = {
        "dtype": ref.dtype if ref.is_floating_point() else torch.get_default_dtype(),
        "device": ref.device,
    }
    mean0 = torch.zeros(dim, **like) if init_mean is None else init_mean.to(**like)
    scale0 = torch.as_tensor(init_scale, **like).expand(dim).clone()
    if mean0.shape != (dim,) or not bool((scale0 > 0).all()):
        raise ConfigError(
            f"init_mean must have shape ({dim},) and init_scale must be positive",
            where="prescale",
            hint="pass a (dim,) mean and positive widths",
        )
    log_norm = -torch.log(scale0).sum() - 0.5 * dim * math.log(2 * math.pi)
    return _Base(mean0, scale0, log_norm)


def prescale(
    log_prob: LogProb,
    dim: int,
    *,
    config: PrescaleConfig,
    generator: torch.Generator,
    init_scale: float | Tensor = 1.0,
    init_mean: Tensor | None = None,
    names: Sequence[str] | None = None,
) -> PrescaleResult:
    r"""Pre-scaling (step 1): AIS from :math:`\mathcal N(\mu_0, \sigma_0)` to the target.

    Runs :func:`anneal` with ``config.n_samples`` chains, ``config.n_steps`` temperatures
    :math:`\beta_t = t/T`, adaptive Metropolis steps and ESS-triggered resampling, then returns
    the weighted component-wise mean and standard deviation of the final samples.

    The base width ``init_scale`` should not be much narrower than the target (Sec. 2.2); give a
    per-dimension tensor when the widths differ by orders of magnitude. The Metropolis proposal
    is scaled per dimension by ``init_scale`` too, so ``tau`` is in units of ``init_scale**2``.

    Device and dtype are those of ``init_mean`` (or of ``init_scale`` when it is a tensor, or
    the default dtype on ``generator.device``).

    The target's NaN and ``-inf`` values count as zero density; they are counted, logged
    (:meth:`CheckedTarget.report`) and returned in :attr:`PrescaleResult.nonfinite`.

    Args:
        log_prob: the target ``(B, dim) -> (B,)`` (``-inf``/NaN outside the support).
        dim: number of dimensions.
        config: a :class:`PrescaleConfig`.
        generator: random number generator (same seed -> same result on the same device).
        init_scale: base width :math:`\sigma_0` (scalar or ``(dim,)``).
        init_mean: base mean :math:`\mu_0` ``(dim,)`` (default zeros).
        names: the ``dim`` coefficient names, for error messages.

    Returns:
        A :class:`PrescaleResult` (samples in original coordinates).

    Raises:
        DataError: when the target is ``+inf`` at some evaluated point (named in the message).
        ConfigError: when every chain ends with zero weight (the target is ``-inf`` wherever
            the base put samples) or the estimated widths are not positive.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> res = prescale(lambda x: -0.5 * (x**2).sum(-1), 3,
        ...                config=PrescaleConfig(n_samples=1024, n_steps=50), generator=g)
        >>> res.samples.shape, res.ess > 500
        (torch.Size([1024, 3]), True)
    """
    base = _base(dim, init_scale, init_mean, generator)
    n = config.n_samples
    checked = CheckedTarget(log_prob, step="pre-scaling", names=names, logger=log)

    def components_fn(x: Tensor) -> Tensor:
        return torch.stack([base.log_prob(x), evaluate_in_chunks(checked, x, config.chunk_size)],
                           -1)

    with torch.no_grad():
        x0 = base.mean + base.scale * torch.randn((n, dim), generator=generator,
                                                  dtype=base.mean.dtype, device=base.mean.device)
        beta = annealing_schedule(config.n_steps, config.schedule, config.beta_min).to(x0)
        beta = beta[:, None]
        res = anneal(
            components_fn,
            x0,
            components_fn(x0),
            torch.cat([1 - beta, beta], 1),
            generator=generator,
            step_size=config.initial_step_size,
            mcmc_steps=config.mcmc_steps,
            target_acceptance=config.target_acceptance,
            bounds=config.step_size_bounds,
            resample_threshold=config.resample_threshold,
            resampling=config.resampling,
            scale=base.scale,
            population_proposal=config.proposal == "population",
        )
        nonfinite = checked.report()
        mean, std = _moments(res.samples, res.log_weights, nonfinite)
        result = PrescaleResult(
            mean=mean,
            std=std,
            samples=res.samples,
            log_weights=res.log_weights,
            ess=float(log_ess(res.log_weights).exp()),
            acceptance=float(res.acceptance),
            step_size=float(res.step_size),
            n_evaluations=n + res.n_evaluations,
            nonfinite=nonfinite,
        )
    log.info("pre-scaling: %d chains x %d steps, ESS %.0f (%.2f), acceptance %.2f, tau %.3g, "
             "%d resamplings", n, config.n_steps, result.ess, result.ess / n, result.acceptance,
             result.step_size, int(res.n_resamples))
    return result


def _moments(samples: Tensor, log_weights: Tensor,
             nonfinite: NonFiniteCounts) -> tuple[Tensor, Tensor]:
    """The weighted mean and width of the final chains, or a :class:`ConfigError` when every
    weight vanished or a width is not positive."""
    if not bool(torch.isfinite(log_weights).any()):
        raise ConfigError(
            "pre-scaling failed: the target is -inf (or NaN) at every sample "
            f"(NaN at {nonfinite.n_nan} and -inf at {nonfinite.n_neginf} of "
            f"{nonfinite.n_evaluated} evaluated points)",
            where="prescale",
            hint="move init_mean into the support of the likelihood or change init_scale",
        )
    mean, std = weighted_moments(samples, log_weights)
    if not bool((std > 0).all() & torch.isfinite(std).all()):
        raise ConfigError(
            f"pre-scaling gave non-positive widths {std.tolist()}",
            where="prescale",
            hint="increase n_samples/n_steps or widen init_scale",
        )
    return mean, std

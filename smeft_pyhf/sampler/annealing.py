r"""Step 1, pre-scaling: annealed importance sampling (AIS) and the Metropolis kernel.

AIS moves ``n`` parallel chains from a Gaussian base :math:`p_0 = \mathcal N(\mu_0, \sigma_0)` to
the target :math:`p_T` through the log-linear path
:math:`\log p_t = (1-\beta_t)\log p_0 + \beta_t \log p_T`, :math:`\beta_t = t/T` (eq. 12). Each
step re-weights the chains (eq. 14), resamples them when the effective sample size (eq. 19)
drops below a threshold (eq. 20), and moves them with Metropolis steps (eqs. 16-17) whose step
size adapts towards a target acceptance (eq. 18). The weighted samples give component-wise means
and standard deviations; :func:`standardise` maps the target to the standardised coordinates
:math:`z = (x-\mu)/\sigma` used by all later steps.

The Metropolis kernel (:func:`metropolis_step`, :func:`run_mcmc`) and the generic annealing loop
(:func:`anneal`) are reused by the pre-training (step 2) and the AIS-based training (step 3).

Everything is batched over the chains; tensors follow the device and dtype of the inputs, and all
randomness comes from the ``torch.Generator`` passed in (it must live on the same device).

Example:
    >>> import torch
    >>> from smeft_pyhf.sampler.annealing import prescale, standardise
    >>> from smeft_pyhf.sampler.config import PrescaleConfig
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
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from smeft_pyhf.exceptions import ConfigError, DataError
from smeft_pyhf.sampler.config import PrescaleConfig

__all__ = [
    "NAN_WARNING_FRACTION",
    "AnnealResult",
    "CheckedTarget",
    "MCMCResult",
    "NonFiniteCounts",
    "PrescaleConfig",
    "PrescaleResult",
    "Standardised",
    "adapt_step_size",
    "anneal",
    "annealing_schedule",
    "effective_sample_size",
    "evaluate",
    "log_ess",
    "metropolis_step",
    "prescale",
    "resample_indices",
    "run_mcmc",
    "standardise",
    "unbounded",
]

log = logging.getLogger(__name__)

LogProb = Callable[[Tensor], Tensor]
"""A batched log-density: ``(B, d) -> (B,)``, ``-inf`` outside the support."""

NAN_WARNING_FRACTION = 1e-3
"""A step whose target is NaN at more than this fraction of its evaluated points logs a
warning (below it, and for ``-inf``, an info line)."""


class NonFiniteCounts(NamedTuple):
    """Target evaluations of one sampler step that were not finite.

    ``-inf`` is the normal value outside the support (a box prior, a physical bound); NaN is
    treated as ``-inf`` (zero density) too, but usually means a broken likelihood. A ``+inf``
    log-likelihood is never counted here: it stops the step with a :class:`DataError`.

    Attributes:
        n_evaluated: points at which the step evaluated the target.
        n_nan: of these, points where it was NaN.
        n_neginf: points where it was ``-inf``.
    """

    n_evaluated: int = 0
    n_nan: int = 0
    n_neginf: int = 0

    @property
    def nan_fraction(self) -> float:
        """``n_nan / n_evaluated`` (0 when nothing was evaluated)."""
        return self.n_nan / self.n_evaluated if self.n_evaluated else 0.0

    @property
    def neginf_fraction(self) -> float:
        """``n_neginf / n_evaluated`` (0 when nothing was evaluated)."""
        return self.n_neginf / self.n_evaluated if self.n_evaluated else 0.0


class CheckedTarget:
    """The target of one sampler step, with its non-finite values counted and checked.

    Calling the object evaluates the wrapped target and returns its values with NaN and
    ``+inf`` replaced by ``-inf`` (zero density, so that no weight or resampling probability
    becomes NaN), gradients flowing through the finite values. Meanwhile it counts the
    evaluated points, the NaN and the ``-inf`` values, and keeps the first point where the
    target was ``+inf``, all on the device without synchronising. :meth:`check` raises a
    :class:`~smeft_pyhf.exceptions.DataError` naming that point; :meth:`report` checks, logs
    the counts (a warning when the NaN fraction exceeds :data:`NAN_WARNING_FRACTION` or every
    point was non-finite) and returns them.

    Args:
        log_prob: the target ``(B, d) -> (B,)``.
        step: the step's name, used in messages (e.g. ``"pre-scaling"``).
        names: coefficient names, for the point in the error message (default ``x[i]``).
        to_original: maps the target's coordinates to the coefficients for that message
            (e.g. :meth:`Standardised.to_original`); default: the target's own coordinates.
        logger: where :meth:`report` logs (default: this module's logger).

    Example:
        >>> f = CheckedTarget(lambda x: x.sum(-1).log(), step="demo", names=["a"])
        >>> f(torch.tensor([[1.0], [-1.0], [0.0]]))
        tensor([0., -inf, -inf])
        >>> f.report()
        NonFiniteCounts(n_evaluated=3, n_nan=1, n_neginf=1)
        >>> f(torch.tensor([[math.inf]]))
        tensor([-inf])
        >>> f.check()  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        smeft_pyhf.exceptions.DataError: demo: the log-likelihood is +inf at c = (a=inf) ...
    """

    def __init__(
        self,
        log_prob: LogProb,
        *,
        step: str,
        names: Sequence[str] | None = None,
        to_original: Callable[[Tensor], Tensor] | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        self.log_prob = log_prob
        self.logger = logger or log
        self.step = step
        self.names = None if names is None else tuple(str(n) for n in names)
        self.to_original = to_original
        self._counts: Tensor | None = None  # (points, NaN, -inf, +inf), int64 on the device
        self._point: Tensor | None = None  # the first point where the target was +inf

    def __call__(self, x: Tensor) -> Tensor:
        """The target at ``x`` ``(B, d)``, with NaN and ``+inf`` replaced by ``-inf``."""
        out = self.log_prob(x)
        if out.shape != x.shape[:1]:
            raise ValueError(
                f"the target returned shape {tuple(out.shape)} for input {tuple(x.shape)}"
            )
        if out.shape[0] == 0:
            return out
        with torch.no_grad():
            nan = torch.isnan(out)
            posinf = torch.isposinf(out)
            new = torch.stack([
                torch.ones_like(nan).sum(), nan.sum(), torch.isneginf(out).sum(), posinf.sum()
            ])
            first = x.detach()[torch.argmax(posinf.to(torch.uint8))]
            if self._counts is None:
                self._counts = torch.zeros_like(new)
                self._point = torch.zeros_like(first)
            seen = self._counts[3] > 0
            self._point = torch.where(seen | ~posinf.any(), self._point, first)
            self._counts = self._counts + new
        return torch.where(nan | posinf, out.new_tensor(-math.inf), out)

    @property
    def n_nan(self) -> int:
        """NaN values so far (synchronises with the device)."""
        return 0 if self._counts is None else int(self._counts[1])

    def counts(self) -> NonFiniteCounts:
        """Points evaluated so far, and how many were NaN and ``-inf`` (synchronises)."""
        if self._counts is None:
            return NonFiniteCounts()
        n, nan, neginf, _ = (int(v) for v in self._counts.tolist())
        return NonFiniteCounts(n, nan, neginf)

    def check(self) -> None:
        """Raise if the target was ``+inf`` anywhere so far (synchronises).

        Raises:
            DataError: naming the first such point and how many there were.
        """
        if self._counts is None or int(self._counts[3]) == 0:
            return
        point = self._point[None]
        if self.to_original is not None:
            with torch.no_grad():
                point = self.to_original(point)
        values = [float(v) for v in point[0].tolist()]
        names = self.names if self.names is not None and len(self.names) == len(values) else [
            f"x[{i}]" for i in range(len(values))
        ]
        coords = ", ".join(f"{n}={v:.6g}" for n, v in zip(names, values, strict=True))
        n_pos, n_all = int(self._counts[3]), int(self._counts[0])
        raise DataError(
            f"the log-likelihood is +inf at c = ({coords}) ({n_pos} of {n_all} evaluated points "
            "were +inf)",
            where=self.step,
            hint="a log-likelihood must be finite or -inf (outside the support); check the "
            "likelihood and its inputs at that point (a zero or negative uncertainty, a "
            "singular covariance, a division by zero in a custom target)",
        )

    def report(self) -> NonFiniteCounts:
        """:meth:`check`, then log and return the counts.

        NaN above :data:`NAN_WARNING_FRACTION` of the points, or a target non-finite at every
        point, is a warning; other NaN or ``-inf`` values are an info line (``-inf`` outside
        the support is normal).
        """
        self.check()
        counts = self.counts()
        n, nan, neginf = counts
        if nan == 0 and neginf == 0:
            return counts
        everywhere = nan + neginf == n
        level = (logging.WARNING if counts.nan_fraction > NAN_WARNING_FRACTION or everywhere
                 else logging.INFO)
        self.logger.log(
            level,
            "%s: the target was NaN at %d of %d points (%.3g%%) and -inf at %d (%.3g%%); "
            "both count as zero density%s",
            self.step,
            nan,
            n,
            100 * counts.nan_fraction,
            neginf,
            100 * counts.neginf_fraction,
            "; NaN usually means a broken likelihood: check it and its inputs there"
            if nan and level == logging.WARNING else "",
        )
        return counts


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


class MCMCResult(NamedTuple):
    """Result of :func:`run_mcmc`.

    Attributes:
        samples: the chains after the last step ``(n, d)``.
        log_prob: the target at ``samples`` ``(n,)``.
        step_size: the final ``tau``.
        acceptance: mean acceptance over all steps (``nan`` when no steps were made).
        n_evaluations: number of target evaluations (points).
    """

    samples: Tensor
    log_prob: Tensor
    step_size: float
    acceptance: float
    n_evaluations: int


class AnnealResult(NamedTuple):
    """Result of :func:`anneal` (tensors stay on the device; no synchronisation).

    Attributes:
        samples: the chains after the last step ``(n, d)``.
        components: the density components at ``samples`` ``(n, k)``.
        log_weights: AIS log-weights ``(n,)``.
        step_size: final ``tau`` (0-dim tensor).
        acceptance: mean acceptance of the second half of the Metropolis steps (0-dim tensor).
        n_resamples: number of resampling steps (0-dim tensor).
        n_evaluations: number of evaluations of the component function (points).
    """

    samples: Tensor
    components: Tensor
    log_weights: Tensor
    step_size: Tensor
    acceptance: Tensor
    n_resamples: Tensor
    n_evaluations: int


# ----------------------------------------------------------------------------- small helpers


def evaluate(log_prob: LogProb, x: Tensor, *, chunk_size: int | None = None) -> Tensor:
    """Evaluate a batched target, in chunks, with NaN mapped to ``-inf`` (zero density).

    Args:
        log_prob: the target, ``(B, d) -> (B,)``.
        x: points ``(n, d)``.
        chunk_size: at most this many points per call (``None``: one call).

    Returns:
        ``(n,)`` log-densities; NaN values become ``-inf``.

    Raises:
        ValueError: when the target does not return one value per point.

    Example:
        >>> evaluate(lambda x: x.sum(-1).log(), torch.tensor([[1.0], [-1.0]]))
        tensor([0., -inf])
    """
    if chunk_size is None or x.shape[0] <= chunk_size:
        out = log_prob(x)
    else:
        out = torch.cat([log_prob(part) for part in x.split(chunk_size)])
    if out.shape != x.shape[:1]:
        raise ValueError(f"the target returned shape {tuple(out.shape)} for input {tuple(x.shape)}")
    return torch.where(torch.isnan(out), out.new_tensor(-math.inf), out)


def log_ess(log_weights: Tensor) -> Tensor:
    """Logarithm of the effective sample size ``(sum w)^2 / sum w^2``, eq. (19).

    ``-inf`` weights count as zero; returns ``-inf`` (a 0-dim tensor) when all weights vanish.

    Example:
        >>> log_ess(torch.zeros(8)).exp()
        tensor(8.)
    """
    value = 2 * torch.logsumexp(log_weights, 0) - torch.logsumexp(2 * log_weights, 0)
    return torch.where(torch.isnan(value), value.new_tensor(-math.inf), value)


def effective_sample_size(log_weights: Tensor) -> float:
    """Effective sample size of unnormalised log-weights, eq. (19), as a float.

    Example:
        >>> effective_sample_size(torch.tensor([0.0, 0.0, -math.inf, 0.0]))
        3.0
    """
    return float(log_ess(log_weights).exp())


def resample_indices(
    log_weights: Tensor,
    n: int,
    *,
    generator: torch.Generator,
    method: Literal["multinomial", "systematic"] = "multinomial",
) -> Tensor:
    """Indices drawn with probabilities proportional to ``exp(log_weights)``.

    Args:
        log_weights: unnormalised log-weights ``(m,)``; if all are ``-inf`` the draw is uniform.
        n: number of indices.
        generator: random number generator on the device of ``log_weights``.
        method: ``"multinomial"`` (independent draws) or ``"systematic"`` (one uniform number,
            lower variance).

    Returns:
        ``(n,)`` int64 indices on the device of ``log_weights``.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> resample_indices(torch.tensor([0.0, -math.inf]), 3, generator=g)
        tensor([0, 0, 0])
    """
    finite = torch.isfinite(log_weights).any()
    safe = torch.where(finite, log_weights, torch.zeros_like(log_weights))
    probs = torch.softmax(safe, 0)
    if method == "multinomial":
        return torch.multinomial(probs, n, replacement=True, generator=generator)
    if method == "systematic":
        u = torch.rand((), generator=generator, device=probs.device, dtype=probs.dtype)
        positions = (u + torch.arange(n, device=probs.device, dtype=probs.dtype)) / n
        cdf = torch.cumsum(probs, 0)
        idx = torch.searchsorted(cdf, positions, right=True)
        return idx.clamp_(max=probs.shape[0] - 1)
    raise ValueError(f"unknown resampling method {method!r}")


def adapt_step_size(
    step_size: Tensor,
    acceptance: Tensor,
    *,
    target: float = 0.33,
    bounds: tuple[float, float] = (1e-12, 1e4),
) -> Tensor:
    r"""The adaptive step size of eq. (18): :math:`\tau \leftarrow \tau\, 2^{\min(r, 1)}`.

    With :math:`r = a / a_\mathrm{target} - 1`, so ``tau`` halves at zero acceptance and at most
    doubles. Works on tensors (no device synchronisation).

    Example:
        >>> adapt_step_size(torch.tensor(1.0), torch.tensor(0.0))
        tensor(0.5000)
        >>> adapt_step_size(torch.tensor(1.0), torch.tensor(0.99))
        tensor(2.)
    """
    r = torch.clamp(acceptance / target - 1.0, max=1.0)
    return torch.clamp(step_size * torch.exp2(r), bounds[0], bounds[1])


def _combine(components: Tensor, coefficients: Tensor) -> Tensor:
    """``sum_k c_k * components_k`` with ``0 * (-inf) = 0`` and NaN -> ``-inf``."""
    terms = components * coefficients
    terms = torch.where(coefficients == 0, torch.zeros_like(terms), terms)
    out = terms.sum(-1)
    return torch.where(torch.isnan(out), out.new_tensor(-math.inf), out)


def _proposal(
    x: Tensor, step_size: Tensor, scale: Tensor | float, generator: torch.Generator
) -> Tensor:
    # eq. (16): q(x'|x) ~ exp(-(x'-x)^2 / (4 tau)), i.e. a Gaussian of variance 2 tau.
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return x + torch.sqrt(2 * step_size) * scale * noise


def _population_factor(x: Tensor, log_weights: Tensor) -> Tensor:
    """Cholesky factor ``(d, d)`` of the weighted sample covariance (jittered, never singular)."""
    w = torch.softmax(torch.where(torch.isnan(log_weights), -math.inf, log_weights), 0)
    w = torch.where(torch.isfinite(w), w, torch.zeros_like(w)).to(x.dtype)
    mean = (w[:, None] * x).sum(0)
    centred = x - mean
    cov = (w[:, None] * centred).T @ centred
    diag = torch.diagonal(cov).clamp_min(0)
    jitter = 1e-9 * diag.max().clamp_min(1e-30)
    eye = torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
    factor, info = torch.linalg.cholesky_ex(cov + jitter * eye)
    fallback = torch.diag_embed(torch.sqrt(diag + jitter))
    return torch.where(info == 0, factor, fallback)


def _accept(log_ratio: Tensor, generator: torch.Generator) -> Tensor:
    # eq. (17) with a symmetric proposal; a NaN ratio (both -inf) is a rejection.
    u = torch.rand(
        log_ratio.shape, generator=generator, device=log_ratio.device, dtype=log_ratio.dtype
    )
    return torch.log(u) < log_ratio


# ----------------------------------------------------------------------------- Metropolis kernel


def metropolis_step(
    log_prob: LogProb,
    x: Tensor,
    log_p: Tensor,
    *,
    step_size: Tensor | float,
    generator: torch.Generator,
    scale: Tensor | float = 1.0,
    chunk_size: int | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """One batched Metropolis step with the Gaussian proposal of eq. (16).

    Args:
        log_prob: the target ``(B, d) -> (B,)``.
        x: current states ``(n, d)``.
        log_p: the target at ``x`` ``(n,)``.
        step_size: ``tau``; the proposal is ``x + sqrt(2 tau) * scale * N(0, 1)``.
        generator: random number generator on the device of ``x``.
        scale: per-dimension proposal scale (broadcast against ``x``).
        chunk_size: evaluate the target in chunks of at most this many points.

    Returns:
        ``(x, log_p, accepted)``: new states, their log-density and the boolean acceptance mask.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.zeros(4, 2)
        >>> x, lp, acc = metropolis_step(lambda x: -0.5 * (x**2).sum(-1), x, torch.zeros(4),
        ...                              step_size=0.1, generator=g)
        >>> x.shape, acc.dtype
        (torch.Size([4, 2]), torch.bool)
    """
    step = torch.as_tensor(step_size, dtype=x.dtype, device=x.device)
    proposal = _proposal(x, step, scale, generator)
    log_p_new = evaluate(log_prob, proposal, chunk_size=chunk_size)
    accepted = _accept(log_p_new - log_p, generator)
    x = torch.where(accepted[:, None], proposal, x)
    log_p = torch.where(accepted, log_p_new, log_p)
    return x, log_p, accepted


def run_mcmc(
    log_prob: LogProb,
    x: Tensor,
    *,
    n_steps: int,
    step_size: Tensor | float,
    generator: torch.Generator,
    log_p: Tensor | None = None,
    target_acceptance: float = 0.33,
    adapt: bool = True,
    bounds: tuple[float, float] = (1e-12, 1e4),
    scale: Tensor | float = 1.0,
    chunk_size: int | None = None,
) -> MCMCResult:
    """Run ``n_steps`` batched Metropolis steps, adapting ``tau`` with eq. (18) after each.

    Args:
        log_prob: the target ``(B, d) -> (B,)``.
        x: initial states ``(n, d)``.
        n_steps: number of steps (0 returns the input).
        step_size: initial ``tau``.
        generator: random number generator on the device of ``x``.
        log_p: the target at ``x`` if known (saves one evaluation).
        target_acceptance: acceptance that the adaptation aims at.
        adapt: adapt ``tau`` after every step (``False``: keep it fixed, exact detailed balance).
        bounds: clamp range for ``tau``.
        scale: per-dimension proposal scale.
        chunk_size: evaluate the target in chunks of at most this many points.

    Returns:
        An :class:`MCMCResult`.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> res = run_mcmc(lambda x: -0.5 * (x**2).sum(-1), torch.zeros(512, 3), n_steps=50,
        ...                step_size=0.1, generator=g)
        >>> abs(res.acceptance - 0.33) < 0.1
        True
    """
    with torch.no_grad():
        n_eval = 0
        if log_p is None:
            log_p = evaluate(log_prob, x, chunk_size=chunk_size)
            n_eval += x.shape[0]
        step = torch.as_tensor(step_size, dtype=x.dtype, device=x.device).clone()
        total = x.new_zeros(())
        for _ in range(n_steps):
            x, log_p, accepted = metropolis_step(
                log_prob,
                x,
                log_p,
                step_size=step,
                generator=generator,
                scale=scale,
                chunk_size=chunk_size,
            )
            rate = accepted.to(x.dtype).mean()
            total = total + rate
            if adapt:
                step = adapt_step_size(step, rate, target=target_acceptance, bounds=bounds)
            n_eval += x.shape[0]
        acceptance = float(total / n_steps) if n_steps else math.nan
        return MCMCResult(x, log_p, float(step), acceptance, n_eval)


# ----------------------------------------------------------------------------- generic annealing


def anneal(
    components_fn: Callable[[Tensor], Tensor],
    x: Tensor,
    components: Tensor,
    coefficients: Tensor,
    *,
    generator: torch.Generator,
    step_size: Tensor | float,
    mcmc_steps: int = 1,
    target_acceptance: float = 0.33,
    adapt: bool = True,
    bounds: tuple[float, float] = (1e-12, 1e4),
    resample_threshold: float = 0.0,
    resampling: Literal["multinomial", "systematic"] = "multinomial",
    scale: Tensor | float = 1.0,
    log_weights: Tensor | None = None,
    population_proposal: bool = False,
) -> AnnealResult:
    r"""Annealed importance sampling along a linear path in log-density components.

    The intermediate densities are :math:`\log\pi_t(x) = \sum_k c_{t,k}\, \phi_k(x)` with
    components :math:`\phi(x)` returned by ``components_fn`` and the rows ``c_t`` of
    ``coefficients``. Pre-scaling uses :math:`\phi = (\log p_0, \log p_T)` and
    :math:`c_t = (1-\beta_t, \beta_t)`; the training uses :math:`\phi = (\log g_\theta, \log p)`
    and :math:`c_t = (1-2\beta_t, 2\beta_t)`, which anneals from the flow to :math:`p^2/g_\theta`.

    Every step ``t = 1..T`` (i) re-weights, eq. (14),
    :math:`\log w \mathrel{+}= (c_t - c_{t-1})\cdot\phi(x)`, (ii) resamples when
    ``ESS < resample_threshold * n`` and gives every chain the mean weight, eq. (20), and
    (iii) makes ``mcmc_steps`` Metropolis steps on :math:`\pi_t`, adapting ``tau`` with eq. (18).
    The loop never synchronises with the device.

    Args:
        components_fn: ``(B, d) -> (B, k)`` density components (NaN is treated as ``-inf``).
        x: initial samples from :math:`\pi_0` ``(n, d)``.
        components: ``components_fn(x)`` ``(n, k)``.
        coefficients: ``(T + 1, k)``; row 0 defines :math:`\pi_0`.
        generator: random number generator on the device of ``x``.
        step_size: initial ``tau``.
        mcmc_steps: Metropolis steps per temperature.
        target_acceptance: acceptance the adaptation aims at.
        adapt: adapt ``tau`` after every Metropolis step.
        bounds: clamp range for ``tau``.
        resample_threshold: relative ESS threshold for resampling (0: never).
        resampling: ``"multinomial"`` or ``"systematic"``.
        scale: per-dimension proposal scale.
        log_weights: initial log-weights (default zeros).
        population_proposal: shape the proposal at every temperature with the Cholesky
            factor of the weighted covariance of the current samples (``scale`` is ignored).

    Returns:
        An :class:`AnnealResult`.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> fn = lambda x: torch.stack([-0.5 * (x**2).sum(-1), -0.5 * ((x - 1) ** 2).sum(-1)], -1)
        >>> x = torch.randn(256, 2, generator=g)
        >>> beta = torch.linspace(0, 1, 11)[:, None]
        >>> res = anneal(fn, x, fn(x), torch.cat([1 - beta, beta], 1), generator=g, step_size=0.3)
        >>> res.samples.mean(0).round(decimals=0)
        tensor([1., 1.])
    """
    n = x.shape[0]
    n_temps = coefficients.shape[0] - 1
    coefficients = coefficients.to(dtype=x.dtype, device=x.device)
    step = torch.as_tensor(step_size, dtype=x.dtype, device=x.device).clone()
    lw = x.new_zeros(n) if log_weights is None else log_weights.clone()
    neg_inf = x.new_tensor(-math.inf)
    arange = torch.arange(n, device=x.device)
    n_resamples = torch.zeros((), dtype=torch.int64, device=x.device)
    acc_sum = x.new_zeros(())
    acc_count = 0
    n_moves = n_temps * mcmc_steps
    n_eval = 0

    def fn(points: Tensor) -> Tensor:
        out = components_fn(points)
        return torch.where(torch.isnan(out), neg_inf, out)

    with torch.no_grad():
        for t in range(1, n_temps + 1):
            # (i) transport to p_t by re-weighting, eq. (14)
            delta = _combine(components, coefficients[t] - coefficients[t - 1])
            lw = torch.where(torch.isinf(lw) & (lw < 0), lw, lw + delta)
            lw = torch.where(torch.isnan(lw), neg_inf, lw)
            # (ii) resampling, eqs. (19)-(20), without a host-device synchronisation
            if resample_threshold > 0:
                need = log_ess(lw) < math.log(resample_threshold * n)
                idx = resample_indices(lw, n, generator=generator, method=resampling)
                idx = torch.where(need, idx, arange)
                x, components = x[idx], components[idx]
                mean_lw = torch.logsumexp(lw, 0) - math.log(n)
                lw = torch.where(need, mean_lw.expand(n), lw)
                n_resamples = n_resamples + need.to(torch.int64)
            # (iii) Metropolis steps on p_t, eqs. (16)-(18)
            c_t = coefficients[t]
            current = _combine(components, c_t)
            factor = _population_factor(x, lw) if population_proposal else None
            for _ in range(mcmc_steps):
                if factor is None:
                    proposal = _proposal(x, step, scale, generator)
                else:
                    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
                    proposal = x + torch.sqrt(2 * step) * (noise @ factor.T)
                comp_new = fn(proposal)
                n_eval += n
                new = _combine(comp_new, c_t)
                accepted = _accept(new - current, generator)
                x = torch.where(accepted[:, None], proposal, x)
                components = torch.where(accepted[:, None], comp_new, components)
                current = torch.where(accepted, new, current)
                rate = accepted.to(x.dtype).mean()
                acc_count += 1
                if acc_count > n_moves // 2:
                    acc_sum = acc_sum + rate
                if adapt:
                    step = adapt_step_size(step, rate, target=target_acceptance, bounds=bounds)
    n_counted = n_moves - n_moves // 2
    acceptance = acc_sum / n_counted if n_counted else x.new_tensor(math.nan)
    return AnnealResult(x, components, lw, step, acceptance, n_resamples, n_eval)


# ----------------------------------------------------------------------------- pre-scaling


def _reference(
    init_scale: float | Tensor, init_mean: Tensor | None, generator: torch.Generator
) -> Tensor:
    if isinstance(init_mean, Tensor):
        return init_mean
    if isinstance(init_scale, Tensor):
        return init_scale
    return torch.zeros((), dtype=torch.get_default_dtype(), device=generator.device)


def annealing_schedule(n_steps: int, kind: str = "linear", beta_min: float = 1e-6) -> Tensor:
    r"""The inverse temperatures :math:`\beta_0 = 0, \beta_1, \dots, \beta_T = 1` (float64).

    ``"linear"``: :math:`\beta_t = t/T` (paper eq. 12). ``"logit"``: :math:`\beta_1, \dots,
    \beta_{T-1}` evenly spaced in :math:`\log(\beta / (1 - \beta))` from ``beta_min`` to
    ``1 - beta_min`` (for ``T <= 2`` the linear schedule).

    Example:
        >>> annealing_schedule(4).tolist()
        [0.0, 0.25, 0.5, 0.75, 1.0]
        >>> [round(b, 4) for b in annealing_schedule(4, "logit", 1e-3).tolist()]
        [0.0, 0.001, 0.5, 0.999, 1.0]
    """
    t = torch.arange(n_steps + 1, dtype=torch.float64)
    if kind not in ("linear", "logit"):
        raise ValueError(f"unknown schedule {kind!r}")
    if kind == "linear" or n_steps <= 2:
        return t / n_steps
    edge = math.log(beta_min / (1.0 - beta_min))
    beta = torch.sigmoid(edge * (1.0 - 2.0 * (t - 1) / (n_steps - 2)))
    beta[0], beta[-1] = 0.0, 1.0
    return beta


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
    ref = _reference(init_scale, init_mean, generator)
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
    n = config.n_samples
    log_norm = -torch.log(scale0).sum() - 0.5 * dim * math.log(2 * math.pi)
    checked = CheckedTarget(log_prob, step="pre-scaling", names=names, logger=log)

    def components_fn(x: Tensor) -> Tensor:
        base = -0.5 * (((x - mean0) / scale0) ** 2).sum(-1) + log_norm
        return torch.stack([base, evaluate(checked, x, chunk_size=config.chunk_size)], -1)

    with torch.no_grad():
        x0 = mean0 + scale0 * torch.randn((n, dim), generator=generator, **like)
        comp0 = components_fn(x0)
        beta = annealing_schedule(config.n_steps, config.schedule, config.beta_min).to(**like)
        beta = beta[:, None]
        coefficients = torch.cat([1 - beta, beta], 1)
        res = anneal(
            components_fn,
            x0,
            comp0,
            coefficients,
            generator=generator,
            step_size=config.initial_step_size,
            mcmc_steps=config.mcmc_steps,
            target_acceptance=config.target_acceptance,
            bounds=config.step_size_bounds,
            resample_threshold=config.resample_threshold,
            resampling=config.resampling,
            scale=scale0,
            population_proposal=config.proposal == "population",
        )
        lw = res.log_weights
        nonfinite = checked.report()
        if not bool(torch.isfinite(lw).any()):
            raise ConfigError(
                "pre-scaling failed: the target is -inf (or NaN) at every sample "
                f"(NaN at {nonfinite.n_nan} and -inf at {nonfinite.n_neginf} of "
                f"{nonfinite.n_evaluated} evaluated points)",
                where="prescale",
                hint="move init_mean into the support of the likelihood or change init_scale",
            )
        w = torch.softmax(lw, 0)
        mean = (w[:, None] * res.samples).sum(0)
        std = torch.sqrt((w[:, None] * (res.samples - mean) ** 2).sum(0))
        if not bool((std > 0).all() & torch.isfinite(std).all()):
            raise ConfigError(
                f"pre-scaling gave non-positive widths {std.tolist()}",
                where="prescale",
                hint="increase n_samples/n_steps or widen init_scale",
            )
        ess = float(log_ess(lw).exp())
        result = PrescaleResult(
            mean=mean,
            std=std,
            samples=res.samples,
            log_weights=lw,
            ess=ess,
            acceptance=float(res.acceptance),
            step_size=float(res.step_size),
            n_evaluations=n + res.n_evaluations,
            nonfinite=nonfinite,
        )
    log.info(
        "pre-scaling: %d chains x %d steps, ESS %.0f (%.2f), acceptance %.2f, tau %.3g, %d resamplings",
        n,
        config.n_steps,
        ess,
        ess / n,
        result.acceptance,
        result.step_size,
        int(res.n_resamples),
    )
    return result


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


def weighted_cholesky(samples: Tensor, log_weights: Tensor) -> Tensor:
    """Cholesky factor of the weighted covariance of ``samples`` (for full whitening).

    Example:
        >>> x = torch.randn(4000, 2, generator=torch.Generator().manual_seed(0)) * torch.tensor([1.0, 3.0])
        >>> weighted_cholesky(x, torch.zeros(4000)).diagonal().round()
        tensor([1., 3.])
    """
    return _population_factor(samples, log_weights)


def standardise(log_prob: LogProb, mean: Tensor, std: Tensor,
                factor: Tensor | None = None, *, support: Tensor | None = None,
                bounded: Tensor | None = None) -> Standardised:
    r"""The target in standardised coordinates, :math:`\log p(\mu + \sigma z) + \sum\log\sigma`.

    Args:
        log_prob: the target in original coordinates.
        mean: :math:`\mu` ``(d,)`` (e.g. :attr:`PrescaleResult.mean`).
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

"""Step 5: profile likelihoods by batched, per-point independent L-BFGS.

The best re-centred points per profile bin from step 4 (:mod:`~smeft_pyhf.sampler.sampling`)
are the start points of a maximisation of ``log p`` over the free coefficients, with the binned
coordinate(s) held fixed at the bin centre. Every start point is its own optimisation problem:
:func:`lbfgs_maximise` keeps a separate L-BFGS history ``(B, m, d)``, search direction, step
length (Armijo backtracking per point) and convergence flag per point, so one batch call
optimises up to ``batch_size`` independent problems. (``torch.optim.LBFGS`` would treat the
batch as one problem in ``B * d`` variables, with one shared step length and curvature history.)
Gradients come from autograd of ``sum(log_p)``, which decouples the points because the target is
evaluated row by row. A posterior covariance (from pre-scaling) serves as the initial inverse
Hessian of every point, so coefficients of very different widths do not slow it down, and
restart sweeps take the optima of neighbouring bins and the best fit as further start points.

Example:
    >>> import torch
    >>> from smeft_pyhf.sampler.profiling import ProfileConfig, lbfgs_maximise
    >>> target = lambda x: -0.5 * ((x - 1.0) ** 2).sum(-1)
    >>> res = lbfgs_maximise(target, torch.zeros(3, 2, dtype=torch.float64),
    ...                      fixed=torch.tensor([[True, False]] * 3))
    >>> res.x.tolist()
    [[0.0, 1.0], [0.0, 1.0], [0.0, 1.0]]

References:
    | Five steps to happiness: ML likelihood sampling for global SMEFT analyses (arXiv:2411.00942),
    | Sec. 2.2 ("Maximizing") and Table 5. https://arxiv.org/abs/2411.00942
    | J. Nocedal, Updating quasi-Newton matrices with limited storage, Math. Comp. 35 (1980) 773
    | (the two-loop recursion).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from smeft_pyhf.cluster import InProcess, TaskRunner, chunks
from smeft_pyhf.exceptions import ConfigError
from smeft_pyhf.sampler.config import check_field
from smeft_pyhf.sampler.kernels.nonfinite import CheckedTarget, NonFiniteCounts
from smeft_pyhf.sampler.sampling import (
    SampleResult,
    best_per_bin,
    bin_centres,
    report_nonfinite,
)

__all__ = [
    "LbfgsResult",
    "ProfileConfig",
    "ProfileResult",
    "SliceSpec",
    "lbfgs_maximise",
    "optimise_slice",
    "profile",
]

log = logging.getLogger(__name__)

LogProb = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class ProfileConfig:
    """Step 5, maximisation from the best points per profile bin (Table 5 defaults).

    Attributes:
        batch_size: start points optimised together (Table 5: 100k); a task (``task_size``)
            is optimised in batches of at most this many.
        task_size: start points per task: the start points (bin by bin) are cut into slices
            of this many, and every slice is a task of its own (on a Dask worker, or one after
            another in-process). The slicing does not depend on the number of workers, so the
            result does not either. Rows are independent problems, so a larger value only
            changes the speed: on one GPU raise it to ``batch_size`` for one batch per task.
        max_steps: L-BFGS iterations per point (Table 5: 200).
        history: stored curvature pairs ``m`` per point (torch's default 100 is for one large
            problem; 10 is the usual choice for small ``d``; not in the paper).
        tolerance_grad: a point has converged when ``max |d log p / dx_free| <= tolerance_grad``.
        tolerance_change: ... or when an accepted step changes ``log p`` by less than
            ``tolerance_change * max(1, |log p|)``.
        max_line_search: backtracking halvings per iteration; a point whose line search fails
            is stopped where it is (it cannot be improved at the working precision).
        armijo: sufficient-decrease constant ``c1`` of the Armijo condition.
        profile_1d: optimise the 1D profile start points.
        profile_2d: optimise the 2D profile start points.
        best_fit: also maximise without fixed coordinates from the best sample (the global
            maximum that profiles are compared with).
        restart_sweeps: after the first pass, up to this many sweeps restart bins from the
            optima of their neighbours and from the global best fit, moved to the bin's centre
            (not in the paper). Every 1D bin is restarted; a 2D bin only where it dips below
            both its neighbours along an axis (or has no value next to one that has), since
            there are ``profile_bins_2d**2`` of them per pair. A sweep that improves no bin by
            more than ``tolerance_change`` ends them. One start point per bin can sit in a
            secondary basin of a multimodal quadratic fit, which shows as isolated spikes in
            a profile and 95 % intervals broken into pieces.
        precondition: use the posterior covariance passed to :func:`profile` as L-BFGS's
            initial inverse Hessian (not in the paper), so that coefficients whose widths
            differ by orders of magnitude converge in a few dozen iterations.
    """

    batch_size: int = 100_000
    task_size: int = 4096
    max_steps: int = 200
    history: int = 10
    tolerance_grad: float = 1e-6
    tolerance_change: float = 1e-9
    max_line_search: int = 30
    armijo: float = 1e-4
    profile_1d: bool = True
    profile_2d: bool = True
    best_fit: bool = True
    restart_sweeps: int = 2
    precondition: bool = True

    def __post_init__(self) -> None:
        for name in ("batch_size", "task_size", "history", "max_line_search"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)!r} must be >= 1",
                                  where="ProfileConfig", hint=f"change {name}")
        check_field(self.restart_sweeps >= 0, self, "restart_sweeps", "must be >= 0")
        check_field(self.max_steps >= 0, self, "max_steps", "must be >= 0")
        check_field(0 < self.armijo < 1, self, "armijo", "must lie in (0, 1)")

    @classmethod
    def paper(cls, sector: str = "top", **overrides: object) -> ProfileConfig:
        """The paper's Table 5 values (the same for all three sectors) with ``overrides``; the
        tasks as large as the batches (one GPU batch per task), as the paper runs on a GPU.

        Example:
            >>> ProfileConfig.paper("combined").task_size
            100000
        """
        if sector not in ("top", "higgs", "combined"):
            raise ConfigError(f"unknown sector {sector!r}", where="ProfileConfig.paper",
                              hint="use 'top', 'higgs' or 'combined'")
        return cls(**{"task_size": cls.batch_size, **overrides})

    def replace(self, **changes: object) -> ProfileConfig:
        """A copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)


class LbfgsResult(NamedTuple):
    """Outcome of :func:`lbfgs_maximise`, one row per start point.

    Attributes:
        x: (B, d) final points.
        log_prob: (B,) ``log p`` at ``x``: finite, or ``-inf`` where the target is not finite
            at the start point (accepted steps only ever raise a finite value).
        n_steps: (B,) accepted iterations.
        converged: (B,) stopped by a tolerance (or a failed line search), not by ``max_steps``.
        n_evaluations: target evaluations (with gradients) in total.
    """

    x: Tensor
    log_prob: Tensor
    n_steps: Tensor
    converged: Tensor
    n_evaluations: int


class ProfileResult(NamedTuple):
    """Profile log-likelihoods per bin after maximisation.

    Attributes:
        profile1d: (d, profile_bins_1d) max ``log p`` with coefficient ``i`` fixed at the bin
            centre (``-inf`` where no start point existed).
        profile1d_points: (d, profile_bins_1d, d) the maximising points.
        profile2d: (P, profile_bins_2d, profile_bins_2d), pairs as ``SampleResult.pairs``.
        profile2d_points: (P, profile_bins_2d, profile_bins_2d, d).
        sampled1d: (d, profile_bins_1d) the start values (the sampling-only profile).
        sampled2d: (P, profile_bins_2d, profile_bins_2d).
        centres1d: (d, profile_bins_1d) bin centres.
        centres2d: (d, profile_bins_2d) bin centres per axis.
        best_fit: (d,) the global maximum found.
        best_log_prob: ``log p`` there (at least every profile value).
        n_points: start points optimised.
        converged_fraction: fraction of start points that met a tolerance.
        mean_steps: mean L-BFGS iterations per point.
        n_evaluations: target evaluations with gradients.
        seconds: wall time of the step.
        nonfinite: how many target evaluations were NaN or ``-inf`` (line searches that left
            the support included).
    """

    profile1d: Tensor
    profile1d_points: Tensor
    profile2d: Tensor
    profile2d_points: Tensor
    sampled1d: Tensor
    sampled2d: Tensor
    centres1d: Tensor
    centres2d: Tensor
    best_fit: Tensor
    best_log_prob: float
    n_points: int
    converged_fraction: float
    mean_steps: float
    n_evaluations: int
    seconds: float
    nonfinite: NonFiniteCounts = NonFiniteCounts()

    @classmethod
    def from_1d(cls, profile1d: Tensor, points: Tensor, centres: Tensor, best_fit: Tensor,
                best_log_prob: float) -> ProfileResult:
        """A result holding 1D profiles only (no 2D pairs, no step-5 statistics), e.g. a
        profile computed elsewhere that :func:`~smeft_pyhf.sampler.ends.refine_ends` or
        :func:`~smeft_pyhf.sampler.gaps.check_gaps` should work on.

        Example:
            >>> c = torch.linspace(-1.0, 1.0, 3)[None]
            >>> r = ProfileResult.from_1d(-0.5 * c**2, c[..., None], c, torch.zeros(1), 0.0)
            >>> r.profile1d.shape, r.profile2d.numel()
            (torch.Size([1, 3]), 0)
        """
        none = profile1d.new_zeros(0)
        return cls(profile1d=profile1d, profile1d_points=points, profile2d=none,
                   profile2d_points=none, sampled1d=profile1d, sampled2d=none,
                   centres1d=centres, centres2d=none, best_fit=best_fit,
                   best_log_prob=float(best_log_prob), n_points=0, converged_fraction=1.0,
                   mean_steps=0.0, n_evaluations=0, seconds=0.0)


def _value_and_grad(log_prob: LogProb, x: Tensor) -> tuple[Tensor, Tensor]:
    """``f = -log p`` and its gradient, row by row; non-finite values become ``+inf``."""
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        lp = log_prob(xg)
        (grad,) = torch.autograd.grad(lp.sum(), xg)
    f = -lp.detach().to(x.dtype)
    grad = -grad.to(x.dtype)
    bad = ~torch.isfinite(f) | ~torch.isfinite(grad).all(dim=-1)
    f = torch.where(bad, torch.full_like(f, math.inf), f)
    grad = torch.where(bad[:, None], torch.zeros_like(grad), grad)
    return f, grad


def _two_loop(g: Tensor, s: Tensor, y: Tensor, rho: Tensor, gamma: Tensor,
              h0: Tensor | None = None) -> Tensor:
    """``H g`` for every row by the L-BFGS two-loop recursion; ``rho == 0`` marks empty slots.

    ``s``, ``y``: (B, m, d) oldest first; ``rho``: (B, m); ``gamma``: (B,) initial scaling;
    ``h0``: (d, d) the initial inverse Hessian (``gamma * h0``; identity if ``None``).
    """
    m = s.shape[1]
    q = g.clone()
    alpha = torch.zeros_like(rho)
    for i in range(m - 1, -1, -1):
        a = rho[:, i] * (s[:, i] * q).sum(-1)
        alpha[:, i] = a
        q = q - a[:, None] * y[:, i]
    r = gamma[:, None] * (q if h0 is None else q @ h0)
    for i in range(m):
        b = rho[:, i] * (y[:, i] * r).sum(-1)
        r = r + s[:, i] * (alpha[:, i] - b)[:, None]
    return r


class _Rows(NamedTuple):
    """The full batch of :func:`lbfgs_maximise`: every row's point, ``-log p``, gradient,
    accepted iterations and convergence flag (rows are written back here as they finish)."""

    x: Tensor
    f: Tensor
    g: Tensor
    n_steps: Tensor
    converged: Tensor


@dataclass
class _WorkingSet:
    """The rows of :func:`lbfgs_maximise` still running, with their L-BFGS state.

    Finished rows stay in it (frozen, not evaluated) until a quarter of it has finished; then
    :meth:`compact` writes them back to the full batch and drops them.

    Attributes:
        act: (a,) row indices into the full batch.
        x, f, g: (a, d), (a,), (a, d) point, ``-log p`` and gradient (zero on fixed coordinates).
        free: (a, d) 1.0 on free coordinates, 0.0 on fixed ones.
        s, y: (a, m, d) curvature pairs, oldest first; ``rho``: (a, m), 0 marks an empty slot.
        live: (a,) rows still iterating.
        steps: (a,) accepted iterations.
        conv: (a,) stopped by a tolerance or a failed line search.
    """

    act: Tensor
    x: Tensor
    f: Tensor
    g: Tensor
    free: Tensor
    s: Tensor
    y: Tensor
    rho: Tensor
    live: Tensor
    steps: Tensor
    conv: Tensor

    def flush(self, rows: Tensor, out: _Rows) -> None:
        """Write the working-set rows selected by ``rows`` back to the full batch ``out``."""
        idx = self.act[rows]
        out.x[idx], out.f[idx], out.g[idx] = self.x[rows], self.f[rows], self.g[rows]
        out.n_steps[idx] = self.steps[rows]
        out.converged[idx] = self.conv[rows]

    def compact(self, out: _Rows) -> None:
        """Write the finished rows back to ``out`` and keep only the live ones."""
        self.flush(~self.live, out)
        keep = self.live.nonzero().squeeze(1)
        for field in dataclasses.fields(self):
            setattr(self, field.name, getattr(self, field.name)[keep])


def _lbfgs_start(log_prob: LogProb, x: Tensor, free: Tensor,
                 config: ProfileConfig) -> tuple[_Rows, _WorkingSet, int]:
    """Evaluate every row of ``x`` once: rows with a non-finite start or a gradient already
    below tolerance are done; the others form the working set (empty history). Returns the
    full batch, the working set and the number of evaluations."""
    n, d = x.shape
    m = config.history
    freef = free.to(x.dtype)
    n_steps = torch.zeros(n, dtype=torch.long, device=x.device)
    done = torch.zeros(n, dtype=torch.bool, device=x.device)
    converged = torch.zeros(n, dtype=torch.bool, device=x.device)
    f, g = _value_and_grad(log_prob, x)
    g = g * freef
    start_bad = ~torch.isfinite(f)
    done |= start_bad
    gmax = g.abs().amax(dim=-1)
    converged |= (gmax <= config.tolerance_grad) & ~start_bad
    done |= converged
    act = (~done).nonzero().squeeze(1)
    a = act.numel()
    working = _WorkingSet(
        act=act, x=x[act], f=f[act], g=g[act], free=freef[act],
        s=x.new_zeros((a, m, d)), y=x.new_zeros((a, m, d)), rho=x.new_zeros((a, m)),
        live=torch.ones(a, dtype=torch.bool, device=x.device),
        steps=torch.zeros(a, dtype=torch.long, device=x.device),
        conv=torch.zeros(a, dtype=torch.bool, device=x.device))
    return _Rows(x, f, g, n_steps, converged), working, n


def _lbfgs_direction(w: _WorkingSet, h0: Tensor | None, eps: float) -> tuple[Tensor, Tensor]:
    """The L-BFGS search direction ``p`` of every working row and ``dg = p . g``. A live row
    whose direction is not a descent direction forgets its history (``w.rho`` is cleared) and
    takes the (preconditioned) steepest descent instead."""
    has_hist = w.rho[:, -1] > 0
    sy_last = (w.s[:, -1] * w.y[:, -1]).sum(-1)
    yy_last = (w.y[:, -1] * w.y[:, -1]).sum(-1)
    if h0 is None:
        gamma0 = torch.clamp(1.0 / w.g.abs().sum(-1).clamp_min(eps), max=1.0)
    else:  # the first step is the Newton step of the Gaussian that h0 describes
        gamma0 = torch.ones_like(w.f)
        yy_last = (w.y[:, -1] * (w.y[:, -1] @ h0)).sum(-1)
    gamma = torch.where(has_hist, sy_last / yy_last.clamp_min(eps * eps), gamma0)
    p = -_two_loop(w.g, w.s, w.y, w.rho, gamma, h0) * w.free
    dg = (p * w.g).sum(-1)
    bad_dir = ~(dg < 0) & w.live
    if bool(bad_dir.any()):
        w.rho = torch.where(bad_dir[:, None], torch.zeros_like(w.rho), w.rho)
        steepest = w.g if h0 is None else (w.g * w.free) @ h0
        p = torch.where(bad_dir[:, None], -gamma0[:, None] * steepest * w.free, p)
        dg = (p * w.g).sum(-1)
    return p, dg


class _LineSearch(NamedTuple):
    """Outcome of :func:`_line_search` per working row: step length, ``-log p`` and gradient
    at the accepted point (the old ones where none was accepted), whether a step was accepted;
    and the evaluations used."""

    t: Tensor
    f: Tensor
    g: Tensor
    accepted: Tensor
    n_evaluations: int


def _line_search(log_prob: LogProb, w: _WorkingSet, p: Tensor, dg: Tensor,
                 config: ProfileConfig) -> _LineSearch:
    """Armijo backtracking along ``p`` for every live row on its own: the step length starts
    at 1 and halves (up to ``config.max_line_search`` trials) until ``f`` drops enough."""
    t = torch.ones_like(w.f)
    f_new, g_new = w.f.clone(), w.g.clone()
    accepted = torch.zeros_like(w.live)
    pending = w.live.nonzero().squeeze(1)
    everyone = pending.numel() == w.live.numel()
    n_eval = 0
    for _ls in range(config.max_line_search):
        if everyone:  # first trial of a fully live set: no gathering
            trial, f_ref, t_p, dg_p = w.x + p, w.f, t, dg
        else:
            trial = w.x[pending] + t[pending, None] * p[pending]
            f_ref, t_p, dg_p = w.f[pending], t[pending], dg[pending]
        everyone = False
        ft, gt = _value_and_grad(log_prob, trial)
        n_eval += pending.numel()
        ok = ft <= f_ref + config.armijo * t_p * dg_p
        idx_ok = pending[ok]
        f_new[idx_ok] = ft[ok]
        g_new[idx_ok] = gt[ok] * w.free[idx_ok]
        accepted[idx_ok] = True
        pending = pending[~ok]
        if pending.numel() == 0:
            break
        t[pending] = t[pending] * 0.5
    return _LineSearch(t, f_new, g_new, accepted, n_eval)


def _lbfgs_advance(w: _WorkingSet, p: Tensor, ls: _LineSearch, config: ProfileConfig,
                   eps: float) -> None:
    """Move the working rows to their accepted points, push the curvature pair where it is
    positive enough, and stop the rows that failed the line search or met a tolerance."""
    accepted = ls.accepted
    x_new = torch.where(accepted[:, None], w.x + ls.t[:, None] * p, w.x)
    s = x_new - w.x
    y = ls.g - w.g
    sy = (s * y).sum(-1)
    update = accepted & (sy > eps * (y * y).sum(-1).clamp_min(eps))
    w.s = torch.where(update[:, None, None], torch.cat([w.s[:, 1:], s[:, None]], 1), w.s)
    w.y = torch.where(update[:, None, None], torch.cat([w.y[:, 1:], y[:, None]], 1), w.y)
    w.rho = torch.where(update[:, None],
                        torch.cat([w.rho[:, 1:], (1.0 / sy.where(update, torch.ones_like(sy)))
                                   [:, None]], 1), w.rho)
    change = (w.f - ls.f).abs()
    small = change <= config.tolerance_change * torch.clamp(ls.f.abs(), min=1.0)
    grad_ok = ls.g.abs().amax(dim=-1) <= config.tolerance_grad
    stop = w.live & (~accepted | grad_ok | small)
    w.x, w.f, w.g = x_new, ls.f, ls.g
    w.steps += accepted.to(torch.long)
    w.conv |= stop
    w.live &= ~stop


def lbfgs_maximise(
    log_prob: LogProb,
    x0: Tensor,
    *,
    fixed: Tensor | None = None,
    config: ProfileConfig | None = None,
    preconditioner: Tensor | None = None,
) -> LbfgsResult:
    """Maximise ``log_prob`` from every row of ``x0`` independently by L-BFGS.

    Each row has its own curvature history, direction, Armijo backtracking step length and
    stopping decision; converged rows drop out of the evaluations. Coordinates where ``fixed``
    is true never move.

    Args:
        log_prob: batched target ``(B, d) -> (B,)``, differentiable with torch autograd.
        x0: (B, d) start points (their device and dtype are used throughout).
        fixed: (B, d) or (d,) boolean mask of coordinates held fixed (default: none).
        config: tolerances and limits (default :class:`ProfileConfig`).
        preconditioner: (d, d) symmetric positive-definite estimate of the inverse Hessian of
            ``-log_prob``, e.g. the posterior covariance, used as L-BFGS's initial matrix
            ``H0`` (restricted to the free coordinates). Without it ``H0`` is a multiple of
            the identity, and coefficients whose widths differ by orders of magnitude (0.003
            to 20 in the global SMEFT fit) make the problem so ill-conditioned that hundreds
            of iterations do not converge.

    Returns:
        An :class:`LbfgsResult`.

    Example:
        >>> import torch
        >>> a = torch.tensor([1.0, 100.0], dtype=torch.float64)
        >>> res = lbfgs_maximise(lambda x: -0.5 * (a * (x - 2.0) ** 2).sum(-1),
        ...                      torch.zeros(4, 2, dtype=torch.float64))
        >>> bool(torch.allclose(res.x, torch.full((4, 2), 2.0, dtype=torch.float64)))
        True
    """
    config = config or ProfileConfig()
    x = x0.detach().clone()
    n, d = x.shape
    if fixed is None:
        free = torch.ones_like(x, dtype=torch.bool)
    else:
        free = ~fixed.to(device=x.device, dtype=torch.bool).expand(n, d)
    if n == 0:
        empty = torch.zeros(0, dtype=torch.long, device=x.device)
        return LbfgsResult(x, x.new_zeros((0,)), empty, empty.bool(), 0)
    out, working, n_eval = _lbfgs_start(log_prob, x, free, config)
    eps = torch.finfo(x.dtype).eps
    h0 = None if preconditioner is None else preconditioner.to(device=x.device, dtype=x.dtype)
    if h0 is not None and h0.shape != (d, d):
        raise ConfigError(f"preconditioner has shape {tuple(h0.shape)}, expected ({d}, {d})",
                          where="lbfgs_maximise", hint="pass a (d, d) covariance matrix")
    for _ in range(config.max_steps):
        if working.act.numel() == 0 or not bool(working.live.any()):
            break
        if int((~working.live).sum()) > working.act.numel() // 4:
            working.compact(out)
        p, dg = _lbfgs_direction(working, h0, eps)
        ls = _line_search(log_prob, working, p, dg, config)
        n_eval += ls.n_evaluations
        _lbfgs_advance(working, p, ls, config, eps)
    if working.act.numel():
        working.flush(torch.ones_like(working.live), out)
    return LbfgsResult(x=out.x, log_prob=-out.f, n_steps=out.n_steps,
                       converged=out.converged, n_evaluations=n_eval)


class SliceSpec(NamedTuple):
    """What a profiling task needs besides its start points and the target.

    Attributes:
        config: the step configuration.
        preconditioner: (d, d) L-BFGS initial inverse Hessian, or ``None``.
        names: coefficient names, for error messages.
    """

    config: ProfileConfig
    preconditioner: Tensor | None = None
    names: tuple[str, ...] | None = None


def optimise_slice(x0: Tensor, fixed: Tensor, spec: SliceSpec, *,
                   log_prob: LogProb) -> tuple[LbfgsResult, NonFiniteCounts]:
    """Maximise ``log_prob`` from every row of ``x0`` (batches of ``spec.config.batch_size``):
    the task of step 5 on a worker. Returns the optimised rows and the non-finite counts.

    Raises:
        DataError: the target was ``+inf`` at a point the optimiser evaluated.

    Example:
        >>> res, counts = optimise_slice(torch.zeros(2, 2, dtype=torch.float64),
        ...     torch.tensor([[True, False]] * 2), SliceSpec(ProfileConfig()),
        ...     log_prob=lambda x: -0.5 * ((x - 1.0) ** 2).sum(-1))
        >>> res.x.tolist(), counts.n_nan
        ([[0.0, 1.0], [0.0, 1.0]], 0)
    """
    config = spec.config
    checked = CheckedTarget(log_prob, step="profiling", names=spec.names, logger=log)
    parts = [lbfgs_maximise(checked, x0[lo:hi], fixed=fixed[lo:hi], config=config,
                            preconditioner=spec.preconditioner)
             for lo, hi in chunks(x0.shape[0], config.batch_size)]
    checked.check()
    return _concat(parts, x0), checked.counts()


def _concat(parts: Sequence[LbfgsResult], x0: Tensor) -> LbfgsResult:
    if not parts:
        empty = x0.new_zeros((0,))
        return LbfgsResult(x0, empty, empty.long(), empty.bool(), 0)
    return LbfgsResult(torch.cat([p.x for p in parts]), torch.cat([p.log_prob for p in parts]),
                       torch.cat([p.n_steps for p in parts]),
                       torch.cat([p.converged for p in parts]),
                       sum(p.n_evaluations for p in parts))


def _optimise_tasks(runner: TaskRunner, log_prob: LogProb, x0: Tensor, fixed: Tensor,
                    spec: SliceSpec, label: str) -> tuple[LbfgsResult, NonFiniteCounts]:
    """All rows of ``x0`` optimised as slices of ``task_size`` (:func:`optimise_slice`) by
    ``runner``, concatenated in order; also the summed non-finite counts."""
    # clone: a slice shares the storage of x0, which would be pickled whole
    tasks = [(x0[lo:hi].clone(), fixed[lo:hi].clone(), spec)
             for lo, hi in chunks(x0.shape[0], spec.config.task_size)]
    results = list(runner.map(optimise_slice, tasks, shared={"log_prob": log_prob},
                              label=label))
    counts = NonFiniteCounts(*(sum(c[i] for _, c in results) for i in range(3)))
    return _concat([r for r, _ in results], x0), counts


def _add(a: NonFiniteCounts, b: NonFiniteCounts) -> NonFiniteCounts:
    return NonFiniteCounts(*(u + v for u, v in zip(a, b, strict=True)))


_RESTART_GAIN = 1e-3
"""A restart sweep that raises no profile bin by more than this (in log L) is the last."""


def _keep_better(prof: Tensor, pts: Tensor, bins: Tensor, lp: Tensor,
                 x: Tensor) -> tuple[Tensor, Tensor, float]:
    """Per bin, the better of its current value and the best of the optimised points
    ``(bins, lp, x)`` that belong to it; also returns the largest gain."""
    flat_p = prof.reshape(-1)
    lp = torch.nan_to_num(lp.to(flat_p.dtype), nan=-math.inf)
    rows = torch.arange(lp.numel(), device=lp.device)
    top, arg = best_per_bin(bins, lp, rows, flat_p.numel())
    better = top > flat_p
    flat_x = pts.reshape(-1, pts.shape[-1]).clone()
    flat_x[better] = x[arg[better]].to(flat_x.dtype)
    gain = (top - flat_p)[better]
    gain = gain[torch.isfinite(gain)]
    most = float(gain.max()) if gain.numel() else (math.inf if bool(better.any()) else 0.0)
    new_p = torch.where(better, top, flat_p)
    return new_p.reshape(prof.shape), flat_x.reshape(pts.shape), most


def _neighbour_starts_1d(prof: Tensor, pts: Tensor, centres: Tensor,
                         best: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Restart points of every 1D bin: both neighbours' optima and ``best``, moved to the
    bin's centre. Returns ``(x0 (n, d), fixed (n, d), bin (n,) flat index into prof)``."""
    d, p1 = prof.shape
    cand = [pts.roll(1, dims=1), pts.roll(-1, dims=1), best.expand(d, p1, d)]
    ok = [torch.isfinite(prof.roll(1, dims=1)), torch.isfinite(prof.roll(-1, dims=1)),
          torch.ones_like(prof, dtype=torch.bool)]
    ok[0][:, 0] = False
    ok[1][:, -1] = False
    x = torch.stack(cand, dim=2).clone()  # (d, p1, 3, d)
    coord = torch.arange(d, device=prof.device)
    x[coord, :, :, coord] = centres[:, :, None].expand(d, p1, 3)
    valid = torch.stack(ok, dim=2)
    flat_bin = torch.arange(d * p1, device=prof.device).reshape(d, p1, 1).expand(d, p1, 3)
    fixed = (coord[None, :] == coord.repeat_interleave(p1 * 3)[:, None]).reshape(d, p1, 3, d)
    return x[valid], fixed[valid], flat_bin[valid]


def _dips(v: Tensor, dim: int, tol: float) -> Tensor:
    """Bins below both neighbours along ``dim`` by more than ``tol``, or without a value
    next to one with a value."""
    n = v.shape[dim]
    lo = v.narrow(dim, 0, n - 2)
    mid = v.narrow(dim, 1, n - 2)
    hi = v.narrow(dim, 2, n - 2)
    inner = (mid < lo - tol) & (mid < hi - tol)
    out = torch.zeros_like(v, dtype=torch.bool)
    out.narrow(dim, 1, n - 2).copy_(inner)
    fin = torch.isfinite(v)
    near = torch.zeros_like(fin)
    near.narrow(dim, 1, n - 1).logical_or_(fin.narrow(dim, 0, n - 1))
    near.narrow(dim, 0, n - 1).logical_or_(fin.narrow(dim, 1, n - 1))
    return out | (~fin & near)


def _neighbour_starts_2d(prof: Tensor, pts: Tensor, centres: Tensor, pairs: Tensor,
                         best: Tensor, tol: float) -> tuple[Tensor, Tensor, Tensor]:
    """Restart points of the 2D bins that dip: their four neighbours' optima and ``best``,
    moved to the bin's centre. Returns ``(x0, fixed, bin)`` as the 1D version."""
    p2, d = pts.shape[1], pts.shape[-1]
    if p2 < 3:
        return pts.new_zeros((0, d)), torch.zeros((0, d), dtype=torch.bool,
                                                  device=pts.device), pairs.new_zeros((0,))
    dip = _dips(prof, 1, tol) | _dips(prof, 2, tol)
    sel = dip.nonzero()  # (m, 3): pair, a, b
    xs, bins = [], []
    coord = torch.arange(d, device=pts.device)
    flat = (sel[:, 0] * p2 + sel[:, 1]) * p2 + sel[:, 2]
    for da, db in ((-1, 0), (1, 0), (0, -1), (0, 1), (None, None)):
        if da is None:
            x = best.expand(sel.shape[0], d).clone()
            ok = torch.ones(sel.shape[0], dtype=torch.bool, device=pts.device)
        else:
            a, b = sel[:, 1] + da, sel[:, 2] + db
            ok = (a >= 0) & (a < p2) & (b >= 0) & (b < p2)
            a, b = a.clamp(0, p2 - 1), b.clamp(0, p2 - 1)
            ok &= torch.isfinite(prof[sel[:, 0], a, b])
            x = pts[sel[:, 0], a, b].clone()
        xs.append(x[ok])
        bins.append(flat[ok])
    x = torch.cat(xs)
    fb = torch.cat(bins)
    pair = fb // (p2 * p2)
    i, j = pairs[pair, 0], pairs[pair, 1]
    a, b = (fb // p2) % p2, fb % p2
    rows = torch.arange(x.shape[0], device=x.device)
    x[rows, i] = centres[i, a]
    x[rows, j] = centres[j, b]
    fixed = (coord[None, :] == i[:, None]) | (coord[None, :] == j[:, None])
    return x, fixed, fb


class _Profiles(NamedTuple):
    """The 1D and 2D profiles being built and their maximising points (as in
    :class:`ProfileResult`: ``profile1d``, ``profile1d_points``, ``profile2d``,
    ``profile2d_points``)."""

    prof1: Tensor
    pts1: Tensor
    prof2: Tensor
    pts2: Tensor


@dataclass
class _Tally:
    """What step 5 counts over its passes: start points, evaluations, converged rows, L-BFGS
    steps and the non-finite values met inside the tasks."""

    n_points: int = 0
    n_evaluations: int = 0
    converged: float = 0.0
    steps: float = 0.0
    nonfinite: NonFiniteCounts = dataclasses.field(default_factory=NonFiniteCounts)

    def add(self, res: LbfgsResult, counts: NonFiniteCounts) -> None:
        """Count the optimised rows ``res`` of one pass and its tasks' non-finite ``counts``."""
        self.nonfinite = _add(self.nonfinite, counts)
        self.n_evaluations += res.n_evaluations
        self.converged += float(res.converged.sum())
        self.steps += float(res.n_steps.sum())


def _sampled_profiles(sr: SampleResult) -> tuple[Tensor, Tensor, _Profiles]:
    """The sampling-only profiles (the best start value per bin, 1D and 2D) and the profiles
    that step 5 starts from: those values with the points that reached them."""
    d, p1 = sr.profile1d_log_prob.shape[:2]
    p2 = sr.profile2d_log_prob.shape[1] if sr.profile2d_log_prob.ndim == 4 else 0
    n_pairs = sr.pairs.shape[0]
    sampled1d = sr.profile1d_log_prob.amax(dim=-1)
    sampled2d = sr.profile2d_log_prob.amax(dim=-1) if n_pairs else sr.profile2d_log_prob
    prof1 = sampled1d.clone()
    pts1 = sr.profile1d_points.gather(
        2, sr.profile1d_log_prob.argmax(-1)[..., None, None].expand(d, p1, 1, d)).squeeze(2)
    if n_pairs:
        prof2 = sampled2d.clone()
        pts2 = sr.profile2d_points.gather(
            3, sr.profile2d_log_prob.argmax(-1)[..., None, None].expand(
                n_pairs, p2, p2, 1, d)).squeeze(3)
    else:
        prof2, pts2 = sampled2d, sr.profile2d_points.reshape(0, p2, p2, d)
    return sampled1d, sampled2d, _Profiles(prof1, pts1, prof2, pts2)


def _start_rows(sr: SampleResult,
                config: ProfileConfig) -> tuple[Tensor, Tensor, list[tuple[str, Tensor]]]:
    """The first pass's start points: every finite kept point of every 1D bin (its coefficient
    fixed) and of every 2D bin (its pair fixed). Returns ``(x0 (n, d), fixed (n, d), groups)``,
    ``groups`` the consecutive ``("1d" | "2d", flat bin index per row)`` blocks of the rows."""
    d = sr.ranges.shape[0]
    k = sr.profile1d_log_prob.shape[-1]
    p1 = sr.profile1d_log_prob.shape[1]
    p2 = sr.profile2d_log_prob.shape[1] if sr.profile2d_log_prob.ndim == 4 else 0
    coord = torch.arange(d, device=sr.ranges.device)
    starts, masks, owners = [], [], []
    if config.profile_1d:  # rows (coefficient i, bin b, kept point j), coefficient i fixed
        lp1 = sr.profile1d_log_prob.reshape(-1)
        sel1 = torch.isfinite(lp1).nonzero().squeeze(1)
        coeff = sel1 // (p1 * k)
        starts.append(sr.profile1d_points.reshape(-1, d)[sel1])
        masks.append(coord[None, :] == coeff[:, None])
        owners.append(("1d", sel1 // k))
    if config.profile_2d and sr.pairs.shape[0]:
        lp2 = sr.profile2d_log_prob.reshape(-1)
        sel2 = torch.isfinite(lp2).nonzero().squeeze(1)
        pair = sel2 // (p2 * p2 * k)
        ij = sr.pairs[pair]
        starts.append(sr.profile2d_points.reshape(-1, d)[sel2])
        masks.append((coord[None, :] == ij[:, :1]) | (coord[None, :] == ij[:, 1:]))
        owners.append(("2d", sel2 // k))
    if not starts:
        return (sr.ranges.new_zeros((0, d)),
                torch.zeros((0, d), dtype=torch.bool, device=sr.ranges.device), [])
    return torch.cat(starts), torch.cat(masks), owners


def _merge(profiles: _Profiles, groups: list[tuple[str, Tensor]],
           res: LbfgsResult) -> tuple[_Profiles, float]:
    """Fold the optimised rows of ``res`` (consecutive ``(kind, bins)`` groups) into the
    profiles, a bin keeping the better of its value and its rows' best; also the largest
    gain of any bin."""
    p1_, x1_, p2_, x2_ = profiles
    gain, offset = 0.0, 0
    for kind, bins in groups:
        lp = res.log_prob[offset:offset + bins.numel()]
        xx = res.x[offset:offset + bins.numel()]
        offset += bins.numel()
        if kind == "1d":
            p1_, x1_, g = _keep_better(p1_, x1_, bins, lp, xx)
        else:
            p2_, x2_, g = _keep_better(p2_, x2_, bins, lp, xx)
        gain = max(gain, g)
    return _Profiles(p1_, x1_, p2_, x2_), gain


def _global_best(log_prob: LogProb, sr: SampleResult, profiles: _Profiles,
                 config: ProfileConfig, h0: Tensor | None) -> tuple[Tensor, float, int]:
    """The global maximum: the best of the best sample and the best 1D and 2D profile points,
    each maximised without fixed coordinates when ``config.best_fit``. Returns the point, its
    ``log p`` and the evaluations used."""
    d = sr.ranges.shape[0]
    cands = [sr.best_point[None]]
    cand_lp = [sr.best_log_prob]
    for prof, pts in ((profiles.prof1, profiles.pts1), (profiles.prof2, profiles.pts2)):
        if prof.numel() and torch.isfinite(prof).any():
            i = int(prof.reshape(-1).argmax())
            cands.append(pts.reshape(-1, d)[i][None])
            cand_lp.append(float(prof.reshape(-1)[i]))
    x_c = torch.cat(cands).to(sr.best_point.dtype)
    lp_c = torch.tensor(cand_lp, dtype=x_c.dtype, device=x_c.device)
    evals = 0
    if config.best_fit:
        res_b = lbfgs_maximise(log_prob, x_c, config=config, preconditioner=h0)
        evals = res_b.n_evaluations
        better = res_b.log_prob > lp_c
        lp_c = torch.where(better, res_b.log_prob, lp_c)
        x_c = torch.where(better[:, None], res_b.x, x_c)
    i = int(torch.argmax(torch.nan_to_num(lp_c, nan=-math.inf)))
    return x_c[i], float(lp_c[i]), evals


def _restart_sweeps(runner: TaskRunner, log_prob: LogProb, sr: SampleResult,
                    profiles: _Profiles, centres: tuple[Tensor, Tensor], best_fit: Tensor,
                    spec: SliceSpec, tally: _Tally) -> _Profiles:
    """Up to ``restart_sweeps`` sweeps that restart bins from their neighbours' optima and the
    best fit (:func:`_neighbour_starts_1d`, :func:`_neighbour_starts_2d`); they end early when
    no bin gains more than ``_RESTART_GAIN``. Counts into ``tally``; returns the profiles."""
    config = spec.config
    d, p1 = profiles.prof1.shape[0], profiles.prof1.shape[1]
    for sweep in range(config.restart_sweeps):
        parts = []
        if config.profile_1d and d and p1 >= 2:
            parts.append(("1d", *_neighbour_starts_1d(profiles.prof1, profiles.pts1,
                                                      centres[0], best_fit)))
        if config.profile_2d and sr.pairs.shape[0]:
            parts.append(("2d", *_neighbour_starts_2d(profiles.prof2, profiles.pts2,
                                                      centres[1], sr.pairs, best_fit,
                                                      _RESTART_GAIN)))
        parts = [part for part in parts if part[1].shape[0]]
        if not parts:
            break
        res, counts = _optimise_tasks(runner, log_prob, torch.cat([part[1] for part in parts]),
                                      torch.cat([part[2] for part in parts]), spec,
                                      f"profiling, restart sweep {sweep + 1}")
        tally.add(res, counts)
        tally.n_points += res.x.shape[0]
        profiles, gain = _merge(profiles, [(part[0], part[3]) for part in parts], res)
        log.info("profiling: restart sweep %d from neighbouring bins: %d start points, largest "
                 "gain %.3g in log L", sweep + 1, res.x.shape[0], gain)
        if gain <= _RESTART_GAIN:
            break
    return profiles


def _preconditioner(covariance: Tensor | None, ranges: Tensor) -> Tensor | None:
    """The L-BFGS initial inverse Hessian: ``covariance`` symmetrised, on the device and in
    the dtype of ``ranges`` (``None`` without a covariance)."""
    if covariance is None:
        return None
    h0 = covariance.to(device=ranges.device, dtype=ranges.dtype)
    return 0.5 * (h0 + h0.T)


def profile(
    log_prob: LogProb,
    sample_result: SampleResult,
    *,
    config: ProfileConfig | None = None,
    covariance: Tensor | None = None,
    names: Sequence[str] | None = None,
    runner: TaskRunner | None = None,
) -> ProfileResult:
    """Maximise ``log_prob`` from the best points per profile bin with the binned coordinates fixed.

    All start points (1D and 2D, all kept ``n_best`` per bin) are optimised independently, as
    tasks of ``config.task_size`` consecutive points (bin by bin) that ``runner`` runs (in this
    process by default, or on Dask workers) and whose results are merged per bin in task order,
    so the result does not depend on the number of workers. The profile value of a bin is the
    best of its points, and never below its start value. NaN values of the target count as ``-inf``; both are counted
    and reported in :attr:`ProfileResult.nonfinite`.

    Args:
        log_prob: the target ``(B, d) -> (B,)``, differentiable.
        sample_result: the output of :func:`~smeft_pyhf.sampler.sampling.sample_and_histogram`.
        config: the step configuration (default :class:`ProfileConfig`).
        covariance: (d, d) posterior covariance estimate (e.g. of the pre-scaling sample),
            the L-BFGS preconditioner when ``config.precondition``; ``None``: none.
        names: the ``d`` coefficient names, for error messages.
        runner: where the tasks run (:class:`~smeft_pyhf.cluster.InProcess` by default, or a
            :class:`~smeft_pyhf.cluster.DaskRunner`; ``log_prob`` must then pickle).

    Returns:
        A :class:`ProfileResult` (device and dtype of the sample result).

    Raises:
        DataError: when the target is ``+inf`` at a point the optimiser evaluated (named in
            the message).

    Example:
        >>> import torch
        >>> from smeft_pyhf.sampler.sampling import SampleConfig, sample_and_histogram
        >>> target = lambda x: -0.5 * (x ** 2).sum(-1)
        >>> draw = lambda n: (torch.randn(n, 2), -0.5 * 0.0 * torch.ones(n))
        >>> sr = sample_and_histogram(draw, target, ranges=torch.tensor([[-3.0, 3.0]] * 2),
        ...     config=SampleConfig(n_batches=1, batch_size=5000, profile_bins_1d=6,
        ...                         profile_bins_2d=3))
        >>> pr = profile(target, sr)
        >>> [round(v, 3) for v in pr.profile1d[0].tolist()]
        [-3.125, -1.125, -0.125, -0.125, -1.125, -3.125]
    """
    config = config or ProfileConfig()
    start = time.perf_counter()
    runner = runner or InProcess()
    names = None if names is None else tuple(str(n) for n in names)
    checked = CheckedTarget(log_prob, step="profiling", names=names, logger=log)
    sr = sample_result
    ranges = sr.ranges
    h0 = _preconditioner(covariance, ranges) if config.precondition else None
    spec = SliceSpec(config, h0, names)
    sampled1d, sampled2d, profiles = _sampled_profiles(sr)
    x0, fixed, owners = _start_rows(sr, config)
    tally = _Tally(n_points=x0.shape[0])
    if tally.n_points:
        res, counts = _optimise_tasks(runner, log_prob, x0, fixed, spec, "profiling")
        tally.add(res, counts)
        profiles, _ = _merge(profiles, owners, res)
    best_fit, best_lp, evals = _global_best(checked, sr, profiles, config, h0)
    tally.n_evaluations += evals
    p2 = sr.profile2d_log_prob.shape[1] if sr.profile2d_log_prob.ndim == 4 else 0
    centres1 = bin_centres(ranges, sr.profile1d_log_prob.shape[1])
    centres2 = bin_centres(ranges, p2) if p2 else ranges.new_zeros((ranges.shape[0], 0))
    profiles = _restart_sweeps(runner, log_prob, sr, profiles, (centres1, centres2), best_fit,
                               spec, tally)
    if config.restart_sweeps:
        best_fit, best_lp, evals = _global_best(checked, sr, profiles, config, h0)
        tally.n_evaluations += evals
    checked.check()
    nonfinite = report_nonfinite(_add(checked.counts(), tally.nonfinite), names, "profiling")
    n_points = tally.n_points
    result = ProfileResult(
        profile1d=profiles.prof1,
        profile1d_points=profiles.pts1,
        profile2d=profiles.prof2,
        profile2d_points=profiles.pts2,
        sampled1d=sampled1d,
        sampled2d=sampled2d,
        centres1d=centres1,
        centres2d=centres2,
        best_fit=best_fit,
        best_log_prob=best_lp,
        n_points=n_points,
        converged_fraction=tally.converged / n_points if n_points else 1.0,
        mean_steps=tally.steps / n_points if n_points else 0.0,
        n_evaluations=tally.n_evaluations,
        seconds=time.perf_counter() - start,
        nonfinite=nonfinite,
    )
    log.info("profiled %d start points in %.1f s: %.1f L-BFGS steps on average, %.1f%% converged",
             n_points, result.seconds, result.mean_steps, 100 * result.converged_fraction)
    return result

r"""A coefficient's marginal tail from its mean force, where the flow under-covers that tail.

Step 4's marginals are weighted histograms of flow draws: where the flow is too light (a long
tail against a prior edge), few draws land there, each carries a large weight, and a finite
sample misses part of that mass; the interval end on that side comes out too short and moves
from one sample to the next (``heavy_weights`` and the chain check of
:mod:`smeft_pyhf.results.diagnostics` flag it). The marginal ``m(c)`` of coefficient ``c`` also
obeys

.. math:: \frac{d \log m}{dc}(c) = E\left[\partial_c \log p(c, x_o) \,\middle|\, c\right],

the conditional mean of the target's derivative at fixed ``c`` (``x_o`` the other
coefficients). It needs no draws far out in ``c``, only a sample of the *conditional* at each
``c``. :func:`mean_force_tail` walks a grid from the marginal mean to the end of the histogram
range on the flagged side: ``n_chains`` Hamiltonian Monte Carlo chains
(:func:`~smeft_pyhf.sampler.kernels.hmc.run_hmc`) sample ``x_o`` at fixed ``c``, started from
the flow's weighted draws near the mean and carried from one grid point to the next (their
coordinates move with the linear regression of ``x_o`` on ``c``, preconditioned by the
Cholesky factor of the conditional covariance of the weighted draws, so one step size fits all
directions). After ``burn_in`` iterations (the step size adapts) each chain's force is averaged
over ``n_iterations``. The chains then walk the grid back: on the way out they lag a little
behind the conditional as it moves with ``c``, on the way back in the other direction, so the
mean of both sweeps cancels the lag to first order and their difference measures it. The mean
over the independent chains and its standard error give ``d log m / dc`` per grid point,
integrated by the trapezoid rule. The integrated log density is
matched to the weighted histogram over ``[mean, mean + anchor_sd sd]`` on that side, and it
replaces the histogram beyond, bin by bin; the row keeps its total mass.

The other coefficients' marginals then take the rebuilt one's mass: step 4's draws weighted
again by :func:`stratified_target` (post-stratification on the rebuilt coefficient) give every
1D and 2D marginal the rebuilt mass in each bin of that coefficient, with the shape within a bin
from the draws there (:func:`stratify` assembles the result).

The method assumes that chains at fixed ``c`` mix across the conditional: a conditional with
separated modes (``x_1 = x_0^2`` plus noise, at fixed ``x_1``) keeps each chain in the mode it
starts in and biases the force, and neither the force errors nor the sweeps' lag show it.

:func:`flagged_tails` chooses the tails: those whose heaviest weights sit together in one
coefficient's tail (:func:`~smeft_pyhf.results.diagnostics.heavy_weights` above its thresholds)
and the ends the chain check moved.

Example:
    >>> import torch
    >>> from smeft_pyhf.sampler.pipeline import SamplerConfig, run_sampler
    >>> cfg = SamplerConfig.reduced().replace(
    ...     mean_force=MeanForceConfig(n_chains=64, when="always", grid_points=8))
    >>> res = run_sampler(lambda x: -0.5 * (x**2).sum(-1), names=["a", "b"], config=cfg,
    ...                   seed=0, progress=False)
    >>> sorted((t.name, t.side) for t in res.mean_force.tails)[:2]
    [('a', 'high'), ('a', 'low')]

References:
    | G. Ciccotti et al., Blue moon sampling, vectorial reaction coordinates, and unbiased
    | constrained dynamics, ChemPhysChem 6 (2005) 1809 (the mean force along a coordinate).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
from torch import Tensor

from smeft_pyhf.exceptions import ConfigError
from smeft_pyhf.results.diagnostics import Thresholds, heavy_tails, heavy_weights, marginal_moments
from smeft_pyhf.results.intervals import marginalised_interval
from smeft_pyhf.sampler.config import check_field
from smeft_pyhf.sampler.kernels.hmc import run_hmc, value_and_grad
from smeft_pyhf.sampler.sampling import SampleResult, bin_centres

__all__ = ["MeanForce", "MeanForceConfig", "MeanForceTail", "TailForces", "flagged_tails",
           "mean_force_tail", "replace_tails", "sample_heavy_weights", "stratified_target",
           "stratify", "tails_to_replace"]

log = logging.getLogger(__name__)

LogProb = Callable[[Tensor], Tensor]
Draw = Callable[[int, torch.Generator], tuple[Tensor, Tensor]]
SIDES = ("low", "high")


@dataclass(frozen=True)
class MeanForceConfig:
    """Settings of the mean-force tails (off unless ``n_chains > 0``).

    Attributes:
        n_chains: independent HMC chains per tail (0: no tail is replaced).
        when: ``"flagged"``: the tails :func:`flagged_tails` names; ``"always"``: both tails
            of every coefficient (costly with many coefficients; for checks).
        grid_points: grid points from the marginal mean to the end of the histogram range.
        n_iterations: HMC iterations per grid point whose forces are averaged ...
        burn_in: ... after these (the step size adapts during them).
        first_burn_in: the burn-in at the first grid point, where the chains start from
            resampled flow draws.
        leapfrog_steps: leapfrog steps per iteration.
        step_size: initial leapfrog step size in the preconditioned coordinates.
        target_acceptance: the mean acceptance the step size adapts to.
        anchor_sd: the histogram is kept, and the reconstruction matched to it, from the
            marginal mean to this many marginal standard deviations out; beyond, the tail is
            replaced.
        pool: weighted flow draws for the start points and the preconditioner.
        sweeps: 2: the chains walk the grid out and back, and the forces of both are
            averaged (see :func:`mean_force_tail`); 1: outwards only.
        stratify: step 4's draws are weighted again so that every other 1D and 2D marginal
            takes the rebuilt coefficient's marginal (:func:`stratified_target`; costs one
            more pass of step 4 over the same draws).
    """

    n_chains: int = 0
    when: Literal["flagged", "always"] = "flagged"
    grid_points: int = 24
    n_iterations: int = 30
    burn_in: int = 10
    first_burn_in: int = 40
    leapfrog_steps: int = 8
    step_size: float = 0.3
    target_acceptance: float = 0.75
    anchor_sd: float = 1.0
    pool: int = 65536
    sweeps: int = 2
    stratify: bool = True

    def __post_init__(self) -> None:
        check_field(self.n_chains >= 0, self, "n_chains", "must be >= 0")
        check_field(self.n_chains != 1, self, "n_chains", "must be 0 (off) or >= 2")
        check_field(self.when in ("flagged", "always"), self, "when",
                    "must be 'flagged' or 'always'")
        check_field(self.grid_points >= 3, self, "grid_points", "must be >= 3")
        check_field(self.n_iterations >= 1, self, "n_iterations", "must be >= 1")
        check_field(self.burn_in >= 0, self, "burn_in", "must be >= 0")
        check_field(self.first_burn_in >= 0, self, "first_burn_in", "must be >= 0")
        check_field(self.leapfrog_steps >= 1, self, "leapfrog_steps", "must be >= 1")
        check_field(self.step_size > 0, self, "step_size", "must be > 0")
        check_field(0 < self.target_acceptance < 1, self, "target_acceptance",
                    "must lie in (0, 1)")
        check_field(self.anchor_sd > 0, self, "anchor_sd", "must be > 0")
        check_field(self.pool >= 16 * max(self.n_chains, 1), self, "pool",
                    "must be >= 16 n_chains")
        check_field(self.sweeps in (1, 2), self, "sweeps", "must be 1 or 2")


class MeanForceTail(NamedTuple):
    """One tail's reconstruction (arrays over the grid, ordered from the mean outwards).

    Attributes:
        name: the coefficient.
        side: ``"low"`` or ``"high"``.
        grid: the grid points ``c``.
        force: ``d log m / dc`` there (the mean of both sweeps).
        force_error: its standard error over the chains.
        force_outward: the forces of the outward sweep alone.
        force_inward: those of the sweep back (None with one sweep).
        log_density: ``log m(c)`` matched to the histogram's density (probability per unit).
        log_density_error: its error from the forces' (accumulated from the first point).
        cut: where the replaced part of the histogram begins.
        mass_weights: the weighted histogram's mass beyond ``cut``.
        mass_mean_force: the reconstruction's mass beyond ``cut`` (before the row is
            renormalised).
        end_weights: the marginalised 95 % interval's end on this side, weighted histogram.
        end_mean_force: the same end with the tail replaced.
        end_error: that end's error in marginal standard deviations: from
            ``log_density_error`` and ``end_lag`` added in quadrature.
        end_lag: half the difference of that end from either sweep alone (the chains' lag
            behind the moving conditional, which the mean of both cancels to first order).
        acceptance: the chains' mean acceptance after adaptation.
        seconds: wall time.
    """

    name: str
    side: str
    grid: np.ndarray
    force: np.ndarray
    force_error: np.ndarray
    force_outward: np.ndarray
    force_inward: np.ndarray | None
    log_density: np.ndarray
    log_density_error: np.ndarray
    cut: float
    mass_weights: float
    mass_mean_force: float
    end_weights: float
    end_mean_force: float
    end_error: float
    end_lag: float
    acceptance: float
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """Plain mapping for ``results.json``."""
        out: dict[str, Any] = {}
        for k, v in self._asdict().items():
            if k in ("name", "side"):
                continue
            if v is None:
                out[k] = None
            else:
                out[k] = [float(a) for a in v] if isinstance(v, np.ndarray) else float(v)
        return out


class MeanForce(NamedTuple):
    """Every replaced tail of a run and the marginals before and after.

    Attributes:
        tails: one :class:`MeanForceTail` per replaced tail.
        marginal1d: ``(d, bins)`` step 4's 1D marginals with those tails replaced.
        marginal1d_error: their errors (the reconstruction's where replaced).
        weighted_marginal1d: ``(d, bins)`` step 4's weighted histograms as they were.
        n_chains: chains per tail.
        seconds: wall time of all tails.
    """

    tails: tuple[MeanForceTail, ...]
    marginal1d: Tensor
    marginal1d_error: Tensor
    weighted_marginal1d: Tensor
    n_chains: int
    seconds: float

    def to_dict(self, names: Sequence[str]) -> dict[str, Any]:
        """Plain mapping for ``results.json``: per coefficient and side the tail's figures,
        and per replaced coefficient its weighted histogram (probability per bin)."""
        tails: dict[str, dict[str, Any]] = {}
        for t in self.tails:
            tails.setdefault(t.name, {})[t.side] = t.to_dict()
        weighted = self.weighted_marginal1d.detach().cpu().double().numpy()
        return {"n_chains": self.n_chains, "seconds": self.seconds, "tails": tails,
                "weighted_marginal1d": {n: [float(v) for v in weighted[list(names).index(n)]]
                                        for n in tails}}


def sample_heavy_weights(sample: SampleResult, names: Sequence[str]) -> dict[str, Any]:
    """Step 4's ``heavy_weights`` figure (:func:`~smeft_pyhf.results.diagnostics.heavy_weights`):
    where its heaviest samples sit, in marginal widths; ``{}`` when the sample kept none.

    Example:
        >>> import torch
        >>> from smeft_pyhf.sampler.pipeline import SamplerConfig, run_sampler
        >>> res = run_sampler(lambda x: -0.5 * (x**2).sum(-1), names=["a"],
        ...                   config=SamplerConfig.reduced(), seed=0, progress=False)
        >>> sample_heavy_weights(res.sample_result, ["a"])["n"]
        20
    """
    n_s = float(sample.n_samples)
    if sample.heavy_log_weight is None or n_s <= 0:
        return {}
    probability = _numpy(sample.marginal1d)
    centres = _numpy(bin_centres(sample.ranges.double(), probability.shape[1]))
    mean, std = marginal_moments(probability, centres)
    return heavy_weights(_numpy(sample.heavy_points), _numpy(sample.heavy_log_weight),
                         log_total=float(sample.log_evidence) + math.log(n_s), mean=mean,
                         std=std, names=list(names))


def flagged_tails(sample: SampleResult, names: Sequence[str], *,
                  chain_flags: Sequence[tuple[str, str]] = (),
                  thresholds: Thresholds = Thresholds()) -> list[tuple[str, str]]:
    """``(name, side)`` of every tail the flow under-covers: where step 4's heaviest weights sit
    together (:func:`~smeft_pyhf.results.diagnostics.heavy_tails`) and every end in
    ``chain_flags`` (:meth:`~smeft_pyhf.sampler.chain_check.ChainCheck.flagged`).

    Example:
        >>> import torch
        >>> from smeft_pyhf.sampler.pipeline import SamplerConfig, run_sampler
        >>> res = run_sampler(lambda x: -0.5 * (x**2).sum(-1), names=["a"],
        ...                   config=SamplerConfig.reduced(), seed=0, progress=False)
        >>> flagged_tails(res.sample_result, ["a"], chain_flags=[("a", "low")])
        [('a', 'low')]
    """
    out = [(n, s) for n, s in heavy_tails(sample_heavy_weights(sample, names), thresholds).items()]
    out += [(n, s) for n, s in chain_flags if (n, s) not in out]
    return out


def _numpy(x: Any) -> np.ndarray:
    """A float64 copy (never a view of a tensor that callers keep)."""
    if isinstance(x, Tensor):
        return x.detach().cpu().double().numpy().copy()
    return np.array(x, dtype=float)


class _Pool(NamedTuple):
    """Weighted flow draws: points (n, d) in the target's dtype and normalised weights (n,)."""

    x: Tensor
    w: Tensor


def _draw_pool(log_prob: LogProb, draw: Draw, n: int, generator: torch.Generator,
               dtype: torch.dtype | None, chunk: int = 16384) -> _Pool:
    xs, lws = [], []
    with torch.no_grad():
        for k in range(0, n, chunk):
            x, log_q = draw(min(chunk, n - k), generator)
            x = x.to(dtype or x.dtype)
            lw = log_prob(x).to(x.dtype) - log_q.to(x.dtype)
            xs.append(x)
            lws.append(torch.nan_to_num(lw, nan=-math.inf, posinf=-math.inf))
    x, lw = torch.cat(xs), torch.cat(lws)
    if not bool(torch.isfinite(lw).any()):
        raise ConfigError("the target is -inf or NaN at every one of the flow's draws",
                          where="mean-force tails", hint="check the fit before its tails")
    w = torch.softmax(lw, 0)
    return _Pool(x, w)


def _conditional_map(pool: _Pool, i: int) -> tuple[Tensor, Tensor, Tensor]:
    """Mean, regression slope on ``x_i`` and Cholesky factor of the conditional covariance of
    the other coordinates, from the weighted pool."""
    x, w = pool.x, pool.w
    mean = (w[:, None] * x).sum(0)
    dx = x - mean
    cov = (w[:, None] * dx).T @ dx
    other = [k for k in range(x.shape[1]) if k != i]
    s_oo = cov[other][:, other]
    s_oi = cov[other, i]
    slope = s_oi / cov[i, i]
    cond = s_oo - torch.outer(slope, s_oi)
    cond = 0.5 * (cond + cond.T)
    jitter = 1e-10 * float(torch.diagonal(cond).abs().max().clamp_min(1e-300))
    eye = torch.eye(len(other), dtype=x.dtype, device=x.device)
    for _ in range(8):
        chol, info = torch.linalg.cholesky_ex(cond + jitter * eye)
        if int(info) == 0:
            return mean, slope, chol
        jitter *= 100
    return mean, slope, torch.diag(torch.diagonal(cond).clamp_min(1e-300).sqrt())


class TailForces(NamedTuple):
    """Per-chain mean forces of :func:`mean_force_tail`.

    Attributes:
        outward: ``(grid points, n_chains)`` on the way out from the mean.
        inward: the same on the way back (None with one sweep).
        acceptance: the chains' mean acceptance after adaptation.
        seconds: wall time.
    """

    outward: np.ndarray
    inward: np.ndarray | None
    acceptance: float
    seconds: float


def mean_force_tail(
    log_prob: LogProb,
    pool: _Pool,
    i: int,
    *,
    grid: np.ndarray,
    config: MeanForceConfig,
    generator: torch.Generator,
    name: str | None = None,
    level: int = logging.DEBUG,
) -> TailForces:
    """Each chain's mean of ``d log p / dx_i`` at fixed ``x_i``, at every point of ``grid``.

    The chains walk the grid outwards and (with ``config.sweeps == 2``) back: at every point
    they lag a little behind the conditional as it moves, in opposite directions on the two
    sweeps, so the mean of both cancels the lag to first order and their difference measures
    it.

    Args:
        log_prob: the target ``(B, d) -> (B,)``, differentiable (float64 preferred).
        pool: weighted flow draws (start points near ``grid[0]``, the preconditioner).
        i: the coordinate.
        grid: the values of coordinate ``i``, from the marginal mean outwards.
        config: a :class:`MeanForceConfig` with ``n_chains > 0``.
        generator: random number generator on the pool's device.
        name: the coordinate's name, for the progress lines.
        level: logging level of the progress lines (one per six grid points).

    Returns:
        A :class:`TailForces`.
    """
    t0 = time.perf_counter()
    x, w = pool.x, pool.w
    dim = x.shape[1]
    if dim == 1:  # the marginal is the target: its derivative, no chains
        g = value_and_grad(log_prob, torch.as_tensor(grid, dtype=x.dtype, device=x.device)[:, None])[1]
        exact = np.repeat(g[:, 0].cpu().numpy()[:, None], config.n_chains, 1)
        return TailForces(exact, exact if config.sweeps == 2 else None, 1.0,
                          time.perf_counter() - t0)
    other = [k for k in range(dim) if k != i]
    mean, slope, chol = _conditional_map(pool, i)
    sd = float(torch.sqrt((w * (x[:, i] - mean[i]) ** 2).sum()))
    near = (x[:, i] - float(grid[0])).abs() < 0.25 * sd
    if float(w[near].sum()) <= 0:
        near = torch.ones_like(near)
    pick = torch.multinomial((w * near).float(), config.n_chains, replacement=True,
                             generator=generator)
    start = x[pick][:, other] - (mean[other] + slope * (float(grid[0]) - mean[i]))
    y = torch.linalg.solve_triangular(chol, start.T, upper=False).T

    rates: list[float] = []
    eps = config.step_size
    order = list(range(len(grid)))
    if config.sweeps == 2:
        order += order[::-1]
    per_chain = np.zeros((config.sweeps, len(grid), config.n_chains))
    for visit, k in enumerate(order):
        c = float(grid[k])
        centre = mean[other] + slope * (c - mean[i])

        def full(u: Tensor, c: float = c, centre: Tensor = centre) -> Tensor:
            z = torch.empty(u.shape[0], dim, dtype=u.dtype, device=u.device)
            z[:, other] = centre + u @ chol.T
            z[:, i] = c
            return z

        burn = config.first_burn_in if visit == 0 else config.burn_in
        sums = torch.zeros(config.n_chains, dtype=x.dtype, device=x.device)

        def record(it: int, u: Tensor, burn: int = burn, full: Callable = full,
                   sums: Tensor = sums) -> None:
            if it < burn:
                return
            sums.add_(value_and_grad(log_prob, full(u))[1][:, i])

        res = run_hmc(lambda u, full=full: log_prob(full(u)), y,
                      n_iterations=burn + config.n_iterations, generator=generator,
                      leapfrog_steps=config.leapfrog_steps, step_size=eps, adapt_iterations=burn,
                      target_acceptance=config.target_acceptance, callback=record)
        y, eps = res.samples, res.step_size
        per_chain[int(visit >= len(grid)), k] = (sums / config.n_iterations).cpu().numpy()
        rates.append(res.acceptance)
        log.log(level if visit % 6 == 5 or visit == len(order) - 1 else logging.DEBUG,
                "  mean force of %s at %.4g: %+.3f (acceptance %.2f; grid point %d/%d, %.1f s)",
                name or f"coordinate {i}", c, float(per_chain[int(visit >= len(grid)), k].mean()),
                res.acceptance, visit + 1, len(order), time.perf_counter() - t0)
    return TailForces(per_chain[0], per_chain[1] if config.sweeps == 2 else None,
                      float(np.mean(rates)), time.perf_counter() - t0)


class _Rebuilt(NamedTuple):
    """One tail's forces integrated and put into the histogram row."""

    log_m: np.ndarray  # along the grid, matched to the histogram
    var: np.ndarray  # its variance from the forces, accumulated from the first point
    row: np.ndarray  # the row with the tail replaced (total kept)
    error: np.ndarray  # its errors
    mass: float  # the reconstruction's mass beyond the cut, before the row is renormalised


def _rebuild(force: np.ndarray, force_error: np.ndarray, grid: np.ndarray, sign: float,
             centres: np.ndarray, row: np.ndarray, row_error: np.ndarray, width: float,
             cut: float) -> _Rebuilt | None:
    """The forces integrated by the trapezoid rule, matched to ``row`` between the grid's first
    point and ``cut``, and put in place of ``row`` beyond ``cut`` (None when either part has
    no bin)."""
    step = np.abs(np.diff(grid))
    log_m = np.concatenate([[0.0], np.cumsum(0.5 * sign * (force[1:] + force[:-1]) * step)])
    var = np.concatenate([[0.0], np.cumsum((0.5 * step) ** 2
                                           * (force_error[1:] ** 2 + force_error[:-1] ** 2))])
    # at the bin centres on that side: interpolated, extrapolated with the last force
    t = sign * (centres - grid[0])  # distance outwards from the first point
    g = sign * (grid - grid[0])
    log_x = np.interp(t, g, log_m) + np.where(t > g[-1], (t - g[-1]) * sign * force[-1], 0.0)
    var_x = np.interp(t, g, var)
    anchor = (t >= 0) & (sign * (centres - cut) <= 0) & (row > 0)
    replace = sign * (centres - cut) > 0
    if not anchor.any() or not replace.any():
        return None
    pa = row[anchor]
    offset = float((pa * (np.log(row[anchor] / width) - log_x[anchor])).sum() / pa.sum())
    new = row.copy()
    new[replace] = np.exp(log_x[replace] + offset) * width
    new_error = row_error.copy()
    new_error[replace] = new[replace] * np.sqrt(var_x[replace])
    mass = float(new[replace].sum())
    scale = row.sum() / new.sum()
    return _Rebuilt(log_m + offset, var, new * scale, new_error * scale, mass)


def _tail_grid(mean: float, end: float, points: int) -> np.ndarray:
    """``points`` values from ``mean`` towards ``end``, the last half a step before it."""
    step = (end - mean) / (points - 0.5)
    return mean + step * np.arange(points)


def _outer_end(centres: np.ndarray, probability: np.ndarray, side: str) -> float:
    segments = marginalised_interval(centres, probability, level="95").segments
    if not segments:
        return math.nan
    return float(segments[0][0] if side == "low" else segments[-1][1])


def replace_tails(
    log_prob: LogProb,
    draw: Draw,
    sample: SampleResult,
    tails: Sequence[tuple[str, str]],
    *,
    names: Sequence[str],
    config: MeanForceConfig,
    generator: torch.Generator,
    dtype: torch.dtype | None = None,
    level: int = logging.INFO,
) -> MeanForce:
    """Replace the 1D marginal tails ``tails`` (``(name, side)``) of ``sample`` by their
    mean-force reconstruction (module docstring).

    Args:
        log_prob: the target ``(B, d) -> (B,)`` (the likelihood's dtype; float64 preferred).
        draw: ``(n, generator) -> (x, log q(x))``, the trained flow's sampler of step 4.
        sample: step 4's :class:`~smeft_pyhf.sampler.sampling.SampleResult`.
        tails: the tails to replace.
        names: the coefficient names.
        config: a :class:`MeanForceConfig` with ``n_chains > 0``.
        generator: random number generator on the flow's device.
        dtype: the dtype ``log_prob`` takes (the chains run in it; default: that of the
            draws).
        level: logging level of the progress lines.

    Returns:
        A :class:`MeanForce`.
    """
    t0 = time.perf_counter()
    names = list(names)
    probability = _numpy(sample.marginal1d)
    error = _numpy(sample.marginal1d_error)
    weighted = probability.copy()
    ranges = _numpy(sample.ranges).reshape(len(names), 2)
    bins = probability.shape[1]
    centres = _numpy(bin_centres(sample.ranges.double(), bins))
    width = (ranges[:, 1] - ranges[:, 0]) / bins
    mean, sd = marginal_moments(probability, centres)
    done: list[MeanForceTail] = []
    pool = _draw_pool(log_prob, draw, config.pool, generator, dtype) if tails else None
    for name, side in tails:
        if name not in names or side not in SIDES:
            raise ConfigError(f"no tail {side!r} of {name!r} to replace", where="mean-force tails",
                              hint=f"name one of {names} and a side of {SIDES}")
        i = names.index(name)
        sign = -1.0 if side == "low" else 1.0
        end = ranges[i, 0] if side == "low" else ranges[i, 1]
        if not np.isfinite(sd[i]) or sd[i] <= 0 or sign * (end - mean[i]) <= 0:
            continue
        assert pool is not None
        grid = _tail_grid(float(mean[i]), float(end), config.grid_points)
        forces = mean_force_tail(log_prob, pool, i, grid=grid, config=config,
                                 generator=generator, name=name, level=level)
        per_chain = (forces.outward if forces.inward is None
                     else 0.5 * (forces.outward + forces.inward))
        n = per_chain.shape[1]
        force = per_chain.mean(1)
        force_error = per_chain.std(1, ddof=1) / math.sqrt(n)
        cut = float(mean[i] + sign * config.anchor_sd * sd[i])
        x = centres[i]
        rebuilt = _rebuild(force, force_error, grid, sign, x, probability[i], error[i],
                           float(width[i]), cut)
        if rebuilt is None:
            continue
        replace = sign * (x - cut) > 0
        before = _outer_end(x, probability[i], side)
        after = _outer_end(x, rebuilt.row, side)
        # the end's error: the replaced tail moved by one standard error of its log density,
        # and half the difference of the two sweeps' ends (the chains' lag)
        var_x = np.interp(sign * (x - grid[0]), sign * (grid - grid[0]), rebuilt.var)
        ends = []
        for s in (-1.0, 1.0):
            shifted = rebuilt.row.copy()
            shifted[replace] *= np.exp(s * np.sqrt(var_x[replace]))
            ends.append(_outer_end(x, shifted, side))
        statistical = abs(ends[1] - ends[0]) / 2 / float(sd[i])
        lag = 0.0
        if forces.inward is not None:
            sweep_ends = []
            for one in (forces.outward, forces.inward):
                r = _rebuild(one.mean(1), force_error, grid, sign, x, probability[i], error[i],
                             float(width[i]), cut)
                sweep_ends.append(_outer_end(x, r.row, side) if r is not None else after)
            lag = abs(sweep_ends[1] - sweep_ends[0]) / 2 / float(sd[i])
        tail = MeanForceTail(
            name, side, grid, force, force_error,
            forces.outward.mean(1), None if forces.inward is None else forces.inward.mean(1),
            rebuilt.log_m, np.sqrt(rebuilt.var), cut, float(probability[i][replace].sum()),
            rebuilt.mass, before, after, math.hypot(statistical, lag), lag,
            forces.acceptance, forces.seconds)
        probability[i], error[i] = rebuilt.row, rebuilt.error
        done.append(tail)
        log.log(level, "mean-force tail %s %s: %d chains x %d grid points x %d sweep(s), "
                "%.1f s; mass beyond %.4g %.4g (weighted %.4g); 95%% end %.4g -> %.4g (+- %.3f "
                "sd, of which the sweeps' lag %.3f)", name, side, config.n_chains,
                config.grid_points, config.sweeps, forces.seconds, cut, rebuilt.mass,
                tail.mass_weights, before, after, tail.end_error, lag)
    ref = sample.marginal1d
    return MeanForce(tuple(done), torch.as_tensor(probability, dtype=ref.dtype, device=ref.device),
                     torch.as_tensor(error, dtype=ref.dtype, device=ref.device),
                     torch.as_tensor(weighted, dtype=ref.dtype, device=ref.device),
                     config.n_chains, time.perf_counter() - t0)


def stratified_target(log_prob: LogProb, sample: SampleResult, forced: MeanForce,
                      names: Sequence[str]) -> LogProb:
    """``log_prob`` times, for every coefficient with a rebuilt tail, the ratio of its rebuilt
    marginal to the weighted one in the bin of ``sample``'s 1D histogram that holds the point
    (1 outside the ranges and where either is empty).

    Step 4's draws weighted by this target give the rebuilt coefficient exactly its rebuilt
    marginal and every other 1D and 2D marginal the mass that marginal puts in each of its
    bins, with the shape within a bin still from the draws there: post-stratification on the
    rebuilt coefficient. A few heavy draws in its tail then carry that bin's rebuilt mass, not
    more, and a tail the draws hold too little of gets its mass.

    Example:
        >>> import torch
        >>> from smeft_pyhf.sampler.pipeline import SamplerConfig, run_sampler
        >>> cfg = SamplerConfig.reduced().replace(
        ...     mean_force=MeanForceConfig(n_chains=32, when="always", grid_points=6))
        >>> res = run_sampler(lambda x: -0.5 * (x**2).sum(-1), names=["a"], config=cfg,
        ...                   seed=0, progress=False)
        >>> f = stratified_target(lambda x: -0.5 * (x**2).sum(-1), res.sample_result,
        ...                       res.mean_force, ["a"])
        >>> f(torch.zeros(1, 1)).shape
        torch.Size([1])
    """
    names = list(names)
    ref = sample.marginal1d
    bins = ref.shape[1]
    rows = sorted({names.index(t.name) for t in forced.tails})
    old = forced.weighted_marginal1d[rows].double()
    new = forced.marginal1d[rows].double()
    ratio = torch.where((old > 0) & (new > 0), new / old.clamp_min(1e-300),
                        torch.ones_like(old))
    log_f = torch.cat([ratio.log(), torch.zeros(len(rows), 1, dtype=ratio.dtype,
                                                 device=ratio.device)], 1)  # last: outside
    ranges = sample.ranges[rows].double()
    index = torch.tensor(rows, device=ref.device)
    offsets = torch.arange(len(rows), device=ref.device) * (bins + 1)

    def target(x: Tensor) -> Tensor:
        lp = log_prob(x)
        u = (x[:, index].double() - ranges[:, 0]) / (ranges[:, 1] - ranges[:, 0]) * bins
        k = torch.floor(u)
        k = torch.where((k >= 0) & (k < bins) & torch.isfinite(k), k, torch.full_like(k, bins))
        extra = log_f.reshape(-1)[(k.long() + offsets).reshape(-1)].reshape(k.shape).sum(-1)
        return lp + extra.to(lp.dtype)

    return target


def stratify(sample: SampleResult, forced: MeanForce, stratified: SampleResult,
             names: Sequence[str]) -> SampleResult:
    """``sample`` with the marginals of ``stratified`` (step 4's draws weighted by
    :func:`stratified_target`) and the rebuilt rows of ``forced``; the weight figures (ESS,
    evidence, largest weight, the heaviest samples) stay those of ``sample``, which describe
    the flow.

    Example:
        >>> import torch
        >>> from smeft_pyhf.sampler.pipeline import SamplerConfig, run_sampler
        >>> cfg = SamplerConfig.reduced().replace(
        ...     mean_force=MeanForceConfig(n_chains=32, when="always", grid_points=6))
        >>> res = run_sampler(lambda x: -0.5 * (x**2).sum(-1), names=["a", "b"], config=cfg,
        ...                   seed=0, progress=False)
        >>> bool((res.sample_result.marginal1d == res.mean_force.marginal1d).all())
        True
    """
    rows = sorted({list(names).index(t.name) for t in forced.tails})
    m1 = stratified.marginal1d.clone()
    e1 = stratified.marginal1d_error.clone()
    m1[rows] = forced.marginal1d[rows].to(m1)
    e1[rows] = forced.marginal1d_error[rows].to(e1)
    return sample._replace(marginal1d=m1, marginal1d_error=e1,
                           marginal2d=stratified.marginal2d,
                           marginal2d_error=stratified.marginal2d_error)


def tails_to_replace(config: MeanForceConfig, sample: SampleResult, names: Sequence[str], *,
                     chain_flags: Sequence[tuple[str, str]] = ()) -> list[tuple[str, str]]:
    """The tails :func:`replace_tails` works on under ``config.when``."""
    if config.n_chains <= 0:
        return []
    if config.when == "always":
        return [(n, s) for n in names for s in SIDES]
    return flagged_tails(sample, names, chain_flags=chain_flags)



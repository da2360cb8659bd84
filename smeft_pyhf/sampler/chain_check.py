r"""A check of step 4 by Markov chains: does an exact sampler move mass across the interval ends?

Importance sampling is unbiased only where the flow ``q`` covers the posterior ``p``. Where
``q`` is too light (a second mode against a prior edge, a long tail) the weights there are
rare and large, and a finite sample misses part of that region: the marginal then loses mass
there, an interval end moves inwards, and neither the ESS nor the spread of repeated draws
from the same flow shows it.

The check runs ``n_chains`` Hamiltonian Monte Carlo chains
(:func:`~smeft_pyhf.sampler.kernels.hmc.run_hmc`) on the posterior pulled back to the flow's
Gaussian latent (``x = T(u)``, target :math:`\log p(T(u)) + \log|\det J_T(u)|`, which the
flow makes nearly standard normal, so one step size fits all directions). The chains start at
flow draws resampled by their weights, i.e. where importance sampling says the posterior is;
HMC leaves the exact posterior invariant, so if the weighted sample were right the chains
would keep its distribution. For both ends of every coefficient's marginalised 95 %
interval (step 4's histograms, :func:`~smeft_pyhf.results.intervals.marginalised_interval`)
the check compares the mass beyond the end in the weighted histogram with the mean over the
chains of each chain's fraction of iterations beyond it (after ``burn_in``; the spread over
the independent chains gives its standard error, whatever the autocorrelation). Both masses
are read from the same bins with the same linear interpolation inside the end's bin.

An end is flagged when the chains put significantly more (or less) mass beyond it,
``|z| > z_threshold`` with ``z = (m_chains - m_weights) / sqrt(se_chains^2 + se_weights^2)``,
and the difference moves the end by more than ``shift_threshold`` marginal standard
deviations (``shift = (m_chains - m_weights) / f(end)``, ``f`` the marginal density there).
The chains start from the weighted sample and drift only as far as they mix in
``n_iterations``, so the shift is a lower bound on the end's bias. The two conditions together
keep false alarms rare: at an end of a near-Gaussian marginal one standard error of the chains'
mass moves the end by a few hundredths of a width, so a shift of 0.1 needs far more than three
standard errors there; the ``z`` condition decides only at ends in long tails, where one
standard error is worth more.

Example:
    >>> import torch
    >>> from smeft_pyhf.sampler.pipeline import SamplerConfig, run_sampler
    >>> cfg = SamplerConfig.reduced().replace(
    ...     chain_check=ChainCheckConfig(n_chains=256, n_iterations=30, burn_in=10))
    >>> res = run_sampler(lambda x: -0.5 * (x**2).sum(-1), names=["a", "b"], config=cfg,
    ...                   seed=0, progress=False)
    >>> res.chain_check.flagged()
    []

References:
    | M. Hoffman et al., NeuTra-lizing bad geometry in HMC with neural transport (2019).
    | https://arxiv.org/abs/1903.03704
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from smeft_pyhf.exceptions import ConfigError
from smeft_pyhf.results.diagnostics import marginal_moments
from smeft_pyhf.results.intervals import marginalised_interval
from smeft_pyhf.sampler.config import check_field
from smeft_pyhf.sampler.kernels.hmc import run_hmc

__all__ = ["ChainCheck", "ChainCheckConfig", "check_with_chains", "tail_masses"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChainCheckConfig:
    """Settings of the Markov-chain check of step 4 (off unless ``n_chains > 0``).

    Attributes:
        n_chains: independent HMC chains (0: no check).
        n_iterations: HMC iterations per chain.
        burn_in: iterations left out of the masses (the step size adapts during them).
        leapfrog_steps: leapfrog steps per iteration.
        step_size: initial leapfrog step size in the flow's latent.
        target_acceptance: the mean acceptance the step size adapts to.
        z_threshold: an end is flagged above this significance ...
        shift_threshold: ... and this shift, in marginal standard deviations.
    """

    n_chains: int = 0
    n_iterations: int = 100
    burn_in: int = 20
    leapfrog_steps: int = 8
    step_size: float = 0.2
    target_acceptance: float = 0.75
    z_threshold: float = 3.0
    shift_threshold: float = 0.1

    def __post_init__(self) -> None:
        check_field(self.n_chains >= 0, self, "n_chains", "must be >= 0")
        check_field(self.n_chains != 1, self, "n_chains", "must be 0 (off) or >= 2")
        check_field(0 <= self.burn_in < self.n_iterations, self, "burn_in",
                    "must lie in [0, n_iterations)")
        check_field(self.leapfrog_steps >= 1, self, "leapfrog_steps", "must be >= 1")
        check_field(self.step_size > 0, self, "step_size", "must be > 0")
        check_field(0 < self.target_acceptance < 1, self, "target_acceptance",
                    "must lie in (0, 1)")
        check_field(self.z_threshold > 0, self, "z_threshold", "must be > 0")
        check_field(self.shift_threshold >= 0, self, "shift_threshold", "must be >= 0")


class ChainCheck(NamedTuple):
    """Result of :func:`check_with_chains`; arrays are ``(d, 2)``, column 0 the lower end.

    Attributes:
        names: coefficient names.
        ends: the outer ends of the weighted marginalised 95 % intervals.
        mass_weights: weighted posterior mass beyond each end.
        mass_weights_error: its Monte-Carlo error.
        mass_chains: the chains' mean fraction beyond each end.
        mass_chains_error: its standard error over the chains.
        z: significance of the difference.
        shift: the end's move implied by the difference, in marginal standard deviations
            (positive: outwards).
        n_chains: chains run.
        n_iterations: iterations per chain (``burn_in`` of them left out).
        acceptance: the chains' mean acceptance after adaptation.
        step_size: the adapted leapfrog step size.
        seconds: wall time of the check.
        thresholds: ``(z_threshold, shift_threshold)``.
    """

    names: tuple[str, ...]
    ends: np.ndarray
    mass_weights: np.ndarray
    mass_weights_error: np.ndarray
    mass_chains: np.ndarray
    mass_chains_error: np.ndarray
    z: np.ndarray
    shift: np.ndarray
    n_chains: int
    n_iterations: int
    acceptance: float
    step_size: float
    seconds: float
    thresholds: tuple[float, float]

    def flagged(self) -> list[tuple[str, str]]:
        """``(name, "low" | "high")`` of every end the chains move (see the module docstring)."""
        z_max, shift_max = self.thresholds
        bad = (np.abs(self.z) > z_max) & (np.abs(self.shift) > shift_max)
        return [(self.names[i], ("low", "high")[k]) for i, k in zip(*np.nonzero(bad), strict=True)]

    def to_dict(self) -> dict[str, Any]:
        """Plain mapping for ``results.json``: the run's figures and, per coefficient, the
        largest ``|shift|`` of its two ends with that end's ``z``, and every flagged end's
        figures."""
        def figures(i: int, k: int) -> dict[str, float]:
            return {"end": float(self.ends[i, k]), "mass_weights": float(self.mass_weights[i, k]),
                    "mass_chains": float(self.mass_chains[i, k]),
                    "mass_chains_error": float(self.mass_chains_error[i, k]),
                    "z": float(self.z[i, k]), "shift": float(self.shift[i, k])}
        flagged = {}
        for name, which in self.flagged():
            i = self.names.index(name)
            flagged.setdefault(name, {})[which] = figures(i, ("low", "high").index(which))
        size = np.nan_to_num(np.abs(self.shift), nan=-1.0)
        side = size.argmax(axis=1)
        rows = np.arange(len(self.names))
        worst = np.maximum(size[rows, side], 0.0)
        return {"n_chains": self.n_chains, "n_iterations": self.n_iterations,
                "acceptance": self.acceptance, "step_size": self.step_size,
                "seconds": self.seconds, "z_threshold": self.thresholds[0],
                "shift_threshold": self.thresholds[1],
                "largest_shift": {n: float(worst[i]) for i, n in enumerate(self.names)},
                "largest_shift_z": {n: float(self.z[i, side[i]]) for i, n in enumerate(self.names)},
                "flagged": flagged}


def tail_masses(histogram: np.ndarray, edges: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Mass of a histogram below ``ends[..., 0]`` and above ``ends[..., 1]`` per row.

    ``histogram`` is ``(..., d, bins)`` (probability per bin), ``edges`` ``(d, bins + 1)``,
    ``ends`` ``(d, 2)``; the bin holding an end contributes in proportion to the part of it
    beyond the end (the density is taken flat inside a bin). Returns ``(..., d, 2)``.

    Example:
        >>> h = np.array([[0.25, 0.25, 0.25, 0.25]]); e = np.array([[0.0, 1, 2, 3, 4]])
        >>> tail_masses(h, e, np.array([[0.5, 3.0]])).tolist()
        [[0.125, 0.25]]
    """
    lo = np.clip((ends[:, :1] - edges[:, :-1]) / np.diff(edges, axis=1), 0.0, 1.0)  # below
    hi = np.clip((edges[:, 1:] - ends[:, 1:]) / np.diff(edges, axis=1), 0.0, 1.0)  # above
    share = np.stack([lo, hi], axis=-1)  # (d, bins, 2)
    return np.einsum("...db,dbs->...ds", histogram, share)


def _outer_ends(centres: np.ndarray, probability: np.ndarray) -> np.ndarray:
    ends = np.full((probability.shape[0], 2), np.nan)
    for i in range(probability.shape[0]):
        if probability[i].sum() > 0:
            segments = marginalised_interval(centres[i], probability[i], level="95").segments
            if segments:
                ends[i] = segments[0][0], segments[-1][1]
    return ends


def check_with_chains(
    flow: Any,
    coordinates: Any,
    sample: Any,
    *,
    config: ChainCheckConfig,
    generator: torch.Generator,
    names: Sequence[str],
    level: int = logging.INFO,
) -> ChainCheck:
    """Run the chains of the module docstring on a trained flow and step 4's histograms.

    Args:
        flow: the trained :class:`~smeft_pyhf.sampler.flows.CouplingFlow`.
        coordinates: the flow's coordinates
            (:class:`~smeft_pyhf.sampler.kernels.standardisation.Standardised`; calling it gives
            the target there, ``to_original`` maps back).
        sample: step 4's :class:`~smeft_pyhf.sampler.sampling.SampleResult`.
        config: a :class:`ChainCheckConfig` with ``n_chains > 0``.
        generator: random number generator on the flow's device.
        names: the coefficient names.
        level: logging level of the progress lines.

    Returns:
        A :class:`ChainCheck`.
    """
    t0 = time.perf_counter()
    ref = next(flow.parameters())
    dim, n = flow.dim, config.n_chains
    ranges = sample.ranges.detach().cpu().double().numpy().reshape(dim, 2)
    probability = sample.marginal1d.detach().cpu().double().numpy()
    error = sample.marginal1d_error.detach().cpu().double().numpy()
    bins = probability.shape[1]
    edges = np.linspace(ranges[:, 0], ranges[:, 1], bins + 1, axis=1)
    centres = 0.5 * (edges[:, 1:] + edges[:, :-1])
    ends = _outer_ends(centres, probability)

    def latent_log_prob(u: Tensor) -> Tensor:
        z, log_q = flow.sample_from_noise(u)
        return coordinates(z) - log_q - 0.5 * (u * u).sum(-1)

    # start points: flow draws resampled by their importance weights
    with torch.no_grad():
        pool = torch.randn((8 * n, dim), generator=generator, device=ref.device, dtype=ref.dtype)
        log_w = torch.cat([latent_log_prob(c) for c in pool.split(max(n, 1))])
        log_w = log_w + 0.5 * (pool * pool).sum(-1)
        log_w = torch.nan_to_num(log_w, nan=-math.inf)
        if not bool(torch.isfinite(log_w).any()):
            raise ConfigError("the target is -inf or NaN at every one of the flow's draws",
                              where="chain check", hint="check the fit before its chain check")
        pick = torch.multinomial(torch.softmax(log_w, 0), n, replacement=True,
                                 generator=generator)
    low = torch.as_tensor(ranges[:, 0], device=ref.device, dtype=ref.dtype)
    width = torch.as_tensor((ranges[:, 1] - ranges[:, 0]) / bins, device=ref.device,
                            dtype=ref.dtype)
    exact = torch.float32 if ref.device.type == "mps" else torch.float64  # MPS has no float64
    counts = torch.zeros((n, dim, bins), device=ref.device, dtype=exact)
    flat = counts.view(n, dim * bins)
    offsets = torch.arange(dim, device=ref.device) * bins
    kept = [0]

    def record(iteration: int, u: Tensor) -> None:
        if iteration % 10 == 0 or iteration == config.n_iterations - 1:
            log.log(level, "  chain check: iteration %d/%d (%.1f s)", iteration + 1,
                    config.n_iterations, time.perf_counter() - t0)
        if iteration < config.burn_in:
            return
        with torch.no_grad():
            x = coordinates.to_original(flow.sample_from_noise(u)[0])
            k = torch.floor((x - low) / width)
            inside = (k >= 0) & (k < bins)
            index = (k.clamp(0, bins - 1).long() + offsets)
            flat.scatter_add_(1, index, inside.to(exact))
        kept[0] += 1

    res = run_hmc(latent_log_prob, pool[pick], n_iterations=config.n_iterations,
                  generator=generator, leapfrog_steps=config.leapfrog_steps,
                  step_size=config.step_size, adapt_iterations=config.burn_in,
                  target_acceptance=config.target_acceptance, callback=record)
    per_chain = tail_masses(counts.cpu().numpy() / max(kept[0], 1), edges, ends)  # (n, d, 2)
    mass_chains = per_chain.mean(0)
    se_chains = per_chain.std(0, ddof=1) / math.sqrt(n)
    mass_weights = tail_masses(probability, edges, ends)
    se_weights = np.sqrt(tail_masses(error**2, edges, ends))
    diff = mass_chains - mass_weights
    with np.errstate(divide="ignore", invalid="ignore"):
        z = diff / np.sqrt(se_chains**2 + se_weights**2)
        sd = marginal_moments(probability, centres)[1]
        density = np.stack([_density_at(probability[i], edges[i], ends[i]) for i in range(dim)])
        shift = diff / density / sd[:, None]
    shift = np.where(np.isfinite(shift), shift, np.nan)
    z = np.where(np.isfinite(z), z, 0.0)
    out = ChainCheck(tuple(names), ends, mass_weights, se_weights, mass_chains,
                     se_chains, z, shift, n, config.n_iterations, res.acceptance, res.step_size,
                     time.perf_counter() - t0, (config.z_threshold, config.shift_threshold))
    flagged = out.flagged()
    log.log(level, "chain check: %d chains x %d iterations, acceptance %.2f, %.1f s; largest "
            "end shift %.3f sd (%s); %s", n, config.n_iterations, res.acceptance, out.seconds,
            float(np.nanmax(np.abs(shift))) if np.isfinite(shift).any() else math.nan,
            names[int(np.nanargmax(np.nan_to_num(np.abs(shift), nan=-1.0).max(1)))],
            "ends moved: " + ", ".join(f"{a} {b}" for a, b in flagged) if flagged
            else "no end moved")
    return out


def _density_at(probability: np.ndarray, edges: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """The histogram's density (probability per unit) in the bins holding ``ends`` (2,)."""
    out = np.full(2, np.nan)
    for k, end in enumerate(ends):
        if np.isfinite(end):
            b = int(np.clip(np.searchsorted(edges, end) - 1, 0, len(probability) - 1))
            out[k] = probability[b] / (edges[b + 1] - edges[b])
    return out


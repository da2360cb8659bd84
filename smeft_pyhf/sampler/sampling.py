"""Step 4: weighted sampling, marginal histograms and the best point per profile bin.

A proposal ``draw(n) -> (x, log_q)`` (the trained flow, or any exact density such as a Gaussian)
generates weighted samples ``w = p(x) / q(x)`` in batches. Every batch is accumulated into

* 1D marginal histograms (default 80 bins) of every coefficient and 2D marginal histograms
  (default 40x40) of every pair ``i < j`` (the order of :func:`pair_indices`);
* for every 1D profile bin (default 40) and every 2D profile bin (default 30x30) the sample with
  the largest ``log p``; it is moved to the bin centre in the binned coordinate(s), re-evaluated,
  and the ``n_best`` best re-centred points of all batches are kept as starting points of the
  profiling step (:mod:`smeft_pyhf.sampler.profiling`);
* the effective sample size ``ESS = (sum w)^2 / sum w^2`` and the evidence ``Z = <w>``.

The batches are independent chunks (:func:`sample_chunk`), chunk ``i`` drawn with a generator
seeded by ``(seed, i)``, each returning its partial histograms, weight sums and best point per
profile bin (:class:`ChunkSums`); they run one after another in-process or as tasks on Dask
workers (:mod:`smeft_pyhf.cluster`) and are merged in chunk order (:func:`merge_chunks`), so
the result is the same on any number of workers. Weights are handled in log space: every sum
is kept relative to the largest ``log w`` of its chunk(s) and rescaled when merged, in float64
(float32 on MPS). All pairs are histogrammed with one ``bincount`` over flattened pair-bin
indices (sums in sample order, independent of torch's thread count on the CPU), and the best
point per profile bin is found with one ``scatter_reduce(amax)`` plus index recovery; there is
no Python loop over coefficients or pairs.

Example:
    >>> import torch
    >>> from smeft_pyhf.sampler.sampling import SampleConfig, sample_and_histogram
    >>> g = torch.Generator().manual_seed(0)
    >>> normal = torch.distributions.Normal(torch.zeros(2), torch.ones(2))
    >>> def draw(n, generator=None):
    ...     x = torch.randn(n, 2, generator=generator)
    ...     return x, normal.log_prob(x).sum(-1)
    >>> cfg = SampleConfig(n_batches=2, batch_size=1000, profile_bins_2d=5)
    >>> res = sample_and_histogram(draw, lambda x: normal.log_prob(x).sum(-1),
    ...                            ranges=torch.tensor([[-4.0, 4.0], [-4.0, 4.0]]),
    ...                            config=cfg, generator=g)
    >>> res.n_samples, round(res.ess_fraction, 6)
    (2000, 1.0)
    >>> tuple(res.marginal1d.shape), tuple(res.marginal2d.shape)
    ((2, 80), (1, 40, 40))

References:
    | Five steps to happiness: ML likelihood sampling for global SMEFT analyses (arXiv:2411.00942),
    | Sec. 2.2 ("Sampling") and Table 5. https://arxiv.org/abs/2411.00942
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np
import torch
from torch import Tensor

from smeft_pyhf.cluster import InProcess, TaskRunner
from smeft_pyhf.exceptions import ConfigError
from smeft_pyhf.sampler.config import check_field
from smeft_pyhf.sampler.kernels.evaluation import evaluate_in_chunks
from smeft_pyhf.sampler.kernels.nonfinite import CheckedTarget, NonFiniteCounts

__all__ = [
    "ChunkSpec",
    "ChunkSums",
    "SampleConfig",
    "SampleResult",
    "base_seed",
    "bin_centres",
    "bin_edges",
    "chunk_seed",
    "merge_chunks",
    "pair_indices",
    "report_nonfinite",
    "sample_and_histogram",
    "sample_chunk",
]

log = logging.getLogger(__name__)

Draw = Callable[..., tuple[Tensor, Tensor]]
LogProb = Callable[[Tensor], Tensor]

# Table 5 (arXiv:2411.00942), sampling rows, where a column differs from "Top". The combined
# fit drew 100M samples (Table 4), i.e. 1000 batches of 100k, with 20x20 2D profile bins.
_PAPER: dict[str, dict[str, object]] = {
    "top": {},
    "higgs": {"n_batches": 2000},
    "combined": {"n_batches": 1000, "profile_bins_2d": 20},
}

# Entries (rows x pairs) per vectorised chunk of the 2D histogram / profile update.
_CHUNK_ENTRIES = 1 << 22


@dataclass(frozen=True)
class SampleConfig:
    """Step 4, sampling and histogramming (paper Table 5, column "Top", as defaults).

    Attributes:
        n_batches: number of sampling batches (Table 5: 100 top, 2000 Higgs; 1000 combined
            from the 100M samples of Table 4).
        batch_size: samples per batch (Table 5: 100k).
        bins_1d: marginal histogram bins per coefficient (Table 5: 80).
        bins_2d: marginal histogram bins per axis for every pair (Table 5: 40).
        profile_bins_1d: profile bins per coefficient (Table 5: 40).
        profile_bins_2d: profile bins per axis for every pair (Table 5: 30; combined 20).
        n_best: re-centred points kept per profile bin over all batches ("a fixed number of
            points with the highest likelihoods for each bin"; the paper does not give the
            number, our default 1).
        histograms_2d: make the 2D marginal histograms and 2D profile start points.
        keep_samples: keep the first ``keep_samples`` weighted samples ``(x, log w)`` in the
            result for diagnostics (0: none).
        weight_bins: bins of the histogram of ``log10(w / <w>_1)`` over ``weight_range``, where
            ``<w>_1`` is the mean weight of the first batch.
        weight_range: range of that weight histogram in decades.
        eval_chunk: re-evaluate the re-centred profile points in chunks of at most this many.
        accumulate: ``"float64"`` accumulators (default; float32 on MPS), or ``"input"`` for the
            dtype of the samples.
        target_ess: stop drawing batches once the effective sample size reaches this (0: draw
            all ``n_batches``, the paper's fixed count); ``n_batches`` stays the ceiling.
    """

    n_batches: int = 100
    batch_size: int = 100_000
    bins_1d: int = 80
    bins_2d: int = 40
    profile_bins_1d: int = 40
    profile_bins_2d: int = 30
    n_best: int = 1
    histograms_2d: bool = True
    keep_samples: int = 0
    weight_bins: int = 60
    weight_range: tuple[float, float] = (-8.0, 4.0)
    eval_chunk: int = 100_000
    accumulate: Literal["float64", "input"] = "float64"
    target_ess: float = 0.0

    def __post_init__(self) -> None:
        check_field(self.target_ess >= 0, self, "target_ess", "must be >= 0 (0: all batches)")
        for name in ("n_batches", "batch_size", "bins_1d", "bins_2d", "profile_bins_1d",
                     "profile_bins_2d", "n_best", "weight_bins", "eval_chunk"):
            check_field(getattr(self, name) >= 1, self, name, "must be >= 1")
        check_field(self.keep_samples >= 0, self, "keep_samples", "must be >= 0")
        check_field(self.weight_range[0] < self.weight_range[1], self, "weight_range",
                    "must be (low, high) with low < high")
        check_field(self.accumulate in ("float64", "input"), self, "accumulate",
                    "must be 'float64' or 'input'")

    @property
    def n_samples(self) -> int:
        """Total number of samples ``n_batches * batch_size``."""
        return self.n_batches * self.batch_size

    @classmethod
    def paper(cls, sector: Literal["top", "higgs", "combined"] = "top",
              **overrides: object) -> SampleConfig:
        """The paper's Table 5 column for ``sector`` with ``overrides`` applied.

        Example:
            >>> SampleConfig.paper("combined").profile_bins_2d
            20
        """
        if sector not in _PAPER:
            raise ConfigError(f"unknown sector {sector!r}", where="SampleConfig.paper",
                              hint=f"use one of {sorted(_PAPER)}")
        return cls(**{**_PAPER[sector], **overrides})

    def replace(self, **changes: object) -> SampleConfig:
        """A copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)


class SampleResult(NamedTuple):
    """Histograms, profile start points and weight statistics of step 4.

    Bins are equal-width over ``ranges`` (see :func:`bin_edges`); pairs are ordered as
    :func:`pair_indices`. Marginal histograms are probabilities per bin (the weight in the bin
    over the total weight of all samples, inside or outside the ranges); profile arrays hold
    ``-inf`` for bins that no sample reached.

    Attributes:
        ranges: (d, 2) histogram ranges.
        pairs: (P, 2) coefficient index pairs ``i < j``.
        marginal1d: (d, bins_1d) probability per bin.
        marginal1d_error: (d, bins_1d) its Monte-Carlo error ``sqrt(sum w^2) / sum w``.
        marginal2d: (P, bins_2d, bins_2d) probability per bin, axis 1 = ``pairs[:, 0]``.
        marginal2d_error: (P, bins_2d, bins_2d) its Monte-Carlo error.
        profile1d_log_prob: (d, profile_bins_1d, n_best) ``log p`` of the kept re-centred points,
            best first.
        profile1d_points: (d, profile_bins_1d, n_best, d) those points.
        profile2d_log_prob: (P, profile_bins_2d, profile_bins_2d, n_best).
        profile2d_points: (P, profile_bins_2d, profile_bins_2d, n_best, d).
        n_samples: number of samples drawn.
        ess: effective sample size ``(sum w)^2 / sum w^2``.
        ess_fraction: ``ess / n_samples``.
        log_evidence: ``log <w>``, the log normalisation of ``p`` if ``q`` is normalised.
        log_evidence_error: its approximate standard error ``sqrt(1/ess - 1/n_samples)``.
        max_log_weight: largest ``log w`` seen.
        outside_fraction: weight fraction of samples outside ``ranges`` in some coordinate.
        n_nonfinite: drawn samples whose ``log p`` was NaN (counted with zero weight, like
            ``-inf``).
        best_point: (d,) the sample with the largest ``log p`` (not re-centred).
        best_log_prob: its ``log p``.
        weight_histogram: (weight_bins + 2,) sample counts per bin of ``log10(w / <w>_1)`` with
            underflow first and overflow last.
        weight_edges: (weight_bins + 1,) edges of that histogram in decades.
        samples: (k, d) the kept samples (``keep_samples``), or an empty (0, d) tensor.
        samples_log_weight: (k,) their ``log w``.
        n_evaluations: target evaluations (samples plus re-centred points).
        seconds: wall time of the step.
        nonfinite: how many of all ``n_evaluations`` were NaN or ``-inf``.
        heavy_log_weight: (k,) the ``N_HEAVY`` largest ``log w`` of all samples, largest
            first (None in results written without them).
        heavy_points: (k, d) those samples: where the flow's proposal is lightest relative to
            the target (see :mod:`smeft_pyhf.results.diagnostics`, ``heavy_weights``).
    """

    ranges: Tensor
    pairs: Tensor
    marginal1d: Tensor
    marginal1d_error: Tensor
    marginal2d: Tensor
    marginal2d_error: Tensor
    profile1d_log_prob: Tensor
    profile1d_points: Tensor
    profile2d_log_prob: Tensor
    profile2d_points: Tensor
    n_samples: int
    ess: float
    ess_fraction: float
    log_evidence: float
    log_evidence_error: float
    max_log_weight: float
    outside_fraction: float
    n_nonfinite: int
    best_point: Tensor
    best_log_prob: float
    weight_histogram: Tensor
    weight_edges: Tensor
    samples: Tensor
    samples_log_weight: Tensor
    n_evaluations: int
    seconds: float
    nonfinite: NonFiniteCounts = NonFiniteCounts()
    heavy_log_weight: Tensor | None = None
    heavy_points: Tensor | None = None


def pair_indices(dim: int, *, device: torch.device | str | None = None) -> Tensor:
    """(P, 2) indices ``(i, j)``, ``i < j``, of all coefficient pairs in row-major order.

    Example:
        >>> pair_indices(3).tolist()
        [[0, 1], [0, 2], [1, 2]]
    """
    return torch.triu_indices(dim, dim, 1, device=device).T.contiguous()


def bin_edges(ranges: Tensor, bins: int) -> Tensor:
    """(d, bins + 1) equal-width bin edges over ``ranges`` (d, 2).

    Example:
        >>> bin_edges(torch.tensor([[0.0, 1.0]]), 4).tolist()
        [[0.0, 0.25, 0.5, 0.75, 1.0]]
    """
    steps = torch.linspace(0, 1, bins + 1, dtype=ranges.dtype, device=ranges.device)
    return ranges[:, :1] + (ranges[:, 1:] - ranges[:, :1]) * steps


def bin_centres(ranges: Tensor, bins: int) -> Tensor:
    """(d, bins) bin centres over ``ranges`` (d, 2).

    Example:
        >>> bin_centres(torch.tensor([[0.0, 1.0]]), 2).tolist()
        [[0.25, 0.75]]
    """
    steps = (torch.arange(bins, dtype=ranges.dtype, device=ranges.device) + 0.5) / bins
    return ranges[:, :1] + (ranges[:, 1:] - ranges[:, :1]) * steps


def _bin_index(x: Tensor, ranges: Tensor, bins: int) -> Tensor:
    """(n, d) bin index per coordinate, ``-1`` outside ``[low, high)``."""
    low, high = ranges[:, 0], ranges[:, 1]
    u = (x - low) / (high - low) * bins
    idx = torch.floor(u).to(torch.long)
    inside = (idx >= 0) & (idx < bins) & torch.isfinite(u)
    return torch.where(inside, idx, torch.full_like(idx, -1))


def _merge_best(lp_a: Tensor, pts_a: Tensor, lp_b: Tensor,
                pts_b: Tensor) -> tuple[Tensor, Tensor]:
    """Per profile bin the ``n_best`` best of two stores ``(n_bins, n_best)`` /
    ``(n_bins, n_best, d)``; on equal ``log p`` the first store's point comes first."""
    k = lp_a.shape[1]
    if k == 1:  # the default: no sort needed
        better = lp_b > lp_a
        return torch.where(better, lp_b, lp_a), torch.where(better[..., None], pts_b, pts_a)
    all_lp = torch.cat([lp_a, lp_b], dim=1)
    all_pt = torch.cat([pts_a, pts_b], dim=1)
    top_lp, top_idx = torch.sort(all_lp, dim=1, descending=True, stable=True)
    top_lp, top_idx = top_lp[:, :k], top_idx[:, :k]
    top_pt = torch.gather(all_pt, 1, top_idx[..., None].expand(-1, -1, all_pt.shape[-1]))
    return top_lp, top_pt


def best_per_bin(flat: Tensor, lp: Tensor, rows: Tensor, n_bins: int) -> tuple[Tensor, Tensor]:
    """Max ``lp`` per bin and the row that attains it (``-1`` for empty bins).

    ``flat`` holds bin indices in ``[0, n_bins]`` (``n_bins`` is the dump bin for entries
    outside the ranges), ``lp`` and ``rows`` the matching log-probabilities and sample rows.

    Example:
        >>> best, arg = best_per_bin(torch.tensor([0, 0, 2]), torch.tensor([1.0, 3.0, 2.0]),
        ...                          torch.arange(3), 2)
        >>> best.tolist(), arg.tolist()
        ([3.0, -inf], [1, -1])
    """
    best = torch.full((n_bins + 1,), -math.inf, dtype=lp.dtype, device=lp.device)
    best.scatter_reduce_(0, flat, lp, reduce="amax", include_self=True)
    hit = (lp == best[flat]) & torch.isfinite(lp)
    cand = torch.where(hit, rows, torch.full_like(rows, -1))
    arg = torch.full((n_bins + 1,), -1, dtype=torch.long, device=lp.device)
    arg.scatter_reduce_(0, flat, cand, reduce="amax", include_self=True)
    return best[:n_bins], arg[:n_bins]


def chunk_seed(base_seed: int, index: int) -> int:
    """The seed of sampling chunk ``index``: a function of ``(base_seed, index)`` only, so a
    chunk draws the same samples on any worker and in any order.

    Example:
        >>> chunk_seed(7, 0) == chunk_seed(7, 0) != chunk_seed(7, 1)
        True
    """
    state = np.random.SeedSequence([int(base_seed), int(index)]).generate_state(1, np.uint64)
    return int(state[0]) >> 1  # 63 bits: a valid torch seed


def base_seed(generator: torch.Generator | None) -> int:
    """One draw from ``generator`` (torch's global generator if ``None``): the root of the
    chunk seeds of :func:`sample_and_histogram`.

    Example:
        >>> base_seed(torch.Generator().manual_seed(0)) == base_seed(
        ...     torch.Generator().manual_seed(0))
        True
    """
    device = generator.device if generator is not None else None
    return int(torch.randint(0, 2**62, (), generator=generator, device=device))


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device | str | None) -> Iterator[torch.Generator | None]:
    """Torch's global generator forked and seeded with ``seed`` for the ``with`` block; yields
    a generator on ``device`` seeded the same way (``None`` when ``device`` is ``None``)."""
    dev = None if device is None else torch.device(device)
    devices = [dev] if dev is not None and dev.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield None if dev is None else torch.Generator(device=dev).manual_seed(seed)


class ChunkSpec(NamedTuple):
    """What a sampling chunk needs besides the proposal and the target.

    Attributes:
        ranges: (d, 2) histogram ranges.
        config: the step configuration (its ``batch_size`` is the chunk size).
        base_seed: the root of the chunk seeds (:func:`chunk_seed`).
        generator_device: the device of the generator handed to ``draw``; ``None``: ``draw``
            is called without one (it uses torch's global generator, seeded per chunk).
        names: coefficient names, for error messages.
    """

    ranges: Tensor
    config: SampleConfig
    base_seed: int
    generator_device: str | None = None
    names: tuple[str, ...] | None = None


class ChunkSums(NamedTuple):
    """The partial sums of one or more sampling chunks; merged by :func:`merge_chunks`.

    Weight sums are relative to ``exp(max_log_weight)``; histograms are flat, without the
    bin of the samples outside the ranges.

    Attributes:
        n_samples: samples drawn.
        n_evaluations: target evaluations (samples plus re-centred profile points).
        n_nonfinite: drawn samples whose ``log p`` was NaN.
        counts: ``(points, NaN, -inf)`` of all target evaluations.
        max_log_weight: the largest ``log w`` (``-inf`` if none was finite).
        sums: (3,) ``sum w``, ``sum w^2`` and the weight outside the ranges.
        h1: (d * bins_1d,) weight per 1D bin; ``h1w2`` the squared weights.
        h1w2: see ``h1``.
        h2: (P * bins_2d**2,) weight per 2D bin; ``h2w2`` the squared weights.
        h2w2: see ``h2``.
        profile1d_log_prob: (d * profile_bins_1d, n_best) best re-centred points' ``log p``.
        profile1d_points: (d * profile_bins_1d, n_best, d).
        profile2d_log_prob: (P * profile_bins_2d**2, n_best).
        profile2d_points: (P * profile_bins_2d**2, n_best, d).
        best_log_prob: the largest ``log p`` of a drawn sample.
        best_point: (d,) that sample.
        samples: (k, d) the first ``keep_samples`` samples.
        samples_log_weight: (k,) their ``log w``.
        log_weights: (n,) every ``log w``, for the weight histogram (emptied once it is
            histogrammed).
        heavy_log_weight: (k,) the ``N_HEAVY`` largest finite ``log w``, largest first.
        heavy_points: (k, d) their samples.
    """

    n_samples: int
    n_evaluations: int
    n_nonfinite: int
    counts: NonFiniteCounts
    max_log_weight: float
    sums: Tensor
    h1: Tensor
    h1w2: Tensor
    h2: Tensor
    h2w2: Tensor
    profile1d_log_prob: Tensor
    profile1d_points: Tensor
    profile2d_log_prob: Tensor
    profile2d_points: Tensor
    best_log_prob: float
    best_point: Tensor
    samples: Tensor
    samples_log_weight: Tensor
    log_weights: Tensor
    heavy_log_weight: Tensor
    heavy_points: Tensor


N_HEAVY = 20
"""How many of the heaviest samples step 4 keeps (their location is a convergence figure)."""


def _heaviest(log_w: Tensor, x: Tensor) -> dict[str, Tensor]:
    """The ``N_HEAVY`` largest finite ``log_w`` (largest first) and their rows of ``x``, as the
    ``heavy_log_weight`` and ``heavy_points`` fields of :class:`ChunkSums`."""
    finite = torch.isfinite(log_w)
    lw, pts = log_w[finite], x[finite]
    top = torch.topk(lw, min(N_HEAVY, lw.numel())).indices
    return {"heavy_log_weight": lw[top].clone(), "heavy_points": pts[top].clone()}


def _draw_chunk(draw: Draw, index: int, spec: ChunkSpec) -> tuple[Tensor, Tensor]:
    """The samples ``(x, log q)`` of chunk ``index``."""
    with _seeded(chunk_seed(spec.base_seed, index), spec.generator_device) as gen, \
            torch.no_grad():
        n = spec.config.batch_size
        x, log_q = draw(n) if gen is None else draw(n, generator=gen)
    return x.detach(), log_q.detach().to(x.dtype)


def _recentre_best(log_prob: LogProb, x: Tensor, lp: Tensor, flat: Tensor, n_bins: int,
                   centre: Callable[[Tensor, Tensor], None], config: SampleConfig,
                   ) -> tuple[Tensor, Tensor, int]:
    """Best sample per profile bin (``flat``: (n, k) bin per sample and axis, ``n_bins`` the
    dump bin), moved to the bin's centre by ``centre(points, bins)`` and re-evaluated.
    Returns the store ``(n_bins, n_best)``, ``(n_bins, n_best, d)`` and the evaluations."""
    n, k = flat.shape
    rows = torch.arange(n, device=x.device)
    _, arg = best_per_bin(flat.reshape(-1), lp[:, None].expand(n, k).reshape(-1),
                          rows[:, None].expand(n, k).reshape(-1), n_bins)
    return _store(log_prob, x, arg, centre, config, n_bins)


def _store(log_prob: LogProb, x: Tensor, arg: Tensor, centre: Callable[[Tensor, Tensor], None],
           config: SampleConfig, n_bins: int) -> tuple[Tensor, Tensor, int]:
    """The re-centred, re-evaluated rows ``arg`` (``-1``: empty bin) as a profile store."""
    sel = (arg >= 0).nonzero().squeeze(1)
    pts = x[arg[sel]].clone()
    centre(pts, sel)
    new_lp = evaluate_in_chunks(log_prob, pts, config.eval_chunk)
    lp_store = torch.full((n_bins, config.n_best), -math.inf, dtype=x.dtype, device=x.device)
    pt_store = torch.zeros((n_bins, config.n_best, x.shape[1]), dtype=x.dtype, device=x.device)
    lp_store[sel, 0] = new_lp
    pt_store[sel, 0] = pts
    return lp_store, pt_store, pts.shape[0]


def _bin_sums(flat: Tensor, w: Tensor, n_bins: int) -> Tensor:
    """Sum of ``w`` per bin ``flat`` in ``[0, n_bins)``: ``bincount`` adds in sample order
    in one pass on the CPU, so the sums do not depend on torch's thread count (``w.sum()``
    over more than 32k elements does), and a chunk gives the same numbers in-process and on a
    single-threaded worker."""
    return torch.bincount(flat, weights=w, minlength=n_bins)


def _histogram_1d(x: Tensor, w: Tensor, rng: Tensor, bins: int) -> tuple[Tensor, Tensor, Tensor]:
    """1D marginal sums ``(h, h_w2)`` of every coefficient (flat, without the dump bin) and
    the mask of the samples outside the ranges."""
    n, dim = x.shape
    coord = torch.arange(dim, device=x.device)
    idx = _bin_index(x, rng, bins)
    flat = torch.where(idx >= 0, coord * bins + idx, torch.full_like(idx, dim * bins)).reshape(-1)
    h = _bin_sums(flat, w[:, None].expand(n, dim).reshape(-1), dim * bins + 1)
    hw2 = _bin_sums(flat, (w * w)[:, None].expand(n, dim).reshape(-1), dim * bins + 1)
    return h[:-1], hw2[:-1], (idx < 0).any(dim=1)


def _pairs_2d(x: Tensor, w: Tensor, lp: Tensor, rng: Tensor, pairs: Tensor,
              config: SampleConfig) -> tuple[Tensor, Tensor, Tensor]:
    """2D marginal sums ``(h, h_w2)`` of every pair and the best row per 2D profile bin,
    chunked over rows to bound memory."""
    n = x.shape[0]
    n_pairs = pairs.shape[0]
    b2, p2 = config.bins_2d, config.profile_bins_2d
    device = x.device
    pi, pj = pairs[:, 0], pairs[:, 1]
    idx2 = _bin_index(x, rng, b2)
    pidx2 = _bin_index(x, rng, p2)
    h = torch.zeros(n_pairs * b2 * b2 + 1, dtype=w.dtype, device=device)
    hw2 = torch.zeros_like(h)
    bb_lp = torch.full((n_pairs * p2 * p2,), -math.inf, dtype=x.dtype, device=device)
    bb_row = torch.full((n_pairs * p2 * p2,), -1, dtype=torch.long, device=device)
    rows = torch.arange(n, device=device)
    pair_off = torch.arange(n_pairs, device=device)
    step = max(1, _CHUNK_ENTRIES // max(n_pairs, 1))
    for r0 in range(0, n, step):
        r1 = min(n, r0 + step)
        nc = r1 - r0
        ia, ib = idx2[r0:r1][:, pi], idx2[r0:r1][:, pj]
        ok = (ia >= 0) & (ib >= 0)
        flat2 = torch.where(ok, (pair_off * b2 + ia) * b2 + ib,
                            torch.full_like(ia, n_pairs * b2 * b2)).reshape(-1)
        h += _bin_sums(flat2, w[r0:r1, None].expand(nc, n_pairs).reshape(-1), h.numel())
        hw2 += _bin_sums(flat2, (w[r0:r1] ** 2)[:, None].expand(nc, n_pairs).reshape(-1),
                         h.numel())
        qa, qb = pidx2[r0:r1][:, pi], pidx2[r0:r1][:, pj]
        okp = (qa >= 0) & (qb >= 0)
        pflat2 = torch.where(okp, (pair_off * p2 + qa) * p2 + qb,
                             torch.full_like(qa, n_pairs * p2 * p2)).reshape(-1)
        cl, ca = best_per_bin(pflat2, lp[r0:r1, None].expand(nc, n_pairs).reshape(-1),
                               rows[r0:r1, None].expand(nc, n_pairs).reshape(-1),
                               n_pairs * p2 * p2)
        better = cl > bb_lp
        bb_lp = torch.where(better, cl, bb_lp)
        bb_row = torch.where(better, ca, bb_row)
    return h[:-1], hw2[:-1], bb_row


def sample_chunk(index: int, spec: ChunkSpec, *, draw: Draw, log_prob: LogProb) -> ChunkSums:
    """Draw chunk ``index`` (``spec.config.batch_size`` samples, seeded by
    ``(spec.base_seed, index)``) and return its partial histograms, weight sums and best
    re-centred point per profile bin: the task of step 4 on a worker.

    Raises:
        DataError: the target is ``+inf`` at a drawn or re-centred point.

    Example:
        >>> normal = torch.distributions.Normal(torch.zeros(2), torch.ones(2))
        >>> def draw(n):
        ...     x = torch.randn(n, 2)
        ...     return x, normal.log_prob(x).sum(-1)
        >>> spec = ChunkSpec(torch.tensor([[-4.0, 4.0]] * 2),
        ...                  SampleConfig(batch_size=500, profile_bins_2d=4), base_seed=1)
        >>> part = sample_chunk(0, spec, draw=draw, log_prob=lambda x: normal.log_prob(x).sum(-1))
        >>> part.n_samples, part.max_log_weight, tuple(part.h2.shape)
        (500, 0.0, (1600,))
    """
    config = spec.config
    checked = CheckedTarget(log_prob, step="sampling", names=spec.names, logger=log)
    x, log_q = _draw_chunk(draw, index, spec)
    n, dim = x.shape
    dtype, device = x.dtype, x.device
    acc = dtype if config.accumulate == "input" or device.type == "mps" else torch.float64
    rng = spec.ranges.to(device=device, dtype=dtype)
    lp = evaluate_in_chunks(checked, x, config.eval_chunk)
    checked.check()
    n_nan = checked.n_nan
    log_w = torch.nan_to_num((lp - log_q).to(acc), nan=-math.inf, posinf=math.inf)
    m = float(log_w.max())
    w = torch.exp(log_w - m) if math.isfinite(m) else torch.zeros_like(log_w)

    h1, h1w2, outside = _histogram_1d(x, w, rng, config.bins_1d)
    kind = outside.to(torch.long)  # sums of w and w^2 in one pass each, outside apart
    inside_out = _bin_sums(kind, w, 2)
    sums = torch.stack([inside_out.sum(), _bin_sums(kind, w * w, 2).sum(), inside_out[1]])

    coord = torch.arange(dim, device=device)
    p1, p2 = config.profile_bins_1d, config.profile_bins_2d
    centres1, centres2 = bin_centres(rng, p1), bin_centres(rng, p2)

    def centre1(pts: Tensor, sel: Tensor) -> None:
        ci, cb = sel // p1, sel % p1
        pts[torch.arange(sel.numel(), device=device), ci] = centres1[ci, cb]

    pidx1 = _bin_index(x, rng, p1)
    pflat1 = torch.where(pidx1 >= 0, coord * p1 + pidx1, torch.full_like(pidx1, dim * p1))
    s1_lp, s1_pt, n_re1 = _recentre_best(checked, x, lp, pflat1, dim * p1, centre1, config)

    n_pairs = dim * (dim - 1) // 2 if config.histograms_2d else 0
    pairs = pair_indices(dim, device=device)[:n_pairs]
    h2, h2w2, bb_row = _pairs_2d(x, w, lp, rng, pairs, config)

    def centre2(pts: Tensor, sel: Tensor) -> None:
        pair = sel // (p2 * p2)
        qa, qb = (sel // p2) % p2, sel % p2
        ar = torch.arange(sel.numel(), device=device)
        pi, pj = pairs[pair, 0], pairs[pair, 1]
        pts[ar, pi] = centres2[pi, qa]
        pts[ar, pj] = centres2[pj, qb]

    s2_lp, s2_pt, n_re2 = _store(checked, x, bb_row, centre2, config, n_pairs * p2 * p2)
    checked.check()

    i_best = int(torch.argmax(lp))
    best_point = x[i_best].clone() if lp[i_best] > -math.inf else rng.mean(dim=1)
    take = min(n, config.keep_samples)
    return ChunkSums(
        n_samples=n,
        n_evaluations=n + n_re1 + n_re2,
        n_nonfinite=n_nan,
        counts=checked.counts(),
        max_log_weight=m,
        sums=sums,
        h1=h1,
        h1w2=h1w2,
        h2=h2,
        h2w2=h2w2,
        profile1d_log_prob=s1_lp,
        profile1d_points=s1_pt,
        profile2d_log_prob=s2_lp,
        profile2d_points=s2_pt,
        best_log_prob=float(lp[i_best]),
        best_point=best_point,
        samples=x[:take].clone(),
        samples_log_weight=log_w[:take].to(dtype),
        log_weights=log_w,
        **_heaviest(log_w, x),
    )


def merge_chunks(a: ChunkSums, b: ChunkSums, *, keep_samples: int = 0) -> ChunkSums:
    """The partial sums of chunks ``a`` and then ``b``: associative (exactly for counts and
    best points, up to float rounding for the sums), so partial results can be merged in any
    grouping; :func:`sample_and_histogram` merges them in chunk order.

    Example:
        >>> normal = torch.distributions.Normal(torch.zeros(1), torch.ones(1))
        >>> draw = lambda n: (torch.randn(n, 1), torch.zeros(n))
        >>> spec = ChunkSpec(torch.tensor([[-3.0, 3.0]]),
        ...                  SampleConfig(batch_size=100, histograms_2d=False), base_seed=3)
        >>> f = lambda x: normal.log_prob(x).sum(-1)
        >>> a, b = (sample_chunk(i, spec, draw=draw, log_prob=f) for i in (0, 1))
        >>> ab = merge_chunks(a, b)
        >>> ab.n_samples, bool(ab.best_log_prob == max(a.best_log_prob, b.best_log_prob))
        (200, True)
    """
    m = max(a.max_log_weight, b.max_log_weight)
    fa = math.exp(a.max_log_weight - m) if math.isfinite(a.max_log_weight) else 0.0
    fb = math.exp(b.max_log_weight - m) if math.isfinite(b.max_log_weight) else 0.0
    scale_a, scale_b = a.sums.new_tensor([fa, fa * fa, fa]), a.sums.new_tensor([fb, fb * fb, fb])
    p1_lp, p1_pt = _merge_best(a.profile1d_log_prob, a.profile1d_points,
                               b.profile1d_log_prob, b.profile1d_points)
    p2_lp, p2_pt = _merge_best(a.profile2d_log_prob, a.profile2d_points,
                               b.profile2d_log_prob, b.profile2d_points)
    later = b.best_log_prob > a.best_log_prob
    return ChunkSums(
        n_samples=a.n_samples + b.n_samples,
        n_evaluations=a.n_evaluations + b.n_evaluations,
        n_nonfinite=a.n_nonfinite + b.n_nonfinite,
        counts=NonFiniteCounts(*(u + v for u, v in zip(a.counts, b.counts, strict=True))),
        max_log_weight=m,
        sums=a.sums * scale_a + b.sums * scale_b,
        h1=a.h1 * fa + b.h1 * fb,
        h1w2=a.h1w2 * (fa * fa) + b.h1w2 * (fb * fb),
        h2=a.h2 * fa + b.h2 * fb,
        h2w2=a.h2w2 * (fa * fa) + b.h2w2 * (fb * fb),
        profile1d_log_prob=p1_lp,
        profile1d_points=p1_pt,
        profile2d_log_prob=p2_lp,
        profile2d_points=p2_pt,
        best_log_prob=b.best_log_prob if later else a.best_log_prob,
        best_point=b.best_point if later else a.best_point,
        samples=torch.cat([a.samples, b.samples])[:keep_samples],
        samples_log_weight=torch.cat([a.samples_log_weight, b.samples_log_weight])[:keep_samples],
        log_weights=torch.cat([a.log_weights, b.log_weights]),
        **_heaviest(torch.cat([a.heavy_log_weight, b.heavy_log_weight]),
                    torch.cat([a.heavy_points, b.heavy_points])),
    )


class _WeightHistogram:
    """Counts of ``log10(w / <w>_1)`` per bin, ``<w>_1`` the mean weight of the first chunk."""

    def __init__(self, config: SampleConfig) -> None:
        self.config = config
        self.ref: float | None = None
        self.counts: Tensor | None = None

    def add(self, log_w: Tensor) -> None:
        cfg = self.config
        if self.ref is None:
            finite = log_w[torch.isfinite(log_w)]
            self.ref = (float(torch.logsumexp(finite, 0)) - math.log(log_w.numel())
                        if finite.numel() else 0.0)
            self.counts = torch.zeros(cfg.weight_bins + 2, dtype=torch.long,
                                      device=log_w.device)
        lw10 = (log_w - self.ref) / math.log(10.0)
        lo, hi = cfg.weight_range
        wb = torch.floor((lw10 - lo) / (hi - lo) * cfg.weight_bins).to(torch.long) + 1
        wb = torch.where(torch.isfinite(lw10), wb, torch.zeros_like(wb))
        self.counts += torch.bincount(wb.clamp(0, cfg.weight_bins + 1),
                                      minlength=cfg.weight_bins + 2)


def _check_ranges(ranges: Tensor) -> None:
    if ranges.ndim != 2 or ranges.shape[1] != 2:
        raise ConfigError(f"ranges must have shape (d, 2), got {tuple(ranges.shape)}",
                          where="sample_and_histogram", hint="pass one (low, high) per coefficient")
    if not bool((ranges[:, 1] > ranges[:, 0]).all()):
        raise ConfigError("every range needs low < high", where="sample_and_histogram",
                          hint="check the ranges passed to the sampler")


def _ess(sums: Tensor) -> float:
    s1, s2 = float(sums[0]), float(sums[1])
    return s1 * s1 / s2 if s2 > 0 else 0.0


def report_nonfinite(counts: NonFiniteCounts, names: Sequence[str] | None,
                     step: str) -> NonFiniteCounts:
    """Log the summed counts of a step's tasks as :meth:`CheckedTarget.report` logs those of
    one target (a warning above the NaN threshold), and return them.

    Example:
        >>> report_nonfinite(NonFiniteCounts(10, 0, 2), None, "demo")
        NonFiniteCounts(n_evaluated=10, n_nan=0, n_neginf=2)
    """
    checked = CheckedTarget(lambda x: x, step=step, names=names, logger=log)
    checked._counts = torch.tensor([*counts, 0])  # the counts of all tasks, no +inf (checked)
    return checked.report()


def _finish(total: ChunkSums, weights: _WeightHistogram, ranges: Tensor, config: SampleConfig,
            nonfinite: NonFiniteCounts, seconds: float) -> SampleResult:
    """The :class:`SampleResult` of the merged chunks."""
    dim = ranges.shape[0]
    x0 = total.best_point
    dtype, device = x0.dtype, x0.device
    rng = ranges.to(device=device, dtype=dtype)
    n_pairs = dim * (dim - 1) // 2 if config.histograms_2d else 0
    b1, b2, p1, p2 = config.bins_1d, config.bins_2d, config.profile_bins_1d, config.profile_bins_2d
    n, m = total.n_samples, total.max_log_weight
    s1 = float(total.sums[0])
    ess = _ess(total.sums)
    log_z = m + math.log(s1) - math.log(n) if s1 > 0 else -math.inf
    log_z_err = math.sqrt(max(1.0 / ess - 1.0 / n, 0.0)) if ess > 0 else math.inf
    norm = total.sums[0] if s1 > 0 else torch.ones_like(total.sums[0])
    lo, hi = config.weight_range
    k = config.n_best
    return SampleResult(
        ranges=rng,
        pairs=pair_indices(dim, device=device)[:n_pairs],
        marginal1d=(total.h1.reshape(dim, b1) / norm).to(dtype),
        marginal1d_error=(total.h1w2.reshape(dim, b1).sqrt() / norm).to(dtype),
        marginal2d=(total.h2.reshape(n_pairs, b2, b2) / norm).to(dtype),
        marginal2d_error=(total.h2w2.reshape(n_pairs, b2, b2).sqrt() / norm).to(dtype),
        profile1d_log_prob=total.profile1d_log_prob.reshape(dim, p1, k),
        profile1d_points=total.profile1d_points.reshape(dim, p1, k, dim),
        profile2d_log_prob=total.profile2d_log_prob.reshape(n_pairs, p2, p2, k),
        profile2d_points=total.profile2d_points.reshape(n_pairs, p2, p2, k, dim),
        n_samples=n,
        ess=ess,
        ess_fraction=ess / n,
        log_evidence=log_z,
        log_evidence_error=log_z_err,
        max_log_weight=m,
        outside_fraction=float(total.sums[2]) / s1 if s1 > 0 else 0.0,
        n_nonfinite=total.n_nonfinite,
        best_point=x0,
        best_log_prob=total.best_log_prob,
        weight_histogram=weights.counts,
        weight_edges=torch.linspace(lo, hi, config.weight_bins + 1, dtype=dtype, device=device),
        samples=total.samples,
        samples_log_weight=total.samples_log_weight,
        n_evaluations=total.n_evaluations,
        seconds=seconds,
        nonfinite=nonfinite,
        heavy_log_weight=total.heavy_log_weight,
        heavy_points=total.heavy_points,
    )


def sample_and_histogram(
    draw: Draw,
    log_prob: LogProb,
    *,
    ranges: Tensor,
    config: SampleConfig | None = None,
    generator: torch.Generator | None = None,
    names: Sequence[str] | None = None,
    runner: TaskRunner | None = None,
) -> SampleResult:
    """Draw weighted samples and accumulate histograms, profile start points and the ESS.

    The ``config.n_batches`` batches are independent chunks (:func:`sample_chunk`), chunk
    ``i`` seeded by ``(base, i)`` where ``base`` is one draw from ``generator``; ``runner``
    runs them (in this process by default, or on Dask workers) and their partial sums are
    merged in chunk order (:func:`merge_chunks`), so the result does not depend on where or
    in which order the chunks ran. Samples where the target is NaN or ``-inf`` get zero
    weight; they are counted (:attr:`SampleResult.n_nonfinite`, :attr:`SampleResult.nonfinite`)
    and logged, with a warning when more than
    :data:`~smeft_pyhf.sampler.kernels.nonfinite.NAN_WARNING_FRACTION` of the points are NaN.

    Args:
        draw: ``draw(n) -> (x (n, d), log_q (n,))``, the proposal; it is called as
            ``draw(n, generator=g)`` with a per-chunk generator on ``generator``'s device
            when a generator is given (else with torch's global generator seeded per chunk).
            On Dask workers it must pickle (cloudpickle); it is sent to every worker once.
        log_prob: the target, ``log_prob(x (n, d)) -> (n,)`` (unnormalised is fine).
        ranges: (d, 2) histogram ranges (low, high) per coefficient.
        config: the step configuration (default :class:`SampleConfig`).
        generator: random generator of the chunk seeds.
        names: the ``d`` coefficient names, for error messages.
        runner: where the chunks run (:class:`~smeft_pyhf.cluster.InProcess` by default, or a
            :class:`~smeft_pyhf.cluster.DaskRunner`).

    Returns:
        A :class:`SampleResult`. Tensors follow the device and dtype of the drawn samples.

    Raises:
        ConfigError: if ``ranges`` has the wrong shape or an empty range.
        DataError: if the target is ``+inf`` at a drawn or re-centred point (named in the
            message).

    Example:
        >>> import torch
        >>> normal = torch.distributions.Normal(torch.zeros(1), torch.ones(1))
        >>> def draw(n):
        ...     x = 1.5 * torch.randn(n, 1)
        ...     return x, normal.log_prob(x / 1.5).sum(-1) - math.log(1.5)
        >>> res = sample_and_histogram(draw, lambda x: normal.log_prob(x).sum(-1),
        ...     ranges=torch.tensor([[-5.0, 5.0]]),
        ...     config=SampleConfig(n_batches=1, batch_size=20000, histograms_2d=False))
        >>> abs(res.log_evidence) < 0.05, 0.5 < res.ess_fraction < 0.9
        (True, True)

    References:
        | arXiv:2411.00942, Sec. 2.2 "Sampling", eq. (19) for the ESS.
    """
    config = config or SampleConfig()
    start = time.perf_counter()
    _check_ranges(ranges)
    spec = ChunkSpec(
        ranges=ranges.detach().cpu(),
        config=config,
        base_seed=base_seed(generator),
        generator_device=None if generator is None else str(generator.device),
        names=None if names is None else tuple(str(n) for n in names),
    )
    runner = runner or InProcess()
    weights = _WeightHistogram(config)
    total: ChunkSums | None = None
    parts = runner.map(sample_chunk, [(i, spec) for i in range(config.n_batches)],
                       shared={"draw": draw, "log_prob": log_prob}, label="sampling")
    try:
        for i, part in enumerate(parts):
            weights.add(part.log_weights)
            part = part._replace(log_weights=part.log_weights[:0])
            total = part if total is None else merge_chunks(total, part,
                                                            keep_samples=config.keep_samples)
            if config.target_ess > 0 or log.isEnabledFor(logging.DEBUG):
                ess = _ess(total.sums)
                log.debug("sampling batch %d/%d: ESS/N %.4f", i + 1, config.n_batches,
                          ess / total.n_samples)
                if 0 < config.target_ess <= ess:
                    log.info("sampling reached ESS %.0f >= %.0f after %d of %d batches", ess,
                             config.target_ess, i + 1, config.n_batches)
                    break
    finally:
        close = getattr(parts, "close", None)
        if close is not None:
            close()
    assert total is not None  # n_batches >= 1
    nonfinite = report_nonfinite(total.counts, spec.names, "sampling")
    result = _finish(total, weights, ranges, config, nonfinite, time.perf_counter() - start)
    log.info("sampled %d points in %.1f s: ESS/N %.4f, log Z %.4f +- %.4f", result.n_samples,
             result.seconds, result.ess_fraction, result.log_evidence,
             result.log_evidence_error)
    return result

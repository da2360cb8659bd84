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

Weights are handled in log space: all sums are kept relative to the running maximum of
``log w`` (rescaled when a new maximum appears), in float64 (float32 on MPS). All pairs are
histogrammed with one ``index_add_`` over flattened pair-bin indices, and the best point per
profile bin is found with one ``scatter_reduce(amax)`` plus index recovery; there is no Python
loop over coefficients or pairs.

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

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
from torch import Tensor

from smeft_pyhf.exceptions import ConfigError
from smeft_pyhf.sampler.config import check_field
from smeft_pyhf.sampler.kernels.evaluation import evaluate_in_chunks
from smeft_pyhf.sampler.kernels.nonfinite import CheckedTarget, NonFiniteCounts

__all__ = [
    "SampleConfig",
    "SampleResult",
    "bin_centres",
    "bin_edges",
    "pair_indices",
    "sample_and_histogram",
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


class _ProfileStore:
    """Best ``n_best`` re-centred points per profile bin, over all batches."""

    def __init__(self, n_bins: int, n_best: int, dim: int, like: Tensor) -> None:
        self.log_prob = torch.full((n_bins, n_best), -math.inf, dtype=like.dtype,
                                   device=like.device)
        self.points = torch.zeros((n_bins, n_best, dim), dtype=like.dtype, device=like.device)

    def merge(self, bins: Tensor, log_prob: Tensor, points: Tensor) -> None:
        """Merge one candidate per bin (``bins`` unique) into the store."""
        if bins.numel() == 0:
            return
        old_lp = self.log_prob[bins]
        old_pt = self.points[bins]
        all_lp = torch.cat([old_lp, log_prob[:, None]], dim=1)
        all_pt = torch.cat([old_pt, points[:, None, :]], dim=1)
        k = self.log_prob.shape[1]
        top_lp, top_idx = torch.topk(all_lp, k, dim=1)
        top_pt = torch.gather(all_pt, 1, top_idx[..., None].expand(-1, -1, all_pt.shape[-1]))
        self.log_prob[bins] = top_lp
        self.points[bins] = top_pt


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


def sample_and_histogram(
    draw: Draw,
    log_prob: LogProb,
    *,
    ranges: Tensor,
    config: SampleConfig | None = None,
    generator: torch.Generator | None = None,
    names: Sequence[str] | None = None,
) -> SampleResult:
    """Draw weighted samples and accumulate histograms, profile start points and the ESS.

    Samples where the target is NaN or ``-inf`` get zero weight; they are counted
    (:attr:`SampleResult.n_nonfinite`, :attr:`SampleResult.nonfinite`) and logged, with a
    warning when more than :data:`~smeft_pyhf.sampler.kernels.nonfinite.NAN_WARNING_FRACTION` of the
    points are NaN.

    Args:
        draw: ``draw(n) -> (x (n, d), log_q (n,))``, the proposal; it is called as
            ``draw(n, generator=generator)`` when a generator is given.
        log_prob: the target, ``log_prob(x (n, d)) -> (n,)`` (unnormalised is fine).
        ranges: (d, 2) histogram ranges (low, high) per coefficient.
        config: the step configuration (default :class:`SampleConfig`).
        generator: random generator handed to ``draw``.
        names: the ``d`` coefficient names, for error messages.

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
    dim = ranges.shape[0]
    if ranges.ndim != 2 or ranges.shape[1] != 2:
        raise ConfigError(f"ranges must have shape (d, 2), got {tuple(ranges.shape)}",
                          where="sample_and_histogram", hint="pass one (low, high) per coefficient")
    if not bool((ranges[:, 1] > ranges[:, 0]).all()):
        raise ConfigError("every range needs low < high", where="sample_and_histogram",
                          hint="check the ranges passed to the sampler")

    def _draw(n: int) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            if generator is None:
                return draw(n)
            return draw(n, generator=generator)

    log_prob = CheckedTarget(log_prob, step="sampling", names=names, logger=log)
    pairs: Tensor | None = None
    state: dict[str, Tensor] = {}
    b1, b2, p1, p2 = config.bins_1d, config.bins_2d, config.profile_bins_1d, config.profile_bins_2d
    n_pairs = dim * (dim - 1) // 2 if config.histograms_2d else 0
    m = -math.inf  # running max of log w
    n_total = 0
    n_eval = 0
    n_nonfinite = 0
    best_lp = -math.inf
    best_point: Tensor | None = None
    kept_x: list[Tensor] = []
    kept_lw: list[Tensor] = []
    n_kept = 0
    ref_log_w = 0.0
    store1: _ProfileStore | None = None
    store2: _ProfileStore | None = None

    for batch in range(config.n_batches):
        x, log_q = _draw(config.batch_size)
        x = x.detach()
        if batch == 0:
            dtype, device = x.dtype, x.device
            acc = dtype if config.accumulate == "input" or device.type == "mps" else torch.float64
            rng = ranges.to(device=device, dtype=dtype)
            pairs = pair_indices(dim, device=device)[:n_pairs]
            state = {
                "s1": torch.zeros((), dtype=acc, device=device),
                "s2": torch.zeros((), dtype=acc, device=device),
                "out": torch.zeros((), dtype=acc, device=device),
                "h1": torch.zeros(dim * b1 + 1, dtype=acc, device=device),
                "h1w2": torch.zeros(dim * b1 + 1, dtype=acc, device=device),
                "h2": torch.zeros(n_pairs * b2 * b2 + 1, dtype=acc, device=device),
                "h2w2": torch.zeros(n_pairs * b2 * b2 + 1, dtype=acc, device=device),
            }
            wh = torch.zeros(config.weight_bins + 2, dtype=torch.long, device=device)
            store1 = _ProfileStore(dim * p1, config.n_best, dim, x)
            store2 = _ProfileStore(n_pairs * p2 * p2, config.n_best, dim, x)
            centres1 = bin_centres(rng, p1)  # (d, p1)
            centres2 = bin_centres(rng, p2)  # (d, p2)
            coord = torch.arange(dim, device=device)
        nan_before = log_prob.n_nan
        lp = evaluate_in_chunks(log_prob, x, config.eval_chunk)
        log_prob.check()
        n_eval += x.shape[0]
        n_nonfinite += log_prob.n_nan - nan_before
        log_w = (lp - log_q.detach().to(x.dtype)).to(acc)
        log_w = torch.nan_to_num(log_w, nan=-math.inf, posinf=math.inf)
        n = x.shape[0]
        n_total += n
        batch_max = float(log_w.max())
        if batch == 0:
            finite = log_w[torch.isfinite(log_w)]
            if finite.numel():
                ref_log_w = float(torch.logsumexp(finite, 0)) - math.log(n)
        if batch_max > m:
            if math.isfinite(m):
                factor = math.exp(m - batch_max)
                for key in ("s1", "out", "h1", "h2"):
                    state[key] *= factor
                for key in ("s2", "h1w2", "h2w2"):
                    state[key] *= factor * factor
            m = batch_max
        w = torch.exp(log_w - m) if math.isfinite(m) else torch.zeros_like(log_w)
        w2 = w * w
        state["s1"] += w.sum()
        state["s2"] += w2.sum()

        # weight histogram in decades relative to the first batch's mean weight
        lw10 = (log_w - ref_log_w) / math.log(10.0)
        lo, hi = config.weight_range
        wb = torch.floor((lw10 - lo) / (hi - lo) * config.weight_bins).to(torch.long) + 1
        wb = torch.where(torch.isfinite(lw10), wb, torch.zeros_like(wb))
        wh += torch.bincount(wb.clamp(0, config.weight_bins + 1),
                             minlength=config.weight_bins + 2)

        # 1D marginals and profile bins
        idx1 = _bin_index(x, rng, b1)  # (n, d)
        outside = (idx1 < 0).any(dim=1)
        state["out"] += w[outside].sum()
        flat1 = torch.where(idx1 >= 0, coord * b1 + idx1, torch.full_like(idx1, dim * b1))
        state["h1"].index_add_(0, flat1.reshape(-1), w[:, None].expand(n, dim).reshape(-1))
        state["h1w2"].index_add_(0, flat1.reshape(-1), w2[:, None].expand(n, dim).reshape(-1))

        rows = torch.arange(n, device=device)
        pidx1 = _bin_index(x, rng, p1)
        pflat1 = torch.where(pidx1 >= 0, coord * p1 + pidx1, torch.full_like(pidx1, dim * p1))
        _, ba1 = best_per_bin(pflat1.reshape(-1), lp[:, None].expand(n, dim).reshape(-1),
                               rows[:, None].expand(n, dim).reshape(-1), dim * p1)
        sel = (ba1 >= 0).nonzero().squeeze(1)
        pts = x[ba1[sel]].clone()
        ci, cb = sel // p1, sel % p1
        pts[torch.arange(sel.numel(), device=device), ci] = centres1[ci, cb]
        new_lp = evaluate_in_chunks(log_prob, pts, config.eval_chunk)
        n_eval += pts.shape[0]
        store1.merge(sel, new_lp, pts)

        # 2D marginals and profile bins, chunked over rows to bound memory
        if n_pairs:
            pi, pj = pairs[:, 0], pairs[:, 1]
            idx2 = _bin_index(x, rng, b2)
            pidx2 = _bin_index(x, rng, p2)
            bb_lp = torch.full((n_pairs * p2 * p2,), -math.inf, dtype=x.dtype, device=device)
            bb_row = torch.full((n_pairs * p2 * p2,), -1, dtype=torch.long, device=device)
            chunk = max(1, _CHUNK_ENTRIES // n_pairs)
            pair_off = torch.arange(n_pairs, device=device)
            for r0 in range(0, n, chunk):
                r1 = min(n, r0 + chunk)
                ia, ib = idx2[r0:r1][:, pi], idx2[r0:r1][:, pj]
                ok = (ia >= 0) & (ib >= 0)
                flat2 = torch.where(ok, (pair_off * b2 + ia) * b2 + ib,
                                    torch.full_like(ia, n_pairs * b2 * b2)).reshape(-1)
                nc = r1 - r0
                state["h2"].index_add_(0, flat2, w[r0:r1, None].expand(nc, n_pairs).reshape(-1))
                state["h2w2"].index_add_(0, flat2,
                                         w2[r0:r1, None].expand(nc, n_pairs).reshape(-1))
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
            sel = (bb_row >= 0).nonzero().squeeze(1)
            pts = x[bb_row[sel]].clone()
            pair = sel // (p2 * p2)
            qa, qb = (sel // p2) % p2, sel % p2
            ar = torch.arange(sel.numel(), device=device)
            pts[ar, pi[pair]] = centres2[pi[pair], qa]
            pts[ar, pj[pair]] = centres2[pj[pair], qb]
            new_lp = evaluate_in_chunks(log_prob, pts, config.eval_chunk)
            n_eval += pts.shape[0]
            store2.merge(sel, new_lp, pts)

        # overall best sample and kept samples
        i_best = int(torch.argmax(lp))
        if float(lp[i_best]) > best_lp:
            best_lp = float(lp[i_best])
            best_point = x[i_best].clone()
        if n_kept < config.keep_samples:
            take = min(n, config.keep_samples - n_kept)
            kept_x.append(x[:take].clone())
            kept_lw.append(log_w[:take].to(x.dtype))
            n_kept += take
        if config.target_ess > 0 or log.isEnabledFor(logging.DEBUG):
            ess = float(state["s1"] ** 2 / state["s2"]) if float(state["s2"]) > 0 else 0.0
            log.debug("sampling batch %d/%d: ESS/N %.4f", batch + 1, config.n_batches,
                      ess / n_total)
            if 0 < config.target_ess <= ess:
                log.info("sampling reached ESS %.0f >= %.0f after %d of %d batches", ess,
                         config.target_ess, batch + 1, config.n_batches)
                break

    nonfinite = log_prob.report()
    s1, s2 = float(state["s1"]), float(state["s2"])
    ess = s1 * s1 / s2 if s2 > 0 else 0.0
    log_z = m + math.log(s1) - math.log(n_total) if s1 > 0 else -math.inf
    log_z_err = math.sqrt(max(1.0 / ess - 1.0 / n_total, 0.0)) if ess > 0 else math.inf
    norm = state["s1"] if s1 > 0 else torch.ones_like(state["s1"])
    h1 = state["h1"][:-1].reshape(dim, b1)
    h2 = state["h2"][:-1].reshape(n_pairs, b2, b2)
    res_dtype = x.dtype
    lo, hi = config.weight_range
    result = SampleResult(
        ranges=rng,
        pairs=pairs,
        marginal1d=(h1 / norm).to(res_dtype),
        marginal1d_error=(state["h1w2"][:-1].reshape(dim, b1).sqrt() / norm).to(res_dtype),
        marginal2d=(h2 / norm).to(res_dtype),
        marginal2d_error=(state["h2w2"][:-1].reshape(n_pairs, b2, b2).sqrt() / norm).to(res_dtype),
        profile1d_log_prob=store1.log_prob.reshape(dim, p1, config.n_best),
        profile1d_points=store1.points.reshape(dim, p1, config.n_best, dim),
        profile2d_log_prob=store2.log_prob.reshape(n_pairs, p2, p2, config.n_best),
        profile2d_points=store2.points.reshape(n_pairs, p2, p2, config.n_best, dim),
        n_samples=n_total,
        ess=ess,
        ess_fraction=ess / n_total,
        log_evidence=log_z,
        log_evidence_error=log_z_err,
        max_log_weight=m,
        outside_fraction=float(state["out"]) / s1 if s1 > 0 else 0.0,
        n_nonfinite=n_nonfinite,
        best_point=best_point if best_point is not None else rng.mean(dim=1),
        best_log_prob=best_lp,
        weight_histogram=wh,
        weight_edges=torch.linspace(lo, hi, config.weight_bins + 1, dtype=res_dtype,
                                    device=device),
        samples=torch.cat(kept_x) if kept_x else x.new_zeros((0, dim)),
        samples_log_weight=torch.cat(kept_lw) if kept_lw else x.new_zeros((0,)),
        n_evaluations=n_eval,
        seconds=time.perf_counter() - start,
        nonfinite=nonfinite,
    )
    log.info("sampled %d points in %.1f s: ESS/N %.4f, log Z %.4f +- %.4f", n_total,
             result.seconds, result.ess_fraction, log_z, log_z_err)
    return result

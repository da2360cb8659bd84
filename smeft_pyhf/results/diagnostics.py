"""Convergence figures of a sampled fit and the warnings they raise.

A fit's numbers are only as good as its importance weights and its profile maximisations. The
figures kept in ``results.json`` and printed after ``smeft-pyhf fit``:

* ``ess_fraction``: Kish effective sample size over the number of samples (step 4);
* ``max_weight_share``: the largest single weight over the sum of all weights;
* ``marginal_ess``: per coefficient, the effective number of samples behind the ends of its
  95% marginal interval (:func:`marginal_ess`; equal weights give the number of samples);
* ``profile_converged_fraction``: L-BFGS start points that met their gradient tolerance;
* ``outside_fraction``: weight of samples outside the histogram ranges;
* ``at_prior_edge``: coefficients whose 95% interval (profiled or marginalised) reaches the end
  of the prior range, with the side (``low``, ``high``);
* ``chain_check``: the Markov-chain check of the marginalised 95% interval ends
  (:mod:`smeft_pyhf.sampler.chain_check`, when the runcard asks for it): per coefficient the
  largest shift of an end in marginal widths, and the ends whose shift is significant;
* ``heavy_weights``: where the heaviest importance weights sit: the ``n`` largest weights of
  step 4, their share ``share`` of the total weight, and per coefficient the mean position
  ``mean_z`` of those samples in marginal standard deviations from the marginal mean
  (:func:`heavy_weights`). Heavy weights mark where the flow's proposal is lightest relative to
  the posterior; when they sit together in one coefficient's tail (``|mean_z|`` above its
  threshold, the sign gives the side) the flow under-covers that tail, and the interval end
  there comes out too short and moves from one sample to the next by more than
  ``marginal_ess`` says (one sample rarely holds the heaviest points of such a tail);
* ``mean_force``: the 1D marginal tails that the fit replaced by their reconstruction from the
  mean force (:mod:`smeft_pyhf.sampler.mean_force`, when the runcard asks for it and a tail is
  flagged): per coefficient and side the grid, forces, reconstructed log density, the
  interval end before and after and that end's error from the forces (``end_error``, in
  marginal standard deviations), and the weighted histograms as they were. A replaced tail
  no longer comes from the importance weights, so the ``heavy_weights`` and ``chain_check``
  warnings leave it out; the reconstruction warns when its own ``end_error`` misses its
  threshold;
* ``profile_gaps``: every gap between two pieces of a profiled 95% interval, judged by a direct
  constrained maximisation at its centre (:mod:`smeft_pyhf.sampler.gaps`): ``real`` when
  ``-2 Delta log L`` stays above the threshold there; a gap that is not real was closed, and it
  means step 5 stopped short of the maximum in some bins.

:func:`assess` compares them with :class:`Thresholds` and returns one
:class:`DiagnosticWarning` per figure that misses its threshold, naming what to do.

Example:
    >>> d = Diagnostics(ess_fraction=0.02, max_weight_share=0.03,
    ...                 marginal_ess={"ctG": 150.0, "ctZ": 5e4})
    >>> [w.figure for w in assess(d)]
    ['ess_fraction', 'max_weight_share', 'marginal_ess']
    >>> assess(d)[2].coefficients
    ('ctG',)
    >>> gap = {"coefficient": "cpt", "centre": -8.1, "delta_chi2": 0.4, "real": False}
    >>> assess(Diagnostics(profile_gaps=(gap,)))[0].message()  # doctest: +ELLIPSIS
    '1 false gap(s) in profiled intervals (cpt): step 5 stopped short...'
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "DiagnosticWarning",
    "Diagnostics",
    "Thresholds",
    "assess",
    "heavy_tails",
    "heavy_weights",
    "marginal_ess",
    "marginal_moments",
]


class Thresholds(NamedTuple):
    """Where a convergence figure stops being trustworthy.

    Attributes:
        ess_fraction: smallest ESS/N: below it the flow covers the posterior's mass but not its
            shape, and a few samples carry the result.
        max_weight_share: largest share of the total weight one sample may hold.
        marginal_ess: smallest effective sample size behind a marginal histogram; with 1000 the
            Monte-Carlo noise of a 95% interval end is about 0.1 of the marginal's standard
            deviation (quantile error ``sqrt(q (1 - q) / n) / pdf``, q = 0.025, Gaussian).
        profile_converged_fraction: smallest fraction of converged profile maximisations.
        outside_fraction: largest weight outside the histogram ranges.
        heavy_weights: largest ``|mean_z|`` of the heaviest samples in one coefficient: the
            mean of ``n = 20`` positions drawn at random from the posterior has a spread of
            about ``1 / sqrt(20) = 0.22``, so 1.5 is far outside what chance gives.
        heavy_weights_share: the heaviest samples must hold at least this share of the total
            weight for their position to count (6 % of the 2.5 % beyond a 95 % interval end):
            with nearly equal weights, as in a converged fit, where the largest of them sit is
            of no consequence.
        mean_force_end_error: largest error of an interval end from a mean-force tail, in
            marginal standard deviations.
    """

    ess_fraction: float = 0.1
    max_weight_share: float = 1e-3
    marginal_ess: float = 1000.0
    profile_converged_fraction: float = 0.95
    outside_fraction: float = 0.01
    heavy_weights: float = 1.5
    heavy_weights_share: float = 1.5e-3
    mean_force_end_error: float = 0.1


class DiagnosticWarning(NamedTuple):
    """One convergence figure that missed its threshold."""

    figure: str
    value: float
    threshold: float
    coefficients: tuple[str, ...]
    advice: str

    def message(self) -> str:
        """One sentence for the log and the summary."""
        who = f" ({', '.join(self.coefficients)})" if self.coefficients else ""
        if self.figure == "at_prior_edge":
            return f"at the prior edge{who}: {self.advice}"
        if self.figure == "profile_gaps":
            return f"{self.value:.0f} false gap(s) in profiled intervals{who}: {self.advice}"
        return (f"{self.figure} = {self.value:.3g}{who} misses its threshold "
                f"{self.threshold:.3g}: {self.advice}")


class Diagnostics(NamedTuple):
    """The convergence figures of a fit (see the module docstring); None where not measured."""

    ess_fraction: float | None = None
    max_weight_share: float | None = None
    marginal_ess: dict[str, float] = {}
    profile_converged_fraction: float | None = None
    outside_fraction: float | None = None
    at_prior_edge: dict[str, tuple[str, ...]] = {}
    profile_gaps: tuple[dict[str, Any], ...] = ()
    chain_check: dict[str, Any] = {}
    heavy_weights: dict[str, Any] = {}
    mean_force: dict[str, Any] = {}

    def replaced_tails(self) -> set[tuple[str, str]]:
        """``(name, side)`` of every tail replaced by its mean-force reconstruction."""
        tails = self.mean_force.get("tails") or {}
        return {(name, side) for name, sides in tails.items() for side in sides}

    def to_dict(self) -> dict[str, Any]:
        """Plain mapping for ``results.json`` (warnings included)."""
        out = self._asdict()
        out["at_prior_edge"] = {k: list(v) for k, v in self.at_prior_edge.items()}
        out["profile_gaps"] = [dict(g) for g in self.profile_gaps]
        out["chain_check"] = dict(self.chain_check)
        out["heavy_weights"] = dict(self.heavy_weights)
        out["mean_force"] = dict(self.mean_force)
        out["warnings"] = [w._asdict() | {"coefficients": list(w.coefficients)}
                           for w in assess(self)]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Diagnostics:
        """Inverse of :meth:`to_dict` (warnings are recomputed, not read)."""
        fields = {k: data.get(k) for k in cls._fields if k in data}
        fields["marginal_ess"] = {k: float(v) for k, v in (data.get("marginal_ess") or {}).items()}
        fields["at_prior_edge"] = {k: tuple(v) for k, v in (data.get("at_prior_edge") or {}).items()}
        fields["profile_gaps"] = tuple(dict(g) for g in (data.get("profile_gaps") or ()))
        fields["chain_check"] = dict(data.get("chain_check") or {})
        fields["heavy_weights"] = dict(data.get("heavy_weights") or {})
        fields["mean_force"] = dict(data.get("mean_force") or {})
        return cls(**fields)


_ADVICE = {
    "ess_fraction": "the flow has not learnt the posterior's shape; train longer (sampler: train: "
                    "n_batches), use a larger flow, or run on a GPU with --device cuda",
    "max_weight_share": "a few samples carry the result; train longer or draw more samples "
                        "(sampler: sample: n_batches), or run on a GPU with --device cuda",
    "marginal_ess": "these marginals and their intervals are noisy; draw more samples "
                    "(sampler: sample: n_batches) or train longer",
    "profile_converged_fraction": "profiles may sit below their maxima; raise sampler: profile: "
                                  "max_steps",
    "outside_fraction": "the histogram ranges cut off posterior mass; widen the coefficients' "
                        "ranges in the runcard",
    "profile_gaps": "step 5 stopped short of the maximum in some bins (gaps in these profiled "
                    "intervals were closed by a direct maximisation); other bins may sit low "
                    "too: raise sampler: profile: max_steps",
    "chain_check": "Markov chains started from the weighted sample move posterior mass across "
                   "these marginalised 95% interval ends: the flow under-samples the region "
                   "beyond them, so the ends lie too far in by at least the shift in "
                   "results.json (diagnostics: chain_check: flagged); rebuild those tails from "
                   "their mean force (sampler: mean_force: {n_chains: 128}), or train longer "
                   "(sampler: train: n_batches, final_batches) or run on a GPU with --device "
                   "cuda; more samples from the same flow do not help",
    "heavy_weights": "the heaviest importance weights sit together in these coefficients' tails "
                     "(results.json: diagnostics: heavy_weights: mean_z; its sign gives the "
                     "side): the flow under-covers that tail, so the marginalised interval end "
                     "there is likely too short and changes from run to run by more than its "
                     "marginal ESS says; rebuild that tail from its mean force (sampler: "
                     "mean_force: {n_chains: 128}), or train longer (sampler: train: n_batches, "
                     "final_batches) or run on a GPU with --device cuda, and compare two seeds",
    "mean_force": "the marginal tails of these coefficients come from their mean force "
                  "(results.json: diagnostics: mean_force), and the forces are too noisy for "
                  "the interval end there: raise sampler: mean_force: n_chains or n_iterations",
    "at_prior_edge": "their 95% intervals reach the end of the prior range, so the limit there "
                     "is set by the range; widen it in the runcard where the physics allows",
}


def assess(diagnostics: Diagnostics, thresholds: Thresholds = Thresholds()) -> list[DiagnosticWarning]:
    """The figures of ``diagnostics`` that miss ``thresholds``, one warning each."""
    out: list[DiagnosticWarning] = []

    def low(figure: str, value: float | None) -> None:
        limit = getattr(thresholds, figure)
        if value is not None and math.isfinite(limit) and not value >= limit:
            out.append(DiagnosticWarning(figure, float(value), limit, (), _ADVICE[figure]))

    def high(figure: str, value: float | None) -> None:
        limit = getattr(thresholds, figure)
        if value is not None and not value <= limit:
            out.append(DiagnosticWarning(figure, float(value), limit, (), _ADVICE[figure]))

    low("ess_fraction", diagnostics.ess_fraction)
    high("max_weight_share", diagnostics.max_weight_share)
    noisy = {k: v for k, v in diagnostics.marginal_ess.items() if not v >= thresholds.marginal_ess}
    if noisy:
        worst = min(noisy.values())
        out.append(DiagnosticWarning("marginal_ess", float(worst), thresholds.marginal_ess,
                                     tuple(noisy), _ADVICE["marginal_ess"]))
    low("profile_converged_fraction", diagnostics.profile_converged_fraction)
    high("outside_fraction", diagnostics.outside_fraction)
    closed = [g for g in diagnostics.profile_gaps if not g.get("real", True)]
    if closed:
        out.append(DiagnosticWarning("profile_gaps", float(len(closed)), 0.0,
                                     tuple(dict.fromkeys(str(g["coefficient"]) for g in closed)),
                                     _ADVICE["profile_gaps"]))
    replaced = diagnostics.replaced_tails()
    moved = {name: ends for name, ends in (diagnostics.chain_check.get("flagged") or {}).items()
             if any((name, side) not in replaced for side in ends)}
    if moved:
        shifts = [abs(float(side["shift"])) for ends in moved.values() for side in ends.values()]
        out.append(DiagnosticWarning("chain_check", max(shifts),
                                     float(diagnostics.chain_check.get("shift_threshold", 0.1)),
                                     tuple(moved), _ADVICE["chain_check"]))
    sides = {k: v for k, v in heavy_tails(diagnostics.heavy_weights, thresholds).items()
             if (k, v) not in replaced}
    if sides:
        where = {k: float(diagnostics.heavy_weights["mean_z"][k]) for k in sides}
        worst = max(where, key=lambda k: abs(where[k]))
        out.append(DiagnosticWarning("heavy_weights", where[worst], thresholds.heavy_weights,
                                     tuple(sorted(where, key=lambda k: -abs(where[k]))),
                                     _ADVICE["heavy_weights"]))
    noisy_tails = {name: float(t["end_error"])
                   for name, sides in (diagnostics.mean_force.get("tails") or {}).items()
                   for t in sides.values()
                   if not float(t["end_error"]) <= thresholds.mean_force_end_error}
    if noisy_tails:
        out.append(DiagnosticWarning("mean_force", max(noisy_tails.values()),
                                     thresholds.mean_force_end_error, tuple(noisy_tails),
                                     _ADVICE["mean_force"]))
    if diagnostics.at_prior_edge:
        out.append(DiagnosticWarning("at_prior_edge", float(len(diagnostics.at_prior_edge)), 0.0,
                                     tuple(diagnostics.at_prior_edge), _ADVICE["at_prior_edge"]))
    return out


def heavy_tails(heavy: Mapping[str, Any], thresholds: Thresholds = Thresholds()) -> dict[str, str]:
    """The tails where a :func:`heavy_weights` figure puts the heaviest samples together:
    ``{name: "low" | "high"}`` for every coefficient with ``|mean_z|`` at or above
    ``thresholds.heavy_weights``, when those samples hold at least
    ``thresholds.heavy_weights_share`` of the weight.

    Example:
        >>> heavy_tails({"n": 20, "share": 0.003, "mean_z": {"a": 2.4, "b": -0.3, "c": -1.8}})
        {'a': 'high', 'c': 'low'}
        >>> heavy_tails({"n": 20, "share": 0.0004, "mean_z": {"a": 2.4}})
        {}
    """
    if not heavy or float(heavy.get("share", 0.0)) < thresholds.heavy_weights_share:
        return {}
    return {k: ("high" if float(v) > 0 else "low") for k, v in (heavy.get("mean_z") or {}).items()
            if abs(float(v)) >= thresholds.heavy_weights}


def marginal_moments(probability: Any, centres: Any) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the mean and standard deviation of a binned marginal (weights per bin at the
    bin ``centres``, both ``(d, bins)``).

    Example:
        >>> m, s = marginal_moments(np.array([[1.0, 0.0, 1.0]]), np.array([[-1.0, 0.0, 1.0]]))
        >>> m.tolist(), s.tolist()
        ([0.0], [1.0])
    """
    p = np.atleast_2d(np.asarray(probability, dtype=float))
    c = np.atleast_2d(np.asarray(centres, dtype=float))
    total = p.sum(1, keepdims=True)
    p = p / np.where(total > 0, total, 1.0)
    mean = (p * c).sum(1)
    return mean, np.sqrt((p * (c - mean[:, None]) ** 2).sum(1))


def heavy_weights(points: Any, log_weights: Any, *, log_total: float, mean: Any, std: Any,
                  names: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Where the heaviest samples sit: their number, weight share and mean position per
    coefficient in marginal standard deviations.

    Args:
        points: ``(k, d)`` the heaviest samples.
        log_weights: ``(k,)`` their ``log w``.
        log_total: ``log`` of the sum of all weights (``log Z + log N``).
        mean: ``(d,)`` the marginal means; ``std``: ``(d,)`` the marginal standard deviations.
        names: the ``d`` coefficient names.

    Example:
        >>> h = heavy_weights(np.array([[3.0, 0.5], [2.0, -0.5]]), np.log([0.01, 0.01]),
        ...                   log_total=0.0, mean=np.zeros(2), std=np.ones(2), names=["a", "b"])
        >>> h["n"], round(h["share"], 4), h["mean_z"]
        (2, 0.02, {'a': 2.5, 'b': 0.0})
        >>> [w.figure for w in assess(Diagnostics(heavy_weights=h))]
        ['heavy_weights']
    """
    x = np.atleast_2d(np.asarray(points, dtype=float))
    lw = np.asarray(log_weights, dtype=float).reshape(-1)
    if lw.size == 0 or not math.isfinite(log_total):
        return {}
    z = (x - np.asarray(mean, dtype=float)) / np.where(np.asarray(std) > 0, std, 1.0)
    return {"n": int(lw.size), "share": float(np.exp(lw - log_total).sum()),
            "mean_z": {n: round(float(v), 4) for n, v in zip(names, z.mean(0), strict=True)}}


def marginal_ess(probability: Any, error: Any, *, tail: float = 0.025) -> np.ndarray:
    """Per row, the effective number of samples behind the 95% interval ends of a marginal.

    The estimated cumulative probability ``F`` at the bin where the lower (upper) tail of
    ``tail`` ends has the weighted-sample variance ``sum_b e_b^2 (1[b <= k] - F)^2``; with ``n``
    equally weighted samples it is ``F (1 - F) / n``. The figure is ``F (1 - F) / variance``,
    the smaller of the two tails: heavy samples in a tail lower it, heavy samples in the bulk
    much less.

    Args:
        probability: ``(d, bins)`` weight fraction per bin.
        error: ``(d, bins)`` its Monte-Carlo error ``sqrt(sum w^2) / sum w`` (same
            normalisation).
        tail: probability in each tail (0.025: the ends of a central 95% interval).

    Example:
        >>> p = np.array([[0.1, 0.2, 0.4, 0.2, 0.1]]); n = 1000  # equal weights: counts / n
        >>> marginal_ess(p, np.sqrt(p * n) / n, tail=0.05).round(6).tolist()
        [1000.0]
    """
    p = np.atleast_2d(np.asarray(probability, dtype=float))
    e = np.atleast_2d(np.asarray(error, dtype=float))
    total = p.sum(axis=-1, keepdims=True)
    total = np.where(total > 0, total, 1.0)
    p, e = p / total, e / total  # the histogram's own mass (inside the ranges) is the reference
    out = np.full(p.shape[0], np.inf)
    for row in range(p.shape[0]):
        cdf = np.cumsum(p[row])
        for q, lower in ((tail, True), (1.0 - tail, False)):
            k = int(np.searchsorted(cdf, q)) if lower else int(np.searchsorted(cdf, q)) - 1
            k = min(max(k, 0), p.shape[1] - 1)
            f = cdf[k]
            var = float(np.sum(e[row] ** 2 * ((np.arange(p.shape[1]) <= k) - f) ** 2))
            if var > 0 and 0 < f < 1:
                out[row] = min(out[row], f * (1 - f) / var)
            elif var == 0 and 0 < f < 1:
                out[row] = min(out[row], 0.0)
    return out

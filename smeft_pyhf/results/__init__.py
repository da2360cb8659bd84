"""Fit results: the ``results.json`` file, interval helpers and plots.

* :mod:`smeft_pyhf.results.results_file`: :class:`FitResult`, :func:`read_results`,
  :func:`write_results`.
* :mod:`smeft_pyhf.results.intervals`: profiled (``Delta chi2``) and marginalised (HDI)
  intervals from binned likelihoods (the interval type and the levels ``"68"``/``"95"`` are
  in :mod:`smeft_pyhf.formats.intervals`).
* :mod:`smeft_pyhf.results.plots`: triangle, summary and weight plots (imported lazily, so
  reading results does not load matplotlib).

Example:
    >>> from smeft_pyhf.results import read_results  # doctest: +SKIP
    >>> res = read_results("smeft_pyhf_results")       # doctest: +SKIP
    >>> res.interval("ctG", method="profiled", level="95").segments  # doctest: +SKIP
"""

from __future__ import annotations

from .intervals import marginalised_interval, profiled_interval
from .results_file import (
    AnalyticSolution,
    FitResult,
    Histogram1D,
    Histogram2D,
    WeightHistogram,
    make_fit_result,
    read_results,
    write_results,
)

__all__ = [
    "AnalyticSolution",
    "FitResult",
    "Histogram1D",
    "Histogram2D",
    "WeightHistogram",
    "make_fit_result",
    "marginalised_interval",
    "profiled_interval",
    "read_results",
    "write_results",
]

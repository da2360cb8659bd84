"""The five-step normalizing-flow sampler of arXiv:2411.00942 on any batched torch ``log_prob``.

* the steps: :mod:`.prescaling` (1), :mod:`.pretrain` (2), :mod:`.training` (3),
  :mod:`.sampling` (4, histograms), :mod:`.profiling` (5, L-BFGS profiles), made of the
  :mod:`.kernels` (weights and ESS, resampling, Metropolis, AIS, schedules, standardisation,
  the chunked evaluator);
* :mod:`.pipeline`: :func:`run_sampler` runs all five, :class:`SamplerConfig` holds every
  step's settings (``SamplerConfig.paper(sector)`` for the paper's Table 5); around it
  :mod:`.coordinates` (the flow's coordinates), :mod:`.ranges` (histogram ranges),
  :mod:`.checkpoint` and :mod:`.seeding` (per-step generators);
* :mod:`.flows`, :mod:`.splines`: the RQ-spline coupling flow; :mod:`.toys`: the paper's toys.

Example:
    >>> import torch
    >>> from smeft_pyhf.sampler import SamplerConfig, run_sampler
    >>> res = run_sampler(lambda x: -0.5 * (x**2).sum(-1), names=["c"],
    ...                   config=SamplerConfig.reduced(), seed=0, progress=False)
    >>> round(res.sample_result.ess_fraction, 1)
    1.0

References:
    Heimel et al., "Profile likelihoods on ML-steroids", arXiv:2411.00942.
"""

from __future__ import annotations

from .pipeline import SamplerConfig, SamplerResult, run_sampler

__all__ = ["SamplerConfig", "SamplerResult", "run_sampler"]

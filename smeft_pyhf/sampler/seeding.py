"""Per-step randomness: step ``k`` of a run with seed ``s`` draws from a generator seeded
with ``(s, k)``, and torch's global generator is forked and seeded the same way while the step
runs (restored afterwards), so a resumed run equals an uninterrupted one.

Example:
    >>> with StepRng(1, 2, torch.device("cpu")) as g:
    ...     a = torch.rand(2, generator=g)
    >>> with StepRng(1, 2, torch.device("cpu")) as g:
    ...     bool(torch.equal(a, torch.rand(2, generator=g)))
    True
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["StepRng", "step_seed"]


def step_seed(seed: int, step: int) -> int:
    """The 32-bit seed of step ``step`` of a run with seed ``seed``.

    Example:
        >>> step_seed(0, 1) == step_seed(0, 1) != step_seed(0, 2)
        True
    """
    return int(np.random.SeedSequence([int(seed), step]).generate_state(1, dtype=np.uint32)[0])


class StepRng:
    """A generator for step ``step`` plus a forked, seeded global torch RNG while it runs.

    Args:
        seed: the run's seed.
        step: the step's number.
        device: where the generator lives (a CUDA device's global RNG is forked too).
    """

    def __init__(self, seed: int, step: int, device: torch.device) -> None:
        self.seed = step_seed(seed, step)
        self.device = device
        self.generator = torch.Generator(device=device).manual_seed(self.seed)
        self._fork: Any = None

    def __enter__(self) -> torch.Generator:
        devices = [self.device] if self.device.type == "cuda" else []
        self._fork = torch.random.fork_rng(devices=devices)
        self._fork.__enter__()
        torch.manual_seed(self.seed)
        return self.generator

    def __exit__(self, *exc: object) -> None:
        assert self._fork is not None
        self._fork.__exit__(*exc)

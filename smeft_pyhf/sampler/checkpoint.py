"""Checkpoints of a sampler run: the state after every finished step, written atomically.

The file ``<folder>/sampler_checkpoint.pt`` holds the finished steps' results, their timings and
the flow's weights, with a hash of everything the run depends on (:func:`config_hash`). A run
with the same hash resumes after the last finished step; another hash starts afresh (with a
warning) and overwrites the file.

Example:
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> ck = Checkpoint.open(folder, "abc", torch.device("cpu"))
    >>> ck.record("prescale", None, 1.5, flow_state={})
    >>> Checkpoint.open(folder, "abc", torch.device("cpu")).done
    ['prescale']
    >>> Checkpoint.open(folder, "other", torch.device("cpu")).done
    []
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from smeft_pyhf._io import load_tensors, save_tensors
from smeft_pyhf.sampler.kernels.nonfinite import NonFiniteCounts
from smeft_pyhf.sampler.prescaling import PrescaleResult
from smeft_pyhf.sampler.pretrain import PretrainResult
from smeft_pyhf.sampler.profiling import ProfileResult
from smeft_pyhf.sampler.sampling import SampleResult
from smeft_pyhf.sampler.training import TrainResult

__all__ = ["CHECKPOINT_FILE", "Checkpoint", "config_hash"]

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "sampler_checkpoint.pt"
FORMAT = 1
"""The layout of the checkpoint's state dict (part of the hash)."""

RESULT_TYPES: dict[str, type] = {
    cls.__name__: cls
    for cls in (PrescaleResult, PretrainResult, TrainResult, SampleResult, ProfileResult,
                NonFiniteCounts)
}
"""The NamedTuples a checkpoint may hold (nothing else is unpickled)."""


def config_hash(config: Mapping[str, Any], *, seed: int, names: Sequence[str],
                ranges: Tensor | None, init_scale: float | Tensor,
                init_mean: Tensor | None, device: torch.device,
                support: Tensor | None = None) -> str:
    """sha256 of what a run depends on: the sampler settings (a plain dict), seed, names,
    ranges, the pre-scaling base, the device type and the support box.

    Example:
        >>> a = config_hash({"x": 1}, seed=0, names=["c"], ranges=None, init_scale=1.0,
        ...                 init_mean=None, device=torch.device("cpu"))
        >>> a == config_hash({"x": 1}, seed=1, names=["c"], ranges=None, init_scale=1.0,
        ...                  init_mean=None, device=torch.device("cpu"))
        False
    """
    def plain(t: Any) -> Any:
        if isinstance(t, Tensor):
            return [float(v) for v in t.detach().reshape(-1).cpu().tolist()]
        return t

    payload = {
        "format": FORMAT,
        "config": dict(config),
        "seed": int(seed),
        "names": list(names),
        "ranges": plain(ranges),
        "init_scale": plain(init_scale),
        "init_mean": plain(init_mean),
        "device": device.type,
    }
    if support is not None:
        payload["support"] = plain(support)
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class Checkpoint:
    """The state of a run: finished steps, their results and timings, the flow's weights.

    Attributes:
        path: the checkpoint file, or None (nothing is written).
        key: the run's :func:`config_hash`.
        done: the finished steps, in order.
        results: step name -> its result.
        timings: step name -> seconds.
        flow_state: the flow's ``state_dict`` after the last finished step, or None.
    """

    def __init__(self, path: Path | None, key: str, state: dict[str, Any] | None = None) -> None:
        state = state or {}
        self.path = path
        self.key = key
        self.done: list[str] = list(state.get("done", []))
        self.results: dict[str, Any] = dict(state.get("results", {}))
        self.timings: dict[str, float] = dict(state.get("timings", {}))
        self.flow_state: dict[str, Tensor] | None = state.get("flow_state")

    @classmethod
    def open(cls, folder: str | Path | None, key: str, device: torch.device) -> Checkpoint:
        """The checkpoint in ``folder`` (created if missing) if its hash is ``key``, else a
        fresh one (``folder=None``: kept in memory only)."""
        if folder is None:
            return cls(None, key)
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / CHECKPOINT_FILE
        old = _load(path, device)
        if old is not None and old.get("hash") == key and old.get("format") == FORMAT:
            return cls(path, key, old)
        if old is not None:
            log.warning("checkpoint %s belongs to another configuration; starting afresh", path)
        return cls(path, key)

    def record(self, step: str, result: Any, seconds: float,
               flow_state: dict[str, Tensor]) -> None:
        """Add a finished step and write the file (atomically)."""
        self.done.append(step)
        self.results[step] = result
        self.timings[step] = seconds
        self.flow_state = flow_state
        if self.path is not None:
            save_tensors(self.path, {"format": FORMAT, "hash": self.key, "done": self.done,
                                     "results": self.results, "timings": self.timings,
                                     "flow_state": self.flow_state})


def _load(path: Path, device: torch.device) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return load_tensors(path, types=RESULT_TYPES, map_location=device)
    except (ValueError, TypeError) as err:  # a damaged or foreign file: start afresh
        log.warning("ignoring unreadable checkpoint %s (%s)", path, err)
        return None

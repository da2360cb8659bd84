"""Runcards and the end-to-end fit.

* :mod:`smeft_pyhf.fit.runcard`: read and validate runcards (ours or SMEFiT's).
* :mod:`smeft_pyhf.fit.run`: :func:`run_fit`, runcard -> likelihood -> sampler -> results folder.

Example:
    >>> from smeft_pyhf.fit import default_runcard_path, load_runcard
    >>> load_runcard(default_runcard_path()).free_names
    ('ctG', 'ctZ', 'ctW', 'cpQM', 'c8qt')
"""

from __future__ import annotations

from pathlib import Path

from .._resources import examples_dir
from .run import run_fit
from .runcard import DatasetSpec, Runcard, load_runcard, parse_runcard

__all__ = [
    "DatasetSpec",
    "Runcard",
    "default_runcard_path",
    "load_runcard",
    "parse_runcard",
    "run_fit",
]


def default_runcard_path() -> Path:
    """Path of the embedded default runcard (``smeft_pyhf/examples/default_runcard.yaml``)."""
    return examples_dir() / "default_runcard.yaml"

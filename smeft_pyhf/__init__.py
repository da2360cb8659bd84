"""smeft-pyhf: published HistFactory likelihoods -> SFitter measurement cards -> SMEFT fits.

The data flow (see the README):

* :mod:`smeft_pyhf.formats`: the documents that cross the layers (card, mapping, runcard,
  results file), their schemas and the one reader
* :mod:`smeft_pyhf.ingest`: workspace -> pyhf fit, grouped impacts, NP scans -> measurement card
* :mod:`smeft_pyhf.likelihood`: SMEFiT tables + cards -> combined torch likelihood
* :mod:`smeft_pyhf.sampler`: the five-step normalizing-flow sampler
* :mod:`smeft_pyhf.results`: results file and plots
* :mod:`smeft_pyhf.fit`: runcard -> likelihood -> sampler -> results folder

The public API is importable from here: :func:`ingest_workspace` (the ingest function,
:func:`smeft_pyhf.ingest.pipeline.ingest`; ``smeft_pyhf.ingest`` is the subpackage),
:func:`build_likelihood`, :class:`SamplerConfig`, :func:`run_sampler`, :func:`load_runcard`,
:func:`run_fit`, :func:`read_results`, and the exceptions. The functions are imported on first
use, so ``import smeft_pyhf`` stays light (no torch, pyhf or jax).

Example:
    >>> import smeft_pyhf
    >>> smeft_pyhf.read_results.__module__
    'smeft_pyhf.results.results_file'
"""

from __future__ import annotations

import os as _os

# Torch's OpenMP threads spin while they wait for work. On a machine whose cores other
# processes also use (a login node, a batch slot, a laptop) they then take turns spinning
# instead of computing: a flow-training step of the top fit ran 10 times slower beside other
# CPU-bound processes. Passive waiting costs little on a quiet machine. It takes effect only
# if torch has not been imported yet; an explicit setting of the user's wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .exceptions import (
    ConfigError,
    DataError,
    InputError,
    MappingError,
    SmeftPyhfError,
    UnmappedParametersError,
    WorkspaceError,
)

__version__ = "0.1.0"

#: public name -> (module, attribute), imported on first access
_LAZY: dict[str, tuple[str, str]] = {
    "ingest_workspace": ("smeft_pyhf.ingest.pipeline", "ingest"),
    "build_likelihood": ("smeft_pyhf.likelihood.combined", "build_likelihood"),
    "SamplerConfig": ("smeft_pyhf.sampler.pipeline", "SamplerConfig"),
    "run_sampler": ("smeft_pyhf.sampler.pipeline", "run_sampler"),
    "load_runcard": ("smeft_pyhf.fit.runcard", "load_runcard"),
    "run_fit": ("smeft_pyhf.fit.run", "run_fit"),
    "read_results": ("smeft_pyhf.results.results_file", "read_results"),
}

__all__ = [
    "ConfigError",
    "DataError",
    "InputError",
    "MappingError",
    "SamplerConfig",
    "SmeftPyhfError",
    "UnmappedParametersError",
    "WorkspaceError",
    "__version__",
    "build_likelihood",
    "ingest_workspace",
    "load_runcard",
    "read_results",
    "run_fit",
    "run_sampler",
]


def __getattr__(name: str) -> object:
    """Import a public function or class of :data:`_LAZY` on first access."""
    if name in _LAZY:
        import importlib

        module, attribute = _LAZY[name]
        value = getattr(importlib.import_module(module), attribute)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'smeft_pyhf' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})

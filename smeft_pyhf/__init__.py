"""smeft-pyhf: published HistFactory likelihoods -> SFitter measurement cards -> SMEFT fits.

The data flow (see the README):

* :mod:`smeft_pyhf.ingest`: workspace -> pyhf fit, grouped impacts, NP scans -> measurement card
* :mod:`smeft_pyhf.likelihood`: SMEFiT tables + cards -> combined torch likelihood
* :mod:`smeft_pyhf.sampler`: the five-step normalizing-flow sampler
* :mod:`smeft_pyhf.results`: results file and plots
"""

from __future__ import annotations

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

__all__ = [
    "ConfigError",
    "DataError",
    "InputError",
    "MappingError",
    "SmeftPyhfError",
    "UnmappedParametersError",
    "WorkspaceError",
    "__version__",
]

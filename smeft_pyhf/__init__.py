"""smeft-pyhf: published HistFactory likelihoods -> SFitter measurement cards -> SMEFT fits.

The data flow (see the README):

* :mod:`smeft_pyhf.ingest`: workspace -> pyhf fit, grouped impacts, NP scans -> measurement card
* :mod:`smeft_pyhf.likelihood`: SMEFiT tables + cards -> combined torch likelihood
* :mod:`smeft_pyhf.sampler`: the five-step normalizing-flow sampler
* :mod:`smeft_pyhf.results`: results file and plots
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

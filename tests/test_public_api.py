"""The top-level public API: what ``smeft_pyhf.__all__`` promises, and that it imports."""

from __future__ import annotations

import subprocess
import sys

import smeft_pyhf

PUBLIC = [
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


def test_all_is_pinned():
    assert sorted(smeft_pyhf.__all__) == PUBLIC


def test_every_public_name_resolves_to_the_one_implementation():
    from smeft_pyhf.fit.run import run_fit
    from smeft_pyhf.fit.runcard import load_runcard
    from smeft_pyhf.ingest.pipeline import ingest
    from smeft_pyhf.likelihood.combined import build_likelihood
    from smeft_pyhf.results.results_file import read_results
    from smeft_pyhf.sampler.pipeline import SamplerConfig, run_sampler

    for name in PUBLIC:
        assert getattr(smeft_pyhf, name) is not None
    assert smeft_pyhf.ingest_workspace is ingest
    assert smeft_pyhf.build_likelihood is build_likelihood
    assert smeft_pyhf.run_sampler is run_sampler
    assert smeft_pyhf.SamplerConfig is SamplerConfig
    assert smeft_pyhf.load_runcard is load_runcard
    assert smeft_pyhf.run_fit is run_fit
    assert smeft_pyhf.read_results is read_results


def test_star_import_and_the_ingest_subpackage():
    namespace: dict = {}
    exec("from smeft_pyhf import *", namespace)
    assert set(PUBLIC) <= set(namespace)
    import smeft_pyhf.ingest

    assert smeft_pyhf.ingest.__name__ == "smeft_pyhf.ingest"  # the subpackage, not a function


def test_import_stays_light():
    # the package and its bottom layer (the documents) load without torch, pyhf or jax
    code = ("import sys, smeft_pyhf, smeft_pyhf.formats.reader, smeft_pyhf.formats.card, "
            "smeft_pyhf.formats.mapping, smeft_pyhf.formats.runcard; "
            "heavy = {'torch', 'pyhf', 'jax'} & set(sys.modules); print(sorted(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

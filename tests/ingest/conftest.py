"""The example workspace fitted once per test module, with its NPs grouped by category."""

from __future__ import annotations

import pytest

from smeft_pyhf._resources import shipped_dir
from smeft_pyhf.ingest.fitting import fit
from smeft_pyhf.ingest.mapping import assign, load_mapping
from smeft_pyhf.ingest.workspace import load_workspace

EXAMPLE = shipped_dir("workspaces") / "example_ttZ_like.json"
MAPPING = shipped_dir("mappings") / "example_ttZ_like.yaml"


@pytest.fixture(scope="module")
def example():
    """``(loaded workspace, best fit, {category: [NPs]}, assignment)`` of the example."""
    loaded = load_workspace(EXAMPLE)
    best = fit(loaded.model, loaded.data)
    names = [p for p in loaded.model.config.par_order if p != loaded.poi]
    assignment = assign(load_mapping(MAPPING), names)
    categories: dict[str, list[str]] = {}
    for parameter, category in assignment.category.items():
        categories.setdefault(category, []).append(parameter)
    return loaded, best, categories, assignment

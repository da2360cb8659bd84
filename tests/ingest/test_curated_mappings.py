"""The curated mappings cover every NP of the workspaces they were written for.

Models are built with pyhf directly and without schema validation (the workspaces are validated
in tests/ingest/test_inspect.py), so these tests stay fast.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pyhf
import pytest

from smeft_pyhf._io import sha256_file
from smeft_pyhf.formats.card import SYSTEMATIC_CATEGORIES, is_valid_category
from smeft_pyhf.ingest.mapping import (
    assign,
    find_mapping,
    load_mapping,
)

pytestmark = pytest.mark.shared_data

TTZ = "atlas_top_ttZ_13TeV"
FILES = {
    "atlas_ttZ_3L": [f"{TTZ}/3L_workspace.json"],
    "atlas_ttZ_4L": [f"{TTZ}/4L_workspace.json"],
    "atlas_ttZ_3L4L": [f"{TTZ}/3L_workspace.json", f"{TTZ}/4L_workspace.json"],
    "atlas_schannel": ["atlas_top_schannel_13TeV/workspace.json"],
    "atlas_ttbar_lj": ["atlas_top_ttbar_lj_13TeV/workspace.json"],
}
# model parameters (POI included), PROVENANCE.md
NPARS = {
    "atlas_ttZ_3L": 197,
    "atlas_ttZ_4L": 182,
    "atlas_ttZ_3L4L": 231,
    "atlas_schannel": 188,
    "atlas_ttbar_lj": 211,
}
# NPs per category, as curated (a change here is a physics decision: update on purpose)
EXPECTED = {
    "atlas_ttZ_3L": {
        "bTagging": 65, "LightTagging": 20, "Jets": 28, "ETmis": 2, "Leptons": 15, "Trigger": 3,
        "Pileup": 1, "Luminosity": 1, "partonShower": 1, "Tune": 1, "scale": 3, "PDF": 1,
        "Background:WZ": 30, "Background:ZZ": 4, "Background:tWZ": 5, "Background:tZq": 6,
        "Background:ttW": 1, "Background:ttH": 2, "Background:Other": 1, "Background:Fakes": 2,
        "Background:MCstat": 3,
    },
    "atlas_ttZ_4L": {
        "bTagging": 65, "LightTagging": 20, "Jets": 31, "ETmis": 3, "Leptons": 15, "Trigger": 3,
        "Pileup": 1, "Luminosity": 1, "partonShower": 1, "Tune": 1, "scale": 3, "PDF": 1,
        "Background:ZZ": 21, "Background:tWZ": 5, "Background:ttH": 2, "Background:Other": 1,
        "Background:Fakes": 1, "Background:MCstat": 5,
    },
    "atlas_ttZ_3L4L": {
        "bTagging": 65, "LightTagging": 20, "Jets": 34, "ETmis": 3, "Leptons": 17, "Trigger": 3,
        "Pileup": 1, "Luminosity": 1, "partonShower": 1, "Tune": 1, "scale": 3, "PDF": 1,
        "Background:WZ": 30, "Background:ZZ": 22, "Background:tWZ": 5, "Background:tZq": 6,
        "Background:ttW": 1, "Background:ttH": 2, "Background:Other": 2, "Background:Fakes": 3,
        "Background:MCstat": 8,
    },
    "atlas_schannel": {
        "bTagging": 50, "LightTagging": 8, "Jets": 34, "ETmis": 3, "Leptons": 4, "Pileup": 1,
        "Luminosity": 1, "partonShower": 2, "Tune": 1, "scale": 1, "PDF": 3,
        "Background:tq": 15, "Background:tW": 16, "Background:ttbar": 23, "Background:Wjets": 2,
        "Background:Other": 1, "Background:Fakes": 3, "Background:MCstat": 1,
    },
    "atlas_ttbar_lj": {
        "bTagging": 60, "LightTagging": 14, "Jets": 25, "ETmis": 3, "Leptons": 7, "Trigger": 3,
        "Pileup": 1, "Luminosity": 1, "partonShower": 8, "Tune": 4, "scale": 6, "PDF": 17,
        "modelling": 1, "Background:SingleTop": 7, "Background:Wjets": 3,
        "Background:Multijet": 11, "Background:ttX": 1, "Background:Other": 1,
        "Background:MCstat": 3,
    },
}  # fmt: skip


def _spec(shared: Path, files: list[str]) -> dict[str, Any]:
    """The model spec of one workspace, or of several combined by parameter name."""
    specs = [json.loads((shared / f).read_text()) for f in files]
    channels = [c for s in specs for c in s["channels"]]
    parameters: dict[str, dict[str, Any]] = {}
    for s in specs:
        for p in s["measurements"][0]["config"]["parameters"]:
            parameters.setdefault(p["name"], p)
    return {"channels": channels, "parameters": list(parameters.values())}


@pytest.fixture(scope="module")
def models(shared_data: Path) -> dict[str, pyhf.pdf.Model]:
    out = {}
    for name, files in FILES.items():
        spec = _spec(shared_data, files)
        out[name] = pyhf.Model(
            spec, poi_name=load_mapping(name).metadata["observable"]["poi"], validate=False
        )
    return out


@pytest.mark.parametrize("name", list(FILES))
def test_curated_mapping_covers_every_parameter(
    name: str, models: dict[str, pyhf.pdf.Model]
) -> None:
    model = models[name]
    assert model.config.npars == NPARS[name]
    mapping = load_mapping(name)
    parameters = [p for p in model.config.par_order if p != model.config.poi_name]
    result = assign(mapping, parameters)  # raises UnmappedParametersError otherwise
    assert set(result.category) | set(result.ignored) == set(parameters)
    assert dict(Counter(result.category.values())) == EXPECTED[name]
    for category, kind in result.kinds.items():
        assert is_valid_category(category, mapping.theory_categories)
        assert kind == ("theory" if category in mapping.theory_categories else "systematic")
    # no NP of the signal-strength POI's own normalisation slipped in
    assert model.config.poi_name not in result.category
    # every declared theory category is used, every rule matches something
    assert set(mapping.theory_categories) <= set(result.category.values())
    if name != "atlas_ttZ_3L" and name != "atlas_ttZ_4L":  # these share the 3L+4L rules
        unused = [
            r.pattern
            for r in mapping.rules
            if not any(re.fullmatch(r.pattern, p) for p in parameters)
        ]
        assert not unused, unused


@pytest.mark.parametrize("name", list(FILES))
def test_curated_mapping_metadata(name: str, shared_data: Path) -> None:
    mapping = load_mapping(name)
    meta = mapping.metadata
    assert meta["experiment"] == "ATLAS"
    assert meta["sqrt_s_TeV"] == 13 and meta["luminosity_fb"] == 139
    assert meta["observable"]["kind"] == "signal_strength"
    assert meta["n_parameters"] == NPARS[name]
    files = FILES[name]
    if len(files) == 1:
        assert meta["workspace_sha256"] == sha256_file(shared_data / files[0])
    else:
        assert meta["workspace_sha256"] is None
    prediction = meta["prediction"]
    if prediction is not None:
        theory = shared_data / "smefit_database" / "theory" / f"{prediction['smefit_dataset']}.json"
        assert theory.is_file(), theory
        for replaced in prediction["replaces"]:
            assert (shared_data / "smefit_database" / "commondata" / f"{replaced}.yaml").is_file()
    for category in {r.category for r in mapping.rules}:
        assert (
            category in SYSTEMATIC_CATEGORIES
            or category.startswith("Background:")
            or (category in mapping.theory_categories)
        )


def test_ttz_paper_breakdown_matches_groups() -> None:
    mapping = load_mapping("atlas_ttZ_3L4L")
    groups = {r.group for r in mapping.rules}
    table = mapping.paper_breakdown
    assert len(table) == 15  # 14 systematic rows of the paper's table + Stat
    assert set(table) - {"Stat"} <= groups
    assert table["ttZ parton shower"] == 3.1 and table["ttZ PDF"] == 0.2 and table["Stat"] == 5.2
    # the 3L and 4L mappings use the same rules as the combination
    for name in ("atlas_ttZ_3L", "atlas_ttZ_4L"):
        assert load_mapping(name).rules == mapping.rules


@pytest.mark.parametrize("name", list(FILES))
def test_find_mapping_picks_the_curated_one(
    name: str, models: dict[str, pyhf.pdf.Model], shared_data: Path
) -> None:
    model = models[name]
    parameters = [p for p in model.config.par_order if p != model.config.poi_name]
    files = FILES[name]
    sha = sha256_file(shared_data / files[0]) if len(files) == 1 else None
    found = find_mapping(sha, parameters)
    assert found is not None and found.analysis == name
    # without the hash, coverage and the parameter count still pick it
    found = find_mapping(None, parameters)
    assert found is not None and found.analysis == name

"""Workspace loading: formats, patches, combination, POI choice and the error messages."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from smeft_pyhf._io import sha256_file
from smeft_pyhf._resources import shipped_dir
from smeft_pyhf.exceptions import InputError, WorkspaceError
from smeft_pyhf.ingest.workspace import candidate_pois, load_workspace

EXAMPLE = shipped_dir("workspaces") / "example_ttZ_like.json"


def test_example_loads() -> None:
    loaded = load_workspace(EXAMPLE)
    model = loaded.model
    assert loaded.poi == "mu_ttZ" == model.config.poi_name
    assert model.config.npars == 27
    assert len(loaded.data) == model.config.nmaindata + model.config.nauxdata
    assert loaded.sha256 == sha256_file(EXAMPLE)
    assert loaded.patch_sha256 is None
    kinds = {m["type"] for c in loaded.workspace["channels"] for s in c["samples"] for m in s["modifiers"]}
    assert {"normsys", "histosys", "staterror", "lumi", "normfactor"} <= kinds


def test_gzip_and_poi_override(tmp_path: Path) -> None:
    gz = tmp_path / "ws.json.gz"
    gz.write_bytes(gzip.compress(EXAMPLE.read_bytes()))
    loaded = load_workspace(gz, poi="mu_WZ")
    assert loaded.poi == "mu_WZ"
    assert candidate_pois(loaded.workspace) == ["mu_WZ", "mu_ttZ"]


def test_malformed_json_names_line_and_column(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{\n  "channels": [\n    {"name": "a",, }\n  ]\n}\n')
    with pytest.raises(InputError, match=r"line 3, column"):
        load_workspace(bad)


def test_missing_file() -> None:
    with pytest.raises(InputError, match="does not exist"):
        load_workspace("/nonexistent/ws.json")


def test_schema_error_names_path_and_value(tmp_path: Path) -> None:
    spec = json.loads(EXAMPLE.read_text())
    spec["channels"][1]["samples"][2]["data"][1] = "lots"
    bad = tmp_path / "ws.json"
    bad.write_text(json.dumps(spec))
    with pytest.raises(WorkspaceError, match=r"channels\[1\]\.samples\[2\]\.data\[1\].*'lots'"):
        load_workspace(bad)


def test_unknown_poi_lists_candidates() -> None:
    with pytest.raises(WorkspaceError, match="candidate normfactors: mu_WZ, mu_ttZ"):
        load_workspace(EXAMPLE, poi="mu_nope")


def test_duplicated_modifier_after_patch(tmp_path: Path) -> None:
    patch = [
        {
            "op": "add",
            "path": "/channels/0/samples/0/modifiers/-",
            "value": {"name": "ttZ_muR", "type": "normsys", "data": {"hi": 1.1, "lo": 0.9}},
        }
    ]
    patch_file = tmp_path / "patch.json"
    patch_file.write_text(json.dumps(patch))
    with pytest.raises(WorkspaceError, match=r"sample 'ttZ': normsys modifier 'ttZ_muR'"):
        load_workspace(EXAMPLE, patch=patch_file)


def test_patch_file_given_as_workspace(tmp_path: Path) -> None:
    patch_file = tmp_path / "patch.json"
    patch_file.write_text("[]")
    with pytest.raises(WorkspaceError, match="is a patch, not a workspace"):
        load_workspace(patch_file)


@pytest.mark.shared_data
def test_patchset_entry(shared_data: Path) -> None:
    folder = shared_data / "pyhf_validation" / "tests" / "test_patchset"
    loaded = load_workspace(
        folder / "example_bkgonly.json",
        patch=folder / "example_patchset.json",
        patch_name="patch_channel1_signal_syst1",
    )
    assert loaded.poi == "SigXsecOverSM"
    assert loaded.model.config.npars == 7
    assert loaded.patch_sha256 is not None
    with pytest.raises(WorkspaceError, match="no patch named 'nope'"):
        load_workspace(folder / "example_bkgonly.json", patch=folder / "example_patchset.json",
                       patch_name="nope")


@pytest.mark.shared_data
def test_histfactory_xml(shared_data: Path) -> None:
    xml = shared_data / "pyhf_validation" / "validation" / "xmlimport_input" / "config" / "example.xml"
    loaded = load_workspace(xml)
    assert loaded.model.config.npars == 7
    assert loaded.poi == "SigXsecOverSM"


@pytest.mark.shared_data
def test_erjr_patch_duplicates_are_reported(shared_data: Path) -> None:
    """The eRJR signal patches list e.g. EG_Eff as a normsys and as a no-op histosys."""
    folder = shared_data / "atlas_susy_2019_02_3L_eRJR"
    loaded = load_workspace(folder / "BkgOnly.json", patch=folder / "patch.ERJR_200p0_100p0.json")
    assert loaded.poi == "mu_SIG"
    assert any("changes nothing" in w and "MGPy8EG_A14N23LO_C1N2_WZ_200p0_100p0" in w and "EG_Eff" in w
               for w in loaded.warnings)


@pytest.mark.shared_data
def test_background_only_poi(shared_data: Path) -> None:
    ws = shared_data / "smodels_database/13TeV/ATLAS/ATLAS-SUSY-2018-31-eff/BkgOnlyA.json"
    with pytest.raises(WorkspaceError, match=r"declares POI 'mu_SIG' but no sample uses it.*--poi"):
        load_workspace(ws)
    loaded = load_workspace(ws, require_poi=False)
    assert loaded.poi is None and loaded.warnings
    candidate = candidate_pois(loaded.workspace)[0]
    assert load_workspace(ws, poi=candidate).poi == candidate


@pytest.mark.shared_data
def test_combine_3l_4l(shared_data: Path) -> None:
    folder = shared_data / "atlas_top_ttZ_13TeV"
    loaded = load_workspace(folder / "3L_workspace.json", combine=[folder / "4L_workspace.json"])
    assert loaded.model.config.npars == 231  # PROVENANCE 7a: 197 + 182 - 148 shared
    assert loaded.workspace.measurement_names == ["ttZ_paper_v200320"]
    assert len(loaded.model.config.channels) == 8

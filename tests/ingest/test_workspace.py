"""Workspace loading: formats, patches, combination, POI choice and the error messages."""

from __future__ import annotations

import gzip
import json
import logging
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


# ------------------------------------------------------------------ numbers checked at load time
def _edited(tmp_path: Path, edit) -> Path:
    """A copy of the shipped example workspace, edited by ``edit(spec)``, as a real file."""
    spec = json.loads(EXAMPLE.read_text())
    edit(spec)
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(spec))  # NaN and Infinity written as JSON extensions
    return path


def _set(values: list, index: int, value: float) -> None:
    values[index] = value


def _modifier(spec: dict, channel: int, sample: int, kind: str) -> dict:
    return next(m for m in spec["channels"][channel]["samples"][sample]["modifiers"] if m["type"] == kind)


SHAPESYS = {"name": "WZ_shape_stat", "type": "shapesys", "data": [float("nan"), 3.0]}

BAD_VALUES = [
    # (edit, words the message must contain)
    (lambda s: _set(s["observations"][0]["data"], 1, float("nan")),
     ["channel 'SR_3l_2b3j'", "observations", "bin 2 of 2", "NaN"]),
    (lambda s: _set(s["observations"][2]["data"], 0, float("inf")),
     ["channel 'CR_WZ'", "observations", "bin 1 of 2", "inf"]),
    (lambda s: _set(s["observations"][1]["data"], 0, -3.0),
     ["channel 'SR_3l_1b4j'", "observations", "bin 1 of 2", "negative (-3)"]),
    (lambda s: _set(s["channels"][0]["samples"][1]["data"], 1, float("nan")),
     ["channel 'SR_3l_2b3j'", "sample 'WZ'", "bin 2 of 2", "NaN"]),
    (lambda s: s["channels"][2]["samples"][1]["modifiers"].append(dict(SHAPESYS)),
     ["channel 'CR_WZ'", "sample 'WZ'", "shapesys 'WZ_shape_stat'", "bin 1", "NaN"]),
    (lambda s: _set(_modifier(s, 1, 0, "staterror")["data"], 0, -0.5),
     ["channel 'SR_3l_1b4j'", "sample 'ttZ'", "staterror 'staterror_SR_3l_1b4j'", "bin 1",
      "negative"]),
    (lambda s: _set(_modifier(s, 0, 0, "histosys")["data"]["hi_data"], 1, float("-inf")),
     ["channel 'SR_3l_2b3j'", "sample 'ttZ'", "histosys 'JES_EffectiveNP_1' hi_data", "bin 2",
      "-inf"]),
    (lambda s: _modifier(s, 0, 2, "normsys")["data"].update(lo=-0.9),
     ["channel 'SR_3l_2b3j'", "sample 'ttW'", "normsys 'JER_EffectiveNP_1' lo", "negative"]),
    (lambda s: [_set(x["data"], 0, -100.0) for x in s["channels"][2]["samples"][:2]],
     ["channel 'CR_WZ'", "bin 1 of 2", "negative expected count"]),
]  # fmt: skip


@pytest.mark.parametrize("case", range(len(BAD_VALUES)))
def test_bad_numbers_are_rejected_at_load_naming_the_place(tmp_path: Path, case: int) -> None:
    edit, words = BAD_VALUES[case]
    path = _edited(tmp_path, edit)
    with pytest.raises(WorkspaceError) as info:
        load_workspace(path)
    message = str(info.value)
    assert message.startswith(str(path)), message
    for word in words:
        assert word in message, (word, message)


def test_negative_yield_of_one_sample_is_a_warning(tmp_path: Path) -> None:
    """Negative MC weights: legal while the bin's total stays positive (published files do it)."""
    path = _edited(tmp_path, lambda s: _set(s["channels"][2]["samples"][4]["data"], 1, -2.0))
    loaded = load_workspace(path)
    assert any("channel 'CR_WZ', sample 'Fakes', bin 2" in w for w in loaded.warnings)


@pytest.mark.parametrize("kind", ["extra bin", "missing channel"])
def test_observations_that_do_not_match_the_channels(
    tmp_path: Path, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    if kind == "extra bin":
        path = _edited(tmp_path, lambda s: s["observations"][0]["data"].append(5.0))
        words = ["channel 'SR_3l_2b3j' has 3 observed bin(s) but its samples have 2"]
    else:
        path = _edited(tmp_path, lambda s: s["observations"].pop(2))
        words = ["channel 'CR_WZ' has no observations"]
    caplog.set_level(logging.DEBUG)
    with pytest.raises(WorkspaceError) as info:
        load_workspace(path)
    for word in words:
        assert word in str(info.value)
    # no third-party log lines (pyhf's ERROR with a KeyError traceback) before the clean error
    assert not [r for r in caplog.records if r.name.startswith("pyhf") and r.levelno >= logging.WARNING]


def test_combining_a_file_with_itself_is_refused(tmp_path: Path) -> None:
    with pytest.raises(WorkspaceError, match="is the same file as"):
        load_workspace(EXAMPLE, combine=[EXAMPLE])
    copy = tmp_path / "copy.json"
    copy.write_bytes(EXAMPLE.read_bytes())
    with pytest.raises(WorkspaceError, match="has the same content as") as info:
        load_workspace(EXAMPLE, combine=[copy])
    assert str(copy) in str(info.value)


@pytest.mark.shared_data
def test_xml_rootdir_from_another_working_folder(
    shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = shared_data / "pyhf_validation" / "validation" / "xmlimport_input"
    xml = base / "config" / "examples" / "example_ShapeSys.xml"
    monkeypatch.chdir(tmp_path)
    found = load_workspace(xml)  # the parent two levels above the XML holds its <Input> files
    given = load_workspace(xml, rootdir=base)
    assert found.model.config.npars == given.model.config.npars
    assert found.data == given.data
    with pytest.raises(InputError, match="do not exist under --rootdir"):
        load_workspace(xml, rootdir=tmp_path)
    with pytest.raises(InputError, match="applies to HistFactory XML inputs only"):
        load_workspace(EXAMPLE, rootdir=base)


@pytest.mark.shared_data
def test_xml_with_2d_histograms_is_a_clean_error(
    shared_data: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """pyhf.readxml fails on TH2 inputs with a TypeError deep inside; name the histograms."""
    base = shared_data / "pyhf_validation" / "validation" / "xmlimport_input"
    xml = base / "config" / "examples" / "example_ShapeSys2D.xml"
    caplog.set_level(logging.DEBUG)
    with pytest.raises(InputError) as info:
        load_workspace(xml)
    message = str(info.value)
    assert message.startswith(str(xml))
    assert "one-dimensional histograms only" in message
    assert "ShapeSys2D.root:background1 (TH2F)" in message
    assert not [r for r in caplog.records if r.name.startswith("pyhf") and r.levelno >= logging.WARNING]

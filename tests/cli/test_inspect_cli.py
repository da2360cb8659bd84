"""`smeft-pyhf inspect`: table and JSON output, clear errors with exit code 2."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from smeft_pyhf.cli import cli
from smeft_pyhf.ingest.mapping import assign, load_mapping


def tiny_workspace() -> dict[str, Any]:
    """A two-bin workspace written for these tests (signal, background, two NPs)."""
    return {
        "version": "1.0.0",
        "channels": [
            {
                "name": "SR",
                "samples": [
                    {
                        "name": "signal",
                        "data": [5.0, 10.0],
                        "modifiers": [{"name": "mu", "type": "normfactor", "data": None}],
                    },
                    {
                        "name": "background",
                        "data": [50.0, 60.0],
                        "modifiers": [
                            {"name": "JES_1", "type": "normsys", "data": {"hi": 1.05, "lo": 0.95}},
                            {"name": "bkg_xsec", "type": "normsys", "data": {"hi": 1.1, "lo": 0.9}},
                        ],
                    },
                ],
            }
        ],
        "observations": [{"name": "SR", "data": [53.0, 74.0]}],
        "measurements": [{"name": "meas", "config": {"poi": "mu", "parameters": []}}],
    }


def run(*args: str) -> Any:
    return CliRunner().invoke(cli, ["inspect", *args], catch_exceptions=False)


def test_inspect_tiny_table_and_json(tmp_path: Path) -> None:
    path = tmp_path / "ws.json"
    path.write_text(json.dumps(tiny_workspace()))
    result = run(str(path))
    assert result.exit_code == 0, result.output
    assert "Channels: 1  bins: 2  samples: 2" in result.stdout
    assert "POI: mu" in result.stdout
    result = run(str(path), "--json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["n_parameters"] == 3
    assert data["poi"] == "mu"
    assert data["channels"] == [
        {"name": "SR", "n_bins": 2, "observed": [53.0, 74.0], "samples": ["signal", "background"]}
    ]
    assert data["mapping"] == "generic_atlas"  # both NPs follow ATLAS naming
    categories = {c["category"]: c["parameters"] for c in data["categories"]}
    assert categories == {"Jets": ["JES_1"], "Background:bkg": ["bkg_xsec"]}


def test_inspect_with_explicit_mapping_and_no_auto(tmp_path: Path) -> None:
    path = tmp_path / "ws.json"
    path.write_text(json.dumps(tiny_workspace()))
    mapping = tmp_path / "m.yaml"
    mapping.write_text(
        "mapping_version: 1\nanalysis: tiny\nrules:\n  - {pattern: 'JES_.*', category: Jets}\n"
    )
    result = run(str(path), "--mapping", str(mapping))
    assert result.exit_code == 0, result.output
    assert "Mapping: tiny (given" in result.stdout
    assert "SUGGESTED categories for 1 unmapped NP(s)" in result.stdout
    assert "bkg_xsec" in result.stdout
    result = run(str(path), "--no-auto-mapping", "--all")
    assert "Mapping: none found" in result.stdout
    assert "SUGGESTED categories for 2 unmapped NP(s)" in result.stdout


@pytest.mark.parametrize(
    ("args", "kind", "fragment"),
    [
        (["/nonexistent/ws.json"], "InputError", "does not exist"),
        (["{ws}", "--mapping", "no_such_mapping"], "InputError", "mapping file not found"),
        (["{ws}", "--poi", "nope"], "WorkspaceError", "candidate normfactors: mu"),
        (["{dup}"], "WorkspaceError", "twice"),
        (["{bad}"], "InputError", "not valid JSON"),
    ],
)
def test_inspect_errors_exit_2(tmp_path: Path, args: list[str], kind: str, fragment: str) -> None:
    spec = tiny_workspace()
    (tmp_path / "ws.json").write_text(json.dumps(spec))
    modifiers = spec["channels"][0]["samples"][1]["modifiers"]
    modifiers.append(dict(modifiers[0]))
    (tmp_path / "dup.json").write_text(json.dumps(spec))
    (tmp_path / "bad.json").write_text('{"channels": [}')
    names = {"ws": tmp_path / "ws.json", "dup": tmp_path / "dup.json", "bad": tmp_path / "bad.json"}
    result = run(*[a.format(**names) for a in args])
    assert result.exit_code == 2
    assert f"Error ({kind})" in result.output
    assert fragment in result.output.replace("\n", " ")
    assert "Traceback" not in result.output


@pytest.mark.shared_data
def test_inspect_schannel_table(shared_data: Path) -> None:
    result = run(str(shared_data / "atlas_top_schannel_13TeV/workspace.json"))
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "Channels: 1  bins: 18  samples: 7" in out
    assert "normsys       139 / 426" in out
    assert "Parameters: 188" in out
    assert "Mapping: atlas_schannel (curated" in out
    assert "fixed: lumi=1.0" in out


@pytest.mark.shared_data
def test_inspect_ttz_combination_json(shared_data: Path) -> None:
    folder = shared_data / "atlas_top_ttZ_13TeV"
    result = run(
        str(folder / "3L_workspace.json"), "--combine", str(folder / "4L_workspace.json"), "--json"
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["n_parameters"] == 231  # PROVENANCE 7a
    assert len(data["channels"]) == 8
    assert data["poi"] == "mu_XS_ttZ"
    assert data["mapping"] == "atlas_ttZ_3L4L"
    assert data["unmapped"] == {}
    assert data["ignored"] == ["lumi"]
    counts = {c["category"]: len(c["parameters"]) for c in data["categories"]}
    assert counts["bTagging"] == 65 and counts["Background:ZZ"] == 22


@pytest.mark.shared_data
def test_inspect_non_workspace_exit_2(shared_data: Path) -> None:
    path = shared_data / "pyhf_validation/validation/data/2bin_2channel_example1.json"
    result = run(str(path))
    assert result.exit_code == 2
    assert "Error (WorkspaceError)" in result.output


def test_inspect_suggest_writes_a_loadable_draft(tmp_path: Path) -> None:
    spec = tiny_workspace()
    spec["channels"][0]["samples"][1]["modifiers"].append(
        {"name": "weird_np", "type": "normsys", "data": {"hi": 1.02, "lo": 0.98}}
    )
    spec["channels"][0]["samples"][0]["modifiers"].append(
        {"name": "odd_signal_np", "type": "normsys", "data": {"hi": 1.02, "lo": 0.98}}
    )
    path = tmp_path / "ws.json"
    path.write_text(json.dumps(spec))
    result = run(str(path), "--suggest")
    assert result.exit_code == 0, result.output
    draft = tmp_path / "draft.yaml"
    draft.write_text(result.stdout)
    # names no heuristic places get a guess from their samples, marked as such; no '?' left
    assert "category: '?'" not in result.stdout
    assert "{pattern: 'weird_np', category: 'Background:background'}  # GUESS" in result.stdout
    assert "{pattern: 'odd_signal_np', category: 'modelling'}  # GUESS" in result.stdout
    assert "# Background:bkg (from mapping generic_atlas)" in result.stdout
    # the draft loads as it is, in the mapping loader and in inspect/ingest
    mapping = load_mapping(draft)
    assert mapping.analysis == "ws" and mapping.theory_categories == ("modelling",)
    assigned = assign(mapping, ["JES_1", "bkg_xsec", "weird_np", "odd_signal_np"])
    assert assigned.category == {
        "JES_1": "Jets",
        "bkg_xsec": "Background:bkg",
        "weird_np": "Background:background",
        "odd_signal_np": "modelling",
    }
    used = run(str(path), "--mapping", str(draft))
    assert used.exit_code == 0, used.output


@pytest.mark.shared_data
def test_inspect_xml_rootdir(shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = shared_data / "pyhf_validation" / "validation" / "xmlimport_input"
    xml = base / "config" / "examples" / "example_ShapeSys.xml"
    monkeypatch.chdir(tmp_path)
    result = run(str(xml), "--rootdir", str(base), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["n_parameters"] == 7  # mu, lumi, syst1, 2 x 2 shapesys bins
    wrong = CliRunner().invoke(cli, ["inspect", str(xml), "--rootdir", str(tmp_path)])
    assert wrong.exit_code == 2
    assert "example_ShapeSys_channel.xml do not exist under --rootdir" in wrong.output.replace("\n", " ")

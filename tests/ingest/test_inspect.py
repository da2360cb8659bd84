"""`inspect_workspace` on every workspace in ../shared/data, against the PROVENANCE.md numbers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from smeft_pyhf._resources import shipped_dir
from smeft_pyhf.exceptions import InputError, MappingError, WorkspaceError
from smeft_pyhf.ingest.inspect import (
    InspectResult,
    format_inspect,
    inspect_loaded,
    inspect_to_dict,
    inspect_workspace,
)
from smeft_pyhf.ingest.workspace import LoadedWorkspace, load_workspace

ERJR = "atlas_susy_2019_02_3L_eRJR"
SMODELS = "smodels_database/13TeV/ATLAS"
VAL = "pyhf_validation"

# (path, options, expected): ch = channels, bins, samp = unique samples, npars, poi,
# mods = unique modifier names per type (instances where PROVENANCE gives them), mapping found
CASES: list[tuple[str, dict[str, str], dict[str, Any]]] = [
    ("atlas_top_schannel_13TeV/workspace.json", {}, {
        "ch": 1, "bins": 18, "samp": 7, "npars": 188, "poi": "mu", "mapping": "atlas_schannel",
        "mods": {"normsys": (139, 426), "histosys": (79, 98), "staterror": (1, None),
              "normfactor": (3, None), "lumi": (1, None)},
        "fixed": {"lumi"}, "free": {"mu_ttbar_norm", "mu_wjet_norm"}}),
    ("atlas_top_ttZ_13TeV/3L_workspace.json", {}, {
        "ch": 3, "bins": 3, "samp": 15, "npars": 197, "poi": "mu_XS_ttZ", "mapping": "atlas_ttZ_3L",
        "mods": {"normsys": (190, 3365), "staterror": (3, None), "normfactor": (3, None), "lumi": (1, None)},
        "fixed": {"lumi"}, "free": {"mu_WZ", "mu_ZZ"}, "observed": [343, 272, 1569]}),
    ("atlas_top_ttZ_13TeV/4L_workspace.json", {}, {
        "ch": 5, "bins": 5, "samp": 8, "npars": 182, "poi": "mu_XS_ttZ", "mapping": "atlas_ttZ_4L",
        "mods": {"normsys": (174, 3313), "staterror": (5, None), "normfactor": (2, None), "lumi": (1, None)},
        "fixed": {"lumi"}, "free": {"mu_ZZ"}, "observed": [19, 33, 33, 32, 539]}),
    ("atlas_top_ttbar_lj_13TeV/workspace.json", {}, {
        "ch": 3, "bins": 37, "samp": 6, "npars": 211, "poi": "ttbarXsec", "mapping": "atlas_ttbar_lj",
        "mods": {"normsys": (164, 1334), "histosys": (108, 368), "staterror": (3, 15), "normfactor": (1, None)},
        "fixed": set(), "free": set()}),
    (f"{ERJR}/BkgOnly.json", {}, {
        "ch": 4, "bins": 4, "samp": 6, "npars": 62, "poi": None, "mapping": "generic_atlas",
        "mods": {"normsys": (36, 216), "histosys": (26, None), "shapesys": (20, None),
              "normfactor": (2, None), "lumi": (1, None)}}),
    (f"{ERJR}/BkgOnly.json", {"patch": f"{ERJR}/patch.ERJR_150p0_50p0.json"}, {
        "ch": 4, "bins": 4, "samp": 7, "npars": 70, "poi": "mu_SIG", "mapping": "generic_atlas"}),
    (f"{ERJR}/BkgOnly.json", {"patch": f"{ERJR}/patch.ERJR_200p0_100p0.json"}, {
        "ch": 4, "bins": 4, "samp": 7, "npars": 70, "poi": "mu_SIG", "mapping": "generic_atlas"}),
    (f"{ERJR}/BkgOnly.json", {"patch": f"{ERJR}/patch.ERJR_350p0_150p0.json"}, {
        "ch": 4, "bins": 4, "samp": 7, "npars": 70, "poi": "mu_SIG", "mapping": "generic_atlas"}),
    (f"{ERJR}/BkgOnly.json", {"patch": f"{ERJR}/patch.ERJR_500p0_200p0.json"}, {
        "ch": 4, "bins": 4, "samp": 7, "npars": 69, "poi": "mu_SIG", "mapping": "generic_atlas"}),
    (f"{SMODELS}/ATLAS-SUSY-2018-31-eff/BkgOnlyA.json", {}, {
        "ch": 3, "bins": 9, "samp": 8, "npars": 65, "poi": None, "mapping": "generic_atlas",
        "mods": {"histosys": (52, None), "normsys": (39, None), "staterror": (3, None),
              "lumi": (1, None), "normfactor": (1, None)}}),
    (f"{SMODELS}/ATLAS-SUSY-2018-04-eff/SRcombined.json", {}, {
        "ch": 5, "bins": 5, "samp": 7, "npars": 118, "poi": None, "mapping": "generic_atlas",
        "mods": {"histosys": (73, None), "normsys": (95, None), "staterror": (5, None),
              "normfactor": (2, None), "lumi": (1, None)}}),
    (f"{SMODELS}/ATLAS-SUSY-2019-09-eff/bkg_onshell.json", {}, {
        "ch": 23, "bins": 23, "samp": 12, "npars": 114, "poi": None, "mapping": "generic_atlas",
        "mods": {"histosys": (48, None), "normsys": (47, None), "staterror": (23, None),
              "normfactor": (3, None), "lumi": (1, None)}}),
    (f"{SMODELS}/ATLAS-SUSY-2019-09-eff/bkg_onshell_simplified.json", {}, {
        "ch": 23, "bins": 23, "samp": 1, "npars": 1, "poi": None, "mapping": None, "mods": {"histosys": (1, 23)}}),
    (f"{SMODELS}/ATLAS-SUSY-2018-16-eff/Sleptons_bkgonly.json", {}, {
        "ch": 38, "bins": 38, "samp": 6, "npars": 190, "poi": None, "mapping": "generic_atlas",
        "mods": {"normsys": (94, None), "histosys": (66, None), "shapesys": (34, None),
              "staterror": (38, None), "normfactor": (6, None), "lumi": (1, None)}}),
    (f"{SMODELS}/ATLAS-SUSY-2018-05-ewk-eff/ewk_signal_bkgonly.json", {}, {
        "ch": 17, "bins": 17, "samp": 9, "npars": 128, "poi": None, "mapping": "generic_atlas",
        "mods": {"histosys": (102, None), "staterror": (17, None), "normsys": (4, None),
              "normfactor": (4, None), "lumi": (1, None)}}),
    (f"{VAL}/docs/examples/json/2-bin_1-channel.json", {}, {
        "ch": 1, "bins": 2, "samp": 2, "npars": 3, "poi": "mu", "mapping": None}),
    (f"{VAL}/tests/test_patchset/example_bkgonly.json", {}, {
        "ch": 1, "bins": 2, "samp": 3, "npars": 7, "poi": "SigXsecOverSM", "mapping": None}),
    (f"{VAL}/tests/test_patchset/example_bkgonly.json",
     {"patch": f"{VAL}/tests/test_patchset/example_patchset.json"}, {
        "ch": 1, "bins": 2, "samp": 3, "npars": 7, "poi": "SigXsecOverSM", "mapping": None}),
    (f"{VAL}/validation/xmlimport_input_bkg.json", {}, {
        "ch": 1, "bins": 2, "samp": 3, "npars": 7, "poi": "SigXsecOverSM", "mapping": None}),
    (f"{VAL}/validation/xmlimport_input/config/example.xml", {}, {
        "ch": 1, "bins": 2, "samp": 3, "npars": 7, "poi": "SigXsecOverSM", "mapping": None}),
    (f"{VAL}/validation/multichan_coupledhistosys_histfactory/config/example.xml", {}, {
        "ch": 2, "bins": 4, "samp": 3, "npars": 3, "poi": "SigXsecOverSM"}),
    (f"{VAL}/validation/multichannel_histfactory/config/example.xml", {}, {
        "ch": 2, "bins": 4, "samp": 2, "npars": 6, "poi": "SigXsecOverSM", "mapping": None}),
]  # fmt: skip

# files in shared/data that are not workspaces: a clear WorkspaceError, never a traceback
NOT_WORKSPACES = [
    f"{VAL}/validation/data/1bin_example1.json",
    f"{VAL}/validation/data/2bin_2channel_coupledshapefactor.json",
    f"{VAL}/validation/data/2bin_2channel_example1.json",
    f"{VAL}/validation/multichannel_histfactory/multichannel_data.json",
    f"{VAL}/tests/test_patchset/example_patchset.json",
]


def _label(case: tuple[str, dict[str, str], dict[str, Any]]) -> str:
    path, options, _ = case
    return (
        Path(path).parent.name
        + "/"
        + Path(path).name
        + ("+" + Path(options["patch"]).name if options else "")
    )


@pytest.mark.shared_data
@pytest.mark.parametrize("case", CASES, ids=[_label(c) for c in CASES])
def test_inspect_every_shared_workspace(
    case: tuple[str, dict[str, str], dict[str, Any]], shared_data: Path
) -> None:
    path, options, expected = case
    options = {k: str(shared_data / v) for k, v in options.items()}
    result = inspect_workspace(shared_data / path, **options)
    assert isinstance(result, InspectResult)
    assert len(result.channels) == expected["ch"]
    assert sum(c.n_bins for c in result.channels) == expected["bins"]
    assert all(len(c.observed) == c.n_bins for c in result.channels)
    assert len(result.samples) == expected["samp"]
    assert result.n_parameters == expected["npars"]
    assert result.poi == expected["poi"]
    if "mapping" in expected:
        assert result.mapping == expected["mapping"]
    modifiers = {m.type: m for m in result.modifiers}
    for kind, (n_names, n_instances) in expected.get("mods", {}).items():
        assert modifiers[kind].n_names == n_names, kind
        if n_instances is not None:
            assert modifiers[kind].n_instances == n_instances, kind
    if "fixed" in expected:
        assert set(result.fixed) == expected["fixed"]
        assert set(result.free_normfactors) == expected["free"]
    if "observed" in expected:
        assert [sum(c.observed) for c in result.channels] == expected["observed"]
    # every parameter but the POI is accounted for exactly once: mapped, ignored or suggested
    listed = [p for c in result.categories for p in c.parameters]
    assert sorted(listed + list(result.ignored)) == sorted(
        p for p in result.parameters if p != result.poi
    )
    if expected.get("mapping") in {
        "atlas_schannel",
        "atlas_ttZ_3L",
        "atlas_ttZ_4L",
        "atlas_ttbar_lj",
    }:
        assert result.unmapped == {}
        assert result.mapping_mode == "curated"
    if result.mapping is None:
        assert all(c.kind == "suggested" for c in result.categories)
    text = format_inspect(result)
    assert "Channels:" in text and "Parameters:" in text
    json.dumps(inspect_to_dict(result))  # serialisable


@pytest.mark.shared_data
@pytest.mark.parametrize("path", NOT_WORKSPACES, ids=[Path(p).name for p in NOT_WORKSPACES])
def test_non_workspace_files_give_a_clear_error(path: str, shared_data: Path) -> None:
    with pytest.raises(WorkspaceError) as info:
        inspect_workspace(shared_data / path)
    assert str(shared_data / path) in str(info.value)


@pytest.fixture(scope="module")
def ttz3l(shared_data: Path) -> LoadedWorkspace:
    return load_workspace(shared_data / "atlas_top_ttZ_13TeV/3L_workspace.json")


@pytest.mark.shared_data
def test_inspect_with_other_mappings(ttz3l: LoadedWorkspace) -> None:
    # a given mapping that does not fit: its categories plus suggestions for the rest
    result = inspect_loaded(ttz3l, mapping="atlas_schannel")
    assert result.mapping == "atlas_schannel" and result.mapping_mode == "given"
    suggested = {
        p: c.category for c in result.categories if c.kind == "suggested" for p in c.parameters
    }
    assert suggested == result.unmapped
    assert suggested["BTag_B_NP0"] == "bTagging"
    assert suggested["ttZ_muR"] == "scale"
    assert "not covered by mapping 'atlas_schannel'" in " ".join(result.warnings)
    assert "SUGGESTED" in format_inspect(result)
    # no mapping at all: every NP is a suggestion
    bare = inspect_loaded(ttz3l, auto_mapping=False)
    assert bare.mapping is None and bare.mapping_mode == "none"
    assert len(bare.unmapped) == 196
    # the generic rules map every 3L NP too
    generic = inspect_loaded(ttz3l, mapping="generic_atlas")
    assert generic.unmapped == {} and generic.ignored == ("lumi",)
    with pytest.raises(InputError):
        inspect_loaded(ttz3l, mapping="no_such_mapping")


def test_inspect_shipped_example_and_duplicated_modifier(tmp_path: Path) -> None:
    example = shipped_dir("workspaces") / "example_ttZ_like.json"
    if not example.is_file():
        pytest.skip("shipped example workspace not there yet")
    result = inspect_workspace(example)
    assert result.n_parameters >= len(result.parameters)
    spec = json.loads(example.read_text())
    sample = spec["channels"][0]["samples"][0]
    sample["modifiers"].append(dict(sample["modifiers"][-1]))
    bad = tmp_path / "dup.json"
    bad.write_text(json.dumps(spec))
    with pytest.raises(WorkspaceError, match="twice"):
        inspect_workspace(bad)


def test_inspect_bad_mapping_file(tmp_path: Path) -> None:
    example = shipped_dir("workspaces") / "example_ttZ_like.json"
    if not example.is_file():
        pytest.skip("shipped example workspace not there yet")
    bad = tmp_path / "m.yaml"
    bad.write_text("mapping_version: 1\nanalysis: x\nrules: [{pattern: 'a(', category: Jets}]\n")
    with pytest.raises(MappingError, match=r"rules\[0\]\.pattern"):
        inspect_workspace(example, mapping=bad)

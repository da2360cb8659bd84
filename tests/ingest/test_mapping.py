"""Mapping YAML: loading, validation errors, rule order, ignore list, unmapped-NP errors."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from smeft_pyhf.exceptions import InputError, MappingError, UnmappedParametersError
from smeft_pyhf.formats.card import SYSTEMATIC_CATEGORIES, is_valid_category
from smeft_pyhf.ingest.mapping import (
    Assignment,
    CategoryMapping,
    Rule,
    assign,
    assign_partial,
    find_mapping,
    load_mapping,
    parse_mapping,
    shipped_mappings,
    suggest_category,
)


def write(tmp_path: Path, text: str, name: str = "m.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


GOOD = """\
mapping_version: 1
analysis: toy
theory_categories: [scale]
ignore: [lumi, 'gamma_.*']
rules:
  - {pattern: 'JES_Flavor_.*', category: Jets, group: Jets flavour}
  - {pattern: 'JES_.*', category: 'Background:X', group: other JES}
  - {pattern: 'ttZ_mu(R|F)', category: scale}
  - {pattern: '(?P<proc>[A-Za-z]+)_xsec', category: 'Background:{proc}'}
"""


def test_sfitter_categories_are_the_fourteen() -> None:
    assert len(SYSTEMATIC_CATEGORIES) == 14
    assert set(SYSTEMATIC_CATEGORIES) == {
        "Beam", "Background", "ETmis", "Jets", "Leptons", "LightTagging", "Luminosity",
        "Pileup", "Trigger", "Tune", "bTagging", "partonShower", "tTagging", "tauTagging",
    }  # fmt: skip
    assert is_valid_category("Background:WZ")
    assert not is_valid_category("Background:")
    assert not is_valid_category("scale")
    assert is_valid_category("scale", ["scale"])


def test_load_good_mapping(tmp_path: Path) -> None:
    mapping = load_mapping(write(tmp_path, GOOD))
    assert isinstance(mapping, CategoryMapping)
    assert mapping.analysis == "toy"
    assert mapping.rules[0] == Rule("JES_Flavor_.*", "Jets", "Jets flavour")
    assert mapping.theory_categories == ("scale",)
    assert len(mapping.sha256) == 64
    assert mapping.metadata == {}
    assert mapping.paper_breakdown == {}


def test_first_match_wins_and_fullmatch(tmp_path: Path) -> None:
    mapping = load_mapping(write(tmp_path, GOOD))
    result = assign(mapping, ["JES_Flavor_Comp", "JES_PU_Rho", "ttZ_muR", "ZZ_xsec"])
    assert isinstance(result, Assignment)
    assert result.category == {
        "JES_Flavor_Comp": "Jets",
        "JES_PU_Rho": "Background:X",
        "ttZ_muR": "scale",
        "ZZ_xsec": "Background:ZZ",
    }
    assert result.group["JES_Flavor_Comp"] == "Jets flavour"
    assert result.group["ttZ_muR"] == "scale"  # no group: the category
    assert result.kinds == {
        "Jets": "systematic",
        "Background:X": "systematic",
        "scale": "theory",
        "Background:ZZ": "systematic",
    }
    # fullmatch: a prefix or suffix alone does not match
    with pytest.raises(UnmappedParametersError):
        assign(mapping, ["ttZ_muR_muF"])


def test_ignore_exact_and_regex(tmp_path: Path) -> None:
    mapping = load_mapping(write(tmp_path, GOOD))
    result = assign(mapping, ["lumi", "gamma_stat_1", "JES_1"])
    assert result.ignored == ("lumi", "gamma_stat_1")
    assert result.category == {"JES_1": "Background:X"}


def test_unmapped_lists_every_parameter_with_suggestion(tmp_path: Path) -> None:
    mapping = load_mapping(write(tmp_path, GOOD))
    with pytest.raises(UnmappedParametersError) as info:
        assign(mapping, ["JES_1", "BTag_B_NP3", "MET_SoftTrk_Scale", "PRW", "weird"])
    err = info.value
    assert err.unmapped == ("BTag_B_NP3", "MET_SoftTrk_Scale", "PRW", "weird")
    assert err.suggestions == {
        "BTag_B_NP3": "bTagging",
        "MET_SoftTrk_Scale": "ETmis",
        "PRW": "Pileup",
        "weird": "?",
    }
    text = str(err)
    assert "4 parameter(s)" in text
    assert "BTag_B_NP3 (suggested: bTagging)" in text
    assert "weird (suggested: ?)" in text
    assert isinstance(err, MappingError)
    partial, unmapped = assign_partial(mapping, ["JES_1", "weird"])
    assert partial.category == {"JES_1": "Background:X"} and unmapped == ("weird",)


def test_bad_yaml_reports_line(tmp_path: Path) -> None:
    path = write(tmp_path, "mapping_version: 1\nrules:\n  - {pattern: 'a', category: Jets\n")
    with pytest.raises(InputError) as info:
        load_mapping(path)
    assert "not valid YAML" in str(info.value)
    assert info.value.where == str(path)
    assert "at line 4, column 1" in str(info.value)  # the unclosed flow mapping's end


def test_missing_file_suggests_shipped_name() -> None:
    with pytest.raises(InputError) as info:
        load_mapping("atlas_ttz_3L")
    assert "did you mean 'atlas_ttZ_3L'" in str(info.value)
    with pytest.raises(InputError):
        load_mapping("/nonexistent/dir/m.yaml")


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("analysis: a\nrules: []\n", ["(top level)", "'mapping_version' is a required property"]),
        (
            "mapping_version: 2\nanalysis: a\nrules: []\n",
            ["mapping_version", "only supported value is 1"],
        ),
        ("mapping_version: 1\nanalysis: a\nrule: []\n", ["did you mean 'rules'"]),
        (
            "mapping_version: 1\nanalysis: a\nrules: [{pattern: x, categroy: Jets}]\n",
            ["rules[0]"],
        ),
        (
            "mapping_version: 1\nanalysis: a\nrules: []\nmetadata: {observable: {poi: mu, kind: strength}}\n",
            ["metadata.observable.kind", "signal_strength"],
        ),
        (
            "mapping_version: 1\nanalysis: a\nrules: {pattern: x}\n",
            [": rules: expected a list, got {'pattern': 'x'}"],
        ),
        (
            "mapping_version: 1\nanalysis: a\nrules: []\npaper_breakdown: {Jets: high}\n",
            ["paper_breakdown.Jets"],
        ),
        (
            "mapping_version: 1\nanalysis: a\nrules: []\nstat_convention: fixed\n",
            ["stat_convention", "all-fixed"],
        ),
    ],
)
def test_schema_errors_name_field_and_choices(
    tmp_path: Path, text: str, fragments: list[str]
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(MappingError) as info:
        load_mapping(path)
    message = str(info.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, message


def test_bad_regex_names_rule_and_error(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        mapping_version: 1
        analysis: a
        rules:
          - {pattern: 'ok_.*', category: Jets}
          - {pattern: 'JES_(.*', category: Jets}
        """,
    )
    with pytest.raises(MappingError) as info:
        load_mapping(path)
    message = str(info.value)
    assert "rules[1].pattern" in message
    assert "missing ), unterminated subpattern" in message


def test_bad_ignore_regex(tmp_path: Path) -> None:
    path = write(tmp_path, "mapping_version: 1\nanalysis: a\nrules: []\nignore: ['[x']\n")
    with pytest.raises(MappingError, match=r"ignore\[0\]"):
        load_mapping(path)


@pytest.mark.parametrize(
    ("category", "suggestion"),
    [("jets", "Jets"), ("Btagging", "bTagging"), ("Lepton", "Leptons"), ("Scale", "scale")],
)
def test_unknown_category_with_suggestion(tmp_path: Path, category: str, suggestion: str) -> None:
    path = write(
        tmp_path,
        f"""\
        mapping_version: 1
        analysis: a
        theory_categories: [scale]
        rules:
          - {{pattern: 'x', category: Jets}}
          - {{pattern: 'y', category: '{category}'}}
        """,
    )
    with pytest.raises(MappingError) as info:
        load_mapping(path)
    message = str(info.value)
    assert f"unknown category '{category}'" in message
    assert "rules[1].category" in message
    assert f"did you mean '{suggestion}'" in message
    assert "partonShower" in message and "Background:<process>" in message  # valid choices


def test_theory_category_may_not_shadow_systematic() -> None:
    with pytest.raises(MappingError, match="theory category 'Jets'"):
        parse_mapping(
            {"mapping_version": 1, "analysis": "a", "theory_categories": ["Jets"], "rules": []}
        )


def test_placeholder_needs_named_group() -> None:
    with pytest.raises(MappingError, match="no named group 'proc'"):
        parse_mapping(
            {"mapping_version": 1, "analysis": "a",
             "rules": [{"pattern": "(.*)_xsec", "category": "Background:{proc}"}]}
        )  # fmt: skip
    with pytest.raises(MappingError, match="only 'Background"):
        parse_mapping(
            {"mapping_version": 1, "analysis": "a",
             "rules": [{"pattern": "(?P<x>.*)", "category": "Jets{x}"}]}
        )  # fmt: skip


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(MappingError, match="top level"):
        load_mapping(write(tmp_path, "- a\n- b\n"))


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("JES_Flavor_Comp", "Jets"),
        ("JET_CategoryReduction_JET_JER_EffectiveNP_1", "Jets"),
        ("JVT_SF", "Jets"),
        ("btag_B_0", "bTagging"),
        ("weight_bTagSF_MV2c10_Continuous_eigenvars_C_3", "bTagging"),
        ("weight_bTagSF_MV2c10_Continuous_eigenvars_Light_2", "LightTagging"),
        ("BTag_Light_NP0", "LightTagging"),
        ("FT_EFF_Eigen_Light_0", "LightTagging"),
        ("EG_SCALE_ALL", "Leptons"),
        ("MUON_SAGITTA_RESBIAS", "Leptons"),
        ("Muon_SF_ID_STAT", "Leptons"),
        ("weight_leptonSF_EL_SF_ID", "Leptons"),
        ("Electron_SF_Trigger", "Trigger"),
        ("MET_SoftTrk_ResoPara", "ETmis"),
        ("PRW", "Pileup"),
        ("weight_pileup", "Pileup"),
        ("Lumi", "Luminosity"),
        ("TAU_EFF_ID", "tauTagging"),
        ("ttZ_A14", "Tune"),
        ("ttZShowering", "partonShower"),
        ("ttZ_muR", "scale"),
        ("ttZPDFChoice", "PDF"),
        ("PDF_3", "PDF"),
        ("ttW_norm", "Background:ttW"),
        ("ZZ_b_xsec", "Background:ZZ"),
        ("xsec_Other", "Background:Other"),
        ("SingleTopXsec", "Background:SingleTop"),
        ("mu_ZZ", "Background:ZZ"),
        ("MMFakeStat", "Background:Fakes"),
        ("staterror_CRWZ", "Background:MCstat"),
        ("alpha_syst1", "?"),
    ],
)
def test_suggest_category(name: str, expected: str) -> None:
    assert suggest_category(name) == expected


def test_every_shipped_mapping_loads() -> None:
    names = shipped_mappings()
    assert {"generic_atlas", "atlas_ttZ_3L", "atlas_ttZ_4L", "atlas_ttZ_3L4L"} <= set(names)
    assert {"atlas_schannel", "atlas_ttbar_lj"} <= set(names)
    for name in names:
        mapping = load_mapping(name)
        assert mapping.analysis == name  # the analysis is the file name stem
    curated = ["generic_atlas", "atlas_ttZ_3L", "atlas_ttZ_4L", "atlas_ttZ_3L4L"]
    for name in [*curated, "atlas_schannel", "atlas_ttbar_lj"]:
        for rule in load_mapping(name).rules:
            assert rule.group, f"{name}: rule {rule.pattern} has no group"


def test_generic_mapping_has_no_catch_all() -> None:
    generic = load_mapping("generic_atlas")
    with pytest.raises(UnmappedParametersError):
        assign(generic, ["TOTAL"])
    with pytest.raises(UnmappedParametersError):
        assign(generic, ["syst1"])


def test_find_mapping_by_coverage_and_fallback() -> None:
    ttz = ["JES_BJES", "BTag_B_NP0", "BTAG_B_NP9", "BTag_Light_NP1", "ttZ_muR", "tWZ_modelling"]
    ttz += ["mu_ZZ", "PRW", "LUMI", "MET_SoftTrk_Resopara", "Muon_ID", "Electron_SF_Reco"]
    ttz += ["Muon_SF_Trigger_STAT", "ttZShowering", "ttZ_A14", "ttZPDFChoice", "ZZ_b_xsec"]
    found = find_mapping(None, [*ttz, "mu_XS_ttZ"])  # the POI among the names is tolerated
    assert found is not None and found.analysis == "atlas_ttZ_4L"  # fewest parameters
    # a few names that a curated mapping happens to cover do not select it
    found = find_mapping(None, ["JES_BJES", "PRW"])
    assert found is not None and found.analysis == "generic_atlas"
    generic = find_mapping(None, ["JET_X", "btag_B_0", "weird_1"])
    assert generic is not None and generic.analysis == "generic_atlas"
    assert find_mapping(None, ["syst1", "syst2", "lumi"]) is None
    assert find_mapping(None, ["syst1"], fallback=False) is None


def test_stat_convention(tmp_path: Path) -> None:
    path = write(tmp_path, "mapping_version: 1\nanalysis: a\nrules: []\nstat_convention: all-fixed\n")
    assert load_mapping(path).stat_convention == "all-fixed"
    assert load_mapping(write(tmp_path, "mapping_version: 1\nanalysis: a\nrules: []\n")).stat_convention is None
    # the curated s-channel mapping carries the paper's convention and its stat row
    schannel = load_mapping("atlas_schannel")
    assert schannel.stat_convention == "all-fixed" and schannel.paper_breakdown == {"Stat": 7.3}

"""SMEFiT runcards: parsing, constraints, restriction to the database."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from smeft_pyhf.exceptions import ConfigError
from smeft_pyhf.formats.coefficients import CoefficientSpec
from smeft_pyhf.likelihood.smefit_runcard import (
    read_smefit_runcard,
    substitution_matrix,
)


@pytest.fixture(scope="module")
def runcards(shared_data: Path) -> Path:
    return shared_data / "smefit_runcards"


@pytest.mark.shared_data
def test_all_runcards_parse(runcards):
    for path in sorted(runcards.glob("*.yaml")):
        sel = read_smefit_runcard(path)
        assert sel.datasets and sel.coefficients, path.name
        assert all(order in ("LO", "NLO_QCD") for _, order in sel.datasets)


@pytest.mark.shared_data
def test_quad_glob(runcards, shared_data):
    sel = read_smefit_runcard(runcards / "LHC_NLO_QUAD_GLOB.yaml")
    assert sel.use_quad and sel.use_t0 and sel.use_theory_cov and sel.order == "NLO_QCD"
    assert sel.coefficients["ctG"] == CoefficientSpec("ctG", -1.0, 1.0)
    assert sel.coefficients["cll1111"].constrain == (("cll", 1.0),)
    assert "cll1111" not in sel.free_coefficients
    top = sel.restrict(shared_data / "smefit_database", top_only=True)
    assert set(top.missing_datasets) == {"CMS_t_tch_13TeV_2016_diff_Yt", "LEP_alphaEW"}
    assert len(top.datasets) == 63  # the runcard has no *_uncor variants of the 67 top sets
    assert "ctG" in top.free_coefficients and "cpG" not in top.coefficients
    assert len(top.free_coefficients) == 34
    full = sel.restrict(shared_data / "smefit_database")
    assert len(full.datasets) == 84
    assert dict(full.datasets)["LEP1_EWPOs_2006"] == "LO"  # LO-only table: fallback


@pytest.mark.shared_data
def test_hw_constraints(runcards):
    sel = read_smefit_runcard(runcards / "LHC_hw_NLO_QUAD_GLOB.yaml")
    assert sel.coefficients["cpqMi"].constrain == (("cpD", 0.955121), ("cpWB", 1.86739))
    assert sel.coefficients["cpui"].constrain == (("cpD", 0.3333),)
    assert sel.coefficients["cll"].value == 0.0 and not sel.coefficients["cll"].is_free
    names, a, b = substitution_matrix(["cpD", "cpWB", "cpqMi", "cll"], sel.coefficients)
    k = {n: i for i, n in enumerate(names)}
    assert a[2, k["cpD"]] == pytest.approx(0.955121) and a[2, k["cpWB"]] == pytest.approx(1.86739)
    assert np.all(a[3] == 0) and b[3] == 0.0


def test_substitution_recursive_fixed_and_circular():
    specs = {"ca": CoefficientSpec("ca"),
             "cb": CoefficientSpec("cb", constrain=(("ca", 2.0),)),
             "cc": CoefficientSpec("cc", constrain=(("cb", 3.0),)),
             "cd": CoefficientSpec("cd", value=0.5)}
    names, a, b = substitution_matrix(["ca", "cb", "cc", "cd", "ce"], specs)
    assert names == ("ca",)
    assert a[:, 0].tolist() == [1.0, 2.0, 6.0, 0.0, 0.0]
    assert b.tolist() == [0.0, 0.0, 0.0, 0.5, 0.0]
    loop = {"ca": CoefficientSpec("ca", constrain=(("cb", 1.0),)),
            "cb": CoefficientSpec("cb", constrain=(("ca", 1.0),))}
    with pytest.raises(ConfigError, match="circular"):
        substitution_matrix(["ca"], loop)


def test_runcard_errors(tmp_path):
    def card(text: str) -> Path:
        path = tmp_path / "card.yaml"
        path.write_text("order: NLO\ndatasets: [A]\ncoefficients:\n" + text)
        return path

    with pytest.raises(ConfigError, match=r"coefficients.OtG.*smaller"):
        read_smefit_runcard(card("  OtG: {min: 1, max: -1}\n"))
    with pytest.raises(ConfigError, match=r"coefficients.Opui.*not among"):
        read_smefit_runcard(card("  Opui: {constrain: {OpD: 0.3}, min: -1, max: 1}\n"))
    with pytest.raises(ConfigError, match="product"):
        read_smefit_runcard(card("  OpD: {min: -1, max: 1}\n  OpWB: {min: -1, max: 1}\n"
                                 "  Opui: {constrain: [{OpD: 0.3, OpWB: 1}], min: -1, max: 1}\n"))
    with pytest.raises(ConfigError, match="not linear"):
        read_smefit_runcard(card("  OpD: {min: -1, max: 1}\n"
                                 "  Opui: {constrain: [{OpD: [0.3, 2]}], min: -1, max: 1}\n"))
    with pytest.raises(ConfigError, match="needs a value"):
        read_smefit_runcard(card("  OpD: {constrain: true, min: -1, max: 1}\n"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("order: NNNLO\n")
    with pytest.raises(ConfigError, match="unknown order"):
        read_smefit_runcard(bad)
    ok = card("  OpD: {min: -1, max: 1}\n  Opui: {constrain: [{OpD: [0.3, 1]}], min: -1, max: 1}\n")
    assert read_smefit_runcard(ok).coefficients["cpui"].constrain == (("cpD", 0.3),)

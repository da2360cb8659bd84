"""Measurement cards as Gaussian rows: reading, covariance, theory treatments, replacement."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from smeft_pyhf.exceptions import DataError, InputError
from smeft_pyhf.likelihood.cards import (
    card_covariance,
    card_theory_shifts,
    card_theory_widths,
    read_card,
    read_cards,
)
from smeft_pyhf.likelihood.combined import build_likelihood

CARD_YAML = """\
card_version: 1
name: TEST_ttZ_3L
experiment: ATLAS
sqrt_s_TeV: 13.0
luminosity_fb: 139.0
arxiv: "2103.12603"
observable: {poi: mu_XS_ttZ, kind: signal_strength, process: ttZ}
prediction: {smefit_dataset: ATLAS_X, replaces: [ATLAS_X]}
measurement:
  best_fit: 1.2
  total: {up: 0.2, down: 0.2, symmetric: 0.2}
  stat: {absolute: 0.1, relative: 0.0833}
systematics:
  Jets: {absolute: 0.05, relative: 0.0417, n_parameters: 3}
  Luminosity: {absolute: 0.02, relative: 0.0167, n_parameters: 1}
theory:
  scale: {absolute: 0.06, relative: 0.05, n_parameters: 3}
  PDF: {absolute: 0.02, relative: 0.0167, n_parameters: 1}
parameters: {JES_1: Jets, LUMI: Luminosity, muR: scale, pdf: PDF}
ignored: []
groups: []
impacts: []
scans: []
diagnostics: {minimizer: minuit, fit_valid: true, hesse_valid: true, twice_nll: 1.0}
provenance: {input: test.json, input_sha256: "0000000000000000000000000000000000000000000000000000000000000000", created: "2026-01-01T00:00:00+00:00", versions: {}}
"""


def _card(name="a", experiment="ATLAS", process="ttZ", mu=1.0, stat=0.1, sys=None, th=None,
          dataset="ATLAS_X", replaces=()):
    """A card built in memory, as read by the likelihood (plain numbers are absolute values)."""
    return read_card({"name": name, "experiment": experiment,
                      "observable": {"poi": "mu", "process": process},
                      "prediction": {"smefit_dataset": dataset, "replaces": list(replaces)},
                      "measurement": {"best_fit": mu, "stat": stat},
                      "systematics": dict(sys or {}), "theory": dict(th or {})})


@pytest.fixture
def database(tmp_path: Path) -> Path:
    """Two tiny SMEFiT-format sets: ATLAS_X (2 bins, linked to the card) and ATLAS_Y."""
    for name, central in (("ATLAS_X", [1.0, 2.0]), ("ATLAS_Y", [3.0, 1.0])):
        (tmp_path / "commondata").mkdir(exist_ok=True)
        (tmp_path / "theory").mkdir(exist_ok=True)
        (tmp_path / "commondata" / f"{name}.yaml").write_text(yaml.safe_dump({
            "num_data": 2, "num_sys": 1, "data_central": central,
            "statistical_error": [0.1, 0.2], "systematics": [[0.05, 0.1]],
            "sys_names": ["UNCORR"], "sys_type": ["ADD"]}))
        (tmp_path / "theory" / f"{name}.json").write_text(json.dumps({
            "best_sm": [1.0, 3.0], "theory_cov_current": [[0.01, 0.0], [0.0, 0.01]],
            "NLO_QCD": {"SM": [1.0, 3.0], "OtZ": [0.2, 0.2], "OtG": [0.4, 0.8],
                        "OtZ*OtZ": [0.1, 0.3], "OtG*OtZ": [0.05, 0.0]}}))
    return tmp_path


def test_read_card_from_yaml_and_mapping(tmp_path):
    path = tmp_path / "card.yaml"
    path.write_text(CARD_YAML)
    card = read_card(path)
    assert card.name == "TEST_ttZ_3L" and card.experiment == "ATLAS" and card.process == "ttZ"
    assert card.best_fit == 1.2 and card.stat == 0.1
    assert card.systematic_impacts == {"Jets": 0.05, "Luminosity": 0.02}
    assert card.theory_widths == {"scale": 0.06, "PDF": 0.02}
    assert card.smefit_dataset == "ATLAS_X" and card.replaces == ("ATLAS_X",)
    assert card.source == str(path)
    assert read_card(yaml.safe_load(CARD_YAML)) == card._replace(source=None)
    assert read_card(card) is card


def test_read_card_errors(tmp_path):
    with pytest.raises(InputError, match=r"nope\.yaml"):
        read_card(tmp_path / "nope.yaml")
    doc = yaml.safe_load(CARD_YAML)
    doc["prediction"] = None
    with pytest.raises(DataError, match=r"prediction\.smefit_dataset"):
        read_card(doc)
    doc = yaml.safe_load(CARD_YAML)
    doc["systematics"]["Jets"] = {"relative": 0.1}
    with pytest.raises(DataError, match=r"systematics.Jets"):
        read_card(doc)
    with pytest.raises(DataError, match="given twice"):
        read_cards([_card(), _card()])


def test_covariance_correlations():
    cards = [_card("a", sys={"Jets": 0.1, "Luminosity": 0.02}, th={"scale": 0.05}),
             _card("b", sys={"Jets": 0.2}, th={"scale": 0.07}),
             _card("c", experiment="CMS", sys={"Jets": 0.3}, th={"scale": 0.04, "PDF": 0.01})]
    cov = card_covariance(cards, rho=0.9)
    expected = np.diag([0.01 + 0.01 + 0.0004, 0.01 + 0.04, 0.01 + 0.09])
    expected[0, 1] = expected[1, 0] = 0.9 * 0.1 * 0.2  # same experiment and category
    np.testing.assert_allclose(cov, expected)  # ATLAS-CMS uncorrelated
    with_th = card_covariance(cards, rho=0.9, theory_as_gaussian=True)
    th = with_th - cov
    np.testing.assert_allclose(np.diag(th), [0.05**2, 0.07**2, 0.04**2 + 0.01**2])
    assert th[0, 2] == pytest.approx(0.9 * 0.05 * 0.04)  # same process, across experiments
    half = card_covariance(cards, rho=0.9, theory_as_gaussian=True, theory_scale=0.5)
    np.testing.assert_allclose(half - cov, 0.25 * th)
    np.linalg.cholesky(card_covariance(cards, rho=0.99, theory_as_gaussian=True))
    np.testing.assert_allclose(card_theory_widths(cards), [0.05, 0.07, 0.05])
    names, shifts = card_theory_shifts(cards)
    assert names == ("theta_ttZ_scale", "theta_ttZ_PDF")
    np.testing.assert_allclose(shifts, [[0.05, 0], [0.07, 0], [0.04, 0.01]])


def _mu(c_tz: float, c_tg: float) -> float:
    # sum over the 2 bins of ATLAS_X, normalised to sum best_sm = 4
    total = 4.0 + 0.4 * c_tz + 1.2 * c_tg + 0.4 * c_tz**2 + 0.05 * c_tg * c_tz
    return total / 4.0


def test_card_likelihood_gaussian_and_replaces(database, tmp_path):
    path = tmp_path / "card.yaml"
    path.write_text(CARD_YAML)
    lik = build_likelihood(database=database, datasets=["ATLAS_X", "ATLAS_Y"], cards=[path],
                           coefficients=["ctZ", "ctG"])
    assert lik.observables == ("ATLAS_Y[0]", "ATLAS_Y[1]", "TEST_ttZ_3L")  # ATLAS_X replaced
    x = torch.tensor([[0.3, -0.2]], dtype=torch.float64)
    assert lik.expected(x)[0, -1].item() == pytest.approx(_mu(0.3, -0.2))
    var = 0.1**2 + 0.05**2 + 0.02**2 + 0.06**2 + 0.02**2  # theory as Gaussian sigma
    y_cov = np.diag([0.1**2 + 0.05**2 + 0.01, 0.2**2 + 0.1**2 + 0.01])
    r_y = np.array([3.0, 1.0]) - np.array([1.0 + 0.2 * 0.3 + 0.4 * -0.2 + 0.1 * 0.09
                                           + 0.05 * 0.3 * -0.2,
                                           3.0 + 0.2 * 0.3 + 0.8 * -0.2 + 0.3 * 0.09])
    ref = (1.2 - _mu(0.3, -0.2)) ** 2 / var + r_y @ np.linalg.solve(y_cov, r_y)
    assert lik.chi2(x).item() == pytest.approx(ref, rel=1e-10)


@pytest.mark.parametrize("mode", ["profiled", "marginalised", "nuisance"])
def test_card_theory_modes(database, tmp_path, mode):
    path = tmp_path / "card.yaml"
    path.write_text(CARD_YAML)
    lik = build_likelihood(database=database, cards=[path], coefficients=["ctZ"],
                           theory_mode=mode)
    sigma2 = 0.1**2 + 0.05**2 + 0.02**2
    width = 0.06 + 0.02
    r = 1.2 - 1.0  # at the SM mu = 1
    if mode == "profiled":
        assert lik.chi2(torch.zeros(1, 1, dtype=torch.float64)).item() == pytest.approx(
            (r - width) ** 2 / sigma2)
        half = build_likelihood(database=database, cards=[path], coefficients=["ctZ"],
                                theory_mode=mode, scale_theory=0.5)
        assert half.chi2(torch.zeros(1, 1, dtype=torch.float64)).item() == pytest.approx(
            (r - width / 2) ** 2 / sigma2)
    elif mode == "marginalised":
        value = lik.chi2(torch.zeros(1, 1, dtype=torch.float64)).item()
        assert (r - width) ** 2 / sigma2 < value < r**2 / sigma2
    else:
        assert lik.names == ("ctZ", "theta_ttZ_scale", "theta_ttZ_PDF")
        assert lik.bounds[1:].tolist() == [[-1.0, 1.0], [-1.0, 1.0]]
        x = torch.tensor([[0.0, 1.0, 1.0]], dtype=torch.float64)
        assert lik.chi2(x).item() == pytest.approx((r - width) ** 2 / sigma2)


def test_background_categories_not_correlated_between_cards():
    a = _card("a", sys={"Jets": 0.1, "Background:Fakes": 0.2})
    b = a._replace(name="b")
    cov = card_covariance([a, b], rho=0.9)
    # off-diagonal: only Jets is shared, 0.9 * 0.1 * 0.1
    assert cov[0, 1] == pytest.approx(0.009)
    assert cov[0, 0] == pytest.approx(0.1**2 + 0.1**2 + 0.2**2)


# ------------------------------------------------------------------ the shipped cards
SHIPPED = Path(__file__).resolve().parents[2] / "configs" / "cards"


@pytest.mark.parametrize("name", ["atlas_ttZ_3L4L", "atlas_schannel", "atlas_ttbar_lj"])
def test_shipped_card_variance_equals_its_workspace_total(name):
    """stat^2 + sum of categories^2, as card_covariance builds it, is the workspace's total:
    the Hesse error of the fit and the mean distance to its profile-likelihood crossings
    (both found by the ingest from the workspace, the crossings with refits)."""
    path = SHIPPED / f"{name}.card.yaml"
    card = read_card(path)
    document = yaml.safe_load(path.read_text())
    implied = float(np.sqrt(card_covariance([card], theory_as_gaussian=True)[0, 0]))
    total = document["measurement"]["total"]
    assert implied == pytest.approx(total["symmetric"], rel=0.02)
    assert implied == pytest.approx(0.5 * (total["up"] + total["down"]), rel=0.02)
    decomposition = document["decomposition"]
    assert decomposition["method"] == "variance-by-source"
    assert decomposition["implied_total"] == pytest.approx(implied, rel=1e-5)
    # the paper-style fix-and-refit rows do not add up; the card does not read them
    rows = document["impact_breakdown"]
    quadrature = np.sqrt(rows["stat"]["absolute"] ** 2
                         + sum(e["absolute"] ** 2 for e in rows["categories"].values()))
    assert quadrature > 1.01 * total["symmetric"]

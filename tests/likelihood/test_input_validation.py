"""Inputs refused at load time, with the file and the field named: SMEFiT tables and
measurement cards used with a database.

Every test copies the embedded example database (``smeft_pyhf/examples/database``) or the
example card to ``tmp_path``, breaks one field and checks the exception type and that its
message names the file and the field.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from smeft_pyhf._resources import examples_dir
from smeft_pyhf.exceptions import DataError
from smeft_pyhf.likelihood.cards import read_card
from smeft_pyhf.likelihood.combined import build_likelihood
from smeft_pyhf.likelihood.smefit_data import (
    check_dataset_name,
    dataset_covariance,
    load_smefit_dataset,
)

EXAMPLES = examples_dir()
TT = "EX_tt_13TeV_mtt"  # 4 bins, 3 systematics, a diagonal theory covariance


@pytest.fixture
def database(tmp_path: Path) -> Path:
    """A writable copy of the example database."""
    return Path(shutil.copytree(EXAMPLES / "database", tmp_path / "database"))


def edit_data(database: Path, name: str, **changes: object) -> Path:
    path = database / "commondata" / f"{name}.yaml"
    data = yaml.safe_load(path.read_text())
    data.update(changes)
    path.write_text(yaml.safe_dump(data))
    return path


def edit_theory(database: Path, name: str, **changes: object) -> Path:
    path = database / "theory" / f"{name}.json"
    theory = json.loads(path.read_text())
    for key, value in changes.items():
        if "." in key:
            order, entry = key.split(".", 1)
            theory[order][entry] = value
        else:
            theory[key] = value
    path.write_text(json.dumps(theory))
    return path


def refused(database: Path, name: str = TT) -> str:
    with pytest.raises(DataError) as info:
        load_smefit_dataset(database, name)
    return str(info.value)


# ------------------------------------------------------------------ SMEFiT dataset files
def test_example_database_loads(database):
    ds = load_smefit_dataset(database, TT)
    assert ds.n_data == 4 and ds.stat.tolist() == [2.0, 2.2, 1.6, 0.9]
    np.linalg.cholesky(dataset_covariance(ds))


@pytest.mark.parametrize("value", ["one", 2.5, True, None, [4]])
def test_num_data_must_be_an_integer(database, value):
    path = edit_data(database, TT, num_data=value)
    message = refused(database)
    assert f"{path}: num_data: must be an integer" in message


def test_num_data_zero_and_num_sys_text(database):
    path = edit_data(database, TT, num_data=0)
    assert f"{path}: num_data: must be >= 1" in refused(database)
    path = edit_data(database, TT, num_data=4, num_sys="three")
    assert f"{path}: num_sys: must be an integer" in refused(database)


def test_one_element_theory_list_is_not_stretched(database):
    path = edit_theory(database, TT, **{"NLO_QCD.OtG": [78.0]})
    message = refused(database)
    assert f"{path}: NLO_QCD.OtG" in message and "1 entries, expected 4 (num_data)" in message


def test_one_element_best_sm_is_not_stretched(database):
    path = edit_theory(database, TT, best_sm=[280.0])
    message = refused(database)
    assert f"{path}: best_sm" in message and "1 entries, expected 4" in message


def test_one_element_and_scalar_statistical_error_are_not_stretched(database):
    path = edit_data(database, TT, statistical_error=[2.0])
    assert f"{path}: statistical_error: has 1 entries, expected 4" in refused(database)
    edit_data(database, TT, statistical_error=2.0)
    assert f"{path}: statistical_error: has 1 entries, expected 4" in refused(database)


def test_a_single_point_keeps_its_scalars(database):
    # num_data 1: a scalar is the one entry (the SMEFiT files write N=1 values that way)
    edit_data(database, "EX_ttZ_13TeV", data_central=0.99, statistical_error=0.05)
    ds = load_smefit_dataset(database, "EX_ttZ_13TeV")
    assert ds.data_central.tolist() == [0.99] and ds.stat.tolist() == [0.05]


def test_negative_statistical_error_is_logged_and_its_square_used(database, caplog):
    # The public SMEFiT database has such entries (ATLAS_CMS_SSinc_RunI); only stat**2 enters
    # the covariance, as in SMEFiT, so the loader keeps them, says so and uses |stat|.
    path = edit_data(database, TT, statistical_error=[2.0, -2.2, 1.6, 0.9])
    with caplog.at_level(logging.WARNING, logger="smeft_pyhf.likelihood.smefit_data"):
        ds = load_smefit_dataset(database, TT)
    assert ds.stat.tolist() == [2.0, 2.2, 1.6, 0.9]
    assert f"{path}: statistical_error has negative entries at positions [1]" in caplog.text


def test_asymmetric_theory_covariance(database):
    cov = np.diag([196.0, 240.25, 64.0, 4.0])
    cov[2, 0] = 30.0  # lower triangle only
    path = edit_theory(database, TT, theory_cov_current=cov.tolist())
    message = refused(database)
    assert f"{path}: theory_cov_current: is not symmetric" in message
    assert "entry [0][2] = 0 but [2][0] = 30" in message


def test_theory_covariance_symmetric_within_rounding_is_accepted(database):
    cov = np.diag([196.0, 240.25, 64.0, 4.0])
    cov[0, 2], cov[2, 0] = 30.0, 30.0 * (1 + 1e-13)
    edit_theory(database, TT, theory_cov_current=cov.tolist())
    ds = load_smefit_dataset(database, TT)
    assert ds.theory_cov[0, 2] == ds.theory_cov[2, 0]


def test_negative_theory_variance(database):
    path = edit_theory(database, TT, theory_cov_current=np.diag([196.0, -1.0, 64.0, 4.0]).tolist())
    message = refused(database)
    assert f"{path}: theory_cov_current: has negative variances" in message and "[1]" in message


def test_covariance_not_positive_definite(database):
    # one fully correlated systematic and nothing else: rank 1 for 4 points
    path = edit_data(database, TT, statistical_error=[0.0] * 4, num_sys=1,
                     systematics=[[1.0, 1.0, 1.0, 1.0]], sys_names=["CORR"], sys_type=["ADD"])
    edit_theory(database, TT, theory_cov_current=np.zeros((4, 4)).tolist())
    ds = load_smefit_dataset(database, TT)
    with pytest.raises(DataError, match="not positive definite") as info:
        dataset_covariance(ds)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("name", ["../database/commondata/EX_tt_13TeV_mtt", "sub/EX_tt", "..",
                                  "..\\x", ""])
def test_dataset_name_that_is_a_path(database, name):
    with pytest.raises(DataError, match="not a dataset name"):
        load_smefit_dataset(database, name)
    with pytest.raises(DataError) as info:
        check_dataset_name(database, name, where="card.yaml: prediction.smefit_dataset")
    assert "card.yaml: prediction.smefit_dataset" in str(info.value)


# ------------------------------------------------------------------------ measurement cards
def example_card(tmp_path: Path, **changes: object) -> Path:
    """The example card, with top-level ``changes`` (``prediction``, ``systematics``, ...)."""
    card = yaml.safe_load((EXAMPLES / "cards" / "EX_ttZ_3L.yaml").read_text())
    card.update(changes)
    path = tmp_path / "card.yaml"
    path.write_text(yaml.safe_dump(card, sort_keys=False))
    return path


def build(database: Path, card: Path):
    return build_likelihood(database=database, datasets=[TT, "EX_ttZ_13TeV"], cards=[card],
                            coefficients=["ctG", "ctZ"])


def test_example_card_builds(database, tmp_path):
    lik = build(database, example_card(tmp_path))
    assert lik.observables[-1] == "EX_ttZ_3L" and "EX_ttZ_13TeV[0]" not in lik.observables


def test_prediction_outside_the_database_is_refused(database, tmp_path):
    # a table that a path-like name would reach: <tmp>/outside/{commondata,theory}/X
    outside = tmp_path / "outside"
    shutil.copytree(database, outside)
    name = "../../outside/commondata/EX_ttZ_13TeV"
    card = example_card(tmp_path, prediction={"smefit_dataset": name, "replaces": []})
    with pytest.raises(DataError) as info:
        build(database, card)
    message = str(info.value)
    assert f"{card}: prediction.smefit_dataset: '{name}' is a path, not a dataset name" in message


def test_prediction_not_in_the_database(database, tmp_path):
    card = example_card(tmp_path, prediction={"smefit_dataset": "EX_ttZ_13TeV_X",
                                              "replaces": ["EX_ttZ_13TeV"]})
    with pytest.raises(DataError) as info:
        build(database, card)
    message = str(info.value)
    assert f"{card}: prediction.smefit_dataset: dataset 'EX_ttZ_13TeV_X' is not in" in message
    assert "close names: EX_ttZ_13TeV" in message


def test_replaced_dataset_not_in_the_database(database, tmp_path):
    card = example_card(tmp_path, prediction={"smefit_dataset": "EX_ttZ_13TeV",
                                              "replaces": ["EX_ttZ_13TeV", "EX_ttZ_8TeV"]})
    with pytest.raises(DataError) as info:
        build(database, card)
    assert f"{card}: prediction.replaces[1]: dataset 'EX_ttZ_8TeV' is not in" in str(info.value)


def test_unknown_systematic_category_in_a_card_file(database, tmp_path):
    card = yaml.safe_load((EXAMPLES / "cards" / "EX_ttZ_3L.yaml").read_text())
    card["systematics"]["Jetz"] = card["systematics"].pop("Jets")
    path = example_card(tmp_path, systematics=card["systematics"])
    with pytest.raises(DataError) as info:
        build(database, path)
    message = str(info.value)
    assert f"{path}: unknown systematic category 'Jetz' at 'systematics.Jetz'" in message
    assert "did you mean 'Jets'" in message


def test_parameter_category_neither_systematic_nor_theory(tmp_path):
    card = yaml.safe_load((EXAMPLES / "cards" / "EX_ttZ_3L.yaml").read_text())
    card["parameters"]["ttZ_muR"] = "scales"  # the card's theory categories: PDF, scale
    path = example_card(tmp_path, parameters=card["parameters"])
    with pytest.raises(DataError) as info:
        read_card(path)
    message = str(info.value)
    assert f"{path}: unknown category 'scales' at 'parameters.ttZ_muR'" in message
    assert "did you mean 'scale'" in message


def test_theory_category_with_a_systematic_name(tmp_path):
    card = yaml.safe_load((EXAMPLES / "cards" / "EX_ttZ_3L.yaml").read_text())
    card["theory"]["Luminosity"] = card["theory"].pop("PDF")
    path = example_card(tmp_path, theory=card["theory"])
    with pytest.raises(DataError) as info:
        read_card(path)
    assert (f"{path}: theory category 'Luminosity' at 'theory.Luminosity' is an SFitter "
            "systematic category") in str(info.value)


def test_card_given_as_a_mapping_is_checked_too():
    card = yaml.safe_load((EXAMPLES / "cards" / "EX_ttZ_3L.yaml").read_text())
    card["systematics"]["Background"] = {"absolute": 0.01, "relative": 0.01}  # plain: valid
    assert read_card(card).systematic_impacts["Background"] == 0.01
    card["systematics"]["btagging"] = {"absolute": 0.01, "relative": 0.01}
    with pytest.raises(DataError, match=r"unknown systematic category 'btagging'.*bTagging"):
        read_card(card)

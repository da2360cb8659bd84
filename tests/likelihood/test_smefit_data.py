"""SMEFiT dataset loader and covariance: real top-quark sets and small broken files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from smeft_pyhf.exceptions import DataError
from smeft_pyhf.likelihood.smefit_data import (
    available_orders,
    combined_covariance,
    dataset_covariance,
    load_smefit_dataset,
    load_smefit_datasets,
    top_quark_datasets,
)


def independent_chi2_at_sm(database: Path, name: str) -> tuple[int, float]:
    """chi2 at best_sm with the exp. t0 covariance + theory_cov_current, from the raw files,
    written from the format description in PROVENANCE.md (no package code)."""
    data = yaml.safe_load((database / "commondata" / f"{name}.yaml").read_text())
    theory = json.loads((database / "theory" / f"{name}.json").read_text())
    n, s = data["num_data"], data["num_sys"]
    central = np.broadcast_to(np.asarray(data["data_central"], float), (n,))
    stat = np.broadcast_to(np.asarray(data["statistical_error"], float), (n,))
    sys = np.asarray(data["systematics"], float).reshape(s, n)
    names = np.atleast_1d(data["sys_names"])
    types = np.atleast_1d(data["sys_type"])
    best_sm = np.asarray(theory["best_sm"], float)
    cov = np.diag(stat**2)
    for row, nm, tp in zip(sys, names, types, strict=True):
        if tp == "MULT":
            row = row / central * best_sm
        if nm in ("UNCORR", "THEORYUNCORR"):
            cov += np.diag(row**2)
        else:
            cov += np.outer(row, row)
    cov += np.asarray(theory["theory_cov_current"], float).reshape(n, n)
    r = central - best_sm
    return n, float(r @ np.linalg.solve(cov, r))


@pytest.fixture(scope="module")
def database(shared_data: Path) -> Path:
    return shared_data / "smefit_database"


@pytest.fixture(scope="module")
def top_sets(database: Path):
    return load_smefit_datasets(database, top_quark_datasets(database))


@pytest.mark.shared_data
def test_top_quark_sets(database, top_sets):
    assert len(top_sets) == 67
    assert sum(ds.n_data for ds in top_sets) == 204
    ops = set().union(*(ds.operators for ds in top_sets))
    assert len(ops) == 41
    ds = {d.name: d for d in top_sets}["ATLAS_t_sch_13TeV_inc"]
    assert ds.experiment == "ATLAS" and ds.units == "pb" and ds.luminosity == 139
    np.testing.assert_allclose(ds.data_central, [8.47])
    assert ds.systematics.shape == (1, 1) and ds.sys_names == ("UNCORR",)
    assert ds.quadratic["O3pl1*O3pl2"][0] == pytest.approx(2 * ds.quadratic["O3pl1*O3pl1"][0])
    assert available_orders(database, "ATLAS_t_sch_13TeV_inc") == ("LO", "NLO_QCD")


@pytest.mark.shared_data
def test_chi2_at_sm_matches_independent_numpy(database, top_sets):
    per_set = {}
    for ds in top_sets:
        cov = dataset_covariance(ds)
        r = ds.data_central - ds.best_sm
        ours = float(r @ np.linalg.solve(cov, r))
        n, ref = independent_chi2_at_sm(database, ds.name)
        assert n == ds.n_data
        assert ours == pytest.approx(ref, rel=1e-10), ds.name
        per_set[ds.name] = ours
    # PROVENANCE.md: 247.5 summed over the 67 sets, ttZ pT(Z) 15.7, s-channel 0.66, W hel. 0.74
    assert sum(per_set.values()) == pytest.approx(247.5, abs=0.05)
    assert per_set["ATLAS_ttZ_13TeV_pTZ"] == pytest.approx(15.7, abs=0.05)
    assert per_set["ATLAS_t_sch_13TeV_inc"] == pytest.approx(0.66, abs=0.005)
    assert per_set["ATLAS_Whel_13TeV"] == pytest.approx(0.74, abs=0.005)


@pytest.mark.shared_data
def test_combined_covariance_is_block_diagonal_without_named_correlations(top_sets):
    block = combined_covariance(top_sets, correlate_named=False)
    full = combined_covariance(top_sets)
    start = 0
    for ds in top_sets:
        sl = slice(start, start + ds.n_data)
        np.testing.assert_allclose(block[sl, sl], dataset_covariance(ds))
        start += ds.n_data
    assert not np.allclose(block, full)  # e.g. ATLASLUMI / CMSLUMI rows are shared
    np.linalg.cholesky(full)


# ---------------------------------------------------------------- small synthetic files
def write_set(root: Path, name: str, *, data: dict | None = None, theory: dict | None = None,
              raw_yaml: str | None = None) -> None:
    (root / "commondata").mkdir(parents=True, exist_ok=True)
    (root / "theory").mkdir(parents=True, exist_ok=True)
    base_data = {"dataset_name": name, "num_data": 2, "num_sys": 2, "units": "pb",
                 "luminosity": 36.1, "data_central": [1.0, 2.0],
                 "statistical_error": [0.1, 0.2],
                 "systematics": [[0.05, 0.1], [0.02, 0.04]],
                 "sys_names": ["UNCORR", "LUMI16"], "sys_type": ["ADD", "MULT"]}
    base_theory = {"best_sm": [1.1, 1.9], "theory_cov_current": [[0.01, 0.0], [0.0, 0.01]],
                   "NLO_QCD": {"SM": [1.0, 1.8], "OtG": [0.5, 0.7], "OtG*OtG": [0.1, 0.2]}}
    base_data.update(data or {})
    base_theory.update(theory or {})
    text = raw_yaml if raw_yaml is not None else yaml.safe_dump(base_data)
    (root / "commondata" / f"{name}.yaml").write_text(text)
    (root / "theory" / f"{name}.json").write_text(json.dumps(base_theory))


def test_scalars_and_unquoted_arxiv(tmp_path):
    raw = ("dataset_name: ONE\narxiv: 2209.08990\nnum_data: 1\nnum_sys: 1\ndata_central: 8.47\n"
           "statistical_error: 0.615\nsystematics:\n  - 3.3\nsys_names: UNCORR\nsys_type: ADD\n")
    write_set(tmp_path, "ATLAS_ONE", raw_yaml=raw,
              theory={"best_sm": [11.2], "theory_cov_current": [[0.005857]],
                      "NLO_QCD": {"SM": [10.5], "OtG": [1.0]}})
    ds = load_smefit_dataset(tmp_path, "ATLAS_ONE")
    assert ds.systematics.shape == (1, 1) and ds.sys_names == ("UNCORR",)
    cov = dataset_covariance(ds)
    assert cov[0, 0] == pytest.approx(0.615**2 + 3.3**2 + 0.005857)


def test_t0_and_named_correlations(tmp_path):
    write_set(tmp_path, "ATLAS_A")
    write_set(tmp_path, "ATLAS_B")
    a, b = load_smefit_datasets(tmp_path, ["ATLAS_A", "ATLAS_B"])
    lumi_t0 = np.array([0.02, 0.04]) / a.data_central * a.best_sm
    cov_a = dataset_covariance(a, use_theory_cov=False)
    expected = np.diag(a.stat**2 + np.array([0.05, 0.1]) ** 2) + np.outer(lumi_t0, lumi_t0)
    np.testing.assert_allclose(cov_a, expected)
    no_t0 = dataset_covariance(a, use_t0=False, use_theory_cov=False)
    np.testing.assert_allclose(no_t0[0, 1], 0.02 * 0.04)
    full = combined_covariance([a, b], use_theory_cov=False)
    np.testing.assert_allclose(full[:2, 2:], np.outer(lumi_t0, lumi_t0))  # LUMI16 shared
    np.testing.assert_allclose(dataset_covariance(a) - cov_a, a.theory_cov)
    assert load_smefit_dataset(tmp_path, "ATLAS_A", use_quad=False).quadratic == {}


def test_missing_dataset_lists_close_names(tmp_path):
    write_set(tmp_path, "ATLAS_ttZ_13TeV")
    with pytest.raises(DataError, match=r"ATLAS_ttZ_13TeV_X.*not found.*close names: ATLAS_ttZ_13TeV"):
        load_smefit_dataset(tmp_path, "ATLAS_ttZ_13TeV_X")


def test_nan_in_table(tmp_path):
    write_set(tmp_path, "ATLAS_A", theory={"NLO_QCD": {"SM": [1, 2], "OtG": [0.5, float("nan")]}})
    with pytest.raises(DataError, match=r"theory/ATLAS_A.json: NLO_QCD.OtG.*NaN"):
        load_smefit_dataset(tmp_path, "ATLAS_A")


def test_mismatched_lengths(tmp_path):
    write_set(tmp_path, "ATLAS_A", theory={"best_sm": [1.0, 2.0, 3.0]})
    with pytest.raises(DataError, match=r"ATLAS_A.json: best_sm.*3 entries, expected 2"):
        load_smefit_dataset(tmp_path, "ATLAS_A")
    write_set(tmp_path, "ATLAS_B", data={"data_central": [1.0, 2.0, 3.0]})
    with pytest.raises(DataError, match=r"ATLAS_B.yaml: data_central"):
        load_smefit_dataset(tmp_path, "ATLAS_B")


def test_bad_systematics_shape(tmp_path):
    write_set(tmp_path, "ATLAS_A", data={"systematics": [[0.1, 0.2, 0.3]]})
    with pytest.raises(DataError, match=r"ATLAS_A.yaml: systematics.*\(num_sys, num_data\)"):
        load_smefit_dataset(tmp_path, "ATLAS_A")
    write_set(tmp_path, "ATLAS_B", data={"num_sys": 3, "sys_names": ["A", "B", "C"],
                                         "sys_type": ["ADD"] * 3,
                                         "systematics": [[0.1, 0.2, 0.3], [0.1, 0.2, 0.3]]})
    with pytest.raises(DataError, match="num_data, num_sys"):
        load_smefit_dataset(tmp_path, "ATLAS_B")


def test_unknown_order_and_missing_field(tmp_path):
    write_set(tmp_path, "ATLAS_A")
    with pytest.raises(DataError, match="unknown order"):
        load_smefit_dataset(tmp_path, "ATLAS_A", order="NNLO")  # type: ignore[arg-type]
    with pytest.raises(DataError, match=r"has no 'LO' table.*\['NLO_QCD'\]"):
        load_smefit_dataset(tmp_path, "ATLAS_A", order="LO")
    write_set(tmp_path, "ATLAS_B", raw_yaml="num_data: 2\nnum_sys: 0\n")
    with pytest.raises(DataError, match=r"ATLAS_B.yaml: field 'data_central' is missing"):
        load_smefit_dataset(tmp_path, "ATLAS_B")


def test_non_positive_definite(tmp_path):
    write_set(tmp_path, "ATLAS_A", data={"statistical_error": [0.0, 0.0], "num_sys": 1,
                                         "systematics": [[0.1, 0.1]], "sys_names": ["CORR"],
                                         "sys_type": ["ADD"]},
              theory={"theory_cov_current": [[0.0, 0.0], [0.0, 0.0]]})
    ds = load_smefit_dataset(tmp_path, "ATLAS_A")
    with pytest.raises(DataError, match=r"ATLAS_A.yaml.*not positive definite.*ATLAS_A"):
        dataset_covariance(ds)

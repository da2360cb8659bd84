"""`smeft-pyhf compare`: card vs full likelihood on the small shipped workspace."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyhf
import pytest
import yaml
from click.testing import CliRunner

from smeft_pyhf._resources import shipped_dir
from smeft_pyhf.cli import cli

WORKSPACE = shipped_dir("workspaces") / "example_ttZ_like.json"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("compare")
    db = root / "db"
    (db / "commondata").mkdir(parents=True)
    (db / "theory").mkdir()
    (db / "commondata" / "TOY_ttZ.yaml").write_text(yaml.safe_dump({
        "dataset_name": "TOY_ttZ", "num_data": 1, "num_sys": 0, "data_central": 1.0,
        "statistical_error": 0.1}))
    (db / "theory" / "TOY_ttZ.json").write_text(json.dumps({
        "best_sm": [2.0], "NLO_QCD": {"SM": [2.0], "OtG": [0.6], "OtG*OtG": [0.4]}}))
    ws = pyhf.Workspace(json.loads(WORKSPACE.read_text()))
    model = ws.model()
    mu_hat = float(pyhf.infer.mle.fit(ws.data(model), model)[model.config.poi_index])

    def entry(value: float) -> dict[str, float]:
        return {"absolute": value, "relative": value / mu_hat}

    card = {
        "card_version": 1, "name": "TOY_ttZ_card", "experiment": "ATLAS",
        "observable": {"poi": "mu_ttZ", "kind": "signal_strength", "process": "ttZ"},
        "prediction": {"smefit_dataset": "TOY_ttZ", "replaces": []},
        "measurement": {"best_fit": mu_hat, "total": {"up": 0.4, "down": 0.3, "symmetric": 0.35},
                        "stat": entry(0.2)},
        "systematics": {"Jets": entry(0.25)}, "theory": {"scale": entry(0.1)},
        "parameters": {},
        "diagnostics": {"minimizer": "minuit", "fit_valid": True, "hesse_valid": True,
                        "twice_nll": 0.0},
        "provenance": {"input": "hand-written", "input_sha256": "0" * 64,
                       "created": "2026-11-23T00:00:00Z", "versions": {}},
    }
    card_path = root / "card.yaml"
    card_path.write_text(yaml.safe_dump(card))
    return {"db": db, "card": card_path}


def test_compare_json(inputs: dict[str, Path]) -> None:
    result = CliRunner().invoke(cli, [
        "compare", str(WORKSPACE), "--card", str(inputs["card"]), "--coefficient", "ctG",
        "--points", "3", "--range", "-1", "1", "--database", str(inputs["db"]), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["coefficient"] == "ctG" and out["card"] == "TOY_ttZ_card"
    assert out["mu"]["linear"] == pytest.approx(0.3) and out["mu"]["quadratic"] == pytest.approx(0.2)
    assert out["values"] == [-1.0, 0.0, 1.0]
    assert set(out["delta_twice_nll"]) == {"full", "card:total", "card:gaussian",
                                            "card:profiled"}
    assert np.all(np.asarray(out["delta_twice_nll"]["full"]) >= -1e-6)
    assert set(out["intervals"]["full"]) == {"68%", "95%"}


def test_compare_table_and_default_range(inputs: dict[str, Path],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMEFT_PYHF_DATABASE", str(inputs["db"]))
    result = CliRunner().invoke(cli, [
        "compare", str(WORKSPACE), "--card", str(inputs["card"]), "--coefficient", "OtG",
        "--points", "3", "--card-mode", "total"])
    assert result.exit_code == 0, result.output
    assert "Delta(2NLL) at each scan point" in result.stdout
    assert "card:total" in result.stdout and "Intervals" in result.stdout
    assert "full-likelihood minimum" in result.stdout


def test_compare_errors(inputs: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SMEFT_PYHF_DATABASE", raising=False)
    result = CliRunner().invoke(cli, [
        "compare", str(WORKSPACE), "--card", str(inputs["card"]), "--coefficient", "ctG"])
    assert result.exit_code == 2
    assert "no SMEFiT database" in result.output
    result = CliRunner().invoke(cli, [
        "compare", str(WORKSPACE), "--card", str(inputs["card"]), "--coefficient", "ctG",
        "--database", str(inputs["db"]), "--range", "1", "-1"])
    assert result.exit_code == 2
    assert "empty scan range" in result.output

"""`ingest` end to end on the example workspace, and its errors."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from smeft_pyhf._io import sha256_file
from smeft_pyhf._resources import shipped_dir
from smeft_pyhf.exceptions import InputError, UnmappedParametersError
from smeft_pyhf.ingest.card import load_card
from smeft_pyhf.ingest.pipeline import ingest
from smeft_pyhf.ingest.report import format_report, report_json

EXAMPLE = shipped_dir("workspaces") / "example_ttZ_like.json"
MAPPING = shipped_dir("mappings") / "example_ttZ_like.yaml"


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("cards") / "card.yaml"
    return ingest(EXAMPLE, mapping=MAPPING, output=out, n_impacts=4, n_scans=2)


def test_card_contents(result) -> None:
    card = load_card(result.path)
    assert card.name == "example_ttZ_like"
    assert card.observable == {"kind": "signal_strength", "process": "ttZ", "poi": "mu_ttZ"}
    m = card.measurement
    assert m["best_fit"] == pytest.approx(result.fit.bestfit[result.loaded.model.config.poi_index], rel=1e-5)
    assert m["total"]["up"] > m["total"]["down"] > 0
    assert m["stat"]["relative"] == pytest.approx(m["stat"]["absolute"] / m["best_fit"], rel=1e-4)
    assert set(card.theory) == {"scale", "PDF"}
    assert "Background:WZ" in card.systematics and "Jets" in card.systematics
    assert card.systematics["Background:WZ"]["n_parameters"] == 3
    assert len(card.parameters) == 23 and card.parameters["staterror_CR_WZ"] == "Background:MCstat"
    closure = card.diagnostics["closure"]
    assert closure == pytest.approx(1.0, abs=0.1)
    squares = m["stat"]["absolute"] ** 2 + sum(
        e["absolute"] ** 2 for block in (card.systematics, card.theory) for e in block.values()
    )
    assert math.sqrt(squares) / m["total"]["symmetric"] == pytest.approx(closure, rel=1e-4)
    paper = {row["group"]: row for row in card.groups}
    assert paper["Luminosity"]["paper_percent"] == 1.7
    assert paper["Stat"]["reproduced_percent"] == pytest.approx(100 * m["stat"]["relative"], rel=1e-4)
    assert len(card.impacts) == 4 and len(card.scans) == 2
    provenance = card.provenance
    assert provenance["input_sha256"] == sha256_file(EXAMPLE)
    assert provenance["mapping_sha256"] == sha256_file(MAPPING)
    assert {"smeft_pyhf", "pyhf", "cabinetry", "iminuit", "numpy", "scipy"} <= set(provenance["versions"])
    assert card.diagnostics["fit_valid"] and card.diagnostics["minimizer"] == "minuit"


def test_report(result) -> None:
    text = format_report(result.card)
    assert "Reproduced [%]" in text and "Paper [%]" in text
    assert "Background:WZ" in text and "closure" in text
    assert yaml.safe_load(report_json(result.card))["name"] == "example_ttZ_like"


def test_unmapped_parameters_and_no_card(tmp_path: Path) -> None:
    text = MAPPING.read_text().replace("  - {pattern: 'PRW_.*', category: Pileup, group: Pile-up}\n", "")
    mapping = tmp_path / "partial.yaml"
    mapping.write_text(text)
    out = tmp_path / "card.yaml"
    with pytest.raises(UnmappedParametersError, match=r"PRW_DATASF \(suggested: Pileup\)"):
        ingest(EXAMPLE, mapping=mapping, output=out, n_impacts=0, n_scans=0)
    assert not out.exists()


def test_unwritable_output_fails_before_fitting(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        ingest(EXAMPLE, mapping=MAPPING, output=tmp_path / "no" / "card.yaml")

"""`ingest` end to end on the example workspace, and its errors."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pyhf
import pytest
import yaml

from smeft_pyhf._io import sha256_file
from smeft_pyhf._resources import shipped_dir
from smeft_pyhf.exceptions import InputError, UnmappedParametersError, WorkspaceError
from smeft_pyhf.formats.card import load_card
from smeft_pyhf.ingest import pipeline
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
    # the card's numbers split the Hesse variance: they add up in quadrature to the total
    closure = card.diagnostics["closure"]
    assert closure == pytest.approx(1.0, abs=1e-6)
    squares = m["stat"]["absolute"] ** 2 + sum(
        e["absolute"] ** 2 for block in (card.systematics, card.theory) for e in block.values()
    )
    assert math.sqrt(squares) / m["total"]["symmetric"] == pytest.approx(closure, rel=1e-4)
    decomposition = card.decomposition
    assert decomposition["method"] == "variance-by-source"
    assert decomposition["stat_convention"] == "free-floating"
    assert decomposition["stat_convention_from"] == "default"
    assert decomposition["free_normalisations"] == {"mu_WZ": "Stat"}
    for entry in card.systematics.values():
        assert entry["absolute"] ** 2 == pytest.approx(  # 6 digits in the YAML
            entry["constraint"] ** 2 + entry["data"] ** 2, rel=1e-4)
    # the paper-comparable fix-and-refit rows are kept beside them
    impact = card.impact_breakdown
    assert impact["method"] == "hesse" and impact["stat_convention"] == "free-floating"
    assert set(impact["categories"]) == set(card.systematics) | set(card.theory)
    assert impact["closure"] > 1.0
    paper = {row["group"]: row for row in card.groups}
    assert paper["Luminosity"]["paper_percent"] == 1.7
    assert paper["Stat"]["reproduced_percent"] == pytest.approx(
        100 * impact["stat"]["relative"], rel=1e-4)
    assert paper["Stat"]["absolute"] == pytest.approx(m["stat"]["absolute"], rel=1e-6)
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
    assert "Stat (free-floating)" in text and "fix-and-refit" in text
    document = yaml.safe_load(report_json(result.card, plots=result.plots))
    assert document["name"] == "example_ttZ_like"
    assert document["plots"] == [str(p) for p in result.plots]


def _regions() -> list[str]:
    return sorted(c["name"] for c in json.loads(EXAMPLE.read_text())["channels"])  # pyhf order


def test_plots_written_beside_the_card(result) -> None:
    folder = result.path.parent
    names = [p.name for p in result.plots]
    expected = ["card.pulls.pdf", "card.ranking.pdf"]
    expected += [f"card.yields_{kind}_{region}.pdf" for kind in ("prefit", "postfit")
                 for region in _regions()]
    expected += ["card.breakdown.pdf"]
    assert names == expected
    for path in result.plots:
        assert path.parent == folder and path.is_file()
        content = path.read_bytes()
        assert content.startswith(b"%PDF-") and content.rstrip().endswith(b"%%EOF")
        assert len(content) > 5000, path
    assert sorted(p.name for p in folder.iterdir()) == sorted([*expected, "card.yaml"])


def test_png_plots_and_no_plots(tmp_path: Path) -> None:
    png = ingest(EXAMPLE, mapping=MAPPING, output=tmp_path / "ex.card.yaml", n_impacts=2,
                 n_scans=0, n_starts=1, plot_format="png")
    assert len(png.plots) == 3 + 2 * len(_regions())
    for path in png.plots:
        assert path.name.startswith("ex.") and path.suffix == ".png"
        content = path.read_bytes()
        assert content.startswith(b"\x89PNG\r\n\x1a\n") and len(content) > 5000
    bare = ingest(EXAMPLE, mapping=MAPPING, output=tmp_path / "sub.yaml", n_impacts=0,
                  n_scans=0, n_starts=1, plots=False)
    assert bare.plots == () and not list(tmp_path.glob("sub.*.p*"))
    with pytest.raises(InputError, match="beside the card"):
        ingest(EXAMPLE, mapping=MAPPING, n_impacts=0, n_scans=0, n_starts=1, plots=True)


def test_stat_convention_from_option_and_mapping(tmp_path: Path) -> None:
    fixed = ingest(EXAMPLE, mapping=MAPPING, n_impacts=0, n_scans=0, n_starts=1,
                   stat_convention="all-fixed")
    card = fixed.card
    assert card.decomposition["stat_convention"] == "all-fixed"
    assert card.decomposition["stat_convention_from"] == "option"
    assert card.decomposition["free_normalisations"] == {"mu_WZ": "Background:WZ"}
    assert card.decomposition["closure"] == pytest.approx(1.0, abs=1e-6)
    assert card.impact_breakdown["stat_convention"] == "all-fixed"
    assert card.stat < fixed.fit.uncertainty[fixed.loaded.model.config.poi_index]
    mapping = tmp_path / "m.yaml"
    mapping.write_text(MAPPING.read_text() + "stat_convention: all-fixed\n")
    from_mapping = ingest(EXAMPLE, mapping=mapping, n_impacts=0, n_scans=0, n_starts=1)
    assert from_mapping.card.decomposition["stat_convention_from"] == "mapping"
    assert from_mapping.card.stat == pytest.approx(card.stat, rel=1e-6)
    option_wins = ingest(EXAMPLE, mapping=mapping, n_impacts=0, n_scans=0, n_starts=1,
                         stat_convention="free-floating")
    assert option_wins.card.decomposition["stat_convention"] == "free-floating"
    assert option_wins.card.stat > card.stat


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


# ------------------------------------------------------------------ local minima, bounds, inputs
CATCH_ALL = """mapping_version: 1
analysis: catch_all
theory_categories: []
rules:
  - {pattern: '.*', category: 'Background:other'}
"""
COUPLED = "pyhf_validation/validation/multichan_coupledhistosys_histfactory/config/example.xml"


def _catch_all(tmp_path: Path) -> Path:
    path = tmp_path / "catch_all.yaml"
    path.write_text(CATCH_ALL)
    return path


def _pyhf_reference(model, data, start: list[float]) -> tuple[float, float]:
    """pyhf's own fit (scipy) started near the true minimum: (POI, 2NLL)."""
    before = pyhf.get_backend()
    try:
        pyhf.set_backend("numpy", pyhf.optimize.scipy_optimizer())
        pars, twice_nll = pyhf.infer.mle.fit(data, model, init_pars=start, return_fitted_val=True)
    finally:
        pyhf.set_backend(*before)
    return float(pars[model.config.poi_index]), float(twice_nll)


@pytest.mark.shared_data
@pytest.mark.parametrize("n_starts", [1, 4])
def test_coupled_histosys_ends_at_the_global_minimum(
    shared_data: Path, tmp_path: Path, n_starts: int
) -> None:
    """One start: the total-uncertainty scan comes across a lower point and the fit is redone
    from there; four starts: a random start finds the lower minimum directly."""
    result = ingest(shared_data / COUPLED, mapping=_catch_all(tmp_path), n_impacts=1, n_scans=1,
                    n_starts=n_starts)
    model, data = result.loaded.model, result.loaded.data
    mu_ref, nll_ref = _pyhf_reference(model, data, [0.4, 1.0, 0.43])
    card = result.card
    assert card.best_fit == pytest.approx(mu_ref, abs=2e-3)
    assert card.best_fit == pytest.approx(0.427, abs=2e-3)
    assert card.diagnostics["twice_nll"] == pytest.approx(nll_ref, abs=1e-3)
    starts = card.diagnostics["starts"]
    warnings = " ".join(card.diagnostics["warnings"])
    assert "higher minimum (2NLL +1.47" in warnings
    assert starts["agreeing"] < starts["n"]
    if n_starts == 1:
        assert starts["refits_from_lower_points"] == 1 and starts["n"] == 2
        assert "total uncertainty refit came across" in warnings and "fit was redone" in warnings
    else:
        assert starts["refits_from_lower_points"] == 0 and starts["n"] == 4
    # every later refit is at or above the minimum used
    assert min(q for s in result.scans for q in s.delta_twice_nll) >= -1e-3
    assert result.total.down > 0 and result.total.up > 0


@pytest.mark.shared_data
def test_poi_at_its_bound_is_a_card_warning(shared_data: Path, tmp_path: Path) -> None:
    """pyhf's 2-bin example: mu fits to its lower bound 0; relative numbers are not printed."""
    source = shared_data / "pyhf_validation/docs/examples/json/2-bin_1-channel.json"
    result = ingest(source, mapping=_catch_all(tmp_path), n_impacts=1, n_scans=0,
                    output=tmp_path / "card.yaml")
    card = load_card(result.path)
    assert card.best_fit < 1e-2
    assert card.diagnostics["poi_at_bound"] == "lower"
    assert any("at its lower bound 0" in w for w in card.diagnostics["warnings"])
    assert card.measurement["total"]["down"] == pytest.approx(card.best_fit, abs=1e-9)
    text = format_report(card)
    assert "relative numbers not shown" in text and "at its lower bound" in text
    tokens = text.split("relative numbers")[0].replace("(", " ").split()
    numbers = [float(t.strip("+-/)")) for t in tokens if re.fullmatch(r"[-+/]*\d[\d.]*(e[-+]?\d+)?\)?", t)]
    assert numbers and max(numbers) < 10.0, text  # no 9,206,024 % rows
    assert card.diagnostics["starts"]["agreeing"] == card.diagnostics["starts"]["n"] == 4


def test_default_output_checked_before_the_fit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "example_ttZ_like.card.yaml").mkdir()  # the default card path is a folder
    calls = []
    monkeypatch.setattr(pipeline, "fit", lambda *a, **k: calls.append(1))
    with pytest.raises(InputError, match=r"example_ttZ_like\.card\.yaml: is a folder"):
        ingest(EXAMPLE, mapping=MAPPING, default_output=True)
    assert calls == []


def test_bad_numbers_stop_before_the_fit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = json.loads(EXAMPLE.read_text())
    spec["channels"][1]["samples"][3]["data"][0] = float("nan")
    source = tmp_path / "nan.json"
    source.write_text(json.dumps(spec))
    calls = []
    monkeypatch.setattr(pipeline, "fit", lambda *a, **k: calls.append(1))
    with pytest.raises(WorkspaceError, match=r"nan.json: .*channel 'SR_3l_1b4j', sample 'tWZ', bin 1"):
        ingest(source, mapping=MAPPING, output=tmp_path / "card.yaml")
    assert calls == [] and not (tmp_path / "card.yaml").exists()

"""Measurement cards: schema, round trip, atomic writes, the likelihood layer reads them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from smeft_pyhf.exceptions import DataError, InputError
from smeft_pyhf.formats.card import dump_card, example_card, load_card, validate_card, write_card


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "card.yaml"
    card = example_card()
    write_card(card, path)
    loaded = load_card(path)
    assert loaded._replace(source=None) == card
    assert loaded.source == str(path)
    assert loaded.best_fit == 1.1 and loaded.stat == 0.1
    text = path.read_text()
    assert text.index("\nmeasurement:") < text.index("\nsystematics:") < text.index("\nprovenance:")


def test_schema_errors_name_the_field(tmp_path: Path) -> None:
    document = example_card().to_dict()
    document["systematics"]["Jets"]["absolute"] = -1.0
    with pytest.raises(DataError, match=r"systematics\.Jets\.absolute"):
        validate_card(document)
    document = example_card().to_dict()
    del document["measurement"]["stat"]
    with pytest.raises(DataError, match="'stat' is a required property"):
        validate_card(document)
    document = example_card().to_dict()
    document["diagnostics"]["twice_nll"] = float("nan")
    with pytest.raises(DataError, match="non-finite"):
        validate_card(document)


def test_invalid_card_is_not_written(tmp_path: Path) -> None:
    document = example_card().to_dict()
    document["card_version"] = 7
    path = tmp_path / "card.yaml"
    with pytest.raises(DataError):
        write_card(document, path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_folder(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(InputError, match="not writable"):
            write_card(example_card(), folder / "card.yaml")
    finally:
        folder.chmod(0o700)


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        write_card(example_card(), tmp_path / "nope" / "card.yaml")


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="measurement card not found"):
        load_card(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(InputError, match="line 2"):
        load_card(bad)
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({"card_version": 1, "name": "x"}))
    with pytest.raises(DataError, match="required property"):
        load_card(other)


def test_yaml_is_plain(tmp_path: Path) -> None:
    text = dump_card(example_card())
    assert "!!" not in text  # no python tags
    assert yaml.safe_load(text)["measurement"]["total"] == {"up": 0.13, "down": 0.12, "symmetric": 0.125}


def test_likelihood_layer_reads_cards(tmp_path: Path) -> None:
    from smeft_pyhf.likelihood.cards import read_card

    document = example_card().to_dict()
    document["prediction"] = {"smefit_dataset": "ATLAS_ttZ_13TeV_2016", "replaces": []}
    path = tmp_path / "card.yaml"
    write_card(document, path)
    measurement = read_card(path)
    assert measurement.best_fit == 1.1
    assert measurement.stat == 0.1
    assert measurement.systematic_impacts == {"Jets": 0.05}
    assert measurement.theory_widths == {"scale": 0.04}


@pytest.mark.parametrize(
    ("block", "change", "expected"),
    [
        ("systematics", {"Jetz": {"absolute": 0.05, "relative": 0.05}},
         "unknown systematic category 'Jetz' at 'systematics.Jetz'"),
        ("systematics", {"Background:": {"absolute": 0.05, "relative": 0.05}},
         "unknown systematic category 'Background:' at 'systematics.Background:'"),
        ("theory", {"bTagging": {"absolute": 0.05, "relative": 0.05}},
         "theory category 'bTagging' at 'theory.bTagging' is an SFitter systematic category"),
        ("parameters", {"muF": "scales"},
         "unknown category 'scales' at 'parameters.muF': neither an SFitter systematic category "
         "nor one of the card's theory categories (scale)"),
    ],
)
def test_unknown_categories_are_refused_with_the_card_named(tmp_path: Path, block, change,
                                                            expected) -> None:
    document = example_card().to_dict()
    document[block].update(change)
    path = tmp_path / "card.yaml"
    path.write_text(dump_card(document))  # written by hand, not through write_card
    with pytest.raises(DataError) as info:
        load_card(path)
    assert f"{path}: {expected}" in str(info.value)
    with pytest.raises(DataError, match="categor"):
        write_card(document, tmp_path / "other.yaml")
    assert not (tmp_path / "other.yaml").exists()


def test_categories_of_impacts_and_known_kinds_accepted(tmp_path: Path) -> None:
    document = example_card().to_dict()
    document["systematics"]["Background:WZ"] = {"absolute": 0.02, "relative": 0.02}
    document["parameters"]["mu_WZ"] = "Background:WZ"
    document["parameters"]["lumi"] = "Luminosity"  # a systematic category without an entry
    validate_card(document, where="ok.yaml")
    document["impacts"] = [{"parameter": "x", "category": "Jest", "postfit_up": 0.1,
                            "postfit_down": -0.1}]
    with pytest.raises(DataError, match=r"ok\.yaml: unknown category 'Jest' at 'impacts\[0\]"
                                         r"\.category'.*did you mean 'Jets'"):
        validate_card(document, where="ok.yaml")

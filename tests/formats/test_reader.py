"""The one document reader: YAML/JSON in, schema-checked mapping out, one error pattern."""

from __future__ import annotations

import json
import math

import pytest

from smeft_pyhf.exceptions import ConfigError, DataError, InputError, MappingError
from smeft_pyhf.formats.reader import (
    SCHEMA_DRAFT,
    load_schema,
    read_document,
    schema_path,
    validate_document,
)

SCHEMAS = ("measurement_card", "mapping", "runcard", "results")


@pytest.mark.parametrize("name", SCHEMAS)
def test_every_schema_uses_the_one_draft_and_is_valid(name):
    import jsonschema

    schema = load_schema(name)
    assert schema["$schema"] == SCHEMA_DRAFT
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$id"].endswith(f"/{name}/1.json")


def test_only_these_schemas_ship():
    names = {p.name.removesuffix(".schema.json") for p in schema_path("x").parent.glob("*.json")}
    assert names == set(SCHEMAS)


def test_yaml_exponent_floats_are_numbers_and_quoted_ones_strings(tmp_path):
    path = tmp_path / "d.yaml"
    path.write_text("a: 1e-3\nb: -2E+4\nc: '1e-3'\nd: 1.5\ne: 7\nf: .inf\n")
    doc = read_document(path)
    assert doc == {"a": 0.001, "b": -20000.0, "c": "1e-3", "d": 1.5, "e": 7, "f": math.inf}


def test_json_documents_and_their_errors(tmp_path):
    path = tmp_path / "d.json"
    path.write_text('{"a": 1}')
    assert read_document(path) == {"a": 1}
    path.write_text('{"a": 1')
    with pytest.raises(InputError, match="not valid JSON at line 1") as info:
        read_document(path)
    assert info.value.where == str(path)
    path.write_text("[1, 2]")
    with pytest.raises(MappingError, match="must be a mapping"):
        read_document(path, error=MappingError)


def test_missing_file_and_bad_yaml_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="runcard not found"):
        read_document(tmp_path / "nope.yaml", what="runcard")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: 1\nb: [1,\n")
    with pytest.raises(InputError, match="not valid YAML at line 3"):
        read_document(bad)


SCHEMA = {
    "$schema": SCHEMA_DRAFT,
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "rate": {"type": "number", "format": "finite"},
        "steps": {"type": ["integer", "null"], "minimum": 1},
        "mode": {"enum": ["fast", "slow"]},
        "pair": {"type": "array", "minItems": 2, "maxItems": 2, "prefixItems": [{}, {}]},
        "rules": {"type": "array", "items": {"type": "object", "required": ["pattern"]}},
    },
}


@pytest.mark.parametrize(
    ("document", "where", "message"),
    [
        ({"stesp": 1}, "(top level)",
         "unknown key 'stesp'. Hint: did you mean 'steps'? valid keys here: mode, pair, rate, "
         "rules, steps"),
        ({"rate": math.nan}, "rate", "expected a finite number, got nan"),
        ({"rate": math.inf}, "rate", "expected a finite number, got inf"),
        ({"rate": "1e-3"}, "rate", "expected a number, got '1e-3'"),
        ({"steps": 1.5}, "steps", "expected an integer or null, got 1.5"),
        ({"steps": 0}, "steps", "0 is less than the minimum of 1"),
        ({"mode": "fats"}, "mode", "invalid value 'fats'. Hint: did you mean 'fast'?"),
        ({"pair": [1, 2, 3]}, "pair", "expected a list of 2 values, got 3: [1, 2, 3]"),
        ({"rules": [{}, {"x": 1}]}, "rules[0]", "'pattern' is a required property"),
    ],
)
def test_one_error_pattern_names_file_and_field(document, where, message):
    with pytest.raises(ConfigError) as info:
        validate_document(document, SCHEMA, where="f.yaml", error=ConfigError)
    assert info.value.where == f"f.yaml: {where}"
    assert message in str(info.value)


def test_results_schema_names_the_field(tmp_path):
    import numpy as np

    from smeft_pyhf.results.results_file import (
        Histogram1D,
        make_fit_result,
        read_results,
        write_results,
    )

    edges = np.linspace(-3, 3, 61)
    h = Histogram1D(edges, (0.5 * (edges[1:] + edges[:-1])) ** 2)
    result = make_fit_result(names=("cA",), ranges={"cA": (-3.0, 3.0)}, best_fit={"cA": math.nan},
                             profile1d={"cA": h}, marginal1d={"cA": h})
    write_results(result, tmp_path)
    assert math.isnan(read_results(tmp_path).best_fit["cA"])  # NaN round-trips as NaN
    path = tmp_path / "results.json"
    data = json.loads(path.read_text())
    data["intervals"]["cA"]["profiled"]["99"] = data["intervals"]["cA"]["profiled"]["68"]
    path.write_text(json.dumps(data))
    with pytest.raises(InputError) as info:
        read_results(path)
    assert info.value.where == f"{path}: intervals.cA.profiled"
    assert "'99'" in str(info.value)


def test_card_errors_are_data_errors(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("card_version: 1\nname: x\n")
    from smeft_pyhf.formats.card import load_card

    with pytest.raises(DataError, match="required property") as info:
        load_card(path)
    assert info.value.where == f"{path}: (top level)"

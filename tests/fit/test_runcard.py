"""Runcard validation: schema, semantics, sampler overrides, SMEFiT runcards."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import pytest
import yaml

from smeft_pyhf._resources import examples_dir
from smeft_pyhf.exceptions import ConfigError, InputError
from smeft_pyhf.fit.runcard import (
    Runcard,
    build_sampler_config,
    is_smefit_runcard,
    load_runcard,
    parse_runcard,
)

DB = examples_dir() / "database"


def write(tmp_path, text: str, name: str = "rc.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def base(**extra):
    data = {
        "runcard_version": 1,
        "database": str(DB),
        "datasets": ["EX_tt_13TeV_mtt", {"name": "EX_tZ_13TeV", "order": "LO"}],
        "coefficients": {"ctG": {"min": -1, "max": 1}, "OtW": {"min": -2, "max": 2},
                         "ctZ": {"value": 0.0}},
    }
    data.update(extra)
    return data


def test_default_runcard_is_valid():
    rc = load_runcard(examples_dir() / "default_runcard.yaml")
    assert isinstance(rc, Runcard)
    assert rc.free_names == ("ctG", "ctZ", "ctW", "cpQM", "c8qt")
    assert rc.database == DB.resolve()
    assert [c.name for c in rc.cards] == ["EX_ttZ_3L.yaml"]
    assert rc.theory == "profiled" and rc.order == "NLO_QCD" and not rc.linear_only
    assert rc.to_dict()["coefficients"]["ctG"] == {"min": -1.0, "max": 1.0}


def test_parse_normalises_names_orders_and_fixed():
    rc = parse_runcard(base(order="NLO"))
    assert rc.order == "NLO_QCD"
    assert rc.datasets[1].order == "LO"
    assert rc.free_names == ("ctG", "ctW")  # OtW -> ctW; ctZ fixed
    assert rc.ranges == {"ctG": (-1.0, 1.0), "ctW": (-2.0, 2.0)}


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"datasetz": []}, "unknown key 'datasetz'.*did you mean 'datasets'"),
        ({"order": "NNLO"}, "invalid value 'NNLO'.*LO, NLO, NLO_QCD"),
        ({"rho": 1.5}, "rho"),
        ({"runcard_version": 2}, "runcard_version"),
        ({"datasets": ["EX_tt_13TeV_mttt"]}, "unknown dataset 'EX_tt_13TeV_mttt'.*did you mean 'EX_tt_13TeV_mtt'"),
        ({"coefficients": {"ctG": {"min": 1, "max": -1}}}, "bad range: min"),
        ({"coefficients": {"ctG": {"min": -1}}}, "needs both 'min' and 'max'"),
        ({"coefficients": {"ctGG": {"min": -1, "max": 1}}}, "coefficient 'ctGG'.*did you mean 'ctG'"),
        ({"coefficients": {"ctG": {"mni": -1, "max": 1}}}, "unknown key 'mni'.*did you mean 'min'"),
        ({"coefficients": {"ctG": {"value": 0}}}, "no free coefficient"),
        ({"coefficients": {"ctG": {"min": -1, "max": 1}, "ctW": {"constrain": {"cxx": 1}}}},
         "constraint refers to 'cxx'"),
        ({"sampler": {"train": {"n_batchs": 5}}}, "unknown key 'n_batchs'.*did you mean 'n_batches'"),
        ({"sampler": {"trian": {}}}, "unknown key 'trian'.*did you mean 'train'"),
        ({"sampler": {"train": {"n_batches": "many"}}}, "expected an integer"),
        ({"datasets": [{"nme": "x"}]}, "invalid dataset entry"),
        ({"workers": 0}, "workers: 0 is less than the minimum of 1"),
        ({"scheduler": 3}, "scheduler: expected a string or null, got 3"),
        ({"datasets": [{"card": "nope.yaml"}]}, "measurement card not found"),
    ],
)
def test_bad_runcards(change, match):
    with pytest.raises(ConfigError, match=match):
        parse_runcard(base(**change))


def test_missing_database(monkeypatch):
    monkeypatch.delenv("SMEFT_PYHF_DATABASE", raising=False)
    data = base()
    del data["database"]
    with pytest.raises(ConfigError, match="no SMEFiT database"):
        parse_runcard(data)
    monkeypatch.setenv("SMEFT_PYHF_DATABASE", str(DB))
    assert parse_runcard(data).database == DB.resolve()


def test_malformed_yaml_and_not_a_mapping(tmp_path):
    bad = write(tmp_path, "runcard_version: 1\ndatasets: [a, b\n")
    with pytest.raises(InputError, match="not valid YAML at line"):
        load_runcard(bad)
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_runcard(write(tmp_path, "- a\n- b\n", "list.yaml"))


def test_error_names_the_file(tmp_path):
    data = base(linear_onli=True)
    path = write(tmp_path, yaml.safe_dump(data))
    with pytest.raises(ConfigError) as info:
        load_runcard(path)
    assert str(path) in str(info.value)
    assert "linear_only" in str(info.value)


def test_paths_relative_to_runcard(tmp_path):
    (tmp_path / "cards").mkdir()
    card = (examples_dir() / "cards" / "EX_ttZ_3L.yaml").read_text()
    (tmp_path / "cards" / "c.yaml").write_text(card)
    data = base(datasets=["EX_tZ_13TeV", {"card": "cards/c.yaml"}])
    rc = load_runcard(write(tmp_path, yaml.safe_dump(data)))
    assert rc.cards == ((tmp_path / "cards" / "c.yaml").resolve(),)


def test_sampler_overrides():
    real = build_sampler_config({"train": {"n_batches": 7}, "sample": {"batch_size": 1000}})
    assert real.train.n_batches == 7 and real.sample.batch_size == 1000
    assert real.prescale.n_steps == 1500  # paper default untouched
    # the Table 5 column to start from, then the overrides
    combined = build_sampler_config({"paper": "combined", "train": {"n_batches": 7}})
    assert (combined.prescale.n_samples, combined.prescale.n_steps) == (40960, 5500)
    assert (combined.train.n_batches, combined.train.ais_steps) == (7, 8)
    with pytest.raises(ConfigError, match=r"invalid value 'combo'.*top, higgs, combined"):
        build_sampler_config({"paper": "combo"})
    with pytest.raises(ConfigError, match="expected true/false"):
        build_sampler_config({"flow": {"compile": 1}})
    with pytest.raises(ConfigError, match="train: expected a mapping"):
        build_sampler_config({"train": 3})


def test_runcard_and_workers_keys():
    rc = parse_runcard(base(workers=4, scheduler="tcp://127.0.0.1:8786"))
    assert (rc.workers, rc.scheduler) == (4, "tcp://127.0.0.1:8786")
    assert rc.to_dict()["workers"] == 4
    plain = parse_runcard(base(workers=None))
    assert plain.workers is None and "workers" not in plain.to_dict()


def test_sampler_schema_follows_the_dataclasses():
    from smeft_pyhf.fit.sampler_block import sampler_schema
    from smeft_pyhf.sampler.pipeline import SamplerConfig

    schema = sampler_schema()
    steps = {f.name for f in dataclasses.fields(SamplerConfig)}
    assert steps | {"paper"} == set(schema["properties"])
    train = schema["properties"]["train"]["properties"]
    assert train["n_batches"] == {"type": "integer", "default": 100}
    assert train["clip_alpha"] == {"type": "number", "default": 30.0}  # allow_inf
    assert train["learning_rate"]["format"] == "finite"
    assert train["chunk_size"]["type"] == ["integer", "null"]
    assert train["lr_schedule"]["enum"] == ["constant", "cosine", "exponential"]
    bounds = train["step_size_bounds"]
    assert (bounds["minItems"], bounds["maxItems"], len(bounds["prefixItems"])) == (2, 2, 2)


def test_smefit_runcard_detection_and_restriction(shared_data):
    path = shared_data / "smefit_runcards" / "LHC_NLO_QUAD_GLOB.yaml"
    assert is_smefit_runcard(yaml.safe_load(path.read_text()))
    db = shared_data / "smefit_database"
    rc = load_runcard(path, database=db, restrict="top")
    assert rc.source_format == "smefit"
    assert not rc.linear_only and rc.order == "NLO_QCD"
    assert "ctG" in rc.free_names
    names = [d.name for d in rc.datasets]
    assert "ATLAS_tZ_13TeV_inc" in names
    assert not any(n.startswith("LEP") for n in names)


def test_sampler_block_with_top_level_settings_from_a_file(tmp_path):
    # scalars next to the per-step mappings: the Table 5 column and SamplerConfig settings
    data = base(sampler={"paper": "combined", "range_nsigma": 5, "train": {"n_batches": 7}})
    rc = load_runcard(write(tmp_path, yaml.safe_dump(data)))
    config = build_sampler_config(rc.sampler)
    assert (config.prescale.n_samples, config.train.n_batches, config.range_nsigma) == (40960, 7, 5)
    assert rc.to_dict()["sampler"]["paper"] == "combined"
    with pytest.raises(ConfigError, match=r"sampler\.paper: invalid value 'combo'"):
        load_runcard(write(tmp_path, yaml.safe_dump(base(sampler={"paper": "combo"}))))


# ------------------------------------------------- inputs refused at load, file and field named
REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("sampler", "field", "expected"),
    [
        ({"pretrain": {"n_samples": "abc"}}, "sampler.pretrain.n_samples",
         "expected an integer or null, got 'abc'"),
        ({"prescale": {"chunk_size": "abc"}}, "sampler.prescale.chunk_size",
         "expected an integer or null, got 'abc'"),
        ({"train": {"max_grad_norm": "abc"}}, "sampler.train.max_grad_norm",
         "expected a number or null, got 'abc'"),
        ({"prescale": {"step_size_bounds": "ab"}}, "sampler.prescale.step_size_bounds",
         "expected a list, got 'ab'"),
        ({"sample": {"weight_range": "abc"}}, "sampler.sample.weight_range",
         "expected a list, got 'abc'"),
        ({"sample": {"weight_range": [-8, "x"]}}, "sampler.sample.weight_range[1]",
         "expected a number, got 'x'"),
        ({"sample": {"weight_range": [1, 2, 3]}}, "sampler.sample.weight_range",
         "expected a list of 2 values, got 3"),
        ({"prescale": {"n_samples": 1.5}}, "sampler.prescale.n_samples",
         "expected an integer, got 1.5"),
        ({"prescale": {"n_samples": float("inf")}}, "sampler.prescale.n_samples",
         "expected an integer, got inf"),
        ({"train": {"learning_rate": float("nan")}}, "sampler.train.learning_rate",
         "expected a finite number, got nan"),
        ({"prescale": {"resampling": "stratified"}}, "sampler.prescale.resampling",
         "invalid value 'stratified'. Hint: did you mean 'systematic'? valid choices: "
         "multinomial, systematic"),
        ({"flow": {"identity_init": "yes"}}, "sampler.flow.identity_init",
         "expected true/false"),
        ({"range_nsigma": "wide"}, "sampler.range_nsigma", "expected a number"),
        ({"prescale": {"n_samples": 1}}, "sampler.prescale", "n_samples=1 must be >= 2"),
    ],
)
def test_sampler_settings_are_type_checked_with_the_file_named(tmp_path, sampler, field,
                                                               expected):
    path = write(tmp_path, yaml.safe_dump(base(sampler=sampler)))
    with pytest.raises(ConfigError) as info:
        load_runcard(path)
    message = str(info.value)
    assert f"{path.resolve()}: {field}: " in message or f"{path.resolve()}: {field}:" in message
    assert expected in message


def test_sampler_numbers_in_yaml_and_infinite_clip(tmp_path):
    # 1e-3 and 2e4 are numbers (YAML 1.2's rule); inf only where the field allows it
    path = write(tmp_path, yaml.safe_dump(base()) + textwrap.dedent("""\
        sampler:
          train: {learning_rate: 1e-3, clip_alpha: .inf}
          prescale: {n_samples: 2e4, chunk_size: null}
        """))
    config = build_sampler_config(load_runcard(path).sampler)
    assert config.train.learning_rate == 1e-3 and config.train.clip_alpha == float("inf")
    assert config.prescale.n_samples == 20000 and config.prescale.chunk_size is None
    assert type(config.prescale.n_samples) is int
    assert build_sampler_config({"sample": {"weight_range": [-8, 3]}}).sample.weight_range == (
        -8.0, 3.0)
    # a number written as text (quoted in YAML) is a string, and refused
    with pytest.raises(ConfigError, match=r"train\.learning_rate: expected a number, got '1e-3'"):
        build_sampler_config({"train": {"learning_rate": "1e-3"}})


@pytest.mark.parametrize(
    ("text", "field", "what"),
    [
        ("prescale: {n_samples: 1.0e+8}", "sampler: prescale.n_samples",
         "evaluate the likelihood about 1.5e+11 times"),
        ("prescale: {n_samples: 1.0e+9, n_steps: 10}", "sampler: prescale.n_samples",
         "GiB of memory"),
        ("prescale: {n_samples: 1.0e+12}", "sampler: prescale.n_samples", "GiB of memory"),
        ("prescale: {n_samples: 1e8}", "sampler: prescale.n_samples",
         "evaluate the likelihood about"),
        ("train: {n_batches: 1000000000000}", "sampler: train.n_batches",
         "evaluate the likelihood about"),
        ("sample: {bins_2d: 100000}", "sampler: sample.bins_2d", "GiB of memory"),
        ("sample: {n_batches: 100000000}", "sampler: sample.n_batches",
         "evaluate the likelihood about"),
        ("flow: {bins: 100000000}", "sampler: flow.bins", "GiB of memory"),
    ],
)
def test_sampler_sizes_beyond_any_fit_are_refused(tmp_path, text, field, what):
    data = base()
    body = yaml.safe_dump(data) + "sampler:\n  " + text + "\n"
    path = write(tmp_path, body)
    with pytest.raises(ConfigError) as info:
        load_runcard(path)
    message = str(info.value)
    assert f"{path.resolve()}: {field}: step" in message
    assert what in message and "estimate for 2 parameters" in message


def test_sampler_ceiling_from_the_environment(tmp_path, monkeypatch):
    path = write(tmp_path, yaml.safe_dump(base(sampler={"prescale": {"n_samples": 3 * 10**8,
                                                                      "n_steps": 10}})))
    with pytest.raises(ConfigError, match="above the ceiling of 32 GiB"):
        load_runcard(path)
    monkeypatch.setenv("SMEFT_PYHF_MAX_MEMORY_GB", "1000")
    assert load_runcard(path).sampler["prescale"]["n_samples"] == 3 * 10**8
    monkeypatch.setenv("SMEFT_PYHF_MAX_MEMORY_GB", "lots")
    with pytest.raises(ConfigError, match="SMEFT_PYHF_MAX_MEMORY_GB"):
        load_runcard(path)


def test_shipped_runcards_pass_the_checks_also_with_the_paper_settings(shared_data):
    from smeft_pyhf.fit.runcard import check_runcard
    from smeft_pyhf.sampler.config import sampler_costs

    paths = [*sorted((REPO / "configs").glob("*.yaml")), examples_dir() / "default_runcard.yaml"]
    assert len(paths) >= 4
    for path in paths:
        rc = load_runcard(path)
        for column in ("top", "higgs", "combined"):
            check_runcard(rc.replace(sampler={"paper": column}))
            check_runcard(rc.replace(sampler={**rc.sampler, "paper": column}, dtype="float64"))
    glob = load_runcard(REPO / "configs" / "glob_quad_fit.yaml")
    assert len(glob.free) == 50
    costs = sampler_costs(build_sampler_config({"paper": "combined"}), dim=50, n_data=441)
    assert max(c.memory_bytes for c in costs) < 8 * 2**30  # float32: 4x below the ceiling


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"min": float("-inf"), "max": 1.0}, "coefficients: ctG: min"),
        ({"min": -1.0, "max": float("inf")}, "coefficients: ctG: max"),
        ({"min": float("nan"), "max": 1.0}, "coefficients: ctG: min"),
    ],
)
def test_infinite_ranges_are_refused(tmp_path, spec, field):
    data = base()
    data["coefficients"]["ctG"] = spec
    path = write(tmp_path, yaml.safe_dump(data))
    with pytest.raises(ConfigError) as info:
        load_runcard(path)
    assert f"{path.resolve()}: {field}: " in str(info.value)
    assert "is not a finite number" in str(info.value)


def test_non_finite_fixed_values_and_factors_are_refused(tmp_path):
    data = base()
    data["coefficients"]["ctZ"] = {"value": float("nan")}
    path = write(tmp_path, yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"coefficients: ctZ: value: value = nan is not a finite"):
        load_runcard(path)
    data["coefficients"]["ctZ"] = {"constrain": {"ctG": float("inf")}}
    path = write(tmp_path, yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"coefficients: ctZ: constrain: ctG: "):
        load_runcard(path)
    path = write(tmp_path, yaml.safe_dump(base(scale_theory=float("nan"))))
    with pytest.raises(ConfigError, match=r"scale_theory: scale_theory = nan"):
        load_runcard(path)


def _card_runcard(tmp_path, **card_changes):
    card = yaml.safe_load((examples_dir() / "cards" / "EX_ttZ_3L.yaml").read_text())
    card.update(card_changes)
    (tmp_path / "cards").mkdir(exist_ok=True)
    card_path = tmp_path / "cards" / "c.yaml"
    card_path.write_text(yaml.safe_dump(card))
    data = base(datasets=["EX_tZ_13TeV", {"card": "cards/c.yaml"}])
    return write(tmp_path, yaml.safe_dump(data)), card_path.resolve()


@pytest.mark.parametrize(
    ("prediction", "field", "expected"),
    [
        ({"smefit_dataset": "../../outside/EX_ttZ_13TeV", "replaces": []},
         "prediction.smefit_dataset", "is a path, not a dataset name"),
        ({"smefit_dataset": "EX_ttZ_13TeV_X", "replaces": []}, "prediction.smefit_dataset",
         "dataset 'EX_ttZ_13TeV_X' is not in the database"),
        ({"smefit_dataset": "EX_ttZ_13TeV", "replaces": ["EX_ttZ_13TeV", "EX_ttW"]},
         "prediction.replaces[1]", "dataset 'EX_ttW' is not in the database"),
    ],
)
def test_card_datasets_checked_against_the_database(tmp_path, prediction, field, expected):
    path, card = _card_runcard(tmp_path, prediction=prediction)
    with pytest.raises(ConfigError) as info:
        load_runcard(path)
    message = str(info.value)
    assert f"{card}: {field}: " in message and expected in message
    assert f"the card is used by {path.resolve()}" in message


def test_card_with_an_unknown_category_refused_by_the_runcard_check(tmp_path):
    from smeft_pyhf.exceptions import DataError

    card = yaml.safe_load((examples_dir() / "cards" / "EX_ttZ_3L.yaml").read_text())
    card["systematics"]["Lumi"] = card["systematics"].pop("Luminosity")
    path, card_path = _card_runcard(tmp_path, systematics=card["systematics"])
    with pytest.raises(DataError) as info:
        load_runcard(path)
    assert f"{card_path}: unknown systematic category 'Lumi' at 'systematics.Lumi'" in str(
        info.value)

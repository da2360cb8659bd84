"""Runcard validation: schema, semantics, sampler overrides, SMEFiT runcards."""

from __future__ import annotations

import dataclasses
import textwrap

import pytest
import yaml

from smeft_pyhf._resources import examples_dir
from smeft_pyhf.exceptions import ConfigError
from smeft_pyhf.fit.runcard import (
    Runcard,
    apply_overrides,
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
        ({"sampler": {"train": {"n_batchs": 5}}}, "unknown setting 'n_batchs'.*did you mean 'n_batches'"),
        ({"sampler": {"trian": {}}}, "unknown setting 'trian'.*did you mean 'train'"),
        ({"sampler": {"train": {"n_batches": "many"}}}, "expected an integer"),
        ({"datasets": [{"nme": "x"}]}, "invalid dataset entry"),
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
    with pytest.raises(ConfigError, match="malformed YAML at line"):
        load_runcard(bad)
    with pytest.raises(ConfigError, match="YAML mapping"):
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
    @dataclasses.dataclass(frozen=True)
    class Step:
        lr: float = 1e-3
        n: int = 100
        flag: bool = False

    @dataclasses.dataclass(frozen=True)
    class Cfg:
        train: Step = dataclasses.field(default_factory=Step)

    cfg = build_sampler_config({"train": {"lr": 1, "n": 5}}, config_class=Cfg)
    assert cfg.train == Step(lr=1.0, n=5)
    with pytest.raises(ConfigError, match="expected true/false"):
        apply_overrides(Cfg(), {"train": {"flag": 1}}, where="x")
    with pytest.raises(ConfigError, match="needs a mapping"):
        apply_overrides(Cfg(), {"train": 3}, where="x")
    real = build_sampler_config({"train": {"n_batches": 7}, "sample": {"batch_size": 1000}})
    assert real.train.n_batches == 7 and real.sample.batch_size == 1000
    assert real.prescale.n_steps == 1500  # paper default untouched
    # the Table 5 column to start from, then the overrides
    combined = build_sampler_config({"paper": "combined", "train": {"n_batches": 7}})
    assert (combined.prescale.n_samples, combined.prescale.n_steps) == (40960, 5500)
    assert (combined.train.n_batches, combined.train.ais_steps) == (7, 8)
    with pytest.raises(ConfigError, match="unknown paper column 'combo'"):
        build_sampler_config({"paper": "combo"})


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
    with pytest.raises(ConfigError, match="unknown paper column 'combo'"):
        load_runcard(write(tmp_path, yaml.safe_dump(base(sampler={"paper": "combo"}))))

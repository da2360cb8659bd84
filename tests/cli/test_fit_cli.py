"""`smeft-pyhf fit`: errors as one paragraph with exit code 2, runs with a tiny sampler block."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner

from smeft_pyhf._resources import examples_dir
from smeft_pyhf.cli import cli

DB = examples_dir() / "database"


def runcard(tmp_path, text: str):
    path = tmp_path / "rc.yaml"
    path.write_text(textwrap.dedent(text))
    return path


GOOD = f"""\
runcard_version: 1
database: {DB}
datasets: [EX_tt_13TeV_mtt, EX_tZ_13TeV, EX_Whel_13TeV]
coefficients:
  ctG: {{min: -1, max: 1}}
  ctW: {{min: -2, max: 2}}
linear_only: true
theory: gaussian
sampler:  # a few seconds
  prescale: {{n_samples: 512, n_steps: 50}}
  flow: {{n_blocks: 2, hidden_features: 16}}
  pretrain: {{batch_size: 256, epochs: 1, mcmc_steps: 2, burn_in_steps: 5}}
  train: {{n_batches: 6, batch_size: 256, buffered_per_online: 1, buffer_capacity: 4096}}
  sample: {{n_batches: 2, batch_size: 10000, profile_bins_2d: 5}}
  profile: {{batch_size: 4000, max_steps: 40}}
  range_pilot: 4096
"""


@pytest.mark.parametrize(
    ("old", "new", "match", "error"),
    [
        ("linear_only: true", "linear_onyl: true", "unknown key 'linear_onyl'", "ConfigError"),
        ("{min: -1, max: 1}", "{min: 1, max: -1}", "bad range", "ConfigError"),
        ("EX_tZ_13TeV,", "EX_tZ_13TeVV,", "unknown dataset 'EX_tZ_13TeVV'", "ConfigError"),
        ("ctW:", "ctWW:", "coefficient 'ctWW'", "ConfigError"),
        ("datasets: [", "datasets: [[", "is not valid YAML at line", "InputError"),
    ],
)
def test_bad_runcard_exit_2(tmp_path, old, new, match, error):
    path = runcard(tmp_path, GOOD.replace(old, new))
    result = CliRunner().invoke(cli, ["fit", str(path)])
    assert result.exit_code == 2, result.output
    assert match in " ".join(result.output.split())
    assert result.output.startswith(f"Error ({error})")
    assert "Traceback" not in result.output


def test_missing_runcard_exit_2(tmp_path):
    result = CliRunner().invoke(cli, ["fit", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2
    assert "runcard not found" in " ".join(result.output.split())


def test_fit_with_a_tiny_sampler(tmp_path):
    path = runcard(tmp_path, GOOD)
    out = tmp_path / "out"
    runner = CliRunner()
    result = runner.invoke(cli, ["fit", str(path), "--output", str(out), "--no-plots",
                                 "--scale-theory", "0.5", "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert "ctG" in result.output and "profiled 95%" in result.output
    assert "analytic (linear Gaussian)" in result.output
    data = json.loads((out / "results.json").read_text())
    assert data["config"]["scale_theory"] == 0.5
    assert data["config"]["seed"] == 3
    # a second run into the same folder is refused with exit 2
    again = runner.invoke(cli, ["fit", str(path), "--output", str(out)])
    assert again.exit_code == 2 and "already exists" in " ".join(again.output.split())
    js = runner.invoke(cli, ["fit", str(path), "--output", str(out), "--overwrite", "--json",
                             "--no-plots", "--quiet"])
    assert js.exit_code == 0, js.output
    payload = json.loads(js.output[js.output.index("{"):])
    assert set(payload["intervals"]) == {"ctG", "ctW"}


def test_cuda_without_gpu_exit_2(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = CliRunner().invoke(cli, ["fit", str(runcard(tmp_path, GOOD)), "--device", "cuda",
                                      "--output", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "no CUDA GPU" in " ".join(result.output.split())


def test_no_argument_uses_embedded_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["fit", "--no-plots"])
    assert result.exit_code == 0, result.output
    assert "embedded default" in result.output
    data = json.loads((tmp_path / "smeft_pyhf_results" / "results.json").read_text())
    assert data["config"]["name"] == "example_top"
    assert data["coefficients"] == ["ctG", "ctZ", "ctW", "cpQM", "c8qt"]
    assert yaml.safe_load((tmp_path / "smeft_pyhf_results" / "runcard.yaml").read_text())
    assert np.isfinite(data["best_fit"]["coefficients"]["ctG"])


def test_a_second_fit_on_the_same_output_stops_at_once_naming_the_first(
    tmp_path, monkeypatch, caplog
):
    import subprocess
    import sys

    from smeft_pyhf._io import _HOST, lock_path

    path = runcard(tmp_path, GOOD)
    out = tmp_path / "out"
    first = subprocess.Popen(
        [sys.executable, "-c",
         f"import time\nfrom smeft_pyhf._io import output_lock\n"
         f"with output_lock({str(out)!r}):\n    print('locked', flush=True)\n    time.sleep(60)"],
        stdout=subprocess.PIPE,
    )
    try:
        assert first.stdout.readline().strip() == b"locked"
        second = CliRunner().invoke(cli, ["fit", str(path), "--output", str(out), "--no-plots"])
    finally:
        first.kill()
        first.wait()
    message = " ".join(second.output.split())
    assert second.exit_code == 2, second.output
    assert f"another smeft-pyhf run (pid {first.pid} on host {_HOST}" in message
    assert not out.exists() and not (tmp_path / ".out.partial-work").exists()
    # the first run died without releasing its lock: the next run takes it over and warns
    lock_path(out).write_text(json.dumps({"pid": first.pid, "host": _HOST, "started": "x"}))
    with caplog.at_level("WARNING"):
        third = CliRunner().invoke(cli, ["fit", str(path), "--output", str(out), "--no-plots"])
    assert third.exit_code == 0, third.output
    assert f"of pid {first.pid} on {_HOST}" in caplog.text and "no longer runs" in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "rc.yaml"]


def test_quiet_applies_to_the_command_only(tmp_path, monkeypatch):
    import logging

    package_log = logging.getLogger("smeft_pyhf")
    before = package_log.level
    result = CliRunner().invoke(cli, ["fit", str(runcard(tmp_path, GOOD)), "--output",
                                      str(tmp_path / "out"), "--no-plots", "--quiet"])
    assert result.exit_code == 0, result.output
    assert package_log.level == before

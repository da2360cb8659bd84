"""`smeft-pyhf fit`: errors as one paragraph with exit code 2, a run with a stand-in sampler."""

from __future__ import annotations

import json
import textwrap
import types

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner

from smeft_pyhf._resources import examples_dir
from smeft_pyhf.cli import cli
from smeft_pyhf.fit import run as run_module

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


def fake_sampler(log_prob, *, names, ranges, config, seed, checkpoint_dir, progress,
                 init_scale, init_mean, support=None):
    d = len(names)
    centres = torch.linspace(-1, 1, 40)
    grid = (centres[:, None] - torch.zeros(d)).T  # (d, 40)
    return types.SimpleNamespace(
        marginal1d=torch.exp(-0.5 * (grid / 0.3) ** 2),
        profile1d=-0.5 * (grid / 0.3) ** 2,
        marginal2d=torch.ones(d * (d - 1) // 2, 8, 8),
        profile2d=torch.zeros(d * (d - 1) // 2, 8, 8),
        ess=10.0, n_samples=20, timings={"train": 1.0}, best_fit=torch.zeros(d),
    )


def test_fit_with_stand_in_sampler(tmp_path, monkeypatch):
    monkeypatch.setattr(run_module, "_run_sampler", fake_sampler)
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
    monkeypatch.setattr(run_module, "_run_sampler", fake_sampler)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = CliRunner().invoke(cli, ["fit", str(runcard(tmp_path, GOOD)), "--device", "cuda",
                                      "--output", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "no CUDA GPU" in " ".join(result.output.split())


def test_no_argument_uses_embedded_default(tmp_path, monkeypatch):
    monkeypatch.setattr(run_module, "_run_sampler", fake_sampler)
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

    monkeypatch.setattr(run_module, "_run_sampler", fake_sampler)
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

    monkeypatch.setattr(run_module, "_run_sampler", fake_sampler)
    package_log = logging.getLogger("smeft_pyhf")
    before = package_log.level
    result = CliRunner().invoke(cli, ["fit", str(runcard(tmp_path, GOOD)), "--output",
                                      str(tmp_path / "out"), "--no-plots", "--quiet"])
    assert result.exit_code == 0, result.output
    assert package_log.level == before

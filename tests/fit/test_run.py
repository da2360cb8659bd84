"""run_fit with the real sampler on a tiny configuration: analytic agreement, atomic folder,
crash and resume.

The linear-Gaussian fit of the embedded example has an exact answer (the analytic solution);
the sampler runs with a few-second configuration (:data:`TINY`), so these tests check the
conversion, the intervals and the folder handling; the reduced configuration's accuracy is
checked in ``tests/fit/test_default_fit.py``. Whether the sampler ran is read from the fit's
log line "sampling N coefficients".
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from scipy.special import ndtr

from smeft_pyhf._resources import examples_dir
from smeft_pyhf.exceptions import InputError
from smeft_pyhf.fit.run import from_sampler_result, run_fit, work_dir
from smeft_pyhf.fit.runcard import load_runcard
from smeft_pyhf.results.results_file import read_results
from smeft_pyhf.sampler.config import FlowConfig, PrescaleConfig, PretrainConfig, TrainConfig
from smeft_pyhf.sampler.pipeline import SamplerConfig, run_sampler
from smeft_pyhf.sampler.profiling import ProfileConfig
from smeft_pyhf.sampler.sampling import SampleConfig

TINY = SamplerConfig(
    prescale=PrescaleConfig(n_samples=512, n_steps=50),
    flow=FlowConfig(n_blocks=2, hidden_features=16),
    pretrain=PretrainConfig(batch_size=256, epochs=1, mcmc_steps=2, burn_in_steps=5),
    train=TrainConfig(batch_size=256, n_batches=6, buffered_per_online=1, buffer_capacity=4096),
    sample=SampleConfig(n_batches=2, batch_size=10000, profile_bins_2d=5),
    profile=ProfileConfig(batch_size=4000, max_steps=40),
    range_pilot=4096,
)
"""A sampler configuration that runs the 5-coefficient example in about 3 s on one CPU."""


def linear_runcard():
    rc = load_runcard(examples_dir() / "default_runcard.yaml")
    return rc.replace(linear_only=True, theory="gaussian", analytic="always")


def fit(rc, out, **kwargs):
    """run_fit with the tiny sampler configuration."""
    return run_fit(rc, output=out, progress=False, sampler_config=TINY, **kwargs)


@pytest.fixture
def sampler_runs(caplog):
    """How many times the five steps ran so far in this test."""
    caplog.set_level(logging.INFO, logger="smeft_pyhf.fit.run")

    def count() -> int:
        return sum(r.getMessage().startswith("sampling ") for r in caplog.records)

    return count


def test_linear_gaussian_fit_reproduces_analytic(tmp_path, sampler_runs):
    out = tmp_path / "res"
    result = fit(linear_runcard(), out, plot_format="png")
    assert sampler_runs() == 1
    assert sorted(p.name for p in out.iterdir()) == [
        ".smeft-pyhf-manifest.json", "results.json", "runcard.yaml", "summary.png",
        "triangle.png", "weights.png"]
    assert not work_dir(out).exists()
    assert result.analytic is not None
    for name in result.names:
        sigma = result.analytic.std[name]
        lo, hi = result.ranges[name]
        mu = result.analytic.best_fit[name]
        # the marginal posterior is truncated by the flat prior range: its credible intervals
        # shrink by about the probability outside the range (in units of sigma)
        outside = ndtr((lo - mu) / sigma) + ndtr((mu - hi) / sigma)
        for level in ("68", "95"):
            exact = result.analytic.intervals[name][level]
            for method in ("profiled", "marginalised"):
                # TINY, seed 1: the largest deviation of an end is 0.005 sigma profiled and
                # 0.10 sigma marginalised (20k samples); bounds 4x and 3x that
                tol = 0.02 * sigma if method == "profiled" else 0.3 * sigma
                if method == "marginalised":
                    tol += 30 * outside * sigma
                iv = result.interval(name, method=method, level=level)
                assert iv.low == pytest.approx(exact.low, abs=tol), (name, method, level)
                assert iv.high == pytest.approx(exact.high, abs=tol), (name, method, level)
    back = read_results(out)
    assert set(back.timings) >= {"likelihood", "analytic", "sampler", "prescale", "pretrain",
                                 "train", "sample", "profile"}
    assert back.timings["train"] == pytest.approx(result.timings["train"], abs=1e-3)
    # every sample is counted once in the weight histogram (under- and overflow dropped)
    assert 0.99 * back.n_samples <= back.weights.counts.sum() <= back.n_samples
    assert back.ess == pytest.approx(result.ess) and 0.5 * back.n_samples < back.ess
    assert back.config["linear_only"] is True
    assert any(k.endswith("EX_tZ_13TeV.json") for k in back.provenance["inputs"])


def test_crash_leaves_no_folder_and_rerun_resumes(tmp_path, monkeypatch, sampler_runs):
    out = tmp_path / "res"
    sampled = []

    def crash(result):
        sampled.append(result)
        raise KeyboardInterrupt("simulated kill after sampling")

    with pytest.raises(KeyboardInterrupt):
        fit(linear_runcard(), out, on_sampled=crash)
    assert not out.exists()
    assert not list(tmp_path.glob(".res.*.partial"))  # no half-built results folder
    assert (work_dir(out) / "sampler_result.pt").is_file()

    # crash while writing the plots: still no results folder
    def bad_plots(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr("smeft_pyhf.results.plots.draw_all", bad_plots)
    with pytest.raises(RuntimeError, match="disk full"):
        fit(linear_runcard(), out)
    assert not out.exists()
    monkeypatch.undo()

    result = fit(linear_runcard(), out, plots=False)
    assert sampler_runs() == 1  # both reruns took the cached sampler result
    assert (out / "results.json").is_file()
    assert not work_dir(out).exists()
    assert result.ess == sampled[0].ess
    assert result.intervals == sampled[0].intervals


def test_stale_work_folder_is_discarded(tmp_path, sampler_runs):
    out = tmp_path / "res"
    with pytest.raises(KeyboardInterrupt):
        fit(linear_runcard(), out, on_sampled=lambda r: (_ for _ in ()).throw(KeyboardInterrupt()))
    # a different runcard (other seed) must not reuse the cached sampler result
    fit(linear_runcard().replace(seed=7), out, plots=False)
    assert sampler_runs() == 2


def test_existing_output_is_refused_early(tmp_path, sampler_runs):
    out = tmp_path / "res"
    out.mkdir()
    with pytest.raises(InputError, match="already exists"):
        fit(linear_runcard(), out)
    assert sampler_runs() == 0
    fit(linear_runcard(), out, plots=False, overwrite=True)
    assert (out / "results.json").is_file()


def test_from_sampler_result_turns_the_steps_into_delta_chi2_histograms():
    """A 2D Gaussian N((0.5, -1), diag(0.5, 2)^2): the profiles are exact, the marginals
    within their bin errors, pairs and ranges come from step 4."""
    mean, std = torch.tensor([0.5, -1.0]), torch.tensor([0.5, 2.0])
    res = run_sampler(lambda x: -0.5 * (((x - mean) / std) ** 2).sum(-1), names=("a", "b"),
                      config=SamplerConfig.reduced(), seed=3, progress=False)
    out = from_sampler_result(res)
    s = res.sample_result
    assert out["ranges"]["b"] == pytest.approx(tuple(s.ranges[1].tolist()))
    assert list(out["profile2d"]) == [("a", "b")] and list(out["marginal2d"]) == [("a", "b")]
    for i, name in enumerate(("a", "b")):
        prof = out["profile1d"][name]
        centres = 0.5 * (prof.edges[1:] + prof.edges[:-1])
        exact = ((centres - float(mean[i])) / float(std[i])) ** 2
        fin = np.isfinite(prof.delta_chi2)
        # profiles of a Gaussian: exact up to the float32 L-BFGS tolerance
        np.testing.assert_allclose(prof.delta_chi2[fin], exact[fin] - exact[fin].min(),
                                   atol=1e-3)
        marg = out["marginal1d"][name]
        p = np.exp(-0.5 * marg.delta_chi2)
        p_err = s.marginal1d_error[i].double().numpy() / s.marginal1d[i].double().numpy().max()
        mc = 0.5 * (marg.edges[1:] + marg.edges[:-1])
        expected = np.exp(-0.5 * ((mc - float(mean[i])) / float(std[i])) ** 2)
        ok = p_err > 0
        assert np.all(np.abs(p[ok] - expected[ok] / expected.max()) < 6 * p_err[ok] + 0.02)
    assert out["best_fit"] == pytest.approx({"a": 0.5, "b": -1.0}, abs=1e-3)
    assert out["n_samples"] == s.n_samples and out["ess"] == s.ess
    assert out["weights"].counts.sum() <= s.n_samples
    assert out["diagnostics"].profile_converged_fraction == res.profile_result.converged_fraction


# ------------------------------------------------------------------ resume safety
def copied_example(tmp_path):
    """The embedded example (runcard, database, card) copied where a test may change it."""
    import shutil

    root = tmp_path / "example"
    shutil.copytree(examples_dir(), root)
    rc = load_runcard(root / "default_runcard.yaml")
    return root, rc.replace(linear_only=True, theory="gaussian", analytic="always")


def kill_after_sampling(_result):
    raise KeyboardInterrupt("simulated kill after sampling")


def test_changed_card_prediction_table_is_recomputed(tmp_path, caplog, sampler_runs):
    import json

    root, rc = copied_example(tmp_path)
    out = tmp_path / "res"
    with pytest.raises(KeyboardInterrupt):
        fit(rc, out, on_sampled=kill_after_sampling)
    assert sampler_runs() == 1
    # the card's prediction table (EX_ttZ_13TeV, replaced as a dataset, read through the card)
    table = root / "database" / "theory" / "EX_ttZ_13TeV.json"
    data = json.loads(table.read_text())
    for order in ("LO", "NLO_QCD"):
        data[order] = {k: v if k == "SM" else [10 * x for x in v] for k, v in data[order].items()}
    table.write_text(json.dumps(data))
    result = fit(rc, out, plots=False)
    assert sampler_runs() == 2  # not "skipping the five steps"
    assert "discarding the work folder" in caplog.text
    assert str(table) in result.provenance["inputs"]
    assert not work_dir(out).exists()


def test_a_planted_pickle_in_the_work_folder_is_refused(tmp_path, caplog, sampler_runs):
    import pickle

    class Planted:
        def __reduce__(self):
            return (exec, (f"open({str(tmp_path / 'pwned')!r}, 'w').close()",))

    out = tmp_path / "res"
    with pytest.raises(KeyboardInterrupt):
        fit(linear_runcard(), out, on_sampled=kill_after_sampling)
    cache = work_dir(out) / "sampler_result.pt"
    cache.write_bytes(pickle.dumps(Planted()))
    result = fit(linear_runcard(), out, plots=False)
    assert not (tmp_path / "pwned").exists()
    assert "ignoring the unreadable cached sampler result" in caplog.text
    assert sampler_runs() == 2 and result.ess > 0


def test_a_torn_cache_is_ignored_and_an_input_error_leaves_no_work_folder(tmp_path, sampler_runs):
    out = tmp_path / "res"
    with pytest.raises(KeyboardInterrupt):
        fit(linear_runcard(), out, on_sampled=kill_after_sampling)
    cache = work_dir(out) / "sampler_result.pt"
    cache.write_bytes(cache.read_bytes()[:200])
    # an error the same run would raise again: the work folder is not kept for a resume
    from smeft_pyhf.exceptions import DataError

    def bad_inputs(_result):
        raise DataError("bad input", where="x")

    with pytest.raises(DataError):
        fit(linear_runcard(), out, on_sampled=bad_inputs)
    assert sampler_runs() == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_overwrite_refuses_foreign_folders_before_any_work(tmp_path, monkeypatch, sampler_runs):
    project = tmp_path / "project"
    project.mkdir()
    (project / "notes.txt").write_text("mine")
    monkeypatch.chdir(project)
    with pytest.raises(InputError, match="working folder"):
        run_fit(linear_runcard(), output=".", progress=False, overwrite=True)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match="did not write"):
        run_fit(linear_runcard(), output=project, progress=False, overwrite=True)
    link = tmp_path / "link"
    link.symlink_to(project)
    with pytest.raises(InputError, match="symbolic link"):
        run_fit(linear_runcard(), output=link, progress=False, overwrite=True)
    assert sampler_runs() == 0
    assert sorted(p.name for p in project.iterdir()) == ["notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "project"]
    # a results folder of an earlier fit is replaced
    out = tmp_path / "res"
    fit(linear_runcard(), out, plots=False)
    fit(linear_runcard().replace(seed=5), out, plots=False, overwrite=True)
    assert read_results(out).provenance["seed"] == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "project", "res"]


def test_a_sampler_config_beyond_any_fit_is_refused_before_allocating(tmp_path, sampler_runs):
    import dataclasses

    from smeft_pyhf.exceptions import ConfigError
    from smeft_pyhf.fit.runcard import build_sampler_config

    cfg = build_sampler_config({})
    cfg = dataclasses.replace(cfg, prescale=dataclasses.replace(cfg.prescale, n_samples=10**12))
    with pytest.raises(ConfigError, match="prescale"):
        run_fit(linear_runcard(), output=tmp_path / "res", progress=False, sampler_config=cfg)
    assert sampler_runs() == 0
    assert list(tmp_path.iterdir()) == []

"""run_fit with a stand-in sampler: analytic agreement, atomic folder, crash and resume.

The stand-in returns the exact histograms of the linear-Gaussian solution in the tensor layout
of ``smeft_pyhf.sampler.sampling.SampleResult``, so these tests check the conversion, the
intervals and the folder handling independently of the (slower) real sampler; the real sampler
runs in ``tests/fit/test_default_fit.py``.
"""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch
from scipy.special import ndtr

from smeft_pyhf._resources import examples_dir
from smeft_pyhf.exceptions import InputError
from smeft_pyhf.fit import run as run_module
from smeft_pyhf.fit.run import from_sampler_result, run_fit, work_dir
from smeft_pyhf.fit.runcard import load_runcard
from smeft_pyhf.results.results_file import gaussian_histograms, read_results


def linear_runcard():
    rc = load_runcard(examples_dir() / "default_runcard.yaml")
    return rc.replace(linear_only=True, theory="gaussian", analytic="always")


class FakeSampler:
    """Exact Gaussian 'sampler' built from the analytic solution; counts its calls."""

    def __init__(self, fail: bool = False) -> None:
        self.calls = 0
        self.fail = fail

    def __call__(self, log_prob, *, names, ranges, config, seed, checkpoint_dir, progress,
                 init_scale, init_mean, support=None):
        self.calls += 1
        if self.fail:
            raise AssertionError("the sampler must not run again after a resume")
        assert checkpoint_dir.is_dir() and checkpoint_dir.parent.name.endswith(".partial-work")
        lik = run_module.build_fit_likelihood(linear_runcard())
        sol = run_module.analytic_solution(lik, tuple(names))
        r = {n: tuple(ranges[i].tolist()) for i, n in enumerate(names)}
        h = gaussian_histograms(sol.best_fit, sol.covariance, r)
        d = len(names)
        pairs = [(i, j) for i in range(d) for j in range(i + 1, d)]
        m1 = torch.tensor(np.stack([np.exp(-0.5 * h["marginal1d"][n].delta_chi2) for n in names]))
        p1 = torch.tensor(np.stack([-0.5 * h["profile1d"][n].delta_chi2 for n in names]))[..., None]
        m2 = torch.tensor(np.stack([np.exp(-0.5 * h["marginal2d"][(names[i], names[j])].delta_chi2)
                                    for i, j in pairs]))
        p2 = torch.tensor(np.stack([-0.5 * h["profile2d"][(names[i], names[j])].delta_chi2
                                    for i, j in pairs]))
        # log_prob is callable on the module's dtype
        assert log_prob(torch.zeros(2, d, dtype=torch.float32)).shape == (2,)
        return types.SimpleNamespace(
            names=tuple(names), ranges=ranges, pairs=torch.tensor(pairs),
            marginal1d=m1 / m1.sum(-1, keepdim=True), marginal2d=m2, profile1d=p1, profile2d=p2,
            ess=900.0, n_samples=1000, log_evidence=-2.0,
            timings={"prescale": 0.1, "pretrain": 0.2, "train": 0.3, "sample": 0.4, "profile": 0.5},
            best_fit=torch.tensor([sol.best_fit[n] for n in names]),
            weight_histogram=torch.arange(62), weight_edges=torch.linspace(-8, 4, 61),
        )


def test_linear_gaussian_fit_reproduces_analytic(tmp_path, monkeypatch):
    fake = FakeSampler()
    monkeypatch.setattr(run_module, "_run_sampler", fake)
    out = tmp_path / "res"
    result = run_fit(linear_runcard(), output=out, progress=False, plot_format="png")
    assert fake.calls == 1
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
                tol = (hi - lo) / 40 * 0.05 + 0.01 * sigma
                if method == "marginalised":
                    tol += 30 * outside * sigma
                iv = result.interval(name, method=method, level=level)
                assert iv.low == pytest.approx(exact.low, abs=tol), (name, method, level)
                assert iv.high == pytest.approx(exact.high, abs=tol), (name, method, level)
    back = read_results(out)
    assert back.timings["train"] == pytest.approx(0.3)
    assert back.weights.counts.tolist() == list(range(1, 61))
    assert back.config["linear_only"] is True
    assert any(k.endswith("EX_tZ_13TeV.json") for k in back.provenance["inputs"])


def test_crash_leaves_no_folder_and_rerun_resumes(tmp_path, monkeypatch):
    monkeypatch.setattr(run_module, "_run_sampler", FakeSampler())
    out = tmp_path / "res"

    def crash(_result):
        raise KeyboardInterrupt("simulated kill after sampling")

    with pytest.raises(KeyboardInterrupt):
        run_fit(linear_runcard(), output=out, progress=False, on_sampled=crash)
    assert not out.exists()
    assert not list(tmp_path.glob(".res.*.partial"))  # no half-built results folder
    assert (work_dir(out) / "sampler_result.pt").is_file()

    # crash while writing the plots: still no results folder
    def bad_plots(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr("smeft_pyhf.results.plots.draw_all", bad_plots)
    monkeypatch.setattr(run_module, "_run_sampler", FakeSampler(fail=True))
    with pytest.raises(RuntimeError, match="disk full"):
        run_fit(linear_runcard(), output=out, progress=False)
    assert not out.exists()
    monkeypatch.undo()

    monkeypatch.setattr(run_module, "_run_sampler", FakeSampler(fail=True))
    result = run_fit(linear_runcard(), output=out, progress=False, plots=False)
    assert (out / "results.json").is_file()
    assert not work_dir(out).exists()
    assert result.ess == 900.0


def test_stale_work_folder_is_discarded(tmp_path, monkeypatch):
    fake = FakeSampler()
    monkeypatch.setattr(run_module, "_run_sampler", fake)
    out = tmp_path / "res"
    with pytest.raises(KeyboardInterrupt):
        run_fit(linear_runcard(), output=out, progress=False,
                on_sampled=lambda r: (_ for _ in ()).throw(KeyboardInterrupt()))
    # a different runcard (other seed) must not reuse the cached sampler result
    run_fit(linear_runcard().replace(seed=7), output=out, progress=False, plots=False)
    assert fake.calls == 2


def test_existing_output_is_refused_early(tmp_path, monkeypatch):
    fake = FakeSampler()
    monkeypatch.setattr(run_module, "_run_sampler", fake)
    out = tmp_path / "res"
    out.mkdir()
    with pytest.raises(InputError, match="already exists"):
        run_fit(linear_runcard(), output=out, progress=False)
    assert fake.calls == 0
    run_fit(linear_runcard(), output=out, progress=False, plots=False, overwrite=True)
    assert (out / "results.json").is_file()


def test_from_sampler_result_dict_layout():
    names = ("a", "b")
    ranges = {"a": (-1.0, 1.0), "b": (0.0, 2.0)}
    res = types.SimpleNamespace(
        marginal1d={"a": np.array([1.0, 2.0, 1.0]), "b": np.array([0.0, 1.0, 1.0])},
        profile1d={"a": np.array([-1.0, 0.0, -1.0])},
        marginal2d={("a", "b"): np.ones((2, 2))},
        best_fit={"a": 0.1, "b": 1.0}, ess=5.0, n_samples=10,
    )
    out = from_sampler_result(res, names=names, ranges=ranges)
    np.testing.assert_allclose(out["marginal1d"]["a"].delta_chi2, [2 * np.log(2), 0, 2 * np.log(2)])
    assert np.isinf(out["marginal1d"]["b"].delta_chi2[0])
    np.testing.assert_allclose(out["profile1d"]["a"].delta_chi2, [2.0, 0.0, 2.0])
    np.testing.assert_allclose(out["marginal2d"][("a", "b")].y_edges, [0.0, 1.0, 2.0])
    assert out["best_fit"] == {"a": 0.1, "b": 1.0}


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


def test_changed_card_prediction_table_is_recomputed(tmp_path, monkeypatch, caplog):
    import json

    root, rc = copied_example(tmp_path)
    fake = FakeSampler()
    monkeypatch.setattr(run_module, "_run_sampler", fake)
    out = tmp_path / "res"
    with pytest.raises(KeyboardInterrupt):
        run_fit(rc, output=out, progress=False, on_sampled=kill_after_sampling)
    assert fake.calls == 1
    # the card's prediction table (EX_ttZ_13TeV, replaced as a dataset, read through the card)
    table = root / "database" / "theory" / "EX_ttZ_13TeV.json"
    data = json.loads(table.read_text())
    for order in ("LO", "NLO_QCD"):
        data[order] = {k: v if k == "SM" else [10 * x for x in v] for k, v in data[order].items()}
    table.write_text(json.dumps(data))
    with caplog.at_level("WARNING"):
        result = run_fit(rc, output=out, progress=False, plots=False)
    assert fake.calls == 2  # not "skipping the five steps"
    assert "discarding the work folder" in caplog.text
    assert str(table) in result.provenance["inputs"]
    assert not work_dir(out).exists()


def test_a_planted_pickle_in_the_work_folder_is_refused(tmp_path, monkeypatch, caplog):
    import pickle

    class Planted:
        def __reduce__(self):
            return (exec, (f"open({str(tmp_path / 'pwned')!r}, 'w').close()",))

    fake = FakeSampler()
    monkeypatch.setattr(run_module, "_run_sampler", fake)
    out = tmp_path / "res"
    with pytest.raises(KeyboardInterrupt):
        run_fit(linear_runcard(), output=out, progress=False, on_sampled=kill_after_sampling)
    cache = work_dir(out) / "sampler_result.pt"
    cache.write_bytes(pickle.dumps(Planted()))
    with caplog.at_level("WARNING"):
        result = run_fit(linear_runcard(), output=out, progress=False, plots=False)
    assert not (tmp_path / "pwned").exists()
    assert "ignoring the unreadable cached sampler result" in caplog.text
    assert fake.calls == 2 and result.ess == 900.0


def test_a_torn_cache_is_ignored_and_an_input_error_leaves_no_work_folder(tmp_path, monkeypatch):
    fake = FakeSampler()
    monkeypatch.setattr(run_module, "_run_sampler", fake)
    out = tmp_path / "res"
    with pytest.raises(KeyboardInterrupt):
        run_fit(linear_runcard(), output=out, progress=False, on_sampled=kill_after_sampling)
    cache = work_dir(out) / "sampler_result.pt"
    cache.write_bytes(cache.read_bytes()[:200])
    # an error the same run would raise again: the work folder is not kept for a resume
    from smeft_pyhf.exceptions import DataError

    def bad_inputs(_result):
        raise DataError("bad input", where="x")

    with pytest.raises(DataError):
        run_fit(linear_runcard(), output=out, progress=False, on_sampled=bad_inputs)
    assert fake.calls == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_overwrite_refuses_foreign_folders_before_any_work(tmp_path, monkeypatch):
    fake = FakeSampler()
    monkeypatch.setattr(run_module, "_run_sampler", fake)
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
    assert fake.calls == 0
    assert sorted(p.name for p in project.iterdir()) == ["notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "project"]
    # a results folder of an earlier fit is replaced
    out = tmp_path / "res"
    run_fit(linear_runcard(), output=out, progress=False, plots=False)
    run_fit(linear_runcard().replace(seed=5), output=out, progress=False, plots=False,
            overwrite=True)
    assert read_results(out).provenance["seed"] == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "project", "res"]


def test_a_sampler_config_beyond_any_fit_is_refused_before_allocating(tmp_path, monkeypatch):
    import dataclasses

    from smeft_pyhf.exceptions import ConfigError
    from smeft_pyhf.fit.runcard import build_sampler_config

    fake = FakeSampler()
    monkeypatch.setattr(run_module, "_run_sampler", fake)
    cfg = build_sampler_config({})
    cfg = dataclasses.replace(cfg, prescale=dataclasses.replace(cfg.prescale, n_samples=10**12))
    with pytest.raises(ConfigError, match="prescale"):
        run_fit(linear_runcard(), output=tmp_path / "res", progress=False, sampler_config=cfg)
    assert fake.calls == 0
    assert list(tmp_path.iterdir()) == []

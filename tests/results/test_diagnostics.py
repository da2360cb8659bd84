"""Convergence figures: computed from a real sampler run against the kept weights, thresholds,
results.json round trip, and the warning a user sees from `smeft-pyhf fit`."""

from __future__ import annotations

import json
import math
import textwrap

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from smeft_pyhf._resources import examples_dir
from smeft_pyhf.cli import cli
from smeft_pyhf.fit.run import sampler_diagnostics
from smeft_pyhf.results.diagnostics import Diagnostics, Thresholds, assess
from smeft_pyhf.results.results_file import (
    gaussian_histograms,
    make_fit_result,
    read_results,
    write_results,
)
from smeft_pyhf.sampler.pipeline import SamplerConfig, run_sampler
from smeft_pyhf.sampler.sampling import SampleConfig
from smeft_pyhf.sampler.training import TrainConfig

COV = torch.tensor([[1.0, 0.8], [0.8, 1.0]], dtype=torch.float64) * torch.tensor([0.1, 2.0])[:, None] * torch.tensor([0.1, 2.0])


def gaussian(c):
    return torch.distributions.MultivariateNormal(torch.zeros(2, dtype=c.dtype),
                                                  COV.to(c.dtype)).log_prob(c)


def test_figures_equal_those_recomputed_from_the_kept_weights():
    # a deliberately short training: uneven weights, so the figures are not trivial
    base = SamplerConfig.reduced()
    cfg = base.replace(
        train=TrainConfig(batch_size=256, n_batches=2, buffered_per_online=1, buffer_capacity=4096),
        sample=SampleConfig(n_batches=2, batch_size=4000, keep_samples=8000, profile_bins_2d=10),
    )
    res = run_sampler(gaussian, names=("a", "b"), ranges=torch.tensor([[-0.5, 0.5], [-10.0, 10.0]],
                      dtype=torch.float64), config=cfg, seed=3, progress=False)
    diag = sampler_diagnostics(res)
    s = res.sample_result
    x = s.samples.double().numpy()
    w = np.exp(s.samples_log_weight.double().numpy() - s.max_log_weight)
    assert x.shape[0] == s.n_samples == 8000
    assert diag.ess_fraction == pytest.approx(w.sum() ** 2 / (w**2).sum() / len(w), rel=1e-6)
    assert diag.max_weight_share == pytest.approx(w.max() / w.sum(), rel=1e-6)
    ranges = s.ranges.double().numpy()
    bins = s.marginal1d.shape[1]
    for i, name in enumerate(("a", "b")):
        index = np.floor((x[:, i] - ranges[i, 0]) / (ranges[i, 1] - ranges[i, 0]) * bins)
        inside = (index >= 0) & (index < bins)
        wi, bi = w[inside] / w[inside].sum(), index[inside]
        cdf = np.cumsum([wi[bi == b].sum() for b in range(bins)])
        n_eff = []
        for k in (int(np.searchsorted(cdf, 0.025)), int(np.searchsorted(cdf, 0.975)) - 1):
            f = cdf[k]
            n_eff.append(f * (1 - f) / np.sum(wi**2 * ((bi <= k) - f) ** 2))
        assert diag.marginal_ess[name] == pytest.approx(min(n_eff), rel=1e-4)
        assert diag.marginal_ess[name] < 8000
    assert 0.0 <= diag.profile_converged_fraction <= 1.0
    assert diag.profile_converged_fraction == res.profile_result.converged_fraction


def test_thresholds_name_each_figure_and_what_to_do():
    good = Diagnostics(ess_fraction=0.5, max_weight_share=1e-5, marginal_ess={"a": 5e4},
                       profile_converged_fraction=1.0, outside_fraction=0.0)
    assert assess(good) == []
    bad = good._replace(ess_fraction=0.0001, max_weight_share=0.2,
                        marginal_ess={"a": 5e4, "b": 40.0, "c": 900.0},
                        profile_converged_fraction=0.5, outside_fraction=0.1,
                        at_prior_edge={"a": ("high",)})
    warnings = {w.figure: w for w in assess(bad)}
    assert set(warnings) == set(Thresholds._fields) | {"at_prior_edge"}
    assert warnings["marginal_ess"].coefficients == ("b", "c")
    assert warnings["marginal_ess"].value == 40.0
    assert "--device cuda" in warnings["ess_fraction"].message()
    assert "max_steps" in warnings["profile_converged_fraction"].message()
    # NaN is never read as a pass
    assert [w.figure for w in assess(good._replace(ess_fraction=math.nan))] == ["ess_fraction"]


def test_diagnostics_round_trip_and_prior_edge_flags(tmp_path):
    ranges = {"a": (-1.0, 1.0), "b": (-1.0, 1.0)}
    # b's posterior is pressed against its upper prior edge
    hists = gaussian_histograms({"a": 0.0, "b": 0.9}, np.diag([0.04, 0.09]), ranges)
    moved = {"end": 0.99, "mass_weights": 0.011, "mass_chains": 0.031,
             "mass_chains_error": 0.002, "z": 8.9, "shift": 0.31}
    chains = {"shift_threshold": 0.1, "largest_shift": {"a": 0.02, "b": 0.31},
              "flagged": {"b": {"high": moved}}}
    diag = Diagnostics(ess_fraction=0.02, max_weight_share=math.inf,
                       marginal_ess={"a": 1e5, "b": 12.0}, profile_converged_fraction=math.nan,
                       chain_check=chains)
    res = make_fit_result(names=("a", "b"), ranges=ranges, best_fit={"a": 0.0, "b": 0.9},
                          diagnostics=diag, **hists)
    assert res.diagnostics.at_prior_edge == {"b": ("high",)}
    write_results(res, tmp_path / "results.json")
    data = json.loads((tmp_path / "results.json").read_text())
    assert {w["figure"] for w in data["diagnostics"]["warnings"]} == {
        "ess_fraction", "max_weight_share", "marginal_ess", "profile_converged_fraction",
        "at_prior_edge", "chain_check"}
    back = read_results(tmp_path / "results.json")
    assert back.diagnostics.max_weight_share == math.inf
    assert math.isnan(back.diagnostics.profile_converged_fraction)
    assert back.diagnostics.marginal_ess == {"a": 1e5, "b": 12.0}
    assert back.warnings() == res.warnings()
    assert back.diagnostics.chain_check == chains
    moved_warning = next(w for w in back.warnings() if w.figure == "chain_check")
    assert (moved_warning.coefficients, moved_warning.value) == (("b",), 0.31)
    # the plots mark b's panels
    from smeft_pyhf.results.plots import _flags

    marks, banner = _flags(back)
    assert marks["b"] == ["noisy marginal", "end moved by chains", "at prior edge"]
    assert "a" not in marks
    assert [b.split()[0] for b in banner] == [
        "ess_fraction", "max_weight_share", "profile_converged_fraction"]


@pytest.mark.slow
def test_an_unconverged_fit_says_so(tmp_path):
    """The embedded default with a training cut to one batch: the CLI warns, the file keeps
    the warnings, and the plots mark the panels."""
    rc = tmp_path / "rc.yaml"
    text = (examples_dir() / "default_runcard.yaml").read_text()
    text = text.replace("database: database", f"database: {examples_dir() / 'database'}")
    text = text.replace("card: cards/", f"card: {examples_dir() / 'cards'}/")
    text = text.split("\nsampler:\n")[0] + "\n" + textwrap.dedent("""\
        sampler:
          prescale: {n_samples: 256, n_steps: 30}
          flow: {n_blocks: 2, hidden_features: 16}
          pretrain: {epochs: 1, mcmc_steps: 2}
          train: {n_batches: 1, batch_size: 128, buffered_per_online: 1}
          sample: {n_batches: 1, batch_size: 4000, profile_bins_2d: 8}
          profile: {max_steps: 3}
          chain_check: {n_chains: 64, n_iterations: 12, burn_in: 4}
        output: out
        """)
    rc.write_text(text)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        cli, ["fit", str(rc), "-o", str(out), "--format", "png", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "convergence: ESS/N" in result.stdout
    assert "largest end shift by the chain check" in result.stdout
    assert "WARNING: this fit has not converged" in result.stderr
    back = read_results(out)
    figures = {w.figure for w in back.warnings()}
    assert "profile_converged_fraction" in figures  # 3 L-BFGS steps cannot converge
    assert figures & {"ess_fraction", "max_weight_share", "marginal_ess"}
    assert back.diagnostics.ess_fraction == pytest.approx(back.ess / back.n_samples)
    assert set(back.diagnostics.chain_check["largest_shift"]) == set(back.names)
    assert back.diagnostics.chain_check["n_chains"] == 64

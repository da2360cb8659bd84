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
from smeft_pyhf.results.diagnostics import Diagnostics, Thresholds, assess, heavy_weights
from smeft_pyhf.results.results_file import (
    gaussian_histograms,
    make_fit_result,
    read_results,
    write_results,
)
from smeft_pyhf.sampler.pipeline import SamplerConfig, run_sampler
from smeft_pyhf.sampler.sampling import N_HEAVY, SampleConfig, sample_and_histogram
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
                        at_prior_edge={"a": ("high",)},
                        heavy_weights={"n": 20, "share": 0.01, "mean_z": {"a": 0.3, "b": -2.1}},
                        mean_force={"tails": {"c": {"high": {"end_error": 0.25}}}})
    warnings = {w.figure: w for w in assess(bad)}
    assert (warnings["mean_force"].coefficients, warnings["mean_force"].value) == (("c",), 0.25)
    assert "n_chains" in warnings["mean_force"].message()
    assert set(warnings) == (set(Thresholds._fields) - {"heavy_weights_share", "mean_force_end_error"}
                             | {"at_prior_edge", "mean_force"})
    assert (warnings["heavy_weights"].coefficients, warnings["heavy_weights"].value) == (("b",), -2.1)
    # heavy samples that hold little weight do not count
    light = good._replace(heavy_weights={"n": 20, "share": 1e-3, "mean_z": {"a": 3.0}})
    assert assess(light) == []
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
                       chain_check=chains,
                       heavy_weights={"n": 20, "share": 0.004, "mean_z": {"a": 0.1, "b": 2.6}})
    res = make_fit_result(names=("a", "b"), ranges=ranges, best_fit={"a": 0.0, "b": 0.9},
                          diagnostics=diag, **hists)
    assert res.diagnostics.at_prior_edge == {"b": ("high",)}
    write_results(res, tmp_path / "results.json")
    data = json.loads((tmp_path / "results.json").read_text())
    assert {w["figure"] for w in data["diagnostics"]["warnings"]} == {
        "ess_fraction", "max_weight_share", "marginal_ess", "profile_converged_fraction",
        "at_prior_edge", "chain_check", "heavy_weights"}
    back = read_results(tmp_path / "results.json")
    assert back.diagnostics.max_weight_share == math.inf
    assert math.isnan(back.diagnostics.profile_converged_fraction)
    assert back.diagnostics.marginal_ess == {"a": 1e5, "b": 12.0}
    assert back.warnings() == res.warnings()
    assert back.diagnostics.chain_check == chains
    assert back.diagnostics.heavy_weights == res.diagnostics.heavy_weights
    moved_warning = next(w for w in back.warnings() if w.figure == "chain_check")
    assert (moved_warning.coefficients, moved_warning.value) == (("b",), 0.31)
    # the plots mark b's panels
    from smeft_pyhf.results.plots import _flags

    marks, banner = _flags(back)
    assert marks["b"] == ["noisy marginal", "end moved by chains", "heavy weights in tail",
                          "at prior edge"]
    assert "a" not in marks
    assert [b.split()[0] for b in banner] == [
        "ess_fraction", "max_weight_share", "profile_converged_fraction"]
    # b's upper tail rebuilt from its mean force: the warnings about that tail's weights go,
    # the summary line and the corner plot say where the tail came from
    tail = {"end_weights": 0.99, "end_mean_force": 1.0, "end_error": 0.03, "end_lag": 0.01}
    rebuilt = make_fit_result(names=("a", "b"), ranges=ranges, best_fit={"a": 0.0, "b": 0.9},
                              diagnostics=diag._replace(mean_force={
                                  "n_chains": 128, "tails": {"b": {"high": tail}}}), **hists)
    write_results(rebuilt, tmp_path / "rebuilt.json")
    back = read_results(tmp_path / "rebuilt.json")
    assert back.diagnostics.replaced_tails() == {("b", "high")}
    assert {w.figure for w in back.warnings()} == {
        "ess_fraction", "max_weight_share", "marginal_ess", "profile_converged_fraction",
        "at_prior_edge"}
    from smeft_pyhf.cli.fit import convergence_lines

    assert "b's high tail from its mean force (95% end 0.99 -> 1 +- 0.03 sd)" in (
        convergence_lines(back))
    import matplotlib.pyplot as plt

    from smeft_pyhf.results.plots import triangle_plot

    fig = triangle_plot(back)
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    plt.close(fig)
    assert "high tail from mean force" in texts


def _shelf(c):
    """x0: 0.9 N(0, 1) + 0.1 N(3, 0.7^2), a shelf on the upper side; x1: N(0, 1)."""
    n0, n3 = torch.distributions.Normal(0.0, 1.0), torch.distributions.Normal(3.0, 0.7)
    x0 = torch.logaddexp(math.log(0.9) + n0.log_prob(c[:, 0]), math.log(0.1) + n3.log_prob(c[:, 0]))
    return x0 + n0.log_prob(c[:, 1])


SHELF_MEAN, SHELF_SD = 0.3, math.sqrt(0.9 + 0.1 * 0.49 + 0.9 * 0.09 + 0.1 * 2.7**2)


def _heavy(draw, seed):
    ranges = torch.tensor([[-6.0, 8.0], [-6.0, 6.0]])
    s = sample_and_histogram(draw, _shelf, ranges=ranges, config=SampleConfig(
        n_batches=4, batch_size=10_000, histograms_2d=False), generator=torch.Generator().manual_seed(seed))
    return s, heavy_weights(s.heavy_points.numpy(), s.heavy_log_weight.numpy(),
                            log_total=s.log_evidence + math.log(s.n_samples),
                            mean=np.array([SHELF_MEAN, 0.0]), std=np.array([SHELF_SD, 1.0]),
                            names=["x0", "x1"])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_heavy_weights_find_the_tail_the_proposal_misses(seed):
    """A Gaussian proposal at the shelf's mean, 1.1 wide in x0 (the shelf's sd is 1.33), is too
    light on the shelf's far side: the heaviest samples sit there (x0 well above its mean); a
    proposal that is exact in x0 and wider in x1 leaves them where chance puts them."""
    gauss = torch.distributions.Normal(torch.tensor([SHELF_MEAN, 0.0]), torch.tensor([1.1, 1.0]))

    def light_shelf(n, generator):
        x = gauss.loc + gauss.scale * torch.randn(n, 2, generator=generator)
        return x, gauss.log_prob(x).sum(-1)

    s, heavy = _heavy(light_shelf, seed)
    # the kept samples are the largest weights of all 40k
    assert s.heavy_log_weight.shape == (N_HEAVY,) and s.heavy_points.shape == (N_HEAVY, 2)
    assert float(s.heavy_log_weight[0]) == s.max_log_weight
    assert bool((s.heavy_log_weight[:-1] >= s.heavy_log_weight[1:]).all())
    # the weight p / q peaks on the shelf's far side, near x0 = 4.3 (3 sd above the mean)
    assert heavy["mean_z"]["x0"] > 2.0
    assert heavy["share"] > 2 * Thresholds().heavy_weights_share  # 1 % (seeds 0-2)
    assert abs(heavy["mean_z"]["x1"]) < 1.0  # 20 points: spread about 0.3 by chance
    warning = next(w for w in assess(Diagnostics(heavy_weights=heavy)) if w.figure == "heavy_weights")
    assert warning.coefficients == ("x0",) and warning.value > 2.0

    wide = torch.distributions.Normal(0.0, 1.3)

    def exact_x0(n, generator):
        shelf = torch.rand(n, generator=generator) < 0.1
        x0 = torch.where(shelf, 3.0 + 0.7 * torch.randn(n, generator=generator),
                         torch.randn(n, generator=generator))
        x1 = 1.3 * torch.randn(n, generator=generator)
        x = torch.stack([x0, x1], 1)
        return x, _shelf(x) - torch.distributions.Normal(0.0, 1.0).log_prob(x1) + wide.log_prob(x1)

    s, heavy = _heavy(exact_x0, seed)
    # the heaviest weights sit at x1 = 0, where N(0, 1) / N(0, 1.3) peaks; x0 as drawn
    assert abs(heavy["mean_z"]["x0"]) < 1.0 and abs(heavy["mean_z"]["x1"]) < 0.5
    assert heavy["share"] < Thresholds().heavy_weights_share  # nearly equal weights
    assert [w.figure for w in assess(Diagnostics(heavy_weights=heavy))] == []


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
    assert "heaviest weights" in result.stdout
    assert "WARNING: this fit has not converged" in result.stderr
    back = read_results(out)
    figures = {w.figure for w in back.warnings()}
    assert "profile_converged_fraction" in figures  # 3 L-BFGS steps cannot converge
    assert figures & {"ess_fraction", "max_weight_share", "marginal_ess"}
    assert back.diagnostics.ess_fraction == pytest.approx(back.ess / back.n_samples)
    assert set(back.diagnostics.chain_check["largest_shift"]) == set(back.names)
    assert back.diagnostics.chain_check["n_chains"] == 64
    assert back.diagnostics.heavy_weights["n"] == 20
    assert set(back.diagnostics.heavy_weights["mean_z"]) == set(back.names)

"""The full-likelihood checks: the pyhf ``smeft`` custom modifier, profile scans, card comparison."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyhf
import pytest
import yaml

from smeft_pyhf._resources import shipped_dir
from smeft_pyhf.checks.card_vs_full import compare_card_vs_full, intervals_from_curve
from smeft_pyhf.checks.full_likelihood import MODIFIER_SET, full_likelihood_model, smeft_factor
from smeft_pyhf.checks.profile_scan import fit_full, profile_scan_full
from smeft_pyhf.exceptions import ConfigError, WorkspaceError

TOY = {
    "channels": [{"name": "sr", "samples": [
        {"name": "sig", "data": [5.0, 2.0], "modifiers": [
            {"name": "mu", "type": "normfactor", "data": None}]},
        {"name": "bkg", "data": [10.0, 4.0], "modifiers": [
            {"name": "bkg_norm", "type": "normsys", "data": {"hi": 1.1, "lo": 0.9}}]}]}],
    "observations": [{"name": "sr", "data": [16.0, 7.0]}],
    "measurements": [{"name": "m", "config": {"poi": "mu", "parameters": []}}],
    "version": "1.0.0",
}


def _small_workspace() -> pyhf.Workspace:
    return pyhf.Workspace(json.loads((shipped_dir("workspaces") / "example_ttZ_like.json")
                                     .read_text()))


def _mapped(model_from: pyhf.pdf.Model, pars: np.ndarray, model_to: pyhf.pdf.Model,
            extra: dict[str, float]) -> np.ndarray:
    """Parameters of ``model_from`` re-ordered for ``model_to`` (``extra`` for new names)."""
    out = np.asarray(model_to.config.suggested_init(), dtype=np.float64)
    for name in model_to.config.par_order:
        target = model_to.config.par_slice(name)
        if name in extra:
            out[target] = extra[name]
        else:
            out[target] = pars[model_from.config.par_slice(name)]
    return out


def test_toy_yields_and_logpdf() -> None:
    model, data = full_likelihood_model(
        TOY, coefficients=["ca", "cb"], linear={"Oa": 0.5, "cb": -0.2},
        quadratic={"Oa*Oa": 0.25, "Oa*Ob": 0.1, "cb*cb": 0.05})
    assert model.config.poi_name == "ca"
    assert model.config.suggested_fixed()[model.config.par_slice("mu").start]
    assert data == [16.0, 7.0, *model.config.auxdata]
    pars = np.asarray(model.config.suggested_init(), dtype=np.float64)
    c = np.array([1.5, -2.0])
    pars[model.config.par_slice("ca")] = c[0]
    pars[model.config.par_slice("cb")] = c[1]
    mu = smeft_factor(c, [0.5, -0.2], [[0.25, 0.1], [0.0, 0.05]])
    assert mu == pytest.approx(1 + 0.75 + 0.4 + 0.5625 - 0.3 + 0.2)
    by_sample = model.main_model.expected_data(pars, return_by_sample=True)
    samples = model.config.samples
    np.testing.assert_allclose(by_sample[samples.index("sig")], mu * np.array([5.0, 2.0]))
    np.testing.assert_allclose(by_sample[samples.index("bkg")], [10.0, 4.0])
    # The same as the original model with its POI at mu(c).
    original = pyhf.Workspace(TOY).model()
    ref_pars = np.asarray(original.config.suggested_init(), dtype=np.float64)
    ref_pars[original.config.poi_index] = mu
    assert model.logpdf(pars, data)[0] == pytest.approx(
        original.logpdf(ref_pars, pyhf.Workspace(TOY).data(original))[0], rel=1e-12)


def test_batched_model_matches_unbatched() -> None:
    model, data = full_likelihood_model(TOY, coefficients=["ca"], linear={"ca": 0.5},
                                        quadratic={"ca*ca": 0.25})

    batched = pyhf.Model(model.spec, modifier_set=MODIFIER_SET, validate=False, poi_name="ca",
                         batch_size=3)
    pars = np.tile(np.asarray(model.config.suggested_init(), dtype=np.float64), (3, 1))
    pars[:, model.config.par_slice("ca")] = np.array([[-1.0], [0.0], [2.0]])
    pars[:, model.config.par_slice("bkg_norm")] = np.array([[0.3], [-0.5], [1.0]])
    np.testing.assert_allclose(batched.logpdf(pars, data),
                               [model.logpdf(p, data)[0] for p in pars], rtol=1e-12)


def test_profile_scan_equals_fixed_mu_fits_of_original_model() -> None:
    """At each c, the profile equals a pyhf fixed-POI fit of the original model at mu(c)."""
    ws = _small_workspace()
    model, data = full_likelihood_model(ws, coefficients=["ctG"], linear={"OtG": 0.3},
                                        quadratic={"OtG*OtG": 0.2})
    values = np.array([-0.5, 0.2, 1.0])
    scan = profile_scan_full(model, data, "ctG", values, tolerance=0.01)
    assert np.all(scan.valid)
    original = ws.model()
    orig_data = ws.data(original)
    best = pyhf.infer.mle.fit(orig_data, original, return_fitted_val=True)[1]
    for value, twice_nll in zip(values, scan.twice_nll, strict=True):
        mu = smeft_factor([value], [0.3], [[0.2]])
        ref = pyhf.infer.mle.fixed_poi_fit(mu, orig_data, original, return_fitted_val=True)[1]
        assert twice_nll == pytest.approx(float(ref), abs=2e-3)
    # The global minimum of the SMEFT model is that of the original model (mu_hat is reachable).
    assert scan.twice_nll_min == pytest.approx(float(best), abs=2e-3)
    assert np.all(scan.twice_nll_delta >= -1e-6)


def test_errors() -> None:
    with pytest.raises(WorkspaceError, match="unknown signal samples"):
        full_likelihood_model(TOY, coefficients=["ca"], linear={"ca": 1.0},
                              signal_samples=["nope"])
    with pytest.raises(WorkspaceError, match="already workspace parameters"):
        full_likelihood_model(TOY, coefficients=["bkg_norm"], linear={})
    with pytest.raises(ConfigError, match="no Wilson coefficients"):
        full_likelihood_model(TOY, coefficients=[], linear={})
    model, data = full_likelihood_model(TOY, coefficients=["ca"], linear={"ca": 1.0})
    with pytest.raises(ConfigError, match="unknown parameter"):
        profile_scan_full(model, data, "cz", [0.0])


def test_intervals_two_segments_and_open_ends() -> None:
    x = np.linspace(-2, 2, 4001)
    delta = 4 * (x**2 - 1) ** 2  # minima at +-1
    i68, i95 = intervals_from_curve(x, delta)
    assert len(i68.segments) == 2
    np.testing.assert_allclose(i68.segments, [[-np.sqrt(1.5), -np.sqrt(0.5)],
                                              [np.sqrt(0.5), np.sqrt(1.5)]], atol=1e-5)
    assert not i68.open_low and not i68.open_high
    np.testing.assert_allclose(i95.segments, [[-np.sqrt(1.98), -np.sqrt(0.02)],
                                              [np.sqrt(0.02), np.sqrt(1.98)]], atol=1e-3)
    assert i68.width == pytest.approx(2 * (np.sqrt(1.5) - np.sqrt(0.5)), abs=1e-5)
    x = np.linspace(-1.1, 2.0, 3101)
    i68, _ = intervals_from_curve(x, 4 * (x**2 - 1) ** 2)
    assert i68.open_low and not i68.open_high and i68.segments[0][0] == -1.1


# ---------------------------------------------------------------------------- real data
@pytest.fixture(scope="module")
def schannel(shared_data: Path) -> dict:
    path = shared_data / "atlas_top_schannel_13TeV" / "workspace.json"
    theory = json.loads((shared_data / "smefit_database" / "theory" /
                         "ATLAS_t_sch_13TeV_inc.json").read_text())
    sm = theory["best_sm"][0]
    nlo = theory["NLO_QCD"]
    return {"ws": pyhf.Workspace(json.loads(path.read_text())), "path": path,
            "lin": {"O13qq": nlo["O13qq"][0] / sm, "OtW": nlo["OtW"][0] / sm},
            "quad": {"O13qq*O13qq": nlo["O13qq*O13qq"][0] / sm,
                     "OtW*OtW": nlo["OtW*OtW"][0] / sm,
                     "OtW*O13qq": nlo["OtW*O13qq"][0] / sm}}


@pytest.mark.shared_data
def test_schannel_c0_equals_original(schannel: dict) -> None:
    ws = schannel["ws"]
    model, data = full_likelihood_model(ws, coefficients=["c13qq", "ctW"],
                                        linear=schannel["lin"], quadratic=schannel["quad"])
    original = ws.model()
    orig_data = ws.data(original)
    assert model.config.npars == original.config.npars + 2
    np.testing.assert_array_equal(data, orig_data)
    rng = np.random.default_rng(1)
    init = np.asarray(original.config.suggested_init(), dtype=np.float64)
    for _ in range(3):
        pars = init + 0.3 * rng.standard_normal(init.size)
        pars[original.config.poi_index] = 1.0
        pars[original.config.par_slice("lumi")] = 1.0
        mapped = _mapped(original, pars, model, {"c13qq": 0.0, "ctW": 0.0})
        assert model.logpdf(mapped, data)[0] == original.logpdf(pars, orig_data)[0]


@pytest.mark.shared_data
def test_schannel_signal_scaled_by_theory_ratio(schannel: dict) -> None:
    ws = schannel["ws"]
    model, _data = full_likelihood_model(ws, coefficients=["c13qq", "ctW"],
                                        linear=schannel["lin"], quadratic=schannel["quad"])
    original = ws.model()
    init = np.asarray(original.config.suggested_init(), dtype=np.float64)
    c = {"c13qq": -0.3, "ctW": 0.7}
    mapped = _mapped(original, init, model, c)
    lin, quad = schannel["lin"], schannel["quad"]
    mu = (1 + lin["O13qq"] * c["c13qq"] + lin["OtW"] * c["ctW"]
          + quad["O13qq*O13qq"] * c["c13qq"] ** 2 + quad["OtW*OtW"] * c["ctW"] ** 2
          + quad["OtW*O13qq"] * c["c13qq"] * c["ctW"])
    new = model.main_model.expected_data(mapped, return_by_sample=True)
    old = original.main_model.expected_data(init, return_by_sample=True)
    for k, sample in enumerate(original.config.samples):
        factor = mu if sample == "tb" else 1.0
        np.testing.assert_allclose(new[model.config.samples.index(sample)], factor * old[k],
                                   rtol=1e-12)


@pytest.mark.shared_data
@pytest.mark.slow
def test_schannel_minimum_where_mu_equals_mu_hat(schannel: dict) -> None:
    """The global fit in c13qq lands where mu(c) = mu_hat = 0.793 with 2NLL = 390.78."""
    ws = schannel["ws"]
    lin = schannel["lin"]["O13qq"]
    quad = schannel["quad"]["O13qq*O13qq"]
    model, data = full_likelihood_model(ws, coefficients=["c13qq"], linear=schannel["lin"],
                                        quadratic=schannel["quad"])
    fit = fit_full(model, data)
    c_hat = fit.bestfit[model.config.par_slice("c13qq")][0]
    assert 1 + lin * c_hat + quad * c_hat**2 == pytest.approx(0.793, abs=0.01)
    assert fit.twice_nll == pytest.approx(390.780, abs=0.02)


def _fake_database(root: Path, linear: float, quadratic: float) -> Path:
    (root / "commondata").mkdir(parents=True)
    (root / "theory").mkdir()
    (root / "commondata" / "TOY_ttZ.yaml").write_text(yaml.safe_dump({
        "dataset_name": "TOY_ttZ", "num_data": 1, "num_sys": 0, "data_central": 1.0,
        "statistical_error": 0.1}))
    (root / "theory" / "TOY_ttZ.json").write_text(json.dumps({
        "best_sm": [2.0], "NLO_QCD": {"SM": [2.0], "OtG": [2.0 * linear],
                                      "OtG*OtG": [2.0 * quadratic]}}))
    return root


def minimal_card(*, name: str, poi: str, dataset: str, best: float, up: float, down: float,
                 stat: float, systematics: dict[str, float]) -> dict:
    """A schema-valid hand-written measurement card (no impacts, no provenance details)."""

    def entry(value: float) -> dict[str, float]:
        return {"absolute": value, "relative": value / abs(best)}

    return {
        "card_version": 1, "name": name, "experiment": "ATLAS",
        "observable": {"poi": poi, "kind": "signal_strength", "process": "ttZ"},
        "prediction": {"smefit_dataset": dataset, "replaces": []},
        "measurement": {"best_fit": best, "total": {"up": up, "down": down,
                                                     "symmetric": 0.5 * (up + down)},
                        "stat": entry(stat)},
        "systematics": {k: entry(v) for k, v in systematics.items()},
        "theory": {}, "parameters": {},
        "diagnostics": {"minimizer": "minuit", "fit_valid": True, "hesse_valid": True,
                        "twice_nll": 0.0},
        "provenance": {"input": "hand-written", "input_sha256": "0" * 64,
                       "created": "2026-11-23T00:00:00Z", "versions": {}},
    }


def _small_card(path: Path, *, best: float, up: float, down: float) -> Path:
    path.write_text(yaml.safe_dump(minimal_card(
        name="TOY_ttZ_card", poi="mu_ttZ", dataset="TOY_ttZ", best=best, up=up, down=down,
        stat=0.6 * down, systematics={"Jets": 0.8 * down})))
    return path


def test_compare_card_vs_full_small_workspace(tmp_path: Path) -> None:
    ws = _small_workspace()
    original = ws.model()
    fit = pyhf.infer.mle.fit(ws.data(original), original)
    mu_hat = float(fit[original.config.poi_index])
    db = _fake_database(tmp_path / "db", 0.3, 0.2)
    card = _small_card(tmp_path / "card.yaml", best=mu_hat, up=0.4, down=0.3)
    values = np.linspace(-1.0, 1.0, 5)
    result = compare_card_vs_full(ws, card, coefficient="ctG", values=values, database=db,
                                  card_modes=("total", "gaussian"))
    assert result.linear == pytest.approx(0.3) and result.quadratic == pytest.approx(0.2)
    np.testing.assert_allclose(result.mu, 1 + 0.3 * values + 0.2 * values**2)
    r = result.mu - mu_hat
    np.testing.assert_allclose(result.cards["total"], (r / np.where(r > 0, 0.4, 0.3)) ** 2,
                               atol=1e-8)
    sigma = np.hypot(0.6 * 0.3, 0.8 * 0.3)
    np.testing.assert_allclose(result.cards["gaussian"], (r / sigma) ** 2, rtol=1e-6, atol=1e-8)
    assert set(result.intervals) == {"full", "card:total", "card:gaussian"}
    assert np.all(result.full >= -1e-6)
    assert result.full_scan.valid.all()
    with pytest.raises(ConfigError, match="unknown card modes"):
        compare_card_vs_full(ws, card, coefficient="ctG", values=values, database=db,
                             card_modes=("magic",))

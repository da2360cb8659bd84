"""Timings of the full-likelihood mode and of the Poisson counting likelihood.

Run from the repository root (needs ../shared/data):

    .venv/bin/python benchmarks/bench_full_likelihood.py [--points 5]

Prints: logpdf time of the s-channel workspace with and without the ``smeft`` modifier, the
global fit, a profile scan in c13qq (one iminuit object, warm values and covariance), and the
batched PoissonCounting evaluation (both methods) on 10^5 points.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pyhf
import torch

from smeft_pyhf.checks.full_likelihood import full_likelihood_model
from smeft_pyhf.checks.profile_scan import fit_full, profile_scan_full
from smeft_pyhf.likelihood.poisson import PoissonCounting

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--points", type=int, default=5)
    args = parser.parse_args()

    ws = pyhf.Workspace(json.loads(
        (DATA / "atlas_top_schannel_13TeV" / "workspace.json").read_text()))
    theory = json.loads((DATA / "smefit_database" / "theory" /
                         "ATLAS_t_sch_13TeV_inc.json").read_text())
    sm = theory["best_sm"][0]
    lin = {"O13qq": theory["NLO_QCD"]["O13qq"][0] / sm}
    quad = {"O13qq*O13qq": theory["NLO_QCD"]["O13qq*O13qq"][0] / sm}
    model, data = full_likelihood_model(ws, coefficients=["c13qq"], linear=lin, quadratic=quad)
    original = ws.model()
    orig_data = ws.data(original)
    for label, m, d in (("original", original, orig_data), ("smeft modifier", model, data)):
        pars = np.asarray(m.config.suggested_init(), dtype=np.float64)
        m.logpdf(pars, d)
        start = time.perf_counter()
        for _ in range(200):
            m.logpdf(pars, d)
        print(f"logpdf ({label}): {(time.perf_counter() - start) / 200 * 1e3:.3f} ms")

    fit = fit_full(model, data)
    print(f"global fit: 2NLL {fit.twice_nll:.3f}, {fit.n_evaluations} calls, {fit.seconds:.1f} s")
    c_hat = fit.bestfit[model.config.par_slice("c13qq")][0]
    values = np.linspace(c_hat - 0.3, c_hat + 0.3, args.points)
    scan = profile_scan_full(model, data, "c13qq", values, global_fit=fit)
    print(f"scan of {args.points} points: {scan.seconds:.1f} s "
          f"({scan.seconds / args.points:.1f} s per point incl. the re-minimisation)")

    for method in ("profiled", "sfitter"):
        counting = PoissonCounting(torch.full((8,), 120.0), torch.full((8,), 400.0),
                                   transfer=4.0, sigma_theo=3.0, sigma_syst=5.0, method=method)
        signal = torch.rand(100_000, 8, dtype=torch.float64) * 40
        counting.chi2(signal)
        start = time.perf_counter()
        for _ in range(5):
            counting.chi2(signal)
        print(f"PoissonCounting[{method}] 1e5 x 8 channels: "
              f"{(time.perf_counter() - start) / 5 * 1e3:.1f} ms")


if __name__ == "__main__":
    main()

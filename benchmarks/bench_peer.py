"""smeft-pyhf against SMEFiT's nested sampling (`smefit NS`) on the same posterior, same machine.

Runs ``smeft-pyhf fit RUNCARD`` (default ``configs/top6_quad_smefit_peer.yaml``) and, unless
``--skip-smefit``, ``smefit NS`` on a SMEFiT runcard written from the same inputs (datasets,
order, quadratic, t0 and theory covariance, the same flat priors), and prints per side the wall
time of the whole command (imports and data loading included) and, per coefficient, the ends of
the marginalised 95 % highest-density region with their quantile noise

    sd(end) = sqrt(F (1 - F) / n_eff) / f(end)

(``F``: the posterior mass below the end, ``f``: the density there, ``n_eff``: our marginal
effective sample size from the results' diagnostics; SMEFiT's number of equal-weight posterior
samples, an upper bound on its effective size; the SMEFiT runcard asks for all of UltraNest's
samples, not smefit's default first 10000). Both densities come from histograms with the
same bins.

``--load N`` runs our fit again beside N CPU-bound busy processes and prints the slow-down.

SMEFiT is a separate install (``python -m venv /tmp/smefit-venv && /tmp/smefit-venv/bin/pip
install smefit==4.0.0``), passed with ``--smefit /tmp/smefit-venv/bin/smefit``.

    python benchmarks/bench_peer.py --smefit /tmp/smefit-venv/bin/smefit
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from smeft_pyhf.fit.runcard import load_runcard
from smeft_pyhf.formats.coefficients import operator_name
from smeft_pyhf.results.intervals import marginalised_interval
from smeft_pyhf.results.results_file import read_results

REPO = Path(__file__).resolve().parents[1]


def _busy(stop_at: float) -> None:
    x = 0.0
    while time.time() < stop_at:
        x += 1.0


def run_ours(runcard: Path, out: Path, seed: int | None, load: int = 0) -> float:
    """Wall seconds of ``smeft-pyhf fit`` (beside ``load`` busy processes)."""
    cmd = [str(Path(sys.executable).parent / "smeft-pyhf"), "fit", str(runcard), "-o", str(out),
           "--no-plots", "--quiet", "--overwrite"]
    if seed is not None:
        cmd += ["--seed", str(seed)]
    procs = [multiprocessing.Process(target=_busy, args=(time.time() + 3600,))
             for _ in range(load)]
    for p in procs:
        p.start()
    try:
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True)
        return time.perf_counter() - t0
    finally:
        for p in procs:
            p.terminate()


def smefit_runcard(runcard: Path, folder: Path, nlive: int) -> Path:
    """A SMEFiT runcard with the inputs of our runcard ``runcard``."""
    rc = load_runcard(runcard)
    order = {"NLO_QCD": "NLO_QCD", "LO": "LO"}.get(str(rc.order), str(rc.order))
    card = {
        "result_ID": "peer",
        "result_path": str(folder),
        "data_path": str(Path(rc.database) / "commondata"),
        "theory_path": str(Path(rc.database) / "theory"),
        "default_order": order,
        "use_theory_covmat": bool(rc.use_theory_cov),
        "use_t0": bool(rc.use_t0),
        "use_quad": not rc.linear_only,
        "bounds": None,
        "nlive": nlive,
        # every equal-weight posterior sample UltraNest gives (smefit keeps the first 10000 by
        # default, which would cap the precision of its ends whatever the live points)
        "n_samples": 10_000_000,
        "datasets": [{"name": d.name, "order": d.order or order} for d in rc.datasets
                     if d.card is None],
        "coefficients": {operator_name(c.name): {"min": float(c.minimum), "max": float(c.maximum)}
                         for c in rc.coefficients},
    }
    path = folder / "peer_runcard.yaml"
    path.write_text(yaml.safe_dump(card, sort_keys=False))
    return path


def run_smefit(smefit: str, runcard: Path) -> float:
    """Wall seconds of ``smefit NS runcard``."""
    t0 = time.perf_counter()
    done = subprocess.run([smefit, "NS", str(runcard)], capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        sys.exit(f"smefit NS failed (exit {done.returncode}):\n{done.stdout[-3000:]}\n"
                 f"{done.stderr[-3000:]}")
    return seconds


def end_noise(edges: np.ndarray, density: np.ndarray, end: float, n_eff: float) -> float:
    """Quantile noise of an interval end from a binned density (see the module docstring)."""
    centres = 0.5 * (edges[1:] + edges[:-1])
    p = density / density.sum()
    f_end = float(np.interp(end, centres, p / np.diff(edges)))
    cdf = float(np.interp(end, edges, np.concatenate([[0.0], np.cumsum(p)])))
    if f_end <= 0 or n_eff <= 0:
        return math.inf
    return math.sqrt(max(cdf * (1 - cdf), 1e-12) / n_eff) / f_end


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runcard", type=Path, default=REPO / "configs" / "top6_quad_smefit_peer.yaml")
    parser.add_argument("--smefit", default=shutil.which("smefit"), help="the smefit command")
    parser.add_argument("--skip-smefit", action="store_true")
    parser.add_argument("--nlive", type=int, default=500, help="smefit NS live points")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--load", type=int, default=0, help="busy processes beside a second run")
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f}", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ours_s = run_ours(args.runcard, tmp / "ours", args.seed)
        res = read_results(tmp / "ours")
        mess = res.diagnostics.marginal_ess if res.diagnostics is not None else {}
        print(f"smeft-pyhf fit: {ours_s:.1f} s wall (steps: "
              + ", ".join(f"{k} {v:.1f}" for k, v in res.timings.items()) + f"); ESS/N "
              f"{res.ess / res.n_samples:.3f} of {res.n_samples}", flush=True)
        if args.load:
            loaded = run_ours(args.runcard, tmp / "ours_loaded", args.seed, load=args.load)
            print(f"beside {args.load} busy process(es): {loaded:.1f} s wall, "
                  f"{loaded / ours_s:.2f} x the quiet run", flush=True)
        theirs = None
        if not args.skip_smefit:
            if not args.smefit:
                sys.exit("no smefit command: pass --smefit PATH or --skip-smefit")
            card = smefit_runcard(args.runcard, tmp, args.nlive)
            theirs_s = run_smefit(args.smefit, card)
            fit = json.loads((tmp / "peer" / "fit_results.json").read_text())
            post = fit["samples"]
            print(f"smefit NS ({args.nlive} live points): {theirs_s:.1f} s wall; "
                  f"{len(next(iter(post.values())))} posterior samples; log Z {fit['logz']:.3f}",
                  flush=True)
            theirs = (post, math.inf)
            print(f"speed-up: {theirs_s / ours_s:.1f} x (target >= 20)")

        print(f"\n{'coefficient':<10} {'smeft-pyhf 95% HDR (+- noise)':<44} "
              f"{'smefit NS 95% HDR (+- noise)':<44} diff/sd")
        worst_factor = 0.0
        for name in res.names:
            hist = res.marginal1d[name]
            density = np.exp(-0.5 * (hist.delta_chi2 - np.nanmin(hist.delta_chi2)))
            density = np.where(np.isfinite(density), density, 0.0)
            centres = 0.5 * (hist.edges[1:] + hist.edges[:-1])
            ours = res.intervals[name]["marginalised"]["95"]
            n_ours = float(mess.get(name, res.ess or 0.0))
            lo_o, hi_o = ours.low, ours.high
            no = [end_noise(hist.edges, density, e, n_ours) for e in (lo_o, hi_o)]
            line = f"{name:<10} [{lo_o:8.4f} +- {no[0]:.4f}, {hi_o:8.4f} +- {no[1]:.4f}]"
            if theirs is not None:
                samples = np.asarray(theirs[0][operator_name(name)], dtype=float)
                counts, _ = np.histogram(samples, bins=hist.edges)
                iv = marginalised_interval(centres, counts.astype(float), level="95")
                n_t = min(len(samples), theirs[1])
                nt = [end_noise(hist.edges, counts.astype(float), e, n_t) for e in (iv.low, iv.high)]
                sd = float(np.sqrt(np.average((samples - samples.mean()) ** 2)))
                line += (f"   [{iv.low:8.4f} +- {nt[0]:.4f}, {iv.high:8.4f} +- {nt[1]:.4f}]"
                         f"   {(lo_o - iv.low) / sd:+.2f} {(hi_o - iv.high) / sd:+.2f}")
            print(line)
            if theirs is not None:
                # nested sampling's cost grows with its live points, its number of posterior
                # samples with them, so its end noise as one over their square root: the live
                # points smefit needs for our noise on this end
                worst_factor = max(worst_factor, *((t / o) ** 2 for t, o in zip(nt, no, strict=True)
                                                   if o > 0))
        if theirs is not None:
            print(f"\nsmefit NS would need {worst_factor:.1f} x its {args.nlive} live points for "
                  f"every end to be as precise as ours: about {worst_factor * theirs_s:.0f} s, "
                  f"{worst_factor * theirs_s / ours_s:.0f} x our wall time (scaled, not run)")


if __name__ == "__main__":
    main()

"""The global fit on the CPU: per-step time, ESS/N, largest weight share, two-seed agreement,
and where the importance-weight variance comes from.

    python benchmarks/bench_glob.py                       # configs/glob_quad_fit.yaml, seed 1
    python benchmarks/bench_glob.py --seeds 1 2           # + agreement of the 95% intervals
    python benchmarks/bench_glob.py --analyse             # + weight-variance table (kept samples)
    python benchmarks/bench_glob.py --seeds 1 2 --out /tmp/glob_runs  # + results.json, checkpoints
    python benchmarks/bench_glob.py --compare A/results.json B/results.json  # two runs' ends
    python benchmarks/bench_glob.py --seeds 1 2 --out /tmp/glob_runs --redraw 4  # + step 4 again
    python benchmarks/bench_glob.py --runcard configs/top_quark_fit.yaml --analyse

The target is built exactly as ``smeft-pyhf fit`` builds it (``fit.run.fit_target``); the
sampler runs the runcard's own sampler block. ``--analyse`` keeps up to ``--keep`` samples of
step 4 with their weights and prints, per coefficient, how the weighted marginal differs from
the flow's own (unweighted) one, how the weight depends on the distance to the prior box
edges, and the weight share of each side of a two-mode coefficient; the figures also go to
``--json``.

``--redraw K`` draws step 4 again ``K`` times from each seed's trained flow (new sampling seeds,
the same flow and proposal mixture), replaces the tails each draw flags by their mean force and
weights the draws again by them as the fit does (``sampler: mean_force``), and prints, per coefficient, the spread of the
marginalised 95% interval ends over the draws in units of the marginal's standard deviation,
beside the spread of the weighted histograms' own ends: the sampling noise of one run's ends,
measured directly instead of read off the weights of one sample (heavy weights that one draw in
several meets are missed by any single-sample error estimate).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import resource
import time
from pathlib import Path

import numpy as np
import torch

from smeft_pyhf.fit.run import build_fit_likelihood, fit_target, from_sampler_result
from smeft_pyhf.fit.runcard import build_sampler_config, load_runcard
from smeft_pyhf.results.diagnostics import heavy_weights, marginal_moments
from smeft_pyhf.results.intervals import marginalised_interval
from smeft_pyhf.results.results_file import (
    FitResult,
    make_fit_result,
    read_results,
    write_results,
)
from smeft_pyhf.sampler.coordinates import flow_coordinates
from smeft_pyhf.sampler.mean_force import (
    replace_tails,
    stratified_target,
    stratify,
    tails_to_replace,
)
from smeft_pyhf.sampler.pipeline import (
    STEPS,
    SamplerConfig,
    SamplerResult,
    _flow_sampler,
    run_sampler,
)
from smeft_pyhf.sampler.sampling import bin_centres, sample_and_histogram

REPO = Path(__file__).resolve().parents[1]


def weighted_moments(x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted mean and standard deviation per column."""
    p = w / w.sum()
    mean = p @ x
    return mean, np.sqrt(np.maximum(p @ (x - mean) ** 2, 0.0))


def kish(w: np.ndarray) -> float:
    return float(w.sum() ** 2 / (w**2).sum()) if w.size and w.sum() > 0 else 0.0


def analyse(x: np.ndarray, log_w: np.ndarray, names: list[str], low: np.ndarray,
            high: np.ndarray) -> dict:
    """Where the weight variance sits (see the module docstring)."""
    w = np.exp(log_w - log_w.max())
    n = len(w)
    mean_w, std_w = weighted_moments(x, w)
    mean_q, std_q = x.mean(0), x.std(0)
    order = np.argsort(w)[::-1]
    heavy = order[: max(10, n // 10000)]
    # distance to the nearest prior edge in units of the posterior width
    edge = np.minimum(x - low, high - x) / std_w
    rows = []
    for i, name in enumerate(names):
        near = edge[:, i] < 1.0
        z_heavy = np.abs(x[heavy, i] - mean_w[i]) / std_w[i]
        rows.append({
            "name": name,
            "width": float(std_w[i]),
            "mean_shift": float((mean_q[i] - mean_w[i]) / std_w[i]),
            "std_ratio": float(std_q[i] / std_w[i]),
            "heavy_abs_z": float(np.median(z_heavy)),
            "near_edge_samples": float(near.mean()),
            "near_edge_weight": float(w[near].sum() / w.sum()),
            "near_edge_ess": kish(w[near]) / max(int(near.sum()), 1),
        })
    # two-mode coefficients: a dip in the weighted marginal between two peaks
    modes = []
    for i, name in enumerate(names):
        hist, edges = np.histogram(x[:, i], bins=60, range=(low[i], high[i]), weights=w)
        smooth = np.convolve(hist, np.ones(3) / 3, mode="same")
        peaks = [k for k in range(1, 59) if smooth[k] >= smooth[k - 1] and smooth[k] > smooth[k + 1]
                 and smooth[k] > 0.05 * smooth.max()]
        if len(peaks) < 2:
            continue
        a, b = peaks[0], peaks[-1]
        dip = a + 1 + int(np.argmin(smooth[a + 1:b]))
        if smooth[dip] > 0.5 * min(smooth[a], smooth[b]):
            continue  # noise, not two modes
        cut = edges[dip]
        for side, sel in (("below", x[:, i] < cut), ("above", x[:, i] >= cut)):
            modes.append({"name": name, "cut": float(cut), "side": side,
                          "samples": float(sel.mean()), "weight": float(w[sel].sum() / w.sum()),
                          "ess_fraction_within": kish(w[sel]) / max(int(sel.sum()), 1)})
    return {
        "n": n,
        "ess_fraction": kish(w) / n,
        "top1_share": float(w[order[0]] / w.sum()),
        "top100_share": float(w[order[:100]].sum() / w.sum()),
        "coefficients": rows,
        "modes": modes,
    }


def print_analysis(a: dict) -> None:
    print(f"\nweight variance: {a['n']} kept samples, ESS/N {a['ess_fraction']:.4f}, "
          f"largest weight {a['top1_share']:.2e} of the total, top 100 {a['top100_share']:.3f}")
    print("| coefficient | width | (mean_q - mean_p)/sd | sd_q/sd_p | median |z| of heaviest | "
          "samples < 1 sd from edge | their weight | their ESS/N |")
    print("|---|---|---|---|---|---|---|---|")
    rows = sorted(a["coefficients"], key=lambda r: -abs(r["mean_shift"]) - abs(1 - r["std_ratio"]))
    for r in rows:
        print(f"| {r['name']} | {r['width']:.3g} | {r['mean_shift']:+.3f} | {r['std_ratio']:.3f} | "
              f"{r['heavy_abs_z']:.2f} | {r['near_edge_samples']:.4f} | {r['near_edge_weight']:.4f} | "
              f"{r['near_edge_ess']:.3f} |")
    if a["modes"]:
        print("\n| coefficient | cut | side | sample share | weight share | ESS/N within |")
        print("|---|---|---|---|---|---|")
        for m in a["modes"]:
            print(f"| {m['name']} | {m['cut']:.3g} | {m['side']} | {m['samples']:.3f} | "
                  f"{m['weight']:.3f} | {m['ess_fraction_within']:.3f} |")


def end_differences(a: FitResult, b: FitResult, names: list[str]) -> list[tuple]:
    """Per coefficient and method, the larger difference of the two runs' 95 % interval ends in
    units of run ``a``'s marginal standard deviation; largest first."""
    out = []
    for n in names:
        h = a.marginal1d[n]
        mean = np.average(h.centres, weights=h.density)
        sd = float(np.sqrt(np.average((h.centres - mean) ** 2, weights=h.density)))
        for method in ("marginalised", "profiled"):
            ia, ib = a.interval(n, method=method), b.interval(n, method=method)
            diff = max(abs(ia.low - ib.low), abs(ia.high - ib.high)) / sd
            if math.isfinite(diff):
                out.append((diff, n, method, (ia.low, ia.high), (ib.low, ib.high)))
    return sorted(out, key=lambda t: -t[0])


def print_differences(diffs: list[tuple]) -> None:
    """The largest end differences and the worst one, as :func:`end_differences` gives them."""
    print("\ntwo seeds: largest 95% interval-end differences in marginal sd "
          "(seed A ends | seed B ends):")
    for diff, n, method, ia, ib in diffs[:6]:
        print(f"  {n:8s} {method:12s} {diff:6.3f}  [{ia[0]:.4g}, {ia[1]:.4g}] | "
              f"[{ib[0]:.4g}, {ib[1]:.4g}]")
    worst = diffs[0]
    print(f"two seeds: worst 95% interval-end difference {worst[0]:.3f} marginal sd "
          f"({worst[1]}, {worst[2]})")


def marginal_ends(probability: np.ndarray, ranges: np.ndarray) -> np.ndarray:
    """(d, 3): outer ends of each row's marginalised 95% interval and the marginal's sd."""
    centres = bin_centres(torch.as_tensor(ranges), probability.shape[1]).numpy()
    sd = marginal_moments(probability, centres)[1]
    out = []
    for p, c, width in zip(probability, centres, sd, strict=True):
        iv = marginalised_interval(c, p, level="95")
        out.append((iv.segments[0][0], iv.segments[-1][1], width))
    return np.array(out)


def redraw_ends(res: SamplerResult, log_prob, config: SamplerConfig, support: torch.Tensor,
                n_draws: int) -> dict:
    """Step 4 drawn ``n_draws`` more times from ``res``'s trained flow (seeds 1000 + k): the
    interval ends of every draw, their spread in marginal widths and each draw's figures."""
    zlog = flow_coordinates(log_prob, res.prescale_result, whitening=config.whitening,
                            support=support, support_map=config.support_map,
                            support_nsigma=config.support_nsigma,
                            support_weight=config.support_weight,
                            dtype=next(res.flow.parameters()).dtype, names=res.names,
                            level=logging.DEBUG)
    draw = _flow_sampler(res.flow, zlog, tempered_fraction=config.tempered_fraction,
                         tempered_scale=config.tempered_scale)
    ranges = res.sample_result.ranges
    cfg = dataclasses.replace(config.sample, histograms_2d=False, keep_samples=0)
    ends, weighted_ends, draws = [], [], []
    for k in range(n_draws):
        t0 = time.perf_counter()
        s = sample_and_histogram(draw, log_prob, ranges=ranges, config=cfg,
                                 generator=torch.Generator().manual_seed(1000 + k),
                                 names=res.names)
        e = marginal_ends(s.marginal1d.double().cpu().numpy(), ranges.double().cpu().numpy())
        weighted_ends.append(e)
        # the fit's own mean-force tails, on the tails this draw flags
        tails = tails_to_replace(config.mean_force, s, res.names)
        if tails:
            forced = replace_tails(log_prob, draw, s, tails, names=res.names,
                                   config=config.mean_force,
                                   generator=torch.Generator().manual_seed(2000 + k))
            final = forced.marginal1d
            if forced.tails and config.mean_force.stratify:
                again = sample_and_histogram(
                    draw, stratified_target(log_prob, s, forced, res.names), ranges=ranges,
                    config=cfg, generator=torch.Generator().manual_seed(1000 + k),
                    names=res.names)
                final = stratify(s, forced, again, res.names).marginal1d
            e = marginal_ends(final.double().cpu().numpy(), ranges.double().cpu().numpy())
            for t in forced.tails:
                print(f"  redraw {k + 1}: {t.name}'s {t.side} tail from its mean force in "
                      f"{t.seconds:.0f} s: end {t.end_weights:.4f} -> {t.end_mean_force:.4f} "
                      f"(+- {t.end_error:.3f} sd)", flush=True)
        ends.append(e)
        share = math.exp(s.max_log_weight - s.log_evidence) / s.n_samples
        p = s.marginal1d.double().cpu().numpy()
        mean = marginal_moments(p, bin_centres(ranges.double().cpu(), p.shape[1]).numpy())[0]
        heavy = heavy_weights(s.heavy_points.cpu().numpy(), s.heavy_log_weight.cpu().numpy(),
                              log_total=s.log_evidence + math.log(s.n_samples), mean=mean,
                              std=np.where(e[:, 2] > 0, e[:, 2], 1.0), names=res.names)
        name, z = max(heavy["mean_z"].items(), key=lambda kv: abs(kv[1]))
        draws.append({"seconds": time.perf_counter() - t0, "ess_fraction": s.ess_fraction,
                      "max_weight_share": share, "heavy_weights": heavy,
                      "mean_force_tails": [list(t) for t in tails]})
        print(f"  redraw {k + 1}/{n_draws}: {time.perf_counter() - t0:.1f} s, ESS/N "
              f"{s.ess_fraction:.4f}, largest weight share {share:.2e}; the {heavy['n']} "
              f"heaviest hold {heavy['share']:.2e} at {name} {z:+.2f} sd", flush=True)
    ends = np.stack(ends)  # (K, d, 3), with the mean-force tails where a draw flagged one
    sd = ends[:, :, 2].mean(0)
    spread = ends[:, :, :2].std(0, ddof=1) / sd[:, None]  # (d, 2)
    weighted = np.stack(weighted_ends)
    weighted_spread = weighted[:, :, :2].std(0, ddof=1) / sd[:, None]
    order = np.argsort(-spread.max(1))
    for i in order[:5]:
        j = int(np.argmax(spread[i]))
        vals = ", ".join(f"{v:.4f}" for v in ends[:, i, j])
        print(f"  draw-to-draw spread of {res.names[i]}'s {('low', 'high')[j]} end: "
              f"{spread[i, j]:.3f} sd (ends {vals}; sd {sd[i]:.4f}; weighted histograms "
              f"alone {weighted_spread[i, j]:.3f} sd)")
    print(f"  median spread {np.median(spread.max(1)):.3f} sd")
    return {"draws": draws, "ends": ends[:, :, :2].tolist(), "sd": sd.tolist(),
            "spread": {n: spread[i].tolist() for i, n in enumerate(res.names)},
            "weighted_ends": weighted[:, :, :2].tolist(),
            "weighted_spread": {n: weighted_spread[i].tolist()
                                for i, n in enumerate(res.names)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runcard", type=Path, default=REPO / "configs" / "glob_quad_fit.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--analyse", action="store_true")
    parser.add_argument("--keep", type=int, default=500_000, help="samples kept for --analyse")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    parser.add_argument("--support-map", choices=["logit", "none"], default=None,
                        help="override the sampler's support_map")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for each seed's results.json and sampler checkpoint "
                             "(seed<N>/); a finished seed is resumed from its checkpoint")
    parser.add_argument("--compare", type=Path, nargs=2, default=None, metavar="RESULTS",
                        help="only compare the 95%% interval ends of two results.json files "
                             "(e.g. two seeds run as separate processes)")
    parser.add_argument("--redraw", type=int, default=0, metavar="K",
                        help="draw step 4 again K times from each trained flow and print the "
                             "draw-to-draw spread of every interval end")
    parser.add_argument("--skip-chain-check", action="store_true",
                        help="run without the runcard's Markov-chain check")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    if args.compare:
        a, b = (read_results(p) for p in args.compare)
        print_differences(end_differences(a, b, list(a.names)))
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s: %(message)s")
    rc = load_runcard(args.runcard)
    t0 = time.perf_counter()
    likelihood = build_fit_likelihood(rc)
    target = fit_target(likelihood, rc.ranges, device=args.device)
    names = list(target.names)
    print(f"{args.runcard.name}: {len(names)} coefficients, likelihood built in "
          f"{time.perf_counter() - t0:.1f} s; {torch.get_num_threads()} torch threads")
    config = build_sampler_config(rc.sampler)
    if args.support_map:
        config = dataclasses.replace(config, support_map=args.support_map)
    if args.skip_chain_check:
        config = dataclasses.replace(
            config, chain_check=dataclasses.replace(config.chain_check, n_chains=0))
    if args.analyse:
        config = dataclasses.replace(
            config, sample=dataclasses.replace(config.sample, keep_samples=args.keep))
    figures: dict = {"runcard": str(args.runcard), "runs": []}
    fits = []
    for seed in args.seeds:
        t0 = time.perf_counter()
        res = run_sampler(target.log_prob, names=names, config=config, seed=seed,
                          progress=args.verbose, init_scale=target.init_scale,
                          init_mean=target.init_mean, ranges=target.ranges,
                          support=target.ranges,
                          checkpoint_dir=None if args.out is None else args.out / f"seed{seed}")
        total = time.perf_counter() - t0
        fit = make_fit_result(names=names, **from_sampler_result(res))
        fits.append(fit)
        if args.out is not None:
            write_results(fit, args.out / f"seed{seed}" / "results.json")
        d = fit.diagnostics
        s = res.sample_result
        print(f"\nseed {seed}: " + ", ".join(f"{k} {res.timings[k]:.1f} s" for k in STEPS)
              + f"; total {total:.1f} s")
        print(f"  ESS/N {res.sample_result.ess_fraction:.4f} of {res.sample_result.n_samples} samples, largest weight share "
              f"{d.max_weight_share:.2e}, log Z {s.log_evidence:.3f} +- {s.log_evidence_error:.3f}")
        worst = min(d.marginal_ess.items(), key=lambda kv: kv[1])
        print(f"  smallest marginal ESS {worst[1]:.3g} ({worst[0]}), profile converged "
              f"{100 * d.profile_converged_fraction:.1f}%, outside {d.outside_fraction:.2g}")
        if d.heavy_weights.get("mean_z"):
            h = d.heavy_weights
            top = sorted(h["mean_z"].items(), key=lambda kv: -abs(kv[1]))[:3]
            flagged = [w.coefficients for w in fit.warnings() if w.figure == "heavy_weights"]
            print(f"  the {h['n']} heaviest weights hold {h['share']:.2e} of the weight, mean "
                  "position " + ", ".join(f"{n} {z:+.2f}" for n, z in top) + " sd; flagged: "
                  f"{list(flagged[0]) if flagged else 'none'}")
        broken = [n for n in names if len(fit.interval(n, method="profiled").segments) > 1]
        print(f"  profiled 95% intervals in pieces: {len(broken)} {broken}")
        if res.ends is not None:
            e = res.ends
            print(f"  interval ends: {e.n_bins} bins maximised again, {e.n_raised} raised by up "
                  f"to {e.largest_gain:.3g} in -2 log L, {100 * e.converged_fraction:.1f}% "
                  f"converged, {e.rounds} rounds")
        if res.chain_check is not None:
            c = res.chain_check
            moved = c.flagged()
            i, k = np.unravel_index(np.nanargmax(np.nan_to_num(np.abs(c.shift), nan=-1.0)),
                                    c.shift.shape)
            print(f"  chain check: {c.n_chains} chains x {c.n_iterations} iterations in "
                  f"{c.seconds:.1f} s, acceptance {c.acceptance:.2f}; largest end shift "
                  f"{c.shift[i, k]:+.3f} sd ({names[i]} {('low', 'high')[k]}: mass beyond "
                  f"{c.mass_weights[i, k]:.4f} weighted, {c.mass_chains[i, k]:.4f} +- "
                  f"{c.mass_chains_error[i, k]:.4f} by the chains, z {c.z[i, k]:.1f}); "
                  f"ends moved: {moved or 'none'}")
        if res.mean_force is not None:
            for t in res.mean_force.tails:
                print(f"  mean-force tail {t.name} {t.side}: {res.mean_force.n_chains} chains x "
                      f"{len(t.grid)} grid points in {t.seconds:.1f} s, acceptance "
                      f"{t.acceptance:.2f}; 95% end {t.end_weights:.4f} -> "
                      f"{t.end_mean_force:.4f} (+- {t.end_error:.3f} sd, the sweeps' lag "
                      f"{t.end_lag:.3f})")
        train = res.train_result
        run = {"seed": seed, "timings": dict(res.timings), "total": total,
               "ess_fraction": res.sample_result.ess_fraction, "n_samples": res.sample_result.n_samples,
               "diagnostics": d.to_dict(), "log_evidence": s.log_evidence,
               "broken_profiled": broken,
               "train_ess_history": [float(v) for v in train.ess_history]}
        if args.analyse and s.samples.shape[0]:
            a = analyse(s.samples.double().cpu().numpy(), s.samples_log_weight.double().cpu().numpy(),
                        names, target.ranges[:, 0].double().cpu().numpy(),
                        target.ranges[:, 1].double().cpu().numpy())
            print_analysis(a)
            run["analysis"] = a
        if args.redraw > 1:
            run["redraw"] = redraw_ends(res, target.log_prob, config, target.ranges, args.redraw)
        figures["runs"].append(run)
    if len(fits) >= 2:
        diffs = end_differences(fits[0], fits[1], names)
        print_differences(diffs)
        worst = diffs[0]
        figures["two_seed_worst"] = {"sd": worst[0], "coefficient": worst[1], "method": worst[2]}
        figures["two_seed_differences"] = [
            {"sd": d_, "coefficient": n, "method": m, "a": ia, "b": ib}
            for d_, n, m, ia, ib in diffs]
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak host RSS {rss:,.0f} MiB")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1, default=float))


if __name__ == "__main__":
    main()

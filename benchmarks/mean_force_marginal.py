"""One coefficient's marginal tail from its mean force, on the trained flow of a finished run.

    python benchmarks/mean_force_marginal.py --out /tmp/glob_runs --seed 1 --coefficient ccp

Runs :func:`smeft_pyhf.sampler.mean_force.replace_tails` (the fit's own reconstruction,
``sampler: mean_force`` in a runcard) on one tail of the run in ``--out``/seed<N>
(``benchmarks/bench_glob.py --out``: ``sampler_checkpoint.pt``) with the settings given here,
and prints the forces per grid point, the weighted and reconstructed densities, the masses
beyond a few points, the marginalised 95 % interval before and after, and the wall time.
Different ``--chains``/``--iters``/``--grid-points`` on the same flow show how many the
reconstruction needs; two seeds' runs show how far their ends agree.
"""

from __future__ import annotations

import argparse
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch

from smeft_pyhf.fit.run import build_fit_likelihood, fit_target
from smeft_pyhf.fit.runcard import build_sampler_config, load_runcard
from smeft_pyhf.results.intervals import marginalised_interval
from smeft_pyhf.sampler import pipeline
from smeft_pyhf.sampler.checkpoint import Checkpoint
from smeft_pyhf.sampler.coordinates import cover_chains, flow_coordinates
from smeft_pyhf.sampler.mean_force import MeanForceConfig, replace_tails
from smeft_pyhf.sampler.sampling import bin_centres
from smeft_pyhf.sampler.seeding import StepRng

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runcard", type=Path, default=REPO / "configs" / "glob_quad_fit.yaml")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--coefficient", default="ccp")
    ap.add_argument("--side", default="high", choices=["low", "high"])
    ap.add_argument("--chains", type=int, default=None, help="default: the runcard's")
    ap.add_argument("--iters", type=int, default=None)
    ap.add_argument("--burn", type=int, default=None)
    ap.add_argument("--grid-points", type=int, default=None)
    ap.add_argument("--sweeps", type=int, default=None, choices=[1, 2])
    ap.add_argument("--rng", type=int, default=0, help="seed of the chains (added to --seed)")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    rc = load_runcard(args.runcard)
    likelihood = build_fit_likelihood(rc)
    target = fit_target(likelihood, rc.ranges, device="cpu")
    names = list(target.names)
    config = build_sampler_config(rc.sampler)
    mf = config.mean_force
    changes = {k: v for k, v in (("n_chains", args.chains), ("n_iterations", args.iters),
                                 ("burn_in", args.burn), ("grid_points", args.grid_points),
                                 ("sweeps", args.sweeps))
               if v is not None}
    mf = MeanForceConfig(**{**mf.__dict__, **changes})
    if mf.n_chains <= 0:
        mf = MeanForceConfig(**{**mf.__dict__, "n_chains": 128})
    setup = pipeline._setup(target.log_prob, names, target.ranges, config, target.init_scale,
                            target.init_mean)
    folder = args.out / f"seed{args.seed}"
    key = torch.load(folder / "sampler_checkpoint.pt", weights_only=True,
                     map_location="cpu")["hash"]
    ck = Checkpoint.open(folder, key, setup.device)
    res1, res4 = ck.results["prescale"], ck.results["sample"]
    zlog = flow_coordinates(setup.target, res1, whitening=config.whitening,
                            support=target.ranges, support_map=config.support_map,
                            support_nsigma=config.support_nsigma,
                            support_weight=config.support_weight, dtype=setup.dtype,
                            names=names, level=logging.DEBUG)
    flow = pipeline._build_flow(len(names), config.flow, args.seed, setup.device, setup.dtype,
                                ck.flow_state)
    if config.flow.adaptive_bound:
        chains = res1.samples[torch.isfinite(res1.log_weights)].to(setup.dtype)
        cover_chains(flow, zlog, chains, logging.DEBUG)
    flow.eval()
    draw = pipeline._flow_sampler(flow, zlog, tempered_fraction=config.tempered_fraction,
                                  tempered_scale=config.tempered_scale)
    t0 = time.perf_counter()
    with StepRng(args.seed + args.rng, pipeline._MEAN_FORCE_SEED, setup.device) as gen:
        out = replace_tails(target.log_prob, draw, res4, [(args.coefficient, args.side)],
                            names=names, config=mf, generator=gen, dtype=setup.target_dtype)
    wall = time.perf_counter() - t0
    (tail,) = out.tails
    i = names.index(args.coefficient)
    print(f"{args.runcard.name}, seed {args.seed}, {args.coefficient} {args.side}: "
          f"{mf.n_chains} chains x {mf.grid_points} grid points x ({mf.burn_in} + "
          f"{mf.n_iterations}) iterations x {mf.sweeps} sweep(s), {wall:.0f} s wall (chains {tail.seconds:.0f} s), "
          f"acceptance {tail.acceptance:.2f}")
    centres = bin_centres(res4.ranges.double(), res4.marginal1d.shape[1])[i].numpy()
    width = float(centres[1] - centres[0])
    before = out.weighted_marginal1d[i].double().numpy()
    after = out.marginal1d[i].double().numpy()
    print("grid point, mean force +- error (outward, inward), weighted density, mean-force "
          "density (+- %)")
    inward = tail.force_inward if tail.force_inward is not None else tail.force * math.nan
    for c, f, e, fo, fi, lm, le in zip(tail.grid, tail.force, tail.force_error,
                                       tail.force_outward, inward, tail.log_density,
                                       tail.log_density_error, strict=True):
        b = int(np.clip(np.searchsorted(centres - width / 2, c) - 1, 0, len(centres) - 1))
        print(f"  {c:8.4f}  {f:+8.3f} +- {e:.3f} ({fo:+8.3f}, {fi:+8.3f})  "
              f"{before[b] / width:10.4g}  {math.exp(lm):10.4g} (+-{100 * le:.1f} %)")
    lo, hi = float(res4.ranges[i, 0]), float(res4.ranges[i, 1])
    for t in np.linspace(lo, hi, 6)[1:-1]:
        beyond = centres > t if args.side == "high" else centres < t
        print(f"  mass beyond {t:.3g}: weighted {before[beyond].sum():.4f}, with the "
              f"mean-force tail {after[beyond].sum():.4f}")
    for label, p in (("weighted", before), ("with the mean-force tail", after)):
        iv = marginalised_interval(centres, p, level="95")
        print(f"marginalised 95% of {args.coefficient}, {label}: "
              + ", ".join(f"[{a:.4f}, {b:.4f}]" for a, b in iv.segments))
    print(f"end error: {tail.end_error:.3f} marginal sd (the sweeps' lag {tail.end_lag:.3f})")


if __name__ == "__main__":
    main()

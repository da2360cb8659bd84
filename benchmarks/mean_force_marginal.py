"""One coefficient's marginal posterior from its mean force, on a trained flow of a finished run.

    python benchmarks/mean_force_marginal.py --out /tmp/glob_runs --seed 1 --coefficient ccp

The marginal ``m(c)`` of coefficient ``c`` obeys ``d log m / dc = E[d log p / dc | c]``: the
conditional mean of the target's derivative at fixed ``c``. On a grid over ``--grid``, this
script starts ``--chains`` Hamiltonian Monte Carlo chains at fixed ``c`` from the trained flow's
weighted draws near ``c`` (the other coefficients scaled by their posterior widths), runs them
``--iters`` iterations (the first ``--burn`` adapt the step size), averages the derivative over
the rest, integrates it and scales the result to the weighted flow histogram over ``--anchor``.
Unlike the weighted histogram it needs no flow draws far out in ``c``'s tail, only weights that
are right *given* ``c``: a tail that the flow under-covers in ``c`` is reconstructed from the
conditional shape. It prints the two densities per grid point, the masses beyond a few points
and the marginalised 95% interval of the run's histogram with its tail replaced. ``--out`` is a
folder of ``benchmarks/bench_glob.py --out`` (``seed<N>/sampler_checkpoint.pt`` and
``results.json``).
"""

from __future__ import annotations

import argparse
import json
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

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runcard", type=Path, default=REPO / "configs" / "glob_quad_fit.yaml")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--coefficient", default="ccp")
    ap.add_argument("--grid", default="0.0,0.5,0.02", help="start,stop,step of the grid")
    ap.add_argument("--anchor", default="0.02,0.12", help="where the two densities are matched")
    ap.add_argument("--chains", type=int, default=256)
    ap.add_argument("--iters", type=int, default=150)
    ap.add_argument("--burn", type=int, default=50)
    ap.add_argument("--leapfrog", type=int, default=8)
    ap.add_argument("--pilot", type=int, default=500_000)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rc = load_runcard(args.runcard)
    likelihood = build_fit_likelihood(rc)
    target = fit_target(likelihood, rc.ranges, device="cpu")
    target64 = fit_target(likelihood, rc.ranges, device="cpu", dtype=torch.float64)
    names = list(target.names)
    config = build_sampler_config(rc.sampler)
    setup = pipeline._setup(target.log_prob, names, target.ranges, config, target.init_scale,
                            target.init_mean)
    folder = args.out / f"seed{args.seed}"
    key = torch.load(folder / "sampler_checkpoint.pt", weights_only=True,
                     map_location="cpu")["hash"]
    ck = Checkpoint.open(folder, key, setup.device)
    res1 = ck.results["prescale"]
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
    ic = names.index(args.coefficient)
    d = len(names)
    other = [k for k in range(d) if k != ic]
    gen = torch.Generator().manual_seed(321 + args.seed)
    t0 = time.perf_counter()
    xs, lws = [], []
    with torch.no_grad():
        for _ in range(max(1, args.pilot // 50_000)):
            x, log_q = draw(50_000, gen)
            lw = (target.log_prob(x) - log_q).double()
            xs.append(x.double())
            lws.append(torch.where(torch.isfinite(lw), lw, torch.full_like(lw, -math.inf)))
    x_all, lw_all = torch.cat(xs), torch.cat(lws)
    w = torch.exp(lw_all - lw_all.max())
    w = w / w.sum()
    mean = (w[:, None] * x_all).sum(0)
    scale = ((w[:, None] * (x_all - mean) ** 2).sum(0)).sqrt()[other]
    print(f"{args.runcard.name}, seed {args.seed}, {args.coefficient}: pilot of "
          f"{x_all.shape[0]} flow draws in {time.perf_counter() - t0:.0f} s")

    def full(y: torch.Tensor, c: float) -> torch.Tensor:
        x = torch.empty(y.shape[0], d, dtype=torch.float64)
        x[:, other] = mean[other] + y * scale
        x[:, ic] = c
        return x

    def log_p_grad(y: torch.Tensor, c: float) -> tuple[torch.Tensor, torch.Tensor]:
        y = y.detach().requires_grad_(True)
        lp = target64.log_prob(full(y, c))
        (g,) = torch.autograd.grad(lp.sum(), y)
        return lp.detach(), g

    def force(y: torch.Tensor, c: float) -> torch.Tensor:
        x = full(y, c).requires_grad_(True)
        (g,) = torch.autograd.grad(target64.log_prob(x).sum(), x)
        return g[:, ic].detach()

    start, stop, step = (float(v) for v in args.grid.split(","))
    grid = np.arange(start, stop - 1e-12, step) + step / 2
    rows = []
    for c in grid:
        t1 = time.perf_counter()
        near = (x_all[:, ic] - c).abs() < step
        if int(near.sum()) < 20:
            near = (x_all[:, ic] - c).abs() < 3 * step
        pick = torch.multinomial((w[near] / w[near].sum()).float(), args.chains,
                                 replacement=True, generator=gen)
        y = (x_all[near][pick][:, other] - mean[other]) / scale
        lp, g = log_p_grad(y, float(c))
        eps, forces, accepted = 0.05, [], []
        for it in range(args.iters):
            p0 = torch.randn(y.shape, generator=gen, dtype=y.dtype)
            e = eps * (0.8 + 0.4 * torch.rand(y.shape[0], 1, generator=gen, dtype=y.dtype))
            yn, pn = y, p0 + 0.5 * e * g
            for step_ in range(args.leapfrog):
                yn = yn + e * pn
                lpn, gn = log_p_grad(yn, float(c))
                if step_ < args.leapfrog - 1:
                    pn = pn + e * gn
            pn = pn + 0.5 * e * gn
            log_a = (lpn - 0.5 * (pn * pn).sum(-1)) - (lp - 0.5 * (p0 * p0).sum(-1))
            log_a = torch.nan_to_num(log_a, nan=-1e30, neginf=-1e30)
            acc = torch.log(torch.rand(log_a.shape, generator=gen, dtype=log_a.dtype)) < log_a
            y = torch.where(acc[:, None], yn, y)
            lp = torch.where(acc, lpn, lp)
            g = torch.where(acc[:, None], gn, g)
            rate = float(acc.double().mean())
            accepted.append(rate)
            if it < args.burn:
                eps *= math.exp(0.5 * (rate - 0.7))
            else:
                forces.append(force(y, float(c)))
        per_chain = torch.stack(forces).mean(0)
        f_mean = float(per_chain.mean())
        f_err = float(per_chain.std() / math.sqrt(per_chain.numel()))
        density = float(w[(x_all[:, ic] >= c - step / 2) & (x_all[:, ic] < c + step / 2)].sum()
                        / step)
        rows.append((float(c), f_mean, f_err, density))
        print(f"  {args.coefficient} = {c:.4f}: mean force {f_mean:+8.3f} +- {f_err:.3f} "
              f"(acceptance {np.mean(accepted[args.burn:]):.2f}); flow histogram density "
              f"{density:.4g}; {time.perf_counter() - t1:.0f} s", flush=True)
    c = np.array([r[0] for r in rows])
    f = np.array([r[1] for r in rows])
    err = np.array([r[2] for r in rows])
    hist = np.array([r[3] for r in rows])
    log_m = np.concatenate([[0.0], np.cumsum(0.5 * (f[1:] + f[:-1]) * step)])
    var = np.concatenate([[0.0], np.cumsum((0.5 * step) ** 2 * (err[1:] ** 2 + err[:-1] ** 2))])
    lo_a, hi_a = (float(v) for v in args.anchor.split(","))
    sel = (c > lo_a) & (c < hi_a)
    log_m += np.log(np.where(hist[sel] > 0, hist[sel], np.nan)).mean() - log_m[sel].mean()
    m = np.exp(log_m)
    print("grid point, flow histogram density, mean-force density (its error from the forces)")
    for ci, hi, mi, vi in zip(c, hist, m, var, strict=True):
        print(f"  {ci:.4f}  {hi:9.4g}  {mi:9.4g} (+-{100 * math.sqrt(vi):.1f} %)")
    for t in np.linspace(start, stop, 6)[1:-1]:
        b = c > t
        print(f"  mass beyond {t:.3g}: flow histogram {hist[b].sum() * step:.4f}, mean force "
              f"{m[b].sum() * step:.4f}")
    results = json.loads((folder / "results.json").read_text())
    marginal = results["marginal1d"][args.coefficient]
    edges = np.asarray(marginal["edges"], dtype=float)
    centres = 0.5 * (edges[1:] + edges[:-1])
    dens = np.exp(-0.5 * np.asarray(marginal["delta_chi2"], dtype=float))
    dens = np.where(np.isfinite(dens), dens, 0.0)
    anchor = (centres > lo_a) & (centres < hi_a)
    shape = np.interp(centres, c, log_m)
    shape += np.log(dens[anchor]).mean() - shape[anchor].mean()
    inside = (centres >= c[0]) & (centres <= c[-1] + step / 2)
    tail = np.where(inside & (centres >= hi_a), np.exp(shape), dens)
    tail = np.where(centres > c[-1] + step / 2, 0.0, tail)
    for label, density in (("results.json", dens), ("with the mean-force tail", tail)):
        iv = marginalised_interval(centres, density, level="95")
        p = density / density.sum()
        mu = float((p * centres).sum())
        sd = math.sqrt(float((p * (centres - mu) ** 2).sum()))
        print(f"marginalised 95% of {args.coefficient}, {label}: "
              + ", ".join(f"[{a:.4f}, {b:.4f}]" for a, b in iv.segments) + f" (sd {sd:.4f})")


if __name__ == "__main__":
    main()

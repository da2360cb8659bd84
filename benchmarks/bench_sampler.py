"""Benchmark of the five-step sampler: per-step time, samples/s, ESS/N and peak memory.

(a) paper hyperparameters (Table 5, "Top"), 10M samples, on GPU::

    python benchmarks/bench_sampler.py --device cuda [--target top]

(b) a reduced CPU configuration::

    python benchmarks/bench_sampler.py --device cpu --reduced
    python benchmarks/bench_sampler.py --device cpu --target top --runcard-sampler

The default target is a 22-dimensional correlated Gaussian stand-in; ``--target top`` is the real
top-quark likelihood of ``configs/top_quark_fit.yaml`` (25 coefficients, 61 SMEFiT sets and the
two ingested ATLAS cards, NLO, quadratic; ``--runcard`` for another), with the fit's prior box.
"""

from __future__ import annotations

import argparse
import logging
import resource
import time
from pathlib import Path

import torch

from smeft_pyhf.fit.run import build_fit_likelihood, fit_target
from smeft_pyhf.fit.runcard import build_sampler_config, load_runcard
from smeft_pyhf.sampler.pipeline import STEPS, SamplerConfig, run_sampler
from smeft_pyhf.sampler.toys import CorrelatedGaussian, random_covariance

REPO = Path(__file__).resolve().parents[1]


def _target(kind: str, device: torch.device, runcard: Path):
    """(log_prob, names, init_scale, init_mean, ranges) of the chosen target."""
    if kind == "top":
        # the real top-quark likelihood of the runcard, with the fit's flat prior box, exactly
        # as `smeft-pyhf fit` builds it
        rc = load_runcard(runcard)
        t = fit_target(build_fit_likelihood(rc), rc.ranges, device=device)
        return t.log_prob, list(t.names), t.init_scale, t.init_mean, t.ranges
    g = torch.Generator().manual_seed(22)
    cov = random_covariance(22, generator=g, dtype=torch.float64)
    mean = torch.randn(22, generator=g, dtype=torch.float64)
    t = CorrelatedGaussian(mean, cov).to(device)
    return t, [f"c{i}" for i in range(22)], float(t.std.max()), None, None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--reduced", action="store_true")
    parser.add_argument("--target", default="gauss22", choices=["gauss22", "top"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--runcard", type=Path, default=REPO / "configs" / "top_quark_fit.yaml",
                        help="runcard of --target top")
    parser.add_argument("--runcard-sampler", action="store_true",
                        help="use the runcard's own sampler block (its CPU configuration)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    device = torch.device(args.device)
    target, names, scale, mean, ranges = _target(args.target, device, args.runcard)
    config = SamplerConfig.reduced() if args.reduced else SamplerConfig.paper("top")
    if args.runcard_sampler:
        config = build_sampler_config(load_runcard(args.runcard).sampler)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    res = run_sampler(target, names=names, config=config, seed=args.seed, progress=False,
                      init_scale=scale, init_mean=mean, ranges=ranges)
    total = time.perf_counter() - t0
    label = "runcard" if args.runcard_sampler else ("reduced" if args.reduced else "paper")
    print(f"device {device}, target {args.target}, {label} config, {len(names)} dims")
    for step in STEPS:
        print(f"  {step:9s} {res.timings[step]:9.2f} s")
    print(f"  total     {total:9.2f} s")
    sample_s = res.timings["sample"]
    print(f"samples {res.sample_result.n_samples}, {res.sample_result.n_samples / sample_s:,.0f} samples/s in step 4")
    print(f"ESS {res.sample_result.ess:,.0f}, ESS/N {res.sample_result.ess_fraction:.4f}, log Z {res.sample_result.log_evidence:.4f}")
    pr = res.profile_result
    print(f"profiling: {pr.n_points} start points, {pr.mean_steps:.1f} L-BFGS steps, "
          f"{100 * pr.converged_fraction:.1f}% converged")
    if device.type == "cuda":
        print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**20:,.0f} MiB")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak host RSS {rss:,.0f} MiB")


if __name__ == "__main__":
    main()

"""Benchmark of the five-step sampler: per-step time, samples/s, ESS/N and peak memory.

(a) paper hyperparameters (Table 5, "Top"), 10M samples, on GPU::

    python benchmarks/bench_sampler.py --device cuda [--target top]

(b) a reduced CPU configuration::

    python benchmarks/bench_sampler.py --device cpu --reduced

The default target is a 22-dimensional correlated Gaussian stand-in for the top-quark
likelihood (``--target top`` uses ``smeft_pyhf.likelihood.build_likelihood`` when available).
"""

from __future__ import annotations

import argparse
import logging
import resource
import time

import torch

from smeft_pyhf.sampler.pipeline import STEPS, SamplerConfig, run_sampler
from smeft_pyhf.sampler.toys import CorrelatedGaussian, random_covariance


def _target(kind: str, device: torch.device):
    if kind == "top":
        raise SystemExit("--target top: build the top likelihood with "
                         "smeft_pyhf.likelihood.build_likelihood (not wired up here yet)")
    g = torch.Generator().manual_seed(22)
    cov = random_covariance(22, generator=g, dtype=torch.float64)
    mean = torch.randn(22, generator=g, dtype=torch.float64)
    t = CorrelatedGaussian(mean, cov).to(device)
    return t, [f"c{i}" for i in range(22)], float(t.std.max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--reduced", action="store_true")
    parser.add_argument("--target", default="gauss22", choices=["gauss22", "top"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    device = torch.device(args.device)
    target, names, scale = _target(args.target, device)
    config = SamplerConfig.reduced() if args.reduced else SamplerConfig.paper("top")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    res = run_sampler(target, names=names, config=config, seed=args.seed, progress=False,
                      init_scale=scale)
    total = time.perf_counter() - t0
    print(f"device {device}, target {args.target}, {'reduced' if args.reduced else 'paper'} "
          f"config, {len(names)} dims")
    for step in STEPS:
        print(f"  {step:9s} {res.timings[step]:9.2f} s")
    print(f"  total     {total:9.2f} s")
    sample_s = res.timings["sample"]
    print(f"samples {res.n_samples}, {res.n_samples / sample_s:,.0f} samples/s in step 4")
    print(f"ESS {res.ess:,.0f}, ESS/N {res.ess_fraction:.4f}, log Z {res.log_evidence:.4f}")
    pr = res.profile_result
    print(f"profiling: {pr.n_points} start points, {pr.mean_steps:.1f} L-BFGS steps, "
          f"{100 * pr.converged_fraction:.1f}% converged")
    if device.type == "cuda":
        print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**20:,.0f} MiB")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak host RSS {rss:,.0f} MiB")


if __name__ == "__main__":
    main()

"""The paper's toys (arXiv:2411.00942 Sec. 4.1) through the whole five-step sampler.

Usage: python benchmarks/bench_toys.py [--toys gmm4,gmm10,spiral007,spiral0005]
                                       [--config reduced|cpu|paper] [--device cpu] [--seed 1]

For each toy it prints the time per step, samples/s of step 4, ESS/N, peak memory, and the
checks against the known truth:
* Gaussian mixture (d = 4, 10): the weighted mass of every mode (truth 10/14 and 1/14 each)
  and the worst absolute deviation;
* two spirals (sigma = 0.007, 0.0005): the mass of each spiral (truth 1/2), the mass within
  5 sigma of the curves (truth ~1), and the Kolmogorov distance between the weighted
  distribution of the radius (= the curve parameter t) and the exact arc-length-uniform one.
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from smeft_pyhf.sampler.pipeline import SamplerConfig, run_sampler
from smeft_pyhf.sampler.toys import GaussianMixture, TwoSpirals

TOYS = {
    "gmm4": lambda: GaussianMixture(4.0),
    "gmm10": lambda: GaussianMixture(10.0),
    "spiral007": lambda: TwoSpirals(sigma=0.007),
    "spiral0005": lambda: TwoSpirals(sigma=0.0005),
}


def config(name: str) -> SamplerConfig:
    """``reduced`` (seconds), ``cpu`` (a minute or two per toy on 2 cores) or ``paper``."""
    if name == "paper":
        return SamplerConfig()
    base = SamplerConfig.reduced()
    if name == "reduced":
        return base.replace(sample=base.sample.replace(keep_samples=80_000))
    return base.replace(
        prescale=base.prescale.replace(n_samples=4096, n_steps=300),
        flow=base.flow.replace(n_blocks=6, hidden_features=64),
        pretrain=base.pretrain.replace(epochs=6),
        train=base.train.replace(n_batches=300, batch_size=1024, buffered_per_online=6,
                                 buffer_capacity=65536),
        sample=base.sample.replace(n_batches=5, batch_size=100_000, keep_samples=200_000),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--toys", default=",".join(TOYS))
    parser.add_argument("--config", choices=["reduced", "cpu", "paper"], default="cpu")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    device = torch.device(args.device)
    for name in args.toys.split(","):
        toy = TOYS[name]().to(device)
        cfg = config(args.config)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        result = run_sampler(toy, names=["x", "y"], ranges=toy.ranges, config=cfg,
                             seed=args.seed, progress=False,
                             init_scale=toy.init_scale)
        wall = time.perf_counter() - start
        sr = result.sample_result
        x, w = sr.samples.cpu(), torch.softmax(sr.samples_log_weight.double().cpu(), 0)
        toy = toy.cpu()
        if isinstance(toy, GaussianMixture):
            masses = toy.double().mode_masses(x.double(), w)
            checks = {"masses": [round(float(m), 4) for m in masses],
                      "max_mass_error": float((masses - toy.weights).abs().max())}
        else:
            checks = toy.weighted_summary(x, w)
        steps = ", ".join(f"{k} {v:.1f}" for k, v in result.timings.items())
        rate = result.sample_result.n_samples / max(result.timings.get("sample", float("nan")), 1e-9)
        if device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(device) / 2**20
            memory = f"peak GPU memory {peak:.0f} MiB"
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            memory = f"peak RSS {peak:.0f} MiB"
        print(f"{name} [{args.config}, {device}]: {wall:.1f} s ({steps}); "
              f"{rate:.3g} samples/s; ESS/N {result.sample_result.ess_fraction:.3f} of {result.sample_result.n_samples}; "
              f"{memory}")
        print(f"  {checks}")


if __name__ == "__main__":
    main()

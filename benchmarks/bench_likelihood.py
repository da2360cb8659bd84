"""Benchmark the combined likelihood: log_prob and log_prob + gradient for 100k points.

Two selections:

* ``top``: all 67 top-quark SMEFiT sets of the database, with the coefficients of
  ``LHC_NLO_QUAD_GLOB.yaml`` that appear in their theory tables;
* ``glob``: the whole ``LHC_NLO_QUAD_GLOB.yaml`` selection restricted to the datasets present in
  the database (the missing ones are printed), with its free coefficients.

Usage::

    python benchmarks/bench_likelihood.py [--device cuda] [--points 100000] [--repeat 3]

Prints milliseconds per batch (best of ``--repeat``) for float32 and float64.
"""

from __future__ import annotations

import argparse
import copy
import os
import time
from pathlib import Path

import torch

from smeft_pyhf.likelihood import build_likelihood, read_smefit_runcard, top_quark_datasets

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SMEFT_PYHF_SHARED_DATA", REPO.parent / "shared" / "data"))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _time(fn, device: torch.device, repeat: int) -> float:
    fn()
    _sync(device)
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def bench(name: str, likelihood, *, device: torch.device, points: int, repeat: int) -> None:
    block = likelihood.terms[0]
    print(f"\n[{name}] {len(likelihood.names)} coefficients, {block.term.n_data} measurements, "
          f"{block.predictions.n_pairs} quadratic pairs, device {device}")
    for dtype in (torch.float32, torch.float64):
        lik = copy.deepcopy(likelihood).to(device=device, dtype=dtype)
        gen = torch.Generator(device="cpu").manual_seed(0)
        x = (0.1 * torch.randn(points, lik.dim, generator=gen, dtype=dtype)).to(device)

        def forward(lik=lik, x=x):
            with torch.no_grad():
                return lik.log_prob(x)

        def backward(lik=lik, x=x):
            xg = x.clone().requires_grad_(True)
            lik.log_prob(xg).sum().backward()
            return xg.grad

        t_fwd = _time(forward, device, repeat)
        t_bwd = _time(backward, device, repeat)
        print(f"  {dtype!s:14s} log_prob {t_fwd:9.1f} ms / {points} points   "
              f"log_prob+grad {t_bwd:9.1f} ms / {points} points")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--database", type=Path, default=SHARED / "smefit_database")
    parser.add_argument("--runcard", type=Path,
                        default=SHARED / "smefit_runcards" / "LHC_NLO_QUAD_GLOB.yaml")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
          f"load average {os.getloadavg()[0]:.1f}")

    selection = read_smefit_runcard(args.runcard)
    top_sets = top_quark_datasets(args.database)
    top_sel = selection.restrict(args.database, top_only=True)
    t0 = time.perf_counter()
    top = build_likelihood(database=args.database, datasets=top_sets,
                           coefficients=top_sel.coefficients)
    print(f"top: {len(top_sets)} datasets, built in {time.perf_counter() - t0:.2f} s; "
          f"coefficients: {', '.join(top.names)}")
    full_sel = selection.restrict(args.database)
    t0 = time.perf_counter()
    glob = build_likelihood(database=args.database, datasets=full_sel)
    print(f"glob: {len(full_sel.datasets)} of {len(selection.datasets)} datasets of "
          f"{args.runcard.name}, built in {time.perf_counter() - t0:.2f} s; missing from the "
          f"database: {', '.join(full_sel.missing_datasets) or 'none'}")
    bench("top", top, device=device, points=args.points, repeat=args.repeat)
    bench("glob", glob, device=device, points=args.points, repeat=args.repeat)


if __name__ == "__main__":
    main()

"""Steps 4 (sampling) and 5 (profiling) in-process against a local Dask cluster, same run.

Runs the five steps of a runcard's fit in-process with a checkpoint, then repeats steps 4 and 5
from that checkpoint (steps 1-3 taken from it) on a ``LocalCluster`` of ``--workers``
single-threaded processes (or on ``--scheduler ADDRESS``), and prints the per-step times, their
ratio and whether the histograms and profiles are identical::

    python benchmarks/bench_dask.py                              # embedded default, 2 workers
    python benchmarks/bench_dask.py configs/top_quark_fit.yaml --workers 2

The in-process run uses torch's default thread count (all cores; ``--threads`` to change it),
each Dask worker one thread. Results are identical bit for bit at equal thread counts; with
more threads in-process, torch's elementwise kernels may round a few float32 elements
differently (the script prints the largest difference). The cluster's start (worker processes
importing torch) is timed separately, not in the ratio.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
import time
from pathlib import Path

import torch

from smeft_pyhf._io import load_tensors, save_tensors
from smeft_pyhf.cluster import open_runner
from smeft_pyhf.fit import default_runcard_path
from smeft_pyhf.fit.run import build_fit_likelihood, fit_target
from smeft_pyhf.fit.runcard import build_sampler_config, load_runcard
from smeft_pyhf.sampler import pipeline
from smeft_pyhf.sampler.checkpoint import CHECKPOINT_FILE, RESULT_TYPES
from smeft_pyhf.sampler.pipeline import run_sampler


def _forget_steps_4_5(folder: Path) -> None:
    """Drop steps 4 and 5 from the checkpoint in ``folder`` (the pipeline's file format), so
    that the next run resumes after step 3."""
    path = folder / CHECKPOINT_FILE
    state = load_tensors(path, types=RESULT_TYPES)
    state["done"] = [s for s in state["done"] if s not in ("sample", "profile")]
    for step in ("sample", "profile"):
        state["results"].pop(step, None)
        state["timings"].pop(step, None)
    save_tensors(path, state)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runcard", nargs="?", type=Path, default=None,
                        help="runcard (default: the embedded default of `smeft-pyhf fit`)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--scheduler", default=None, help="a running cluster instead")
    parser.add_argument("--seed", type=int, default=None, help="default: the runcard's")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads of the in-process run (default: torch's; 1 gives "
                        "results identical bit for bit to the single-threaded workers)")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--in-process", action="store_true",
                        help="repeat steps 4 and 5 in-process too (a check of the resume)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("distributed", "tornado", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    if args.threads:
        torch.set_num_threads(args.threads)
    rc = load_runcard(args.runcard or default_runcard_path())
    seed = rc.seed if args.seed is None else args.seed
    cfg = build_sampler_config(rc.sampler, where="benchmark")
    likelihood = build_fit_likelihood(rc)
    bounds = getattr(likelihood, "bounds", None)
    ranges = {n: rc.ranges.get(n, tuple(float(v) for v in bounds[i]) if bounds is not None
                               else (-1.0, 1.0))
              for i, n in enumerate(likelihood.names)}  # as `smeft-pyhf fit` builds them
    t = fit_target(likelihood, ranges, device=rc.device, dtype=getattr(torch, rc.dtype))
    common = {"names": t.names, "ranges": t.ranges, "config": cfg, "seed": seed,
              "progress": not args.quiet, "init_scale": t.init_scale, "init_mean": t.init_mean,
              "support": t.ranges}
    print(f"runcard {rc.source}: {len(t.names)} coefficients, seed {seed}, "
          f"torch threads {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        local = run_sampler(t.log_prob, checkpoint_dir=folder / "local", **common)
        shutil.copytree(folder / "local", folder / "dask")
        _forget_steps_4_5(folder / "dask")
        t0 = time.perf_counter()
        with open_runner(workers=None if args.scheduler or args.in_process else args.workers,
                         scheduler=args.scheduler, device=rc.device) as runner:
            start = time.perf_counter() - t0
            dist = run_sampler(t.log_prob, checkpoint_dir=folder / "dask", runner=runner,
                               **common)
            n_workers = runner.n_workers if runner is not None else 1
    assert dist.resumed_steps == ("prescale", "pretrain", "train"), dist.resumed_steps
    fields = {"marginal1d": "sample_result", "marginal2d": "sample_result",
              "profile1d": "profile_result", "profile2d": "profile_result",
              "best_fit": "profile_result"}
    def value(res: pipeline.SamplerResult, f: str) -> torch.Tensor:
        return getattr(getattr(res, fields[f]), f)

    differ = [f for f in fields if not torch.equal(value(local, f), value(dist, f))]
    for f in differ:
        print(f"{f} differs: largest difference "
              f"{float((value(local, f) - value(dist, f)).abs().max()):.3g}")
    same = not differ
    print(f"\n{'step':<10}{'in-process [s]':>16}{f'{n_workers} workers [s]':>16}{'ratio':>8}")
    total_l = total_d = 0.0
    for step in ("sample", "profile"):
        a, b = local.timings[step], dist.timings[step]
        total_l, total_d = total_l + a, total_d + b
        print(f"{step:<10}{a:>16.2f}{b:>16.2f}{a / b:>8.2f}")
    print(f"{'4+5':<10}{total_l:>16.2f}{total_d:>16.2f}{total_l / total_d:>8.2f}")
    print(f"cluster start {start:.1f} s (not in the ratio); steps 1-3 in-process "
          f"{sum(local.timings[s] for s in ('prescale', 'pretrain', 'train')):.1f} s; "
          f"samples {local.sample_result.n_samples}, profile start points "
          f"{local.profile_result.n_points}; identical results: {same}")


if __name__ == "__main__":
    main()

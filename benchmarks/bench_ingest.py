"""Time `ingest` on the ATLAS s-channel and ttZ (3L) workspaces, step by step (CPU).

Usage: python benchmarks/bench_ingest.py [--n-impacts 20] [--n-scans 10] [--data ../shared/data]

Prints wall and process (CPU) seconds per step: load, mapping, fit, total, breakdown (per
category/group refits), impacts, scans, write. On a shared machine the CPU column is the
meaningful one.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

from smeft_pyhf.ingest.pipeline import ingest

REPO = Path(__file__).resolve().parents[1]
CASES = {
    "s-channel": ("atlas_top_schannel_13TeV/workspace.json", "atlas_schannel"),
    "ttZ 3L": ("atlas_top_ttZ_13TeV/3L_workspace.json", "atlas_ttZ_3L"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--n-impacts", type=int, default=20)
    parser.add_argument("--n-scans", type=int, default=10)
    parser.add_argument("--breakdown", choices=["hesse", "profile"], default="hesse")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    for label, (relative, mapping) in CASES.items():
        with tempfile.TemporaryDirectory() as tmp:
            wall, cpu = time.perf_counter(), time.process_time()
            result = ingest(
                args.data / relative, mapping=mapping, output=Path(tmp) / "card.yaml",
                n_impacts=args.n_impacts, n_scans=args.n_scans, breakdown=args.breakdown,
            )
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        steps = ", ".join(f"{k} {v:.1f}" for k, v in result.timings.items())
        card = result.card
        print(f"{label}: {wall:.1f} s wall, {cpu:.1f} s CPU  (steps, wall s: {steps})")
        print(f"  mu = {card.best_fit:.4f} +- {card.measurement['total']['symmetric']:.4f}, "
              f"{card.diagnostics['fits']} fits, {card.diagnostics['n_parameters']} parameters")


if __name__ == "__main__":
    main()

#!/usr/bin/env bash
# The GPU checks of issues 3, 4 and 5, run ON the device machine (see prepare.sh):
#   quick: likelihood benchmark (100k points, top set and whole GLOB selection) and the
#          five-step sampler with the paper's top settings on the real top likelihood (10M
#          samples); about 4 minutes on an H100/H200.
#   glob:  `smeft-pyhf fit configs/glob_quad_fit.yaml --device cuda` with Table 5's combined
#          column; checkpointed, so a second call resumes where a timed-out one stopped.
# Logs go to $OUT (the device tool brings them back).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-/tmp/gpu_out}"; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1
export SMEFT_PYHF_SHARED_DATA="$PWD/.gpu_shared/data"
[ -e ../shared ] || ln -s "$PWD/.gpu_shared" ../shared
(nvidia-smi -L || echo "no nvidia-smi") | tee "$OUT/device.log"
python3 -c "import torch, zuko, pyhf; print('torch', torch.__version__, 'zuko', zuko.__version__)" \
  | tee -a "$OUT/device.log"
case "${1:-quick}" in
  quick)
    timeout 120 python3 benchmarks/bench_likelihood.py --device cuda 2>&1 \
      | tee "$OUT/bench_likelihood.log"
    timeout 330 python3 benchmarks/bench_sampler.py --device cuda --target top 2>&1 \
      | tee "$OUT/bench_sampler.log"
    ;;
  glob)
    python3 -c "import yaml; d = yaml.safe_load(open('configs/glob_quad_fit.yaml')); \
d.update(device='cuda', sampler={'paper': 'combined'}); \
yaml.safe_dump(d, open('configs/.glob_gpu.yaml', 'w'), sort_keys=False)"
    timeout 560 python3 -c "from smeft_pyhf.cli import main; main()" fit configs/.glob_gpu.yaml \
      --device cuda --output glob_gpu_results 2>&1 | tee "$OUT/glob_fit.log"
    [ -f glob_gpu_results/results.json ] && cp glob_gpu_results/summary.pdf "$OUT/" 2>/dev/null
    ;;
  *) echo "usage: run_checks.sh quick|glob" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# Prepare, on this (CPU) machine, what the GPU checks need on a lent device machine, which
# has torch but neither zuko nor pyhf and cannot reach ../shared or the internet:
#   .whl/         wheels of the missing packages (Python 3.12, x86-64)
#   .gpu_shared/  a copy of ../shared/data/{smefit_database,smefit_runcards} for that run only
# Both are git-ignored through .git/info/exclude and never committed (the data stays
# third-party). Then call the device tool with
#   carry: [".whl", ".gpu_shared"]   command: bash benchmarks/gpu/run_checks.sh quick
# and, for the whole GLOB fit (it resumes from its checkpoint when a call runs out of time),
#   carry: [".whl", ".gpu_shared"]   command: bash benchmarks/gpu/run_checks.sh glob
set -euo pipefail
cd "$(dirname "$0")/../.."
shared="${SMEFT_PYHF_SHARED_DATA:-../shared/data}"
for path in /.whl/ /.gpu_shared/ /glob_gpu_results/ /.glob_gpu_results.partial-work/ /configs/.glob_gpu.yaml; do
  grep -qxF "$path" .git/info/exclude 2>/dev/null || echo "$path" >> .git/info/exclude
done
rm -rf .whl .gpu_shared
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .whl \
  zuko==1.6.0 pyhf==0.7.6 jsonschema==4.26.0 jsonschema-specifications==2025.9.1 \
  referencing==0.37.0 rpds-py==2026.9.1 jsonpatch==1.48 jsonpointer==3.12
mkdir -p .gpu_shared/data
cp -r "$shared/smefit_database" "$shared/smefit_runcards" .gpu_shared/data/
du -sh .whl .gpu_shared

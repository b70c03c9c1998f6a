#!/usr/bin/env bash
# The GPU figures of issue #12 on one GPU (<= 8 min): synthesis speed vs the authors'
# loop (DeiT-S, Swin-T at 224), QAT step cost, peak memory of the full-size Mask R-CNN /
# UperNet Swin-T configs, and a 2-process NCCL run (gloo fallback on one GPU).
# Each part has its own timeout; a failed part is recorded, not fatal.
#   tools/gpu_check.sh [OUT_DIR] [benchmarks/gpu_check.py arguments]
#   tools/gpu_check.sh /tmp/smoke --device cpu --smoke      # CPU smoke run (~1 min)
set -uo pipefail
OUT=${1:-work_dirs/gpu_check}
PYTHON=${PYTHON:-python}
cd "$(dirname "$0")/.."
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" timeout 570 \
    "$PYTHON" -m benchmarks.gpu_check --out "$OUT" "${@:2}"
rc=$?
echo "gpu_check exit $rc; figures: $OUT/gpu_check.json, $OUT/gpu_check.md"
exit $rc

#!/usr/bin/env bash
# The prepared device check of issue 16, run ON the lent GPU machine in the repo root, with
# `.gpu/` carried (made here by `python -m benchmarks.common.gpu_bundle`). Fits in about 8 minutes:
#   1. ProFL and FedAvg-full at paper scale (ResNet-18, CIFAR-10 JPEG subset, 100 nodes,
#      10 a round), 3 minutes each, in-process (no Ray): accuracy per round;
#   2. CUDA peaks of the fine splits with and without plans at batch 64.
# Results land in $OUT (paper_gpu.md, curves.csv, peaks.md, runs/*/results.json).
set -euo pipefail
OUT=${OUT:-/tmp/paper_gpu}
mkdir -p "$OUT"
MINUTES=${MINUTES:-3}
# ProFL's stage 2 shares ROUNDS. On the H100 (2026-11-28) ProFL ran 44 rounds and FedAvg-full
# 30 in 3 minutes; with 60 the time box cut ProFL inside its 4th of 5 steps, and its
# deliverable full model (block 4 untrained) scored 0.14. 40 rounds (8 a step) let its
# schedule finish inside the box; FedAvg-full trains until the box ends.
ROUNDS=${ROUNDS:-40}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .gpu/whl/*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 PROFL_CACHE_DIR=/tmp/profl-cache
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/device.txt" || true
python3 -m benchmarks.accuracy.paper_gpu --preset paper_cifar10_resnet18 --methods profl,fedavg \
  --minutes "$MINUTES" --data-dir .gpu/data --out "$OUT" \
  --extra-run-config "num-server-rounds=$ROUNDS min-rounds-per-step=4 eval-every=2" \
  --peaks resnet18_fine,resnet34_fine,vgg16_fine --peaks-batch 64 2>&1 | tee "$OUT/log.txt"

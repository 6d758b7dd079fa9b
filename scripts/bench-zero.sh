#!/usr/bin/env bash
# ZeRO communication and memory: for N = 1, 2, 4 ranks and ZeRO stages 0-3,
# one training step of the tiny preset (one micro-batch of 4 per rank),
# printing the bytes each collective moved on rank 0 next to the ZeRO paper's
# 2 psi (stages 0-2) or 3 psi (stage 3), the optimizer state per rank next to
# 12 bytes x params / N, and the model weights resident between steps.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="$ROOT/${MOETRAIN_BUILD_DIR:-build}/bin/bench_train_step"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
for n in 1 2 4; do
  for zero in 0 1 2 3; do
    mpirun --oversubscribe --bind-to none -np $n -x OMP_NUM_THREADS=1 "$BIN" --preset tiny \
      --steps 2 --warmup 1 --threads 1 \
      --set train.global_batch=$((4 * n)) --set train.micro_batch=4 --set parallel.zero_stage=$zero "$@" \
      | grep -v '^#' | grep -v '^preset'
  done
done

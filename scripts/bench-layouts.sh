#!/usr/bin/env bash
# Parallel layouts: the tiny preset (fp32, CPU, one intra-op thread per rank,
# global batch 16 in micro-batches of 2) under each layout of the
# tensor/pipeline/expert acceptance set, then a pipeline sweep. For each it
# prints ms/step, one step's bytes per group and collective type summed over
# all ranks, and under pipeline parallelism each stage's idle time next to
# the ideal bubble (p-1)/m.
#
#   bash scripts/bench-layouts.sh [--steps N] [extra bench_train_step args]
#
# Ranks beyond the machine's cores share them, so time per step only compares
# layouts of the same rank count on the same machine.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="$ROOT/${MOETRAIN_BUILD_DIR:-build}/bin/bench_train_step"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

run() {  # TITLE NP ARGS...
  local title=$1 np=$2; shift 2
  echo "== $title ($np rank(s))"
  mpirun --oversubscribe --bind-to none -np "$np" -x OMP_NUM_THREADS=1 "$BIN" --preset tiny --layout \
    --steps 5 --warmup 1 --threads 1 --set train.global_batch=16 --set train.micro_batch=2 \
    --set model.moe.capacity_factor=0 "$@" | grep -v '^#'
}

run "single process" 1
run "TP2" 2 --set parallel.tp=2
run "PP2, balanced by parameters" 2 --set parallel.pp=2
run "PP2, cut before the decoder" 2 --set parallel.pp=2 --set 'parallel.pp_cuts=[decoder.layers.0]'
run "PP4, cut inside the encoder and the decoder" 4 --set parallel.pp=4 \
  --set 'parallel.pp_cuts=[encoder.layers.1, decoder.layers.0, decoder.layers.1]'
run "DP2 x EP2" 2 --set parallel.ep=2
run "DP2 x TP2 x PP2, ZeRO 1" 8 --set parallel.tp=2 --set parallel.pp=2 --set parallel.zero_stage=1
run "DP2 x TP2 x PP2 x EP2, ZeRO 3" 8 --set parallel.tp=2 --set parallel.pp=2 --set parallel.ep=2 \
  --set parallel.zero_stage=3

# The bubble against the formula: two stages of equal compute (a model of 4
# decoder layers cut in the middle of the decoder, encoder and embedding
# tiny next to them), micro-batch counts 2..16, both schedules.
for schedule in 1f1b gpipe; do
  for m in 2 4 8 16; do
    run "PP2 $schedule, m = $m" 2 --set parallel.pp=2 --set parallel.schedule=$schedule \
      --set model.encoder_layers=1 --set model.decoder_layers=4 \
      --set 'parallel.pp_cuts=[decoder.layers.2]' --set train.global_batch=$((2 * m))
  done
done

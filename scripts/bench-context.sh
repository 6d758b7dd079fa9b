#!/usr/bin/env bash
# Context parallelism at long source lengths: configs/long-context.yaml's
# model (d_model 128, local attention, rotary positions; one sample of
# 4K-32K source tokens and a 512-token target per step, fp32, CPU) under
# CP 1, 2 and 4. For each run, bench_train_step measures ms/step, each rank's
# resident set before the first step and at its peak, and one step's bytes
# per CP collective; bench/context_table.py prints them next to the bytes the
# method predicts.
#
#   bash scripts/bench-context.sh [--lengths "4096 8192 16384 32768"] [--cps "1 2 4"]
#                                 [--mode ring|all_to_all] [--steps N] [--tile N] [--out FILE]
#
# --tile: the ring's fp32 scores per query tile (default 2^22 here, 16 MiB:
# the tile's working set is the same whatever the length, so a small one
# lets the per-token activations show).
#
# CP 1 runs the single-process path, whose attention materialises every
# head's L x L scores: runs where that would pass MAX_DENSE_GIB (default 6)
# are skipped with the estimate. Ranks beyond the machine's cores share them,
# so ms/step compares runs of the same rank count on the same machine.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="$ROOT/${MOETRAIN_BUILD_DIR:-build}/bin/bench_train_step"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
lengths="4096 8192 16384 32768" cps="1 2 4" mode=ring steps=2 out="" tile=4194304
while [[ $# -gt 0 ]]; do
  case $1 in
    --lengths) lengths=$2; shift 2 ;;
    --cps) cps=$2; shift 2 ;;
    --mode) mode=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --tile) tile=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "bench-context.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
out=${out:-$(mktemp /tmp/bench-context.XXXXXX.jsonl)}
: > "$out"
max_dense_gib=${MAX_DENSE_GIB:-6}
for length in $lengths; do
  for cp in $cps; do
    if [[ $cp == 1 ]]; then
      # Scores, probabilities and their gradients: 4 x heads x L^2 fp32.
      dense_gib=$(python3 -c "print(round(4 * 4 * $length ** 2 * 4 / 2 ** 30, 1))")
      if python3 -c "import sys; sys.exit(0 if $dense_gib > $max_dense_gib else 1)"; then
        echo "{\"src_len\": $length, \"cp\": 1, \"skipped\": \"dense attention needs about $dense_gib GiB\"}" >> "$out"
        continue
      fi
    fi
    echo "# source $length, CP $cp ($mode)" >&2
    mpirun --oversubscribe --bind-to none -np "$cp" -x OMP_NUM_THREADS=1 "$BIN" \
      --config "$ROOT/configs/long-context.yaml" --name "long-context" --json --steps "$steps" --warmup 1 \
      --threads 1 --ring-tile-elements "$tile" --set parallel.cp="$cp" --set parallel.cp_mode="$mode" --set data.src_len="$length" \
      --set train.global_batch=1 --set train.micro_batch=1 | grep '^{' >> "$out"
  done
done
python3 "$ROOT/bench/context_table.py" "$out"

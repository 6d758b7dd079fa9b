#!/usr/bin/env bash
# Tensor parallelism against the single process (fp32, CPU, dropout 0,
# dropless MoE, same global batch): per-step loss within rtol 1e-5 for 8 steps
# and the final parameters (assembled from the TP slices) within 1e-5, for
#   TP2 (ZeRO 0);
#   DP2 x TP2 with ZeRO 1, on a vocabulary (8001) that TP does not divide:
#     the padded vocabulary rows must not change the loss;
#   TP2 with ZeRO 3.
source "$(dirname "$0")/../e2e/lib.sh"
need_brown
: "${MOETRAIN_PYTHON:?}" "${MOETRAIN_MPIRUN:?}"
work="$MOETRAIN_E2E_WORK/tp_matches_single"
rm -rf "$work"
common=(--max-steps 8 --set log.every=1 --set train.eval_every=0 --set model.moe.capacity_factor=0
        --set train.global_batch=8 --set train.micro_batch=2 --set train.threads=1)

run_layout() {  # NAME NP EXTRA_ARGS...
  local name=$1 np=$2; shift 2
  $MOETRAIN_MPIRUN -np "$np" "$MOETRAIN_BIN" "${TINY_ARGS[@]}" --output-dir "$work/$name" "${common[@]}" "$@" \
    > "$work.$name.log" 2>&1 || { cat "$work.$name.log"; fail "$name run failed"; }
}

train_tiny --output-dir "$work/single" "${common[@]}" > "$work.single.log"
train_tiny --output-dir "$work/single-v8001" "${common[@]}" --set model.vocab_size=8001 > "$work.single-v8001.log"

run_layout tp2 2 --set parallel.tp=2
grep -q "tensor parallel 2" "$work.tp2.log" || fail "not a TP2 run"
echo "TP2:"
"$MOETRAIN_PYTHON" "$(dirname "$0")/compare_runs.py" "$work/single" "$work/tp2" --steps 8 \
  || fail "TP2 does not match the single-process run"

run_layout dp2-tp2-zero1-v8001 4 --set parallel.tp=2 --set parallel.zero_stage=1 --set model.vocab_size=8001
grep -q "on each of 2 data-parallel rank(s), ZeRO stage 1, tensor parallel 2" "$work.dp2-tp2-zero1-v8001.log" \
  || fail "not a DP2 x TP2 ZeRO 1 run"
echo "DP2 x TP2, ZeRO 1, vocabulary 8001:"
"$MOETRAIN_PYTHON" "$(dirname "$0")/compare_runs.py" "$work/single-v8001" "$work/dp2-tp2-zero1-v8001" --steps 8 \
  || fail "DP2 x TP2 ZeRO 1 does not match the single-process run"

run_layout tp2-zero3 2 --set parallel.tp=2 --set parallel.zero_stage=3
echo "TP2, ZeRO 3:"
"$MOETRAIN_PYTHON" "$(dirname "$0")/compare_runs.py" "$work/single" "$work/tp2-zero3" --steps 8 \
  || fail "TP2 ZeRO 3 does not match the single-process run"
echo "PASS"

#!/usr/bin/env bash
# Tensor parallelism against the single process (fp32, CPU, dropout 0,
# dropless MoE, same global batch): per-step loss within rtol 1e-5 for 8 steps,
# the final parameters (assembled from the TP slices) within 1e-5 and every
# parameter's gradient at step 1 within 1e-4 of its largest entry, for
#   TP2 (ZeRO 0);
#   DP2 x TP2 with ZeRO 1, on a vocabulary (8001) that TP does not divide:
#     the padded vocabulary rows must not change the loss;
#   TP2 with ZeRO 3.
work="$MOETRAIN_E2E_WORK/tp_matches_single"
source "$(dirname "$0")/layout_lib.sh"

run_single
run_single single-v8001 --set model.vocab_size=8001

run_layout tp2 2 --set parallel.tp=2
grep -q "tensor parallel 2" "$work.tp2.log" || fail "not a TP2 run"
compare_with_single tp2 "TP2"

run_layout dp2-tp2-zero1-v8001 4 --set parallel.tp=2 --set parallel.zero_stage=1 --set model.vocab_size=8001
grep -q "on each of 2 data-parallel rank(s), ZeRO stage 1, tensor parallel 2" "$work.dp2-tp2-zero1-v8001.log" \
  || fail "not a DP2 x TP2 ZeRO 1 run"
compare_with_single dp2-tp2-zero1-v8001 "DP2 x TP2, ZeRO 1, vocabulary 8001" single-v8001

run_layout tp2-zero3 2 --set parallel.tp=2 --set parallel.zero_stage=3
compare_with_single tp2-zero3 "TP2, ZeRO 3"
echo "PASS"

#!/usr/bin/env bash
# Expert parallelism against the single process (fp32, CPU, dropout 0,
# dropless MoE, same global batch): per-step loss within rtol 1e-5 for 8 steps,
# the final parameters (assembled from the EP and TP blocks) within 1e-5 and
# every parameter's gradient at step 1 within 1e-4 of its largest entry, for
#   DP2 x EP2 (ZeRO 0: experts all-reduced over their expert-DP group of 1);
#   DP4 x EP2 with ZeRO 1 (expert shards over expert-DP groups of 2);
#   DP2 x TP2 x EP2 with ZeRO 3.
work="$MOETRAIN_E2E_WORK/ep_matches_single"
source "$(dirname "$0")/layout_lib.sh"

run_single

run_layout dp2-ep2 2 --set parallel.ep=2
grep -q "on each of 2 data-parallel rank(s), ZeRO stage 0, tensor parallel 1, expert parallel 2" "$work.dp2-ep2.log" \
  || fail "not a DP2 x EP2 run"
compare_with_single dp2-ep2 "DP2 x EP2"

run_layout dp4-ep2-zero1 4 --set parallel.ep=2 --set parallel.zero_stage=1
compare_with_single dp4-ep2-zero1 "DP4 x EP2, ZeRO 1"

run_layout dp2-tp2-ep2-zero3 4 --set parallel.tp=2 --set parallel.ep=2 --set parallel.zero_stage=3
compare_with_single dp2-tp2-ep2-zero3 "DP2 x TP2 x EP2, ZeRO 3"
echo "PASS"

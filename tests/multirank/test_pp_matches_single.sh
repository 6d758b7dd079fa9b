#!/usr/bin/env bash
# Pipeline parallelism against the single process (fp32, CPU, dropout 0,
# dropless MoE, same global batch of 8 in 4 micro-batches of 2 per pipeline):
# per-step loss within rtol 1e-5 for 8 steps (and the evaluation loss at
# steps 4 and 8, run as a forward-only pipeline), the final parameters (gathered
# from every stage, the tied embedding written once by the first stage) within
# 1e-5 and every parameter's gradient at step 1 within 1e-4 of its largest
# entry, for
#   PP2, partition balanced by parameter count, 1F1B (also stopped after
#     step 4 and resumed);
#   PP2 under GPipe with untied embeddings (against an untied single run);
#   PP4 cut inside the encoder and inside the decoder:
#     [embed, enc0] [enc1, enc_norm] [dec0] [dec1, dec_norm, lm_head];
#   DP2 x PP2 with ZeRO 2;
#   DP2 x TP2 x PP2 with ZeRO 1;
#   DP2 x TP2 x PP2 x EP2 with ZeRO 3.
work="$MOETRAIN_E2E_WORK/pp_matches_single"
source "$(dirname "$0")/layout_lib.sh"

run_single

run_layout pp2 2 --set parallel.pp=2
grep -q "pipeline parallel 2" "$work.pp2.log" || fail "not a PP2 run"
grep -q "^pipeline: 2 stages, schedule 1f1b, 4 micro-batches per step" "$work.pp2.log" \
  || fail "PP2 did not print its stages"
compare_with_single pp2 "PP2 (1F1B, balanced partition)"

# The same, stopped after the step-4 checkpoint and resumed: every stage
# restores its own weights, moments and generators.
run_layout pp2-resumed 2 --set parallel.pp=2 --set checkpoint.every=4
rm -rf "$work/pp2-resumed/checkpoints/step-000008"
run_layout pp2-resumed 2 --set parallel.pp=2 --set checkpoint.every=4
grep -q "resumed from .*step-000004 at step 4" "$work.pp2-resumed.log" || fail "PP2 did not resume from step 4"
compare_with_single pp2-resumed "PP2, resumed at step 4"

run_single untied --set model.tie_embeddings=false
run_layout pp2-gpipe-untied 2 --set parallel.pp=2 --set parallel.schedule=gpipe --set model.tie_embeddings=false
compare_with_single pp2-gpipe-untied "PP2 (GPipe, untied embeddings)" untied

run_layout pp4 4 --set parallel.pp=4 --set 'parallel.pp_cuts=[encoder.layers.1, decoder.layers.0, decoder.layers.1]'
grep -q "stage 0 = embed .. encoder.layers.0; stage 1 = encoder.layers.1 .. encoder.final_norm; stage 2 = decoder.layers.0; stage 3 = decoder.layers.1 .. lm_head" \
  "$work.pp4.log" || { cat "$work.pp4.log"; fail "PP4 is not cut as asked"; }
compare_with_single pp4 "PP4 (cut inside the encoder and inside the decoder)"

run_layout dp2-pp2-zero2 4 --set parallel.pp=2 --set parallel.zero_stage=2
compare_with_single dp2-pp2-zero2 "DP2 x PP2, ZeRO 2"

run_layout dp2-tp2-pp2-zero1 8 --set parallel.tp=2 --set parallel.pp=2 --set parallel.zero_stage=1
grep -q "on each of 2 data-parallel rank(s), ZeRO stage 1, tensor parallel 2, expert parallel 1, pipeline parallel 2" \
  "$work.dp2-tp2-pp2-zero1.log" || fail "not a DP2 x TP2 x PP2 run"
compare_with_single dp2-tp2-pp2-zero1 "DP2 x TP2 x PP2, ZeRO 1"

run_layout dp2-tp2-pp2-ep2-zero3 8 --set parallel.tp=2 --set parallel.pp=2 --set parallel.ep=2 \
  --set parallel.zero_stage=3
grep -q "ZeRO stage 3, tensor parallel 2, expert parallel 2, pipeline parallel 2" "$work.dp2-tp2-pp2-ep2-zero3.log" \
  || fail "not a DP2 x TP2 x PP2 x EP2 run"
compare_with_single dp2-tp2-pp2-ep2-zero3 "DP2 x TP2 x PP2 x EP2, ZeRO 3"
echo "PASS"

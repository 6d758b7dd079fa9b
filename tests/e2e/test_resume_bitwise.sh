#!/usr/bin/env bash
# Acceptance: 20 steps straight and 10 steps + resume to 20 give the identical
# loss at step 20 and identical weights (fp32, CPU). decay_steps is fixed so
# that the LR schedule does not depend on --max-steps.
source "$(dirname "$0")/lib.sh"
need_brown
work="$MOETRAIN_E2E_WORK/resume"
rm -rf "$work"
common=(--set optim.decay_steps=20 --set checkpoint.every=10 --set log.every=1 --set train.eval_every=0)
train_tiny --output-dir "$work/straight" --max-steps 20 "${common[@]}"
train_tiny --output-dir "$work/resumed" --max-steps 10 "${common[@]}"
[[ -f "$work/resumed/checkpoints/step-000010/meta.json" ]] || fail "no checkpoint at step 10"
train_tiny --output-dir "$work/resumed" --max-steps 20 "${common[@]}" | tee "$work/resume.log"
grep -q "resumed from .*step-000010 at step 10" "$work/resume.log" || fail "the second run did not resume from step 10"
a=$(metric_at "$work/straight/metrics.jsonl" 20 loss)
b=$(metric_at "$work/resumed/metrics.jsonl" 20 loss)
echo "loss at step 20: straight $a, resumed $b"
[[ "$a" == "$b" ]] || fail "losses differ at step 20: $a vs $b"
h5diff "$work/straight/checkpoints/step-000020/rank-00000.h5" "$work/resumed/checkpoints/step-000020/rank-00000.h5" /model /model \
  || fail "weights at step 20 differ"
echo "PASS"

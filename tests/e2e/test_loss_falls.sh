#!/usr/bin/env bash
# Acceptance: 60 steps of configs/tiny.yaml on the Brown corpus bring the loss
# at step 60 at least 15% below step 1.
source "$(dirname "$0")/lib.sh"
need_brown
run="$MOETRAIN_E2E_WORK/loss_falls"
rm -rf "$run"
train_tiny --output-dir "$run" --max-steps 60 --set log.every=1 --set train.eval_every=30
first=$(metric_at "$run/metrics.jsonl" 1 loss)
last=$(metric_at "$run/metrics.jsonl" 60 loss)
eval_loss=$(metric_at "$run/metrics.jsonl" 60 eval_loss)
echo "loss at step 1: $first, at step 60: $last, eval loss at step 60: $eval_loss"
python3 -c "import sys; a,b=float(sys.argv[1]),float(sys.argv[2]); sys.exit(0 if b <= 0.85*a else 1)" "$first" "$last" \
  || fail "loss did not fall by 15% (step 1: $first, step 60: $last)"
[[ -f "$run/config.yaml" && -f "$run/checkpoints/step-000060/meta.json" ]] || fail "missing config.yaml or final checkpoint"
grep -q "d_model: 128" "$run/config.yaml" || fail "resolved config lacks model.d_model"
echo "PASS"

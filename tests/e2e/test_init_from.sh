#!/usr/bin/env bash
# --init-from starts a new run (step 0, fresh optimizer) from a checkpoint's
# weights: its first loss is that of the trained model, not of a fresh one.
source "$(dirname "$0")/lib.sh"
need_brown
work="$MOETRAIN_E2E_WORK/init_from"
rm -rf "$work"
common=(--set log.every=1 --set train.eval_every=0)
train_tiny --output-dir "$work/base" --max-steps 30 "${common[@]}" > /dev/null
train_tiny --output-dir "$work/tuned" --max-steps 2 "${common[@]}" \
  --init-from "$work/base/checkpoints/step-000030" | tee "$work/tuned.log"
grep -q "initialised weights from" "$work/tuned.log" || fail "no init-from message"
fresh=$(metric_at "$work/base/metrics.jsonl" 1 loss)
trained=$(metric_at "$work/base/metrics.jsonl" 30 loss)
first=$(metric_at "$work/tuned/metrics.jsonl" 1 loss)
echo "fresh model: $fresh; after 30 steps: $trained; first step of the new run: $first"
python3 -c "import sys; f,t,x=map(float,sys.argv[1:]); sys.exit(0 if abs(x-t) < 0.5*abs(f-t) else 1)" "$fresh" "$trained" "$first" \
  || fail "the new run did not start from the checkpoint's weights"
rc=0
train_tiny --output-dir "$work/bad" --max-steps 2 "${common[@]}" --init-from "$work/nowhere" 2> "$work/bad.err" || rc=$?
cat "$work/bad.err"
[[ $rc -eq 2 ]] && grep -q "init-from: checkpoint not found: $work/nowhere" "$work/bad.err" || fail "a missing --init-from is not a clear error"
echo "PASS"

#!/usr/bin/env bash
# A non-finite loss or gradient (fp32: not an fp16 overflow) stops training
# with exit 1 and one line naming the step and the first offending parameter;
# the checkpoints already written stay as they were.
source "$(dirname "$0")/lib.sh"
need_brown
run="$MOETRAIN_E2E_WORK/nan"
rm -rf "$run"
rc=0
# A learning rate of 1e30 sends the weights to ~1e30 after one step: the next
# forward overflows.
train_tiny --output-dir "$run" --max-steps 10 --set optim.lr=1e30 --set optim.warmup_steps=0 \
  --set optim.grad_clip=0 --set checkpoint.every=1 --set train.eval_every=0 --set log.every=1 \
  > "$run.log" 2> "$run.err" || rc=$?
cat "$run.err"
[[ $rc -eq 1 ]] || fail "exit code $rc, wanted 1"
[[ $(wc -l < "$run.err") -eq 1 ]] || fail "wanted one line on stderr"
grep -Eq "non-finite (loss|gradient) at step [0-9]+ .*first non-finite gradient: [a-z_]+" "$run.err" || fail "message lacks the step or the parameter"
bad_step=$(sed -n 's/.*at step \([0-9]*\).*/\1/p' "$run.err")
last=$(cat "$run/checkpoints/latest")
echo "failed at step $bad_step; latest checkpoint $last"
[[ "$last" == "$(printf 'step-%06d' $((bad_step - 1)))" ]] || fail "latest checkpoint should be the step before the failure"
[[ -f "$run/checkpoints/$last/meta.json" ]] || fail "the last checkpoint is incomplete"
[[ ! -e "$run/checkpoints/$(printf 'step-%06d' "$bad_step")" ]] || fail "a checkpoint of the failed step exists"
echo "PASS"

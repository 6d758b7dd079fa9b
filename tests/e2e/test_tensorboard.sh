#!/usr/bin/env bash
# TensorBoard files (log.tensorboard, on by default), read with the
# tensorboard package: every number of metrics.jsonl is there at the same
# step with the same value (tests/e2e/tensorboard_check.py)
#   - in a run resumed from an earlier checkpoint than its last step, whose
#     repeated steps the new file's session start makes TensorBoard drop;
#   - in a run of two phases, one folder per phase.
source "$(dirname "$0")/lib.sh"
need_brown
PY="$MOETRAIN_SOURCE_DIR/.venv/bin/python"
if ! "$PY" -c "import tensorboard" 2>/dev/null; then
  echo "SKIP: the tensorboard package is not in .venv (scripts/setup.sh installs it)"
  exit $SKIP
fi
work="$MOETRAIN_E2E_WORK/tensorboard"
rm -rf "$work"; mkdir -p "$work"
common=(--set log.every=1 --set train.eval_every=5 --set train.eval_batches=1 --set checkpoint.every=10
        --set checkpoint.keep=0 --set optim.decay_steps=20)

# 15 steps, then resumed from step 10: steps 11 to 15 run twice.
train_tiny --output-dir "$work/run" --max-steps 15 "${common[@]}" > "$work/first.log"
train_tiny --output-dir "$work/run" --max-steps 20 "${common[@]}" --resume "$work/run/checkpoints/step-000010" \
  > "$work/second.log"
grep -q "resumed from .*step-000010 at step 10" "$work/second.log" || fail "no resume at step 10"
[[ $(find "$work/run/tensorboard" -name 'events.out.tfevents.*' | wc -l) -eq 2 ]] \
  || fail "wanted one event file per run segment: $(ls "$work/run/tensorboard")"
"$PY" "$MOETRAIN_SOURCE_DIR/tests/e2e/tensorboard_check.py" "$work/run"

# Two phases: a folder each.
phases="[{name: warm, steps: 3}, {name: cool, steps: 3, optim: {lr: 0.0001, warmup_steps: 0, schedule: constant}}]"
train_tiny --output-dir "$work/phases" "${common[@]}" --set "phases=$phases" > "$work/phases.log"
[[ -d "$work/phases/tensorboard/warm" && -d "$work/phases/tensorboard/cool" ]] || fail "no folder per phase"
"$PY" "$MOETRAIN_SOURCE_DIR/tests/e2e/tensorboard_check.py" "$work/phases"

# Off: no folder.
train_tiny --output-dir "$work/off" --max-steps 2 --set log.tensorboard=false > "$work/off.log"
[[ ! -e "$work/off/tensorboard" ]] || fail "log.tensorboard=false wrote $work/off/tensorboard"
echo "PASS"

#!/usr/bin/env bash
# SIGTERM during training writes a checkpoint and exits 0; a rerun resumes
# from it.
source "$(dirname "$0")/lib.sh"
need_brown
run="$MOETRAIN_E2E_WORK/sigterm"
rm -rf "$run"
# exec: $! must be the trainer itself, not a subshell around it.
(exec "$MOETRAIN_BIN" "${TINY_ARGS[@]}" --output-dir "$run" --max-steps 100000 --set log.every=1 \
   --set train.eval_every=0 > "$run.log" 2>&1) &
pid=$!
on_exit 'kill -9 $pid 2>/dev/null'  # never leave a trainer behind
for _ in $(seq 1 600); do  # wait (up to 60 s) for three steps
  grep -q "^step 3/" "$run.log" 2>/dev/null && break
  sleep 0.1
done
kill -TERM $pid
rc=0; wait $pid || rc=$?
cat "$run.log"
[[ $rc -eq 0 ]] || fail "exit code $rc after SIGTERM"
grep -q "stopping on SIGTERM" "$run.log" || fail "no shutdown message"
latest=$(ls -d "$run"/checkpoints/step-* | tail -1)
[[ -f "$latest/meta.json" ]] || fail "no complete checkpoint after SIGTERM"
step=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['step'])" "$latest/meta.json")
train_tiny --output-dir "$run" --max-steps $((step + 2)) --set train.eval_every=0 | tee "$run.resume.log"
grep -q "resumed from .* at step $step" "$run.resume.log" || fail "did not resume at step $step"
echo "PASS"

#!/usr/bin/env bash
# One run per output directory: a second `train` into the directory of a
# running one exits 2 with one line naming the holder's host and pid; after a
# kill -9 of the first (the kernel drops its lock), a new run takes the
# directory and trains.
source "$(dirname "$0")/lib.sh"
need_brown
run="$MOETRAIN_E2E_WORK/run_lock"
work="$MOETRAIN_E2E_WORK/run_lock_work"
rm -rf "$run" "$work"; mkdir -p "$work"
# exec: $! must be the trainer itself, not a subshell around it.
(exec "$MOETRAIN_BIN" "${TINY_ARGS[@]}" --output-dir "$run" --max-steps 100000 --set log.every=1 \
   --set train.eval_every=0 --set checkpoint.every=0 > "$work/first.log" 2>&1) &
pid=$!
on_exit 'kill -9 $pid 2>/dev/null'  # never leave a trainer behind
for _ in $(seq 1 600); do  # wait (up to 60 s) for its first step
  grep -q "^step 1/" "$work/first.log" 2>/dev/null && break
  sleep 0.1
done
grep -q "^step 1/" "$work/first.log" || { cat "$work/first.log"; fail "the first run did not start"; }
cat "$run/.moetrain.lock"

expect_error "in use by another run (host $(hostname) pid $pid since " "${TINY_ARGS[@]}" --output-dir "$run" --max-steps 2
grep -q "choose another --output-dir" "$work/err" || fail "the refusal does not say what to do"
kill -0 $pid || fail "the refused run disturbed the first"

kill -9 $pid
wait $pid 2>/dev/null || true
train_tiny --output-dir "$run" --max-steps 2 --set train.eval_every=0 > "$work/third.log" 2>&1 ||
  { cat "$work/third.log"; fail "a run after kill -9 of the holder could not take the directory"; }
grep -q "pid " "$run/.moetrain.lock" || fail "the lock file does not name its last holder"
echo "PASS"

#!/usr/bin/env bash
# Acceptance: killing one rank (SIGKILL) of a 2-rank ZeRO-1 job mid-run ends
# the job non-zero within 60 s; the last complete checkpoint is intact; a rerun
# resumes from it and ends bitwise-identical (losses and weights) to an
# uninterrupted run.
source "$(dirname "$0")/../e2e/lib.sh"
need_brown
: "${MOETRAIN_PYTHON:?}" "${MOETRAIN_MPIRUN:?}"
work="$MOETRAIN_E2E_WORK/kill_rank"
rm -rf "$work"; mkdir -p "$work"
steps=40
common=(--max-steps $steps --set optim.decay_steps=$steps --set log.every=1 --set train.eval_every=0
        --set checkpoint.every=4 --set checkpoint.keep=0 --set parallel.zero_stage=1
        --set train.threads=1 --set parallel.timeout_s=30)
launch() { $MOETRAIN_MPIRUN -np 2 "$MOETRAIN_BIN" "${TINY_ARGS[@]}" "${common[@]}" --output-dir "$@"; }

launch "$work/straight" > "$work/straight.log" 2>&1 || { cat "$work/straight.log"; fail "uninterrupted run failed"; }

# exec: $! must be mpirun itself, whose children are the ranks.
(exec $MOETRAIN_MPIRUN -np 2 "$MOETRAIN_BIN" "${TINY_ARGS[@]}" "${common[@]}" --output-dir "$work/killed" \
   > "$work/killed.log" 2>&1) &
mpirun_pid=$!
on_exit 'kill -9 $mpirun_pid 2>/dev/null'
for _ in $(seq 1 1200); do  # up to 120 s for the step-8 checkpoint
  [[ -f "$work/killed/checkpoints/step-000008/meta.json" ]] && break
  sleep 0.1
done
[[ -f "$work/killed/checkpoints/step-000008/meta.json" ]] || { cat "$work/killed.log"; fail "no checkpoint at step 8"; }
victim=$(pgrep -P $mpirun_pid -f "$MOETRAIN_BIN" | tail -n 1)
echo "killing rank process $victim of mpirun $mpirun_pid"
[[ -n "$victim" ]] || fail "no rank process found under mpirun $mpirun_pid"
killed_at=$(date +%s.%N)
kill -9 "$victim"
rc=0
for _ in $(seq 1 900); do kill -0 $mpirun_pid 2>/dev/null || break; sleep 0.1; done
if kill -0 $mpirun_pid 2>/dev/null; then fail "the job is still running 90 s after a rank was killed"; fi
wait $mpirun_pid || rc=$?
elapsed=$(python3 -c "import sys,time; print(f'{time.time() - float(sys.argv[1]):.1f}')" "$killed_at")
echo "--- end of the killed job's output (exit code $rc, ended ${elapsed}s after the kill) ---"
tail -n 6 "$work/killed.log"
[[ $rc -ne 0 ]] || fail "the job exited 0 after a rank was killed"
python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) <= 60 else 1)" "$elapsed" || fail "the job took ${elapsed}s (> 60 s) to end"
grep -q "^step $steps/" "$work/killed.log" && fail "the killed job finished all steps: the kill came too late"

last=$(ls -d "$work"/killed/checkpoints/step-?????? | sort | tail -n 1)
for d in "$work"/killed/checkpoints/step-??????; do
  [[ -f "$d/meta.json" ]] || continue
  last="$d"
done
echo "last complete checkpoint: $last"
"$MOETRAIN_PYTHON" -c "
import json, sys, os, h5py
meta = json.load(open(os.path.join(sys.argv[1], 'meta.json')))
for f in meta['files']:
    with h5py.File(os.path.join(sys.argv[1], f), 'r') as h: assert 'rng' in h, f
print('intact: step', meta['step'], 'files', meta['files'])" "$last" || fail "the last checkpoint is damaged"

launch "$work/killed" > "$work/resumed.log" 2>&1 || { cat "$work/resumed.log"; fail "the rerun failed"; }
grep -q "resumed from $last at step" "$work/resumed.log" || { head "$work/resumed.log"; fail "the rerun did not resume from $last"; }
a=$(metric_at "$work/straight/metrics.jsonl" $steps loss)
b=$(metric_at "$work/killed/metrics.jsonl" $steps loss)
echo "loss at step $steps: uninterrupted $a, killed and resumed $b"
[[ "$a" == "$b" ]] || fail "losses differ at step $steps"
"$MOETRAIN_PYTHON" "$(dirname "$0")/compare_runs.py" "$work/straight" "$work/killed" --steps $steps --rtol 0 --atol 0 \
  || fail "the resumed run is not bitwise-identical to the uninterrupted one"
echo "PASS"

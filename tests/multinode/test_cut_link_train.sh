#!/usr/bin/env bash
# Cut link during training: `moetrain train` on 2 network-namespace hosts x 2
# ranks (launch/moetrain-mpirun, checkpoint every 4 steps, parallel.timeout_s
# 20). Once checkpoint step-000004 or later is complete, host 2's link goes
# down: the job must end non-zero within 60 s with a clear message, the newest
# complete checkpoint must be intact (meta.json parses, its rank files exist
# and h5ls reads them), and after the link comes back a rerun of the same
# command must resume from that checkpoint and train on.
source "$(dirname "$0")/lib.sh"
need_brown100
command -v h5ls >/dev/null || { echo "SKIP: h5ls (hdf5-tools) is not installed"; exit "$SKIP"; }
mn_hosts_up 2 2
run="$MOETRAIN_MULTINODE_WORK/cut_link_train-$NETNS_ID"
log="$run.log"
rm -rf "$run"

# 1. Train (400 steps: far more than it will get through) in the background
#    (a stalled launch starts over with an empty run folder).
MN_ON_RELAUNCH='rm -rf "$run"'
mn_launch_background "$log" 600 mn_ranks_wrote 90 --np 4 -- "$MOETRAIN_BIN" "${TRAIN_ARGS[@]}" \
  --output-dir "$run" --max-steps 400
pid=$MN_PID
unset MN_ON_RELAUNCH  # the resume below must never empty the run folder

# 2. Wait (up to 300 s) for a complete checkpoint at step 4 or later.
first=""
for _ in $(seq 1 1500); do
  first=$(newest_complete_checkpoint "$run")
  [[ -n "$first" ]] && break
  kill -0 $pid 2>/dev/null || break
  sleep 0.2
done
if [[ -z "$first" ]]; then
  rc=0; kill -0 $pid 2>/dev/null || wait $pid || rc=$?
  tail -n 30 "$log"
    fail "no complete checkpoint within 300 s (job exit code $rc if it ended)"
fi
echo "checkpoint $first is complete; cutting ${NETNS_ADDRS[1]}'s link"

# 3. Cut host 2's link; the job must end, non-zero, within 60 s (we wait 90).
cut=$(now)
netns_link_down 2
for _ in $(seq 1 900); do
  kill -0 $pid 2>/dev/null || break
  sleep 0.1
done
if kill -0 $pid 2>/dev/null; then
  tail -n 30 "$log"
  fail "the job was still running 90 s after the cut"
fi
rc=0; wait $pid || rc=$?
took=$(elapsed "$cut" "$(now)")
echo "the job ended with exit code $rc, $took s after the cut; its last lines:"
tail -n 20 "$log"
[[ $rc -ne 0 ]] || fail "the job exited 0 after losing a host"
python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) <= 60 else 1)" "$took" \
  || fail "the job took $took s (> 60 s) to end"
grep -qE "lost communication with a remote daemon|did not finish within|MPI_ABORT|aborting the job" "$log" \
  || fail "no clear error message in the job's output"

# 4. The newest complete checkpoint is intact.
ckpt=$(newest_complete_checkpoint "$run")
step=$(check_checkpoint "$ckpt" 4)
echo "newest complete checkpoint: $ckpt (step $step)"

# 5. Link back up; the same command resumes from it and trains 4 more steps.
netns_link_up 2
left=$(ip netns pids "${NETNS_NAMES[1]}" 2>/dev/null | xargs -r ps -o pid=,comm= -p | tr '\n' ' ' || true)
[[ -z "$left" ]] || echo "still running on host 2 from the cut job: $left"
rc=0
mn_launch "$run.resume.log" 600 --np 4 -- "$MOETRAIN_BIN" "${TRAIN_ARGS[@]}" --output-dir "$run" \
  --max-steps $((step + 4)) || rc=$?
echo "rerun exit code $rc; last lines:"
tail -n 12 "$run.resume.log"
[[ $rc -eq 0 ]] || fail "the rerun exited $rc"
grep -q "resumed from .* at step $step\$" "$run.resume.log" || fail "the rerun did not resume at step $step"
grep -q "^step $((step + 4))/" "$run.resume.log" || fail "the rerun did not reach step $((step + 4))"
after=$(check_checkpoint "$(newest_complete_checkpoint "$run")" 4)
[[ $after -eq $((step + 4)) ]] || fail "the newest checkpoint after the rerun is step $after, not $((step + 4))"
rm -rf "$run" "$log" "$run.resume.log"
echo "PASS"

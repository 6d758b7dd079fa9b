#!/usr/bin/env bash
# Training across "nodes": `moetrain train` (tiny config, 100 Brown documents)
# under launch/moetrain-mpirun on 2 network-namespace hosts x 2 ranks, 12
# steps: exit 0, metrics.jsonl has steps 1-12 with finite loss that falls, and
# the step-12 checkpoint is complete and holds a 4-rank layout.
source "$(dirname "$0")/lib.sh"
need_brown100
mn_hosts_up 2 2
run="$MOETRAIN_MULTINODE_WORK/train-$NETNS_ID"
log="$run.log"
rm -rf "$run"
start=$(now)
rc=0
mn_launch "$log" 600 --np 4 -- "$MOETRAIN_BIN" "${TRAIN_ARGS[@]}" --output-dir "$run" --max-steps 12 || rc=$?
echo "exit code $rc after $(elapsed "$start" "$(now)") s; last lines:"
tail -n 30 "$log"
[[ $rc -ne 124 && $rc -ne 137 ]] || fail "training did not finish within 600 s"
[[ $rc -eq 0 ]] || fail "training exited $rc"
check_metrics "$run/metrics.jsonl" 12 || fail "bad metrics in $run/metrics.jsonl"
ckpt=$(newest_complete_checkpoint "$run")
[[ -n "$ckpt" ]] || fail "no complete checkpoint in $run"
step=$(check_checkpoint "$ckpt" 4)
[[ $step -eq 12 ]] || fail "the newest checkpoint is step $step, not 12"
rm -rf "$run" "$log"
echo "PASS"

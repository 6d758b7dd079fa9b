#!/usr/bin/env bash
# A checkpoint save that runs out of disk ends the run with exit 1 and one
# moetrain line naming the file and the cause: no crash, no .partial
# directory left, the earlier checkpoint and `latest` as they were, and that
# checkpoint resumes. The run's output is on a 50 MB tmpfs: the step-2
# checkpoint (32 MB) fits, the step-4 one does not. One process, then 2 ranks
# (TP2) under mpirun, whose ranks agree the save failed. Mounting needs root
# (CI runs as root); the test skips, saying why, where it cannot mount.
source "$(dirname "$0")/../e2e/lib.sh"
need_brown
: "${MOETRAIN_MPIRUN:?}"
work="$MOETRAIN_E2E_WORK/disk_full_save"
rm -rf "$work"; mkdir -p "$work/disk"
[[ $(id -u) -eq 0 ]] || { echo "SKIP: mounting a tmpfs needs root"; exit $SKIP; }
mount -t tmpfs -o size=50m tmpfs "$work/disk" 2> "$work/mount.err" ||
  { echo "SKIP: cannot mount a tmpfs here: $(cat "$work/mount.err")"; exit $SKIP; }
on_exit 'umount "$work/disk"'

# disk_full_run NAME NP [TRAIN ARGS...]: trains 6 steps into the tmpfs on NP
# ranks, checkpoint every 2, and checks the failed save and the resume.
disk_full_run() {
  local name=$1 np=$2; shift 2
  local run="$work/disk/$name" rc=0 launcher=()
  # shellcheck disable=SC2206
  [[ $np -eq 1 ]] || launcher=($MOETRAIN_MPIRUN -np "$np")
  local train=("$MOETRAIN_BIN" "${TINY_ARGS[@]}" --set checkpoint.every=2 --set train.eval_every=0 "$@")
  "${launcher[@]}" "${train[@]}" --output-dir "$run" --max-steps 6 > "$work/$name.out" 2> "$work/$name.err" || rc=$?
  echo "[$name: exit $rc]"
  cat "$work/$name.err"
  [[ $rc -ne 0 ]] || fail "$name: exit code 0 after a failed save"
  [[ $(grep -c "^moetrain: " "$work/$name.err") -eq 1 ]] || fail "$name: wanted one moetrain line on stderr"
  grep -q "^moetrain: train failed: checkpoint step-000004 not saved: .*rank-0000[01].h5.*: No space left on device (the earlier checkpoints are unchanged)$" \
    "$work/$name.err" || fail "$name: the line does not name the checkpoint, the file and the cause"
  if grep -q -i -E "segmentation|signal [0-9]|backtrace" "$work/$name.err"; then fail "$name: crash text on stderr"; fi
  [[ -z $(find "$run/checkpoints" -maxdepth 1 -name '*.partial') ]] || fail "$name: a .partial directory was left"
  [[ $(cat "$run/checkpoints/latest") == step-000002 ]] || fail "$name: latest is not step-000002"
  [[ -f "$run/checkpoints/step-000002/meta.json" ]] || fail "$name: the step-2 checkpoint is not complete"
  # The step-2 checkpoint resumes (copied off the full disk).
  cp -r "$run" "$work/$name-resumed"
  "${launcher[@]}" "${train[@]}" --output-dir "$work/$name-resumed" --max-steps 3 > "$work/$name-resumed.log" 2>&1 ||
    { cat "$work/$name-resumed.log"; fail "$name: the step-2 checkpoint does not resume"; }
  grep -q "resumed from .* at step 2" "$work/$name-resumed.log" || fail "$name: did not resume at step 2"
  rm -rf "$run"  # the disk is the next case's
}

disk_full_run one 1
disk_full_run tp2 2 --set parallel.tp=2
echo "PASS"

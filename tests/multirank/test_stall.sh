#!/usr/bin/env bash
# The stall watchdog (log.stall_factor, log.stall_min_s): a run made to stall
# by the MOETRAIN_TEST_PAUSE hook prints the stall line, naming what rank 0
# waits on, within the configured time (stall_factor x the median step time,
# at least stall_min_s, plus the watchdog's 0.1 s poll), then a "stall over"
# line; a normal run never prints it.
#   - one process, 8 s asleep while loading step 6's batches: rank 0 waits
#     on the data;
#   - DP2 under mpirun, rank 1 asleep 8 s before step 6's compute: rank 0
#     waits in a collective of the dp group.
# The stalled runs use stall_factor 4: on a loaded machine a tiny step can
# take 0.4 s, and the pause must outlast the threshold by a wide margin.
source "$(dirname "$0")/../e2e/lib.sh"
need_brown
: "${MOETRAIN_MPIRUN:?}"
work="$MOETRAIN_E2E_WORK/stall"
rm -rf "$work"; mkdir -p "$work"
common=(--set train.eval_every=0 --set log.every=1)
stalled=(--set log.stall_factor=4 --set log.stall_min_s=1)

# The line's stalled seconds against its threshold, max(factor x median,
# min): not before it, and at most 1 s after.
check_stall_line() {  # LOG PATTERN
  local line
  line=$(grep -m1 '^stall: ' "$1") || fail "no stall line in $1"
  echo "$line"
  grep -q "$2" <<< "$line" || fail "the stall line does not name '$2'"
  python3 - "$line" <<'PY' || fail "the stall line came late"
import re, sys
line = sys.argv[1]
stalled = float(re.search(r"for ([0-9.]+) s since", line).group(1))
median = float(re.search(r"median step time ([0-9.]+) s", line).group(1))
threshold = max(4 * median, 1.0)
print(f"stalled {stalled:.2f} s when reported; threshold {threshold:.2f} s")
# The median is printed to 0.01 s: 4 x it is known to within 0.02 s.
sys.exit(0 if threshold - 0.03 <= stalled <= threshold + 1.0 else 1)
PY
  grep -q '^stall over: step 6 finished' "$1" || fail "no 'stall over' line in $1"
}

MOETRAIN_TEST_PAUSE=6:0:8:data train_tiny --output-dir "$work/data" --max-steps 8 "${common[@]}" "${stalled[@]}" > "$work/data.log"
check_stall_line "$work/data.log" "rank 0 is waiting on: loading the batches of step 6"

# shellcheck disable=SC2086
MOETRAIN_TEST_PAUSE=6:1:8:compute $MOETRAIN_MPIRUN -np 2 -x MOETRAIN_TEST_PAUSE "$MOETRAIN_BIN" "${TINY_ARGS[@]}" \
  --output-dir "$work/dp2" --max-steps 8 "${common[@]}" "${stalled[@]}" --set train.threads=1 > "$work/dp2.log"
check_stall_line "$work/dp2.log" "rank 0 is waiting on: a collective, [a-z_]* on the dp group"

# A normal run, with evaluations and checkpoints, prints none under the
# default factor of 10 (with a floor of 3 s, not the default 60).
train_tiny --output-dir "$work/normal" --max-steps 30 "${common[@]}" --set log.stall_factor=10 \
  --set log.stall_min_s=3 --set train.eval_every=10 \
  --set checkpoint.every=10 > "$work/normal.log"
if grep '^stall' "$work/normal.log"; then fail "a normal run printed a stall line"; fi
echo "PASS"

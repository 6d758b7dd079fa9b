# Shared helpers for the multi-node tests (sourced, not run): the network
# namespace hosts of netns_hosts.sh, the launch wrapper pointed at them, and
# the checks the training tests share.
# Environment from CTest: MOETRAIN_SOURCE_DIR, MOETRAIN_MULTINODE_WORK (a folder
# under the build tree), and as each test needs: MOETRAIN_BIN,
# MOETRAIN_SHARED_DATA, MOETRAIN_MULTINODE_PROBE (the mt_netns_probe program).
set -euo pipefail
: "${MOETRAIN_SOURCE_DIR:?}" "${MOETRAIN_MULTINODE_WORK:?}"
SKIP=77

# shellcheck source=netns_hosts.sh
source "$(dirname "${BASH_SOURCE[0]}")/netns_hosts.sh"

fail() { echo "FAIL: $*" >&2; exit 1; }

WRAPPER="$MOETRAIN_SOURCE_DIR/launch/moetrain-mpirun"
mkdir -p "$MOETRAIN_MULTINODE_WORK"

# mn_hosts_up N SLOTS: skips unless namespaces are possible, creates N hosts
# and sets MN_LAUNCH: the launch wrapper with the hostfile and the Open MPI
# settings that route through the namespaces (append `--np ... -- command`).
mn_hosts_up() {
  netns_hosts_require
  netns_hosts_up "$1" "$2" "$MOETRAIN_MULTINODE_WORK"
  # shellcheck disable=SC2034,SC2054  # used by the tests
  MN_LAUNCH=("$WRAPPER" --hostfile "$NETNS_HOSTFILE" --ranks-per-node "$2"
             --mca plm_rsh_agent "$NETNS_AGENT" --mca plm_rsh_no_tree_spawn 1
             --mca oob_tcp_if_include "$NETNS_SUBNET" --mca btl_tcp_if_include "$NETNS_SUBNET"
             --mca btl tcp,self)
}

# mn_launch_background LOG TIMEOUT_S STARTED WAIT_S ARGS...: starts
# `MN_LAUNCH ARGS...` in the background, into LOG under a TIMEOUT_S limit, and
# sets MN_PID; the job is killed when the test exits. Open MPI's rsh launch
# across the namespaces sometimes never starts one host's daemon, and then the
# job hangs before any rank runs (the launch harness, not the program under
# test): when the job still runs after WAIT_S seconds and `STARTED LOG` (a
# command) has not yet succeeded, the job is killed and launched once more,
# saying so; MN_ON_RELAUNCH (a command, if set) runs in between.
mn_launch_background() {
  local log=$1 limit=$2 started=$3 wait_s=$4; shift 4
  local attempt tenths
  for attempt in 1 2; do
    (exec timeout -k 10 "$limit" "${MN_LAUNCH[@]}" "$@" >"$log" 2>&1) &
    MN_PID=$!
    # timeout leads its own process group: kill the whole job.
    netns_hosts_on_exit "kill -9 -- -$MN_PID 2>/dev/null || kill -9 $MN_PID 2>/dev/null || true"
    tenths=0
    while kill -0 "$MN_PID" 2>/dev/null && ! "$started" "$log" && (( tenths < wait_s * 10 )); do
      sleep 0.1
      tenths=$((tenths + 1))
    done
    if (( attempt == 1 )) && kill -0 "$MN_PID" 2>/dev/null && ! "$started" "$log"; then
      echo "launch stalled: the job had not started ($started) within $wait_s s; killing it and launching it again"
      kill -9 -- -"$MN_PID" 2>/dev/null || kill -9 "$MN_PID" 2>/dev/null || true
      wait "$MN_PID" 2>/dev/null || true
      if [[ -n "${MN_ON_RELAUNCH:-}" ]]; then eval "$MN_ON_RELAUNCH"; fi
      continue
    fi
    return 0
  done
}

# A job has started once a rank wrote a line to its LOG (not the wrapper).
mn_ranks_wrote() { grep -qv '^moetrain-mpirun:' "$1" 2>/dev/null; }

# Runs `MN_LAUNCH ARGS...` into LOG under a TIMEOUT_S limit, relaunching a
# stalled launch once as mn_launch_background does, and returns its exit code.
mn_launch() {  # LOG TIMEOUT_S ARGS...
  local log=$1 limit=$2 rc=0; shift 2
  mn_launch_background "$log" "$limit" mn_ranks_wrote 90 "$@"
  wait "$MN_PID" || rc=$?
  return $rc
}

# Seconds since the epoch, with a fraction.
now() { date +%s.%N; }
elapsed() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$2"; }

# --- training tests -----------------------------------------------------------

need_brown() {
  : "${MOETRAIN_BIN:?}"
  if [[ ! -f "${MOETRAIN_SHARED_DATA:-}/brown.jsonl" ]]; then
    echo "SKIP: ${MOETRAIN_SHARED_DATA:-../shared/data}/brown.jsonl is absent"
    exit $SKIP
  fi
}

# The first 100 Brown documents, tokenized by the multinode.fixture_tokenize test.
BROWN100="$MOETRAIN_MULTINODE_WORK/brown100"

need_brown100() {
  need_brown
  [[ -f "$BROWN100/tokenizer.model" ]] || fail "$BROWN100 is missing: run the multinode.fixture_tokenize test first"
}

# `moetrain train` arguments: the tiny config on BROWN100, as the tests run it.
# shellcheck disable=SC2034  # used by the tests
TRAIN_ARGS=(train --config "$MOETRAIN_SOURCE_DIR/configs/tiny.yaml"
            --set data.train="$BROWN100" --set data.valid="$BROWN100"
            --set model.dropout=0 --set train.global_batch=16 --set train.micro_batch=4
            --set checkpoint.every=4 --set parallel.timeout_s=20
            --set log.every=1 --set train.eval_every=0)

# check_metrics METRICS_JSONL STEPS: steps 1..STEPS each logged once with a
# finite loss, and the loss at STEPS below the loss at step 1.
check_metrics() {
  python3 - "$1" "$2" <<'PY'
import json, math, sys
path, steps = sys.argv[1], int(sys.argv[2])
loss = {}
for line in open(path):
    rec = json.loads(line)
    if "loss" in rec and "step" in rec:
        loss[rec["step"]] = rec["loss"]
missing = [s for s in range(1, steps + 1) if s not in loss]
if missing:
    sys.exit(f"metrics.jsonl lacks steps {missing}")
bad = {s: l for s, l in loss.items() if not math.isfinite(l)}
if bad:
    sys.exit(f"non-finite loss at {bad}")
print("loss by step: " + ", ".join(f"{s}: {loss[s]:.4f}" for s in range(1, steps + 1)))
if not loss[steps] < loss[1]:
    sys.exit(f"loss did not fall: step 1 {loss[1]}, step {steps} {loss[steps]}")
PY
}

# newest_complete_checkpoint RUN_DIR: the newest step-* folder with a meta.json.
newest_complete_checkpoint() {
  local dir best=""
  for dir in "$1"/checkpoints/step-*; do
    [[ -f "$dir/meta.json" ]] && best=$dir
  done
  echo "$best"
}

# check_checkpoint DIR WORLD: meta.json parses, names its step (matching the
# folder), a layout of WORLD ranks when it records one, and rank files that
# exist and that h5ls can list. Prints the step.
check_checkpoint() {
  local dir=$1 world=$2 files f
  files=$(python3 - "$dir" "$world" <<'PY'
import json, os, sys
d, world = sys.argv[1], int(sys.argv[2])
meta = json.load(open(os.path.join(d, "meta.json")))
step = meta["step"]
if os.path.basename(d) != f"step-{step:06d}":
    sys.exit(f"{d}: meta.json says step {step}")
w = meta.get("layout", {}).get("world")
if w is not None and w != world:
    sys.exit(f"{d}: layout.world is {w}, expected {world} (did every rank train alone?)")
files = meta.get("files") or sorted(f for f in os.listdir(d) if f.startswith("rank-") and f.endswith(".h5"))
if not files:
    sys.exit(f"{d}: no rank-*.h5 files")
print(step)
for f in files:
    print(f)
PY
) || fail "checkpoint $dir is not intact"
  for f in $(tail -n +2 <<<"$files"); do
    [[ -f "$dir/$f" ]] || fail "checkpoint $dir: $f is missing"
    timeout 60 h5ls "$dir/$f" >/dev/null || fail "checkpoint $dir: h5ls cannot read $f"
  done
  echo "checkpoint $dir intact: $(tail -n +2 <<<"$files" | tr '\n' ' ')" >&2
  head -n 1 <<<"$files"
}

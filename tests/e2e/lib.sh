# Shared helpers for the end-to-end tests (sourced, not run).
# Environment from CTest: MOETRAIN_BIN, MOETRAIN_SHARED_DATA, MOETRAIN_SOURCE_DIR,
# MOETRAIN_E2E_WORK (a folder shared by the tests of one build).
set -euo pipefail
: "${MOETRAIN_BIN:?}" "${MOETRAIN_SOURCE_DIR:?}" "${MOETRAIN_E2E_WORK:?}"
SKIP=77

fail() { echo "FAIL: $*" >&2; exit 1; }

# A test keeps its files in `$work` (or `$run`) under MOETRAIN_E2E_WORK. When it
# passes, they are removed on exit so a whole suite stays within a few GB of disk;
# a failed or skipped test keeps them for inspection. Tests that need their own
# cleanup (a trainer to kill) register it with on_exit rather than `trap`.
_E2E_ON_EXIT=()
on_exit() { _E2E_ON_EXIT+=("$1"); }
_e2e_exit() {
  local rc=$? cmd dir
  for cmd in "${_E2E_ON_EXIT[@]}"; do eval "$cmd" || true; done
  if [[ $rc -eq 0 ]]; then
    for dir in "${work:-}" "${run:-}"; do
      [[ -n "$dir" && "$dir" == "$MOETRAIN_E2E_WORK"/* && "$dir" != "$BROWN_DATA" ]] && rm -rf "$dir"
    done
  fi
  return $rc
}
trap _e2e_exit EXIT

need_brown() {
  if [[ ! -f "${MOETRAIN_SHARED_DATA:-}/brown.jsonl" ]]; then
    echo "SKIP: ${MOETRAIN_SHARED_DATA:-../shared/data}/brown.jsonl is absent"
    exit $SKIP
  fi
}

# The Brown corpus tokenized once per build by the e2e.fixture_tokenize_brown test.
BROWN_DATA="$MOETRAIN_E2E_WORK/brown"

# `moetrain train` arguments for the tiny config on BROWN_DATA, dropout 0.
TINY_ARGS=(train --config "$MOETRAIN_SOURCE_DIR/configs/tiny.yaml"
           --set data.train="$BROWN_DATA" --set data.valid="$BROWN_DATA" --set model.dropout=0.0)

# Runs `PROGRAM ARGS...` expecting a usage or config error: exit code 2 and
# one line on stderr containing PATTERN (grep). Needs `work` set.
expect_program_error() {  # PATTERN PROGRAM ARGS...
  local pattern=$1 program=$2; shift 2
  local rc=0
  "$program" "$@" > "$work/out" 2> "$work/err" || rc=$?
  echo "[$rc] $(cat "$work/err")"
  [[ $rc -eq 2 ]] || fail "exit code $rc, wanted 2, for: $program $*"
  [[ $(wc -l < "$work/err") -eq 1 ]] || fail "wanted one line on stderr, got $(wc -l < "$work/err") for: $program $*"
  grep -q -- "$pattern" "$work/err" || fail "stderr lacks '$pattern': $(cat "$work/err")"
}

# The same for `moetrain ARGS...`.
expect_error() {  # PATTERN ARGS...
  local pattern=$1; shift
  expect_program_error "$pattern" "$MOETRAIN_BIN" "$@"
}

# Runs the tiny config; extra args go to train.
train_tiny() {
  "$MOETRAIN_BIN" "${TINY_ARGS[@]}" "$@"
}

# The value of `field` at `step` in a metrics.jsonl, printed exactly as stored.
metric_at() {
  python3 - "$1" "$2" "$3" <<'PY'
import json, sys
path, step, field = sys.argv[1], int(sys.argv[2]), sys.argv[3]
for line in open(path):
    rec = json.loads(line)
    if rec.get("step") == step and field in rec:
        print(repr(rec[field]))
        break
else:
    sys.exit(f"no {field} at step {step} in {path}")
PY
}

#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz, with clang, AddressSanitizer and
# UndefinedBehaviorSanitizer) into build-fuzz/ and runs each for a set time on
# a copy of its seed corpus; see docs/fuzzing.md.
#
#   bash scripts/fuzz.sh [--merge] [SECONDS_PER_TARGET] [TARGET...]
#
# SECONDS_PER_TARGET defaults to 60; TARGETs default to all of them
# (config jsonl mail meta_json pii safetensors token_shard). One summary line
# per target: executions, executions per second, new corpus entries, result.
# Exit status: 0 when no target found anything, 1 when one found a crash, a
# sanitizer report, a leak, a timeout or an out-of-memory input (saved under
# build-fuzz/crashes/TARGET/, with the command that reproduces it), 2 on a
# usage or build problem (no clang, for one).
#
# Inputs the fuzzer finds interesting are kept in build-fuzz/corpus/TARGET/
# (reused by the next run); --merge also adds those that add coverage to the
# tracked seeds in tests/fuzz/corpus/TARGET/.
#
# Environment:
#   MOETRAIN_FUZZ_BUILD_DIR  build folder (default build-fuzz)
#   MOETRAIN_FUZZ_JOBS       parallel compile jobs (default: nproc)
#   MOETRAIN_FUZZ_TIMEOUT    seconds one input may take before it counts as a hang (default 10)
#   MOETRAIN_FUZZ_RSS_MB     memory limit of a target in MiB (default 2560)
#   CC, CXX                  the compilers (default clang, clang++)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BUILD_DIR="${MOETRAIN_FUZZ_BUILD_DIR:-build-fuzz}"
JOBS="${MOETRAIN_FUZZ_JOBS:-$(nproc)}"
TIMEOUT="${MOETRAIN_FUZZ_TIMEOUT:-10}"
RSS_MB="${MOETRAIN_FUZZ_RSS_MB:-2560}"
FUZZ_CC="${CC:-clang}"
FUZZ_CXX="${CXX:-clang++}"
ALL_TARGETS=(config jsonl mail meta_json pii safetensors token_shard)

log() { printf '[fuzz] %s\n' "$*"; }
usage() {
  echo "usage: bash scripts/fuzz.sh [--merge] [SECONDS_PER_TARGET] [TARGET...]  (targets: ${ALL_TARGETS[*]})" >&2
  exit 2
}

merge=0
seconds=60
targets=()
for arg in "$@"; do
  case "$arg" in
    --merge) merge=1 ;;
    -h | --help) usage ;;
    -*) usage ;;
    *)
      if [[ "$arg" =~ ^[0-9]+$ && ${#targets[@]} -eq 0 ]]; then
        seconds="$arg"
      elif [[ " ${ALL_TARGETS[*]} " == *" $arg "* ]]; then
        targets+=("$arg")
      else
        echo "[fuzz] unknown target '$arg' (targets: ${ALL_TARGETS[*]})" >&2
        exit 2
      fi
      ;;
  esac
done
[[ ${#targets[@]} -gt 0 ]] || targets=("${ALL_TARGETS[@]}")

if ! command -v "$FUZZ_CXX" > /dev/null 2>&1 || ! command -v "$FUZZ_CC" > /dev/null 2>&1; then
  echo "[fuzz] clang not found ($FUZZ_CXX, $FUZZ_CC): install Debian's clang (apt-get install clang) to build the fuzz targets" >&2
  exit 2
fi

# --- build (incremental) -------------------------------------------------------
if [[ ! -f "$BUILD_DIR/CMakeCache.txt" ]]; then
  generator=()
  command -v ninja > /dev/null 2>&1 && generator=(-G Ninja)
  log "configuring $BUILD_DIR"
  mkdir -p "$BUILD_DIR"
  if ! cmake -S tests/fuzz -B "$BUILD_DIR" "${generator[@]}" \
      -DCMAKE_C_COMPILER="$FUZZ_CC" -DCMAKE_CXX_COMPILER="$FUZZ_CXX" > "$BUILD_DIR/configure.log" 2>&1; then
    cat "$BUILD_DIR/configure.log" >&2
    rm -f "$BUILD_DIR/CMakeCache.txt"
    echo "[fuzz] configuring the fuzz targets failed (log above)" >&2
    exit 2
  fi
fi
build_targets=()
for t in "${targets[@]}"; do build_targets+=("fuzz_$t"); done
log "building ${build_targets[*]}"
if ! cmake --build "$BUILD_DIR" -j "$JOBS" --target "${build_targets[@]}" > "$BUILD_DIR/build.log" 2>&1; then
  tail -n 60 "$BUILD_DIR/build.log" >&2
  echo "[fuzz] building the fuzz targets failed (full log: $BUILD_DIR/build.log)" >&2
  exit 2
fi

# --- run -----------------------------------------------------------------------
# Leaks count as findings; every sanitizer report stops the target. An
# allocation that cannot succeed returns null, as malloc does outside the
# sanitizer (libFuzzer still reports one over the memory limit).
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
export LSAN_OPTIONS="${LSAN_OPTIONS:-suppressions=$ROOT/tests/fuzz/lsan.supp:print_suppressions=0}"

dict_of() {
  case "$1" in
    config) echo tests/fuzz/config.dict ;;
    jsonl | meta_json | safetensors) echo tests/fuzz/json.dict ;;
    mail) echo tests/fuzz/mail.dict ;;
    pii) echo tests/fuzz/pii.dict ;;
    *) echo "" ;;
  esac
}

# The last value of a libFuzzer final statistic in a log, or 0.
stat_of() { sed -n "s/^stat::$2: *//p" "$1" | tail -n 1 | grep . || echo 0; }

failed=0
for t in "${targets[@]}"; do
  work="$BUILD_DIR/corpus/$t"
  crashes="$BUILD_DIR/crashes/$t"
  logfile="$BUILD_DIR/logs/$t.log"
  mkdir -p "$work" "$crashes" "$BUILD_DIR/logs"
  cp -n tests/fuzz/corpus/"$t"/* "$work"/ 2> /dev/null || true
  before=$(find "$work" -type f | wc -l)
  stamp="$BUILD_DIR/logs/$t.stamp"
  touch "$stamp"
  args=(-max_total_time="$seconds" -timeout="$TIMEOUT" -rss_limit_mb="$RSS_MB" -print_final_stats=1
        -artifact_prefix="$crashes/")
  dict="$(dict_of "$t")"
  [[ -n "$dict" ]] && args+=(-dict="$dict")
  rc=0
  "$BUILD_DIR/bin/fuzz_$t" "${args[@]}" "$work" > "$logfile" 2>&1 || rc=$?
  runs=$(stat_of "$logfile" number_of_executed_units)
  speed=$(stat_of "$logfile" average_exec_per_sec)
  added=$(($(find "$work" -type f | wc -l) - before))
  artifact=$(find "$crashes" -type f -newer "$stamp" ! -name 'slow-unit-*' | head -n 1)
  if [[ $rc -eq 0 && -z "$artifact" ]]; then
    printf '[fuzz] %-12s %9s runs %7s exec/s %5s new inputs  ok\n' "$t" "$runs" "$speed" "$added"
  else
    failed=1
    kind=$(grep -m1 -oE 'ERROR: (AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|libFuzzer): [a-z-]+|runtime error|fuzz property failed|terminate called|deadly signal' "$logfile" || echo "exit $rc")
    printf '[fuzz] %-12s %9s runs %7s exec/s %5s new inputs  FAILED: %s\n' "$t" "$runs" "$speed" "$added" "$kind"
    grep -m 12 -E '^(==[0-9]+==ERROR|SUMMARY|.*runtime error|.*fuzz property failed|terminate called|  what\(\))' \
      "$logfile" | sed 's/^/[fuzz]     /' || true
    if [[ -n "$artifact" ]]; then
      log "  input:     $artifact"
      log "  reproduce: $BUILD_DIR/bin/fuzz_$t $artifact"
    fi
    log "  log:       $logfile"
  fi
  if [[ $merge -eq 1 ]]; then
    "$BUILD_DIR/bin/fuzz_$t" -merge=1 "tests/fuzz/corpus/$t" "$work" > "$BUILD_DIR/logs/$t.merge.log" 2>&1 ||
      log "  merging into tests/fuzz/corpus/$t failed (see $BUILD_DIR/logs/$t.merge.log)"
    log "  tests/fuzz/corpus/$t: $(find "tests/fuzz/corpus/$t" -type f | wc -l) seeds after merging"
  fi
done
exit "$failed"

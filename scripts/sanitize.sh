#!/usr/bin/env bash
# Builds moetrain with AddressSanitizer (its leak checker included) and
# UndefinedBehaviorSanitizer into a build folder of its own and runs tests
# under them (docs/sanitizers.md):
#   (default)  every `unit` test (one process each, as ctest runs them), then
#              every `e2e` test;
#   --quick    what CI runs: each unit suite in one process, then the
#              end-to-end tests of train, resume, export and clean.
# Any sanitizer report fails the run: a memory error, a leak or undefined
# behaviour, even in a program whose failing exit code a test expected. The
# reports and the tests' output are kept in <build>/sanitizer-logs/.
#
# Needs scripts/setup.sh to have run once (the Debian packages and .venv with
# the PyTorch wheel); it neither runs it nor touches build/. ccache is used
# when installed, as in the main build.
#
# Environment:
#   MOETRAIN_SANITIZE_BUILD_DIR  build directory (default build-sanitize)
#   MOETRAIN_JOBS                compile and test jobs (default: nproc)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BUILD_DIR="${MOETRAIN_SANITIZE_BUILD_DIR:-build-sanitize}"
JOBS="${MOETRAIN_JOBS:-$(nproc)}"
SUPP="$ROOT/tests/sanitize"

QUICK=0
case "${1:-}" in
  --quick) QUICK=1 ;;
  "") ;;
  -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
  *) echo "usage: scripts/sanitize.sh [--quick]" >&2; exit 2 ;;
esac

log() { printf '[sanitize] %s\n' "$*"; }
minutes() { printf '%d:%02d' $(($1 / 60)) $(($1 % 60)); }
# Sets CPU to the CPU seconds (user + system) of this script's finished child
# processes: a measure of the work that depends less on what else the machine
# runs than the wall clock. (Not in a subshell, whose `times` would be its own.)
cpu_now() {
  times > "$LOG_DIR/times"
  CPU=$(awk 'NR == 2 { split($0, t, /[ms ]+/); printf "%d\n", t[1] * 60 + t[2] + t[3] * 60 + t[4] }' "$LOG_DIR/times")
}

# --- sanitizer options --------------------------------------------------------
# ASan and LSan write their reports to files under LOG_DIR (log_path); UBSan
# writes to stderr, which the test logs keep. Every report also ends the
# program with exit code 86: halt_on_error for ASan, and the build's
# -fno-sanitize-recover=undefined for UBSan. The suppression files name
# third-party code only, each entry with its reason.
LOG_DIR="$ROOT/$BUILD_DIR/sanitizer-logs"
mkdir -p "$BUILD_DIR"
rm -rf "$LOG_DIR"
mkdir -p "$LOG_DIR"
common="log_path=$LOG_DIR/report:exitcode=86:halt_on_error=1"
export ASAN_OPTIONS="$common:detect_leaks=1:strict_init_order=1:detect_stack_use_after_return=1"
export LSAN_OPTIONS="$common:suppressions=$SUPP/lsan.supp:print_suppressions=0"
export UBSAN_OPTIONS="$common:print_stacktrace=1:suppressions=$SUPP/ubsan.supp"

# The reports so far: the report files, and each test log that holds one.
REPORT_PATTERN='runtime error:|ERROR: (AddressSanitizer|LeakSanitizer)|SUMMARY: (AddressSanitizer|UndefinedBehaviorSanitizer)'
reports() {
  find "$LOG_DIR" -type f -name 'report.*' | sort
  grep -l -E "$REPORT_PATTERN" "$LOG_DIR"/*.log 2>/dev/null || true
}
# Keeps ctest's log of every test's output (LastTest.log) as LOG_DIR/$1.log.
keep_ctest_log() { cp "$BUILD_DIR/Testing/Temporary/LastTest.log" "$LOG_DIR/$1.log" 2>/dev/null || true; }

# --- configure and build --------------------------------------------------------
PY="$ROOT/.venv/bin/python"
[[ -x "$PY" ]] || { echo "sanitize: $PY is missing; run scripts/setup.sh first" >&2; exit 1; }
cpu_now; start=$SECONDS cpu_start=$CPU
if [[ ! -f "$BUILD_DIR/build.ninja" ]]; then
  torch_cmake="$("$PY" -c 'import torch; print(torch.utils.cmake_prefix_path)')"
  spm_args=()
  # The SentencePiece source the main build downloaded, if it is there (checked
  # against the same SHA-256), saves a download.
  spm_archive="$(compgen -G "$ROOT/build/_deps/sentencepiece-*.tar.gz" | head -n 1 || true)"
  [[ -n "$spm_archive" ]] && spm_args=(-DMOETRAIN_SENTENCEPIECE_ARCHIVE="$spm_archive")
  log "configuring $BUILD_DIR"
  # -O1: what the sanitizers' authors advise (-O0 makes the LibTorch-heavy code
  # several times slower, -O2 compiles slower and inlines frames away from
  # reports); -g1: line tables, enough for file:line in every frame. The
  # fused CUDA kernels are left out: nothing runs them on a CPU.
  cmake -S "$ROOT" -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1 -DNDEBUG" -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O1 -g1 -DNDEBUG" \
    -DMOETRAIN_SANITIZE=ON -DMOETRAIN_WITH_CUDA_KERNELS=OFF \
    -DCMAKE_PREFIX_PATH="$torch_cmake" "${spm_args[@]}" > "$BUILD_DIR.configure.log" 2>&1 \
    || { cat "$BUILD_DIR.configure.log"; exit 1; }
fi
# moetrain and the unit test programs; for every e2e test also the e2e helper
# programs and the benchmarks that e2e smoke tests run (no multi-rank suites).
phony_targets() { ninja -C "$BUILD_DIR" -t targets all | sed -n "s/^\($1[a-z_0-9]*\): phony\$/\1/p"; }
mapfile -t unit_targets < <(phony_targets unit_)
targets=(moetrain "${unit_targets[@]}")
if [[ $QUICK -eq 0 ]]; then
  mapfile -t -O "${#targets[@]}" targets < <(phony_targets e2e_; phony_targets bench_)
fi
log "building ${targets[*]}"
# Building a unit suite also runs it, to list its tests: under the sanitizers.
cmake --build "$BUILD_DIR" -j "$JOBS" --target "${targets[@]}"
cpu_now; build_s=$((SECONDS - start)) build_cpu=$((CPU - cpu_start))
if [[ -n "$(reports)" ]]; then
  cat "$LOG_DIR"/report.*
  echo "sanitize: sanitizer reports while listing the tests (above)" >&2
  exit 1
fi

# --- tests ----------------------------------------------------------------------
failed=()
cpu_now; start=$SECONDS cpu_start=$CPU
if [[ $QUICK -eq 1 ]]; then
  # One process per suite: LibTorch starts once per suite, not once per test.
  for target in "${unit_targets[@]}"; do
    log "unit: $target"
    "$BUILD_DIR/bin/$target" --gtest_brief=1 > "$LOG_DIR/$target.log" 2>&1 || {
      failed+=("$target")
      tail -n 40 "$LOG_DIR/$target.log"
    }
  done
else
  ctest --test-dir "$BUILD_DIR" -L '^unit$' -j "$JOBS" --timeout 900 --output-on-failure \
    || failed+=("ctest -L unit")
  keep_ctest_log unit-tests
fi
cpu_now; unit_s=$((SECONDS - start)) unit_cpu=$((CPU - cpu_start))

cpu_now; start=$SECONDS cpu_start=$CPU
if [[ $QUICK -eq 1 ]]; then
  # tests/e2e/test_<name>.sh; ctest adds the fixture e2e.fixture_tokenize_brown.
  e2e_args=(-R '^e2e\.test_(loss_falls|resume_bitwise|export|clean_cli)$')
else
  e2e_args=(-L '^e2e$')
fi
ctest --test-dir "$BUILD_DIR" "${e2e_args[@]}" --timeout 1800 --output-on-failure || failed+=("ctest ${e2e_args[*]}")
keep_ctest_log e2e-tests
cpu_now; e2e_s=$((SECONDS - start)) e2e_cpu=$((CPU - cpu_start))

# --- summary --------------------------------------------------------------------
mapfile -t found < <(reports)
for f in "${found[@]}"; do
  echo "----- $f"
  if [[ $f == *.log ]]; then grep -n -E -A 12 "$REPORT_PATTERN" "$f" | head -n 80; else cat "$f"; fi
done
log "mode: $([[ $QUICK -eq 1 ]] && echo quick || echo full)"
log "minutes (wall, CPU): configure and build $(minutes "$build_s"), $(minutes "$build_cpu");" \
  "unit tests $(minutes "$unit_s"), $(minutes "$unit_cpu"); e2e tests $(minutes "$e2e_s"), $(minutes "$e2e_cpu")"
log "files with sanitizer reports: ${#found[@]} (in $LOG_DIR)"
if [[ ${#failed[@]} -gt 0 || ${#found[@]} -gt 0 ]]; then
  [[ ${#failed[@]} -gt 0 ]] && log "failed: ${failed[*]}"
  log "FAILED"
  exit 1
fi
log "PASSED"

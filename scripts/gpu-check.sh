#!/usr/bin/env bash
# Everything that needs a GPU, on a GPU node, in stages that each fit a few
# minutes: build with CUDA, run the tests that skip without a GPU, time the
# fused kernels against their ATen references, and run the training-step
# benchmark against the Python peers. Each stage writes its output under OUT.
#
#   bash scripts/gpu-check.sh [--out DIR] [STAGE...]
#
# Stages (default: all of them, in this order):
#   build    configure (LibTorch from python3's torch, tests on) and build into
#            MOETRAIN_BUILD_DIR (default build-gpu) with every core
#   test     the unit suites with GPU tests (kernels, models, optim, train, checkpoint, export,
#            parallel, eval) and the script tests test_cuda_ranks and
#            test_bench_generate_smoke: OUT/test-*.log, failures listed in
#            OUT/test-summary.txt
#   kernels  bench_kernels: OUT/kernels.txt; bench_generate (bf16, base-moe): OUT/generate.txt
#   bench    scripts/bench-gpu.sh: OUT/bench/report.md (and results.jsonl, logs/)
#
# Environment: MOETRAIN_DEPS_PREFIX (set by the offline bundle's env.sh, see
# docs/gpu.md) is added to CMake's prefix path; MOETRAIN_CMAKE_ARGS adds
# cmake arguments; PYTHON (default python3) is the Python with torch.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
out="${OUT:-$ROOT/bench-results}"
stages=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --out) [[ $# -ge 2 ]] || { echo "gpu-check.sh: --out needs a folder" >&2; exit 2; }; out=$2; shift 2 ;;
    build|test|kernels|bench) stages+=("$1"); shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu-check.sh: unknown argument '$1' (stages: build test kernels bench; see --help)" >&2; exit 2 ;;
  esac
done
[[ ${#stages[@]} -gt 0 ]] || stages=(build test kernels bench)
mkdir -p "$out"
out="$(cd "$out" && pwd)"
PYTHON="${PYTHON:-python3}"
build="$ROOT/${MOETRAIN_BUILD_DIR:-build-gpu}"
log() { printf '[gpu-check] %s\n' "$*" | tee -a "$out/gpu-check.log"; }

stage_build() {
  local torch_prefix
  torch_prefix="$("$PYTHON" -c 'import torch; print(torch.utils.cmake_prefix_path)')" \
    || { log "no torch for $PYTHON"; exit 1; }
  local prefix_path="$torch_prefix"
  [[ -n "${MOETRAIN_DEPS_PREFIX:-}" ]] && prefix_path="$MOETRAIN_DEPS_PREFIX;$torch_prefix"
  log "torch $("$PYTHON" -c 'import torch; print(torch.__version__, "CUDA", torch.version.cuda, "GPU", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none")')"
  if [[ ! -f "$build/build.ninja" ]]; then
    # shellcheck disable=SC2086  # MOETRAIN_CMAKE_ARGS is a list of arguments
    cmake -S "$ROOT" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMOETRAIN_BUILD_TESTS=ON \
      -DCMAKE_PREFIX_PATH="$prefix_path" ${MOETRAIN_CMAKE_ARGS:-} > "$out/configure.log" 2>&1 \
      || { tail -30 "$out/configure.log"; log "configure failed (see $out/configure.log)"; exit 1; }
  fi
  grep -E "moetrain:" "$out/configure.log" 2>/dev/null | tee -a "$out/gpu-check.log" || true
  local t0=$SECONDS
  ninja -C "$build" -j "$(nproc)" > "$out/build.log" 2>&1 \
    || { grep -E "error|FAILED" "$out/build.log" | head -30; log "build failed (see $out/build.log)"; exit 1; }
  log "built in $((SECONDS - t0)) s"
}

stage_test() {
  : > "$out/test-summary.txt"
  local suite failed=0
  for suite in kernels models optim train checkpoint export parallel eval; do
    local bin="$build/bin/unit_$suite"
    [[ -x "$bin" ]] || { log "no $bin (run the build stage)"; exit 1; }
    local rc=0
    "$bin" > "$out/test-$suite.log" 2>&1 || rc=$?
    local line
    line="unit_$suite: exit $rc; $(grep -E '^\[  PASSED  \]|^\[  SKIPPED \] [0-9]|^\[  FAILED  \] [0-9]' "$out/test-$suite.log" | tr '\n' ' ')"
    echo "$line" | tee -a "$out/test-summary.txt"
    grep -E '^\[  FAILED  \] [A-Za-z]' "$out/test-$suite.log" >> "$out/test-summary.txt" || true
    [[ $rc -eq 0 ]] || failed=1
  done
  # Script tests with a GPU side that need no ../shared/data (the Brown fixture left out).
  local rc=0
  ctest --test-dir "$build" -R 'test_cuda_ranks|test_bench_generate_smoke' -FA brown_tokens --output-on-failure \
    > "$out/test-ctest.log" 2>&1 || rc=$?
  echo "ctest (test_cuda_ranks, test_bench_generate_smoke): exit $rc; $(grep -E 'tests passed' "$out/test-ctest.log")" \
    | tee -a "$out/test-summary.txt"
  [[ $rc -eq 0 ]] || failed=1
  if [[ $failed -eq 0 ]]; then
    log "tests: all passed"
  else
    log "tests: failures (see $out/test-summary.txt)"
    status=1
  fi
}

stage_kernels() {
  local bin="$build/bin/bench_kernels"
  [[ -x "$bin" ]] || { log "no $bin (run the build stage)"; exit 1; }
  "$bin" | tee "$out/kernels.txt"
  # Generation on the GPU in bf16: the key/value cache against the whole-prefix decoder.
  "$build/bin/bench_generate" --device cuda --dtype bf16 --config "$ROOT/configs/base-moe.yaml" \
    --batch 32 --src-len 128 --length 64 | tee "$out/generate.txt"
}

stage_bench() {
  BENCH_BIN="$build/bin/bench_train_step" PYTHON="$PYTHON" bash "$ROOT/scripts/bench-gpu.sh" --out "$out/bench"
}

status=0
for s in "${stages[@]}"; do
  log "stage $s"
  "stage_$s"
done
exit $status

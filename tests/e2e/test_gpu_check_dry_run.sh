#!/usr/bin/env bash
# scripts/gpu-check.sh --dry-run, as CI runs it (no GPU, build or torch):
# both commands (check and perf) exit 0, print every stage with its budget
# and at least one command, and create nothing; a budget override past 540 s,
# a missing corpus, a missing offline bundle, a bad budget value and an
# unknown stage each end it non-zero with one line on stderr naming the
# problem. --help prints the header. Needs no data and no binary.
source "$(dirname "$0")/lib.sh"
work="$MOETRAIN_E2E_WORK/gpu_check_dry_run"
rm -rf "$work"; mkdir -p "$work"
script="$MOETRAIN_SOURCE_DIR/scripts/gpu-check.sh"
# The dry run reads these; a caller's values must not leak in.
unset OUT MOETRAIN_BUILD_DIR MOETRAIN_DEPS_BUNDLE MOETRAIN_DEPS_PREFIX GPU_CHECK_SAMPLE GPU_CHECK_LAYOUTS GPU_CHECK_PRESETS
for v in $(compgen -v GPU_CHECK_BUDGET_ || true); do unset "$v"; done

# dry_run NAME STAGES ARGS...: a dry run that must pass and print every stage.
dry_run() {
  local name=$1 stages=$2; shift 2
  local rc=0
  OUT="$work/out-$name" bash "$script" "$@" --dry-run > "$work/$name.out" 2> "$work/$name.err" || rc=$?
  cat "$work/$name.out"
  [[ $rc -eq 0 ]] || fail "$name --dry-run exited $rc: $(cat "$work/$name.err")"
  [[ ! -s "$work/$name.err" ]] || fail "$name --dry-run wrote to stderr: $(cat "$work/$name.err")"
  [[ ! -e "$work/out-$name" ]] || fail "$name --dry-run created its output folder"
  local s n
  for s in $stages; do
    grep -qE "^== $s \(budget [0-9]+ s\)$" "$work/$name.out" || fail "$name --dry-run does not print stage $s"
    # Lines of the stage up to the next stage: at least one command.
    n=$(awk -v s="== $s " 'index($0, s) == 1 {on = 1; next} /^== / {on = 0} on && /^  \$ /' "$work/$name.out" | wc -l)
    [[ $n -ge 1 ]] || [[ $s == deps ]] || fail "$name --dry-run prints no command for stage $s"
  done
  grep -q "^dry run OK: .*budgets [0-9]* s <= 540 s$" "$work/$name.out" || fail "$name --dry-run has no OK line"
}

dry_run check "deps build test parity layouts nccl kernels"
dry_run perf "deps build-bench bench report" perf

# What the check's commands must contain.
grep -q "ninja -C build-gpu -j [0-9]* moetrain unit_kernels unit_parallel unit_eval" "$work/check.out" \
  || fail "the build stage does not build the targets the check runs"
grep -q -- "-DMOETRAIN_WITH_NCCL=ON -DMOETRAIN_WITH_CUDA_KERNELS=ON" "$work/check.out" || fail "configure does not ask for NCCL and the kernels"
for np in 1 2 4 8; do
  grep -q "mpirun --oversubscribe --bind-to none -np $np .*train.device=cuda" "$work/check.out" \
    || fail "no mpirun -np $np run on cuda"
done
grep -q "parallel.backend=nccl" "$work/check.out" || fail "no run with parallel.backend=nccl"
grep -q "train.device=cpu" "$work/check.out" || fail "no CPU run for the parity check"
grep -q "scripts/bench-gpu.sh --presets" "$work/perf.out" || fail "perf does not run scripts/bench-gpu.sh"

# expect_failure NAME PATTERN ARGS...: exit non-zero, one line on stderr matching PATTERN.
expect_failure() {
  local name=$1 pattern=$2; shift 2
  local rc=0
  bash "$script" "$@" > "$work/$name.out" 2> "$work/$name.err" || rc=$?
  echo "[$rc] $(cat "$work/$name.err")"
  [[ $rc -ne 0 ]] || fail "$name: exit 0"
  [[ $(wc -l < "$work/$name.err") -eq 1 ]] || fail "$name: wanted one line on stderr, got: $(cat "$work/$name.err")"
  grep -q -- "$pattern" "$work/$name.err" || fail "$name: stderr lacks '$pattern'"
}

GPU_CHECK_BUDGET_LAYOUTS=400 expect_failure over-budget "add up to 810 s, over 540 s" --dry-run
GPU_CHECK_BUDGET_BENCH=600 expect_failure perf-over-budget "over 540 s" perf --dry-run
GPU_CHECK_SAMPLE="$work/absent.jsonl" expect_failure no-sample "absent.jsonl is missing" --dry-run
MOETRAIN_DEPS_BUNDLE="$work/no-bundle" expect_failure no-bundle "no-bundle has no debs/" perf --dry-run
GPU_CHECK_BUDGET_BUILD=soon expect_failure bad-budget "GPU_CHECK_BUDGET_BUILD" --dry-run
GPU_CHECK_LAYOUTS="tp2 tp3" expect_failure bad-layout "unknown layout 'tp3'" --dry-run
expect_failure bad-stage "unknown check stage 'bogus'" bogus --dry-run

bash "$script" --help > "$work/help" || fail "--help failed"
for word in "--dry-run" "perf" "GPU_CHECK_BUDGET_" "MOETRAIN_DEPS_BUNDLE" "summary.txt"; do
  grep -q -- "$word" "$work/help" || fail "--help does not mention $word"
done
echo PASS

#!/usr/bin/env bash
# Everything that needs a GPU, on one GPU node (an H100 or H200, 16 cores,
# python3 with a CUDA build of PyTorch, nvcc; possibly no network and no
# Debian development packages), as two commands that each end within
# 9 minutes (540 s):
#
#   bash scripts/gpu-check.sh [check] [STAGE...] [--out DIR] [--bundle DIR] [--dry-run]
#   bash scripts/gpu-check.sh perf [STAGE...] [--out DIR] [--bundle DIR] [--dry-run]
#
# Each stage runs in its own process under `timeout` and writes its log,
# OUT/<stage>.log, and its own files under OUT before the next stage starts,
# so a run cut short still leaves what it did; OUT/summary.txt (rewritten
# after every stage) lists each stage as PASS, FAIL, TIMEOUT or SKIPPED with
# its seconds. OUT is $OUT when set, else --out DIR, else bench-results/.
# Naming stages runs only those (e.g. `gpu-check.sh layouts nccl` on a node
# that already built); a stage after a build or deps stage that did not pass
# is SKIPPED.
#
# check: the stages, their budgets in seconds, and what they are expected
# to take on a 16-core node (budgets add up to 540):
#   deps      30  install the offline bundle (scripts/offline-deps.sh install
#                 BUNDLE PREFIX) and source PREFIX/env.sh; with
#                 MOETRAIN_DEPS_PREFIX set (an installed prefix with an
#                 env.sh) only source it; with neither, use the system's
#                 packages and say so. Logs the toolchain. ~15 s
#   build    210  configure build-gpu (Release, tests on, LibTorch from
#                 python3's torch, -DMOETRAIN_WITH_NCCL=ON
#                 -DMOETRAIN_WITH_CUDA_KERNELS=ON) and build only what the
#                 stages run, with every core; fails unless the configure
#                 log says "moetrain: NCCL backend ON" and "moetrain: fused
#                 CUDA kernels ON" and CMakeCache.txt has both options ON.
#                 Configure ~40 s, ~130 objects (~430 CPU-s) ~120-150 s
#   test      60  the unit suites with CUDA tests, 8 at a time: kernels,
#                 parallel (NCCL on one rank), eval (generation), models,
#                 optim, train, checkpoint, export: OUT/test-<suite>.log,
#                 OUT/test-summary.txt; a CUDA test skipped for want of a
#                 GPU, NCCL or the kernels is a failure. ~30 s
#   parity    45  tokenize examples/data/brown-sample.jsonl, train
#                 configs/tiny.yaml 10 steps (fp32, dropout 0, dropless MoE,
#                 no TF32) on the CPU and on the GPU, every step's loss
#                 within 1e-4 relative: OUT/parity/losses.txt. ~25 s
#   layouts  130  the single-GPU run (8 steps, the flags of
#                 tests/multirank/layout_lib.sh), then under mpirun on the one
#                 GPU with parallel.backend=mpi (host-staged collectives):
#                 DP2 ZeRO 1, TP2, PP2, DP2 x EP2 (2 ranks), DP2 x TP2 ZeRO 1
#                 (4), DP2 x TP2 x PP2 x EP2 ZeRO 3 (8), each compared with
#                 the single-GPU run by tests/multirank/compare_runs.py:
#                 OUT/layouts/. ~90 s
#   nccl      25  the same run as one rank under mpirun with
#                 parallel.backend=nccl; it must finish and match the
#                 single-GPU run: OUT/nccl/. ~15 s
#   kernels   40  bench_kernels (OUT/kernels.txt), then bench_generate in
#                 bf16 on base-moe (OUT/generate.txt) if the stage has time
#                 left. ~30 s
# perf: the training-step benchmark table (budgets add up to 540):
#   deps          30  as above
#   build-bench  150  configure as above and build bench_train_step alone
#                     (seconds when check built it on this node)
#   bench        350  scripts/bench-gpu.sh once per preset (moetrain against
#                     PyTorch eager, torch.compile and Hugging Face NLLB-MoE:
#                     tokens/s, MFU, peak memory), each into OUT/bench/PRESET/,
#                     in the order of GPU_CHECK_PRESETS, while time is left;
#                     about 60-250 s per preset, so not all five fit in one
#                     command: name the rest in GPU_CHECK_PRESETS for a second
#   report        10  every preset's results in one table: OUT/bench/report.md
#
# Time: the whole command ends within 540 s. A stage may use its budget plus
# whatever the stages before it left unused, never the budgets of the stages
# after it; past that it is killed (TIMEOUT) and the next stage runs if time
# is left. Exit status: 0 when every stage passed, 1 otherwise, 2 for a usage
# error.
#
# --dry-run (what CI runs; no GPU, build or torch needed) prints each stage's
# commands and checks the files every stage needs, that the targets it builds
# and runs are defined in the CMake files, and that the budgets add up to at
# most 540 s; it exits non-zero with one line naming what is wrong.
#
# Environment:
#   OUT                       the output folder (before --out)
#   MOETRAIN_DEPS_BUNDLE      the offline bundle's folder (--bundle wins;
#                             default deps-bundle/ when it exists)
#   MOETRAIN_DEPS_PREFIX      an installed bundle (set by its env.sh)
#   GPU_CHECK_DEPS_PREFIX     where deps installs the bundle (default build-deps)
#   MOETRAIN_BUILD_DIR        the build folder, relative to the repository
#                             or absolute (default build-gpu)
#   MOETRAIN_CMAKE_ARGS       more cmake arguments
#   PYTHON                    the Python with torch (default python3)
#   GPU_CHECK_BUDGET_<STAGE>  a stage's budget in seconds (BUILD_BENCH for
#                             build-bench)
#   GPU_CHECK_SAMPLE          the parity corpus (default
#                             examples/data/brown-sample.jsonl)
#   GPU_CHECK_LAYOUTS         the layouts to run, by name (default all:
#                             dp2-zero1 tp2 pp2 dp2-ep2 dp2-tp2-zero1
#                             dp2-tp2-pp2-ep2-zero3)
#   GPU_CHECK_PRESETS         perf's presets in order (default
#                             "base-dense base nllb-moe tiny large")
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SELF="$ROOT/scripts/gpu-check.sh"
CALLER_PWD=$PWD
cd "$ROOT"
# A path given relative to the folder the script was started from.
abspath() { if [[ -z $1 || $1 == /* ]]; then echo "$1"; else echo "$CALLER_PWD/$1"; fi; }

LIMIT=540  # seconds, for each command
CHECK_STAGES=(deps build test parity layouts nccl kernels)
PERF_STAGES=(deps build-bench bench report)
declare -A BUDGET=([deps]=30 [build]=210 [test]=60 [parity]=45 [layouts]=130 [nccl]=25 [kernels]=40
                   [build-bench]=150 [bench]=350 [report]=10)
declare -A DEFAULT_BUDGET
for s in "${!BUDGET[@]}"; do DEFAULT_BUDGET[$s]=${BUDGET[$s]}; done

# The unit suites with CUDA tests (tests/CMakeLists.txt: moetrain_unit_suite).
SUITES=(kernels parallel eval models optim train checkpoint export)
CHECK_TARGETS=(moetrain "${SUITES[@]/#/unit_}" bench_kernels bench_generate bench_train_step)
PERF_TARGETS=(bench_train_step)
# What the configure log and CMakeCache.txt must say (parallel/ and kernels/CMakeLists.txt).
NCCL_ON_LINE="moetrain: NCCL backend ON"
KERNELS_ON_LINE="moetrain: fused CUDA kernels ON"
# The layouts: name, ranks, --set overrides (DP is the ranks over TP x PP).
LAYOUTS=(
  "dp2-zero1 2 parallel.zero_stage=1"
  "tp2 2 parallel.tp=2"
  "pp2 2 parallel.pp=2"
  "dp2-ep2 2 parallel.ep=2"
  "dp2-tp2-zero1 4 parallel.tp=2 parallel.zero_stage=1"
  "dp2-tp2-pp2-ep2-zero3 8 parallel.tp=2 parallel.pp=2 parallel.ep=2 parallel.zero_stage=3"
)
# tests/multirank/layout_lib.sh's flags: fp32, dropless, 8 steps, batch 8 in micro-batches of 2.
LAYOUT_STEPS=8
LAYOUT_COMMON=(--max-steps "$LAYOUT_STEPS" --set log.every=1 --set train.eval_every=4 --set model.moe.capacity_factor=0
               --set train.global_batch=8 --set train.micro_batch=2 --set train.threads=1 --set train.dump_grads_step=1)
PARITY_STEPS=10
PARITY_RTOL=1e-4
MPI_ENV=(OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl_vader_single_copy_mechanism=none)
MPIRUN=(mpirun --oversubscribe --bind-to none)

die() { echo "gpu-check.sh: ${stage_name:+$stage_name: }$*" >&2; exit 1; }
usage_error() { echo "gpu-check.sh: $* (see --help)" >&2; exit 2; }

# --- arguments (a stage's own process gets `__stage NAME`) -------------------
mode=check dry=0 out_arg="" bundle_arg="" stages=() internal_stage=""
while [[ $# -gt 0 ]]; do
  case $1 in
    check|perf) mode=$1; shift ;;
    --out) [[ $# -ge 2 ]] || usage_error "--out needs a folder"; out_arg=$2; shift 2 ;;
    --bundle) [[ $# -ge 2 ]] || usage_error "--bundle needs a folder"; bundle_arg=$2; shift 2 ;;
    --dry-run) dry=1; shift ;;
    __stage) internal_stage=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) usage_error "unknown option '$1'" ;;
    *) stages+=("$1"); shift ;;
  esac
done
if [[ $mode == perf ]]; then ALL_STAGES=("${PERF_STAGES[@]}"); else ALL_STAGES=("${CHECK_STAGES[@]}"); fi
for s in "${stages[@]}"; do
  [[ " ${ALL_STAGES[*]} " == *" $s "* ]] || usage_error "unknown $mode stage '$s' (stages: ${ALL_STAGES[*]})"
done
[[ ${#stages[@]} -gt 0 ]] || stages=("${ALL_STAGES[@]}")

# Budgets: GPU_CHECK_BUDGET_<STAGE> overrides; the selected stages must fit LIMIT.
for s in "${!BUDGET[@]}"; do
  var="GPU_CHECK_BUDGET_$(tr 'a-z-' 'A-Z_' <<< "$s")"
  if [[ -n ${!var:-} ]]; then
    [[ ${!var} =~ ^[1-9][0-9]*$ ]] || die "$var='${!var}' is not a whole number of seconds"
    BUDGET[$s]=${!var}
  fi
done
budget_sum=0
for s in "${stages[@]}"; do budget_sum=$((budget_sum + BUDGET[$s])); done

OUT_DIR=$(abspath "${OUT:-${out_arg:-$ROOT/bench-results}}")
BUILD=${MOETRAIN_BUILD_DIR:-build-gpu}
[[ $BUILD == /* ]] || BUILD="$ROOT/$BUILD"
BIN_DIR="$BUILD/bin"
WORK="$BUILD/gpu-check"           # tokenized data, runs and checkpoints: kept out of OUT
STATE="$WORK/state"
PYTHON="${PYTHON:-python3}"
SAMPLE=$(abspath "${GPU_CHECK_SAMPLE:-$ROOT/examples/data/brown-sample.jsonl}")
DATA="$WORK/data"
DEPS_PREFIX=$(abspath "${GPU_CHECK_DEPS_PREFIX:-$ROOT/build-deps}")
if [[ -n $bundle_arg ]]; then BUNDLE=$(abspath "$bundle_arg"); BUNDLE_ASKED=1
elif [[ -n ${MOETRAIN_DEPS_BUNDLE:-} ]]; then BUNDLE=$(abspath "$MOETRAIN_DEPS_BUNDLE"); BUNDLE_ASKED=1
else BUNDLE="$ROOT/deps-bundle"; BUNDLE_ASKED=0
fi
[[ -z ${MOETRAIN_DEPS_PREFIX:-} ]] || MOETRAIN_DEPS_PREFIX=$(abspath "$MOETRAIN_DEPS_PREFIX")
# A stage's own process gets the folders its parent resolved.
if [[ -n $internal_stage ]]; then
  OUT_DIR=$_GC_OUT_DIR BUNDLE=$_GC_BUNDLE BUNDLE_ASKED=$_GC_BUNDLE_ASKED
fi
TINY_ARGS=(train --config "$ROOT/configs/tiny.yaml" --set "data.train=$DATA" --set "data.valid=$DATA"
           --set model.dropout=0.0)

# --- helpers shared by the real and the dry run ------------------------------
# A command as it would be typed, paths relative to the repository.
show() {
  local s
  s=$(printf '%q ' "$@")
  s=${s% }
  s=${s//"$ROOT"\//}
  printf '%s\n' "${s//"$ROOT"/.}"
}
rel() { local p=${1//"$ROOT"\//}; echo "${p//"$ROOT"/.}"; }
stamp() { printf '[+%3ds] ' $((SECONDS)); }
say() { if [[ $dry == 1 ]]; then echo "  $*"; else stamp; echo "$*"; fi; }

# run LOG CMD...: CMD with stdout and stderr to LOG (printed, not run, in a dry run).
run() {
  local log=$1; shift
  if [[ $dry == 1 ]]; then echo "  \$ $(show "$@") > $(rel "$log")"; return 0; fi
  stamp; echo "\$ $(show "$@") > $(rel "$log")"
  local t0=$SECONDS rc=0
  "$@" > "$log" 2>&1 || rc=$?
  echo "        ($((SECONDS - t0)) s, exit $rc)"
  return "$rc"
}

need_file() {  # PATH [WHY]
  [[ -e $1 ]] || die "$(rel "$1") is missing${2:+ ($2)}"
  [[ $dry == 0 ]] || echo "  needs $(rel "$1")"
}

# need_target NAME: the CMake files define it (an executable, or a unit suite).
need_target() {
  local t=$1 found=0
  case $t in
    unit_*) grep -q "^moetrain_unit_suite(${t#unit_} " "$ROOT/tests/CMakeLists.txt" \
              && compgen -G "$ROOT/tests/unit/${t#unit_}/test_*.cpp" > /dev/null && found=1 ;;
    *) grep -qE "^add_executable\($t " "$ROOT"/*/CMakeLists.txt && found=1 ;;
  esac
  [[ $found == 1 ]] || die "no CMake target '$t' (tests/CMakeLists.txt, app/, bench/)"
}

need_bin() {  # NAME: built, or the stage is skipped (exit 77)
  if [[ $dry == 1 ]]; then need_target "$1"; return 0; fi
  [[ -x $BIN_DIR/$1 ]] || { echo "SKIP: $(rel "$BIN_DIR/$1") is missing (the build stage makes it)"; exit 77; }
}

note() { [[ $dry == 1 ]] || echo "$*" > "$STATE/note.$stage_name"; }
time_left() { echo $((STAGE_END - $(date +%s))); }

# --- the stages ------------------------------------------------------------------
# The stage functions live in scripts/gpu-check/; a missing file ends every run,
# the dry run included, with one line naming it.
STAGE_FILES=("$ROOT/scripts/gpu-check/stages-check.sh" "$ROOT/scripts/gpu-check/stages-perf.sh")
for stage_file in "${STAGE_FILES[@]}"; do
  [[ -f $stage_file ]] || die "$(rel "$stage_file") is missing (the stages, sourced by scripts/gpu-check.sh)"
done
# shellcheck source=SCRIPTDIR/gpu-check/stages-check.sh
source "${STAGE_FILES[0]}"
# shellcheck source=SCRIPTDIR/gpu-check/stages-perf.sh
source "${STAGE_FILES[1]}"

run_stage() {
  stage_name=$1
  case $1 in
    deps) stage_deps ;;
    build) stage_build ;;
    test) stage_test ;;
    parity) stage_parity ;;
    layouts) stage_layouts ;;
    nccl) stage_nccl ;;
    kernels) stage_kernels ;;
    build-bench) stage_build_bench ;;
    bench) stage_bench ;;
    report) stage_report ;;
    *) die "no stage '$1'" ;;
  esac
}

# --- a stage's own process -------------------------------------------------------
if [[ -n $internal_stage ]]; then
  run_stage "$internal_stage"
  exit 0
fi

# --- the dry run -------------------------------------------------------------------
# The help text must list each stage with its default budget.
for s in "${ALL_STAGES[@]}"; do
  grep -qE "^#   $s +${DEFAULT_BUDGET[$s]} " "$SELF" || die "the header does not list stage '$s' with its budget ${DEFAULT_BUDGET[$s]} s"
done
budget_list=""
for s in "${stages[@]}"; do budget_list+="${budget_list:+, }$s ${BUDGET[$s]}"; done
(( budget_sum <= LIMIT )) || die "$mode: the stage budgets add up to $budget_sum s, over $LIMIT s ($budget_list)"

if [[ $dry == 1 ]]; then
  echo "gpu-check.sh $mode --dry-run: ${#stages[@]} stages, budgets $budget_sum s of $LIMIT s; output to $(rel "$OUT_DIR")"
  for s in "${stages[@]}"; do
    echo "== $s (budget ${BUDGET[$s]} s)"
    # A subshell: a stage's exports stay in it; its errors end the dry run.
    ( run_stage "$s" ) || exit 1
  done
  echo "dry run OK: every stage's files and targets are in place; budgets $budget_sum s <= $LIMIT s"
  exit 0
fi

# --- the real run ----------------------------------------------------------------
mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
[[ -z ${OUT:-} || -z $out_arg ]] || echo "[gpu-check] OUT is set: writing to $OUT_DIR, not --out $out_arg"
rm -rf "$WORK"
mkdir -p "$STATE"
export _GC_OUT_DIR=$OUT_DIR _GC_BUNDLE=$BUNDLE _GC_BUNDLE_ASKED=$BUNDLE_ASKED
start=$SECONDS
GRACE=6  # seconds after a stage's end for `timeout -k` and the summary
log() { printf '[gpu-check] %s\n' "$*" | tee -a "$OUT_DIR/gpu-check.log"; }
: > "$OUT_DIR/gpu-check.log"
gpu=$(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2> /dev/null | head -1 || true)
header="gpu-check.sh $mode: $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git -C "$ROOT" rev-parse --short HEAD 2> /dev/null || echo unknown), GPU ${gpu:-none listed}, $(nproc) cores"
log "$header"

# A prefix installed earlier is sourced when deps is not among the stages.
source_deps() {
  local f=${1:-}
  [[ -n $f && -f $f ]] || return 0
  # shellcheck disable=SC1090
  source "$f"
  log "sourced $f"
}
if [[ " ${stages[*]} " != *" deps "* ]]; then
  if [[ -f $DEPS_PREFIX/env.sh ]]; then source_deps "$DEPS_PREFIX/env.sh"
  elif [[ -n ${MOETRAIN_DEPS_PREFIX:-} ]]; then source_deps "$MOETRAIN_DEPS_PREFIX/env.sh"; fi
fi

declare -A STATUS SECS
write_summary() {
  {
    echo "$header"
    printf '%-12s %-8s %7s %7s  %s\n' stage status seconds budget note
    local s total=0
    for s in "${stages[@]}"; do
      local n=""
      [[ -f $STATE/note.$s ]] && n=$(head -c 300 "$STATE/note.$s" | head -n 1)
      printf '%-12s %-8s %7s %7s  %s\n' "$s" "${STATUS[$s]:-pending}" "${SECS[$s]:--}" "${BUDGET[$s]}" "$n"
      total=$((total + ${SECS[$s]:-0}))
    done
    printf '%-12s %-8s %7s %7s\n' total "" "$total" "$budget_sum"
  } > "$OUT_DIR/summary.txt"
}

for i in "${!stages[@]}"; do
  s=${stages[$i]}
  later=0
  for t in "${stages[@]:i+1}"; do later=$((later + BUDGET[$t])); done
  now=$((SECONDS - start))
  allowed=$((LIMIT - now - later))
  (( allowed <= LIMIT - GRACE - now )) || allowed=$((LIMIT - GRACE - now))
  blocker=""
  case $s in
    build|build-bench) [[ ${STATUS[deps]:-PASS} == PASS ]] || blocker="deps did not pass" ;;
    deps|report) ;;
    *) for b in build build-bench; do
         [[ ${STATUS[$b]:-PASS} == PASS ]] || blocker="$b did not pass"
       done ;;
  esac
  if [[ -n $blocker ]] || (( allowed < 10 )); then
    STATUS[$s]=SKIPPED SECS[$s]=0
    echo "${blocker:-no time left}" > "$STATE/note.$s"
    log "stage $s: SKIPPED (${blocker:-no time left})"
    write_summary
    continue
  fi
  log "stage $s: up to $allowed s (budget ${BUDGET[$s]} s)"
  t0=$SECONDS rc=0
  STAGE_END=$(( $(date +%s) + allowed )) timeout -k 5 "$allowed" bash "$SELF" "$mode" __stage "$s" \
    > "$OUT_DIR/$s.log" 2>&1 || rc=$?
  SECS[$s]=$((SECONDS - t0))
  case $rc in
    0) STATUS[$s]=PASS ;;
    77) STATUS[$s]=SKIPPED; grep -m1 '^SKIP' "$OUT_DIR/$s.log" | sed 's/^SKIP: //' > "$STATE/note.$s" || true ;;
    124|137) STATUS[$s]=TIMEOUT
             [[ -f $STATE/note.$s ]] || echo "killed after $allowed s" > "$STATE/note.$s"
             echo "[gpu-check] stage $s: TIMEOUT after ${SECS[$s]} s (allowed $allowed s)" >> "$OUT_DIR/$s.log" ;;
    *) STATUS[$s]=FAIL
       [[ -f $STATE/note.$s ]] || grep -a -m1 '^gpu-check.sh: ' "$OUT_DIR/$s.log" | sed "s/^gpu-check.sh: $s: //" > "$STATE/note.$s" || true ;;
  esac
  over=""
  (( SECS[$s] <= BUDGET[$s] )) || over=" (over its budget of ${BUDGET[$s]} s)"
  log "stage $s: ${STATUS[$s]} in ${SECS[$s]} s$over"
  [[ ${STATUS[$s]} == PASS ]] || tail -n 15 "$OUT_DIR/$s.log" | sed 's/^/    /'
  # The offline prefix's environment for the stages after deps.
  [[ $s != deps || ${STATUS[$s]} != PASS || ! -f $STATE/deps-env ]] || source_deps "$(cat "$STATE/deps-env")"
  write_summary
done
cat "$OUT_DIR/summary.txt"
for s in "${stages[@]}"; do [[ ${STATUS[$s]} == PASS ]] || exit 1; done
exit 0

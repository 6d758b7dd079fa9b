# The check command's stages (deps, build, test, parity, layouts, nccl,
# kernels) and their helpers: the loss and parameter comparisons, the
# tokenized data, the single-GPU reference run, configure and build_targets
# (perf's deps and build-bench use these too). Sourced by scripts/gpu-check.sh,
# which sets the variables and defines the helpers (run, say, need_file, die)
# used here; not meant to be run on its own.
# shellcheck shell=bash disable=SC2154  # dry is set by scripts/gpu-check.sh

# compare_losses A B STEPS RTOL: every step's loss of run A against run B, one
# line per step; fails past RTOL (relative) or on a missing step.
compare_losses() {
  if [[ $dry == 1 ]]; then
    echo "  \$ $PYTHON - $(rel "$1") $(rel "$2") $3 $4   (per-step losses of metrics.jsonl, relative tolerance $4)"
    return 0
  fi
  "$PYTHON" - "$1" "$2" "$3" "$4" <<'PY'
import json, sys
a, b, steps, rtol = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
def losses(run):
    out = {}
    for line in open(f"{run}/metrics.jsonl"):
        rec = json.loads(line)
        if "loss" in rec:
            out[rec["step"]] = rec["loss"]
    return out
la, lb = losses(a), losses(b)
worst, bad = 0.0, []
for step in range(1, steps + 1):
    if step not in la or step not in lb:
        sys.exit(f"step {step}: no loss in {a if step not in la else b}/metrics.jsonl")
    rel = abs(la[step] - lb[step]) / abs(la[step])
    worst = max(worst, rel)
    print(f"step {step:3d}: {la[step]!r:>22} {lb[step]!r:>22}  relative difference {rel:.3e}")
    if not rel <= rtol:
        bad.append(step)
if bad:
    sys.exit(f"losses differ by more than {rtol:g} at steps {bad} (worst {worst:.3e})")
print(f"every loss of steps 1-{steps} within {rtol:g}: worst relative difference {worst:.3e}")
PY
}

# compare_with_single NAME OUTDIR: run NAME against the single-GPU run with
# compare_runs.py (losses, evaluations, final parameters, step-1 gradients);
# without h5py, the losses only.
compare_with_single() {
  local name=$1 dir=$2
  local cmp=("$PYTHON" "$ROOT/tests/multirank/compare_runs.py" "$WORK/runs/single-cuda"
                            "$WORK/runs/$name" --steps "$LAYOUT_STEPS" --grad-step 1)
  if [[ $dry == 1 ]]; then echo "  \$ $(show "${cmp[@]}")"; return 0; fi
  if "$PYTHON" -c 'import h5py, numpy' 2> /dev/null; then
    if "${cmp[@]}" > "$dir/$name.compare.txt" 2>&1; then return 0; fi
    # Not within compare_runs.py's tolerances: say whether it is close.
    if "${cmp[@]}" --rtol 1e-4 --atol 1e-4 --grad-rtol 1e-3 > "$dir/$name.compare-loose.txt" 2>&1; then
      echo "(within rtol/atol 1e-4 and gradients within 1e-3, but not the default 1e-5)" >> "$dir/$name.compare.txt"
    fi
    return 1
  fi
  # Without h5py: the losses, and the final parameters through `moetrain export`
  # (the whole model in one safetensors file whatever the layout); no gradients.
  {
    echo "$PYTHON lacks h5py or numpy: losses and final parameters (moetrain export) only, no gradients"
    compare_losses "$WORK/runs/single-cuda" "$WORK/runs/$name" "$LAYOUT_STEPS" 1e-5 2>&1 | tail -n 1 \
      && compare_exported single-cuda "$name" 1e-5
  } > "$dir/$name.compare.txt" 2>&1
}

# compare_exported REF NAME ATOL: both runs' final parameters, exported as
# fp32 safetensors, within ATOL (absolute).
compare_exported() {
  local r
  for r in "$1" "$2"; do
    [[ -f $WORK/export/$r/model.safetensors ]] && continue
    "$BIN_DIR/moetrain" export --checkpoint "$WORK/runs/$r" --out "$WORK/export/$r" > /dev/null \
      || { echo "moetrain export of $r failed"; return 1; }
  done
  "$PYTHON" - "$WORK/export/$1/model.safetensors" "$WORK/export/$2/model.safetensors" "$3" <<'PY'
import array, json, struct, sys
def load(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header, data = json.loads(f.read(n)), f.read()
    header.pop("__metadata__", None)
    return header, data
(ha, da), (hb, db), atol = load(sys.argv[1]), load(sys.argv[2]), float(sys.argv[3])
if set(ha) != set(hb):
    sys.exit(f"parameter names differ: {sorted(set(ha) ^ set(hb))[:5]}")
def values(header, data, name):
    start, end = header[name]["data_offsets"]
    v = array.array("f")
    v.frombytes(data[start:end])
    return v
worst, worst_name = 0.0, ""
for name in sorted(ha):
    if ha[name]["dtype"] != "F32" or ha[name]["shape"] != hb[name]["shape"]:
        sys.exit(f"{name}: {ha[name]['dtype']} {ha[name]['shape']} vs {hb[name]['dtype']} {hb[name]['shape']}")
    diff = max((abs(x - y) for x, y in zip(values(ha, da, name), values(hb, db, name))), default=0.0)
    if diff > worst:
        worst, worst_name = diff, name
    if not diff <= atol:
        sys.exit(f"{name}: max abs difference {diff:.3e} > {atol:g}")
print(f"{len(ha)} parameters agree: worst absolute difference {worst:.3e} ({worst_name})")
PY
}

ensure_data() {
  need_file "$SAMPLE" "GPU_CHECK_SAMPLE"
  need_file "$ROOT/configs/tiny.yaml"
  need_bin moetrain
  [[ $dry == 0 && -f $DATA/dataset.json ]] && return 0
  run "$OUT_DIR/tokenize.log" "$BIN_DIR/moetrain" tokenize --input "$SAMPLE" --output "$DATA" --vocab-size 2000 \
    --valid-fraction 0.05 || { tail -5 "$OUT_DIR/tokenize.log"; die "tokenize failed (see tokenize.log)"; }
}

# The single-GPU reference of layouts and nccl (run once per command).
ensure_single_gpu() {
  local dir=$1
  if [[ $dry == 0 && -f $WORK/runs/single-cuda/checkpoints/step-$(printf %06d "$LAYOUT_STEPS")/meta.json ]]; then
    return 0
  fi
  [[ $dry == 1 ]] || rm -rf "$WORK/runs/single-cuda"
  run "$dir/single-cuda.log" "$BIN_DIR/moetrain" "${TINY_ARGS[@]}" --output-dir "$WORK/runs/single-cuda" \
    "${LAYOUT_COMMON[@]}" --set train.device=cuda || { tail -5 "$dir/single-cuda.log"; die "the single-GPU run failed"; }
  check_layout_line "$dir/single-cuda.log" 1 1 1 1 0
}

# check_layout_line LOG DP TP EP PP ZERO: the run's model line names the layout and a CUDA device.
check_layout_line() {
  [[ $dry == 0 ]] || return 0
  local want="on each of $2 data-parallel rank(s), ZeRO stage $6, tensor parallel $3, expert parallel $4, pipeline parallel $5, device cuda"
  grep -qF "$want" "$1" || die "$(rel "$1") lacks '$want'"
}

configure() {
  local torch_prefix prefix_path
  if [[ $dry == 1 ]]; then
    torch_prefix=TORCH_PREFIX
    say "TORCH_PREFIX: $PYTHON -c 'import torch; print(torch.utils.cmake_prefix_path)'"
  else
    torch_prefix=$("$PYTHON" -c 'import torch; print(torch.utils.cmake_prefix_path)') \
      || die "$PYTHON cannot import torch"
    say "torch $("$PYTHON" -c 'import torch; print(torch.__version__, "CUDA", torch.version.cuda,
      "GPU", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none")')"
    "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.version.cuda else 1)' \
      || die "$PYTHON's torch has no CUDA: no CUDA build possible"
    if ! command -v nvcc > /dev/null && [[ -x /usr/local/cuda/bin/nvcc ]]; then
      export PATH="/usr/local/cuda/bin:$PATH"
      say "nvcc from /usr/local/cuda/bin"
    fi
    command -v nvcc > /dev/null && say "$(nvcc --version | tail -n 1)"
  fi
  prefix_path=$torch_prefix
  [[ -n ${MOETRAIN_DEPS_PREFIX:-} ]] && prefix_path="$MOETRAIN_DEPS_PREFIX;$torch_prefix"
  need_file "$ROOT/CMakeLists.txt"
  local f
  for f in parallel kernels; do
    grep -q "$([[ $f == parallel ]] && echo "$NCCL_ON_LINE" || echo "$KERNELS_ON_LINE")" "$ROOT/$f/CMakeLists.txt" \
      || die "$f/CMakeLists.txt no longer prints the line this stage checks"
  done
  # shellcheck disable=SC2086  # MOETRAIN_CMAKE_ARGS is a list of arguments
  run "$OUT_DIR/configure.log" cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DMOETRAIN_BUILD_TESTS=ON -DMOETRAIN_WITH_NCCL=ON -DMOETRAIN_WITH_CUDA_KERNELS=ON \
    "-DCMAKE_PREFIX_PATH=$prefix_path" ${MOETRAIN_CMAKE_ARGS:-} \
    || { grep -A4 "CMake Error" "$OUT_DIR/configure.log" | head -20; die "configure failed (see configure.log)"; }
  say "asserts: '$NCCL_ON_LINE' and '$KERNELS_ON_LINE' in configure.log;" \
      "MOETRAIN_WITH_NCCL:BOOL=ON and MOETRAIN_WITH_CUDA_KERNELS:BOOL=ON in CMakeCache.txt"
  [[ $dry == 0 ]] || return 0
  grep "moetrain:" "$OUT_DIR/configure.log" || true
  grep -q "$NCCL_ON_LINE" "$OUT_DIR/configure.log" \
    || die "NCCL backend not compiled: $(grep 'NCCL backend' "$OUT_DIR/configure.log" || echo 'no NCCL line in configure.log')"
  grep -q "$KERNELS_ON_LINE" "$OUT_DIR/configure.log" \
    || die "fused CUDA kernels not compiled: $(grep 'fused CUDA kernels' "$OUT_DIR/configure.log" || echo 'no kernels line in configure.log')"
  grep -q "^MOETRAIN_WITH_NCCL:BOOL=ON" "$BUILD/CMakeCache.txt" || die "CMakeCache.txt: MOETRAIN_WITH_NCCL is not ON"
  grep -q "^MOETRAIN_WITH_CUDA_KERNELS:BOOL=ON" "$BUILD/CMakeCache.txt" || die "CMakeCache.txt: MOETRAIN_WITH_CUDA_KERNELS is not ON"
}

build_targets() {
  local t
  for t in "$@"; do need_target "$t"; done
  [[ $dry == 0 ]] || echo "  targets defined in the CMake files: $*"
  run "$OUT_DIR/ninja.log" ninja -C "$BUILD" -j "$(nproc)" "$@" \
    || { grep -E "error|FAILED" "$OUT_DIR/ninja.log" | head -30; die "build failed (see ninja.log)"; }
  [[ $dry == 0 ]] || return 0
  for t in "$@"; do [[ -x $BIN_DIR/$t ]] || die "the build made no $(rel "$BIN_DIR/$t")"; done
  note "built $# targets"
}

# --- the stages ----------------------------------------------------------------
stage_deps() {
  need_file "$ROOT/scripts/offline-deps.sh"
  bash -n "$ROOT/scripts/offline-deps.sh" || die "scripts/offline-deps.sh has a syntax error"
  local env_sh="" prefix_env=""
  if [[ -n ${MOETRAIN_DEPS_PREFIX:-} ]]; then
    for f in "$MOETRAIN_DEPS_PREFIX/env.sh" "$(dirname "$MOETRAIN_DEPS_PREFIX")/env.sh"; do
      [[ -f $f ]] && { prefix_env=$f; break; }
    done
  fi
  if [[ $BUNDLE_ASKED == 1 || ( -z $prefix_env && -d $BUNDLE ) ]]; then
    [[ -d $BUNDLE/debs ]] || die "the offline bundle $(rel "$BUNDLE") has no debs/ folder (--bundle or MOETRAIN_DEPS_BUNDLE)"
    env_sh="$DEPS_PREFIX/env.sh"
    if [[ $dry == 0 && -f $env_sh && -f $BUNDLE/packages.txt ]] && cmp -s "$BUNDLE/packages.txt" "$DEPS_PREFIX/bundle-packages.txt"; then
      say "the bundle $(rel "$BUNDLE") is already installed in $(rel "$DEPS_PREFIX")"
    else
      run "$OUT_DIR/deps-install.log" bash "$ROOT/scripts/offline-deps.sh" install "$BUNDLE" "$DEPS_PREFIX" \
        || { tail -15 "$OUT_DIR/deps-install.log"; die "installing the bundle failed (see deps-install.log)"; }
      [[ $dry == 1 || ! -f $BUNDLE/packages.txt ]] || cp "$BUNDLE/packages.txt" "$DEPS_PREFIX/bundle-packages.txt"
    fi
    note "bundle $(rel "$BUNDLE") installed in $(rel "$DEPS_PREFIX")"
  elif [[ -n $prefix_env ]]; then
    env_sh=$prefix_env
    note "MOETRAIN_DEPS_PREFIX: $(rel "$env_sh")"
  elif [[ -n ${MOETRAIN_DEPS_PREFIX:-} ]]; then
    die "MOETRAIN_DEPS_PREFIX=$MOETRAIN_DEPS_PREFIX has no env.sh (nor its parent folder)"
  else
    say "no offline bundle ($(rel "$BUNDLE")/debs) and no MOETRAIN_DEPS_PREFIX: using the system's packages"
    note "no bundle: the system's packages"
  fi
  if [[ -n $env_sh ]]; then
    say "source $(rel "$env_sh")"
    if [[ $dry == 0 ]]; then
      # shellcheck disable=SC1090
      source "$env_sh"
      echo "$env_sh" > "$STATE/deps-env"
    fi
  fi
  [[ $dry == 0 ]] || return 0
  local missing=() p
  for p in cmake ninja mpirun "$PYTHON"; do
    if command -v "$p" > /dev/null; then say "$p: $(command -v "$p")"; else missing+=("$p"); fi
  done
  say "cmake $(cmake --version 2> /dev/null | head -1 || true); ninja $(ninja --version 2> /dev/null || true);" \
      "$(mpirun --version 2> /dev/null | head -1 || true)"
  say "nvcc: $(command -v nvcc || ls /usr/local/cuda/bin/nvcc 2> /dev/null || echo 'not found')"
  say "$(nvidia-smi -L 2> /dev/null || echo 'nvidia-smi: no GPU listed')"
  [[ ${#missing[@]} -eq 0 ]] || die "missing programs: ${missing[*]}"
}

stage_build() {
  configure
  build_targets "${CHECK_TARGETS[@]}"
}

stage_test() {
  local suite pids=() failed=() skipped=0
  for suite in "${SUITES[@]}"; do need_bin "unit_$suite"; done
  say "the ${#SUITES[@]} suites at once, OMP_NUM_THREADS=2 each"
  for suite in "${SUITES[@]}"; do
    if [[ $dry == 1 ]]; then
      echo "  \$ $(show "$BIN_DIR/unit_$suite") > $(rel "$OUT_DIR/test-$suite.log")"
      continue
    fi
    ( rc=0; OMP_NUM_THREADS=2 "$BIN_DIR/unit_$suite" > "$OUT_DIR/test-$suite.log" 2>&1 || rc=$?
      echo "$rc" > "$STATE/test-$suite.rc" ) &
    pids+=($!)
  done
  [[ $dry == 0 ]] || { say "fails on a CUDA test skipped with 'no CUDA device', 'not compiled in this build' or 'no NCCL backend'"; return 0; }
  wait "${pids[@]}" || true
  : > "$OUT_DIR/test-summary.txt"
  for suite in "${SUITES[@]}"; do
    local log="$OUT_DIR/test-$suite.log" rc n
    rc=$(cat "$STATE/test-$suite.rc" 2> /dev/null || echo "?")
    echo "unit_$suite: exit $rc; $(grep -E '^\[  PASSED  \]|^\[  SKIPPED \] [0-9]|^\[  FAILED  \] [0-9]' "$log" | tr '\n' ' ')" \
      | tee -a "$OUT_DIR/test-summary.txt"
    grep -E '^\[  FAILED  \] [A-Za-z]' "$log" >> "$OUT_DIR/test-summary.txt" || true
    n=$(grep -cE 'no CUDA device|not compiled in this build|no NCCL backend' "$log" || true)
    if [[ $n -gt 0 ]]; then
      echo "unit_$suite: $n CUDA test(s) skipped: $(grep -E 'no CUDA device|not compiled in this build|no NCCL backend' "$log" | sort -u | head -3 | tr '\n' ' ')" \
        | tee -a "$OUT_DIR/test-summary.txt"
      skipped=$((skipped + n))
    fi
    [[ $rc == 0 ]] || failed+=("unit_$suite")
  done
  if [[ ${#failed[@]} -gt 0 || $skipped -gt 0 ]]; then
    note "failed: ${failed[*]:-none}; CUDA tests skipped: $skipped"
    die "failed suites: ${failed[*]:-none}; CUDA tests skipped: $skipped (see test-summary.txt)"
  fi
  note "${#SUITES[@]} suites passed, no CUDA test skipped"
}

stage_parity() {
  local dir="$OUT_DIR/parity" dev
  [[ $dry == 1 ]] || mkdir -p "$dir"
  ensure_data
  say "env NVIDIA_TF32_OVERRIDE=0 (no TF32 in fp32 matmuls; LibTorch has it off by default too)"
  export NVIDIA_TF32_OVERRIDE=0
  for dev in cpu cuda; do
    [[ $dry == 1 ]] || rm -rf "$WORK/runs/parity-$dev"
    run "$dir/train-$dev.log" "$BIN_DIR/moetrain" "${TINY_ARGS[@]}" --output-dir "$WORK/runs/parity-$dev" \
      --max-steps "$PARITY_STEPS" --set log.every=1 --set train.eval_every=0 --set model.moe.capacity_factor=0 \
      --set "train.device=$dev" || { tail -5 "$dir/train-$dev.log"; die "the $dev run failed"; }
    [[ $dry == 1 ]] || cp "$WORK/runs/parity-$dev/metrics.jsonl" "$dir/metrics-$dev.jsonl"
  done
  check_layout_line "$dir/train-cuda.log" 1 1 1 1 0
  if [[ $dry == 1 ]]; then compare_losses "$WORK/runs/parity-cpu" "$WORK/runs/parity-cuda" "$PARITY_STEPS" "$PARITY_RTOL"; return 0; fi
  echo "step: loss on the CPU, loss on the GPU" > "$dir/losses.txt"
  local rc=0
  compare_losses "$WORK/runs/parity-cpu" "$WORK/runs/parity-cuda" "$PARITY_STEPS" "$PARITY_RTOL" >> "$dir/losses.txt" 2>&1 || rc=$?
  cat "$dir/losses.txt"
  note "$(tail -n 1 "$dir/losses.txt")"
  [[ $rc == 0 ]] || die "$(tail -n 1 "$dir/losses.txt")"
}

stage_layouts() {
  local dir="$OUT_DIR/layouts" spec names=() failed=()
  need_file "$ROOT/tests/multirank/compare_runs.py"
  for spec in "${LAYOUTS[@]}"; do names+=("${spec%% *}"); done
  local want=() w
  read -r -a want <<< "${GPU_CHECK_LAYOUTS:-${names[*]}}"
  for w in "${want[@]}"; do
    [[ " ${names[*]} " == *" $w "* ]] || die "unknown layout '$w' in GPU_CHECK_LAYOUTS (layouts: ${names[*]})"
  done
  [[ $dry == 1 ]] || { mkdir -p "$dir"; : > "$dir/summary.txt"; }
  ensure_data
  say "env NVIDIA_TF32_OVERRIDE=0 ${MPI_ENV[*]}"
  export NVIDIA_TF32_OVERRIDE=0 "${MPI_ENV[@]}"
  ensure_single_gpu "$dir"
  for spec in "${LAYOUTS[@]}"; do
    local name np sets=() set_args=() s tp=1 pp=1 ep=1 zero=0
    read -r name np _ <<< "$spec"
    read -r -a sets <<< "${spec#* * }"
    [[ " ${want[*]} " == *" $name "* ]] || continue
    for s in "${sets[@]}"; do
      set_args+=(--set "$s")
      case $s in parallel.tp=*) tp=${s#*=} ;; parallel.pp=*) pp=${s#*=} ;; parallel.ep=*) ep=${s#*=} ;;
                 parallel.zero_stage=*) zero=${s#*=} ;; esac
    done
    [[ $dry == 1 ]] || rm -rf "$WORK/runs/$name"
    local t0=$SECONDS result
    if run "$dir/$name.log" "${MPIRUN[@]}" -np "$np" "$BIN_DIR/moetrain" "${TINY_ARGS[@]}" \
         --output-dir "$WORK/runs/$name" "${LAYOUT_COMMON[@]}" --set train.device=cuda --set parallel.backend=mpi \
         "${set_args[@]}"; then
      if [[ $dry == 0 ]] && ! (check_layout_line "$dir/$name.log" $((np / (tp * pp))) "$tp" "$ep" "$pp" "$zero") 2> "$dir/$name.compare.txt"; then
        result="FAIL: $(cat "$dir/$name.compare.txt")"
      elif compare_with_single "$name" "$dir"; then
        result="PASS: $(tail -n 1 "$dir/$name.compare.txt" 2> /dev/null)"
      else
        result="FAIL: $(grep -v '^\s*$' "$dir/$name.compare.txt" | tail -n 2 | tr '\n' ' ')"
      fi
      [[ $dry == 1 ]] || cp "$WORK/runs/$name/metrics.jsonl" "$dir/$name.metrics.jsonl" 2> /dev/null || true
    else
      result="FAIL: the run failed: $(grep -v '^\s*$' "$dir/$name.log" | tail -n 1 | cut -c1-300)"
    fi
    [[ $dry == 1 ]] && continue
    echo "$name ($np ranks, $((SECONDS - t0)) s): $result" | tee -a "$dir/summary.txt"
    [[ $result == PASS* ]] || failed+=("$name")
  done
  [[ $dry == 0 ]] || return 0
  note "${#want[@]} layouts, failed: ${failed[*]:-none}"
  [[ ${#failed[@]} -eq 0 ]] || die "${failed[*]} did not match the single-GPU run (see layouts/summary.txt)"
}

stage_nccl() {
  local dir="$OUT_DIR/nccl"
  need_file "$ROOT/tests/multirank/compare_runs.py"
  [[ $dry == 1 ]] || mkdir -p "$dir"
  ensure_data
  say "env NVIDIA_TF32_OVERRIDE=0 ${MPI_ENV[*]}"
  export NVIDIA_TF32_OVERRIDE=0 "${MPI_ENV[@]}"
  ensure_single_gpu "$dir"
  [[ $dry == 1 ]] || rm -rf "$WORK/runs/nccl-np1"
  run "$dir/nccl-np1.log" "${MPIRUN[@]}" -np 1 "$BIN_DIR/moetrain" "${TINY_ARGS[@]}" --output-dir "$WORK/runs/nccl-np1" \
    "${LAYOUT_COMMON[@]}" --set train.device=cuda --set parallel.backend=nccl \
    || { tail -5 "$dir/nccl-np1.log"; die "the run failed: $(grep -v '^\s*$' "$dir/nccl-np1.log" | tail -n 1 | cut -c1-300)"; }
  check_layout_line "$dir/nccl-np1.log" 1 1 1 1 0
  if compare_with_single nccl-np1 "$dir"; then
    [[ $dry == 1 ]] && return 0
    cat "$dir/nccl-np1.compare.txt"
    note "$(tail -n 1 "$dir/nccl-np1.compare.txt")"
  else
    cat "$dir/nccl-np1.compare.txt"
    die "does not match the single-GPU run: $(grep -v '^\s*$' "$dir/nccl-np1.compare.txt" | tail -n 1)"
  fi
}

stage_kernels() {
  need_bin bench_kernels
  need_bin bench_generate
  need_file "$ROOT/configs/base-moe.yaml"
  run "$OUT_DIR/kernels.txt" "$BIN_DIR/bench_kernels" --device cuda || { tail -5 "$OUT_DIR/kernels.txt"; die "bench_kernels failed"; }
  [[ $dry == 1 ]] || cat "$OUT_DIR/kernels.txt"
  # Generation on the GPU in bf16 (the key/value cache against the whole-prefix
  # decoder), with whatever time the stage has left.
  local left=STAGE_TIME_LEFT
  if [[ $dry == 0 ]]; then
    left=$(( $(time_left) - 3 ))
    if (( left < 10 )); then
      say "bench_generate: no time left in the stage"; note "bench_generate not run (no time left)"; return 0
    fi
  fi
  local rc=0
  run "$OUT_DIR/generate.txt" timeout "$left" "$BIN_DIR/bench_generate" --device cuda --dtype bf16 \
    --config "$ROOT/configs/base-moe.yaml" --batch 32 --src-len 128 --length 64 || rc=$?
  [[ $dry == 0 ]] || return 0
  cat "$OUT_DIR/generate.txt"
  if [[ $rc == 124 ]]; then note "bench_generate cut short after $left s"
  elif [[ $rc != 0 ]]; then die "bench_generate failed (exit $rc)"
  fi
}

#!/usr/bin/env bash
# GPU training-step benchmark: moetrain next to its Python peers on the same
# GPU, in bf16, for the same model and batch. For each preset it times
# bench_train_step (moetrain), the PyTorch re-implementation of moetrain's
# model in eager mode and under torch.compile (bench/peers/moetrain_model.py)
# and, for nllb-moe, transformers' NllbMoeForConditionalGeneration (the
# expert loop as shipped, and one that follows the router's gates); base and
# large also with activation checkpointing. It measures the bf16 matmul rate
# first (the MFU denominator), then writes a markdown report (tokens/s, MFU,
# peak memory, moetrain's speed relative to each peer) to OUT/report.md and
# prints it; OUT/results.jsonl holds one JSON line per run, OUT/logs/ each
# run's output.
#
#   bash scripts/bench-gpu.sh [--device cuda|cpu] [--smoke] [--out DIR] [--presets "tiny base ..."]
#                             [--steps N] [--warmup N] [--compile | --no-compile]
#
# Presets (widths for --device cuda; --smoke shrinks them to a few seconds on a CPU):
#   tiny        configs/tiny.yaml
#   base        configs/base-moe.yaml: 12/6 layers, d_model 768, 8 experts top-2 every 2nd layer
#   base-dense  the same shape without MoE (model.moe.every=0)
#   large       the base shape at d_model 1536 (1.8B parameters), 64 sequences per step in
#               micro-batches of 32: most of an 80 GB GPU; smaller micro-batches (the same 64
#               sequences) if moetrain runs out of memory
#   nllb-moe    configs/nllb-moe-compatible.yaml at NLLB-200's width (d_model 1024, 16 heads,
#               d_ff 4096, 12/12 layers), its 4 experts every 2nd layer
# Every preset: precision.compute=bf16, vocabulary 32000, source 512 and target
# 128 tokens. --smoke runs on the given device with tiny shapes, one warm-up
# and two timed steps (tiny also with activation checkpointing), and skips
# torch.compile on a CPU (compiling takes minutes there) unless --compile.
#
# Environment: MOETRAIN_BUILD_DIR (default build-gpu; configured and built when
# bench_train_step is missing or out of date), MOETRAIN_CMAKE_ARGS (extra
# cmake arguments, e.g. a -DCMAKE_PREFIX_PATH for offline dependencies),
# BENCH_BIN (a built bench_train_step: no build), PYTHON (default .venv/bin/python
# when it has torch, else python3), BENCH_OUT (default bench-results).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

device=cuda smoke=0 compile=auto presets="" steps="" warmup=""
out="${BENCH_OUT:-$ROOT/bench-results}"
while [[ $# -gt 0 ]]; do
  case $1 in
    --device) device=$2; shift 2 ;;
    --smoke) smoke=1; shift ;;
    --out) out=$2; shift 2 ;;
    --presets) presets=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --warmup) warmup=$2; shift 2 ;;
    --compile) compile=yes; shift ;;
    --no-compile) compile=no; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench-gpu.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[[ $device == cpu || $device == cuda ]] || { echo "bench-gpu.sh: --device must be cpu or cuda" >&2; exit 2; }
if [[ $smoke == 1 ]]; then
  steps=${steps:-2} warmup=${warmup:-1}
  presets=${presets:-"tiny base base-dense large nllb-moe"}
else
  steps=${steps:-10} warmup=${warmup:-3}
  presets=${presets:-"tiny base base-dense large nllb-moe"}
fi
if [[ $compile == auto ]]; then
  if [[ $device == cpu ]]; then compile=no; else compile=yes; fi
fi

# --- Python and the build -------------------------------------------------
if [[ -z ${PYTHON:-} ]]; then
  PYTHON=python3
  if [[ -x $ROOT/.venv/bin/python ]] && "$ROOT/.venv/bin/python" -c 'import torch' 2>/dev/null; then
    PYTHON=$ROOT/.venv/bin/python
  fi
fi
"$PYTHON" -c 'import torch, yaml' || { echo "bench-gpu.sh: $PYTHON lacks torch or PyYAML" >&2; exit 1; }
have_transformers=1
"$PYTHON" -c 'import transformers' 2>/dev/null || have_transformers=0

if [[ -n ${BENCH_BIN:-} ]]; then
  BIN=$BENCH_BIN
else
  build="$ROOT/${MOETRAIN_BUILD_DIR:-build-gpu}"
  if [[ ! -f $build/build.ninja ]]; then
    prefix=$("$PYTHON" -c 'import torch; print(torch.utils.cmake_prefix_path)')
    # shellcheck disable=SC2086  # MOETRAIN_CMAKE_ARGS is a list of arguments
    cmake -S "$ROOT" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix" \
      -DMOETRAIN_BUILD_TESTS=OFF ${MOETRAIN_CMAKE_ARGS:-}
  fi
  ninja -C "$build" bench_train_step
  BIN=$build/bin/bench_train_step
fi
[[ -x $BIN ]] || { echo "bench-gpu.sh: no bench_train_step at $BIN" >&2; exit 1; }

mkdir -p "$out/logs"
results=$out/results.jsonl
: > "$results"
notes=()

# --- presets: config file and overrides -----------------------------------
# preset_args NAME: prints the preset's config and --set arguments, one per line.
preset_args() {
  local common=(precision.compute=bf16 data.src_len=512 data.tgt_len=128)
  local small=(precision.compute=bf16 data.src_len=32 data.tgt_len=16 train.global_batch=4 train.micro_batch=2)
  local config sets=()
  case $1 in
    tiny) config=configs/tiny.yaml
      if [[ $smoke == 1 ]]; then sets=("${small[@]}"); else sets=("${common[@]}" train.global_batch=64 train.micro_batch=32); fi ;;
    base|base-dense) config=configs/base-moe.yaml
      if [[ $smoke == 1 ]]; then
        sets=("${small[@]}" model.d_model=64 model.n_heads=4 model.d_ff=128 model.max_positions=64)
      else
        sets=("${common[@]}" train.global_batch=64 train.micro_batch=16)
      fi
      [[ $1 == base-dense ]] && sets+=(model.moe.every=0) ;;
    large) config=configs/base-moe.yaml
      if [[ $smoke == 1 ]]; then
        sets=("${small[@]}" model.d_model=96 model.n_heads=4 model.d_ff=192 model.max_positions=64)
      else
        sets=("${common[@]}" model.d_model=1536 model.n_heads=12 model.d_ff=6144
              train.global_batch=64 "train.micro_batch=$large_micro")
      fi ;;
    nllb-moe) config=configs/nllb-moe-compatible.yaml
      if [[ $smoke == 1 ]]; then
        sets=("${small[@]}" model.d_model=64 model.n_heads=4 model.d_ff=128)
      else
        sets=("${common[@]}" model.d_model=1024 model.n_heads=16 model.d_ff=4096 model.encoder_layers=12
              model.decoder_layers=12 model.max_positions=1024 train.global_batch=32 train.micro_batch=16)
      fi ;;
    *) echo "bench-gpu.sh: unknown preset '$1' (tiny, base, base-dense, large, nllb-moe)" >&2; exit 2 ;;
  esac
  echo "$ROOT/$config"
  printf '%s\n' "${sets[@]}"
}
large_micro=32
vocab=32000
threads=()
if [[ $smoke == 1 ]]; then
  # One intra-op thread: tiny shapes gain nothing from more, and a busy
  # machine slows spinning OpenMP threads down by orders of magnitude.
  vocab=512 threads=(--threads 1)
fi

# --- running ---------------------------------------------------------------
# record_failure PRESET IMPL CKPT LOG: a JSON line saying the run failed, with
# the last line of its log.
record_failure() {
  local reason
  reason=$(grep -v '^\s*$' "$4" | tail -n 1 | cut -c1-200)
  "$PYTHON" -c 'import json, sys; print(json.dumps(dict(preset=sys.argv[1], impl=sys.argv[2],
      activation_checkpointing=sys.argv[3] == "1", error=sys.argv[4] or "no output")))' \
    "$1" "$2" "$3" "$reason" >> "$results"
}

record_skip() {  # PRESET IMPL CKPT REASON
  "$PYTHON" -c 'import json, sys; print(json.dumps(dict(preset=sys.argv[1], impl=sys.argv[2],
      activation_checkpointing=sys.argv[3] == "1", skipped=sys.argv[4])))' "$1" "$2" "$3" "$4" >> "$results"
}

# run_one PRESET IMPL CKPT [EXTRA ARGS...]: one timed run in its own process,
# its JSON line appended to the results (or a failure line). IMPL is
# moetrain, moetrain-reference or a run_peer.py --impl. Returns 1 when the
# run failed.
run_one() {
  local preset=$1 impl=$2 ckpt=$3; shift 3
  local lines config log="$out/logs/$preset-$impl.log"
  [[ $ckpt == 1 ]] && log="$out/logs/$preset-$impl-ckpt.log"
  mapfile -t lines < <(preset_args "$preset")
  config=${lines[0]}
  local sets=("${lines[@]:1}")
  [[ $ckpt == 1 ]] && sets+=(model.activation_checkpointing=true)
  local set_args=()
  for s in "${sets[@]}"; do set_args+=(--set "$s"); done
  local cmd
  case $impl in
    moetrain|moetrain-reference)
      cmd=("$BIN" --config "$config" --name "$preset" "${set_args[@]}" --device "$device" --vocab "$vocab"
           --steps "$steps" --warmup "$warmup" --json --peak-tflops "$peak"
           --kernels "$([[ $impl == moetrain ]] && echo fused || echo reference)" "${threads[@]}") ;;
    *)
      cmd=("$PYTHON" "$ROOT/bench/peers/run_peer.py" --impl "${impl%-gates}" --config "$config" --name "$preset"
           "${set_args[@]}" --device "$device" --vocab "$vocab" --steps "$steps" --warmup "$warmup"
           --peak-tflops "$peak" "${threads[@]}") ;;
  esac
  echo "== $preset $impl$([[ $ckpt == 1 ]] && echo ' (activation checkpointing)')" >&2
  if "${cmd[@]}" "$@" > "$log" 2>&1 && grep -q '^{' "$log"; then
    grep '^{' "$log" | tail -n 1 >> "$results"
    return 0
  fi
  echo "   failed: $(grep -v '^\s*$' "$log" | tail -n 1 | cut -c1-200) (log: $log)" >&2
  record_failure "$preset" "$impl" "$ckpt" "$log"
  return 1
}

# --- the bf16 matmul rate (MFU denominator) ----------------------------------
matmul_size=8192
[[ $device == cpu ]] && matmul_size=512
"$BIN" --matmul-only --device "$device" --matmul-size "$matmul_size" --json "${threads[@]}" > "$out/logs/matmul.log" 2>&1 \
  || { cat "$out/logs/matmul.log" >&2; exit 1; }
grep '^{' "$out/logs/matmul.log" >> "$results"
peak=$("$PYTHON" -c 'import json, sys; print(json.loads(sys.argv[1])["tflops"])' "$(grep '^{' "$out/logs/matmul.log")")
"$PYTHON" "$ROOT/bench/peers/run_peer.py" --matmul-only --device "$device" --matmul-size "$matmul_size" \
  "${threads[@]}" 2>/dev/null | grep '^{' >> "$results" || true
echo "== bf16 matmul ${matmul_size}^3 on $device: $peak TFLOP/s" >&2

# --- the runs ----------------------------------------------------------------
for preset in $presets; do
  preset_args "$preset" > /dev/null  # fails early on an unknown name
  if [[ $preset == large && $smoke == 0 ]]; then
    # The largest micro-batch moetrain fits, the same for every implementation.
    while ! run_one large moetrain 0; do
      if ! grep -qi "out of memory" "$out/logs/large-moetrain.log" || (( large_micro <= 4 )); then break; fi
      sed -i '$d' "$results"
      large_micro=$((large_micro / 2))
      echo "   retrying large with micro-batches of $large_micro" >&2
    done
    notes+=("large: 64 sequences per step in micro-batches of $large_micro")
  else
    run_one "$preset" moetrain 0 || true
  fi
  [[ $preset == base || $preset == nllb-moe ]] && { run_one "$preset" moetrain-reference 0 || true; }
  run_one "$preset" torch-eager 0 || true
  if [[ $compile == yes ]]; then
    run_one "$preset" torch-compile 0 --warmup "$((warmup + 2))" || true
  else
    record_skip "$preset" torch-compile 0 "torch.compile takes minutes on a CPU (--compile runs it)"
  fi
  if [[ $preset == nllb-moe ]]; then
    if [[ $have_transformers == 1 ]]; then
      run_one "$preset" hf-eager 0 --expert-dispatch shipped || true
      run_one "$preset" hf-eager-gates 0 --expert-dispatch gates || true
    else
      record_skip "$preset" hf-eager 0 "transformers is not installed for $PYTHON"
    fi
  fi
  if [[ $preset == base || $preset == large || ( $smoke == 1 && $preset == tiny ) ]]; then
    run_one "$preset" moetrain 1 || true
    run_one "$preset" torch-eager 1 || true
    [[ $compile == yes ]] && { run_one "$preset" torch-compile 1 --warmup "$((warmup + 2))" || true; }
  fi
done

# --- the report ----------------------------------------------------------------
notes+=("precision: bf16 weights and activations, fp32 master weights, gradients accumulated in fp32 and AdamW on the masters, in moetrain (precision.compute=bf16) and in every peer (no autocast)")
notes+=("FLOPs: 6 x active parameters x positions (encoder against source, decoder and output projection against target positions; MoE layers: router + top-2 experts) + attention 12 x d_model x (S^2 per encoder layer, T^2 + T x S per decoder layer), causal self-attention counted in full (bench/flops.h)")
if [[ $have_transformers == 1 && " $presets " == *" nllb-moe "* ]]; then
  notes+=("hf-eager: transformers $("$PYTHON" -c 'import transformers; print(transformers.__version__)') NllbMoeForConditionalGeneration as shipped (eager attention: it does not support SDPA); its expert_rows_per_token in results.jsonl is the expert FFN rows it computes per token (2 for top-2; more when its expert loop dispatches by the one-hot top-1 mask). hf-eager-gates: the same model with an expert loop that follows the router's gates. expert_capacity = the batch's tokens (dropless, as moetrain's preset)")
fi
[[ $compile == no ]] && notes+=("torch-compile skipped: compiling takes minutes on a CPU (--compile runs it)")
[[ $smoke == 1 ]] && notes+=("smoke run: tiny shapes, $warmup warm-up and $steps timed steps; the figures only show that every implementation runs")
note_args=()
for n in "${notes[@]}"; do note_args+=(--note "$n"); done
commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
git -C "$ROOT" diff --quiet HEAD 2>/dev/null || commit="$commit (with local changes)"
"$PYTHON" "$ROOT/bench/peers/report.py" "$results" --out "$out/report.md" --date "$(date -u '+%Y-%m-%d %H:%M UTC')" \
  --commit "$commit" "${note_args[@]}"

#!/usr/bin/env bash
# Converts a dense model that `moetrain export --format m2m100` wrote to a
# CTranslate2 model, and optionally translates a file of source lines with it,
# writing one output per line exactly as `moetrain generate` would (see
# docs/serving.md).
#
#   scripts/serve-ctranslate2.sh --model HF_DIR --out CT2_DIR --quantization float32|int8|int8_bfloat16 \
#     [--input FILE [--output FILE] [--max-length N] [--beam-size N] [--length-penalty X]
#      [--beam-stop patience|never] [--patience N]
#      [--batch-size N] [--max-source-length N] [--src-lang CODE] [--tgt-lang CODE] [--threads N]]
#
# CTranslate2 (the `ctranslate2` package) is installed into .venv with pip
# when it is missing; transformers, torch and sentencepiece must already be
# there (scripts/setup.sh installs them). The Python side is
# scripts/ctranslate2_serve.py.
#
# Environment:
#   MOETRAIN_PYTHON       the Python to use (default .venv/bin/python)
#   MOETRAIN_WHEEL_CACHE  where downloaded wheels are kept (default ~/.cache/moetrain/wheels)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${MOETRAIN_PYTHON:-$ROOT/.venv/bin/python}"
WHEEL_CACHE="${MOETRAIN_WHEEL_CACHE:-$HOME/.cache/moetrain/wheels}"
HELPER="$ROOT/scripts/ctranslate2_serve.py"

die() { echo "serve-ctranslate2: error: $*" >&2; exit 2; }
log() { echo "[serve-ctranslate2] $*" >&2; }

usage="usage: $0 --model HF_DIR --out CT2_DIR --quantization float32|int8|int8_bfloat16 [--input FILE --output FILE --max-length N --beam-size N ...]"
model="" out="" quantization="" input="" output=""
translate_args=()
while [[ $# -gt 0 ]]; do
  flag=$1
  case "$flag" in
    -h|--help) echo "$usage"; exit 0 ;;
    --model|--out|--quantization|--input|--output|--max-length|--beam-size|--length-penalty|--beam-stop|--patience|\
    --batch-size|--max-source-length|--src-lang|--tgt-lang|--threads)
      [[ $# -ge 2 ]] || die "$flag needs a value"
      value=$2; shift 2 ;;
    *) die "unknown argument '$flag' ($usage)" ;;
  esac
  case "$flag" in
    --model) model=$value ;;
    --out) out=$value ;;
    --quantization) quantization=$value ;;
    --input) input=$value ;;
    --output) output=$value ;;
    --max-length|--beam-size|--patience|--batch-size|--max-source-length)
      [[ "$value" =~ ^[1-9][0-9]*$ ]] || die "$flag must be a positive integer, got '$value'"
      translate_args+=("$flag" "$value") ;;
    --threads)
      [[ "$value" =~ ^[0-9]+$ ]] || die "--threads must be a non-negative integer, got '$value'"
      translate_args+=("$flag" "$value") ;;
    --length-penalty)
      [[ "$value" =~ ^[0-9]*\.?[0-9]+$ ]] || die "--length-penalty must be a non-negative number, got '$value'"
      translate_args+=("$flag" "$value") ;;
    *) translate_args+=("$flag" "$value") ;;
  esac
done

# --- the arguments ------------------------------------------------------------
[[ -n "$model" ]] || die "--model HF_DIR is required ($usage)"
[[ -n "$out" ]] || die "--out CT2_DIR is required ($usage)"
[[ -n "$quantization" ]] || die "--quantization is required: float32, int8 or int8_bfloat16"
case "$quantization" in
  float32|int8|int8_bfloat16) ;;
  *) die "unknown quantization '$quantization' (expected float32, int8 or int8_bfloat16)" ;;
esac
[[ -d "$model" ]] || die "--model: no such directory: $model"
for file in config.json tokenizer.model; do
  [[ -f "$model/$file" ]] || die "--model: $model has no $file (write it with: moetrain export --format m2m100)"
done
grep -q '"model_type": "m2m_100"' "$model/config.json" \
  || die "--model: $model is not an M2M100 export (write it with: moetrain export --format m2m100)"
if [[ -z "$input" ]]; then
  [[ -z "$output" && ${#translate_args[@]} -eq 0 ]] || die "--output, --max-length, --beam-size ... need --input FILE"
else
  [[ -f "$input" ]] || die "--input: no such file: $input"
fi
[[ "$(realpath -m "$out")" != "$(realpath -m "$model")" ]] || die "--out must differ from --model"

# --- the Python packages ------------------------------------------------------
[[ -x "$PY" ]] || die "no Python at $PY (run scripts/setup.sh)"
"$PY" -c 'import torch, transformers, sentencepiece' 2>/dev/null \
  || die "torch, transformers or sentencepiece is missing from $PY (run scripts/setup.sh)"
# As scripts/setup.sh installs its Python packages: downloaded into the wheel
# cache, then installed from there.
if ! "$PY" -c 'import ctranslate2' 2>/dev/null; then
  log "installing ctranslate2 into $(dirname "$(dirname "$PY")")"
  mkdir -p "$WHEEL_CACHE"
  "$PY" -m pip download -q ctranslate2 -d "$WHEEL_CACHE" && \
    "$PY" -m pip install -q --no-index --find-links "$WHEEL_CACHE" ctranslate2 || die "ctranslate2 could not be installed"
fi

# --- convert, then translate ----------------------------------------------------
"$PY" "$HELPER" convert --model "$model" --out "$out" --quantization "$quantization"
if [[ -n "$input" ]]; then
  output_args=()
  [[ -n "$output" ]] && output_args=(--output "$output")
  "$PY" "$HELPER" translate --model "$out" --input "$input" "${output_args[@]}" "${translate_args[@]}"
fi

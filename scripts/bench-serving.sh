#!/usr/bin/env bash
# Words per second of four ways to serve one dense model on the CPU, greedy
# and with 4 beams, at batch 1 and batch 64:
#   CTranslate2 float32 and int8 (scripts/serve-ctranslate2.sh converts the
#   export), `moetrain generate` on the checkpoint, and transformers'
#   generate on the export.
#
#   scripts/bench-serving.sh --checkpoint RUN_OR_CHECKPOINT --model HF_DIR --input WORDS \
#     [--work DIR] [--max-length 32] [--threads 1] [--batch1-lines 200] [--batch64-lines 1000]
#
# HF_DIR is `moetrain export --checkpoint RUN_OR_CHECKPOINT --format m2m100`'s
# output; WORDS one source per line (e.g. the G2P test words of
# docs/finetuning.md). Batch 1 runs on the first --batch1-lines lines, batch 64
# on the first --batch64-lines. Only translation is timed: Python engines load
# and warm up first; for `moetrain generate`, a run on one line is subtracted
# (loading the checkpoint). Every engine gets --threads intra-op threads.
# Prints a table: engine, method, batch, lines, seconds, lines per second.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${MOETRAIN_PYTHON:-$ROOT/.venv/bin/python}"
BIN="${MOETRAIN_BIN:-$ROOT/build/bin/moetrain}"
die() { echo "bench-serving: error: $*" >&2; exit 2; }

checkpoint="" model="" input="" work="" max_length=32 threads=1 n1=200 n64=1000
while [[ $# -gt 0 ]]; do
  [[ $# -ge 2 ]] || die "$1 needs a value"
  case "$1" in
    --checkpoint) checkpoint=$2 ;;
    --model) model=$2 ;;
    --input) input=$2 ;;
    --work) work=$2 ;;
    --max-length) max_length=$2 ;;
    --threads) threads=$2 ;;
    --batch1-lines) n1=$2 ;;
    --batch64-lines) n64=$2 ;;
    *) die "unknown argument '$1'" ;;
  esac
  shift 2
done
[[ -e "$checkpoint" ]] || die "--checkpoint: not found: '$checkpoint'"
[[ -f "$model/config.json" ]] || die "--model: no config.json in '$model'"
[[ -f "$input" ]] || die "--input: no such file: '$input'"
for n in "$max_length" "$threads" "$n1" "$n64"; do
  [[ "$n" =~ ^[1-9][0-9]*$ ]] || die "numbers must be positive integers, got '$n'"
done
[[ -n "$work" ]] || work="$(mktemp -d)"
mkdir -p "$work"
export OMP_NUM_THREADS="$threads"

rows="$work/rows.tsv"
: > "$rows"
for q in float32 int8; do
  bash "$ROOT/scripts/serve-ctranslate2.sh" --model "$model" --out "$work/ct2-$q" --quantization "$q" 2> /dev/null \
    || die "converting to $q failed"
  "$PY" "$ROOT/scripts/bench_serving.py" ct2 "$work/ct2-$q" "$input" "ctranslate2 $q" --max-length "$max_length" \
    --threads "$threads" --runs "1:$n1 64:$n64" >> "$rows"
done
"$PY" "$ROOT/scripts/bench_serving.py" transformers "$model" "$input" "transformers" --max-length "$max_length" \
  --threads "$threads" --runs "1:$n1 64:$n64" >> "$rows"

# moetrain generate: the whole command, less a run on one line (startup and loading).
seconds() {  # LINES BATCH METHOD: wall seconds of moetrain generate on the first LINES lines
  head -n "$1" "$input" > "$work/subset.txt"
  local start end
  start=$(date +%s.%N)
  "$BIN" generate --checkpoint "$checkpoint" --input "$work/subset.txt" --output "$work/out.txt" \
    --max-length "$max_length" --batch-size "$2" --method "$3" --beam-size 4 2> /dev/null || die "moetrain generate failed"
  end=$(date +%s.%N)
  echo "$end - $start" | bc -l
}
for method in greedy beam; do
  startup=$(seconds 1 1 "$method")
  for run in "1:$n1" "64:$n64"; do
    batch=${run%%:*} count=${run#*:}
    total=$(seconds "$count" "$batch" "$method")
    label=$method; [[ $method == beam ]] && label=beam4
    awk -v b="$batch" -v n="$count" -v t="$total" -v s="$startup" -v m="$label" \
      'BEGIN { d = t - s; printf "moetrain generate\t%s\t%d\t%d\t%.2f\t%.1f\n", m, b, n, d, n / d }' >> "$rows"
  done
done

echo "serving benchmark: $(getconf _NPROCESSORS_ONLN) CPU core(s), $threads intra-op thread(s), --max-length $max_length, $(wc -l < "$input") lines in $input"
{
  printf 'engine\tmethod\tbatch\tlines\tseconds\tlines/s\n'
  sort -t$'\t' -k2,2 -k3,3n -k1,1 "$rows"
} | column -t -s$'\t'

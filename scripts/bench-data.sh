#!/usr/bin/env bash
# Benchmark of the pretraining data path at growing corpus sizes (default
# 0.5, 2 and 8 GB of text). For each size it prints:
#   * `moetrain tokenize` throughput (MB/s of input text, with an existing
#     tokenizer) with --threads 1, --threads 2 and mpirun -np 2, each as
#     "whole command / encoding phase" (the second is the rate tokenize itself
#     prints: reading, encoding and writing shards, without process start-up,
#     tokenizer loading and the input-counting pass), and whether the three
#     give byte-identical shards;
#   * the start-up of a training run over the shards (seconds until its first
#     step begins: config, dataset, model), the rank's peak resident memory
#     after 20 steps, and the median data_wait_ms per step, streaming the
#     shards (the default) and, for contrast, loading them (data.streaming
#     false; skipped above BENCH_DATA_LOADED_MAX_GB, default 2, where loading
#     would take most of the machine's memory);
# and once, on the smallest corpus, the sentencepiece Python package's encode
# throughput on one core, the reference for tokenize's per-core speed.
#
# The corpora are the shared corpora (Brown, SpamAssassin mail, the Chinese
# fortunes) repeated with per-copy variation (bench/data/make_corpus.py).
# sentencepiece comes from .venv (never a build dependency).
#
#   bash scripts/bench-data.sh                 # sizes 0.5 2 8 (GB)
#   BENCH_DATA_SIZES="0.1 0.4" bash scripts/bench-data.sh
#
# Environment: MOETRAIN_BIN (default build/bin/moetrain), MOETRAIN_SHARED_DATA
# (default ../shared/data), BENCH_WORK (default /tmp/moetrain-bench-data; the
# 8 GB size needs about 25 GB there), BENCH_DATA_SIZES,
# BENCH_DATA_LOADED_MAX_GB, MPIRUN (default mpirun). The report is also written to BENCH_WORK/report.md.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${MOETRAIN_BIN:-$ROOT/build/bin/moetrain}"
DATA="${MOETRAIN_SHARED_DATA:-$ROOT/../shared/data}"
WORK="${BENCH_WORK:-/tmp/moetrain-bench-data}"
SIZES="${BENCH_DATA_SIZES:-0.5 2 8}"
LOADED_MAX_GB="${BENCH_DATA_LOADED_MAX_GB:-2}"
MPIRUN="${MPIRUN:-mpirun}"
PY="$ROOT/.venv/bin/python"
[[ -x "$BIN" ]] || { echo "bench-data: no moetrain binary at $BIN (build it, or set MOETRAIN_BIN)" >&2; exit 1; }
for f in brown.jsonl spam_assassin.jsonl zh_fortunes.jsonl; do
  [[ -f "$DATA/$f" ]] || { echo "bench-data: missing $DATA/$f" >&2; exit 1; }
done
"$PY" -c 'import sentencepiece' 2>/dev/null || "$PY" -m pip install -q sentencepiece
[[ $(id -u) -ne 0 ]] || export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
log() { printf '[bench-data] %s\n' "$*" >&2; }

rm -rf "$WORK"; mkdir -p "$WORK"
# Mail bodies without headers, as training text.
"$BIN" clean --input "$DATA/spam_assassin.jsonl" --output "$WORK/mail" --extract mail --stages "" > /dev/null
sources=("$DATA/brown.jsonl" "$DATA/zh_fortunes.jsonl" "$WORK"/mail/kept/*.jsonl)
# One tokenizer for every run, so the timings are encoding alone.
"$BIN" tokenize --input "${sources[@]}" --output "$WORK/tokenizer" --vocab-size 8000 > /dev/null
model="$WORK/tokenizer/tokenizer.model"

seconds() { local t0=$1; "$PY" -c "import time; print(time.time() - $t0)"; }
now() { "$PY" -c 'import time; print(time.time())'; }

# tokenize_run NAME CORPUS MB THREADS [LAUNCHER...]: prints "WHOLE / ENCODING"
# MB/s (the whole command; the encoding phase as dataset.json's run records it).
tokenize_run() {
  local name=$1 corpus=$2 mb=$3 threads=$4; shift 4
  local t0; t0=$(now)
  "$@" "$BIN" tokenize --input "$corpus" --output "$WORK/$name" --tokenizer "$model" --docs-per-shard 20000 \
    --threads "$threads" > "$WORK/$name.log" 2>&1 || { tail -5 "$WORK/$name.log" >&2; echo "failed"; return; }
  local whole; whole=$(seconds "$t0")
  "$PY" -c "import json; r = json.load(open('$WORK/$name/dataset.json'))['run']; print(f'{$mb / $whole:.2f} / {r[\"encode_mb_per_s\"]:.2f}')"
}

same_shards() {  # DIR_A DIR_B: yes when every shard is byte-identical
  local a=$1 b=$2 f
  for f in "$a"/train-*.h5; do cmp -s "$f" "$b/$(basename "$f")" || { echo no; return; }; done
  local na nb
  na=$(find "$a" -name 'train-*.h5' | wc -l)
  nb=$(find "$b" -name 'train-*.h5' | wc -l)
  [[ $na -eq $nb ]] && echo yes || echo no
}

train_probe() {  # SHARDS STREAMING: JSON of startup_s, peak_rss_mb, median_data_wait_ms
  local shards=$1 streaming=$2 out
  out="$WORK/train-$(basename "$1")-$2"
  "$PY" "$ROOT/bench/data/train_probe.py" "$out" -- "$BIN" train --config "$ROOT/configs/tiny.yaml" \
    --set data.train="$shards" --set 'data.valid=""' --set data.streaming="$streaming" --set train.eval_every=0 --set log.every=1 \
    --set checkpoint.every=0 --output-dir "$out" --max-steps 20
}

report="$WORK/report.md"
{
  echo "| corpus | MB of text | tokenize 1 thread MB/s (whole / encoding) | 2 threads | mpirun -np 2 | identical shards | start-up s (streamed / loaded) | peak RSS MB (streamed / loaded) | median data_wait_ms (streamed / loaded) |"
  echo "|---|---|---|---|---|---|---|---|---|"
} > "$report"
first=1
for size in $SIZES; do
  corpus="$WORK/corpus-$size.jsonl"
  log "corpus of $size GB"
  "$PY" "$ROOT/bench/data/make_corpus.py" "$corpus" "$(echo "$size * 1000" | bc)" "${sources[@]}" >&2
  mb=$("$PY" -c "import json; print(sum(len(json.loads(l)['text'].encode()) for l in open('$corpus'))/1e6)")
  log "tokenize, 1 thread"
  t1=$(tokenize_run "t1-$size" "$corpus" "$mb" 1)
  log "tokenize, 2 threads"
  t2=$(tokenize_run "t2-$size" "$corpus" "$mb" 2)
  log "tokenize, mpirun -np 2"
  tn=$(tokenize_run "np2-$size" "$corpus" "$mb" 1 "$MPIRUN" -np 2 --oversubscribe --bind-to none)
  same="$(same_shards "$WORK/t1-$size" "$WORK/t2-$size")/$(same_shards "$WORK/t1-$size" "$WORK/np2-$size")"
  if [[ $first -eq 1 ]]; then
    spm=$("$PY" "$ROOT/bench/data/sentencepiece_encode.py" "$model" "$corpus")
    log "sentencepiece (Python) on $size GB: $spm"
    echo "sentencepiece Python package, one core, $size GB corpus: $spm" >> "$WORK/spm.txt"
    first=0
  fi
  log "training probes"
  streamed=$(train_probe "$WORK/t1-$size" true)
  if [[ $(echo "$size <= $LOADED_MAX_GB" | bc) -eq 1 ]]; then
    loaded=$(train_probe "$WORK/t1-$size" false)
  else
    log "loaded probe skipped: $size GB is above BENCH_DATA_LOADED_MAX_GB=$LOADED_MAX_GB"
    loaded='{}'
  fi
  row=$("$PY" - "$streamed" "$loaded" <<'PY'
import json, sys
s, l = json.loads(sys.argv[1]), json.loads(sys.argv[2])
f = lambda k, fmt: f"{fmt.format(s[k])} / {fmt.format(l[k]) if k in l else 'skipped'}"
print(f"{f('startup_s', '{:.1f}')} | {f('peak_rss_mb', '{:.0f}')} | {f('median_data_wait_ms', '{:.2f}')}")
PY
)
  echo "| $size GB | $(printf '%.0f' "$mb") | $t1 | $t2 | $tn | $same | $row |" >> "$report"
  rm -f "$corpus"; rm -rf "$WORK/t2-$size" "$WORK/np2-$size"
done
cat "$report"
[[ -f "$WORK/spm.txt" ]] && cat "$WORK/spm.txt"

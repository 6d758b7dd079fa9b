#!/usr/bin/env bash
# Benchmark of `moetrain clean` against datatrove (FineWeb's pipeline library)
# on the same input with the same settings, one process (one core) each:
#   * Gopher quality filter (the published thresholds, datatrove's defaults);
#   * MinHash near-dedup (word 5-grams, 14 bands x 8 rows).
# Prints per-core throughput (MB/s of input text) of both, the speed-up, and
# how often their keep/drop decisions agree.
#
# datatrove (and spaCy, its English word tokenizer) are installed from PyPI
# into the project's .venv by this script; they are never a build dependency.
#
# Input: Brown + the SpamAssassin mail bodies (extracted by moetrain), both
# normalised once by `moetrain clean` so that both tools read identical text.
#
# Environment: MOETRAIN_BIN (default build/bin/moetrain), MOETRAIN_SHARED_DATA
# (default ../shared/data), BENCH_WORK (default /tmp/moetrain-bench-clean).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${MOETRAIN_BIN:-$ROOT/build/bin/moetrain}"
DATA="${MOETRAIN_SHARED_DATA:-$ROOT/../shared/data}"
WORK="${BENCH_WORK:-/tmp/moetrain-bench-clean}"
PY="$ROOT/.venv/bin/python"
[[ -x "$BIN" ]] || { echo "no moetrain binary at $BIN (build it, or set MOETRAIN_BIN)"; exit 1; }
for f in brown.jsonl spam_assassin.jsonl; do
  [[ -f "$DATA/$f" ]] || { echo "missing $DATA/$f"; exit 1; }
done

if ! "$PY" -c "import datatrove, spacy, xxhash, tokenizers, regex, orjson" 2>/dev/null; then
  echo "[bench] installing datatrove[processing,io] and spacy into .venv (PyPI)"
  "$PY" -m pip install -q "datatrove[processing,io]" spacy || {
    echo "[bench] could not install datatrove from PyPI; no comparison possible"; exit 1; }
fi
echo "[bench] datatrove $("$PY" -c 'import importlib.metadata as m; print(m.version("datatrove"))')," \
     "spacy $("$PY" -c 'import spacy; print(spacy.__version__)')"

rm -rf "$WORK"; mkdir -p "$WORK"
# 1. One normalised input file.
"$BIN" clean --input "$DATA/brown.jsonl" --output "$WORK/prep-brown" --stages "" > /dev/null
"$BIN" clean --input "$DATA/spam_assassin.jsonl" --output "$WORK/prep-mail" --extract mail --stages "" > /dev/null
cat "$WORK"/prep-brown/kept/*.jsonl "$WORK"/prep-mail/kept/*.jsonl \
  | "$PY" -c 'import sys, json
for line in sys.stdin:
    r = json.loads(line); print(json.dumps({"id": r["id"], "text": r["text"]}))' > "$WORK/input.jsonl"
mb=$("$PY" -c "import json; print(sum(len(json.loads(l)['text'].encode()) for l in open('$WORK/input.jsonl'))/1e6)")
docs=$(wc -l < "$WORK/input.jsonl")
echo "[bench] input: $docs documents, $mb MB of text"

# 2. moetrain, one process: Gopher quality only; MinHash only.
only_gopher=(--set quality.gopher_repetition.enabled=false --set quality.c4.enabled=false --set quality.fineweb.enabled=false)
t0=$(date +%s.%N)
"$BIN" clean --input "$WORK/input.jsonl" --output "$WORK/mt-gopher" --stages quality "${only_gopher[@]}" > /dev/null
t1=$(date +%s.%N)
"$BIN" clean --input "$WORK/input.jsonl" --output "$WORK/mt-minhash" --stages dedup --set dedup.exact=false > /dev/null
t2=$(date +%s.%N)

# 3. datatrove, one process.
"$PY" "$ROOT/bench/clean/datatrove_bench.py" "$WORK/input.jsonl" "$WORK/dt" "$WORK/dt.json" > "$WORK/dt.log" 2>&1 \
  || { tail -20 "$WORK/dt.log"; exit 1; }

# 4. Report.
"$PY" - "$WORK" "$mb" "$t0" "$t1" "$t2" <<'PY'
import glob, json, sys
work, mb, t0, t1, t2 = sys.argv[1], float(sys.argv[2]), *map(float, sys.argv[3:6])
ids = [json.loads(l)["id"] for l in open(f"{work}/input.jsonl")]
def mt_kept(out):
    return {json.loads(l)["id"] for f in glob.glob(f"{out}/kept/*.jsonl") for l in open(f)}
dt = json.load(open(f"{work}/dt.json"))
rows = [("gopher quality", t1 - t0, mt_kept(f"{work}/mt-gopher"), dt["gopher"]),
        ("minhash dedup", t2 - t1, mt_kept(f"{work}/mt-minhash"), dt["minhash"])]
print(f"{'step':16s} {'moetrain MB/s':>14s} {'datatrove MB/s':>15s} {'speed-up':>9s} {'agreement':>10s}"
      f" {'kept mt':>8s} {'kept dt':>8s} {'only mt':>8s} {'only dt':>8s}")
for name, mt_s, mt_ids, d in rows:
    dt_ids = set(d["kept"])
    agree = sum((i in mt_ids) == (i in dt_ids) for i in ids) / len(ids)
    print(f"{name:16s} {mb / mt_s:14.2f} {mb / d['seconds']:15.2f} {d['seconds'] / mt_s:8.1f}x {agree:10.4f}"
          f" {len(mt_ids):8d} {len(dt_ids):8d} {len(mt_ids - dt_ids):8d} {len(dt_ids - mt_ids):8d}")
print("(one process each; moetrain's time includes reading, normalising and writing JSONL, as datatrove's does)")
PY

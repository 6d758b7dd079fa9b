#!/usr/bin/env bash
# Sequence-level distillation data: `moetrain generate --as-dataset DIR`
# (app/generate_dataset.h), beam 4, with the tiny preset after one step
# (greedy gives every source the same output; beam search does not quite):
#  - one process writes one {source, target} pair per input line, each
#    target what `generate --output` writes for that source;
#  - under mpirun -np 2 the two parts hold the even and odd lines, and
#    together equal the single process's part;
#  - an interrupted part (a partial last line, no .done) resumes to the same
#    bytes as the uninterrupted run; a folder of another rank count is
#    refused; JSONL input with --source-field gives the same pairs;
#  - `moetrain tokenize --tokenizer` turns the parts into a pairs dataset
#    that `moetrain train` trains on.
source "$(dirname "$0")/../e2e/lib.sh"
need_brown
: "${MOETRAIN_MPIRUN:?}"
work="$MOETRAIN_E2E_WORK/generate_dataset"
rm -rf "$work"; mkdir -p "$work"
train_tiny --output-dir "$work/run" --max-steps 1 --set train.eval_every=0 --set train.threads=1 > "$work/train.log" \
  || { cat "$work/train.log"; fail "training failed"; }
# 30 sources: the first sentence-sized line of Brown documents, as text and
# as JSONL.
python3 - "$MOETRAIN_SHARED_DATA/brown.jsonl" "$work" <<'PY'
import json, sys
docs, work = sys.argv[1], sys.argv[2]
lines = []
for record in map(json.loads, open(docs)):
    line = next((l.strip() for l in record["text"].split("\n") if 20 < len(l.strip()) < 200), None)
    if line:
        lines.append(line)
    if len(lines) == 30:
        break
open(f"{work}/sources.txt", "w").write("".join(l + "\n" for l in lines))
open(f"{work}/sources.jsonl", "w").write("".join(json.dumps({"id": i, "text": l}) + "\n" for i, l in enumerate(lines)))
PY
gen=(generate --checkpoint "$work/run" --max-length 12 --batch-size 8 --method beam --beam-size 4)

echo "== one process"
"$MOETRAIN_BIN" "${gen[@]}" --input "$work/sources.txt" --output "$work/outputs.txt" 2> /dev/null \
  || fail "generate --output failed"
"$MOETRAIN_BIN" "${gen[@]}" --input "$work/sources.txt" --as-dataset "$work/single" 2> /dev/null | tee "$work/single.log" \
  || fail "generate --as-dataset failed"
part="$work/single/part-00000-of-00001"
[[ -f "$part.done" ]] || fail "no $part.done"
python3 - "$part.jsonl" "$work/sources.txt" "$work/outputs.txt" <<'PY' || fail "the pairs are not the sources and their outputs"
import json, sys
pairs = [json.loads(l) for l in open(sys.argv[1])]
sources, outputs = open(sys.argv[2]).read().split("\n")[:-1], open(sys.argv[3]).read().split("\n")[:-1]
assert [p["source"] for p in pairs] == sources, "sources"
assert [p["target"] for p in pairs] == outputs, "targets"
assert len(set(outputs)) > 1, "every output is the same"
print(f"{len(pairs)} pairs ({len(set(outputs))} distinct targets); each target equals generate --output's line")
PY

echo "== two ranks"
# shellcheck disable=SC2086
$MOETRAIN_MPIRUN -np 2 "$MOETRAIN_BIN" "${gen[@]}" --input "$work/sources.txt" --as-dataset "$work/dp2" \
  > "$work/dp2.log" 2>&1 || { cat "$work/dp2.log"; fail "generate --as-dataset under mpirun failed"; }
python3 - "$work/dp2" "$part.jsonl" <<'PY' || fail "the two parts do not make up the single process's pairs"
import sys
even = open(f"{sys.argv[1]}/part-00000-of-00002.jsonl").read().split("\n")[:-1]
odd = open(f"{sys.argv[1]}/part-00001-of-00002.jsonl").read().split("\n")[:-1]
single = open(sys.argv[2]).read().split("\n")[:-1]
assert even == single[0::2] and odd == single[1::2], (len(even), len(odd), len(single))
print(f"parts of {len(even)} and {len(odd)} pairs: lines 0, 2, ... and 1, 3, ... of the single process's")
PY

echo "== resumed"
mkdir -p "$work/resumed"
head -n 13 "$part.jsonl" > "$work/resumed/part-00000-of-00001.jsonl"
printf '{"source": "cut off mid-li' >> "$work/resumed/part-00000-of-00001.jsonl"
"$MOETRAIN_BIN" "${gen[@]}" --input "$work/sources.txt" --as-dataset "$work/resumed" 2> /dev/null \
  | tee "$work/resumed.log" || fail "resuming failed"
grep -q "resuming after 13 pairs" "$work/resumed.log" || fail "no resume line"
cmp "$part.jsonl" "$work/resumed/part-00000-of-00001.jsonl" || fail "the resumed part differs"
echo "resumed after 13 pairs (a partial 14th dropped): the same bytes as the uninterrupted run"
expect_error "written by a run of 2 rank(s); this one has 1" "${gen[@]}" --input "$work/sources.txt" \
  --as-dataset "$work/dp2"
"$MOETRAIN_BIN" "${gen[@]}" --input "$work/sources.jsonl" --source-field text --as-dataset "$work/from-jsonl" \
  2> /dev/null > /dev/null || fail "JSONL input failed"
cmp "$part.jsonl" "$work/from-jsonl/part-00000-of-00001.jsonl" || fail "JSONL input gives other pairs"
echo "JSONL input (--source-field text): the same pairs"
expect_error "sources.txt:1: not a JSON object" "${gen[@]}" --input "$work/sources.txt" --source-field text \
  --as-dataset "$work/bad"

echo "== tokenized and trained on"
"$MOETRAIN_BIN" tokenize --input "$work"/dp2/part-*.jsonl --source-field source --target-field target \
  --tokenizer "$BROWN_DATA/tokenizer.model" --valid-fraction 0.2 --output "$work/distilled" > "$work/tokenize.log" 2>&1 \
  || { cat "$work/tokenize.log"; fail "tokenize failed"; }
train_tiny --output-dir "$work/student" --max-steps 2 --set data.train="$work/distilled" \
  --set data.valid="$work/distilled" --set data.objective=seq2seq --set train.eval_every=0 \
  --set train.threads=1 > "$work/student.log" || { cat "$work/student.log"; fail "training on the pairs failed"; }
grep "^step 2/2" "$work/student.log" || fail "no step 2"
echo "PASS"

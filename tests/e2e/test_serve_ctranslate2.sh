#!/usr/bin/env bash
# scripts/serve-ctranslate2.sh on a small dense G2P model (docs/serving.md):
#  - a dense model of configs/m2m100-compatible.yaml's architecture trained
#    300 steps on CMUdict pairs (docs/finetuning.md's data), exported with
#    --format m2m100 and converted to CTranslate2 float32 and int8;
#  - on 300 test words, CTranslate2 float32's greedy outputs, its beam-4
#    outputs with length penalty 0, and with length penalty 1 under
#    --beam-stop never on both sides, equal `moetrain generate`'s line for
#    line;
#  - with each side's default stop (heuristic, patience 1) the beam-4
#    agreement is printed (the two stop at different times: docs/serving.md);
#  - the int8 model's agreement with float32 and both WERs are printed;
#  - bad arguments give one error line and exit status 2.
# Skipped when CMUdict, the name lists, or ctranslate2 (or transformers,
# torch, sentencepiece) in .venv is absent.
source "$(dirname "$0")/lib.sh"
PY="$MOETRAIN_SOURCE_DIR/.venv/bin/python"
SERVE="$MOETRAIN_SOURCE_DIR/scripts/serve-ctranslate2.sh"
if [[ ! -f "${MOETRAIN_SHARED_DATA:-}/cmudict/dict.txt" || ! -d "${MOETRAIN_SHARED_DATA:-}/wordlists" ]]; then
  echo "SKIP: ${MOETRAIN_SHARED_DATA:-../shared/data}/cmudict or wordlists is absent"
  exit $SKIP
fi
if ! "$PY" -c 'import ctranslate2, torch, transformers, sentencepiece' 2>/dev/null; then
  echo "SKIP: ctranslate2, torch, transformers or sentencepiece is not in $PY (scripts/serve-ctranslate2.sh installs ctranslate2)"
  exit $SKIP
fi
work="$MOETRAIN_E2E_WORK/serve_ctranslate2"
rm -rf "$work"; mkdir -p "$work"
# One intra-op thread everywhere: CTranslate2's OpenMP threads slow down by
# orders of magnitude when they share busy cores.
threads=(--threads 1)
max_length=32
words=300

echo "== a dense G2P model"
python3 "$MOETRAIN_SOURCE_DIR/examples/g2p/prepare_cmudict.py" "$MOETRAIN_SHARED_DATA/cmudict" \
  "$MOETRAIN_SHARED_DATA/wordlists" "$work/pairs" > /dev/null || fail "prepare_cmudict.py failed"
"$MOETRAIN_BIN" tokenize --input "$work/pairs/train.jsonl" --valid-input "$work/pairs/valid.jsonl" \
  --source-field source --target-field target --vocab-size 512 --output "$work/g2p" > /dev/null || fail "tokenize"
"$MOETRAIN_BIN" train --config "$MOETRAIN_SOURCE_DIR/configs/m2m100-compatible.yaml" --output-dir "$work/run" \
  --max-steps 300 --set data.train="$work/g2p" --set data.valid="$work/g2p" --set data.objective=seq2seq \
  --set data.src_len=32 --set data.tgt_len=32 --set model.max_positions=64 --set model.dropout=0.0 \
  --set model.attention_dropout=0.0 --set train.global_batch=64 --set train.micro_batch=64 \
  --set optim.lr=2e-3 --set optim.warmup_steps=30 --set train.eval_every=1000 --set checkpoint.every=1000 \
  --set log.every=100 --set train.threads=1 > "$work/train.log" 2>&1 || { cat "$work/train.log"; fail "training failed"; }
grep "^step 300/300" "$work/train.log" || fail "no step 300 in the training log"
"$MOETRAIN_BIN" export --checkpoint "$work/run" --out "$work/hf" --format m2m100 > "$work/export.log" \
  || fail "export --format m2m100 failed"
grep -q "with m2m100 names" "$work/export.log" || fail "the export is not in the m2m100 format"

echo "== converted to CTranslate2"
for q in float32 int8; do
  bash "$SERVE" --model "$work/hf" --out "$work/ct2-$q" --quantization "$q" || fail "converting to $q failed"
  [[ -f "$work/ct2-$q/model.bin" && -f "$work/ct2-$q/tokenizer.model" ]] || fail "no $q model written"
done

echo "== CTranslate2 float32 against moetrain generate ($words test words, --max-length $max_length)"
head -n "$words" "$work/pairs/test.src" > "$work/words.txt"
for i in 1 2 3 4; do head -n "$words" "$work/pairs/test.ref$i" > "$work/words.ref$i"; done
translate() {  # MODEL OUTPUT ARGS...: translate the words with a converted model
  local model=$1 output=$2; shift 2
  "$PY" "$MOETRAIN_SOURCE_DIR/scripts/ctranslate2_serve.py" translate --model "$model" --input "$work/words.txt" \
    --output "$output" --max-length "$max_length" "${threads[@]}" "$@" || fail "translating with $model failed"
}
generate() {  # OUTPUT ARGS...: the same with moetrain generate
  local output=$1; shift
  "$MOETRAIN_BIN" generate --checkpoint "$work/run" --input "$work/words.txt" --output "$output" \
    --max-length "$max_length" --batch-size 64 "$@" 2> /dev/null || fail "moetrain generate $* failed"
}
same_lines() {  # A B: how many lines of A equal B's
  paste -d '\n' "$1" "$2" | awk 'NR % 2 == 1 { a = $0; next } a == $0 { n++ } END { print n + 0 }'
}
generate "$work/moetrain-greedy.txt"
generate "$work/moetrain-beam-lp0.txt" --method beam --beam-size 4 --length-penalty 0
generate "$work/moetrain-beam.txt" --method beam --beam-size 4 --beam-stop never
generate "$work/moetrain-beam-heuristic.txt" --method beam --beam-size 4
# A full run through the shell script (conversion included) for the greedy outputs.
bash "$SERVE" --model "$work/hf" --out "$work/ct2-float32" --quantization float32 --input "$work/words.txt" \
  --output "$work/ct2-greedy.txt" --max-length "$max_length" "${threads[@]}" || fail "serve-ctranslate2.sh failed"
translate "$work/ct2-float32" "$work/ct2-beam-lp0.txt" --beam-size 4 --length-penalty 0 --batch-size 64
translate "$work/ct2-float32" "$work/ct2-beam.txt" --beam-size 4 --batch-size 64 --beam-stop never
translate "$work/ct2-float32" "$work/ct2-beam-patience.txt" --beam-size 4 --batch-size 64
[[ $(wc -l < "$work/ct2-greedy.txt") -eq $words ]] || fail "CTranslate2 wrote $(wc -l < "$work/ct2-greedy.txt") lines"
distinct=$(sort -u "$work/moetrain-greedy.txt" | wc -l)
[[ $distinct -gt $((words / 2)) ]] || fail "only $distinct distinct outputs: the model did not learn"
cmp -s "$work/moetrain-greedy.txt" "$work/ct2-greedy.txt" || {
  diff "$work/moetrain-greedy.txt" "$work/ct2-greedy.txt" | head; fail "greedy outputs differ"; }
echo "greedy: $words of $words outputs equal ($distinct distinct)"
cmp -s "$work/moetrain-beam-lp0.txt" "$work/ct2-beam-lp0.txt" || {
  diff "$work/moetrain-beam-lp0.txt" "$work/ct2-beam-lp0.txt" | head; fail "beam-4 outputs (length penalty 0) differ"; }
echo "beam 4, length penalty 0: $words of $words outputs equal"
cmp -s "$work/moetrain-beam.txt" "$work/ct2-beam.txt" || {
  diff "$work/moetrain-beam.txt" "$work/ct2-beam.txt" | head; fail "beam-4 outputs (--beam-stop never) differ"; }
echo "beam 4, length penalty 1, --beam-stop never: $words of $words outputs equal"
agree=$(same_lines "$work/moetrain-beam-heuristic.txt" "$work/ct2-beam-patience.txt")
echo "beam 4, length penalty 1, each side's default stop: $agree of $words outputs equal"

echo "== int8 against float32"
translate "$work/ct2-int8" "$work/int8-greedy.txt"
translate "$work/ct2-int8" "$work/int8-beam.txt" --beam-size 4 --batch-size 64 --beam-stop never
refs=("$work"/words.ref{1,2,3,4})
for method in greedy beam; do
  agree=$(same_lines "$work/ct2-$method.txt" "$work/int8-$method.txt")
  f32=$("$MOETRAIN_BIN" eval --hypotheses "$work/ct2-$method.txt" --metrics ser --references "${refs[@]}")
  i8=$("$MOETRAIN_BIN" eval --hypotheses "$work/int8-$method.txt" --metrics ser --references "${refs[@]}")
  echo "int8 $method: $agree of $words outputs equal float32's; WER float32 ${f32#SER }, int8 ${i8#SER }"
done

echo "== bad arguments"
bad() {  # PATTERN ARGS...: serve-ctranslate2.sh fails with status 2 and one line naming PATTERN
  local pattern=$1 rc=0; shift
  bash "$SERVE" "$@" > "$work/out" 2> "$work/err" || rc=$?
  echo "[$rc] $(cat "$work/err")"
  [[ $rc -eq 2 && $(wc -l < "$work/err") -eq 1 ]] || fail "wanted status 2 and one error line for: $*"
  grep -q -- "$pattern" "$work/err" || fail "the error lacks '$pattern'"
}
bad "no such directory" --model "$work/missing" --out "$work/o" --quantization int8
bad "unknown quantization 'int4'" --model "$work/hf" --out "$work/o" --quantization int4
bad "not an M2M100 export\|has no config.json" --model "$work/run" --out "$work/o" --quantization int8
bad "no such file" --model "$work/hf" --out "$work/o" --quantization int8 --input "$work/missing.txt"
bad "positive integer" --model "$work/hf" --out "$work/o" --quantization int8 --input "$work/words.txt" --beam-size 0

echo "PASS"

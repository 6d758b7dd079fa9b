#!/usr/bin/env bash
# Fixture: tokenizes the first 100 Brown documents (vocabulary 8000) for the
# multi-node training tests; a few seconds.
source "$(dirname "$0")/lib.sh"
need_brown
rm -rf "$BROWN100"
mkdir -p "$BROWN100.in"
head -n 100 "$MOETRAIN_SHARED_DATA/brown.jsonl" >"$BROWN100.in/brown100.jsonl"
timeout 600 "$MOETRAIN_BIN" tokenize --input "$BROWN100.in/brown100.jsonl" --output "$BROWN100" \
  --vocab-size 8000 --valid-fraction 0.02
[[ -f "$BROWN100/tokenizer.model" && -f "$BROWN100/train-00000.h5" && -f "$BROWN100/valid-00000.h5" ]] \
  || fail "tokenize did not write tokenizer.model, train-00000.h5 and valid-00000.h5"
echo "PASS"

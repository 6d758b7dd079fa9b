#!/usr/bin/env bash
# Fixture: tokenizes the whole Brown corpus once for the other e2e tests.
source "$(dirname "$0")/lib.sh"
need_brown
rm -rf "$BROWN_DATA"
"$MOETRAIN_BIN" tokenize --input "$MOETRAIN_SHARED_DATA/brown.jsonl" --output "$BROWN_DATA" \
  --vocab-size 8000 --valid-fraction 0.02
[[ -f "$BROWN_DATA/tokenizer.model" && -f "$BROWN_DATA/train-00000.h5" && -f "$BROWN_DATA/valid-00000.h5" ]] \
  || fail "tokenize did not write tokenizer.model, train-00000.h5 and valid-00000.h5"
python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(d)" "$BROWN_DATA/dataset.json"

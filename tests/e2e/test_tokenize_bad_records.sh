#!/usr/bin/env bash
# `moetrain tokenize` skips a bad record (here invalid UTF-8 on line 2 of a
# JSONL file), counts it and names its file and line in the summary; with
# --strict the same input stops the run with one line and exit 1, and no
# output folder is made.
source "$(dirname "$0")/lib.sh"
work="$MOETRAIN_E2E_WORK/tokenize_bad_records"
rm -rf "$work"; mkdir -p "$work"
input="$work/corpus.jsonl"
head -n 1 "$MOETRAIN_SOURCE_DIR/examples/data/brown-sample.jsonl" > "$input"
printf '{"text": "a bad \xff byte"}\n' >> "$input"
tail -n +2 "$MOETRAIN_SOURCE_DIR/examples/data/brown-sample.jsonl" >> "$input"

"$MOETRAIN_BIN" tokenize --input "$input" --output "$work/out" --vocab-size 1000 > "$work/out.log"
cat "$work/out.log"
grep -q "1 bad skipped (--strict makes a bad record fatal):" "$work/out.log" || fail "no count of bad records"
grep -q "^  $input:2: invalid JSON: " "$work/out.log" || fail "the bad record's file and line are not listed"
python3 -c "import json, sys; assert json.load(open(sys.argv[1]))['skipped_bad'] == 1" "$work/out/dataset.json" ||
  fail "dataset.json does not count the bad record"

rc=0
"$MOETRAIN_BIN" tokenize --input "$input" --output "$work/strict" --vocab-size 1000 --strict > /dev/null 2> "$work/err" || rc=$?
echo "[$rc] $(cat "$work/err")"
[[ $rc -eq 1 ]] || fail "exit code $rc under --strict, wanted 1"
[[ $(wc -l < "$work/err") -eq 1 ]] || fail "wanted one line on stderr under --strict"
grep -q "$input:2: invalid JSON" "$work/err" || fail "the line does not name file and line"
[[ ! -e "$work/strict" ]] || fail "--strict left an output folder behind"
echo "PASS"

#!/usr/bin/env bash
# `moetrain clean` from the command line: the full pipeline on samples of the
# three real corpora (stats table printed, outputs in place), usage errors
# with exit 2 and one line, --strict on a bad record, and `train-classifier`
# + `augment`.
source "$(dirname "$0")/lib.sh"
D="${MOETRAIN_SHARED_DATA:-}"
for f in brown.jsonl spam_assassin.jsonl zh_fortunes.jsonl; do
  [[ -f "$D/$f" ]] || { echo "SKIP: $D/$f is absent"; exit $SKIP; }
done
work="$MOETRAIN_E2E_WORK/clean_cli"
rm -rf "$work"; mkdir -p "$work/in"
head -n 60 "$D/brown.jsonl" > "$work/in/brown.jsonl"
head -n 400 "$D/zh_fortunes.jsonl" > "$work/in/zh.jsonl"
{ head -n 150 "$D/spam_assassin.jsonl"; tail -n 150 "$D/spam_assassin.jsonl"; } > "$work/mail.jsonl"  # ham, then spam

expect_error() {  # expect_error <pattern> <args...>
  local pattern=$1; shift
  local rc=0
  "$MOETRAIN_BIN" "$@" > "$work/out" 2> "$work/err" || rc=$?
  echo "[$rc] $(cat "$work/err")"
  [[ $rc -eq 2 ]] || fail "exit code $rc, wanted 2, for: $*"
  [[ $(wc -l < "$work/err") -eq 1 ]] || fail "wanted one line on stderr"
  grep -q -- "$pattern" "$work/err" || fail "stderr lacks '$pattern'"
}

# Full pipeline, keyword domains tagging, on prose and Chinese text.
"$MOETRAIN_BIN" clean --input "$work/in" --output "$work/out1" \
  --stages dedup,quality,domain,toxicity,pii \
  --set 'domain.keywords={news: [president, election, jury, court], religion: [god, church, faith]}' | tee "$work/table1"
grep -q "^stage .*docs in" "$work/table1" || fail "no stats table"
for s in normalize dedup quality domain toxicity pii; do
  grep -q "^$s " "$work/table1" || fail "table lacks stage $s"
  [[ -f "$work/out1/rejected/$s.jsonl" ]] || fail "missing rejected/$s.jsonl"
done
python3 - "$work/out1" <<'PY'
import json, sys, glob, re
out = sys.argv[1]
stats = json.load(open(f"{out}/stats.json"))
kept = [json.loads(l) for f in sorted(glob.glob(f"{out}/kept/*.jsonl")) for l in open(f)]
assert stats["records"] == 460, stats["records"]
assert stats["kept"]["documents"] == len(kept) > 0, (stats["kept"], len(kept))
norm = stats["stages"][0]
assert norm["name"] == "normalize" and norm["replaced"].get("escape_sequences", 0) > 100, norm
for rec in kept:
    assert "\x1b" not in rec["text"]
    assert "domain" in rec["meta"] and "toxicity" in rec["meta"], rec["meta"]
    if re.fullmatch(r"c[a-r]\d\d", rec["id"]):  # Brown ids; their category field passes through
        assert "category" in rec, "pass-through field lost"
rej = sum(1 for f in glob.glob(f"{out}/rejected/*.jsonl") for _ in open(f))
assert rej + len(kept) == stats["records"] - stats["bad_records"]["count"], (rej, len(kept))
print(f"kept {len(kept)}, rejected {rej}")
PY

# Mail: extraction, then the default stages.
"$MOETRAIN_BIN" clean --input "$work/mail.jsonl" --output "$work/out2" --extract mail > "$work/table2"
grep -q "^extract " "$work/table2" || fail "no extract row"
! grep -q "Return-Path:" "$work/out2/kept/"*.jsonl || fail "mail headers left in kept text"

# Errors.
expect_error "input not found: $work/none.jsonl" clean --input "$work/none.jsonl" --output "$work/x"
expect_error "unknown stage 'spelling'" clean --input "$work/in" --output "$work/x" --stages dedup,spelling
expect_error "unknown key 'quality.gopher'" clean --input "$work/in" --output "$work/x" --set quality.gopher=1
printf '{"id": 1, "text": "fine text"}\n{"id": 2, "txt": "no text field"}\n' > "$work/bad.jsonl"
expect_error "$work/bad.jsonl:2: missing text field 'text' (strict)" clean --input "$work/bad.jsonl" --output "$work/x" --strict
"$MOETRAIN_BIN" clean --input "$work/bad.jsonl" --output "$work/y" --stages pii > /dev/null
python3 -c "import json,sys; s=json.load(open('$work/y/stats.json')); assert s['bad_records']['count']==1 and s['bad_records']['records'][0]['line']==2, s['bad_records']"

# A classifier, then augmentation.
"$MOETRAIN_BIN" clean train-classifier --input "$work/mail.jsonl" --extract mail --output "$work/hamspam.bin" | tee "$work/train.txt"
grep -q "held-out accuracy" "$work/train.txt" || fail "no accuracy line"
grep -Eq "labels: (ham spam|spam ham)" "$work/train.txt" || fail "the model should know ham and spam"
[[ -s "$work/hamspam.bin" ]] || fail "no model written"
"$MOETRAIN_BIN" clean --input "$work/mail.jsonl" --output "$work/out3" --extract mail --stages quality \
  --set quality.classifier.model="$work/hamspam.bin" --set quality.classifier.label=ham > /dev/null
python3 -c "
import json,glob
k=[json.loads(l) for f in glob.glob('$work/out3/kept/*.jsonl') for l in open(f)]
assert k and all('quality_score' in r['meta'] for r in k)
assert all(r['meta']['quality_score'] >= 0.5 for r in k)"
"$MOETRAIN_BIN" augment --input "$work/in/brown.jsonl" --output "$work/aug1.jsonl" --copies 2 --seed 3 \
  --names "$D/wordlists/male_first_names.txt,$D/wordlists/female_first_names.txt" > /dev/null
"$MOETRAIN_BIN" augment --input "$work/in/brown.jsonl" --output "$work/aug2.jsonl" --copies 2 --seed 3 \
  --names "$D/wordlists/male_first_names.txt,$D/wordlists/female_first_names.txt" > /dev/null
cmp "$work/aug1.jsonl" "$work/aug2.jsonl" || fail "augment is not reproducible"
[[ $(wc -l < "$work/aug1.jsonl") -eq 180 ]] || fail "augment wrote $(wc -l < "$work/aug1.jsonl") lines, wanted 180"
echo "PASS"

#!/usr/bin/env bash
# `mpirun -np 2 moetrain clean` keeps exactly the documents `-np 1` keeps:
# dedup band keys cross ranks, and the cluster choice does not depend on them.
set -euo pipefail
: "${MOETRAIN_BIN:?}" "${MOETRAIN_E2E_WORK:?}" "${MOETRAIN_MPIRUN:?}"
D="${MOETRAIN_SHARED_DATA:-}"
[[ -f "$D/spam_assassin.jsonl" && -f "$D/zh_fortunes.jsonl" ]] || { echo "SKIP: shared corpora absent"; exit 77; }
fail() { echo "FAIL: $*" >&2; exit 1; }
work="$MOETRAIN_E2E_WORK/clean_ranks"
rm -rf "$work"; mkdir -p "$work/in"
# Mailing-list copies of one message land in different shards, so duplicates
# must be found across ranks.
head -n 1500 "$D/spam_assassin.jsonl" | split -n r/5 -d -a 1 --additional-suffix=.jsonl - "$work/in/mail-"
head -n 600 "$D/zh_fortunes.jsonl" > "$work/in/zh.jsonl"
for np in 1 2; do
  $MOETRAIN_MPIRUN -np $np "$MOETRAIN_BIN" clean --input "$work/in" --output "$work/np$np" \
    --stages dedup,quality,toxicity,pii > "$work/np$np.txt"
  cat "$work/np$np.txt"
done
grep -q "2 rank(s)" "$work/np2.txt" || fail "the np 2 run did not use 2 ranks"
diff -r "$work/np1/kept" "$work/np2/kept" > /dev/null || fail "kept documents differ between -np 1 and -np 2"
diff -r "$work/np1/rejected" "$work/np2/rejected" > /dev/null || fail "rejected documents differ"
python3 - "$work/np1/stats.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
dedup = next(st for st in s["stages"] if st["name"] == "dedup")
assert dedup["docs_in"] > dedup["docs_out"], "no duplicates found: the test needs some"
print("dedup removed", dedup["removed"])
PY
echo "PASS"

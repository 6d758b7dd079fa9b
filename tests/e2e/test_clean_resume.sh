#!/usr/bin/env bash
# A clean run killed with SIGKILL midway and rerun gives the same output as an
# uninterrupted run, with no partial files left.
source "$(dirname "$0")/lib.sh"
D="${MOETRAIN_SHARED_DATA:-}"
[[ -f "$D/spam_assassin.jsonl" ]] || { echo "SKIP: $D/spam_assassin.jsonl is absent"; exit $SKIP; }
work="$MOETRAIN_E2E_WORK/clean_resume"
rm -rf "$work"; mkdir -p "$work/in"
# 16 shards of mail.
split -n l/16 -d -a 2 --additional-suffix=.jsonl "$D/spam_assassin.jsonl" "$work/in/mail-"
args=(clean --input "$work/in" --extract mail --set cache_mb=0)

"$MOETRAIN_BIN" "${args[@]}" --output "$work/full" > /dev/null

committed_shards() { { find "$work/killed/.shards" -mindepth 2 -name stats.json 2>/dev/null || true; } | wc -l; }
"$MOETRAIN_BIN" "${args[@]}" --output "$work/killed" > /dev/null &
pid=$!
# Kill it once some but not all shards are committed.
for _ in $(seq 1 2000); do
  n=$(committed_shards)
  [[ $n -ge 3 ]] && break
  sleep 0.02
done
kill -KILL $pid 2>/dev/null || true
wait $pid 2>/dev/null || true
committed=$(committed_shards)
echo "killed with $committed of 16 shards committed"
[[ $committed -ge 1 && $committed -lt 16 ]] || fail "the kill did not land midway ($committed shards committed)"
[[ ! -f "$work/killed/stats.json" ]] || fail "the killed run had already finished"

"$MOETRAIN_BIN" "${args[@]}" --output "$work/killed" > /dev/null
for d in kept rejected; do
  diff -r "$work/full/$d" "$work/killed/$d" > /dev/null || fail "$d/ differs from the uninterrupted run"
done
left=$(find "$work/killed" -name '*.partial' | wc -l)
[[ $left -eq 0 ]] || fail "$left partial files left"
python3 - "$work/full/stats.json" "$work/killed/stats.json" <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:])
strip = lambda s: [{k: v for k, v in st.items() if k != "seconds"} for st in s["stages"]]
assert strip(a) == strip(b), "stage counters differ"
assert a["kept"] == b["kept"] and a["bad_records"] == b["bad_records"]
PY
echo "PASS"

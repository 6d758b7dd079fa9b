#!/usr/bin/env bash
# `moetrain tokenize --threads 2` writes the same files, byte for byte, as one
# thread. A run killed with SIGKILL once its first shards are finished, then
# rerun (with another thread count), keeps those shards and the tokenizer,
# writes the rest and ends with the files of an uninterrupted run.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/tokenize_lib.sh"
need_brown
D="$MOETRAIN_SHARED_DATA"
work="$MOETRAIN_E2E_WORK/tokenize_parallel"
rm -rf "$work"; mkdir -p "$work"
common=(--vocab-size 2000 --max-sentences 5000 --valid-fraction 0.02)

# 1. Threads.
"$MOETRAIN_BIN" tokenize --input "$D/brown.jsonl" --output "$work/t1" "${common[@]}" --docs-per-shard 10 > "$work/t1.txt"
"$MOETRAIN_BIN" tokenize --input "$D/brown.jsonl" --output "$work/t2" "${common[@]}" --docs-per-shard 10 \
  --threads 2 > "$work/t2.txt"
cat "$work/t2.txt"
grep -q "1 rank(s) x 2 thread(s)" "$work/t2.txt" || fail "the --threads 2 run did not use 2 threads"
same_output "$work/t1" "$work/t2"

# 2. Killed and resumed: a few hundred shards, so the run is still encoding
# when its first shards are finished.
inputs=("$D/brown.jsonl")
per_shard=2
if [[ -f "$D/spam_assassin.jsonl" ]]; then inputs+=("$D/spam_assassin.jsonl"); per_shard=20; fi
args=(tokenize --input "${inputs[@]}" "${common[@]}" --docs-per-shard $per_shard)
"$MOETRAIN_BIN" "${args[@]}" --output "$work/full" --threads 2 > /dev/null
total=$(find "$work/full" -name '*.h5' | wc -l)

"$MOETRAIN_BIN" "${args[@]}" --output "$work/killed" > "$work/killed.txt" 2>&1 &
pid=$!
on_exit "kill -KILL $pid 2>/dev/null"
wait_for_finished_shards "$work/killed" $pid 2
kill -KILL $pid 2>/dev/null || true
wait $pid 2>/dev/null || true
resume_after_kill "$work/killed" "$total" "$work/full" "${args[@]}"
echo "PASS"

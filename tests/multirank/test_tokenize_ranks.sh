#!/usr/bin/env bash
# `mpirun -np 2 moetrain tokenize` writes the same files, byte for byte, as one
# process. A 2-rank run whose ranks are killed with SIGKILL once the first
# shards are finished, rerun as one process with 2 threads, keeps those
# shards, writes the rest and ends with the files of an uninterrupted run.
source "$(dirname "$0")/../e2e/lib.sh"
source "$(dirname "$0")/../e2e/tokenize_lib.sh"
need_brown
: "${MOETRAIN_MPIRUN:?}"
D="$MOETRAIN_SHARED_DATA"
work="$MOETRAIN_E2E_WORK/tokenize_ranks"
rm -rf "$work"; mkdir -p "$work"
inputs=("$D/brown.jsonl")
per_shard=2
if [[ -f "$D/spam_assassin.jsonl" ]]; then inputs+=("$D/spam_assassin.jsonl"); per_shard=20; fi
args=(tokenize --input "${inputs[@]}" --vocab-size 2000 --max-sentences 5000 --valid-fraction 0.02
      --docs-per-shard $per_shard)

"$MOETRAIN_BIN" "${args[@]}" --output "$work/np1" > "$work/np1.txt"
$MOETRAIN_MPIRUN -np 2 "$MOETRAIN_BIN" "${args[@]}" --output "$work/np2" > "$work/np2.txt"
cat "$work/np2.txt"
grep -q "2 rank(s) x 1 thread(s)" "$work/np2.txt" || fail "the np 2 run did not use 2 ranks"
same_output "$work/np1" "$work/np2"
total=$(find "$work/np1" -name '*.h5' | wc -l)

# Kill both ranks (the children of mpirun) with SIGKILL mid-run.
$MOETRAIN_MPIRUN -np 2 "$MOETRAIN_BIN" "${args[@]}" --output "$work/killed" > "$work/killed.txt" 2>&1 &
pid=$!
on_exit "kill -KILL $pid 2>/dev/null"
wait_for_finished_shards "$work/killed" $pid 2
ranks=$(pgrep -P $pid || true)
[[ -n "$ranks" ]] || fail "found no rank processes under mpirun"
for rank_pid in $ranks; do kill -KILL "$rank_pid" 2>/dev/null || true; done
wait $pid 2>/dev/null || true
echo "killed the $(echo $ranks | wc -w) ranks"
resume_after_kill "$work/killed" "$total" "$work/np1" "${args[@]}"
echo "PASS"

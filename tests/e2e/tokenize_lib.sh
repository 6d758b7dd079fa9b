# Helpers of the tokenization tests (sourced after lib.sh, not run).

# Every file of two `moetrain tokenize` output folders is the same, byte for
# byte, but dataset.json, which may differ only in its `run` object (timings,
# ranks, threads, shards skipped).
same_output() {  # A B
  local a=$1 b=$2 f name n=0
  [[ "$(ls "$a")" == "$(ls "$b")" ]] || fail "$a and $b hold different files"
  for f in "$a"/*; do
    name=$(basename "$f")
    [[ $name == dataset.json ]] && continue
    cmp -s "$f" "$b/$name" || fail "$b/$name differs from $a/$name in $(cmp -l "$f" "$b/$name" | wc -l) byte(s) (offset, octal bytes: $(cmp -l "$f" "$b/$name" | head -4 | tr -s ' ' | tr '\n' ';'))"
    n=$((n + 1))
  done
  python3 - "$a/dataset.json" "$b/dataset.json" <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:])
a.pop("run"), b.pop("run")
assert a == b, "dataset.json differs beyond its run object"
PY
  echo "$n files identical, byte for byte, in $(basename "$a") and $(basename "$b")"
}

# The number of shards a (possibly interrupted) run into DIR has finished.
finished_shards() {  # DIR
  find "$1/.tokenize" -name '*.h5.json' 2>/dev/null | wc -l
}

# Waits (up to 60 s) until a run into DIR, process PID, has finished N shards
# or has ended.
wait_for_finished_shards() {  # DIR PID N
  for _ in $(seq 1 1200); do
    [[ $(finished_shards "$1") -ge $3 ]] && return
    kill -0 "$2" 2>/dev/null || return
    sleep 0.05
  done
}

# Records the inode of every finished shard of DIR in the associative array
# `inode` (declare -A inode first), so that rewrites can be found.
record_finished_inodes() {  # DIR
  local marker shard
  for marker in "$1/.tokenize/"*.h5.json; do
    shard="$1/$(basename "${marker%.json}")"
    inode[$shard]=$(stat -c %i "$shard")
  done
}

# Fails unless every shard recorded by record_finished_inodes is the same file.
check_not_rewritten() {
  local shard
  for shard in "${!inode[@]}"; do
    [[ $(stat -c %i "$shard") == "${inode[$shard]}" ]] || fail "$shard was written again"
  done
}

# After a run into DIR was killed (no dataset.json yet, some of TOTAL shards
# finished): reruns `moetrain ARGS... --output DIR --threads 2`, which must
# keep the tokenizer, skip exactly the finished shards without rewriting
# them, leave no temporary file and end with the files of REFERENCE.
resume_after_kill() {  # DIR TOTAL REFERENCE ARGS...
  local dir=$1 total=$2 reference=$3; shift 3
  local finished
  finished=$(finished_shards "$dir")
  echo "killed (SIGKILL) with $finished of $total shards finished"
  [[ ! -f "$dir/dataset.json" ]] || fail "the killed run had already finished"
  [[ $finished -ge 1 && $finished -lt $total ]] || fail "the kill did not land midway ($finished of $total shards finished)"
  declare -gA inode=()
  record_finished_inodes "$dir"
  "$MOETRAIN_BIN" "$@" --output "$dir" --threads 2 > "$dir.resumed.txt"
  cat "$dir.resumed.txt"
  grep -q "kept from the interrupted run" "$dir.resumed.txt" || fail "the rerun trained the tokenizer again"
  grep -q "$((total - finished)) shard(s) written, $finished already done by an earlier run" "$dir.resumed.txt" \
    || fail "the rerun did not skip exactly the $finished finished shards"
  check_not_rewritten
  [[ -z "$(find "$dir" -name '*.tmp-*')" ]] || fail "temporary files left: $(find "$dir" -name '*.tmp-*')"
  same_output "$reference" "$dir"
}

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

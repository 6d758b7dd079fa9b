#!/usr/bin/env bash
# A token shard damaged after it was written (every token id overwritten in
# place, the HDF5 metadata intact, so the run opens it) is discovered when a
# streamed sample is read: the resumed run stops at its first step with exit
# 1 and one line naming the shard, and the checkpoint it resumed from stays
# the latest. Uses the shipped Brown sample; h5py from .venv finds the bytes
# to damage.
source "$(dirname "$0")/lib.sh"
python="$MOETRAIN_SOURCE_DIR/.venv/bin/python"
if ! "$python" -c 'import h5py' 2>/dev/null; then
  echo "SKIP: h5py is not installed in .venv"
  exit $SKIP
fi
work="$MOETRAIN_E2E_WORK/corrupt_shard"
rm -rf "$work"; mkdir -p "$work"
"$MOETRAIN_BIN" tokenize --input "$MOETRAIN_SOURCE_DIR/examples/data/brown-sample.jsonl" --output "$work/data" \
  --vocab-size 2000 --valid-fraction 0.05 > "$work/tokenize.log"
args=(train --config "$MOETRAIN_SOURCE_DIR/configs/tiny.yaml" --set data.train="$work/data"
      --set data.valid="$work/data" --set train.eval_every=0 --set checkpoint.every=2 --set data.prefetch=2)
"$MOETRAIN_BIN" "${args[@]}" --output-dir "$work/run" --max-steps 4 > "$work/first.log" 2>&1 \
  || { cat "$work/first.log"; fail "the first run failed"; }

# Every byte of every train shard's token array becomes 0xff: id -1.
"$python" - "$work/data" <<'PY'
import glob, sys, h5py
for path in sorted(glob.glob(sys.argv[1] + "/train-*.h5")):
    with h5py.File(path, "r") as f:
        d = f["tokens"]
        if d.chunks is None:
            pieces = [(d.id.get_offset(), d.size * 4)]
        else:
            pieces = [(c.byte_offset, c.size) for c in (d.id.get_chunk_info(i) for i in range(d.id.get_num_chunks()))]
    with open(path, "r+b") as raw:
        for offset, size in pieces:
            raw.seek(offset)
            raw.write(b"\xff" * size)
PY

rc=0
"$MOETRAIN_BIN" "${args[@]}" --output-dir "$work/run" --max-steps 8 > "$work/second.log" 2> "$work/second.err" || rc=$?
cat "$work/second.err"
[[ $rc -eq 1 ]] || fail "exit code $rc, wanted 1"
[[ $(wc -l < "$work/second.err") -eq 1 ]] || fail "wanted one line on stderr"
grep -q "token shard $work/data/train-00000.h5: token [0-9]* = -1 is outside the vocabulary" "$work/second.err" \
  || fail "the line does not name the shard and the damage"
grep -q "resumed from .*step-000004" "$work/second.log" || fail "the second run did not resume"
[[ "$(cat "$work/run/checkpoints/latest")" == "step-000004" ]] || fail "the latest checkpoint changed"
[[ -f "$work/run/checkpoints/step-000004/meta.json" ]] || fail "the last checkpoint is incomplete"
[[ ! -e "$work/run/checkpoints/step-000005" ]] || fail "a checkpoint after the failure exists"
echo PASS

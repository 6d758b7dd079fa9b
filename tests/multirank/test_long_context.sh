#!/usr/bin/env bash
# configs/long-context.yaml trains under `mpirun -np 4` with CP4 on real
# 32K-token sources: consecutive Brown documents joined by
# scripts/long-documents.py (targets: their opening sentences), tokenized as
# pairs. Every source is longer than data.src_len, so each step's sample holds
# 32,768 source tokens (32,767 and EOS), split 8,192 per rank; 2 steps of one
# sample each must run, log finite losses with that many tokens, and save a
# checkpoint.
source "$(dirname "$0")/../e2e/lib.sh"
need_brown
: "${MOETRAIN_PYTHON:?}" "${MOETRAIN_MPIRUN:?}"
work="$MOETRAIN_E2E_WORK/long_context"
rm -rf "$work"; mkdir -p "$work"

python3 "$MOETRAIN_SOURCE_DIR/scripts/long-documents.py" "$MOETRAIN_SHARED_DATA/brown.jsonl" "$work/long.jsonl" \
  --words 30000 || fail "long-documents.py failed"
"$MOETRAIN_BIN" tokenize --input "$work/long.jsonl" --output "$work/long-brown" --source-field source \
  --target-field target --tokenizer "$BROWN_DATA/tokenizer.model" > /dev/null || fail "tokenize failed"
"$MOETRAIN_PYTHON" - "$work/long-brown" <<'PY' || fail "the sources are not all longer than 32K tokens"
import glob, sys
import h5py
import numpy as np
lengths = np.concatenate([np.diff(h5py.File(p)["source_offsets"][:]) for p in glob.glob(f"{sys.argv[1]}/train-*.h5")])
assert len(lengths) >= 2 and lengths.min() >= 32767, lengths
print(f"{len(lengths)} sources of {lengths.min()} to {lengths.max()} tokens")
PY

$MOETRAIN_MPIRUN -np 4 "$MOETRAIN_BIN" train --config "$MOETRAIN_SOURCE_DIR/configs/long-context.yaml" \
  --set data.train="$work/long-brown" --output-dir "$work/run" --max-steps 2 --set train.global_batch=1 \
  --set train.threads=1 > "$work/train.log" 2>&1 || { cat "$work/train.log"; fail "training failed"; }
grep "^step" "$work/train.log"
grep -q "context parallel 4 (ring)" "$work/train.log" || fail "not a CP4 ring run"
"$MOETRAIN_PYTHON" - "$work/run/metrics.jsonl" <<'PY' || fail "the steps did not train on 32K-token sources"
import json, math, sys
steps = [json.loads(line) for line in open(sys.argv[1]) if '"step"' in line and '"loss"' in line]
assert [s["step"] for s in steps] == [1, 2], steps
for s in steps:
    assert math.isfinite(s["loss"]), s
    assert 32768 < s["tokens"] <= 32768 + 512, s  # the source, and a target of at most tgt_len
print("2 steps, tokens per step:", [s["tokens"] for s in steps])
PY
[[ -f "$work/run/checkpoints/step-000002/meta.json" ]] || fail "no checkpoint at step 2"
echo "PASS"

#!/usr/bin/env bash
# CUDA training runs as one rank: 2 ranks with train.device cuda stop at
# start-up, non-zero, each with one line naming train.device and the rank
# count (instead of failing in their first collective), and write no
# checkpoint. Uses the shipped Brown sample, so it also runs on a GPU node
# without ../shared/data; skipped without a GPU.
source "$(dirname "$0")/../e2e/lib.sh"
: "${MOETRAIN_MPIRUN:?}" "${MOETRAIN_PYTHON:?}"
if ! "$MOETRAIN_PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  echo "SKIP: no CUDA device"
  exit $SKIP
fi
work="$MOETRAIN_E2E_WORK/cuda_ranks"
rm -rf "$work"; mkdir -p "$work"
"$MOETRAIN_BIN" tokenize --input "$MOETRAIN_SOURCE_DIR/examples/data/brown-sample.jsonl" --output "$work/data" \
  --vocab-size 2000 --valid-fraction 0.05 > "$work/tokenize.log"
rc=0
$MOETRAIN_MPIRUN -np 2 "$MOETRAIN_BIN" train --config "$MOETRAIN_SOURCE_DIR/configs/tiny.yaml" \
  --set data.train="$work/data" --set data.valid="$work/data" --output-dir "$work/run" --max-steps 2 \
  --set train.device=cuda > "$work/out" 2> "$work/err" || rc=$?
cat "$work/err"
[[ $rc -ne 0 ]] || fail "2 ranks on CUDA trained"
grep -q "train.device: cuda selects CUDA, but training on CUDA runs as one rank and this job has 2" "$work/err" \
  || fail "no one-line reason"
[[ ! -d "$work/run/checkpoints" ]] || [[ -z "$(ls -A "$work/run/checkpoints")" ]] || fail "a checkpoint was written"
echo PASS

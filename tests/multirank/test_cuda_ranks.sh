#!/usr/bin/env bash
# Several ranks on one GPU: with parallel.backend nccl, 2 ranks stop at
# start-up, non-zero, with one line naming the two ranks that would share
# the GPU, and write no checkpoint; with auto they train over the
# host-staged MPI backend, saying so, and match the one-rank GPU run. Uses
# the shipped Brown sample, so it also runs on a GPU node without
# ../shared/data; skipped without a GPU.
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
args=(train --config "$MOETRAIN_SOURCE_DIR/configs/tiny.yaml" --set data.train="$work/data"
      --set data.valid="$work/data" --max-steps 4 --set train.device=cuda --set model.dropout=0.0
      --set model.moe.capacity_factor=0 --set train.global_batch=8 --set train.micro_batch=2 --set log.every=1)

rc=0
$MOETRAIN_MPIRUN -np 2 "$MOETRAIN_BIN" "${args[@]}" --output-dir "$work/nccl" --set parallel.backend=nccl \
  > "$work/nccl.out" 2> "$work/nccl.err" || rc=$?
cat "$work/nccl.err"
[[ $rc -ne 0 ]] || fail "2 ranks on one GPU trained over NCCL"
grep -q "parallel.backend: nccl needs a GPU per rank, but ranks 0 and 1 on .* would share GPU" "$work/nccl.err" \
  || fail "no one-line reason naming the ranks"
[[ ! -d "$work/nccl/checkpoints" ]] || [[ -z "$(ls -A "$work/nccl/checkpoints")" ]] || fail "a checkpoint was written"

"$MOETRAIN_BIN" "${args[@]}" --output-dir "$work/single" > "$work/single.log" 2>&1 || fail "one-rank GPU run failed"
$MOETRAIN_MPIRUN -np 2 "$MOETRAIN_BIN" "${args[@]}" --output-dir "$work/staged" > "$work/staged.log" 2>&1 \
  || { cat "$work/staged.log"; fail "2 ranks sharing a GPU did not train over the host-staged backend"; }
grep -q "collectives: mpi-staged (ranks share a GPU" "$work/staged.log" || fail "the backend choice was not printed"
grep -q "# devices" "$work/staged.log" || fail "the device map was not printed"
"$MOETRAIN_PYTHON" "$(dirname "$0")/compare_runs.py" "$work/single" "$work/staged" --steps 4 --rtol 1e-4 \
  || fail "DP2 on one GPU does not match the one-rank GPU run"
echo PASS

#!/usr/bin/env bash
# Acceptance: `mpirun -np 4 moetrain train` with ZeRO 0, 1, 2 and 3 matches the
# single-process run (fp32, CPU, dropout 0, dropless MoE, same global batch):
# per-step loss within rtol 1e-5 for 12 steps, final parameters within 1e-5.
source "$(dirname "$0")/../e2e/lib.sh"
need_brown
: "${MOETRAIN_PYTHON:?}" "${MOETRAIN_MPIRUN:?}"
work="$MOETRAIN_E2E_WORK/dp_matches_single"
rm -rf "$work"
common=(--max-steps 12 --set log.every=1 --set train.eval_every=0 --set model.moe.capacity_factor=0
        --set train.global_batch=16 --set train.micro_batch=4 --set train.threads=1)
train_tiny --output-dir "$work/single" "${common[@]}" > "$work.single.log"
tail -n 3 "$work.single.log"
for zero in 0 1 2 3; do
  $MOETRAIN_MPIRUN -np 4 "$MOETRAIN_BIN" "${TINY_ARGS[@]}" --output-dir "$work/dp4-zero$zero" \
    "${common[@]}" --set parallel.zero_stage=$zero > "$work.zero$zero.log" 2>&1 \
    || { cat "$work.zero$zero.log"; fail "DP4 ZeRO $zero run failed"; }
  grep -q "on each of 4 data-parallel rank(s), ZeRO stage $zero" "$work.zero$zero.log" || fail "not a DP4 ZeRO $zero run"
  echo "ZeRO $zero:"
  "$MOETRAIN_PYTHON" "$(dirname "$0")/compare_runs.py" "$work/single" "$work/dp4-zero$zero" --steps 12 \
    || fail "DP4 ZeRO $zero does not match the single-process run"
done
# Overlapped gradient reduction (the default) against reduction after the
# backward, with two micro-batches per rank (ZeRO 2 reduces during each): the
# buckets go in the same order, so the runs must agree bitwise.
for overlap in true false; do
  $MOETRAIN_MPIRUN -np 4 "$MOETRAIN_BIN" "${TINY_ARGS[@]}" --output-dir "$work/dp4-zero2-mb2-overlap-$overlap" \
    "${common[@]}" --set train.micro_batch=2 --set parallel.zero_stage=2 \
    --set parallel.overlap_grad_reduce=$overlap > "$work.overlap-$overlap.log" 2>&1 \
    || { cat "$work.overlap-$overlap.log"; fail "DP4 ZeRO 2 run with overlap_grad_reduce=$overlap failed"; }
done
echo "ZeRO 2, 2 micro-batches per rank, overlapped vs not (bitwise):"
"$MOETRAIN_PYTHON" "$(dirname "$0")/compare_runs.py" "$work/dp4-zero2-mb2-overlap-true" \
  "$work/dp4-zero2-mb2-overlap-false" --steps 12 --rtol 0 --atol 0 \
  || fail "overlapped gradient reduction changed the result"
echo "ZeRO 2, 2 micro-batches per rank, overlapped, against the single process (micro-batches of 2):"
# The MoE losses are per micro-batch, so the reference uses the same micro-batch size.
train_tiny --output-dir "$work/single-mb2" "${common[@]}" --set train.micro_batch=2 > "$work.single-mb2.log"
"$MOETRAIN_PYTHON" "$(dirname "$0")/compare_runs.py" "$work/single-mb2" "$work/dp4-zero2-mb2-overlap-true" --steps 12 \
  || fail "DP4 ZeRO 2 with 2 micro-batches per rank does not match the single-process run"
# Activation checkpointing under the overlapped reduction: the replay must
# report each parameter's gradient to the reducer once (it reported twice,
# reducing buckets early).
$MOETRAIN_MPIRUN -np 4 "$MOETRAIN_BIN" "${TINY_ARGS[@]}" --output-dir "$work/dp4-zero1-checkpointed" "${common[@]}" \
  --set parallel.zero_stage=1 --set model.activation_checkpointing=true > "$work.checkpointed.log" 2>&1 \
  || { cat "$work.checkpointed.log"; fail "DP4 ZeRO 1 run with activation checkpointing failed"; }
echo "ZeRO 1 with activation checkpointing:"
"$MOETRAIN_PYTHON" "$(dirname "$0")/compare_runs.py" "$work/single" "$work/dp4-zero1-checkpointed" --steps 12 \
  || fail "DP4 ZeRO 1 with activation checkpointing does not match the single-process run"
echo "PASS"

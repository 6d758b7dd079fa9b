#!/usr/bin/env bash
# Word-level distillation (distill:, train/distillation.h) on Brown span
# corruption, fp32, dropout 0:
#  - a teacher (the tiny MoE preset, 20 steps) distils into itself: a student
#    initialised from the teacher's weights (dropless, like the teacher) has
#    zero KL at step 1;
#  - a dense student (no MoE, d_ff 256) distilled from the MoE teacher under
#    mpirun -np 2 with ZeRO 1 matches the single process over 8 steps (the
#    cross-entropy and the KL per step within rtol 1e-5, final parameters
#    within 1e-5), with alpha 0.5, temperature 2 and top_k 0, then top_k 8;
#    so does ZeRO 3, and an MoE student (the tiny preset) under DP2 x EP2;
#  - bad settings are one config error line each.
source "$(dirname "$0")/../e2e/lib.sh"
need_brown
: "${MOETRAIN_PYTHON:?}" "${MOETRAIN_MPIRUN:?}"
work="$MOETRAIN_E2E_WORK/distill"
rm -rf "$work"; mkdir -p "$work"
common=(--set train.eval_every=0 --set log.every=1 --set train.threads=1 --set model.moe.capacity_factor=0)

train_tiny --output-dir "$work/teacher" --max-steps 20 "${common[@]}" > "$work/teacher.log" \
  || { cat "$work/teacher.log"; fail "training the teacher failed"; }

echo "== the teacher distilled into itself"
train_tiny --output-dir "$work/self" --max-steps 1 "${common[@]}" --init-from "$work/teacher" \
  --set distill.teacher="$work/teacher" --set distill.temperature=2 > "$work/self.log" \
  || { cat "$work/self.log"; fail "self-distillation failed"; }
grep "^distill: teacher " "$work/self.log" || fail "no distill line"
"$MOETRAIN_PYTHON" - "$work/self/metrics.jsonl" <<'PY' || fail "the KL of a student equal to its teacher is not 0"
import json, sys
rec = next(json.loads(l) for l in open(sys.argv[1]) if '"distill_kl"' in l)
print(f"step {rec['step']}: distill_kl {rec['distill_kl']:.3e}, loss {rec['loss']:.4f}, "
      f"distill_loss {rec['distill_loss']:.4f}")
# fp32 logits of the same weights on the same batch: equal up to rounding.
sys.exit(0 if rec["step"] == 1 and abs(rec["distill_kl"]) < 1e-6 else 1)
PY

echo "== a dense student under DP2 x ZeRO 1 against one process"
student=(--max-steps 8 "${common[@]}" --set model.moe.every=0 --set model.d_ff=256 --set train.global_batch=16
         --set train.micro_batch=4 --set distill.teacher="$work/teacher" --set distill.temperature=2
         --set distill.alpha=0.5)
for top_k in 0 8; do
  train_tiny --output-dir "$work/single-k$top_k" "${student[@]}" --set distill.top_k=$top_k \
    > "$work/single-k$top_k.log" || { cat "$work/single-k$top_k.log"; fail "single-process distillation failed"; }
  $MOETRAIN_MPIRUN -np 2 "$MOETRAIN_BIN" "${TINY_ARGS[@]}" --output-dir "$work/dp2-k$top_k" "${student[@]}" \
    --set distill.top_k=$top_k --set parallel.zero_stage=1 > "$work/dp2-k$top_k.log" 2>&1 \
    || { cat "$work/dp2-k$top_k.log"; fail "DP2 distillation failed"; }
  grep -q "on each of 2 data-parallel rank(s), ZeRO stage 1" "$work/dp2-k$top_k.log" || fail "not a DP2 ZeRO 1 run"
  echo "top_k $top_k:"
  tail -n 1 "$work/single-k$top_k.log"
  "$MOETRAIN_PYTHON" "$(dirname "$0")/compare_runs.py" "$work/single-k$top_k" "$work/dp2-k$top_k" --steps 8 \
    || fail "DP2 ZeRO 1 distillation (top_k $top_k) does not match the single process"
  "$MOETRAIN_PYTHON" - "$work/single-k$top_k" "$work/dp2-k$top_k" <<'PY' || fail "the KL terms differ"
import json, sys
def column(run, key):
    return {r["step"]: r[key] for r in map(json.loads, open(run + "/metrics.jsonl")) if key in r}
for key in ("distill_kl", "distill_loss"):
    a, b = column(sys.argv[1], key), column(sys.argv[2], key)
    assert sorted(a) == list(range(1, 9)) and sorted(b) == sorted(a), (key, sorted(a), sorted(b))
    worst = max(abs(a[s] - b[s]) / abs(a[s]) for s in a)
    print(f"{key}: 8 steps, worst relative difference {worst:.2e}")
    assert worst < 1e-5, key
    assert all(a[s] > 0 for s in a), key
PY
done

echo "== ZeRO 3, and an MoE student under EP2"
$MOETRAIN_MPIRUN -np 2 "$MOETRAIN_BIN" "${TINY_ARGS[@]}" --output-dir "$work/dp2-zero3" "${student[@]}" \
  --set parallel.zero_stage=3 > "$work/dp2-zero3.log" 2>&1 || { cat "$work/dp2-zero3.log"; fail "DP2 ZeRO 3 failed"; }
"$MOETRAIN_PYTHON" "$(dirname "$0")/compare_runs.py" "$work/single-k0" "$work/dp2-zero3" --steps 8 \
  || fail "DP2 ZeRO 3 distillation does not match the single process"
moe_student=(--max-steps 8 "${common[@]}" --set train.global_batch=16 --set train.micro_batch=4
             --set distill.teacher="$work/teacher" --set distill.temperature=2 --set distill.top_k=8)
train_tiny --output-dir "$work/moe-single" "${moe_student[@]}" > "$work/moe-single.log" \
  || { cat "$work/moe-single.log"; fail "single-process MoE student failed"; }
$MOETRAIN_MPIRUN -np 2 "$MOETRAIN_BIN" "${TINY_ARGS[@]}" --output-dir "$work/ep2" "${moe_student[@]}" \
  --set parallel.ep=2 --set parallel.zero_stage=1 > "$work/ep2.log" 2>&1 || { cat "$work/ep2.log"; fail "EP2 failed"; }
grep -q "expert parallel 2" "$work/ep2.log" || fail "not an EP2 run"
"$MOETRAIN_PYTHON" "$(dirname "$0")/compare_runs.py" "$work/moe-single" "$work/ep2" --steps 8 \
  || fail "DP2 x EP2 distillation of an MoE student does not match the single process"

echo "== bad settings"
expect_error "distill.alpha: must be in \[0, 1\]" "${TINY_ARGS[@]}" --output-dir "$work/bad" \
  --set distill.teacher="$work/teacher" --set distill.alpha=1.5
expect_error "parallel.tp: must be 1 with distill.teacher" "${TINY_ARGS[@]}" --output-dir "$work/bad" \
  --set distill.teacher="$work/teacher" --set parallel.tp=2
expect_error "distill.teacher" "${TINY_ARGS[@]}" --output-dir "$work/bad" --set distill.teacher="$work/missing"
echo "PASS"

#!/usr/bin/env bash
# fp16 dynamic loss scaling: an absurd initial scale overflows, the step is
# skipped and logged, the scale backs off until training proceeds; an overflow
# at the minimum scale stops training with a message and exit 1.
source "$(dirname "$0")/lib.sh"
need_brown
work="$MOETRAIN_E2E_WORK/fp16"
rm -rf "$work"
small=(--set model.d_model=32 --set model.n_heads=2 --set model.d_ff=64 --set model.encoder_layers=1
       --set model.decoder_layers=1 --set train.global_batch=4 --set train.micro_batch=2
       --set data.src_len=32 --set data.tgt_len=8 --set train.eval_every=0 --set log.every=1
       --set precision.compute=fp16 --set precision.loss_scale.hysteresis=1)
big=1099511627776  # 2^40: fp16 gradients overflow
train_tiny --output-dir "$work/backoff" --max-steps 40 "${small[@]}" --set precision.loss_scale.initial=$big \
  > "$work.backoff.log"
grep -q "^step 1/40 .*skipped (fp16 overflow)" "$work.backoff.log" || { cat "$work.backoff.log"; fail "step 1 was not skipped"; }
"${MOETRAIN_PYTHON:-python3}" - "$work/backoff/metrics.jsonl" <<'PY'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if '"loss_scale"' in l]
skipped = [r["step"] for r in recs if r["skipped"]]
first_ok = next(r for r in recs if not r["skipped"])
last = recs[-1]
print(f"skipped steps: {skipped}; first update at step {first_ok['step']} with scale {first_ok['loss_scale']:.0f}; "
      f"step {last['step']}: loss {last['loss']:.4f}, scale {last['loss_scale']:.0f}")
assert skipped and skipped == list(range(1, len(skipped) + 1)), "overflow steps should come first, in a row"
assert first_ok["loss_scale"] < 2**40 and not last["skipped"]
assert last["loss"] < recs[0]["loss"], "the loss should fall once steps go through"
PY
rc=0
train_tiny --output-dir "$work/minimum" --max-steps 5 "${small[@]}" --set precision.loss_scale.initial=$big \
  --set precision.loss_scale.min=$big > "$work.minimum.log" 2> "$work.minimum.err" || rc=$?
cat "$work.minimum.err"
[[ $rc -eq 1 ]] || fail "exit code $rc, wanted 1, when overflowing at the minimum scale"
grep -q "fp16 gradients still overflow at the minimum loss scale" "$work.minimum.err" || fail "no clear message"
[[ ! -d "$work/minimum/checkpoints" ]] || [[ -z "$(ls "$work/minimum/checkpoints")" ]] || fail "a checkpoint was written"
echo "PASS"

#!/usr/bin/env bash
# `moetrain eval --checkpoint --data`: the loss and perplexity of a checkpoint
# on a split equal the trainer's own evaluation of the same samples (data in
# order, dropless MoE), whatever the batch size, and within 1% of it in bf16;
# bad arguments exit 2 with one line.
source "$(dirname "$0")/lib.sh"
need_brown
work="$MOETRAIN_E2E_WORK/eval_loss"
rm -rf "$work"; mkdir -p "$work"

# The trainer evaluates 2 global batches of 8: valid samples 0..15, in order.
train_tiny --output-dir "$work/run" --max-steps 10 --set train.global_batch=8 --set train.micro_batch=4 \
  --set train.eval_every=10 --set train.eval_batches=2 --set data.shuffle=false \
  --set model.moe.capacity_factor=0 > "$work/train.log"
trainer_loss=$(python3 -c "
import json
for line in open('$work/run/metrics.jsonl'):
    r = json.loads(line)
    if 'eval_loss' in r: print(r['eval_loss'])")
for bs in 5 16; do
  "$MOETRAIN_BIN" eval --checkpoint "$work/run" --data "$BROWN_DATA" --max-samples 16 --batch-size "$bs" \
    | tee "$work/eval-$bs.txt"
  loss=$(sed -n 's/^loss \([0-9.]*\) per target token, perplexity \([0-9.]*\) .*/\1 \2/p' "$work/eval-$bs.txt")
  [[ -n "$loss" ]] || fail "no loss line"
  python3 -c "
import math, sys
t = float(sys.argv[1]); l, p = map(float, sys.argv[2].split())
print(f'trainer {t:.6f}, eval {l:.4f}, perplexity {p:.4f}')
sys.exit(0 if abs(l - t) <= 6e-5 and abs(p - math.exp(t)) <= 1e-4 * math.exp(t) else 1)" "$trainer_loss" "$loss" \
    || fail "eval --data (batch size $bs) differs from the trainer's evaluation"
done
grep -q "16 samples of the valid split" "$work/eval-5.txt" || fail "wrong sample count: $(cat "$work/eval-5.txt")"
# In bf16 the loss stays within 1% of the fp32 trainer's.
"$MOETRAIN_BIN" eval --checkpoint "$work/run" --data "$BROWN_DATA" --max-samples 16 --dtype bf16 | tee "$work/eval-bf16.txt"
python3 -c "
import sys
t, l = float(sys.argv[1]), float(sys.argv[2])
print(f'bf16 eval {l:.4f} against the trainer {t:.4f}')
sys.exit(0 if abs(l - t) <= 0.01 * t else 1)" "$trainer_loss" "$(sed -n 's/^loss \([0-9.]*\) .*/\1/p' "$work/eval-bf16.txt")" \
  || fail "eval --dtype bf16 is more than 1% off the fp32 loss"

expect_error "--checkpoint DIR and --data PATH go together" eval --checkpoint "$work/run"
expect_error "--split must be valid or train" eval --checkpoint "$work/run" --data "$BROWN_DATA" --split test
expect_error "eval: --dtype must be fp32, bf16 or fp16" eval --checkpoint "$work/run" --data "$BROWN_DATA" --dtype int8
expect_error "eval: --data: " eval --checkpoint "$work/run" --data "$work/nowhere"
echo "PASS"

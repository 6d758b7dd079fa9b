#!/usr/bin/env bash
# A run of phases (LoRA, then full fine-tuning) started from a trained base:
#   - phase `adapt` (4 steps): LoRA rank 4 on every projection and the
#     experts, lr 5e-3, on a mixture of the Brown shards drawn 3:1 under two
#     names; its last checkpoint holds the adapters, the frozen base
#     unchanged, and the mixture position (24 and 8 of 32 samples);
#   - phase `polish` (3 steps): full fine-tuning at lr 1e-4 starts from the
#     base with the adapters merged (W + 2 B A): after 3 small steps its
#     weights are within 3.5 lr of the merged ones and far from the unmerged;
#   - the same run stopped at step 2 (inside a phase) and at step 4 (a phase
#     boundary) and resumed gives the same losses.
source "$(dirname "$0")/lib.sh"
need_brown
work="$MOETRAIN_E2E_WORK/lora_phases"
rm -rf "$work"; mkdir -p "$work"
PY="$MOETRAIN_SOURCE_DIR/.venv/bin/python"
common=(--set log.every=1 --set train.eval_every=0 --set train.global_batch=8 --set train.micro_batch=4
        --set model.moe.capacity_factor=0 --set checkpoint.every=1 --set checkpoint.keep=0)
train_tiny --output-dir "$work/base" --max-steps 20 "${common[@]}" > "$work/base.log"

phases="[{name: adapt, steps: 4, finetune: {mode: lora}, lora: {r: 4, alpha: 8, targets: [all-linear]},
          optim: {lr: 0.005, warmup_steps: 0},
          data: {mixture: [{path: $BROWN_DATA, weight: 3, name: brown}, {path: $BROWN_DATA, weight: 1, name: again}]}},
         {name: polish, steps: 3, finetune: {mode: full}, optim: {lr: 0.0001, warmup_steps: 0, schedule: constant}}]"

train_tiny --output-dir "$work/whole" "${common[@]}" --set "phases=$phases" --init-from "$work/base" \
  | tee "$work/whole.log"
grep -q "phase 0 (adapt): steps 1 to 4, LoRA fine-tuning, lr 0.005" "$work/whole.log" || fail "no phase 0 line"
grep -q "phase 1 (polish): steps 5 to 7, full fine-tuning, lr 0.0001" "$work/whole.log" || fail "no phase 1 line"
grep -q "LoRA adapters merged into the weights" "$work/whole.log" || fail "phase 1 did not merge the adapters"
grep -q "data: a mixture of brown (weight 0.75, .* samples), again (weight 0.25, " "$work/whole.log" \
  || fail "phase 0 does not print its mixture"
[[ $(grep -c '"step":' "$work/whole/metrics.jsonl") -ge 7 ]] || fail "metrics.jsonl lacks steps"

# Interrupted inside phase 0 and at its end, then resumed.
train_tiny --output-dir "$work/parts" "${common[@]}" --set "phases=$phases" --init-from "$work/base" --max-steps 2 \
  > "$work/parts-1.log"
train_tiny --output-dir "$work/parts" "${common[@]}" --set "phases=$phases" --init-from "$work/base" --max-steps 4 \
  > "$work/parts-2.log"
grep -q "resumed from .*step-000002 at step 2" "$work/parts-2.log" || fail "no resume at step 2: $(cat "$work/parts-2.log")"
train_tiny --output-dir "$work/parts" "${common[@]}" --set "phases=$phases" --init-from "$work/base" \
  > "$work/parts-3.log"
grep -q "phase 1 (polish)" "$work/parts-3.log" && ! grep -q "phase 0 (adapt)" "$work/parts-3.log" \
  || fail "the third part did not start at phase 1: $(cat "$work/parts-3.log")"
"$MOETRAIN_SOURCE_DIR/.venv/bin/python" "$(dirname "$0")/../multirank/compare_runs.py" "$work/whole" "$work/parts" \
  --steps 7 || fail "the interrupted run of phases differs from the whole one"

expect_error "phases\[1\] (polish): optim.lr: must be positive" "${TINY_ARGS[@]}" --output-dir "$work/bad" \
  --set "phases=[{steps: 2}, {name: polish, steps: 1, optim: {lr: -1}}]"
expect_error "phases\[0\].steps: must be at least 1" "${TINY_ARGS[@]}" --output-dir "$work/bad" \
  --set "phases=[{steps: 0}]"

if ! "$PY" -c 'import h5py, numpy' 2>/dev/null; then
  echo "SKIP: h5py and numpy are not in $PY (scripts/setup.sh installs them)"
  exit $SKIP
fi
"$PY" - "$work" "$(dirname "$0")/../multirank" <<'PY' || fail "the phases' checkpoints are wrong"
import json, sys
import numpy as np
work, multirank = sys.argv[1:3]
sys.path.insert(0, multirank)
from compare_runs import parameters
base = parameters(f"{work}/base/checkpoints/step-000020")
adapted = parameters(f"{work}/whole/checkpoints/step-000004")
polished = parameters(f"{work}/whole/checkpoints/step-000007")
meta4 = json.load(open(f"{work}/whole/checkpoints/step-000004/meta.json"))
meta7 = json.load(open(f"{work}/whole/checkpoints/step-000007/meta.json"))
assert meta4["phase"] == {"index": 0, "name": "adapt", "start": 0, "end": 4}, meta4["phase"]
assert meta7["phase"]["index"] == 1 and meta7["phase"]["start"] == 4, meta7["phase"]
assert meta4["data"]["mixture_position"] == {"brown": 24, "again": 8}, meta4["data"]
assert meta7["data"]["samples_consumed"] == 24, meta7["data"]
adapters = [n for n in adapted if n.endswith(("lora_A", "lora_B"))]
assert len(adapters) > 20 and not any(n.endswith(("lora_A", "lora_B")) for n in polished)
for name, value in base.items():
    assert np.array_equal(adapted[name], value), f"LoRA changed the frozen {name}"
assert set(polished) == set(base)
merged = {}
for name in base:
    stem = name[: -len("weight")] if name.endswith("weight") else None
    if stem is not None and stem + "lora_A" in adapted:
        merged[name] = base[name] + 2.0 * np.matmul(adapted[stem + "lora_B"], adapted[stem + "lora_A"])
assert len(merged) == len(adapters) // 2, (len(merged), len(adapters))
lr = 1e-4
near = max(float(np.abs(polished[n] - merged[n]).max()) for n in merged)
delta = max(float(np.abs(merged[n] - base[n]).max()) for n in merged)
print(f"{len(merged)} adapted weights: largest merged delta {delta:.3e}; after 3 full steps at lr {lr} "
      f"the weights are within {near:.3e} of the merged ones")
assert near <= 3.5 * lr, near
assert delta > 20 * lr, delta
PY
echo "PASS"

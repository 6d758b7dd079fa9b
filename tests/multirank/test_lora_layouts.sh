#!/usr/bin/env bash
# LoRA fine-tuning under parallel layouts against the single process (fp32,
# CPU, dropout 0, dropless MoE, same global batch): a base model trained for
# 6 steps is LoRA-tuned (rank 4, every projection and the experts) for 8
# steps with --init-from; per-step loss within rtol 1e-5, the final
# parameters (adapters and the frozen base, assembled from every rank's
# pieces) within 5e-5 and every adapter's gradient at step 1 within 1e-4 of
# its largest entry, for
#   TP2 (adapters split with their layers' TP split);
#   PP2;
#   DP2 x EP2 with ZeRO 2 (expert adapters sharded over expert-DP);
#   DP2 x TP2 x PP2 with ZeRO 3 (8 ranks);
# and the TP2 run's checkpoint at step 4 resumes in one process (resharded)
# with the single-process losses of steps 5-8.
# The frozen base weights of every run's checkpoint equal the base model's.
work="$MOETRAIN_E2E_WORK/lora_layouts"
source "$(dirname "$0")/layout_lib.sh"

train_tiny --output-dir "$work/base" --max-steps 6 --set train.eval_every=0 --set model.moe.capacity_factor=0 \
  --set train.global_batch=8 --set train.micro_batch=2 --set train.threads=1 > "$work.base.log"
lora=(--init-from "$work/base" --set finetune.mode=lora --set lora.r=4 --set lora.alpha=8
      --set "lora.targets=[all-linear]" --set optim.lr=0.01 --set checkpoint.every=4 --set checkpoint.keep=0)

# The adapters train at lr 0.01, ten times the other parity tests' rate, and
# Adam moves every element by about lr per step whatever its gradient's size,
# so the float rounding of another reduction order (TP splits the matmuls)
# shows up ten times larger in the parameters: 1.2e-5 on a lora_B of
# magnitude 3.6e-2 after 8 steps, with the losses equal to 5e-8. A wrong
# split or a missed reduction differs by orders of magnitude more.
PARAM_ATOL=5e-5
run_single single "${lora[@]}"
grep -q "LoRA: rank 4, scale 2 on" "$work.single.log" || fail "no LoRA summary line: $(cat "$work.single.log")"

run_layout tp2 2 "${lora[@]}" --set parallel.tp=2
compare_with_single tp2 "LoRA, TP2"

# The TP2 run's step-4 checkpoint (adapters split, frozen base in TP pieces)
# resumed in one process continues as the single-process run does.
mkdir -p "$work/tp2-resumed/checkpoints"
cp -r "$work/tp2/checkpoints/step-000004" "$work/tp2-resumed/checkpoints/"
run_single tp2-resumed "${lora[@]}"
grep -q "layout changed from" "$work.tp2-resumed.log" || fail "the TP2 checkpoint was not resharded"
"$MOETRAIN_PYTHON" "$(dirname "$0")/compare_runs.py" "$work/single" "$work/tp2-resumed" --steps 8 --first-step 5 \
  --atol "$PARAM_ATOL" || fail "the LoRA checkpoint saved under TP2 does not resume in one process"

run_layout pp2 2 "${lora[@]}" --set parallel.pp=2
compare_with_single pp2 "LoRA, PP2"

run_layout dp2-ep2-zero2 4 "${lora[@]}" --set parallel.ep=2 --set parallel.zero_stage=2
compare_with_single dp2-ep2-zero2 "LoRA, DP2 x EP2, ZeRO 2"

run_layout dp2-tp2-pp2-zero3 8 "${lora[@]}" --set parallel.tp=2 --set parallel.pp=2 --set parallel.zero_stage=3
compare_with_single dp2-tp2-pp2-zero3 "LoRA, DP2 x TP2 x PP2, ZeRO 3"

"$MOETRAIN_PYTHON" - "$work" "$(dirname "$0")" <<'PY' || fail "a LoRA run changed or lost a frozen base weight"
import sys, glob
work, here = sys.argv[1:3]
sys.path.insert(0, here)
import numpy as np
from compare_runs import parameters
base = parameters(sorted(glob.glob(f"{work}/base/checkpoints/step-*"))[-1])
for run in ["single", "tp2", "pp2", "dp2-ep2-zero2", "dp2-tp2-pp2-zero3"]:
    tuned = parameters(sorted(glob.glob(f"{work}/{run}/checkpoints/step-*"))[-1])
    adapters = [n for n in tuned if n.endswith(("lora_A", "lora_B"))]
    assert adapters, run
    assert set(tuned) - set(adapters) == set(base), (run, sorted(set(tuned) ^ set(base))[:4])
    for name, value in base.items():
        assert np.array_equal(tuned[name], value), (run, name)
    moved = sum(1 for n in adapters if n.endswith("lora_B") and np.abs(tuned[n]).max() > 0)
    assert moved == len(adapters) // 2, (run, moved, len(adapters))
    print(f"{run}: {len(base)} frozen base tensors unchanged, {len(adapters)} adapter tensors trained")
PY
echo "PASS"

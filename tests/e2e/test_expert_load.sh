#!/usr/bin/env bash
# Per-expert load in the metrics: a run started from weights whose MoE
# routers are all zero (every token ties, and top-2 takes the same two
# experts for all: a max/mean load of exactly 2 in every MoE layer) shows that imbalance in
# metrics.jsonl's expert_tokens and expert_load_max_ratio at step 1, and a
# strong load-balancing loss (aux_loss_coef 1) brings the ratio down over 60
# steps, well below the same run's without it (aux_loss_coef 0). Dropless
# routing, so the counts are what the router chose.
source "$(dirname "$0")/lib.sh"
need_brown
: "${MOETRAIN_PYTHON:=$MOETRAIN_SOURCE_DIR/.venv/bin/python}"
if ! "$MOETRAIN_PYTHON" -c "import h5py" 2>/dev/null; then
  echo "SKIP: h5py is not in .venv (scripts/setup.sh installs it)"
  exit $SKIP
fi
work="$MOETRAIN_E2E_WORK/expert_load"
rm -rf "$work"; mkdir -p "$work"
common=(--set model.moe.capacity_factor=0 --set log.every=1 --set train.eval_every=0 --set optim.warmup_steps=0
        --set log.tensorboard=false)

train_tiny --output-dir "$work/init" --max-steps 1 "${common[@]}" > "$work/init.log"
# Every router zeroed; the edit keeps each dataset's checksum true.
"$MOETRAIN_PYTHON" - "$work/init/checkpoints/step-000001" "$MOETRAIN_SOURCE_DIR/tests/multirank" <<'PY' \
  || fail "could not zero the routers"
import glob, os, sys
import h5py
import numpy as np
checkpoint, here = sys.argv[1:]
sys.path.insert(0, here)
from xxh64 import xxh64
zeroed = []
for path in glob.glob(os.path.join(checkpoint, "rank-*.h5")):
    with h5py.File(path, "r+") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset) and name.startswith("model/") and name.endswith("router.weight"):
                obj[...] = 0
                obj.attrs.modify("xxh64", np.bytes_(xxh64(np.ascontiguousarray(obj[...]).tobytes())))
                zeroed.append(name)
        f.visititems(visit)
print("zeroed:", ", ".join(sorted(zeroed)))
sys.exit(0 if zeroed else "no router found")
PY

for coef in 1 0; do
  train_tiny --output-dir "$work/aux$coef" --max-steps 60 --init-from "$work/init" "${common[@]}" \
    --set model.moe.aux_loss_coef=$coef > "$work/aux$coef.log"
done
grep -q "experts max/mean 2.00" "$work/aux1.log" || fail "the progress line does not show the 2.00 imbalance"

python3 - "$work/aux1/metrics.jsonl" "$work/aux0/metrics.jsonl" <<'PY'
import json, statistics, sys
def load(path):
    return {r["step"]: r for r in map(json.loads, open(path)) if "expert_load_max_ratio" in r}
balanced, unbalanced = load(sys.argv[1]), load(sys.argv[2])
first = balanced[1]
for layer, counts in first["expert_tokens"].items():
    print(f"step 1 {layer}: tokens per expert {counts}")
    low, _, a, b = sorted(counts)
    if low != 0 or a != b or a == 0:
        sys.exit(f"FAIL: with zero routers, {layer} should send every token to the same two experts: {counts}")
if first["expert_load_max_ratio"] != 2.0:
    sys.exit(f"FAIL: step 1 max/mean {first['expert_load_max_ratio']}, wanted 2.0")
late = lambda runs: statistics.mean(runs[s]["expert_load_max_ratio"] for s in range(51, 61))
with_aux, without_aux = late(balanced), late(unbalanced)
print(f"max/mean load, steps 51-60: {with_aux:.3f} with aux_loss_coef 1, {without_aux:.3f} with 0")
print("with aux_loss_coef 1, steps 1..60:", " ".join(f"{balanced[s]['expert_load_max_ratio']:.2f}" for s in range(1, 61)))
if not (with_aux < 1.5 and with_aux < without_aux - 0.2):
    sys.exit("FAIL: the load-balancing loss did not bring the imbalance down")
PY
echo "PASS"

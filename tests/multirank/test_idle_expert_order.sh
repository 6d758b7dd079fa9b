#!/usr/bin/env bash
# An expert that gets no token does not derail the gradient collectives of the
# expert-data-parallel and expert-parallel groups: at DP4 x EP2 (ZeRO 0, ZeRO 0
# with one bucket per unit, 1, 2, overlapped reduction on, and ZeRO 3) no job
# hangs (a 20 s collective timeout ends a stuck one with its message) and each
# matches the single process as test_ep_matches_single.sh checks it.
#
# The idle expert: 2 experts, top-1 routing, the decoder MoE router set to
# exactly zero (in the checkpoint the runs start from) and frozen. Its logits
# are exactly 0, the probabilities tie and top-1 takes expert 0 for every
# token, so decoder expert 1 (EP rank 1: ranks 1 and 3) gets no token in any
# step, while the encoder's experts are used. check_idle proves it from each
# run's output: decoder expert 1's dumped step-1 gradient is exactly zero in
# every element (expert 0's and both encoder experts' are not), and the router
# is still exactly zero at step 8, so every step routed alike. On ranks 1 and 3
# the decoder expert unit thus reports no gradient in the backward (finish()
# settles it) while later buckets complete and the encoder's expert
# all-to-alls still run in that backward.
work="$MOETRAIN_E2E_WORK/idle_expert_order"
source "$(dirname "$0")/layout_lib.sh"
# A stuck job that the collective timeout somehow fails to end still ends here.
MOETRAIN_MPIRUN="timeout -k 10 180 $MOETRAIN_MPIRUN"

moe=(--set model.moe.num_experts=2 --set model.moe.top_k=1)
router=decoder.layers.1.moe.router.weight

# Starting weights: one step of the single process, then the router zeroed.
train_tiny --output-dir "$work/init" --max-steps 1 --set train.global_batch=8 --set train.micro_batch=2 \
  --set train.threads=1 "${moe[@]}" > "$work.init.log" || { cat "$work.init.log"; fail "init run failed"; }
# The edit keeps the dataset's checksum (its xxh64 attribute) true.
"$MOETRAIN_PYTHON" - "$work/init/checkpoints/step-000001" "$router" "$(dirname "$0")" <<'PY' || fail "could not zero the router"
import glob, os, sys
import h5py
import numpy as np
checkpoint, router, here = sys.argv[1:]
sys.path.insert(0, here)
from xxh64 import xxh64
done = 0
for path in glob.glob(os.path.join(checkpoint, "rank-*.h5")):
    with h5py.File(path, "r+") as f:
        if "model/" + router in f:
            dataset = f["model/" + router]
            dataset[...] = 0
            dataset.attrs.modify("xxh64", np.bytes_(xxh64(np.ascontiguousarray(dataset[...]).tobytes())))
            done += 1
sys.exit(0 if done == 1 else f"{router} found in {done} rank files")
PY

args=(--init-from "$work/init" --set "finetune.freeze=[$router]" "${moe[@]}")

# Decoder expert 1 got no token (exactly zero step-1 gradient), the other
# experts did, and the router stayed exactly zero to the end.
check_idle() {  # NAME
  "$MOETRAIN_PYTHON" - "$work/$1" "$router" "$(dirname "${BASH_SOURCE[0]}")" <<'PY' || fail "$1: no idle expert"
import os, sys
import numpy as np
run, router, here = sys.argv[1:]
sys.path.insert(0, here)
from compare_runs import parameters
grads = parameters(os.path.join(run, "grads-step-000001"))
for stack, idle in (("decoder", {1}), ("encoder", set())):
    for p in ("experts_fc1_weight", "experts_fc1_bias", "experts_fc2_weight", "experts_fc2_bias"):
        g = grads[f"{stack}.layers.1.moe.{p}"]
        for e in range(g.shape[0]):
            nonzero = int(np.count_nonzero(g[e]))
            if (nonzero == 0) != (e in idle):
                sys.exit(f"{stack} expert {e} {p}: {nonzero} of {g[e].size} gradient entries nonzero at step 1")
final = parameters(os.path.join(run, "checkpoints", "step-000008"))[router]
if np.count_nonzero(final):
    sys.exit(f"{router} is no longer zero at step 8")
print(f"{os.path.basename(run)}: decoder expert 1 idle (step-1 gradient exactly 0), experts 0 and encoder experts busy")
PY
}

run_single single "${args[@]}"
check_idle single

layout() {  # NAME ZERO_STAGE DESCRIPTION [EXTRA_ARGS...]
  local name=$1 zero=$2 what=$3; shift 3
  SECONDS=0
  run_layout "$name" 4 --set parallel.ep=2 --set parallel.zero_stage="$zero" --set parallel.timeout_s=20 \
    "${args[@]}" "$@"
  echo "$what: $SECONDS s"
  grep -q "on each of 4 data-parallel rank(s), ZeRO stage $zero, tensor parallel 1, expert parallel 2" \
    "$work.$name.log" || fail "$name: not a DP4 x EP2 ZeRO $zero run"
  grep -q "did not finish within" "$work.$name.log" && { cat "$work.$name.log"; fail "$name: a collective timed out"; }
  check_idle "$name"
  compare_with_single "$name" "$what"
}

layout dp4-ep2-zero0 0 "DP4 x EP2, ZeRO 0"
layout dp4-ep2-zero0-unit-buckets 0 "DP4 x EP2, ZeRO 0, one bucket per unit" --set parallel.bucket_mb=0.001
layout dp4-ep2-zero1 1 "DP4 x EP2, ZeRO 1"
layout dp4-ep2-zero2 2 "DP4 x EP2, ZeRO 2"
layout dp4-ep2-zero3 3 "DP4 x EP2, ZeRO 3"
echo "PASS"

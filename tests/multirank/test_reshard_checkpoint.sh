#!/usr/bin/env bash
# Resharding: a checkpoint saved under one layout resumes under another, with
# its optimizer state. Each run below saves a checkpoint at step 4, which is
# resumed from under another layout (into a new output directory) to step 8; losses of steps 5-8 (and the
# step-8 evaluation) must match the uninterrupted single process within rtol
# 1e-5, and the step-8 parameters within 1e-5 (fp32, CPU, dropout 0):
#   TP2 x PP2                -> single process;
#   single process           -> DP2 x TP2 with ZeRO 3;
#   DP2 x EP2 with ZeRO 1    -> PP2 x TP2 with a vocabulary of 8001 rows, which
#     TP pads to 8002 (the padding row the checkpoint lacks starts at zero);
#   DP2 x CP2 (ring), ZeRO 1 -> single process;
#   single process           -> DP2 x CP2 (all_to_all) with ZeRO 2.
work="$MOETRAIN_E2E_WORK/reshard_checkpoint"
source "$(dirname "$0")/layout_lib.sh"

# Trains NAME under a layout, with a checkpoint at step 4.
first_half() {  # NAME NP ARGS...
  local name=$1 np=$2; shift 2
  if [[ $np == 1 ]]; then
    train_tiny --output-dir "$work/$name" "${common[@]}" --set checkpoint.every=4 "$@" > "$work.$name.log"
  else
    run_layout "$name" "$np" --set checkpoint.every=4 "$@"
  fi
}
# Resumes NAME's step-4 checkpoint into NAME-resumed under another layout.
second_half() {  # NAME NP ARGS...
  local name=$1 np=$2; shift 2
  local args=(--resume "$work/$name/checkpoints/step-000004")
  if [[ $np == 1 ]]; then
    train_tiny --output-dir "$work/$name-resumed" "${common[@]}" "${args[@]}" "$@" > "$work.$name-resumed.log"
  else
    run_layout "$name-resumed" "$np" "${args[@]}" "$@"
  fi
  grep -q "resumed from .*step-000004 at step 4" "$work.$name-resumed.log" || fail "$name did not resume at step 4"
  grep -q "layout changed from" "$work.$name-resumed.log" || fail "$name: the layout change was not reported"
}
compare_resumed() {  # NAME DESCRIPTION REFERENCE
  echo "$2:"
  "$MOETRAIN_PYTHON" "$(dirname "$0")/compare_runs.py" "$work/$3" "$work/$1-resumed" --steps 8 --first-step 5 \
    || fail "$2 does not match the uninterrupted single process"
}

run_single
run_single single-v8001 --set model.vocab_size=8001

first_half tp2-pp2 4 --set parallel.tp=2 --set parallel.pp=2
second_half tp2-pp2 1
compare_resumed tp2-pp2 "TP2 x PP2 -> single process" single

first_half single-half 1
second_half single-half 4 --set parallel.tp=2 --set parallel.zero_stage=3
compare_resumed single-half "single process -> DP2 x TP2, ZeRO 3" single

first_half dp2-ep2-zero1-v8001 2 --set parallel.ep=2 --set parallel.zero_stage=1 --set model.vocab_size=8001
second_half dp2-ep2-zero1-v8001 4 --set parallel.pp=2 --set parallel.tp=2 --set model.vocab_size=8001
compare_resumed dp2-ep2-zero1-v8001 "DP2 x EP2, ZeRO 1 -> PP2 x TP2, vocabulary 8001" single-v8001

first_half dp2-cp2-zero1 4 --set parallel.cp=2 --set parallel.cp_mode=ring --set parallel.zero_stage=1
second_half dp2-cp2-zero1 1
compare_resumed dp2-cp2-zero1 "DP2 x CP2 (ring), ZeRO 1 -> single process" single

first_half single-to-cp 1
second_half single-to-cp 4 --set parallel.cp=2 --set parallel.zero_stage=2
compare_resumed single-to-cp "single process -> DP2 x CP2 (all_to_all), ZeRO 2" single
echo "PASS"

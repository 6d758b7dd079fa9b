#!/usr/bin/env bash
# Context parallelism against the single process (fp32, CPU, dropout 0,
# dropless MoE, same global batch): per-step loss within rtol 1e-5 for 8 steps,
# the final parameters within 1e-5 and every parameter's gradient at step 1
# within 1e-4 of its largest entry, for
#   CP2, both cp_modes, with global attention and sinusoidal positions, local
#     attention and rotary positions, dynamic attention and learned positions;
#   CP4 with global attention and rotary positions (ring), dynamic attention
#     and sinusoidal positions (all_to_all);
#   DP2 x CP2 with ZeRO 1, TP2 x CP2, PP2 x CP2, and DP2 x CP2 x EP2 with ZeRO 3;
#   CP2 with activation checkpointing (ring), and CP2 with LoRA (all_to_all).
work="$MOETRAIN_E2E_WORK/cp_matches_single"
source "$(dirname "$0")/layout_lib.sh"

declare -A model=(
  [global-sinusoidal]="--set model.attention=global --set model.position=sinusoidal"
  [local-rotary]="--set model.attention=local --set model.local_window=6 --set model.position=rotary"
  [dynamic-learned]="--set model.attention=dynamic --set model.local_window=5 --set model.position=learned"
  [global-rotary]="--set model.attention=global --set model.position=rotary"
  [dynamic-sinusoidal]="--set model.attention=dynamic --set model.local_window=7 --set model.position=sinusoidal"
)
for variant in "${!model[@]}"; do
  # shellcheck disable=SC2086
  run_single "single-$variant" ${model[$variant]}
done

check() {  # NAME NP VARIANT DESCRIPTION EXTRA_ARGS...
  local name=$1 np=$2 variant=$3 description=$4; shift 4
  # shellcheck disable=SC2086
  run_layout "$name" "$np" ${model[$variant]} "$@"
  compare_with_single "$name" "$description ($variant)" "single-$variant"
}

for mode in all_to_all ring; do
  for variant in global-sinusoidal local-rotary dynamic-learned; do
    check "cp2-$mode-$variant" 2 "$variant" "CP2 $mode" --set parallel.cp=2 --set parallel.cp_mode=$mode
  done
done
grep -q "context parallel 2 (ring)" "$work.cp2-ring-global-sinusoidal.log" || fail "not a CP2 ring run"
check cp4-ring 4 global-rotary "CP4 ring" --set parallel.cp=4 --set parallel.cp_mode=ring
check cp4-all_to_all 4 dynamic-sinusoidal "CP4 all_to_all" --set parallel.cp=4 --set parallel.cp_mode=all_to_all
check dp2-cp2-zero1 4 global-sinusoidal "DP2 x CP2, ZeRO 1" --set parallel.cp=2 --set parallel.zero_stage=1
check tp2-cp2 4 local-rotary "TP2 x CP2 (all_to_all over the TP rank's 2 heads)" --set parallel.cp=2 \
  --set parallel.tp=2
check pp2-cp2 4 dynamic-learned "PP2 x CP2 (ring)" --set parallel.cp=2 --set parallel.pp=2 \
  --set parallel.cp_mode=ring
check dp2-cp2-ep2-zero3 4 global-rotary "DP2 x CP2 x EP2, ZeRO 3" --set parallel.cp=2 --set parallel.ep=2 \
  --set parallel.zero_stage=3
# Activation checkpointing replays the ring in backward; LoRA trains adapters only.
check cp2-ring-checkpointed 2 global-sinusoidal "CP2 ring, activation checkpointing" --set parallel.cp=2 \
  --set parallel.cp_mode=ring --set model.activation_checkpointing=true
# shellcheck disable=SC2086
run_single single-lora ${model[global-sinusoidal]} --set finetune.mode=lora
# shellcheck disable=SC2086
run_layout cp2-lora 2 ${model[global-sinusoidal]} --set parallel.cp=2 --set finetune.mode=lora
compare_with_single cp2-lora "CP2 all_to_all, LoRA" single-lora
echo "PASS"

#!/usr/bin/env bash
# The round trip of Hugging Face models under parallel layouts: a small
# M2M100 (the dense NLLB-200 architecture) and a small NLLB-MoE, each with
# NLLB's tokenizer and fairseq's ids (tests/e2e/nllb_folder.py), are imported,
# then LoRA-tuned for 5 steps from
# the import on tokenized sentence pairs under DP2 x TP2 (4 ranks) and under
# PP2 (2 ranks). Each run is exported in its source's format (--format m2m100
# or nllb-moe), merged and as an adapter alone:
#  - transformers loads the merged export with no missing or unexpected key,
#    and its logits on a padded batch of real pairs equal moetrain's for the
#    run's checkpoint (loaded in one process) within 1e-4;
#  - peft applies the adapter to the source model with the same logits.
# Skipped when transformers, peft, sentencepiece or protobuf is not in .venv.
source "$(dirname "$0")/../e2e/lib.sh"
need_brown
: "${MOETRAIN_MPIRUN:?}" "${MOETRAIN_DUMP_LOGITS:?}"
PY="$MOETRAIN_SOURCE_DIR/.venv/bin/python"
if ! "$PY" -c 'import torch, transformers, peft, sentencepiece, google.protobuf, safetensors' 2>/dev/null; then
  echo "SKIP: transformers, peft, sentencepiece, protobuf or safetensors is not in $PY (scripts/setup.sh installs them)"
  exit $SKIP
fi
work="$MOETRAIN_E2E_WORK/import_round_trip"
rm -rf "$work"; mkdir -p "$work"
folder_tool=("$PY" "$MOETRAIN_SOURCE_DIR/tests/e2e/nllb_folder.py")

# round_trip ARCH NAME NP EXTRA_ARGS...: the LoRA run, its two exports and its logits.
round_trip() {
  local arch=$1 name=$2 np=$3; shift 3
  local dir="$work/$arch"
  $MOETRAIN_MPIRUN -np "$np" "$MOETRAIN_BIN" train --config "$dir/lora.yaml" --init-from "$dir/imported" \
    --output-dir "$dir/$name" --max-steps 5 --set train.micro_batch=2 --set train.threads=1 "$@" \
    > "$dir/$name.log" 2>&1 || { cat "$dir/$name.log"; fail "the $arch $name LoRA run failed"; }
  "$MOETRAIN_BIN" export --checkpoint "$dir/$name" --out "$dir/$name-merged" --format "$arch" > /dev/null \
    || fail "merged export of $arch $name"
  "$MOETRAIN_BIN" export --checkpoint "$dir/$name" --out "$dir/$name-adapter" --format "$arch" --adapter-only \
    > /dev/null || fail "adapter export of $arch $name"
  "$MOETRAIN_DUMP_LOGITS" "$dir/$name" "$dir/sources.txt" "$dir/targets.txt" "$dir/$name.safetensors" \
    eng_Latn fra_Latn > /dev/null || fail "e2e_dump_logits of $arch $name failed"
}

for arch in m2m100 nllb-moe; do
  dir="$work/$arch"
  mkdir -p "$dir"
  "${folder_tool[@]}" build "$MOETRAIN_SHARED_DATA" "$dir" "$arch" > /dev/null 2>&1 \
    || fail "cannot build the $arch folder"
  "$MOETRAIN_BIN" import --from "$dir/hf" --out "$dir/imported" > /dev/null || fail "import of $arch failed"
  "${folder_tool[@]}" pairs "$dir"
  "$MOETRAIN_BIN" tokenize --input "$dir/pairs.jsonl" --output "$dir/pairs" --source-field en --target-field fr \
    --tokenizer "$dir/imported/tokenizer.model" --src-lang eng_Latn --tgt-lang fra_Latn --valid-fraction 0.1 \
    > /dev/null || fail "tokenize"
  "${folder_tool[@]}" lora-config "$MOETRAIN_SOURCE_DIR/configs/$arch-compatible.yaml" "$dir"
  head -n 12 "$dir/english.txt" | awk 'NR % 2 == 1' > "$dir/sources.txt"
  head -n 12 "$dir/english.txt" | awk 'NR % 2 == 0' > "$dir/targets.txt"
  round_trip "$arch" dp2-tp2 4 --set parallel.tp=2
  round_trip "$arch" pp2 2 --set parallel.pp=2
done

"$PY" - "$work" "$MOETRAIN_SOURCE_DIR/tests/e2e" <<'PY' || fail "an export does not give moetrain's logits"
import sys
from peft import PeftModel
from safetensors.torch import load_file
from transformers import M2M100ForConditionalGeneration, NllbMoeForConditionalGeneration
work, here = sys.argv[1:3]
sys.path.insert(0, here)
from nllb_moe_check import check_logits, check_sparse_layer, logits_difference

def load(arch, folder, info=False):
    if arch == "m2m100":
        loaded = M2M100ForConditionalGeneration.from_pretrained(folder, output_loading_info=info)
    else:
        loaded = NllbMoeForConditionalGeneration.from_pretrained(folder, output_loading_info=info)
    model = loaded[0] if info else loaded
    model.eval()
    if arch == "nllb-moe":  # transformers 5.x's expert loop, replaced where it is wrong
        check_sparse_layer(model.model.encoder.layers[1].ffn, model.config.d_model)
    return loaded

for arch in ("m2m100", "nllb-moe"):
    for name in ("dp2-tp2", "pp2"):
        what, dumped = f"{arch} {name}", load_file(f"{work}/{arch}/{name}.safetensors")
        merged, info = load(arch, f"{work}/{arch}/{name}-merged", info=True)
        assert not info["missing_keys"] and not info["unexpected_keys"], info
        print(f"{what}: transformers on the merged export:")
        check_logits(merged, dumped)
        base = load(arch, f"{work}/{arch}/hf")
        base_logits, _, _ = logits_difference(base, dumped)
        moved = (base_logits - dumped["logits"]).abs()[dumped["tgt_mask"].bool()].max().item()
        print(f"{what}: 5 LoRA steps moved the logits by up to {moved:.3f}")
        assert moved > 1e-2, "the adapters barely changed the model: the comparison would not see a lost adapter"
        adapted = PeftModel.from_pretrained(base, f"{work}/{arch}/{name}-adapter").eval()
        _, batch_diff, row_diff = logits_difference(adapted, dumped)
        print(f"{what}: peft, the source model + the adapter: max |diff| {batch_diff:.2e} (padded batch), "
              f"{row_diff:.2e} (one pair at a time)")
        assert batch_diff <= 1e-4 and row_diff <= 1e-4
PY
echo "PASS"

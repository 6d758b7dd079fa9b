#!/usr/bin/env bash
# `moetrain import` and `moetrain export --format m2m100` of the dense
# NLLB-200 architecture (transformers' M2M100ForConditionalGeneration), with
# NLLB's tokenizer and fairseq's ids (tests/e2e/nllb_folder.py builds the
# folder, small and random):
#  - the import's logits on a padded batch of real sentence pairs with
#    language codes equal transformers' within 1e-4, and greedy and beam-4
#    generation with the target language forced give transformers' text;
#  - exported back with --format m2m100, transformers loads it with no
#    missing or unexpected key, and its weights equal the source's bitwise;
#  - LoRA from the import (3 steps on tokenized pairs), exported merged:
#    transformers' logits equal moetrain's within 1e-4; exported
#    --adapter-only: peft applies it to the source model with the same
#    logits.
# Skipped when transformers, peft, sentencepiece or protobuf is not in .venv.
source "$(dirname "$0")/lib.sh"
need_brown
: "${MOETRAIN_DUMP_LOGITS:?}"
PY="$MOETRAIN_SOURCE_DIR/.venv/bin/python"
if ! "$PY" -c 'import torch, transformers, peft, sentencepiece, google.protobuf, safetensors' 2>/dev/null; then
  echo "SKIP: transformers, peft, sentencepiece, protobuf or safetensors is not in $PY (scripts/setup.sh installs them)"
  exit $SKIP
fi
work="$MOETRAIN_E2E_WORK/import_m2m100"
rm -rf "$work"; mkdir -p "$work"

echo "== an M2M100 folder built by transformers"
folder_tool=("$PY" "$(dirname "$0")/nllb_folder.py")
"${folder_tool[@]}" build "$MOETRAIN_SHARED_DATA" "$work" m2m100 || fail "cannot build the model folder"
"$MOETRAIN_BIN" import --from "$work/hf" --out "$work/imported" | tee "$work/import.log" || fail "import failed"
grep -q "imported $work/hf (m2m_100): " "$work/import.log" || fail "no import summary"
grep -q "^    every: 0$" "$work/imported/model.yaml" || fail "model.yaml is not dense"

echo "== logits and generation"
head -n 12 "$work/english.txt" | awk 'NR % 2 == 1' > "$work/sources.txt"
head -n 12 "$work/english.txt" | awk 'NR % 2 == 0' > "$work/targets.txt"
"$MOETRAIN_DUMP_LOGITS" "$work/imported" "$work/sources.txt" "$work/targets.txt" "$work/logits.safetensors" \
  eng_Latn fra_Latn > /dev/null || fail "e2e_dump_logits failed"
for method in greedy beam; do
  "$MOETRAIN_BIN" generate --checkpoint "$work/imported" --input "$work/sources.txt" --src-lang eng_Latn \
    --tgt-lang fra_Latn --max-length 12 --method "$method" --beam-size 4 --output "$work/$method.txt" \
    || fail "generate ($method) failed"
done
"$PY" - "$work" "$(dirname "$0")" <<'PY' || fail "moetrain's logits or generation differ from transformers'"
import sys
from safetensors.torch import load_file
from transformers import M2M100ForConditionalGeneration
work, here = sys.argv[1:3]
sys.path.insert(0, here)
from nllb_folder import check_generation
from nllb_moe_check import check_logits
model = M2M100ForConditionalGeneration.from_pretrained(f"{work}/hf").eval()
check_logits(model, load_file(f"{work}/logits.safetensors"))
sources = open(f"{work}/sources.txt").read().split("\n")[:-1]
outputs = {m: open(f"{work}/{m}.txt").read().split("\n")[:-1] for m in ("greedy", "beam")}
check_generation(model, f"{work}/hf", sources, outputs, max_new_tokens=12)
PY

echo "== exported back"
"$MOETRAIN_BIN" export --checkpoint "$work/imported" --out "$work/exported" --format m2m100 | tee "$work/export.log" \
  || fail "export --format m2m100 failed"
grep -q "with m2m100 names" "$work/export.log" || fail "the export is not in the m2m100 format"
"$PY" - "$work" <<'PY' || fail "the export is not the source model"
import sys
import torch
from transformers import M2M100ForConditionalGeneration
work = sys.argv[1]
source = M2M100ForConditionalGeneration.from_pretrained(f"{work}/hf")
exported, info = M2M100ForConditionalGeneration.from_pretrained(f"{work}/exported", output_loading_info=True)
assert not info["missing_keys"] and not info["unexpected_keys"], info
a, b = source.state_dict(), exported.state_dict()
assert a.keys() == b.keys()
assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]
print(f"transformers loads the export: {len(a)} tensors bitwise equal to the source's")
PY

echo "== LoRA from the import"
"${folder_tool[@]}" pairs "$work"
"$MOETRAIN_BIN" tokenize --input "$work/pairs.jsonl" --output "$work/pairs" --source-field en --target-field fr \
  --tokenizer "$work/imported/tokenizer.model" --src-lang eng_Latn --tgt-lang fra_Latn --valid-fraction 0.1 \
  > /dev/null || fail "tokenize"
"${folder_tool[@]}" lora-config "$MOETRAIN_SOURCE_DIR/configs/m2m100-compatible.yaml" "$work"
"$MOETRAIN_BIN" train --config "$work/lora.yaml" --init-from "$work/imported" --output-dir "$work/lora" \
  > "$work/lora.log" 2>&1 || { cat "$work/lora.log"; fail "LoRA from the M2M100 import failed"; }
"$MOETRAIN_BIN" export --checkpoint "$work/lora" --out "$work/merged" --format m2m100 > /dev/null \
  || fail "merged export"
"$MOETRAIN_BIN" export --checkpoint "$work/lora" --out "$work/adapter" --format m2m100 --adapter-only > /dev/null \
  || fail "adapter export"
"$MOETRAIN_DUMP_LOGITS" "$work/lora" "$work/sources.txt" "$work/targets.txt" "$work/lora-logits.safetensors" \
  eng_Latn fra_Latn > /dev/null || fail "e2e_dump_logits of the LoRA run failed"
"$PY" - "$work" "$(dirname "$0")" <<'PY' || fail "the LoRA exports do not agree with moetrain"
import sys
import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import M2M100ForConditionalGeneration
work, here = sys.argv[1:3]
sys.path.insert(0, here)
from nllb_moe_check import check_logits, logits_difference
before, after = load_file(f"{work}/logits.safetensors"), load_file(f"{work}/lora-logits.safetensors")
moved = (before["logits"] - after["logits"]).abs().max().item()
print(f"after 3 LoRA steps the logits moved by up to {moved:.3f}")
assert moved > 1e-2
merged, info = M2M100ForConditionalGeneration.from_pretrained(f"{work}/merged", output_loading_info=True)
assert not info["missing_keys"] and not info["unexpected_keys"], info
print("transformers on the merged export:")
check_logits(merged.eval(), after)
adapter = load_file(f"{work}/adapter/adapter_model.safetensors")
assert "base_model.model.model.decoder.layers.1.encoder_attn.out_proj.lora_A.weight" in adapter, sorted(adapter)[:4]
assert "base_model.model.model.encoder.layers.0.fc2.lora_B.weight" in adapter
base = M2M100ForConditionalGeneration.from_pretrained(f"{work}/hf").eval()
adapted = PeftModel.from_pretrained(base, f"{work}/adapter").eval()
_, batch_diff, row_diff = logits_difference(adapted, after)
print(f"peft: the source model + the adapter vs moetrain's LoRA model: max |diff| {batch_diff:.2e} (padded batch), "
      f"{row_diff:.2e} (one pair at a time)")
assert batch_diff <= 1e-4 and row_diff <= 1e-4
PY

echo "PASS"

#!/usr/bin/env bash
# Exporting a LoRA checkpoint: the NLLB-MoE-compatible preset trained 6 steps
# (the base), then LoRA-tuned 5 steps (rank 4 on every projection and every
# expert). Three exports: the base, the LoRA checkpoint merged (fp32 W +
# scale B A, NLLB-MoE names) and its adapter alone (--adapter-only, PEFT
# layout). transformers loads the merged export and matches moetrain's
# logits of the LoRA checkpoint; peft applies the adapter to the base export
# and matches the merged export (fp32, within 1e-4); the adapters change the
# logits. --adapter-only of a checkpoint without LoRA exits 2 with one line.
source "$(dirname "$0")/lib.sh"
need_brown
: "${MOETRAIN_DUMP_LOGITS:?}"
work="$MOETRAIN_E2E_WORK/export_lora"
rm -rf "$work"; mkdir -p "$work"
PY="$MOETRAIN_SOURCE_DIR/.venv/bin/python"

python3 - "$MOETRAIN_SHARED_DATA/brown.jsonl" "$work" <<'PY'
import json, sys
docs = [json.loads(line) for _, line in zip(range(40), open(sys.argv[1]))]
sentences = [p.strip() for d in docs for p in d["text"].split("\n\n") if 3 <= len(p.split()) <= 40]
open(f"{sys.argv[2]}/sources.txt", "w").write("\n".join(sentences[20:32:2]) + "\n")
open(f"{sys.argv[2]}/targets.txt", "w").write("\n".join(sentences[21:32:2]) + "\n")
PY
nllb=("$MOETRAIN_BIN" train --config "$MOETRAIN_SOURCE_DIR/configs/nllb-moe-compatible.yaml"
      --set data.train="$BROWN_DATA" --set data.valid="$BROWN_DATA" --set train.global_batch=8
      --set train.micro_batch=8 --set train.eval_every=0)
"${nllb[@]}" --output-dir "$work/base" --max-steps 6 > "$work/base.log" || fail "base training failed"
"${nllb[@]}" --output-dir "$work/lora" --max-steps 5 --init-from "$work/base" --set finetune.mode=lora \
  --set lora.r=4 --set lora.alpha=8 --set "lora.targets=[all-linear]" --set optim.lr=0.02 \
  --set optim.warmup_steps=0 > "$work/lora.log" || fail "LoRA training failed: $(tail -3 "$work/lora.log")"

"$MOETRAIN_BIN" export --checkpoint "$work/base" --out "$work/base-hf" > /dev/null || fail "base export failed"
"$MOETRAIN_BIN" export --checkpoint "$work/lora" --out "$work/merged-hf" | tee "$work/merged.log"
grep -q "LoRA adapters merged into the weights in fp32: W + scale \* B A, scale 2" "$work/merged.log" \
  || fail "the merged export does not say so"
"$MOETRAIN_BIN" export --checkpoint "$work/lora" --out "$work/adapter" --adapter-only | tee "$work/adapter.log"
for f in adapter_config.json adapter_model.safetensors; do [[ -s "$work/adapter/$f" ]] || fail "no $f"; done
[[ ! -e "$work/adapter/model.safetensors" ]] || fail "--adapter-only wrote the whole model"
"$MOETRAIN_DUMP_LOGITS" "$work/lora" "$work/sources.txt" "$work/targets.txt" "$work/moetrain-logits.safetensors" \
  || fail "e2e_dump_logits failed"
expect_error "holds no LoRA adapters (finetune.mode is full)" export --checkpoint "$work/base" --out "$work/x" \
  --adapter-only

if ! "$PY" -c 'import torch, transformers, peft, safetensors' 2>/dev/null; then
  echo "SKIP: transformers and peft are not both in $PY (scripts/setup.sh installs them)"
  exit $SKIP
fi
"$PY" - "$work" "$(dirname "$0")" <<'PY' || fail "the LoRA exports do not agree"
import json, sys
import torch
import peft
from peft import PeftModel
from safetensors.torch import load_file
from transformers import NllbMoeForConditionalGeneration
work, here = sys.argv[1:3]
sys.path.insert(0, here)
from nllb_moe_check import check_sparse_layer, logits_difference

config = json.load(open(f"{work}/adapter/adapter_config.json"))
assert config["peft_type"] == "LORA" and config["r"] == 4 and config["lora_alpha"] == 8, config
adapter = load_file(f"{work}/adapter/adapter_model.safetensors")
assert "base_model.model.model.encoder.layers.1.ffn.experts.expert_3.fc2.lora_B.weight" in adapter, sorted(adapter)[:4]
assert "base_model.model.model.decoder.layers.0.cross_attention.out_proj.lora_A.weight" in adapter
assert all(k.endswith((".lora_A.weight", ".lora_B.weight")) for k in adapter)

def load(folder):
    model = NllbMoeForConditionalGeneration.from_pretrained(folder).eval()
    check_sparse_layer(model.model.encoder.layers[1].ffn, model.config.d_model)
    return model

dumped = load_file(f"{work}/moetrain-logits.safetensors")
real = dumped["tgt_mask"].bool()
merged = load(f"{work}/merged-hf")
merged_logits, batch_diff, row_diff = logits_difference(merged, dumped)
base = load(f"{work}/base-hf")
with torch.no_grad():
    base_logits = base(input_ids=dumped["src_tokens"], attention_mask=dumped["src_mask"],
                       decoder_input_ids=dumped["tgt_in"], decoder_attention_mask=dumped["tgt_mask"]).logits
adapted = PeftModel.from_pretrained(base, f"{work}/adapter").eval()
peft_logits, _, peft_row = logits_difference(adapted, dumped)
peft_vs_merged = (peft_logits - merged_logits).abs()[real].max().item()
effect = (merged_logits - base_logits).abs()[real].max().item()
print(f"merged export vs moetrain's LoRA model: max |diff| {batch_diff:.2e} (padded batch), {row_diff:.2e} (one "
      f"pair at a time); peft {peft.__version__} base + adapter vs merged export: {peft_vs_merged:.2e} (padded "
      f"batch), vs moetrain one pair at a time {peft_row:.2e}; the adapters move the logits by up to {effect:.3f}")
assert batch_diff <= 1e-4 and row_diff <= 1e-4
assert peft_vs_merged <= 1e-4 and peft_row <= 1e-4
assert effect > 1e-2, "the adapters barely changed the model: the comparison would not see a missing adapter"
PY
echo "PASS"

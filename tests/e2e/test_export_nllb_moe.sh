#!/usr/bin/env bash
# `moetrain export` of configs/nllb-moe-compatible.yaml: after a few training
# steps on Brown the export carries NLLB-MoE's names and config.json, and
# transformers' NllbMoeForConditionalGeneration loads it with no missing or
# unexpected weight and computes moetrain's logits (fp32, within 1e-4) for
# real Brown sentence pairs, as one right-padded batch with attention masks
# and one pair at a time. Checked for the preset and for a variant with
# untied embeddings, GELU, unscaled embeddings and MoE in every layer.
# --format nllb-moe for another architecture exits 2 naming the first
# mismatch; --format moetrain keeps moetrain's names. The transformers part
# is skipped (exit 77) when the package is not in .venv.
source "$(dirname "$0")/lib.sh"
need_brown
: "${MOETRAIN_DUMP_LOGITS:?}"
work="$MOETRAIN_E2E_WORK/export_nllb_moe"
rm -rf "$work"; mkdir -p "$work"
PY="$MOETRAIN_SOURCE_DIR/.venv/bin/python"

# Real sentence pairs from Brown: consecutive paragraphs of a few documents,
# of different lengths so that the batch is padded.
python3 - "$MOETRAIN_SHARED_DATA/brown.jsonl" "$work" <<'PY'
import json, sys
docs = [json.loads(line) for _, line in zip(range(40), open(sys.argv[1]))]
sentences = [p.strip() for d in docs for p in d["text"].split("\n\n") if 3 <= len(p.split()) <= 40]
picked = sentences[0:12:2], sentences[1:12:2]
open(f"{sys.argv[2]}/sources.txt", "w").write("\n".join(picked[0]) + "\n")
open(f"{sys.argv[2]}/targets.txt", "w").write("\n".join(picked[1]) + "\n")
PY

# variant NAME [--set ...]: trains the preset 6 steps into $work/NAME/run,
# exports it (auto format) to $work/NAME/hf and writes moetrain's logits for
# the pairs to $work/NAME/moetrain-logits.safetensors.
variant() {
  local dir="$work/$1"; shift
  mkdir -p "$dir"
  "$MOETRAIN_BIN" train --config "$MOETRAIN_SOURCE_DIR/configs/nllb-moe-compatible.yaml" \
    --set data.train="$BROWN_DATA" --set data.valid="$BROWN_DATA" --output-dir "$dir/run" --max-steps 6 \
    --set train.global_batch=8 --set train.micro_batch=8 --set train.eval_every=0 "$@" > "$dir/train.log" \
    || fail "training failed: $(tail -3 "$dir/train.log")"
  "$MOETRAIN_BIN" export --checkpoint "$dir/run" --out "$dir/hf" > "$dir/export.log" \
    || fail "export failed: $(cat "$dir/export.log")"
  cat "$dir/export.log"
  grep -q "with nllb-moe names" "$dir/export.log" || fail "auto did not pick the nllb-moe format"
  "$MOETRAIN_DUMP_LOGITS" "$dir/run" "$work/sources.txt" "$work/targets.txt" "$dir/moetrain-logits.safetensors" \
    || fail "e2e_dump_logits failed"
}
variant preset
variant untied --set model.tie_embeddings=false --set model.activation=gelu --set model.scale_embeddings=false \
  --set model.moe.every=1
ckpt="$work/preset/run/checkpoints/step-000006"

"$MOETRAIN_BIN" export --checkpoint "$ckpt" --out "$work/native" --format moetrain > "$work/export-native.log" \
  || fail "--format moetrain failed: $(cat "$work/export-native.log")"
grep -q "with moetrain names" "$work/export-native.log" || fail "--format moetrain did not keep moetrain's names"

# Not NLLB-MoE's architecture: auto says why, nllb-moe refuses with one line.
train_tiny --output-dir "$work/tiny" --max-steps 1 --set train.global_batch=4 --set train.micro_batch=4 \
  --set train.eval_every=0 > "$work/tiny.log"
"$MOETRAIN_BIN" export --checkpoint "$work/tiny" --out "$work/tiny-out" > "$work/tiny-export.log"
grep -q "not in the nllb-moe format: model.position is sinusoidal, NLLB-MoE needs sinusoidal_fairseq" \
  "$work/tiny-export.log" || fail "auto export of tiny does not say why: $(cat "$work/tiny-export.log")"
expect_error "model.position is sinusoidal, NLLB-MoE needs sinusoidal_fairseq" \
  export --checkpoint "$work/tiny" --out "$work/x" --format nllb-moe
expect_error "'hf' is not one of: auto, moetrain, nllb-moe" export --checkpoint "$ckpt" --out "$work/x" --format hf

if ! "$PY" -c 'import torch, transformers, safetensors' 2>/dev/null; then
  echo "SKIP: transformers (with torch and safetensors) is not in $PY (scripts/setup.sh installs it)"
  exit $SKIP
fi
"$PY" - "$work" "$(dirname "$0")" <<'PY' || fail "transformers does not load an export or computes other logits"
import json, sys
import torch
import transformers
from safetensors.torch import load_file
from transformers import NllbMoeForConditionalGeneration

work, here = sys.argv[1:3]
sys.path.insert(0, here)
from nllb_moe_check import check_sparse_layer, logits_difference

def check(name, tied, sparse_step, activation):
    folder = f"{work}/{name}"
    config = json.load(open(f"{folder}/hf/config.json"))
    assert config["model_type"] == "nllb-moe" and config["architectures"] == ["NllbMoeForConditionalGeneration"]
    assert (config["pad_token_id"], config["eos_token_id"], config["bos_token_id"],
            config["decoder_start_token_id"]) == (0, 1, 3, 3), config
    assert (config["encoder_sparse_step"], config["decoder_sparse_step"], config["num_experts"],
            config["activation_function"], config["tie_word_embeddings"]) == (sparse_step, sparse_step, 4,
                                                                              activation, tied), config
    weights = load_file(f"{folder}/hf/model.safetensors")
    assert "model.shared.weight" in weights and ("lm_head.weight" in weights) != tied, sorted(weights)[:5]
    assert "model.encoder.layers.1.ffn.experts.expert_3.fc1.weight" in weights, sorted(weights)[:5]

    model, info = NllbMoeForConditionalGeneration.from_pretrained(f"{folder}/hf", output_loading_info=True)
    model.eval()
    # Tied: the copies of model.shared.weight are not stored; everything else must be.
    tied_copies = {"lm_head.weight", "model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight"}
    missing = sorted(set(info["missing_keys"]) - (tied_copies if tied else set()))
    assert not missing and not info["unexpected_keys"] and not info["mismatched_keys"], info
    layers = model.model.encoder.layers
    assert [layer.is_sparse for layer in layers] == [(i + 1) % sparse_step == 0 for i in range(len(layers))]
    head_is_shared = model.lm_head.weight.data_ptr() == model.model.shared.weight.data_ptr()
    assert head_is_shared == tied, "lm_head tying differs from moetrain's"
    for key, value in model.state_dict().items():
        if key in weights:
            assert torch.equal(value, weights[key]), f"{key} was not loaded as written"
    check_sparse_layer(layers[1].ffn, config["d_model"])

    t = load_file(f"{folder}/moetrain-logits.safetensors")
    assert (t["src_mask"] == 0).any() and (t["tgt_mask"] == 0).any(), "the batch is not padded"
    _, batch_diff, row_diff = logits_difference(model, t)
    src, tgt_in, real = t["src_tokens"], t["tgt_in"], t["tgt_mask"].bool()
    spread = t["logits"][real].std().item()
    print(f"{name}: transformers {transformers.__version__} loaded {len(weights)} tensors; logits of "
          f"{src.shape[0]} pairs (source {tuple(src.shape)}, target {tuple(tgt_in.shape)}, std {spread:.3f}): "
          f"max |diff| padded batch {batch_diff:.2e}, one pair at a time {row_diff:.2e}")
    assert spread > 0.1, "degenerate logits"
    assert batch_diff <= 1e-4 and row_diff <= 1e-4, (name, batch_diff, row_diff)

check("preset", tied=True, sparse_step=2, activation="relu")
check("untied", tied=False, sparse_step=1, activation="gelu")
PY
echo "PASS"

#!/usr/bin/env bash
# `moetrain export` of configs/nllb-moe-compatible.yaml: after a few training
# steps on Brown the export carries NLLB-MoE's names and config.json, and
# transformers' NllbMoeForConditionalGeneration loads it with no missing or
# unexpected weight and computes moetrain's logits (fp32, within 1e-4) for
# real Brown sentence pairs, as one right-padded batch with attention masks
# and one pair at a time. --format nllb-moe for another architecture exits 2
# naming the first mismatch; --format moetrain keeps moetrain's names.
# The transformers part is skipped (exit 77) when the package is not in .venv.
source "$(dirname "$0")/lib.sh"
need_brown
: "${MOETRAIN_DUMP_LOGITS:?}"
work="$MOETRAIN_E2E_WORK/export_nllb_moe"
rm -rf "$work"; mkdir -p "$work"
PY="$MOETRAIN_SOURCE_DIR/.venv/bin/python"

"$MOETRAIN_BIN" train --config "$MOETRAIN_SOURCE_DIR/configs/nllb-moe-compatible.yaml" \
  --set data.train="$BROWN_DATA" --set data.valid="$BROWN_DATA" --output-dir "$work/run" --max-steps 6 \
  --set train.global_batch=8 --set train.micro_batch=8 --set train.eval_every=0 > "$work/train.log" \
  || fail "training failed: $(tail -3 "$work/train.log")"
ckpt="$work/run/checkpoints/step-000006"

"$MOETRAIN_BIN" export --checkpoint "$work/run" --out "$work/hf" > "$work/export.log" \
  || fail "export failed: $(cat "$work/export.log")"
cat "$work/export.log"
grep -q "with nllb-moe names" "$work/export.log" || fail "auto did not pick the nllb-moe format"
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

# Real sentence pairs from Brown: consecutive sentences of a few documents,
# of different lengths so that the batch is padded.
python3 - "$MOETRAIN_SHARED_DATA/brown.jsonl" "$work" <<'PY'
import json, sys
docs = [json.loads(line) for _, line in zip(range(40), open(sys.argv[1]))]
sentences = [p.strip() for d in docs for p in d["text"].split("\n\n") if 3 <= len(p.split()) <= 40]
picked = sentences[0:12:2], sentences[1:12:2]
open(f"{sys.argv[2]}/sources.txt", "w").write("\n".join(picked[0]) + "\n")
open(f"{sys.argv[2]}/targets.txt", "w").write("\n".join(picked[1]) + "\n")
PY
"$MOETRAIN_DUMP_LOGITS" "$ckpt" "$work/sources.txt" "$work/targets.txt" "$work/moetrain-logits.safetensors" \
  || fail "e2e_dump_logits failed"

if ! "$PY" -c 'import torch, transformers, safetensors' 2>/dev/null; then
  echo "SKIP: transformers (with torch and safetensors) is not in $PY (scripts/setup.sh installs it)"
  exit $SKIP
fi
"$PY" - "$work" <<'PY' || fail "transformers does not load the export or computes other logits"
import json, sys
import torch
import transformers
from safetensors.torch import load_file
from transformers import NllbMoeForConditionalGeneration

work = sys.argv[1]
config = json.load(open(f"{work}/hf/config.json"))
assert config["model_type"] == "nllb-moe" and config["architectures"] == ["NllbMoeForConditionalGeneration"], config
assert (config["pad_token_id"], config["eos_token_id"], config["bos_token_id"], config["decoder_start_token_id"]) \
    == (0, 1, 3, 3), config
assert config["encoder_sparse_step"] == 2 and config["num_experts"] == 4, config
weights = load_file(f"{work}/hf/model.safetensors")
assert "model.shared.weight" in weights and "lm_head.weight" not in weights, sorted(weights)[:5]
assert "model.encoder.layers.1.ffn.experts.expert_3.fc1.weight" in weights, sorted(weights)[:5]

model, info = NllbMoeForConditionalGeneration.from_pretrained(f"{work}/hf", output_loading_info=True)
model.eval()
# The tied copies of model.shared.weight are not stored; everything else must be.
tied = {"lm_head.weight", "model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight"}
missing = sorted(set(info["missing_keys"]) - tied)
assert not missing and not info["unexpected_keys"] and not info["mismatched_keys"], info
assert model.model.encoder.layers[1].is_sparse and not model.model.encoder.layers[0].is_sparse
assert torch.equal(model.lm_head.weight, weights["model.shared.weight"]), "lm_head is not tied to model.shared"
for name, value in model.state_dict().items():
    if name in weights:
        assert torch.equal(value, weights[name]), f"{name} was not loaded as written"

# transformers' sparse layer must send each token through its two chosen
# experts. Some releases (5.x) one-hot-encode the top-1 mask instead of the
# expert index, so every token goes through expert_0 and expert_1; there the
# expert loop is replaced by one that follows the router's gates (the
# router, the experts' weights and everything else stay transformers').
def reference_sparse(layer, hidden):  # hidden [N, D]: the top-2 mixture, token by token
    probs = layer.router.classifier(hidden.float()).softmax(-1)
    top, index = probs.topk(2, dim=-1)
    gates = top / top.sum(-1, keepdim=True)
    return torch.stack([sum(gates[n, c] * layer.experts[f"expert_{index[n, c]}"](hidden[n]) for c in range(2))
                        for n in range(hidden.shape[0])])

def dispatch_by_gates(self, hidden_states, router_mask, router_probs):
    out = torch.zeros_like(hidden_states)
    for e in range(self.num_experts):
        rows = router_probs[:, e].nonzero().squeeze(1)
        if rows.numel():
            y = self[f"expert_{e}"](hidden_states[rows]) * router_probs[rows, e, None]
            if self.moe_token_dropout > 0 and not self.training:
                y = y * (1 - self.moe_token_dropout)
            out.index_add_(0, rows, y.to(out.dtype))
    return out

sparse = model.model.encoder.layers[1].ffn
probe = torch.randn(1, 16, config["d_model"], generator=torch.Generator().manual_seed(0))
with torch.no_grad():
    expected = reference_sparse(sparse, probe[0])
    if (sparse(probe)[0] - expected).abs().max().item() > 1e-5:
        experts_class = type(sparse.experts)
        print(f"note: transformers {transformers.__version__}: {experts_class.__name__}.forward does not run the "
              "experts the router chose; replaced by a dispatch that follows the router's gates for this check")
        experts_class.forward = dispatch_by_gates
    assert (sparse(probe)[0] - expected).abs().max().item() <= 1e-5, "the sparse layer is not the top-2 mixture"

t = load_file(f"{work}/moetrain-logits.safetensors")
src, src_mask, tgt_in, tgt_mask = t["src_tokens"], t["src_mask"], t["tgt_in"], t["tgt_mask"]
assert (src_mask == 0).any() and (tgt_mask == 0).any(), "the batch is not padded"
with torch.no_grad():
    hf = model(input_ids=src, attention_mask=src_mask, decoder_input_ids=tgt_in,
               decoder_attention_mask=tgt_mask).logits
    real = tgt_mask.bool()
    batch_diff = (hf - t["logits"]).abs()[real].max().item()
    row_diff = 0.0
    for k in range(src.shape[0]):
        s, n = int(src_mask[k].sum()), int(tgt_mask[k].sum())
        one = model(input_ids=src[k:k + 1, :s], decoder_input_ids=tgt_in[k:k + 1, :n]).logits
        row_diff = max(row_diff, (one - t[f"row_{k}.logits"]).abs().max().item())
spread = t["logits"][real].std().item()
print(f"transformers {transformers.__version__}: {len(weights)} tensors loaded; logits of {src.shape[0]} pairs "
      f"(source {tuple(src.shape)}, target {tuple(tgt_in.shape)}, std {spread:.3f}): max |diff| padded batch "
      f"{batch_diff:.2e}, one pair at a time {row_diff:.2e}")
assert spread > 0.1, "degenerate logits"
assert batch_diff <= 1e-4 and row_diff <= 1e-4, (batch_diff, row_diff)
PY
echo "PASS"

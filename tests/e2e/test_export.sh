#!/usr/bin/env bash
# `moetrain export`: the checkpoint of a 3-step tiny run is written as one
# model.safetensors (fp32) and as bf16 shards with an index; the safetensors package reads both: metadata
# {"format": "pt"}, every parameter of the checkpoint exactly (fp32) or
# rounded to bf16 exactly (bf16), the tied embedding once, the index's
# total_size and weight_map right; config.json and tokenizer.model beside
# them. Bad arguments exit 2 with one line.
source "$(dirname "$0")/lib.sh"
need_brown
work="$MOETRAIN_E2E_WORK/export"
rm -rf "$work"; mkdir -p "$work"
PY="$MOETRAIN_SOURCE_DIR/.venv/bin/python"

train_tiny --output-dir "$work/run" --max-steps 3 --set train.global_batch=4 --set train.micro_batch=4 \
  --set train.eval_every=0 > "$work/train.log"
ckpt="$work/run/checkpoints/step-000003"

"$MOETRAIN_BIN" export --checkpoint "$work/run" --out "$work/fp32" > "$work/export.log" \
  || fail "export failed: $(cat "$work/export.log")"
cat "$work/export.log"
for f in model.safetensors config.json tokenizer.model; do
  [[ -s "$work/fp32/$f" ]] || fail "export wrote no $f"
done
"$MOETRAIN_BIN" export --checkpoint "$ckpt" --out "$work/bf16" --dtype bf16 --max-shard-bytes 2000000 \
  > "$work/export-bf16.log" || fail "bf16 export failed: $(cat "$work/export-bf16.log")"
[[ -s "$work/bf16/model.safetensors.index.json" && -s "$work/bf16/model-00001-of-00003.safetensors" ]] \
  || fail "the bf16 export is not sharded: $(ls "$work/bf16")"

# Bad input: one line, exit 2.
expect_error "not found: $work/nowhere" export --checkpoint "$work/nowhere" --out "$work/x"
expect_error "'fp8' is not one of: fp32, bf16, fp16" export --checkpoint "$ckpt" --out "$work/x" --dtype fp8
expect_error "--checkpoint DIR and --out DIR are required" export --checkpoint "$ckpt"

if ! "$PY" -c 'import safetensors, torch, h5py' 2>/dev/null; then
  echo "SKIP: the safetensors, torch and h5py Python packages are not all in $PY (scripts/setup.sh installs them)"
  exit $SKIP
fi
"$PY" - "$work" "$ckpt" "$(dirname "$0")/../multirank" <<'PY' || fail "the export does not match the checkpoint"
import json, sys
import torch
from safetensors import safe_open
from safetensors.torch import load_file
work, ckpt, multirank = sys.argv[1:4]
sys.path.insert(0, multirank)
from compare_runs import parameters
expected = parameters(ckpt)
with safe_open(f"{work}/fp32/model.safetensors", framework="pt") as f:
    assert f.metadata() == {"format": "pt"}, f.metadata()
fp32 = load_file(f"{work}/fp32/model.safetensors")
assert set(fp32) == set(expected), sorted(set(fp32) ^ set(expected))[:5]
assert "lm_head.weight" not in fp32, "the tied output projection was written again"
for name, value in expected.items():
    t = fp32[name]
    assert t.dtype == torch.float32 and tuple(t.shape) == value.shape, (name, t.dtype, t.shape)
    assert torch.equal(t, torch.from_numpy(value)), name
index = json.load(open(f"{work}/bf16/model.safetensors.index.json"))
bf16 = {}
for shard in sorted(set(index["weight_map"].values())):
    with safe_open(f"{work}/bf16/{shard}", framework="pt") as f:
        assert f.metadata() == {"format": "pt"}
    part = load_file(f"{work}/bf16/{shard}")
    assert all(index["weight_map"][k] == shard for k in part), shard
    bf16.update(part)
assert set(bf16) == set(expected)
assert index["metadata"]["total_size"] == sum(t.numel() * 2 for t in bf16.values())
for name, value in expected.items():
    assert bf16[name].dtype == torch.bfloat16
    assert torch.equal(bf16[name], torch.from_numpy(value).to(torch.bfloat16)), name
config = json.load(open(f"{work}/fp32/config.json"))
assert config["model_type"] == "moetrain" and config["vocab_size"] == 8000 and config["tie_word_embeddings"] is True
print(f"{len(expected)} tensors, {sum(v.size for v in expected.values())} parameters: fp32 exact, bf16 exact "
      f"roundings in {len(set(index['weight_map'].values()))} shards; safetensors {__import__('safetensors').__version__}")
PY
echo "PASS"

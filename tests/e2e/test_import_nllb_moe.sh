#!/usr/bin/env bash
# `moetrain import` of NLLB-MoE model folders:
#  - a moetrain export (configs/nllb-moe-compatible.yaml after 2 steps on
#    Brown), whole and in 3 shards, imports and exports back bitwise equal,
#    and `train --init-from` the import runs LoRA;
#  - a model built by transformers (NllbMoeForConditionalGeneration, random
#    weights, moetrain's special ids) imports, and moetrain's logits on real
#    Brown sentence pairs equal transformers' within 1e-4 (skipped when
#    transformers is not in .venv);
#  - an unknown model_type, a setting moetrain cannot reproduce, a missing or
#    truncated shard, a shard whose header has overlapping byte ranges or a
#    shape its bytes do not hold, and a misshapen tensor each exit 2 with one
#    line, and leave no output directory behind.
source "$(dirname "$0")/lib.sh"
need_brown
: "${MOETRAIN_DUMP_LOGITS:?}"
work="$MOETRAIN_E2E_WORK/import_nllb_moe"
rm -rf "$work"; mkdir -p "$work"
PY="$MOETRAIN_SOURCE_DIR/.venv/bin/python"
preset=(--config "$MOETRAIN_SOURCE_DIR/configs/nllb-moe-compatible.yaml" --set data.train="$BROWN_DATA"
        --set data.valid="$BROWN_DATA" --set train.global_batch=8 --set train.micro_batch=8 --set train.eval_every=0)

# same_safetensors A B: the two folders' weights are bitwise equal.
same_safetensors() {
  "$PY" - "$1" "$2" <<'PY' || fail "the weights of $1 and $2 differ"
import glob, sys
import torch
from safetensors.torch import load_file
def load(folder):
    out = {}
    for path in sorted(glob.glob(f"{folder}/*.safetensors")):
        out.update(load_file(path))
    return out
a, b = load(sys.argv[1]), load(sys.argv[2])
assert a.keys() == b.keys(), sorted(set(a) ^ set(b))[:5]
assert all(torch.equal(a[k], b[k]) for k in a)
print(f"{len(a)} tensors bitwise equal")
PY
}

"$MOETRAIN_BIN" train "${preset[@]}" --output-dir "$work/run" --max-steps 2 > "$work/train.log" || fail "train failed"
"$MOETRAIN_BIN" export --checkpoint "$work/run" --out "$work/hf" > /dev/null || fail "export failed"
"$MOETRAIN_BIN" import --from "$work/hf" --out "$work/imported" | tee "$work/import.log" || fail "import failed"
grep -q "imported $work/hf (nllb-moe): 115 tensors, 2741504 parameters" "$work/import.log" || fail "no import summary"
[[ -f "$work/imported/model.yaml" && -f "$work/imported/tokenizer.model" ]] || fail "no model.yaml or tokenizer.model"
"$MOETRAIN_BIN" checkpoint verify "$work/imported" > /dev/null || fail "the imported checkpoint does not verify"
"$MOETRAIN_BIN" export --checkpoint "$work/imported" --out "$work/hf-again" > /dev/null || fail "export of the import"
same_safetensors "$work/hf" "$work/hf-again"
expect_error "the model does not have the M2M100 architecture: model.moe.every is 2: M2M100 has no sparse" \
  export --checkpoint "$work/run" --out "$work/not-m2m100" --format m2m100

echo "== 3 shards"
"$MOETRAIN_BIN" export --checkpoint "$work/run" --out "$work/sharded" --max-shard-bytes 4000000 > /dev/null
[[ $(find "$work/sharded" -name 'model-*-of-00003.safetensors' | wc -l) -eq 3 ]] || fail "export did not write 3 shards"
"$MOETRAIN_BIN" import --from "$work/sharded" --out "$work/imported-sharded" > /dev/null || fail "sharded import failed"
"$MOETRAIN_BIN" export --checkpoint "$work/imported-sharded" --out "$work/sharded-again" > /dev/null
same_safetensors "$work/hf" "$work/sharded-again"

echo "== LoRA from the import"
"$MOETRAIN_BIN" train "${preset[@]}" --set finetune.mode=lora --output-dir "$work/lora" --max-steps 2 \
  --init-from "$work/imported" > "$work/lora.log" 2>&1 || { cat "$work/lora.log"; fail "LoRA --init-from the import"; }
grep -q "initialised weights from $work/imported" "$work/lora.log" || fail "the LoRA run did not start from the import"
expect_failure_rc=0
"$MOETRAIN_BIN" train "${preset[@]}" --output-dir "$work/imported" --max-steps 3 > /dev/null 2> "$work/resume.err" ||
  expect_failure_rc=$?
[[ $expect_failure_rc -eq 1 ]] && grep -q "holds weights alone (no optimizer state): start a run from it with --init-from" \
  "$work/resume.err" || fail "resuming an import is not refused clearly: $(cat "$work/resume.err")"

echo "== what cannot be imported"
# broken NAME EDIT: a copy of the export with EDIT (python on `folder`) applied.
broken() {
  rm -rf "${work:?}/$1"; cp -r "$work/sharded" "$work/$1"
  "$PY" -c "import json, os, sys; folder = sys.argv[1]; $2" "$work/$1"
}
edit_config() { echo "c = json.load(open(f'{folder}/config.json')); $1; json.dump(c, open(f'{folder}/config.json', 'w'))"; }
# refused NAME PATTERN: importing $work/NAME exits 2 with PATTERN and leaves nothing.
refused() {
  expect_error "$2" import --from "$work/$1" --out "$work/out-$1"
  [[ ! -e "$work/out-$1" && ! -e "$work/out-$1.partial" ]] || fail "a refused import left $work/out-$1"
}
broken t5 "$(edit_config "c['model_type'] = 't5'")"
refused t5 'config.json: model_type is "t5": moetrain imports nllb-moe and m2m_100'
broken token_dropout "$(edit_config "c['moe_token_dropout'] = 1.5")"
refused token_dropout "config.json: moe_token_dropout is 1.5: must be in \[0, 1)"
broken fairseq_ids "$(edit_config "c['pad_token_id'] = 1")"
refused fairseq_ids "config.json: pad_token_id is 1 but the tokenizer's pad is 0"
broken no_shard "os.remove(f'{folder}/model-00002-of-00003.safetensors')"
refused no_shard "model.safetensors.index.json: shard model-00002-of-00003.safetensors (holding .*) is missing"
broken truncated "p = f'{folder}/model-00003-of-00003.safetensors'; os.truncate(p, os.path.getsize(p) - 100)"
refused truncated "model-00003-of-00003.safetensors"
# edit_header CODE: CODE edits `h`, the header of the third shard (tensors `names`).
edit_header() {
  echo "import struct; p = f'{folder}/model-00003-of-00003.safetensors'; b = open(p, 'rb').read(); \
n = struct.unpack('<Q', b[:8])[0]; h = json.loads(b[8:8 + n]); names = [k for k in h if k != '__metadata__']; $1; \
t = json.dumps(h).encode(); open(p, 'wb').write(struct.pack('<Q', len(t)) + t + b[8 + n:])"
}
broken overlapping "$(edit_header "a, c = h[names[0]], h[names[1]]; size = c['data_offsets'][1] - c['data_offsets'][0]; \
c['data_offsets'] = [a['data_offsets'][0], a['data_offsets'][0] + size]")"
refused overlapping "model-00003-of-00003.safetensors: .* overlap (bytes [0-9]*\.\.[0-9]* and [0-9]*\.\.[0-9]* of the data)"
broken lying "$(edit_header "h[names[0]]['shape'][0] += 1")"
refused lying "model-00003-of-00003.safetensors: .*: its byte range does not fit its dtype and shape or the file"
broken misshapen "$(edit_config "c['d_model'] = 64")"
refused misshapen "misshapen: model.shared.weight has shape \[8000, 128\] but the model needs \[8000, 64\]"

if ! "$PY" -c 'import torch, transformers, safetensors' 2>/dev/null; then
  echo "SKIP: transformers (with torch and safetensors) is not in $PY (scripts/setup.sh installs it)"
  exit $SKIP
fi
echo "== a model built by transformers"
python3 - "$MOETRAIN_SHARED_DATA/brown.jsonl" "$work" <<'PY'
import json, sys
docs = [json.loads(line) for _, line in zip(range(40), open(sys.argv[1]))]
sentences = [p.strip() for d in docs for p in d["text"].split("\n\n") if 3 <= len(p.split()) <= 40]
open(f"{sys.argv[2]}/sources.txt", "w").write("\n".join(sentences[0:12:2]) + "\n")
open(f"{sys.argv[2]}/targets.txt", "w").write("\n".join(sentences[1:12:2]) + "\n")
PY
"$PY" - "$work/transformers" "$BROWN_DATA/tokenizer.model" <<'PY' || fail "cannot build the transformers model"
import shutil, sys
import torch
from transformers import NllbMoeConfig, NllbMoeForConditionalGeneration
folder, tokenizer = sys.argv[1:3]
config = NllbMoeConfig(vocab_size=8000, d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                       decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128, num_experts=4,
                       encoder_sparse_step=2, decoder_sparse_step=2, max_position_embeddings=256, expert_capacity=256,
                       moe_token_dropout=0.0, activation_function="relu", scale_embedding=True, init_std=0.1,
                       pad_token_id=0, eos_token_id=1, bos_token_id=3, decoder_start_token_id=3)
torch.manual_seed(0)
NllbMoeForConditionalGeneration(config).save_pretrained(folder)
shutil.copy(tokenizer, f"{folder}/tokenizer.model")
PY
"$MOETRAIN_BIN" import --from "$work/transformers" --out "$work/from-transformers" || fail "import of transformers' model"
"$MOETRAIN_DUMP_LOGITS" "$work/from-transformers" "$work/sources.txt" "$work/targets.txt" "$work/logits.safetensors" \
  || fail "e2e_dump_logits failed"
"$PY" - "$work" "$(dirname "$0")" <<'PY' || fail "moetrain's logits differ from transformers'"
import sys
from safetensors.torch import load_file
work, here = sys.argv[1:3]
sys.path.insert(0, here)
from nllb_moe_check import check_logits, load_checked
check_logits(load_checked(f"{work}/transformers"), load_file(f"{work}/logits.safetensors"))
PY
echo "PASS"

#!/usr/bin/env bash
# `moetrain import` of an NLLB-MoE model folder laid out as the published ones
# are: fairseq's special ids (<s> 0, <pad> 1, </s> 2, <unk> 3, decoding
# starts with </s>), NLLB's SentencePiece model with the 202 language codes of
# NllbTokenizer, moe_token_dropout 0.2. A small model is built with
# transformers (random weights) around a SentencePiece model trained on Brown
# and the Chinese fortunes; then
#  - on 2,000 lines of those corpora (1,000 each, English and Chinese codes)
#    moetrain's ids equal NllbTokenizer's, language code and </s> included,
#    and decode to the same text;
#  - `moetrain tokenize --src-lang --tgt-lang` writes the pairs NllbTokenizer
#    writes (source, then the target as labels), and so does
#    `--src-lang-field --tgt-lang-field` on records in both directions;
#  - moetrain's logits on a padded batch of real sentence pairs with language
#    codes equal transformers' within 1e-4 (the decoder input is transformers'
#    too: </s>, the target code, the target);
#  - `moetrain generate --src-lang --tgt-lang`, greedy and beam-4, gives the
#    text transformers' generate gives with the target code forced;
#  - a tokenizer that cannot be read the NLLB way exits 2 with one line.
# Skipped when transformers, sentencepiece or protobuf is not in .venv.
source "$(dirname "$0")/lib.sh"
need_brown
: "${MOETRAIN_DUMP_LOGITS:?}" "${MOETRAIN_TOKENIZER_IDS:?}"
PY="$MOETRAIN_SOURCE_DIR/.venv/bin/python"
if ! "$PY" -c 'import torch, transformers, sentencepiece, google.protobuf, safetensors, h5py' 2>/dev/null; then
  echo "SKIP: transformers, sentencepiece, protobuf, safetensors or h5py is not in $PY (scripts/setup.sh installs them)"
  exit $SKIP
fi
work="$MOETRAIN_E2E_WORK/import_nllb_tokenizer"
rm -rf "$work"; mkdir -p "$work"

echo "== an NLLB-MoE folder built by transformers"
folder_tool=("$PY" "$(dirname "$0")/nllb_folder.py")
"${folder_tool[@]}" build "$MOETRAIN_SHARED_DATA" "$work" nllb-moe || fail "cannot build the model folder"
"$MOETRAIN_BIN" import --from "$work/hf" --out "$work/imported" | tee "$work/import.log" || fail "import failed"
grep -q "its tokenizer has 202 language codes" "$work/import.log" || fail "import did not report the language codes"
grep -q "^  pad_id: 1$" "$work/imported/model.yaml" || fail "model.yaml does not carry pad_id 1"
grep -q "^    token_dropout: 0.2" "$work/imported/model.yaml" || fail "model.yaml does not carry moe.token_dropout 0.2"

echo "== ids and decoding: 2,000 lines"
"$MOETRAIN_TOKENIZER_IDS" "$work/imported/tokenizer.model" "$work/english.txt" "$work/english.jsonl" eng_Latn
"$MOETRAIN_TOKENIZER_IDS" "$work/imported/tokenizer.model" "$work/chinese.txt" "$work/chinese.jsonl" zho_Hans
"$PY" - "$work" <<'PY' || fail "moetrain's ids or decoding differ from NllbTokenizer's"
import json, sys
from transformers import AutoTokenizer
work = sys.argv[1]
tokenizer = AutoTokenizer.from_pretrained(f"{work}/hf")
for name, lang in (("english", "eng_Latn"), ("chinese", "zho_Hans")):
    tokenizer.src_lang = lang
    texts = open(f"{work}/{name}.txt").read().split("\n")[:-1]
    ours = [json.loads(line) for line in open(f"{work}/{name}.jsonl")]
    assert len(ours) == len(texts) == 1000, (len(ours), len(texts))
    unknown = 0
    for text, mine in zip(texts, ours):
        ids = tokenizer(text)["input_ids"]
        assert mine["ids"] == ids, f"{text!r}: moetrain {mine['ids']} vs NllbTokenizer {ids}"
        decoded = tokenizer.decode(ids, skip_special_tokens=True)
        assert mine["text"] == decoded, f"{text!r}: moetrain decodes to {mine['text']!r}, NllbTokenizer to {decoded!r}"
        unknown += ids.count(tokenizer.unk_token_id)
    print(f"{name}: 1000 lines, {sum(len(m['ids']) for m in ours)} ids equal NllbTokenizer's "
          f"({unknown} <unk>), decoded text equal")
PY

echo "== tokenize --src-lang --tgt-lang"
"${folder_tool[@]}" pairs "$work"
"$MOETRAIN_BIN" tokenize --input "$work/pairs.jsonl" --output "$work/pairs" --source-field en --target-field fr \
  --tokenizer "$work/imported/tokenizer.model" --src-lang eng_Latn --tgt-lang fra_Latn --valid-fraction 0.1 \
  > /dev/null || fail "tokenize"
"$PY" - "$work" <<'PY' || fail "tokenize's pairs differ from NllbTokenizer's"
import glob, json, sys
import h5py
from transformers import AutoTokenizer
work = sys.argv[1]
tokenizer = AutoTokenizer.from_pretrained(f"{work}/hf", src_lang="eng_Latn", tgt_lang="fra_Latn")
pairs = [json.loads(line) for line in open(f"{work}/pairs.jsonl")]
stored = []
for path in sorted(glob.glob(f"{work}/pairs/*-*.h5")):  # train and valid splits
    with h5py.File(path) as f:
        src, src_off = f["source_tokens"][:], f["source_offsets"][:]
        tgt, tgt_off = f["target_tokens"][:], f["target_offsets"][:]
        for i in range(len(src_off) - 1):
            stored.append((list(src[src_off[i]:src_off[i + 1]]), list(tgt[tgt_off[i]:tgt_off[i + 1]])))
expected = []
for pair in pairs:
    encoded = tokenizer(pair["en"], text_target=pair["fr"])
    # moetrain stores the tokens; the objective appends </s>.
    expected.append((encoded["input_ids"][:-1], encoded["labels"][:-1]))
stored = [([int(t) for t in s], [int(t) for t in t_]) for s, t_ in stored]
assert sorted(stored) == sorted(expected), (len(stored), len(expected))
print(f"{len(pairs)} pairs as NllbTokenizer writes them (language codes first)")
PY
echo "== tokenize --src-lang-field --tgt-lang-field: both directions, a record with an unknown code"
"$PY" - "$work" <<'PY'
import json, sys
work = sys.argv[1]
with open(f"{work}/mixed.jsonl", "w") as out:
    for i, line in enumerate(open(f"{work}/pairs.jsonl")):
        p = json.loads(line)
        if i % 2 == 0:
            r = {"src": p["en"], "tgt": p["fr"], "sl": "eng_Latn", "tl": "fra_Latn"}
        else:
            r = {"src": p["fr"], "tgt": p["en"], "sl": "fra_Latn", "tl": "eng_Latn"}
        out.write(json.dumps(r) + "\n")
    out.write(json.dumps({"src": "a", "tgt": "b", "sl": "eng_Latn", "tl": "klingon"}) + "\n")
PY
"$MOETRAIN_BIN" tokenize --input "$work/mixed.jsonl" --output "$work/mixed" --source-field src --target-field tgt \
  --tokenizer "$work/imported/tokenizer.model" --src-lang-field sl --tgt-lang-field tl > /dev/null || fail "tokenize"
"$PY" - "$work" <<'PY' || fail "tokenize's per-record languages differ from NllbTokenizer's"
import glob, json, sys
import h5py
from transformers import AutoTokenizer
work = sys.argv[1]
tokenizer = AutoTokenizer.from_pretrained(f"{work}/hf")
records = [json.loads(line) for line in open(f"{work}/mixed.jsonl")][:-1]
stored = []
for path in sorted(glob.glob(f"{work}/mixed/*-*.h5")):
    with h5py.File(path) as f:
        src, src_off = f["source_tokens"][:], f["source_offsets"][:]
        tgt, tgt_off = f["target_tokens"][:], f["target_offsets"][:]
        for i in range(len(src_off) - 1):
            stored.append(([int(t) for t in src[src_off[i]:src_off[i + 1]]],
                           [int(t) for t in tgt[tgt_off[i]:tgt_off[i + 1]]]))
expected = []
for r in records:
    tokenizer.src_lang, tokenizer.tgt_lang = r["sl"], r["tl"]
    encoded = tokenizer(r["src"], text_target=r["tgt"])
    expected.append((encoded["input_ids"][:-1], encoded["labels"][:-1]))
assert stored == expected, (len(stored), len(expected))
manifest = json.load(open(f"{work}/mixed/dataset.json"))
assert manifest["skipped_bad"] == 1, manifest["skipped_bad"]
assert manifest["languages"] == {"source": {"field": "sl"}, "target": {"field": "tl"}}, manifest["languages"]
print(f"{len(records)} pairs in two directions as NllbTokenizer writes them; the record naming 'klingon' skipped")
PY
rc=0  # under --strict the bad record is fatal: exit 1 (bad data, not a bad command), one line
"$MOETRAIN_BIN" tokenize --input "$work/mixed.jsonl" --output "$work/mixed-strict" --source-field src \
  --target-field tgt --tokenizer "$work/imported/tokenizer.model" --src-lang-field sl --tgt-lang-field tl --strict \
  > /dev/null 2> "$work/err" || rc=$?
echo "[$rc] $(cat "$work/err")"
[[ $rc -eq 1 && $(wc -l < "$work/err") -eq 1 ]] || fail "--strict: exit $rc, wanted 1 and one line"
grep -q "mixed.jsonl:101: field 'tl': 'klingon' is not a language code of the tokenizer" "$work/err" ||
  fail "--strict does not name the record and its code"
expect_error "tokenize: give --src-lang or --src-lang-field, not both" tokenize --input "$work/mixed.jsonl" \
  --output "$work/mixed-bad" --source-field src --target-field tgt --tokenizer "$work/imported/tokenizer.model" \
  --src-lang eng_Latn --src-lang-field sl --tgt-lang-field tl
expect_error "tokenize: language code 'xxx_Latn' is not in the tokenizer (its 202 codes: ace_Arab, ace_Latn, \
acm_Arab, acq_Arab, aeb_Arab, ...) (--tokenizer $work/imported/tokenizer.model)" \
  tokenize --input "$work/pairs.jsonl" --output "$work/pairs-bad" --source-field en --target-field fr \
  --tokenizer "$work/imported/tokenizer.model" --src-lang eng_Latn --tgt-lang xxx_Latn
expect_error "tokenize: languages (--src-lang, --src-lang-field) need --tokenizer" tokenize --input "$work/pairs.jsonl" \
  --output "$work/pairs-bad" --source-field en --target-field fr --src-lang eng_Latn --tgt-lang fra_Latn
expect_error "generate: language code 'xxx_Latn' is not in the tokenizer (its 202 codes: ace_Arab, ace_Latn, \
acm_Arab, acq_Arab, aeb_Arab, ...)" generate --checkpoint "$work/imported" \
  --input "$work/english.txt" --tgt-lang xxx_Latn

echo "== logits"
head -n 12 "$work/english.txt" | awk 'NR % 2 == 1' > "$work/sources.txt"
head -n 12 "$work/english.txt" | awk 'NR % 2 == 0' > "$work/targets.txt"
"$MOETRAIN_DUMP_LOGITS" "$work/imported" "$work/sources.txt" "$work/targets.txt" "$work/logits.safetensors" \
  eng_Latn fra_Latn || fail "e2e_dump_logits failed"
"$PY" - "$work" "$(dirname "$0")" <<'PY' || fail "moetrain's logits differ from transformers'"
import sys
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer
work, here = sys.argv[1:3]
sys.path.insert(0, here)
from nllb_moe_check import check_logits, load_checked
model = load_checked(f"{work}/hf")
dumped = load_file(f"{work}/logits.safetensors")
# The batch moetrain ran is the one transformers' tokenizer makes.
tokenizer = AutoTokenizer.from_pretrained(f"{work}/hf", src_lang="eng_Latn", tgt_lang="fra_Latn")
sources = open(f"{work}/sources.txt").read().split("\n")[:-1]
targets = open(f"{work}/targets.txt").read().split("\n")[:-1]
batch = tokenizer(sources, text_target=targets, padding=True, return_tensors="pt")
assert torch.equal(batch["input_ids"], dumped["src_tokens"]), "source ids differ"
from transformers.models.nllb_moe.modeling_nllb_moe import shift_tokens_right
decoder_input = shift_tokens_right(batch["labels"], 1, 2)  # pad 1, decoder start 2
mask = dumped["tgt_mask"].bool()
assert torch.equal(decoder_input[mask], dumped["tgt_in"][mask]), "decoder inputs differ"
check_logits(model, dumped)
PY

echo "== generate --src-lang --tgt-lang"
"$MOETRAIN_BIN" generate --checkpoint "$work/imported" --input "$work/sources.txt" --src-lang eng_Latn \
  --tgt-lang fra_Latn --max-length 12 --output "$work/greedy.txt" || fail "generate (greedy) failed"
"$MOETRAIN_BIN" generate --checkpoint "$work/imported" --input "$work/sources.txt" --src-lang eng_Latn \
  --tgt-lang fra_Latn --max-length 12 --method beam --beam-size 4 --output "$work/beam.txt" || fail "generate (beam)"
"$PY" - "$work" "$(dirname "$0")" <<'PY' || fail "moetrain's generation differs from transformers'"
import sys
work, here = sys.argv[1:3]
sys.path.insert(0, here)
from nllb_folder import check_generation
from nllb_moe_check import load_checked
sources = open(f"{work}/sources.txt").read().split("\n")[:-1]
outputs = {m: open(f"{work}/{m}.txt").read().split("\n")[:-1] for m in ("greedy", "beam")}
check_generation(load_checked(f"{work}/hf"), f"{work}/hf", sources, outputs, max_new_tokens=12)
PY

echo "== LoRA on the tokenized pairs, exported merged"
"${folder_tool[@]}" lora-config "$MOETRAIN_SOURCE_DIR/configs/nllb-moe-compatible.yaml" "$work"
"$MOETRAIN_BIN" train --config "$work/lora.yaml" --init-from "$work/imported" --output-dir "$work/lora" \
  > "$work/lora.log" 2>&1 || { cat "$work/lora.log"; fail "LoRA from the NLLB import failed"; }
"$MOETRAIN_BIN" export --checkpoint "$work/lora" --out "$work/lora-hf" --format nllb-moe > /dev/null \
  || fail "export of the LoRA run"
"$MOETRAIN_DUMP_LOGITS" "$work/lora" "$work/sources.txt" "$work/targets.txt" "$work/lora-logits.safetensors" \
  eng_Latn fra_Latn > /dev/null || fail "e2e_dump_logits of the LoRA run failed"
"$PY" - "$work" "$(dirname "$0")" <<'PY' || fail "transformers' logits of the merged export differ from moetrain's"
import json, sys
from safetensors.torch import load_file
from transformers import NllbMoeForConditionalGeneration
work, here = sys.argv[1:3]
sys.path.insert(0, here)
from nllb_moe_check import check_logits, load_checked
config = json.load(open(f"{work}/lora-hf/config.json"))
assert (config["pad_token_id"], config["eos_token_id"], config["bos_token_id"], config["decoder_start_token_id"]) == \
    (1, 2, 0, 2), config
assert config["moe_token_dropout"] == 0.2, config["moe_token_dropout"]
_, info = NllbMoeForConditionalGeneration.from_pretrained(f"{work}/lora-hf", output_loading_info=True)
assert not info["missing_keys"] and not info["unexpected_keys"], info
before, after = load_file(f"{work}/logits.safetensors"), load_file(f"{work}/lora-logits.safetensors")
moved = (before["logits"] - after["logits"]).abs().max().item()
print(f"after 3 LoRA steps the logits moved by up to {moved:.3f}; transformers on the merged export:")
assert moved > 1e-3
check_logits(load_checked(f"{work}/lora-hf"), after)
PY

echo "== tokenizers that cannot be read the NLLB way"
broken() {
  rm -rf "${work:?}/$1"; cp -r "$work/hf" "$work/$1"
  "$PY" -c "import json, os, sys; folder = sys.argv[1]; $2" "$work/$1"
}
refused() {
  expect_error "$2" import --from "$work/$1" --out "$work/out-$1"
  [[ ! -e "$work/out-$1" && ! -e "$work/out-$1.partial" ]] || fail "a refused import left $work/out-$1"
}
broken legacy "c = json.load(open(f'{folder}/tokenizer_config.json')); c['legacy_behaviour'] = True; \
json.dump(c, open(f'{folder}/tokenizer_config.json', 'w'))"
refused legacy "tokenizer_config.json: legacy_behaviour is true"
broken no_json "os.remove(f'{folder}/tokenizer.json')"
refused no_json "sentencepiece.bpe.model without tokenizer.json"
# The published M2M100 models' tokenizer: vocab.json and __en__-style codes, no tokenizer.json.
broken m2m100_tokenizer "os.remove(f'{folder}/tokenizer.json'); c = json.load(open(f'{folder}/tokenizer_config.json')); \
c['tokenizer_class'] = 'M2M100Tokenizer'; json.dump(c, open(f'{folder}/tokenizer_config.json', 'w'))"
refused m2m100_tokenizer "tokenizer_config.json: tokenizer_class is \"M2M100Tokenizer\": moetrain imports \
NllbTokenizer's layout"
broken gap "t = json.load(open(f'{folder}/tokenizer.json')); t['added_tokens'][-1]['id'] += 5; \
json.dump(t, open(f'{folder}/tokenizer.json', 'w'))"
refused gap "tokenizer.json: added token 'zul_Latn' has id"
broken moetrain_ids "c = json.load(open(f'{folder}/config.json')); c['pad_token_id'] = 0; \
json.dump(c, open(f'{folder}/config.json', 'w'))"
refused moetrain_ids "config.json: pad_token_id is 0 but the tokenizer's pad is 1"
echo "PASS"

"""Hugging Face model folders laid out as the published NLLB models are, and
what the e2e tests of `moetrain import` do with them:

    nllb_folder.py build DATA WORK ARCH
    nllb_folder.py pairs WORK
    nllb_folder.py lora-config PRESET WORK

build: DATA is the shared corpora folder, WORK the test's folder, ARCH nllb-moe
(NllbMoeForConditionalGeneration, moe_token_dropout 0.2) or m2m100
(M2M100ForConditionalGeneration, the dense NLLB-200 architecture). It writes
  WORK/english.txt, WORK/chinese.txt  the first 1,000 lines of Brown and of
                                      the Chinese fortunes, trimmed;
  WORK/hf/                            the model (small, random weights, seed 0)
                                      with fairseq's special ids, NLLB's
                                      sentencepiece.bpe.model (trained on
                                      those lines) and NllbTokenizer's files
                                      with its 202 language codes.
pairs: WORK/pairs.jsonl, 100 English sentence pairs ("en", "fr") from
WORK/english.txt.
lora-config: WORK/lora.yaml, the training preset PRESET with the model: section
of the import in WORK/imported, 3 LoRA steps on the pairs tokenized into
WORK/pairs.
Also check_generation(), which the tests import to compare outputs."""
import json
import os
import shutil
import sys


def lines(data, name, n):
    """The first n non-empty lines of a corpus, whitespace-trimmed."""
    out = []
    for record in open(f"{data}/{name}"):
        out += [line.strip() for line in json.loads(record)["text"].split("\n") if line.strip()]
        if len(out) >= n:
            return out[:n]
    return out


def build(data, work, arch):
    import sentencepiece as spm
    import torch
    import transformers
    from transformers.models.nllb.tokenization_nllb import FAIRSEQ_LANGUAGE_CODES
    english, chinese = lines(data, "brown.jsonl", 1000), lines(data, "zh_fortunes.jsonl", 1000)
    open(f"{work}/english.txt", "w").write("\n".join(english) + "\n")
    open(f"{work}/chinese.txt", "w").write("\n".join(chinese) + "\n")
    # NLLB's SentencePiece model: <unk> 0, <s> 1, </s> 2, no byte fallback.
    spm.SentencePieceTrainer.train(sentence_iterator=iter(english + chinese), model_prefix=f"{work}/spm",
                                   vocab_size=3000, model_type="bpe", character_coverage=0.995, minloglevel=2)
    hub = f"{work}/hub-tokenizer"
    os.makedirs(hub)
    shutil.copy(f"{work}/spm.model", f"{hub}/sentencepiece.bpe.model")
    json.dump({"tokenizer_class": "NllbTokenizer", "src_lang": "eng_Latn", "tgt_lang": "fra_Latn",
               "additional_special_tokens": FAIRSEQ_LANGUAGE_CODES}, open(f"{hub}/tokenizer_config.json", "w"))
    tokenizer = transformers.AutoTokenizer.from_pretrained(hub)
    folder = f"{work}/hf"
    tokenizer.save_pretrained(folder)
    shutil.copy(f"{work}/spm.model", f"{folder}/sentencepiece.bpe.model")
    shared = dict(vocab_size=len(tokenizer) + 2, d_model=64, encoder_layers=2, decoder_layers=2,
                  encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128,
                  max_position_embeddings=256, activation_function="relu", scale_embedding=True, init_std=0.1,
                  pad_token_id=1, eos_token_id=2, bos_token_id=0, decoder_start_token_id=2)
    if arch == "nllb-moe":
        config = transformers.NllbMoeConfig(num_experts=4, encoder_sparse_step=2, decoder_sparse_step=2,
                                            expert_capacity=256, moe_token_dropout=0.2, **shared)
        model_class = transformers.NllbMoeForConditionalGeneration
    else:
        config = transformers.M2M100Config(**shared)
        model_class = transformers.M2M100ForConditionalGeneration
    torch.manual_seed(0)
    model_class(config).save_pretrained(folder)
    print(f"{arch}: tokenizer {len(tokenizer)} ids; model vocab_size {config.vocab_size}")


def check_generation(model, folder, sources, outputs, max_new_tokens):
    """Asserts moetrain's outputs ({method: lines}, greedy and beam) equal
    transformers' generate with the target code fra_Latn forced, sources in
    eng_Latn, decoded without special tokens."""
    import torch
    import transformers
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, src_lang="eng_Latn")
    fra = tokenizer.convert_tokens_to_ids("fra_Latn")
    for method, beams in (("greedy", 1), ("beam", 4)):
        for source, mine in zip(sources, outputs[method], strict=True):
            batch = tokenizer(source, return_tensors="pt")
            with torch.no_grad():
                out = model.generate(**batch, forced_bos_token_id=fra, max_new_tokens=max_new_tokens,
                                     num_beams=beams, do_sample=False)
            tokens = out[0].tolist()
            assert tokens[:2] == [2, fra], tokens
            theirs = tokenizer.decode(tokens, skip_special_tokens=True)
            assert mine == theirs, f"{method}, {source!r}: moetrain {mine!r}, transformers {theirs!r}"
        print(f"{method} (beams {beams}), target language forced: {len(sources)} outputs equal transformers'")


def pairs(work):
    english = open(f"{work}/english.txt").read().split("\n")[:200]
    with open(f"{work}/pairs.jsonl", "w") as out:
        for source, target in zip(english[0::2], english[1::2]):
            out.write(json.dumps({"en": source, "fr": target}) + "\n")


def lora_config(preset, work):
    import yaml
    config = yaml.safe_load(open(preset))
    config["model"] = yaml.safe_load(open(f"{work}/imported/model.yaml"))["model"]
    config["data"].update(train=f"{work}/pairs", valid=f"{work}/pairs", objective="seq2seq", src_len=64,
                          tgt_len=64, tokenizer=f"{work}/imported/tokenizer.model")
    config["train"].update(global_batch=8, micro_batch=8, eval_every=0, max_steps=3)
    config["finetune"] = {"mode": "lora"}
    config["lora"] = {"r": 4, "alpha": 8, "dropout": 0.0, "targets": ["all-linear"]}
    config["optim"].update(lr=1e-2, warmup_steps=0)
    yaml.safe_dump(config, open(f"{work}/lora.yaml", "w"))


if __name__ == "__main__":
    {"build": build, "pairs": pairs, "lora-config": lora_config}[sys.argv[1]](*sys.argv[2:])

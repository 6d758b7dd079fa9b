#!/usr/bin/env python3
"""Grapheme-to-phoneme data from CMUdict, split by word.

Reads CMUdict (`WORD  PH1 PH2 ...`, alternates as `WORD(1)`), and writes JSONL
pairs {"source": "C A T", "target": "K AE1 T"} (letters spaced so the
tokenizer sees one letter per piece; phonemes with their stress digits):

  train.jsonl, valid.jsonl, test.jsonl    general words, ~90/5/5 by a hash of
                                          the word, so every pronunciation of a
                                          word is on one side and test words
                                          are unseen in training
  names-adapt.jsonl, names-test.jsonl     words on the first-name lists, held
                                          out of the splits above, halved by
                                          the same hash (adaptation / test)
  test.src, names-test.src                one test word per line, spelled out
  test.ref1 .. test.refN (and names-...)  its pronunciations, one file per
                                          alternative (an empty line where a
                                          word has fewer), for `moetrain eval
                                          --references test.ref1 ...`: a
                                          prediction is right if it matches any

usage: prepare_cmudict.py CMUDICT_DIR NAME_LISTS_DIR OUT_DIR
"""
import hashlib
import json
import os
import re
import sys


def bucket(word):
    """0..99, the same on every machine."""
    return int(hashlib.sha1(word.encode()).hexdigest()[:8], 16) % 100


def main():
    cmudict_dir, names_dir, out = sys.argv[1:4]
    prons = {}
    with open(os.path.join(cmudict_dir, "dict.txt"), encoding="latin-1") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith(";;;"):
                continue
            head, _, phones = line.partition(" ")
            word = re.sub(r"\(\d+\)$", "", head)
            # Letters and the apostrophe only (drops punctuation entries).
            if not re.fullmatch(r"[A-Z][A-Z']*", word):
                continue
            prons.setdefault(word, []).append(" ".join(phones.split()))
    names = set()
    for name in ("female_first_names.txt", "male_first_names.txt"):
        with open(os.path.join(names_dir, name), encoding="utf-8") as f:
            names.update(w.strip().upper() for w in f if w.strip())

    os.makedirs(out, exist_ok=True)
    splits = {k: [] for k in ("train", "valid", "test", "names-adapt", "names-test")}
    for word in sorted(prons):
        b = bucket(word)
        if word in names:
            split = "names-adapt" if b < 50 else "names-test"
        else:
            split = "train" if b < 90 else "valid" if b < 95 else "test"
        splits[split].append(word)
    for split, words in splits.items():
        with open(os.path.join(out, f"{split}.jsonl"), "w") as f:
            for word in words:
                # Training splits: every pronunciation is a pair; test splits:
                # one line per word (its first pronunciation as the target).
                targets = prons[word] if split in ("train", "valid", "names-adapt") else prons[word][:1]
                for target in targets:
                    f.write(json.dumps({"source": " ".join(word), "target": target}) + "\n")
        if split.endswith("test"):
            with open(os.path.join(out, f"{split}.src"), "w") as f:
                f.writelines(" ".join(w) + "\n" for w in words)
            most = max(len(prons[w]) for w in words)
            for k in range(most):
                with open(os.path.join(out, f"{split}.ref{k + 1}"), "w") as f:
                    f.writelines((prons[w][k] if k < len(prons[w]) else "") + "\n" for w in words)
    for split, words in splits.items():
        print(f"{split}: {len(words)} words")


if __name__ == "__main__":
    main()

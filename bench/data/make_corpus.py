"""Writes a JSONL corpus of about TARGET_MB megabytes of real text for the
data benchmark: the shared corpora (Brown, the SpamAssassin mail bodies, the
Chinese fortunes) repeated, each copy varied so that the tokenizer and any
compression see text that does not simply repeat: every copy shuffles the
sentences of each document with its own seed and drops a few of them.

usage: make_corpus.py OUTPUT.jsonl TARGET_MB SOURCE.jsonl...
"""
import json
import random
import re
import sys


def documents(paths):
    docs = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for line in f:
                text = json.loads(line).get("text", "")
                if text.strip():
                    docs.append(text)
    return docs


def varied(text, rng):
    sentences = re.split(r"(?<=[.!?。！？])\s*", text)
    rng.shuffle(sentences)
    kept = [s for s in sentences if s and rng.random() > 0.05]
    return " ".join(kept) if kept else text


def main():
    output, target_mb, sources = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
    docs = documents(sources)
    target = int(target_mb * 1e6)
    written = 0
    copy = 0
    with open(output, "w", encoding="utf-8") as out:
        while written < target:
            rng = random.Random(copy)
            for i, text in enumerate(docs):
                text = varied(text, rng)
                out.write(json.dumps({"id": f"{copy}-{i}", "text": text}, ensure_ascii=False) + "\n")
                written += len(text.encode("utf-8"))
                if written >= target:
                    break
            copy += 1
    print(f"{output}: {written / 1e6:.1f} MB of text, {copy} varied copies of {len(docs)} documents")


if __name__ == "__main__":
    main()

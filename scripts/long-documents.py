#!/usr/bin/env python3
"""Long source/target pairs from a JSONL corpus of documents, for long-context
training (configs/long-context.yaml).

Consecutive documents are joined (blank line between them) until the source
holds at least --words words; its target is the opening sentence of each of
its documents, a lead-style summary. One JSON object per line:
{"source": ..., "target": ..., "documents": [ids]}. The corpus's last
documents, too few for one more source, are left out.

    python3 scripts/long-documents.py brown.jsonl long-brown.jsonl --words 30000
"""
import argparse
import json
import re
import sys

SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def opening_sentence(text):
    first = text.strip().split("\n\n")[0]
    return SENTENCE_END.split(" ".join(first.split()), maxsplit=1)[0]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("corpus", help="JSONL with a text field per document")
    parser.add_argument("output", help="JSONL of pairs to write")
    parser.add_argument("--words", type=int, default=30000, help="words per source, at least (default 30000)")
    parser.add_argument("--text-field", default="text")
    parser.add_argument("--id-field", default="id")
    args = parser.parse_args()
    if args.words < 1:
        sys.exit("long-documents.py: --words must be positive")

    pairs = 0
    texts, leads, ids, words = [], [], [], 0
    with open(args.corpus, encoding="utf-8") as corpus, open(args.output, "w", encoding="utf-8") as out:
        for number, line in enumerate(corpus, 1):
            if not line.strip():
                continue
            try:
                doc = json.loads(line)
                text = doc[args.text_field]
            except (ValueError, KeyError, TypeError) as e:
                sys.exit(f"{args.corpus}:{number}: not a JSON object with a '{args.text_field}' string ({e})")
            texts.append(text.strip())
            leads.append(opening_sentence(text))
            ids.append(doc.get(args.id_field, number))
            words += len(text.split())
            if words >= args.words:
                pair = {"source": "\n\n".join(texts), "target": " ".join(leads), "documents": ids}
                out.write(json.dumps(pair) + "\n")
                pairs += 1
                texts, leads, ids, words = [], [], [], 0
    print(f"{pairs} pairs of at least {args.words} source words written to {args.output}")


if __name__ == "__main__":
    main()

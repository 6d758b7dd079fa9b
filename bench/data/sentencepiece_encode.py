"""Encodes the "text" field of a JSONL file with the sentencepiece Python
package, one process, and prints its throughput: the per-core reference
`moetrain tokenize` is compared with (the package lives in .venv only).

usage: sentencepiece_encode.py MODEL INPUT.jsonl
"""
import json
import sys
import time

import sentencepiece as spm


def main():
    model, path = sys.argv[1], sys.argv[2]
    sp = spm.SentencePieceProcessor(model_file=model)
    texts = [json.loads(line)["text"] for line in open(path, encoding="utf-8")]
    megabytes = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    start = time.perf_counter()
    tokens = 0
    for text in texts:
        tokens += len(sp.encode(text))
    seconds = time.perf_counter() - start
    print(json.dumps({"mb": megabytes, "seconds": seconds, "mb_per_s": megabytes / seconds, "tokens": tokens}))


if __name__ == "__main__":
    main()

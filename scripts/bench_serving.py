#!/usr/bin/env python3
"""Words per second of CTranslate2 and transformers on one file of source
lines (called by bench-serving.sh).

  bench_serving.py ct2 MODEL_DIR WORDS LABEL --max-length N --threads N --runs "1:200 64:1000"
  bench_serving.py transformers HF_DIR WORDS LABEL ...
  bench_serving.py transformers HF_DIR WORDS LABEL --output FILE [--beam-size N --length-penalty X --batch-size N]

Each run is BATCH:COUNT: the first COUNT lines translated BATCH at a time,
greedy and with 4 beams. Prints one tab-separated row per run and method:
engine, method, batch, lines, seconds, lines per second. The model is loaded
and warmed up (a few lines) before timing; only translation is timed.

With --output, nothing is timed: all the lines are translated once, with
--beam-size (1: greedy) and --length-penalty, and written one per line, to
compare an engine's outputs with `moetrain generate`'s.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ctranslate2_serve  # noqa: E402

METHODS = (("greedy", 1), ("beam4", 4))


class Transformers:
    """transformers' generate on the export, fed the ids moetrain generate
    feeds its model (SentencePiece ids, then EOS; decoder starts with the
    export's decoder_start_token_id)."""

    def __init__(self, model_dir, threads):
        import sentencepiece as spm
        import torch
        import transformers

        if threads:
            torch.set_num_threads(threads)
        transformers.utils.logging.disable_progress_bar()
        self.torch = torch
        self.model = transformers.M2M100ForConditionalGeneration.from_pretrained(model_dir).eval()
        self.sp = spm.SentencePieceProcessor(model_file=os.path.join(model_dir, "tokenizer.model"))

    def translate(self, lines, max_length, beam_size, length_penalty, batch_size):
        torch, sp, config = self.torch, self.sp, self.model.config
        outputs = []
        for first in range(0, len(lines), batch_size):
            ids = [sp.encode(line) + [sp.eos_id()] for line in lines[first:first + batch_size]]
            width = max(len(row) for row in ids)
            tokens = torch.tensor([row + [sp.pad_id()] * (width - len(row)) for row in ids])
            with torch.no_grad():
                generated = self.model.generate(
                    input_ids=tokens, attention_mask=tokens.ne(sp.pad_id()), max_new_tokens=max_length,
                    num_beams=beam_size, do_sample=False, length_penalty=length_penalty,
                    decoder_start_token_id=config.decoder_start_token_id, eos_token_id=sp.eos_id(),
                    pad_token_id=sp.pad_id())
            for row in generated.tolist():
                row = row[1:]  # the decoder start token
                if sp.eos_id() in row:
                    row = row[:row.index(sp.eos_id())]
                outputs.append(sp.decode([t for t in row if t != sp.pad_id()]))
        return outputs


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("engine", choices=("ct2", "transformers"))
    parser.add_argument("model")
    parser.add_argument("words")
    parser.add_argument("label")
    parser.add_argument("--max-length", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", default="1:200 64:1000", help="BATCH:COUNT ...")
    parser.add_argument("--output", help="translate every line once and write the outputs here")
    parser.add_argument("--beam-size", type=int, default=1)
    parser.add_argument("--length-penalty", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    lines = ctranslate2_serve.read_lines(args.words)
    if args.engine == "ct2":
        engine = ctranslate2_serve.Server(args.model, threads=args.threads)
    else:
        engine = Transformers(args.model, args.threads)
    if args.output:
        outputs = engine.translate(lines, args.max_length, args.beam_size, args.length_penalty, args.batch_size)
        with open(args.output, "w", encoding="utf-8") as out:
            out.writelines(line + "\n" for line in outputs)
        return
    for method, beam in METHODS:
        engine.translate(lines[:8], args.max_length, beam, 1.0, 8)  # warm-up
        for run in args.runs.split():
            batch, count = (int(x) for x in run.split(":"))
            subset = lines[:count]
            start = time.perf_counter()
            engine.translate(subset, args.max_length, beam, 1.0, batch)
            seconds = time.perf_counter() - start
            print(f"{args.label}\t{method}\t{batch}\t{len(subset)}\t{seconds:.2f}\t{len(subset) / seconds:.1f}",
                  flush=True)


if __name__ == "__main__":
    main()

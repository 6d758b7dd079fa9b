#!/usr/bin/env python3
"""Serve a dense moetrain model with CTranslate2 (called by serve-ctranslate2.sh).

  ctranslate2_serve.py convert   --model HF_DIR --out CT2_DIR --quantization Q
  ctranslate2_serve.py translate --model CT2_DIR --input FILE [--output FILE] ...

`convert` reads a folder `moetrain export --format m2m100` wrote (config.json,
model*.safetensors, tokenizer.model) through transformers'
M2M100ForConditionalGeneration and writes a CTranslate2 model with CTranslate2's
own converter for that architecture, with two changes:
  - the vocabulary is tokenizer.model's pieces in id order (the export ships no
    Hugging Face tokenizer; token i of the CTranslate2 model is piece i);
  - the sinusoidal position table starts at row pad_id + 1, where transformers'
    M2M100 (and moetrain) number the first position. CTranslate2's own M2M100
    loader starts at row 2, which is right only for fairseq's pad id 1; with
    moetrain's pad id 0 every position would be off by one.
tokenizer.model is copied into CT2_DIR, and moetrain_serving.json records the
source folder and the longest source the model takes.

`translate` writes one output per input line exactly as `moetrain generate`
does for the same checkpoint: each source is its language code (--src-lang),
its SentencePiece ids cut to max-source-length - 1 tokens in all, then EOS; the
decoder starts with the export's decoder_start_token_id (bos, or eos in
fairseq's layout), its first token forced to --tgt-lang when given; an output
ends at EOS (not written) or after --max-length tokens (the forced code counts),
and is decoded by SentencePiece (control pieces, such as a language code,
decode to nothing). Beam search ranks hypotheses by log-probability /
length^penalty, EOS counted in the length, as moetrain's does; with
--beam-stop never it searches until no open beam can win, as
`moetrain generate --beam-stop never` does, and finds the same outputs
(docs/serving.md).
"""
import argparse
import json
import os
import sys
import time

# What CTranslate2 can quantize weights to, as this script offers them.
QUANTIZATIONS = ("float32", "int8", "int8_bfloat16")
SERVING_INFO = "moetrain_serving.json"


def die(message):
    """One error line on stderr, exit status 2 (usage errors, as moetrain's)."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def log(message):
    print(message, file=sys.stderr, flush=True)


class PieceVocabulary:
    """The part of a Hugging Face tokenizer CTranslate2's loaders read, taken
    from a SentencePiece model: token i is piece i."""

    def __init__(self, path):
        import sentencepiece as spm

        self.sp = spm.SentencePieceProcessor(model_file=path)
        self.pieces = [self.sp.id_to_piece(i) for i in range(self.sp.get_piece_size())]
        if len(set(self.pieces)) != len(self.pieces):
            die(f"{path}: two ids share a piece, so pieces cannot name tokens")
        self.bos_token = self.pieces[self.sp.bos_id()]
        self.eos_token = self.pieces[self.sp.eos_id()]
        self.unk_token = self.pieces[self.sp.unk_id()]
        self.unk_token_id = self.sp.unk_id()
        self.special_tokens_map = {}

    def get_vocab(self):
        return {piece: i for i, piece in enumerate(self.pieces)}

    def convert_ids_to_tokens(self, token_id):
        return self.pieces[token_id]


def convert(args):
    import torch
    import transformers
    from ctranslate2.converters.transformers import M2M100Loader, TransformersConverter

    config_path = os.path.join(args.model, "config.json")
    tokenizer_path = os.path.join(args.model, "tokenizer.model")
    for path in (config_path, tokenizer_path):
        if not os.path.isfile(path):
            die(f"--model {args.model}: no {os.path.basename(path)} (not a `moetrain export` folder)")
    with open(config_path) as f:
        config = json.load(f)
    if config.get("model_type") != "m2m_100":
        die(f"--model {args.model}: model_type is {config.get('model_type')!r}, not 'm2m_100' "
            "(export the checkpoint with `moetrain export --format m2m100`)")
    vocabulary = PieceVocabulary(tokenizer_path)
    if config["vocab_size"] < len(vocabulary.pieces):
        die(f"--model {args.model}: config.json's vocab_size {config['vocab_size']} is smaller than "
            f"tokenizer.model's {len(vocabulary.pieces)} pieces")

    class Loader(M2M100Loader):
        """CTranslate2's M2M100 loader with the two changes the module docstring lists."""

        def set_position_encodings(self, spec, module):
            # transformers' table has row i = position value i; the first real
            # token is at padding_idx + 1.
            spec.encodings = module.weights[module.padding_idx + 1:]

        def get_vocabulary(self, model, tokenizer):
            tokens = list(tokenizer.pieces)
            # model.vocab_size may be set above the tokenizer's size (moetrain
            # allows it, e.g. to pad the embedding): those rows are named
            # <unused_i>, pieces the tokenizer never produces.
            tokens += [f"<unused_{i}>" for i in range(model.config.vocab_size - len(tokens))]
            return tokens

    class Converter(TransformersConverter):
        """CTranslate2's Transformers converter, fed the export's model and its
        SentencePiece vocabulary instead of a Hugging Face tokenizer."""

        def _load(self):
            with torch.no_grad():
                model = transformers.M2M100ForConditionalGeneration.from_pretrained(
                    self._model_name_or_path, dtype=torch.float32)
                spec = Loader()(model, vocabulary)
            spec.register_file(tokenizer_path)
            return spec

    transformers.utils.logging.disable_progress_bar()
    start = time.time()
    Converter(args.model).convert(args.out, quantization=args.quantization, force=True)
    info = {"source": os.path.abspath(args.model), "quantization": args.quantization,
            "max_source_length": config["max_position_embeddings"],
            "decoder_start_token_id": config["decoder_start_token_id"]}
    with open(os.path.join(args.out, SERVING_INFO), "w") as f:
        json.dump(info, f, indent=2)
        f.write("\n")
    size = sum(os.path.getsize(os.path.join(args.out, name)) for name in os.listdir(args.out))
    log(f"converted {args.model} -> {args.out}: {args.quantization} weights, {len(vocabulary.pieces)} pieces, "
        f"{size / 1e6:.1f} MB, in {time.time() - start:.1f} s")


def read_lines(path):
    """The lines of `path` as `moetrain generate` reads them: split at \\n, one
    trailing \\r dropped, no empty last line after a final newline."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        die(f"--input: cannot read {path}: {e.strerror}")
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    try:
        return [(line[:-1] if line.endswith(b"\r") else line).decode("utf-8") for line in lines]
    except UnicodeDecodeError as e:
        die(f"--input: {path} is not UTF-8: {e}")


class Server:
    """A CTranslate2 model directory written by `convert`, with its tokenizer,
    translating lines as `moetrain generate` does."""

    def __init__(self, model_dir, threads=0, max_source_length=0, src_lang=None, tgt_lang=None):
        import ctranslate2
        import sentencepiece as spm

        info_path = os.path.join(model_dir, SERVING_INFO)
        if not os.path.isfile(info_path):
            die(f"--model {model_dir}: no {SERVING_INFO} (not converted by serve-ctranslate2.sh)")
        with open(info_path) as f:
            info = json.load(f)
        self.sp = spm.SentencePieceProcessor(model_file=os.path.join(model_dir, "tokenizer.model"))
        self.eos = self.sp.id_to_piece(self.sp.eos_id())
        self.max_source = max(max_source_length or info["max_source_length"], 2)
        self.source_prefix = [self._language_code(src_lang)] if src_lang else []
        self.target_prefix = [self._language_code(tgt_lang)] if tgt_lang else []
        # compute_type "default": the quantization chosen at conversion (or the
        # nearest this CPU supports).
        self.translator = ctranslate2.Translator(model_dir, device="cpu", intra_threads=threads)

    def _language_code(self, code):
        """The piece of a language code, checked as moetrain checks it: a control
        piece other than pad, eos, bos, unk and <mask>."""
        sp = self.sp
        token_id = sp.piece_to_id(code)
        specials = {sp.pad_id(), sp.eos_id(), sp.bos_id(), sp.unk_id()}
        if token_id in specials or not sp.is_control(token_id) or code == "<mask>":
            die(f"language code '{code}' is not in the tokenizer")
        return code

    def source_tokens(self, line):
        ids = self.sp.encode(line)
        keep = max(0, min(len(ids), self.max_source - 1 - len(self.source_prefix)))
        return self.source_prefix + [self.sp.id_to_piece(i) for i in ids[:keep]] + [self.eos]

    def translate(self, lines, max_length, beam_size=1, length_penalty=1.0, batch_size=32, patience=1):
        """One output string per line. Beam search stops once beam_size *
        patience hypotheses have finished (CTranslate2's rule). A patience
        above max_length never stops early: the search runs to max_length
        and returns the best hypothesis the beams found, which is what
        `moetrain generate --beam-stop never` returns."""
        outputs = []
        for first in range(0, len(lines), batch_size):
            batch = [self.source_tokens(line) for line in lines[first:first + batch_size]]
            results = self.translator.translate_batch(
                batch,
                target_prefix=[self.target_prefix] * len(batch) if self.target_prefix else None,
                beam_size=beam_size,
                patience=patience,
                length_penalty=length_penalty,
                max_decoding_length=max_length,  # counts the forced prefix, as moetrain's --max-length
                min_decoding_length=0,           # EOS may come first (an empty output), as in moetrain
                max_input_length=0,              # sources are cut above, as moetrain cuts them
                return_end_token=False,
                max_batch_size=0)
            for result in results:
                ids = [self.sp.piece_to_id(token) for token in result.hypotheses[0]]
                outputs.append(self.sp.decode(ids))
        return outputs


def translate(args):
    if not os.path.isdir(args.model):
        die(f"--model: not a directory: {args.model}")
    server = Server(args.model, args.threads, args.max_source_length, args.src_lang, args.tgt_lang)
    lines = read_lines(args.input)
    start = time.time()
    # Never: beam_size * patience finished hypotheses cannot come sooner.
    patience = args.max_length + 1 if args.beam_stop == "never" else args.patience
    outputs = server.translate(lines, args.max_length, args.beam_size, args.length_penalty, args.batch_size, patience)
    seconds = time.time() - start
    text = "".join(output + "\n" for output in outputs)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    method = "greedy" if args.beam_size == 1 else f"beam {args.beam_size}"
    log(f"translated {len(lines)} lines ({method}, batch {args.batch_size}) in {seconds:.2f} s "
        f"({len(lines) / max(seconds, 1e-9):.1f} lines/s)")


def positive(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    c = commands.add_parser("convert", help="a `moetrain export --format m2m100` folder to a CTranslate2 model")
    c.add_argument("--model", required=True, help="the export folder")
    c.add_argument("--out", required=True, help="the CTranslate2 model folder to write (replaced)")
    c.add_argument("--quantization", required=True, choices=QUANTIZATIONS, help="weight type")
    t = commands.add_parser("translate", help="translate lines with a converted model")
    t.add_argument("--model", required=True, help="a folder `convert` wrote")
    t.add_argument("--input", required=True, help="one source per line")
    t.add_argument("--output", help="one output per line (default: standard output)")
    t.add_argument("--max-length", type=positive, default=128, help="most tokens per output (default 128)")
    t.add_argument("--beam-size", type=positive, default=1, help="1: greedy (default); more: beam search")
    t.add_argument("--length-penalty", type=float, default=1.0,
                   help="beam search ranks log-probability / length^penalty (default 1)")
    t.add_argument("--beam-stop", choices=("patience", "never"), default="patience",
                   help="patience: beam search ends when beam-size * patience hypotheses have finished "
                        "(CTranslate2's rule, the default); never: it runs until no open beam can win, "
                        "as `moetrain generate --beam-stop never`")
    t.add_argument("--patience", type=positive, default=1,
                   help="with --beam-stop patience (default 1, CTranslate2's)")
    t.add_argument("--batch-size", type=positive, default=32, help="sources per batch (default 32)")
    t.add_argument("--max-source-length", type=positive, default=None,
                   help="sources cut to this many tokens, EOS included (default: the model's positions)")
    t.add_argument("--src-lang", help="language code written before each source")
    t.add_argument("--tgt-lang", help="language code forced as the first output token")
    t.add_argument("--threads", type=int, default=0, help="CTranslate2 intra-op threads (0: its default)")
    args = parser.parse_args()
    if args.command == "convert":
        convert(args)
    else:
        translate(args)


if __name__ == "__main__":
    main()

#!/usr/bin/env bash
# Benchmark of `moetrain import` at the size of NLLB-200-distilled-600M: a
# model of its architecture (transformers' M2M100ForConditionalGeneration:
# d_model 1024, 12 + 12 layers, 16 heads, FFN 4096, vocabulary 256206; random
# weights) saved by transformers in fp32 with NLLB's tokenizer
# (tests/e2e/nllb_folder.py's, trained on the shared corpora), then imported.
# It prints the weights' size, the import's wall time and its peak resident
# memory (GNU time's maximum RSS) as a multiple of the weights' size.
#
#   bash scripts/bench-import.sh
#
# Environment: MOETRAIN_BIN (default build/bin/moetrain), MOETRAIN_SHARED_DATA
# (default ../shared/data), BENCH_WORK (default /tmp/moetrain-bench-import;
# about 5 GB there). Needs transformers, sentencepiece and protobuf in .venv
# (scripts/setup.sh installs them) and GNU time (/usr/bin/time).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${MOETRAIN_BIN:-$ROOT/build/bin/moetrain}"
DATA="${MOETRAIN_SHARED_DATA:-$ROOT/../shared/data}"
WORK="${BENCH_WORK:-/tmp/moetrain-bench-import}"
PY="$ROOT/.venv/bin/python"
[[ -x "$BIN" ]] || { echo "bench-import: $BIN is missing (build first)" >&2; exit 1; }
[[ -x /usr/bin/time ]] || { echo "bench-import: GNU time (/usr/bin/time) is missing" >&2; exit 1; }
rm -rf "$WORK"; mkdir -p "$WORK"

"$PY" - "$ROOT/tests/e2e" "$DATA" "$WORK" <<'PY'
import sys, time
sys.path.insert(0, sys.argv[1])
import torch, transformers
import nllb_folder
data, work = sys.argv[2:4]
# NLLB's tokenizer files first (the small model it saves is replaced below).
nllb_folder.build(data, work, "m2m100")
config = transformers.M2M100Config(vocab_size=256206, d_model=1024, encoder_layers=12, decoder_layers=12,
                                   encoder_attention_heads=16, decoder_attention_heads=16, encoder_ffn_dim=4096,
                                   decoder_ffn_dim=4096, max_position_embeddings=1024, activation_function="relu",
                                   scale_embedding=True, pad_token_id=1, eos_token_id=2, bos_token_id=0,
                                   decoder_start_token_id=2)
start = time.time()
torch.manual_seed(0)
model = transformers.M2M100ForConditionalGeneration(config)
model.save_pretrained(f"{work}/hf")
print(f"built and saved an NLLB-200-distilled-600M-sized model ({model.num_parameters() / 1e6:.1f}M parameters) "
      f"in {time.time() - start:.0f} s")
PY
weights=$(du -cb "$WORK"/hf/*.safetensors | tail -n 1 | cut -f1)
/usr/bin/time -f "%e %M" -o "$WORK/time.txt" "$BIN" import --from "$WORK/hf" --out "$WORK/imported" > "$WORK/import.log"
read -r seconds peak_kb < "$WORK/time.txt"
awk -v w="$weights" -v s="$seconds" -v kb="$peak_kb" 'BEGIN {
  printf "weights (safetensors): %.2f GB\n", w / 1e9
  printf "moetrain import: %.1f s, peak resident memory %.2f GB = %.2fx the weights\n", s, kb * 1024 / 1e9, kb * 1024 / w
}'
head -n 1 "$WORK/import.log"

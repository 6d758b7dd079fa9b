#!/usr/bin/env bash
# The README's first command after setup: tokenizes the shipped Brown sample
# and trains configs/tiny.yaml on the CPU, printing one line every 10 steps.
# Extra arguments go to `moetrain train` (e.g. --max-steps 50).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BIN="${MOETRAIN_BUILD_DIR:-build}/bin/moetrain"
if [[ ! -f datasets/demo/train-00000.h5 ]]; then
  "$BIN" tokenize --input examples/data/brown-sample.jsonl --output datasets/demo \
         --vocab-size 8000 --valid-fraction 0.05
fi
rm -rf runs/tiny  # the demo always starts fresh
"$BIN" train --config configs/tiny.yaml --output-dir runs/tiny "$@"

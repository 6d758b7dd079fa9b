#!/usr/bin/env bash
# CPU training-step benchmark: ms/step, tokens/s and peak RSS for the tiny
# preset and the 12/6-layer 8-expert preset at a small width. Each preset
# runs in its own process so that peak RSS is its own.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="$ROOT/${MOETRAIN_BUILD_DIR:-build}/bin/bench_train_step"
"$BIN" --preset tiny "$@"
"$BIN" --preset base-small "$@" | grep -v '^#' | tail -n +2   # its rows, without the header

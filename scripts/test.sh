#!/usr/bin/env bash
# Sets up (idempotent) and runs the whole test suite: unit, end-to-end and
# multi-rank tests. Extra arguments go to ctest (e.g. -L unit, -R Config).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
ctest --test-dir "${MOETRAIN_BUILD_DIR:-build}" --output-on-failure --timeout 1500 "$@"

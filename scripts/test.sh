#!/usr/bin/env bash
# Sets up (idempotent) and runs the whole test suite: unit, end-to-end and
# multi-rank tests. Extra arguments go to ctest (e.g. -L unit, -R Config).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
# A full disk shows up later as MPI start-up failures (Open MPI keeps its
# session files under TMPDIR), so name it up front: the tests write about 1 GB
# at a time under the build folder and TMPDIR.
for dir in "${MOETRAIN_BUILD_DIR:-build}" "${TMPDIR:-/tmp}"; do
  free_mb=$(df -Pm "$dir" | awk 'NR == 2 {print $4}')
  if [[ -n "$free_mb" && "$free_mb" -lt 3072 ]]; then
    echo "[test] WARNING: only ${free_mb} MB free under $dir; tests that start MPI may fail for lack of space" >&2
  fi
done
ctest --test-dir "${MOETRAIN_BUILD_DIR:-build}" --output-on-failure --timeout 1500 "$@"

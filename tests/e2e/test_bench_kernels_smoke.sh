#!/usr/bin/env bash
# bench_kernels runs every op of kernels/ at small sizes on the CPU and prints
# a row per op with positive times for both versions; a bad flag or a
# missing GPU is one line and exit 2. Skipped without bench_kernels.
source "$(dirname "$0")/lib.sh"
work="$MOETRAIN_E2E_WORK/bench_kernels_smoke"
rm -rf "$work"; mkdir -p "$work"
bench="$(dirname "$MOETRAIN_BIN")/bench_kernels"
[[ -x $bench ]] || { echo "SKIP: no bench_kernels next to $MOETRAIN_BIN"; exit "$SKIP"; }

"$bench" --device cpu --small --iters 2 --warmup 1 | tee "$work/out"
for op in "layernorm+gelu fwd " "layernorm+gelu fwd+bwd" "cross-entropy ls=0.1 fwd " "cross-entropy ls=0.1 fwd+bwd" \
          "moe permute fwd+bwd" "moe unpermute fwd+bwd" "adamw "; do
  row=$(grep -F -- "$op" "$work/out" | head -1)
  [[ -n "$row" ]] || fail "no row for '$op'"
  python3 - "$row" <<'PY' || fail "non-positive times in: $row"
import re, sys
ms = re.findall(r"\s(\d+\.\d+)\s", sys.argv[1] + " ")
sys.exit(0 if len(ms) >= 2 and float(ms[0]) > 0 and float(ms[1]) > 0 else 1)
PY
done

expect_program_error "device" "$bench" --device tpu
expect_program_error "iters" "$bench" --iters 0
if ! "$(dirname "$MOETRAIN_BIN")/bench_kernels" --help | grep -q -- --only; then fail "--help lacks --only"; fi
if [[ ! -e /dev/nvidia0 ]]; then expect_program_error "cuda" "$bench" --device cuda; fi
echo PASS

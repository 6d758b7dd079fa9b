#!/usr/bin/env bash
# bench_generate at toy sizes on the CPU: a row per method with positive
# times, and greedy decoding with the key/value cache chooses the same tokens
# as the whole-prefix decoder in every row; bad flags are one line and exit 2.
# Skipped without bench_generate.
source "$(dirname "$0")/lib.sh"
work="$MOETRAIN_E2E_WORK/bench_generate_smoke"
rm -rf "$work"; mkdir -p "$work"
bench="$(dirname "$MOETRAIN_BIN")/bench_generate"
[[ -x $bench ]] || { echo "SKIP: no bench_generate next to $MOETRAIN_BIN"; exit "$SKIP"; }

"$bench" --batch 3 --src-len 9 --length 12 --vocab 300 --repeats 1 --set model.attention=dynamic \
  --set model.local_window=4 --set model.position=rotary | tee "$work/out"
for method in "greedy (cache)" "greedy (whole prefix)" "beam 4 (cache)"; do
  row=$(grep -F -- "$method" "$work/out" | head -1)
  [[ -n "$row" ]] || fail "no row for '$method'"
  python3 - "$row" <<'PY' || fail "bad figures in: $row"
import sys
fields = sys.argv[1].split()
seconds, rate = float(fields[-2]), float(fields[-1])
sys.exit(0 if seconds > 0 and rate > 0 else 1)
PY
done
grep -q "agree in 3 of 3 rows" "$work/out" || fail "the cache and the whole-prefix decoder chose different tokens"

expect_program_error "--device must be cpu or cuda" "$bench" --device tpu
expect_program_error "--dtype must be fp32, bf16 or fp16" "$bench" --dtype int8
expect_program_error "--length" "$bench" --length 0
echo PASS

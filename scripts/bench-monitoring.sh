#!/usr/bin/env bash
# The cost of watching a run: the tiny preset trained with every monitor on
# (TensorBoard files, the Prometheus endpoint scraped every second, the stall
# watchdog) and with all of them off, in interleaved rounds; prints each
# round's median step time (steps 6 and later, from metrics.jsonl) and the
# median of the rounds for each.
#
#   bash scripts/bench-monitoring.sh [--data DIR] [--steps N] [--rounds R]
#
# --data: a tokenized dataset (default datasets/demo, which scripts/demo.sh
# writes); --steps: steps per run (default 60); --rounds: runs of each
# (default 5).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="$ROOT/${MOETRAIN_BUILD_DIR:-build}/bin/moetrain"
data="$ROOT/datasets/demo" steps=60 rounds=5
while [[ $# -gt 0 ]]; do
  case $1 in
    --data) data=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    *) echo "bench-monitoring.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ -d "$data" ]] || { echo "bench-monitoring.sh: no dataset at $data (run scripts/demo.sh, or give --data)" >&2; exit 2; }
work=$(mktemp -d /tmp/bench-monitoring.XXXXXX)
trap 'rm -rf "$work"' EXIT
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
common=(train --config "$ROOT/configs/tiny.yaml" --set data.train="$data" --set data.valid="$data"
        --max-steps "$steps" --set log.every=1 --set train.eval_every=0 --set checkpoint.every=0)
off=(--set log.tensorboard=false --set log.stall_factor=0 --set log.prometheus_port=0)
on=(--set log.tensorboard=true --set log.stall_factor=10 --set log.prometheus_port="$port")

median_step_ms() {  # METRICS_JSONL
  python3 - "$1" <<'PY'
import json, statistics, sys
ms = [r["step_ms"] for r in map(json.loads, open(sys.argv[1])) if "step_ms" in r and r["step"] > 5]
print(f"{statistics.median(ms):.1f}")
PY
}

: > "$work/off.txt"; : > "$work/on.txt"
for round in $(seq "$rounds"); do
  "$BIN" "${common[@]}" "${off[@]}" --output-dir "$work/off-$round" > /dev/null
  "$BIN" "${common[@]}" "${on[@]}" --output-dir "$work/on-$round" > /dev/null &
  run=$!
  # A scraper, as Prometheus would be, while the run lasts.
  while kill -0 "$run" 2>/dev/null; do curl -s "http://127.0.0.1:$port/metrics" > /dev/null || true; sleep 1; done
  wait "$run"
  a=$(median_step_ms "$work/off-$round/metrics.jsonl")
  b=$(median_step_ms "$work/on-$round/metrics.jsonl")
  echo "$a" >> "$work/off.txt"; echo "$b" >> "$work/on.txt"
  echo "round $round: median step $a ms with monitors off, $b ms on"
done
python3 - "$work/off.txt" "$work/on.txt" <<'PY'
import statistics, sys
off = [float(x) for x in open(sys.argv[1])]
on = [float(x) for x in open(sys.argv[2])]
a, b = statistics.median(off), statistics.median(on)
print(f"median of {len(off)} rounds: off {a:.1f} ms, on {b:.1f} ms ({100 * (b - a) / a:+.1f}%); "
      f"round-to-round spread off {min(off):.1f}-{max(off):.1f} ms, on {min(on):.1f}-{max(on):.1f} ms")
PY

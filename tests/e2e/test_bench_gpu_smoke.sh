#!/usr/bin/env bash
# scripts/bench-gpu.sh in its CPU smoke mode (tiny shapes, 1 warm-up and 2
# timed steps) for the tiny and nllb-moe presets: the report has a row with
# positive tokens/s for every implementation (moetrain with fused and
# reference kernels, the PyTorch peer, transformers' NLLB-MoE with both expert
# dispatches, activation checkpointing) and a skipped row for torch.compile,
# and every peer reports moetrain's parameter count, active parameter count
# and model FLOPs per step (the same model). Skipped (exit 77) without
# bench_train_step next to moetrain or without torch and PyYAML in .venv; the
# transformers rows are required only when transformers is installed there.
source "$(dirname "$0")/lib.sh"
work="$MOETRAIN_E2E_WORK/bench_gpu_smoke"
rm -rf "$work"; mkdir -p "$work"
bench="$(dirname "$MOETRAIN_BIN")/bench_train_step"
PY="$MOETRAIN_SOURCE_DIR/.venv/bin/python"
[[ -x $bench ]] || { echo "SKIP: no bench_train_step next to $MOETRAIN_BIN"; exit "$SKIP"; }
"$PY" -c 'import torch, yaml' 2>/dev/null || { echo "SKIP: $PY lacks torch or PyYAML"; exit "$SKIP"; }
hf=0
"$PY" -c 'import transformers' 2>/dev/null && hf=1

BENCH_BIN="$bench" PYTHON="$PY" bash "$MOETRAIN_SOURCE_DIR/scripts/bench-gpu.sh" --device cpu --smoke \
  --presets "tiny nllb-moe" --out "$work/out" > "$work/stdout" 2> "$work/stderr" \
  || fail "bench-gpu.sh failed: $(tail -5 "$work/stderr")"
cat "$work/stdout"
[[ -s $work/out/report.md ]] || fail "no report.md"
cmp -s "$work/stdout" "$work/out/report.md" || fail "the printed report differs from report.md"

"$PY" - "$work/out/report.md" "$work/out/results.jsonl" "$hf" <<'PY' || fail "the report or the results are wrong"
import json, sys
report, results, hf = open(sys.argv[1]).read(), sys.argv[2], sys.argv[3] == "1"

# Table rows: | preset | impl | ckpt | tokens/step | ms/step | tokens/s | ...
rows = {}
for line in report.splitlines():
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    if len(cells) == 9 and cells[0] in ("tiny", "nllb-moe"):
        rows[(cells[0], cells[1], cells[2])] = cells
wanted = [("tiny", "moetrain", "no"), ("tiny", "torch-eager", "no"), ("tiny", "moetrain", "yes"),
          ("tiny", "torch-eager", "yes"), ("nllb-moe", "moetrain", "no"), ("nllb-moe", "moetrain-reference", "no"),
          ("nllb-moe", "torch-eager", "no")]
if hf:
    wanted += [("nllb-moe", "hf-eager", "no"), ("nllb-moe", "hf-eager-gates", "no")]
for key in wanted:
    assert key in rows, f"no row for {key}"
    tokens_per_s = float(rows[key][5])
    assert tokens_per_s > 0, f"{key}: tokens/s {tokens_per_s}"
for preset in ("tiny", "nllb-moe"):
    row = rows.get((preset, "torch-compile", "no"))
    assert row and row[5].startswith("skipped"), f"{preset}: torch-compile is not reported as skipped"

# The peers build moetrain's model: the same parameter counts and FLOPs.
runs = [json.loads(l) for l in open(results) if l.startswith("{")]
runs = [r for r in runs if "tokens_per_s" in r]
for preset in ("tiny", "nllb-moe"):
    ref = next(r for r in runs if r["preset"] == preset and r["impl"] == "moetrain")
    assert ref["params"] > 0 and 0 < ref["active_params"] < ref["params"], ref
    for r in runs:
        if r["preset"] != preset:
            continue
        assert (r["params"], r["active_params"]) == (ref["params"], ref["active_params"]), (r["impl"], r, ref)
        assert abs(r["flops_per_step"] - ref["flops_per_step"]) <= 1e-9 * ref["flops_per_step"], (r["impl"], r)
        assert r["tokens_per_step"] == ref["tokens_per_step"], (r["impl"], r["tokens_per_step"])
        assert r["peak_mem_bytes"] > 0 and r["ms_per_step"] > 0, r
    print(f"{preset}: {len([r for r in runs if r['preset'] == preset])} runs, {ref['params']} parameters "
          f"({ref['active_params']} active), {ref['flops_per_step']:.4g} FLOPs per step in every implementation")
if hf:
    shipped = next(r for r in runs if r["impl"] == "hf-eager")
    gates = next(r for r in runs if r["impl"] == "hf-eager-gates")
    assert gates["expert_rows_per_token"] == 2, gates
    print(f"transformers {shipped['transformers']}: {shipped['expert_rows_per_token']:g} expert rows per token as "
          f"shipped, {gates['expert_rows_per_token']:g} with the gate dispatch")
PY
echo "PASS"

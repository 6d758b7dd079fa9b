#!/usr/bin/env python3
"""Turns the JSON lines of a scripts/bench-gpu.sh run into its markdown
report: one table row per (preset, implementation, activation
checkpointing), then activation checkpointing's trade-off, the parameter
counts each implementation reports (equal counts: the same model), and the
goals.

  report.py RESULTS.jsonl [--out REPORT.md] [--date D] [--commit C] [--note TEXT]...

Lines with "skipped" or "error" (written by the script for runs that did not
happen or failed) become rows saying so. MFU is model FLOPs per second over
the bf16 matmul rate bench_train_step measured on the same device.
"""
import argparse
import json
import sys

# The goals, checked on a CUDA run.
GOAL_HF_SPEEDUP = 1.3  # moetrain tokens/s over transformers' at nllb-moe
GOAL_MFU = {"base-dense": 0.45, "base": 0.30}


def display_impl(r):
    impl = r["impl"]
    if impl == "moetrain" and r.get("kernels") == "reference":
        return "moetrain-reference"
    return impl


def load(path):
    rows = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                rows.append(json.loads(line))
    return rows


def gib(n):
    return f"{n / 2 ** 30:.2f} GiB"


def memory(r):
    kind = {"cuda_allocated": "", "rss": " RSS"}.get(r.get("peak_mem_kind"), "")
    return gib(r["peak_mem_bytes"]) + kind


def ok(r):
    return "tokens_per_s" in r and not r.get("error") and not r.get("skipped")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("results")
    p.add_argument("--out")
    p.add_argument("--date", default="")
    p.add_argument("--commit", default="")
    p.add_argument("--note", action="append", default=[])
    args = p.parse_args()
    rows = load(args.results)
    matmul = {r["impl"]: r for r in rows if r["impl"].startswith("matmul")}
    runs = [r for r in rows if not r["impl"].startswith("matmul")]
    presets = list(dict.fromkeys(r["preset"] for r in runs))
    device = next((r["device"] for r in runs if ok(r)), matmul.get("matmul", {}).get("device", "?"))
    cuda = any(ok(r) and r.get("peak_mem_kind") == "cuda_allocated" for r in runs)

    def moetrain_of(preset, ckpt):
        for r in runs:
            if (r["preset"] == preset and r["impl"] == "moetrain" and r.get("kernels") != "reference"
                    and bool(r.get("activation_checkpointing")) == ckpt and ok(r)):
                return r
        return None

    out = [f"# Training-step benchmark: {device}", ""]
    meta = [f"date {args.date}" if args.date else "", f"commit {args.commit}" if args.commit else ""]
    if "matmul" in matmul:
        m = matmul["matmul"]
        meta.append(f"bf16 matmul {m['size']}^3: {m['tflops']:.3g} TFLOP/s (LibTorch, the MFU denominator)")
    if "matmul-pytorch" in matmul:
        meta.append(f"{matmul['matmul-pytorch']['tflops']:.3g} TFLOP/s (PyTorch)")
    out += ["; ".join(x for x in meta if x), ""]
    out += ["| preset | impl | ckpt | tokens/step | ms/step | tokens/s | MFU | peak memory | moetrain ÷ impl |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for preset in presets:
        for r in [r for r in runs if r["preset"] == preset]:
            ckpt = bool(r.get("activation_checkpointing"))
            name, ck = display_impl(r), "yes" if ckpt else "no"
            if not ok(r):
                why = r.get("skipped") or r.get("error") or "no result"
                out.append(f"| {preset} | {name} | {ck} | | | {'skipped' if r.get('skipped') else 'failed'}: "
                           f"{why} | | | |")
                continue
            base = moetrain_of(preset, ckpt)
            ratio = f"{base['tokens_per_s'] / r['tokens_per_s']:.2f}" if base else ""
            mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") else ""
            out.append(f"| {preset} | {name} | {ck} | {r['tokens_per_step']} | {r['ms_per_step']:.1f} | "
                       f"{r['tokens_per_s']:.0f} | {mfu} | {memory(r)} | {ratio} |")
    out += ["", "tokens: source + target tokens of the global batch (padding excluded); ms/step: median of the "
            "timed steps after warm-up, each a whole optimizer step (forward, backward, clipping, AdamW on fp32 "
            "master weights); peak memory: the CUDA caching allocator's peak over the timed steps (RSS on the "
            "CPU); moetrain ÷ impl: moetrain's tokens/s over the row's, with the same activation checkpointing "
            "setting (above 1: moetrain is faster)."]

    trade = []
    for preset in presets:
        for impl in dict.fromkeys(display_impl(r) for r in runs if r["preset"] == preset):
            def pick(ckpt):
                return next((r for r in runs if r["preset"] == preset and display_impl(r) == impl
                             and bool(r.get("activation_checkpointing")) == ckpt and ok(r)), None)
            off, on = pick(False), pick(True)
            if off and on:
                trade.append(f"| {preset} | {impl} | {on['tokens_per_s'] / off['tokens_per_s']:.2f} | "
                             f"{gib(off['peak_mem_bytes'])} → {gib(on['peak_mem_bytes'])} "
                             f"({on['peak_mem_bytes'] / off['peak_mem_bytes']:.2f}x) |")
    if trade:
        out += ["", "## Activation checkpointing", "",
                "| preset | impl | tokens/s with ÷ without | peak memory without → with |", "|---|---|---:|---|"]
        out += trade
        out += ["", "MFU counts model FLOPs only, so checkpointing's recomputed forward lowers it."]

    out += ["", "## Parameters (equal counts: the peers build moetrain's model)", "",
            "| preset | impl | params | active params | model FLOPs/step | same as moetrain |", "|---|---|---:|---:|---:|---|"]
    mismatches = 0
    for preset in presets:
        ref = moetrain_of(preset, False) or moetrain_of(preset, True)
        seen = set()
        for r in runs:
            if r["preset"] != preset or not ok(r) or display_impl(r) in seen:
                continue
            seen.add(display_impl(r))
            same = ""
            if ref:
                equal = (r["params"], r["active_params"]) == (ref["params"], ref["active_params"]) and \
                    abs(r["flops_per_step"] - ref["flops_per_step"]) <= 1e-9 * ref["flops_per_step"]
                same = "yes" if equal else "NO"
                mismatches += not equal
            out.append(f"| {preset} | {display_impl(r)} | {r['params']} | {r['active_params']} | "
                       f"{r['flops_per_step']:.4g} | {same} |")

    out += ["", "## Goals", ""]
    if not cuda:
        out.append("Not checked: this is not a CUDA run.")
    else:
        m = moetrain_of("nllb-moe", False)
        for impl in ("hf-eager", "hf-eager-gates"):
            h = next((r for r in runs if r["preset"] == "nllb-moe" and r["impl"] == impl and ok(r)
                      and not r.get("activation_checkpointing")), None)
            if m and h:
                speedup = m["tokens_per_s"] / h["tokens_per_s"]
                verdict = "met" if speedup >= GOAL_HF_SPEEDUP else "NOT met"
                out.append(f"- nllb-moe, moetrain vs {impl} (expert dispatch {h.get('expert_dispatch')}, "
                           f"{h.get('expert_rows_per_token', 0):g} expert rows per token): {speedup:.2f}x "
                           f"(goal >= {GOAL_HF_SPEEDUP}x): {verdict}")
        for preset, goal in GOAL_MFU.items():
            r = moetrain_of(preset, False)
            if r and r.get("mfu"):
                verdict = "met" if r["mfu"] >= goal else "NOT met"
                out.append(f"- {preset} MFU {100 * r['mfu']:.1f}% (goal >= {100 * goal:.0f}%): {verdict}")
    if args.note:
        out += ["", "## Notes", ""] + [f"- {n}" for n in args.note]
    text = "\n".join(out) + "\n"
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    sys.stdout.write(text)
    if mismatches:
        print(f"report.py: {mismatches} implementation(s) count other parameters or FLOPs than moetrain",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

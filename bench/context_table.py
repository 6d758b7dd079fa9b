#!/usr/bin/env python3
"""The table of scripts/bench-context.sh: one row per run of
bench_train_step --json (JSON lines), with the bytes each context-parallel
method predicts for one step's attention next to what the CP group moved.

Predicted bytes, all ranks together, as the communicators count them (a
send_recv counts what it sends and what it receives, an all_to_all and a
reduce_scatter their input, an all_gather its output), for one attention call
of Tq queries and Tk keys (lengths padded to a multiple of 2 x cp), B
samples, width d, fp32:
  ring:       each rank sends its key/value chunk (2 B d Tk/cp x 4 bytes)
              cp - 1 times forward, and 2 cp - 1 times backward (the chunk
              again, and its gradient, which goes home at the end):
              cp x 2 x (3 cp - 2) x 8 B d Tk / cp = 16 B d Tk (3 cp - 2);
  halo:       local self-attention with a window w of at most a quarter of
              a rank's positions: every rank's 4 edge strips of w keys and
              values are all-gathered forward and their gradients
              reduce-scattered backward: 2 x cp x cp x 32 B d w = 64 B d w cp^2;
  all_to_all: q, k, v and the output, forward and backward:
              2 x 4 B d (2 Tq + 2 Tk) = 16 B d (Tq + Tk).
Calls per micro-batch: encoder self-attention per encoder layer, decoder
self-attention and cross-attention (Tk = the source) per decoder layer;
dynamic attention makes a local and a global self-attention call. The
column "other" is what the CP group moved besides: positions and padding
masks gathered, the MoE losses' sums.
"""
import json
import sys


def padded(length, cp):
    return -(-length // (2 * cp)) * (2 * cp)


def predicted_bytes(run):
    cp = run["cp"]
    if cp == 1:
        return 0
    b, d, window = run["micro_batch"], run["d_model"], run.get("local_window", 0)
    src, tgt = padded(run["src_len"], cp), padded(run["tgt_len"], cp)

    def call(tq, tk, local):
        if run["cp_mode"] != "ring":
            return 16 * b * d * (tq + tk)
        if local and tq == tk and tk // cp >= 4 * window:
            return 64 * b * d * window * cp * cp
        return 16 * b * d * tk * (3 * cp - 2)

    def self_attention(length):
        kind = run["attention"]
        return (call(length, length, True) if kind != "global" else 0) + \
               (call(length, length, False) if kind != "local" else 0)

    per_micro = (self_attention(src) * run["encoder_layers"]
                 + (self_attention(tgt) + call(tgt, src, False)) * run["decoder_layers"])
    return per_micro * run["micro_batches"]


def main():
    runs = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
    print(f"{'source':>7} {'cp':>3} {'mode':>10} {'ms/step':>9} {'RSS before':>11} {'peak RSS':>9} "
          f"{'activations':>11} {'CP bytes':>13} {'predicted':>13} {'other':>10}")
    print(f"{'tokens':>7} {'':>3} {'':>10} {'':>9} {'MiB/rank':>11} {'MiB/rank':>9} {'MiB/rank':>11}")
    for run in runs:
        if "skipped" in run:
            print(f"{run['src_len']:>7} {run['cp']:>3} {'':>10} skipped: {run['skipped']}")
            continue
        mib = 1024 * 1024
        moved = sum(v["bytes"] for k, v in run.get("comm", {}).items() if k.startswith("cp "))
        predicted = predicted_bytes(run)
        before, peak = run["mem_before_steps_bytes"] / mib, run["peak_mem_bytes"] / mib
        mode = run["cp_mode"] if run["cp"] > 1 else "-"
        print(f"{run['src_len']:>7} {run['cp']:>3} {mode:>10} {run['ms_per_step']:>9.0f} {before:>11.0f} "
              f"{peak:>9.0f} {peak - before:>11.0f} {moved:>13.0f} {predicted:>13.0f} {moved - predicted:>10.0f}")


if __name__ == "__main__":
    main()

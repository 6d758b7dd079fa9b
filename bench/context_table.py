#!/usr/bin/env python3
"""The table of scripts/bench-context.sh: one row per run of
bench_train_step --json (JSON lines), with the bytes each context-parallel
method predicts for one step next to what the CP group moved.

Predicted bytes, all ranks together, as the communicators count them (a
send_recv counts what it sends and what it receives; an all_to_all its
input), for one attention call of Tq queries and Tk keys (lengths padded to
a multiple of 2 x cp), B samples, width d, fp32:
  ring:       each rank sends its key/value chunk (2 B d Tk/cp x 4 bytes)
              cp - 1 times forward, and 2 cp - 1 times backward (the chunk
              again, and its gradient, which goes home at the end):
              cp x 2 x (3 cp - 2) x 8 B d Tk / cp = 16 B d Tk (3 cp - 2);
  all_to_all: q, k, v and the output, forward and backward:
              2 x 4 B d (2 Tq + 2 Tk) = 16 B d (Tq + Tk).
Calls per micro-batch: encoder self-attention per encoder layer, decoder
self-attention and cross-attention (Tk = the source) per decoder layer;
dynamic attention makes two self-attention calls. The small collectives
(positions and padding masks gathered, the MoE losses' sums) are listed
apart as "other CP bytes".
"""
import json
import sys


def padded(length, cp):
    return -(-length // (2 * cp)) * (2 * cp)


def predicted_bytes(run):
    cp = run["cp"]
    if cp == 1:
        return 0
    b, d = run["micro_batch"], run["d_model"]
    src, tgt = padded(run["src_len"], cp), padded(run["tgt_len"], cp)
    self_calls = 2 if run["attention"] == "dynamic" else 1
    calls = ([(src, src)] * self_calls * run["encoder_layers"]
             + ([(tgt, tgt)] * self_calls + [(tgt, src)]) * run["decoder_layers"])
    if run["cp_mode"] == "ring":
        per_micro = sum(16 * b * d * tk * (3 * cp - 2) for _, tk in calls)
    else:
        per_micro = sum(16 * b * d * (tq + tk) for tq, tk in calls)
    return per_micro * run["micro_batches"]


def main():
    runs = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
    print(f"{'source':>7} {'cp':>3} {'mode':>10} {'ms/step':>9} {'RSS before':>11} {'peak RSS':>9} "
          f"{'activations':>11} {'CP bytes':>13} {'predicted':>13} {'other CP bytes':>14}")
    print(f"{'tokens':>7} {'':>3} {'':>10} {'':>9} {'MiB/rank':>11} {'MiB/rank':>9} {'MiB/rank':>11}")
    for run in runs:
        if "skipped" in run:
            print(f"{run['src_len']:>7} {run['cp']:>3} {'':>10} skipped: {run['skipped']}")
            continue
        mib = 1024 * 1024
        comm = run.get("comm", {})
        attention = comm.get("cp send_recv" if run["cp_mode"] == "ring" else "cp all_to_all", {}).get("bytes", 0)
        other = sum(v["bytes"] for k, v in comm.items() if k.startswith("cp ")) - attention
        before, peak = run["mem_before_steps_bytes"] / mib, run["peak_mem_bytes"] / mib
        mode = run["cp_mode"] if run["cp"] > 1 else "-"
        print(f"{run['src_len']:>7} {run['cp']:>3} {mode:>10} {run['ms_per_step']:>9.0f} {before:>11.0f} "
              f"{peak:>9.0f} {peak - before:>11.0f} {attention:>13.0f} {predicted_bytes(run):>13.0f} {other:>14.0f}")


if __name__ == "__main__":
    main()

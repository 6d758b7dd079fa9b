"""Compares two moetrain runs: per-step losses and evaluation losses
(metrics.jsonl) within a relative tolerance, the final checkpoint's parameters (assembled from the
pieces in every rank file) within an absolute tolerance and, with --grad-step,
the gradients both runs dumped at that step (train.dump_grads_step), per
parameter within --grad-rtol of the parameter's largest gradient entry.

usage: compare_runs.py RUN_A RUN_B --steps N [--first-step S] [--rtol 1e-5] [--atol 1e-5]
                       [--grad-step S --grad-rtol 1e-4]
"""
import argparse
import json
import math
import os
import sys

import h5py
import numpy as np


def losses(run, key="loss"):
    out = {}
    with open(os.path.join(run, "metrics.jsonl")) as f:
        for line in f:
            rec = json.loads(line)
            if key in rec:
                out[rec["step"]] = rec[key]
    return out


def parameters(checkpoint):
    """Whole parameters assembled from every rank file's pieces: each piece is
    a run of the flattened block `slice_shape` at `slice_start` of the whole
    `global_shape` tensor (padding past the global shape is dropped)."""
    meta = json.load(open(os.path.join(checkpoint, "meta.json")))
    params = {}
    for name in meta["files"]:
        with h5py.File(os.path.join(checkpoint, name), "r") as f:
            if "model" not in f:
                continue
            def visit(path, obj):
                if isinstance(obj, h5py.Dataset):
                    shape = tuple(int(x) for x in obj.attrs["global_shape"])
                    full = params.setdefault(path, np.full(shape, np.nan, np.float32))
                    block = tuple(int(x) for x in obj.attrs.get("slice_shape", shape))
                    origin = tuple(int(x) for x in obj.attrs.get("slice_start", (0,) * len(shape)))
                    start = int(obj.attrs["flat_offset"])
                    index = np.arange(start, start + obj.shape[0])
                    coords = np.unravel_index(index, block) if block else ()
                    coords = tuple(c + o for c, o in zip(coords, origin))
                    inside = np.ones(index.shape, bool)
                    for c, n in zip(coords, shape):
                        inside &= c < n
                    values = obj[()]
                    if shape:
                        full[tuple(c[inside] for c in coords)] = values[inside]
                    else:
                        full[()] = values[0]
            f["model"].visititems(visit)
    return params


def main():
    p = argparse.ArgumentParser()
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--first-step", type=int, default=1, help="compare losses from this step on (a resumed run)")
    p.add_argument("--rtol", type=float, default=1e-5)
    p.add_argument("--atol", type=float, default=1e-5)
    p.add_argument("--grad-step", type=int, default=0)
    p.add_argument("--grad-rtol", type=float, default=1e-4)
    args = p.parse_args()

    la, lb = losses(args.a), losses(args.b)
    worst = 0.0
    for step in range(args.first_step, args.steps + 1):
        if step not in la or step not in lb:
            sys.exit(f"step {step} missing in {args.a if step not in la else args.b}")
        rel = abs(la[step] - lb[step]) / abs(la[step])
        worst = max(worst, rel)
        if not rel <= args.rtol:
            sys.exit(f"step {step}: loss {la[step]!r} vs {lb[step]!r} (relative difference {rel:.3e})")
    print(f"losses of steps {args.first_step}-{args.steps} agree: worst relative difference {worst:.3e}")

    ea, eb = losses(args.a, "eval_loss"), losses(args.b, "eval_loss")
    ea = {s: v for s, v in ea.items() if s >= args.first_step}
    eb = {s: v for s, v in eb.items() if s >= args.first_step}
    if sorted(ea) != sorted(eb):
        sys.exit(f"evaluations at different steps: {sorted(ea)} vs {sorted(eb)}")
    if ea:
        worst = max(abs(ea[s] - eb[s]) / abs(ea[s]) for s in ea)
        if not worst <= args.rtol:
            sys.exit(f"evaluation losses {ea} vs {eb} (worst relative difference {worst:.3e})")
        print(f"evaluation losses at steps {sorted(ea)} agree: worst relative difference {worst:.3e}")

    ckpt = f"checkpoints/step-{args.steps:06d}"
    pa, pb = parameters(os.path.join(args.a, ckpt)), parameters(os.path.join(args.b, ckpt))
    if set(pa) != set(pb):
        sys.exit(f"parameter names differ: {sorted(set(pa) ^ set(pb))[:5]}")
    worst = 0.0
    for name in sorted(pa):
        if np.isnan(pa[name]).any() or np.isnan(pb[name]).any():
            sys.exit(f"{name}: some elements missing from the checkpoint pieces")
        diff = float(np.max(np.abs(pa[name] - pb[name]))) if pa[name].size else 0.0
        worst = max(worst, diff)
        if not diff <= args.atol:
            sys.exit(f"{name}: max abs difference {diff:.3e} > {args.atol}")
    print(f"{len(pa)} parameters agree: worst absolute difference {worst:.3e}")

    if args.grad_step:
        compare_gradients(args.a, args.b, args.grad_step, args.grad_rtol)


def compare_gradients(run_a, run_b, step, rtol):
    """Every parameter's gradient: |a - b| <= rtol * scale elementwise, where
    scale is the parameter's largest gradient entry (so near-zero entries that
    are sums with cancellation are judged against it, not against themselves),
    but at least 1e-4 of the model's largest gradient entry: a gradient that is
    exactly zero in exact arithmetic (e.g. the attention key bias, to which
    softmax is invariant) comes out as rounding noise of ~1e-11 whose relative
    differences mean nothing."""
    dump = f"grads-step-{step:06d}"
    ga, gb = parameters(os.path.join(run_a, dump)), parameters(os.path.join(run_b, dump))
    if set(ga) != set(gb):
        sys.exit(f"gradient names differ: {sorted(set(ga) ^ set(gb))[:5]}")
    floor = 1e-4 * max(float(np.max(np.abs(g))) for g in gb.values() if g.size)
    worst, worst_name = 0.0, ""
    for name in sorted(ga):
        if np.isnan(ga[name]).any() or np.isnan(gb[name]).any():
            sys.exit(f"{name}: some gradient elements missing from the dump pieces")
        scale = max(float(np.max(np.abs(gb[name]))) if gb[name].size else 0.0, floor)
        diff = float(np.max(np.abs(ga[name] - gb[name]))) if ga[name].size else 0.0
        rel = diff / scale if scale > 0 else diff
        if rel > worst:
            worst, worst_name = rel, name
        if not rel <= rtol:
            sys.exit(f"step {step} gradient of {name}: max difference {diff:.3e} is {rel:.3e} of its "
                     f"largest entry {scale:.3e} (> {rtol})")
    print(f"step {step} gradients of {len(ga)} parameters agree: worst difference {worst:.3e} "
          f"of the parameter's largest entry ({worst_name})")


if __name__ == "__main__":
    main()

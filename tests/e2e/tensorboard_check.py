"""Checks a run's TensorBoard files against its metrics.jsonl.

usage: tensorboard_check.py OUTPUT_DIR

Reads OUTPUT/tensorboard (or, for a run of phases, OUTPUT/tensorboard/PHASE
for each phase named in metrics.jsonl) with the tensorboard package's own
EventAccumulator, which honours the session-start events a resumed segment
writes. Every number of every metrics.jsonl line must be there under its tag
("train/KEY", "eval/KEY" for eval_KEY; "train/KEY/SUB" inside objects and
"train/KEY/INDEX" inside arrays) at the same step with the same value
(as float32, TensorBoard's scalar type), and TensorBoard must hold no step
that metrics.jsonl lacks. Prints one line per folder; exits 1 on a mismatch.
"""
import json
import os
import sys

import numpy as np
from tensorboard.backend.event_processing import event_accumulator


def scalars(record):
    """(tag, value) for each number of a metrics line, as the run tags them."""
    def walk(prefix, value):
        if isinstance(value, bool):
            yield prefix, float(value)
        elif isinstance(value, (int, float)):
            yield prefix, float(value)
        elif isinstance(value, dict):
            for key, sub in value.items():
                yield from walk(f"{prefix}/{key}", sub)
        elif isinstance(value, list):
            for index, sub in enumerate(value):
                yield from walk(f"{prefix}/{index}", sub)
    for key, value in record.items():
        if key == "step":
            continue
        yield from walk("eval/" + key[5:] if key.startswith("eval_") else "train/" + key, value)


def main():
    output = sys.argv[1]
    expected = {}  # folder -> {(tag, step): value}
    for line in open(os.path.join(output, "metrics.jsonl")):
        record = json.loads(line)
        folder = os.path.join(output, "tensorboard", record.get("phase", ""))
        for tag, value in scalars(record):
            expected.setdefault(folder, {})[(tag, record["step"])] = value
    failures = 0
    for folder, want in sorted(expected.items()):
        acc = event_accumulator.EventAccumulator(folder, size_guidance={event_accumulator.SCALARS: 0})
        acc.Reload()
        got = {}
        for tag in acc.Tags()["scalars"]:
            for event in acc.Scalars(tag):
                if (tag, event.step) in got:
                    print(f"FAIL: {folder}: {tag} twice at step {event.step}")
                    failures += 1
                got[(tag, event.step)] = event.value
        for key, value in sorted(want.items()):
            if key not in got:
                print(f"FAIL: {folder}: no {key[0]} at step {key[1]}")
                failures += 1
            elif got[key] != np.float32(value):
                print(f"FAIL: {folder}: {key[0]} at step {key[1]} is {got[key]!r}, metrics.jsonl has {value!r}")
                failures += 1
        for key in sorted(set(got) - set(want)):
            print(f"FAIL: {folder}: {key[0]} at step {key[1]} is not in metrics.jsonl")
            failures += 1
        steps = sorted({step for _, step in want})
        print(f"{os.path.relpath(folder, output)}: {len(want)} scalars of {len(steps)} steps "
              f"({steps[0]}..{steps[-1]}, {len({tag for tag, _ in want})} tags) equal metrics.jsonl")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()

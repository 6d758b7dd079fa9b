"""Runs one `moetrain train` command and reports what the data benchmark
needs from it: the seconds until the first step begins (start-up: reading
the config, opening the dataset, building the model), the process's peak
resident memory, and the median data_wait_ms over its steps.

usage: train_probe.py OUTPUT_DIR -- COMMAND...
(OUTPUT_DIR is the run's --output-dir, where metrics.jsonl is read.)
"""
import json
import resource
import statistics
import subprocess
import sys
import time


def main():
    output_dir = sys.argv[1]
    command = sys.argv[sys.argv.index("--") + 1:]
    start = time.perf_counter()
    first_step = None
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        for line in proc.stdout:
            if first_step is None and line.startswith("step 1/"):
                first_step = time.perf_counter() - start
        rc = proc.wait()
    if rc != 0:
        sys.exit(f"train_probe: the run exited {rc}")
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    waits, first_step_ms = [], 0.0
    with open(f"{output_dir}/metrics.jsonl") as f:
        for line in f:
            record = json.loads(line)
            if "data_wait_ms" in record:
                waits.append(record["data_wait_ms"])
                if record["step"] == 1:
                    first_step_ms = record["step_ms"]
    # The first step's line comes when that step is done: its own time is not start-up.
    startup = first_step - first_step_ms / 1000 if first_step is not None else None
    print(json.dumps({"startup_s": startup, "peak_rss_mb": peak_kb / 1024,
                      "median_data_wait_ms": statistics.median(waits) if waits else None, "steps": len(waits)}))


if __name__ == "__main__":
    main()

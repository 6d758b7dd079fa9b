"""datatrove side of scripts/bench-clean.sh.

Runs datatrove's GopherQualityFilter and its four-step MinHash deduplication
(the settings moetrain uses: word 5-grams, 14 buckets x 8 hashes) on one
JSONL file in a single process (workers=1; tasks=1 except the bucket step, which needs one task per bucket), and writes, per step,
the seconds and the ids of the documents it kept, so the driver can compare
throughput and keep/drop decisions with moetrain's.

usage: datatrove_bench.py INPUT.jsonl WORKDIR RESULT.json
"""
import json
import os
import sys
import time


def kept_ids(folder):
    ids = set()
    for root, _, files in os.walk(folder):
        for name in files:
            if name.endswith(".jsonl"):
                with open(os.path.join(root, name)) as f:
                    for line in f:
                        ids.add(json.loads(line)["id"])
    return ids


def main():
    src, work, result_path = sys.argv[1:4]
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import (MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter,
                                          MinhashDedupSignature)
    from datatrove.pipeline.dedup.minhash import MinhashConfig
    from datatrove.pipeline.filters import GopherQualityFilter
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter
    from datatrove.utils.hashing import HashConfig

    folder, name = os.path.split(os.path.abspath(src))

    def reader():
        return JsonlReader(folder, glob_pattern=name, text_key="text", id_key="id", compression=None)

    def run(steps, logs, tasks=1):
        # workers=1: every task runs in this one process, one after another.
        LocalPipelineExecutor(pipeline=steps, tasks=tasks, workers=1, logging_dir=f"{work}/logs/{logs}").run()

    result = {}
    # Warm-up: spaCy's tokenizer loads lazily; keep that out of the timing.
    from datatrove.utils.text import split_into_words
    split_into_words("Warm up the word tokenizer.")

    t = time.perf_counter()
    run([reader(), GopherQualityFilter(), JsonlWriter(f"{work}/gopher", output_filename="kept.jsonl", compression=None)],
        "gopher")
    result["gopher"] = {"seconds": time.perf_counter() - t, "kept": sorted(kept_ids(f"{work}/gopher"))}

    config = MinhashConfig(n_grams=5, num_buckets=14, hashes_per_bucket=8, hash_config=HashConfig(precision=64))
    t = time.perf_counter()
    run([reader(), MinhashDedupSignature(output_folder=f"{work}/sigs", config=config)], "sigs")
    run([MinhashDedupBuckets(input_folder=f"{work}/sigs", output_folder=f"{work}/buckets", config=config)], "buckets",
        tasks=config.num_buckets)  # datatrove needs one task per bucket here
    run([MinhashDedupCluster(input_folder=f"{work}/buckets", output_folder=f"{work}/remove_ids", config=config)],
        "cluster")
    run([reader(), MinhashDedupFilter(input_folder=f"{work}/remove_ids"),
         JsonlWriter(f"{work}/minhash", output_filename="kept.jsonl", compression=None)], "filter")
    result["minhash"] = {"seconds": time.perf_counter() - t, "kept": sorted(kept_ids(f"{work}/minhash"))}
    with open(result_path, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()

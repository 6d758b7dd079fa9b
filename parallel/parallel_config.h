// ParallelConfig: the `parallel:` section of the YAML config as plain values.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace moetrain::parallel {

struct ParallelConfig {
  int64_t dp = 0;          // data-parallel size; 0: derived as world / (tp * pp)
  int64_t tp = 1;          // tensor-parallel size
  int64_t pp = 1;          // pipeline-parallel size
  int64_t ep = 1;          // expert-parallel size; divides dp
  // Context-parallel size: every sequence split over this many ranks
  // (parallel/context_parallel.h), attention across them in cp_mode
  // ("all_to_all" or "ring").
  int64_t cp = 1;
  std::string cp_mode = "all_to_all";
  int64_t zero_stage = 0;  // 0..3
  // Micro-batches per step on each rank (the pipeline's depth); 0: taken
  // from the batch sizes, global_batch / (micro_batch * dp), which it must
  // equal when set.
  int64_t microbatches = 0;
  std::string schedule = "1f1b";  // pipeline schedule: 1f1b | gpipe
  // Where pipeline stages 1..pp-1 begin: pipeline unit names
  // ("encoder.layers.2", "decoder.final_norm", ...) or unit indices. Empty:
  // balanced by parameter count.
  std::vector<std::string> pp_cuts;
  double bucket_mb = 25.0;          // gradient all-reduce bucket size
  bool overlap_grad_reduce = true;  // reduce gradient buckets during the backward
  double timeout_s = 300.0;         // a collective slower than this aborts the job
  // Who carries the data groups' collectives: auto | nccl | mpi
  // (parallel/backend.h).
  std::string backend = "auto";
};

}  // namespace moetrain::parallel

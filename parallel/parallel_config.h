// ParallelConfig: the `parallel:` section of the YAML config as plain values.
#pragma once

#include <cstdint>
#include <string>

namespace moetrain::parallel {

struct ParallelConfig {
  int64_t dp = 0;  // data-parallel size; 0: derived as world / (tp * pp)
  int64_t tp = 1;  // tensor-parallel size
  int64_t pp = 1;  // pipeline-parallel size
  int64_t ep = 1;  // expert-parallel size; divides dp
  int64_t zero_stage = 0;          // 0..3
  int64_t microbatches = 0;        // pipeline micro-batches; 0: from the batch sizes
  std::string schedule = "1f1b";   // 1f1b | gpipe
  double bucket_mb = 25.0;         // gradient all-reduce bucket size
  bool overlap_grad_reduce = true; // reduce gradient buckets during the backward
  double timeout_s = 300.0;        // a collective slower than this aborts the job
};

}  // namespace moetrain::parallel

// What the benchmark programs share about the device they time: waiting for
// its queued work, and the CUDA caching allocator's figures (zero on the CPU,
// and in builds whose LibTorch has no CUDA).
#pragma once

#include <torch/torch.h>

#include "monitor/memory_usage.h"

namespace moetrain::bench {

// Waits for the device's queued work, so wall-clock time covers it.
inline void synchronize(const torch::Device& device) {
  if (device.is_cuda()) torch::cuda::synchronize(device.index());  // -1: the current device
}

// The CUDA caching allocator's figures live in monitor/memory_usage.h, which
// the training loop shares.
using monitor::CudaMemory;
inline CudaMemory cuda_memory_stats(const torch::Device& device) { return monitor::cuda_memory(device); }
using monitor::reset_cuda_peak;

}  // namespace moetrain::bench

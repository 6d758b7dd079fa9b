// How much memory this process uses: its resident set (now, and at its peak
// since it started) and, on a GPU, the CUDA caching allocator's figures
// (zero on the CPU and in builds whose LibTorch has no CUDA). The training
// loop records them with each metrics line; the benchmarks print them.
#pragma once

#include <torch/torch.h>

#include <cstdint>

namespace moetrain::monitor {

int64_t resident_bytes();       // now (Linux: /proc/self/statm); 0 if unreadable
int64_t peak_resident_bytes();  // the high-water mark (getrusage)

// The caching allocator's bytes of live tensors now and at their peak since
// the last reset, and the peak it reserved from the driver.
struct CudaMemory {
  int64_t allocated_now = 0, allocated_peak = 0, reserved_peak = 0;
};

CudaMemory cuda_memory(const torch::Device& device);
void reset_cuda_peak(const torch::Device& device);

}  // namespace moetrain::monitor

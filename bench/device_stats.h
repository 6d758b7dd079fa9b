// What the benchmark programs share about the device they time: waiting for
// its queued work, and the CUDA caching allocator's figures (zero on the CPU,
// and in builds whose LibTorch has no CUDA).
#pragma once

#include <torch/torch.h>

#ifdef MOETRAIN_BENCH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

namespace moetrain::bench {

// Waits for the device's queued work, so wall-clock time covers it.
inline void synchronize(const torch::Device& device) {
  if (device.is_cuda()) torch::cuda::synchronize(device.index());  // -1: the current device
}

// The caching allocator's bytes of live tensors now and at their peak since
// the last reset, and the peak it reserved from the driver.
struct CudaMemory {
  int64_t allocated_now = 0, allocated_peak = 0, reserved_peak = 0;
};

inline void reset_cuda_peak(const torch::Device& device) {
#ifdef MOETRAIN_BENCH_CUDA
  if (device.is_cuda()) c10::cuda::CUDACachingAllocator::resetPeakStats(device.index() < 0 ? 0 : device.index());
#else
  (void)device;
#endif
}

inline CudaMemory cuda_memory_stats(const torch::Device& device) {
  CudaMemory m;
#ifdef MOETRAIN_BENCH_CUDA
  if (device.is_cuda()) {
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device.index() < 0 ? 0 : device.index());
    const auto all = static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE);
    m.allocated_now = stats.allocated_bytes[all].current;
    m.allocated_peak = stats.allocated_bytes[all].peak;
    m.reserved_peak = stats.reserved_bytes[all].peak;
  }
#else
  (void)device;
#endif
  return m;
}

}  // namespace moetrain::bench

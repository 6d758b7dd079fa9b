#include "monitor/memory_usage.h"

#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>

#ifdef MOETRAIN_MONITOR_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

namespace moetrain::monitor {

int64_t resident_bytes() {
  std::FILE* f = std::fopen("/proc/self/statm", "r");
  if (f == nullptr) return 0;
  long long size = 0, resident = 0;
  const int read = std::fscanf(f, "%lld %lld", &size, &resident);
  std::fclose(f);
  return read == 2 ? resident * static_cast<int64_t>(sysconf(_SC_PAGESIZE)) : 0;
}

int64_t peak_resident_bytes() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<int64_t>(usage.ru_maxrss) * 1024;  // ru_maxrss is in KiB on Linux
}

CudaMemory cuda_memory(const torch::Device& device) {
  CudaMemory m;
#ifdef MOETRAIN_MONITOR_CUDA
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

void reset_cuda_peak(const torch::Device& device) {
#ifdef MOETRAIN_MONITOR_CUDA
  if (device.is_cuda()) c10::cuda::CUDACachingAllocator::resetPeakStats(device.index() < 0 ? 0 : device.index());
#else
  (void)device;
#endif
}

}  // namespace moetrain::monitor

// MOETRAIN_CUDA_CHECK: every CUDA runtime call and kernel launch in kernels/cuda
// goes through it; a failure throws std::runtime_error naming the call, the
// file and line, and CUDA's own message.
#pragma once

#include <cuda_runtime_api.h>

#include <stdexcept>
#include <string>

namespace moetrain::kernels::cuda {

inline void check_cuda(cudaError_t status, const char* call, const char* file, int line) {
  if (status != cudaSuccess) {
    throw std::runtime_error(std::string(call) + " failed at " + file + ":" + std::to_string(line) + ": " +
                             cudaGetErrorString(status));
  }
}

}  // namespace moetrain::kernels::cuda

#define MOETRAIN_CUDA_CHECK(call) ::moetrain::kernels::cuda::check_cuda((call), #call, __FILE__, __LINE__)
// After a <<<...>>> launch: launch-configuration errors surface here.
#define MOETRAIN_CUDA_CHECK_LAUNCH(kernel_name) \
  ::moetrain::kernels::cuda::check_cuda(cudaGetLastError(), "launch of " kernel_name, __FILE__, __LINE__)

// What the kernel tests share: BackendGuard sets the kernel backend for one
// scope, and SKIP_WITHOUT_CUDA_KERNELS() skips a test, saying why, where no
// GPU is present or the CUDA kernels were not compiled.
#pragma once

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "kernels/dispatch.h"

namespace moetrain::kernels {

class BackendGuard {
 public:
  explicit BackendGuard(KernelBackend backend) : previous_(kernel_backend()) { set_kernel_backend(backend); }
  ~BackendGuard() { set_kernel_backend(previous_); }
  BackendGuard(const BackendGuard&) = delete;
  BackendGuard& operator=(const BackendGuard&) = delete;

 private:
  KernelBackend previous_;
};

}  // namespace moetrain::kernels

#define SKIP_WITHOUT_CUDA_KERNELS()                                                               \
  do {                                                                                            \
    if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device: fused kernels not run";    \
    if (!::moetrain::kernels::cuda_kernels_compiled())                                            \
      GTEST_SKIP() << "CUDA kernels not compiled in this build (MOETRAIN_WITH_CUDA_KERNELS=OFF)"; \
  } while (0)

// Launcher of the multi-tensor AdamW kernel (kernels/cuda/adamw.cu): plain
// C++ over raw device pointers. The launcher splits the groups into chunks,
// lists them in a table passed as the kernel's argument (one block per
// chunk), and launches once per table that fills up.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace moetrain::kernels::cuda {

// Groups and chunks one launch's table holds; more groups (or chunks) take
// further launches.
constexpr int kAdamWMaxGroupsPerLaunch = 256;
constexpr int kAdamWMaxChunksPerLaunch = 2048;

// One group of `numel` fp32 elements in each of four device buffers.
struct AdamWGroup {
  float* param = nullptr;
  const float* grad = nullptr;
  float* exp_avg = nullptr;
  float* exp_avg_sq = nullptr;
  int64_t numel = 0;
  bool weight_decay = false;
};

// The update's constants, already rounded to fp32:
//   p *= decay_factor (weight_decay groups); m = beta1 m + one_minus_beta1 g;
//   v = beta2 v + one_minus_beta2 g g; p += step_size * (m / (sqrt(v) / sqrt_bias_correction2 + eps)).
struct AdamWScalars {
  float decay_factor = 1.0f;  // 1 - lr * weight_decay
  float beta1 = 0.0f;
  float one_minus_beta1 = 0.0f;
  float beta2 = 0.0f;
  float one_minus_beta2 = 0.0f;
  float sqrt_bias_correction2 = 1.0f;  // sqrt(1 - beta2^step)
  float eps = 0.0f;
  float step_size = 0.0f;  // -lr / (1 - beta1^step)
};

// Updates every group in place on `stream`; returns the number of launches.
int launch_adamw(const AdamWGroup* groups, int64_t num_groups, const AdamWScalars& scalars, cudaStream_t stream);

}  // namespace moetrain::kernels::cuda

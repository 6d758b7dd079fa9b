// Fused LayerNorm / RMSNorm + affine + activation, forward and backward.
//
// Forward: one row per warp (rows up to 256 wide) or per block (wider rows,
// up to kLayerNormMaxCols). Each thread holds its kItems elements of the row in
// registers as fp32: the mean and then the variance around it are two
// reductions over those registers (no E[x^2] - E[x]^2 cancellation), and y is
// written from them in the same pass, with weight, bias and the activation.
//
// Backward: the same row layout computes dx; the pre-activation
// z = xhat * weight + bias is recomputed from x, mean and rstd. A second kernel
// sums g * xhat and g (g = dy * act'(z)) over chunks of rows, column by column,
// into fp32 partials [chunks, cols] that the caller adds up: deterministic, no
// atomics.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/layer_norm_launch.h"

namespace moetrain::kernels::cuda {

namespace {

// Rows of at most this many columns get one warp each, kWarpRowsPerBlock warps
// to a block; wider rows get a block each.
constexpr int kMaxWarpRowCols = 256;
constexpr int kWarpRowsPerBlock = 4;
constexpr int kWarpRowThreads = 32 * kWarpRowsPerBlock;
constexpr int kMaxBlockRowThreads = 1024;

// The weight/bias gradient kernel: a block covers kParamCols columns with
// kParamRowThreads threads per column walking down one chunk of rows.
constexpr int kParamCols = 32;
constexpr int kParamRowThreads = 8;
constexpr int64_t kMaxParamPartials = 256;
constexpr int64_t kMinRowsPerPartial = 32;

__device__ __forceinline__ float normal_cdf(float z) { return 0.5f * (1.0f + erff(z * 0.70710678118654752f)); }

__device__ __forceinline__ float sigmoid(float z) { return 1.0f / (1.0f + expf(-z)); }

__device__ __forceinline__ float activate(float z, NormAct act) {
  switch (act) {
    case NormAct::ReLU: return z < 0.0f ? 0.0f : z;
    case NormAct::GELU: return z * normal_cdf(z);  // exact (erf) form
    case NormAct::SiLU: return z * sigmoid(z);
    case NormAct::None: break;
  }
  return z;
}

// d act(z) / dz.
__device__ __forceinline__ float activation_grad(float z, NormAct act) {
  switch (act) {
    case NormAct::ReLU: return z > 0.0f ? 1.0f : 0.0f;
    case NormAct::GELU: {
      const float density = 0.39894228040143268f * expf(-0.5f * z * z);  // standard normal pdf
      return normal_cdf(z) + z * density;
    }
    case NormAct::SiLU: {
      const float s = sigmoid(z);
      return s * (1.0f + z * (1.0f - s));
    }
    case NormAct::None: break;
  }
  return 1.0f;
}

// The threads that share one row: a warp (kWarpPerRow) or the whole block.
// Thread `lane` of the team holds columns lane, lane + size, lane + 2 size, ...
template <bool kWarpPerRow>
struct RowTeam {
  int64_t row;
  int lane;
  int size;

  __device__ RowTeam() {
    if constexpr (kWarpPerRow) {
      row = static_cast<int64_t>(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5);
      lane = static_cast<int>(threadIdx.x & 31);
      size = 32;
    } else {
      row = blockIdx.x;
      lane = static_cast<int>(threadIdx.x);
      size = static_cast<int>(blockDim.x);
    }
  }

  // Sum of v over the team, returned to every thread of it. The block version
  // synchronises the block: every thread must call it.
  __device__ float sum(float v, float* scratch) const {
    if constexpr (kWarpPerRow) {
      (void)scratch;
      return warp_sum(v);
    } else {
      return block_sum(v, scratch);
    }
  }
};

template <typename T, int kItems, bool kWarpPerRow>
__global__ void __launch_bounds__(kWarpPerRow ? kWarpRowThreads : kMaxBlockRowThreads)
    layer_norm_forward_kernel(const T* __restrict__ x, const float* __restrict__ weight, const float* __restrict__ bias,
                              T* __restrict__ y, float* __restrict__ mean_out, float* __restrict__ rstd_out,
                              int64_t rows, int cols, float eps, NormAct act, bool rms) {
  __shared__ float scratch[32];
  const RowTeam<kWarpPerRow> team;
  // Only whole warps leave here (warp-per-row); in block mode row < rows always.
  if (team.row >= rows) return;
  const int64_t offset = team.row * cols;
  const float inv_cols = 1.0f / static_cast<float>(cols);

  float v[kItems];
  float sum = 0.0f;
#pragma unroll
  for (int k = 0; k < kItems; ++k) {
    const int col = team.lane + k * team.size;
    v[k] = col < cols ? to_float(x[offset + col]) : 0.0f;
    sum += v[k];
  }
  const float mean = rms ? 0.0f : team.sum(sum, scratch) * inv_cols;

  float squares = 0.0f;
#pragma unroll
  for (int k = 0; k < kItems; ++k) {
    const int col = team.lane + k * team.size;
    if (col < cols) {
      const float centred = v[k] - mean;
      squares += centred * centred;
    }
  }
  const float rstd = rsqrtf(team.sum(squares, scratch) * inv_cols + eps);
  if (team.lane == 0) {
    mean_out[team.row] = mean;
    rstd_out[team.row] = rstd;
  }

#pragma unroll
  for (int k = 0; k < kItems; ++k) {
    const int col = team.lane + k * team.size;
    if (col < cols) {
      float z = (v[k] - mean) * rstd * weight[col];
      if (bias != nullptr) z += bias[col];
      y[offset + col] = from_float<T>(activate(z, act));
    }
  }
}

template <typename T, int kItems, bool kWarpPerRow>
__global__ void __launch_bounds__(kWarpPerRow ? kWarpRowThreads : kMaxBlockRowThreads)
    layer_norm_backward_input_kernel(const T* __restrict__ dy, const T* __restrict__ x,
                                     const float* __restrict__ weight, const float* __restrict__ bias,
                                     const float* __restrict__ mean, const float* __restrict__ rstd, T* __restrict__ dx,
                                     int64_t rows, int cols, NormAct act, bool rms) {
  __shared__ float scratch[32];
  const RowTeam<kWarpPerRow> team;
  if (team.row >= rows) return;
  const int64_t offset = team.row * cols;
  const float inv_cols = 1.0f / static_cast<float>(cols);
  const float row_mean = mean[team.row];
  const float row_rstd = rstd[team.row];

  // xhat and dxhat = dy * act'(z) * weight for this thread's columns.
  float xhat[kItems];
  float dxhat[kItems];
  float sum_dxhat = 0.0f;
  float sum_dxhat_xhat = 0.0f;
#pragma unroll
  for (int k = 0; k < kItems; ++k) {
    const int col = team.lane + k * team.size;
    xhat[k] = 0.0f;
    dxhat[k] = 0.0f;
    if (col < cols) {
      const float xh = (to_float(x[offset + col]) - row_mean) * row_rstd;
      const float w = weight[col];
      float g = to_float(dy[offset + col]);
      if (act != NormAct::None) g *= activation_grad(xh * w + (bias != nullptr ? bias[col] : 0.0f), act);
      xhat[k] = xh;
      dxhat[k] = g * w;
      sum_dxhat += dxhat[k];
      sum_dxhat_xhat += dxhat[k] * xh;
    }
  }
  // LayerNorm: dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat));
  // RMSNorm has no mean to subtract, so no mean(dxhat) term.
  const float mean_dxhat = rms ? 0.0f : team.sum(sum_dxhat, scratch) * inv_cols;
  const float mean_dxhat_xhat = team.sum(sum_dxhat_xhat, scratch) * inv_cols;

#pragma unroll
  for (int k = 0; k < kItems; ++k) {
    const int col = team.lane + k * team.size;
    if (col < cols) {
      dx[offset + col] = from_float<T>(row_rstd * (dxhat[k] - mean_dxhat - xhat[k] * mean_dxhat_xhat));
    }
  }
}

// Block (kParamCols, kParamRowThreads); grid (column tiles, partials). Block
// (i, p) sums rows [p * rows_per_partial, (p + 1) * rows_per_partial) of
// columns [32 i, 32 i + 32) into row p of the partials, always in the same
// order.
template <typename T>
__global__ void __launch_bounds__(kParamCols* kParamRowThreads)
    layer_norm_backward_params_kernel(const T* __restrict__ dy, const T* __restrict__ x,
                                      const float* __restrict__ weight, const float* __restrict__ bias,
                                      const float* __restrict__ mean, const float* __restrict__ rstd,
                                      float* __restrict__ dweight_partial, float* __restrict__ dbias_partial,
                                      int64_t rows, int cols, int64_t rows_per_partial, NormAct act) {
  __shared__ float partial_weight[kParamRowThreads][kParamCols];
  __shared__ float partial_bias[kParamRowThreads][kParamCols];
  const int col = static_cast<int>(blockIdx.x) * kParamCols + static_cast<int>(threadIdx.x);
  const int64_t row_begin = static_cast<int64_t>(blockIdx.y) * rows_per_partial;
  const int64_t row_end = row_begin + rows_per_partial < rows ? row_begin + rows_per_partial : rows;

  float acc_weight = 0.0f;
  float acc_bias = 0.0f;
  if (col < cols) {
    const float w = weight[col];
    const float b = bias != nullptr ? bias[col] : 0.0f;
    for (int64_t r = row_begin + threadIdx.y; r < row_end; r += kParamRowThreads) {
      const int64_t i = r * cols + col;
      const float xh = (to_float(x[i]) - mean[r]) * rstd[r];
      float g = to_float(dy[i]);
      if (act != NormAct::None) g *= activation_grad(xh * w + b, act);
      acc_weight += g * xh;
      acc_bias += g;
    }
  }
  partial_weight[threadIdx.y][threadIdx.x] = acc_weight;
  partial_bias[threadIdx.y][threadIdx.x] = acc_bias;
  __syncthreads();

  if (threadIdx.y == 0 && col < cols) {
    float total_weight = 0.0f;
    float total_bias = 0.0f;
#pragma unroll
    for (int j = 0; j < kParamRowThreads; ++j) {
      total_weight += partial_weight[j][threadIdx.x];
      total_bias += partial_bias[j][threadIdx.x];
    }
    const int64_t out = static_cast<int64_t>(blockIdx.y) * cols + col;
    dweight_partial[out] = total_weight;
    if (dbias_partial != nullptr) dbias_partial[out] = total_bias;
  }
}

// How the rows of a launch are spread over threads.
struct RowPlan {
  bool warp_per_row = false;
  int items = 0;    // elements per thread (kItems)
  int threads = 0;  // per block
  unsigned int blocks = 0;
};

RowPlan plan_rows(int64_t rows, int64_t cols) {
  RowPlan plan;
  if (cols <= kMaxWarpRowCols) {
    plan.warp_per_row = true;
    plan.items = 1;
    while (plan.items * 32 < cols) plan.items *= 2;  // 1, 2, 4 or 8
    plan.threads = kWarpRowThreads;
    plan.blocks = ceil_div(rows, kWarpRowsPerBlock);
  } else {
    plan.items = cols <= 2048 ? 4 : cols <= 8192 ? 8 : 16;
    plan.threads = static_cast<int>(ceil_div(ceil_div(cols, plan.items), 32)) * 32;  // <= 1024
    plan.blocks = static_cast<unsigned int>(rows);
  }
  return plan;
}

// Calls f(std::integral_constant<int, kItems>, std::bool_constant<kWarpPerRow>)
// for the kernel instance that fits `plan`.
template <typename F>
void dispatch_row_plan(const RowPlan& plan, F&& f) {
  if (plan.warp_per_row) {
    switch (plan.items) {
      case 1: f(std::integral_constant<int, 1>{}, std::true_type{}); return;
      case 2: f(std::integral_constant<int, 2>{}, std::true_type{}); return;
      case 4: f(std::integral_constant<int, 4>{}, std::true_type{}); return;
      case 8: f(std::integral_constant<int, 8>{}, std::true_type{}); return;
      default: break;
    }
  } else {
    switch (plan.items) {
      case 4: f(std::integral_constant<int, 4>{}, std::false_type{}); return;
      case 8: f(std::integral_constant<int, 8>{}, std::false_type{}); return;
      case 16: f(std::integral_constant<int, 16>{}, std::false_type{}); return;
      default: break;
    }
  }
  throw std::logic_error("layer_norm: no kernel for " + std::to_string(plan.items) + " elements per thread");
}

void check_sizes(const char* who, int64_t rows, int64_t cols) {
  if (cols <= 0 || cols > kLayerNormMaxCols) {
    throw std::invalid_argument(std::string(who) + ": row width must be in [1, " + std::to_string(kLayerNormMaxCols) +
                                "], got " + std::to_string(cols));
  }
  if (rows < 0 || rows > INT32_MAX) {
    throw std::invalid_argument(std::string(who) + ": row count must be in [0, 2^31), got " + std::to_string(rows));
  }
}

int64_t rows_per_partial(int64_t rows) {
  const int64_t spread = (rows + kMaxParamPartials - 1) / kMaxParamPartials;
  return spread > kMinRowsPerPartial ? spread : kMinRowsPerPartial;
}

}  // namespace

void layer_norm_forward(const void* x, const float* weight, const float* bias, void* y, float* mean, float* rstd,
                        int64_t rows, int64_t cols, DType dtype, float eps, NormAct act, bool rms,
                        cudaStream_t stream) {
  check_sizes("layer_norm_forward", rows, cols);
  if (rows == 0) return;
  const RowPlan plan = plan_rows(rows, cols);
  dispatch_dtype(dtype, [&](auto element) {
    using T = decltype(element);
    dispatch_row_plan(plan, [&](auto items, auto warp_per_row) {
      layer_norm_forward_kernel<T, decltype(items)::value, decltype(warp_per_row)::value>
          <<<plan.blocks, plan.threads, 0, stream>>>(static_cast<const T*>(x), weight, bias, static_cast<T*>(y), mean,
                                                     rstd, rows, static_cast<int>(cols), eps, act, rms);
      MOETRAIN_CUDA_CHECK_LAUNCH("layer_norm_forward_kernel");
    });
  });
}

int64_t layer_norm_backward_partials(int64_t rows) {
  if (rows <= 0) return 0;
  const int64_t per = rows_per_partial(rows);
  return (rows + per - 1) / per;
}

void layer_norm_backward(const void* dy, const void* x, const float* weight, const float* bias, const float* mean,
                         const float* rstd, void* dx, float* dweight_partial, float* dbias_partial, int64_t rows,
                         int64_t cols, DType dtype, NormAct act, bool rms, cudaStream_t stream) {
  check_sizes("layer_norm_backward", rows, cols);
  if (rows == 0) return;
  const RowPlan plan = plan_rows(rows, cols);
  const int64_t per_partial = rows_per_partial(rows);
  const dim3 param_grid(ceil_div(cols, kParamCols), static_cast<unsigned int>(layer_norm_backward_partials(rows)));
  const dim3 param_block(kParamCols, kParamRowThreads);
  dispatch_dtype(dtype, [&](auto element) {
    using T = decltype(element);
    dispatch_row_plan(plan, [&](auto items, auto warp_per_row) {
      layer_norm_backward_input_kernel<T, decltype(items)::value, decltype(warp_per_row)::value>
          <<<plan.blocks, plan.threads, 0, stream>>>(static_cast<const T*>(dy), static_cast<const T*>(x), weight, bias,
                                                     mean, rstd, static_cast<T*>(dx), rows, static_cast<int>(cols), act,
                                                     rms);
      MOETRAIN_CUDA_CHECK_LAUNCH("layer_norm_backward_input_kernel");
    });
    layer_norm_backward_params_kernel<T><<<param_grid, param_block, 0, stream>>>(
        static_cast<const T*>(dy), static_cast<const T*>(x), weight, bias, mean, rstd, dweight_partial, dbias_partial,
        rows, static_cast<int>(cols), per_partial, act);
    MOETRAIN_CUDA_CHECK_LAUNCH("layer_norm_backward_params_kernel");
  });
}

}  // namespace moetrain::kernels::cuda

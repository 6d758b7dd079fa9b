// Launchers of the fused LayerNorm / RMSNorm (+ activation) CUDA kernels
// (kernels/cuda/layer_norm.cu), as plain C++: raw device pointers, sizes, the
// element type and a stream. kernels/layer_norm.cpp is the only caller.
//
// Layout: x, y, dy, dx are [rows, cols] row-major in the element type `dtype`;
// weight and bias are [cols] fp32 (bias may be null); mean and rstd are
// [rows] fp32 (mean is written as 0 for RMSNorm).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/cuda/dtype.h"

namespace moetrain::kernels::cuda {

// The activation applied after the affine transform.
enum class NormAct : int { None = 0, ReLU = 1, GELU = 2, SiLU = 3 };

// The widest row the kernels take (a row is held in registers).
constexpr int64_t kLayerNormMaxCols = 16384;

// y = act(xhat * weight + bias), xhat = (x - mean) * rstd (LayerNorm) or
// x * rstd (RMSNorm, rms = true). Writes y, mean and rstd.
void layer_norm_forward(const void* x, const float* weight, const float* bias, void* y, float* mean, float* rstd,
                        int64_t rows, int64_t cols, DType dtype, float eps, NormAct act, bool rms, cudaStream_t stream);

// Rows of the fp32 partial sums that layer_norm_backward writes for the weight
// and bias gradients: the caller allocates [layer_norm_backward_partials(rows),
// cols] for each and sums them over the first dimension.
int64_t layer_norm_backward_partials(int64_t rows);

// Given dy, writes dx [rows, cols] and the partial sums of dweight = sum over
// rows of g * xhat and dbias = sum over rows of g, g = dy * act'(xhat * weight +
// bias). dbias_partial may be null when no bias gradient is wanted.
void layer_norm_backward(const void* dy, const void* x, const float* weight, const float* bias, const float* mean,
                         const float* rstd, void* dx, float* dweight_partial, float* dbias_partial, int64_t rows,
                         int64_t cols, DType dtype, NormAct act, bool rms, cudaStream_t stream);

}  // namespace moetrain::kernels::cuda

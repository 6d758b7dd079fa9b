// Launchers of the fused softmax cross-entropy kernels (kernels/cuda/cross_entropy.cu),
// declared as plain C++: raw device pointers, sizes, the element type and a stream.
//
// logits [rows, vocab] row-major contiguous in `dtype`; targets [rows] int64;
// mask [rows] bool (true = the row counts). A row counts when its mask is true
// AND its target lies in [0, vocab); any other row is treated as masked: its
// loss is 0, its gradient row is 0, and its logits and target logit are never
// read (so padding rows may hold any target id). The caller is expected to
// reject counted rows with out-of-range targets itself.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/cuda/dtype.h"

namespace moetrain::kernels::cuda {

// Per row, in one pass over the logits (fp32 arithmetic whatever the dtype):
//   lse[i]  = log sum_j exp(z_ij)
//   loss[i] = (1 - ls) * (lse[i] - z_i,t_i) + ls * (lse[i] - mean_j z_ij)
// both fp32 [rows]; loss and lse are 0 on rows that do not count.
void launch_cross_entropy_forward(const void* logits, DType dtype, const int64_t* targets, const bool* mask,
                                  int64_t rows, int64_t vocab, float label_smoothing, float* loss, float* lse,
                                  cudaStream_t stream);

// grad_logits[i, j] = grad_loss[i] * (exp(z_ij - lse[i]) - (1 - ls) * [j == t_i] - ls / vocab)
// on rows that count, 0 elsewhere; written in `dtype`. grad_loss [rows] fp32,
// lse [rows] fp32 as written by the forward launcher. grad_logits
// [rows, vocab] row-major contiguous, may not alias logits.
void launch_cross_entropy_backward(const void* logits, DType dtype, const int64_t* targets, const bool* mask,
                                   const float* lse, const float* grad_loss, int64_t rows, int64_t vocab,
                                   float label_smoothing, void* grad_logits, cudaStream_t stream);

}  // namespace moetrain::kernels::cuda

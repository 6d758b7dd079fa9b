// Launchers of the MoE permutation kernels (kernels/cuda/moe_permute.cu):
// plain C++ over raw device pointers, so callers need no CUDA headers beyond
// the runtime API. Rows are dense: row i of a [rows, dim] buffer starts at
// element i * dim. Every launcher enqueues on `stream` and returns at once.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/cuda/dtype.h"

namespace moetrain::kernels::cuda {

// out[r, :] = x[token_index[r], :] for r in [0, num_rows); x is
// [num_tokens, dim], out [num_rows, dim], both of `dtype`. An index outside
// [0, num_tokens) stops the kernel with a device-side trap.
void launch_permute_rows(const void* x, const int64_t* token_index, void* out, int64_t num_tokens, int64_t num_rows,
                         int64_t dim, DType dtype, cudaStream_t stream);

// For every token t in [0, num_tokens):
//   out[t, :] = sum over j in [offsets[t], offsets[t+1]) of w * src[rows[j], :],
// w = weights[rows[j]] (fp32) or 1 when weights is null, summed in fp32 in
// the order of j and stored in `dtype` (src and out share it). offsets has
// num_tokens + 1 entries; a token with an empty range gets zeros.
void launch_gather_sum_rows(const void* src, const float* weights, const int64_t* rows, const int64_t* offsets,
                            void* out, int64_t num_tokens, int64_t dim, DType dtype, cudaStream_t stream);

// Backward of the gate-weighted unpermutation, for every row r in [0, num_rows):
//   grad_expert_output[r, :] = gates[r] * grad_y[token_index[r], :]          (skipped when null)
//   grad_gates[r] = dot(expert_output[r, :], grad_y[token_index[r], :]), fp32 (skipped when null)
// grad_y, expert_output and grad_expert_output are of `dtype`; gates and
// grad_gates fp32. token_index must hold valid rows of grad_y.
void launch_unpermute_rows_backward(const void* grad_y, const void* expert_output, const float* gates,
                                    const int64_t* token_index, void* grad_expert_output, float* grad_gates,
                                    int64_t num_rows, int64_t dim, DType dtype, cudaStream_t stream);

}  // namespace moetrain::kernels::cuda

// MoE token permutation: permute_rows gathers token rows into expert order,
// unpermute_rows scales each expert output row by its gate and sums it back
// into its token's row. One dispatch point each: CUDA tensors of float32,
// bfloat16 or float16 go to the fused kernels in kernels/cuda/moe_permute.cu
// (deterministic: every output row is summed by one block, in row order, with
// no float atomics); everything else to the ATen references beside them.
#pragma once

#include <torch/torch.h>

#include <cstdint>

namespace moetrain::kernels {

// out[r] = x[token_index[r]]: rows of x [N, D] gathered in expert order;
// token_index [M] int64 with values in [0, N). Returns [M, D] in x's dtype.
// Differentiable in x: grad_x[t] = sum of grad_out rows r with
// token_index[r] == t (fp32 accumulation); tokens with no row get zeros.
torch::Tensor permute_rows(const torch::Tensor& x, const torch::Tensor& token_index);

// y[t] = sum over r with token_index[r] == t of gates[r] * expert_output[r],
// accumulated in fp32 and returned in expert_output's dtype, [num_tokens, D].
// expert_output [M, D], gates [M] float32, token_index [M] int64 with values
// in [0, num_tokens). Tokens with no row get zeros. Differentiable in
// expert_output and gates:
//   grad_expert_output[r] = gates[r] * grad_y[token_index[r]]
//   grad_gates[r]         = dot(expert_output[r], grad_y[token_index[r]])  (fp32)
torch::Tensor unpermute_rows(const torch::Tensor& expert_output, const torch::Tensor& gates,
                             const torch::Tensor& token_index, int64_t num_tokens);

// The ATen references (what the dispatch points fall back to): index_select,
// and an fp32 index_add of the gate-weighted rows.
torch::Tensor permute_rows_reference(const torch::Tensor& x, const torch::Tensor& token_index);
torch::Tensor unpermute_rows_reference(const torch::Tensor& expert_output, const torch::Tensor& gates,
                                       const torch::Tensor& token_index, int64_t num_tokens);

}  // namespace moetrain::kernels

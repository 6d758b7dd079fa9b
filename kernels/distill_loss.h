// Word-level distillation loss for `distill:`: the KL divergence from the
// teacher's temperature-softened distribution to the student's, summed over
// the target tokens that count. The trainer combines it, per target token, as
//   loss = alpha * T^2 * KL + (1 - alpha) * CE
// (the T^2 is the caller's: distill_kl returns the bare KL).
//
// For one row with student logits s and teacher logits t (length V):
//   p_t = softmax(t / T),  log p_s = log_softmax(s / T)
//   KL  = sum_i p_t,i (log p_t,i - log p_s,i)
// With top_k > 0 the teacher keeps only its k largest logits in the row and is
// renormalised over them (p_t,i = softmax over the top k of t / T, 0 outside
// them); the student's log-softmax stays over the whole vocabulary. top_k = 0,
// or top_k >= V, means all V.
//
// One ATen path for every device (the tensors' own): rows are processed in
// chunks, each upcast to fp32 for its computation, so no fp32 copy of the
// whole [N, V] logits is ever held, in forward or backward. The gradient
// with respect to the student logits,
//   d kl_sum / d s = mask * (softmax(s / T) - p_t) / T,
// is recomputed chunk by chunk in backward from the saved inputs and written
// straight into one tensor of the student logits' dtype.
#pragma once

#include <torch/torch.h>

#include <cstdint>

namespace moetrain::kernels {

struct DistillLossResult {
  torch::Tensor kl_sum;    // fp32 scalar: sum of per-row KL over rows with mask true
  int64_t num_tokens = 0;  // rows that counted (mask true)
};

// student_logits [N, V] (any float dtype; kl_sum is differentiable with
// respect to it), teacher_logits [N, V] (any float dtype, same device; used
// detached, it never receives a gradient), mask [N] bool (true = counts; a
// masked-out row may hold anything, even inf or NaN, and gets gradient 0).
// temperature > 0 and finite; top_k >= 0 as above. chunk_rows: rows per
// chunk, 0 = automatic (distill_chunk_rows(V)); tests set it small to
// exercise several chunks.
//
// Throws std::invalid_argument on bad shapes, non-float logits, logits on
// different devices, a temperature that is not positive and finite, or a
// negative top_k or chunk_rows.
DistillLossResult distill_kl(const torch::Tensor& student_logits, const torch::Tensor& teacher_logits,
                             const torch::Tensor& mask, double temperature, int64_t top_k, int64_t chunk_rows = 0);

// The automatic chunk height for vocabulary size V: about 2^22 fp32 elements
// (16 MiB) per chunk, at least one row.
int64_t distill_chunk_rows(int64_t vocab);

}  // namespace moetrain::kernels

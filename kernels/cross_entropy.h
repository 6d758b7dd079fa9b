// Softmax cross-entropy over the vocabulary, accumulated in fp32 whatever the
// dtype of the logits. One dispatch point: CUDA logits (fp32, bf16, fp16) go
// to a fused kernel (kernels/cuda/cross_entropy.cu) when it was compiled and
// the kernel backend is fused; everything else to the ATen reference.
#pragma once

#include <torch/torch.h>

namespace moetrain::kernels {

struct CrossEntropyResult {
  torch::Tensor loss_sum;  // fp32 scalar: sum of per-token losses over valid tokens
  int64_t num_tokens = 0;  // tokens that counted (mask true)
};

// logits [N, V] (any float dtype), targets [N] int64, mask [N] bool (true =
// counts). label_smoothing in [0, 1): the target distribution is
// (1 - ls) * onehot + ls / V, as in torch.nn.functional.cross_entropy.
// loss_sum is differentiable with respect to the logits. A masked-out token's
// target may hold anything (padding, even an id outside [0, V)).
//
// The fused CUDA path reads the logits in their own dtype and computes in
// fp32 registers, keeping only two fp32 numbers per row (loss and
// log-sum-exp); backward writes the gradient directly in the logits' dtype, so
// no fp32 copy of the [N, V] logits is ever made. It throws
// std::invalid_argument when a counted token's target lies outside [0, V)
// (found in the same device-to-host copy that fetches num_tokens).
//
// Throws std::invalid_argument on bad shapes or label_smoothing outside [0, 1).
CrossEntropyResult softmax_cross_entropy(const torch::Tensor& logits, const torch::Tensor& targets,
                                         const torch::Tensor& mask, double label_smoothing = 0.0);

// The ATen reference implementation (what the dispatch point falls back to).
CrossEntropyResult softmax_cross_entropy_reference(const torch::Tensor& logits, const torch::Tensor& targets,
                                                   const torch::Tensor& mask, double label_smoothing);

}  // namespace moetrain::kernels

// Softmax cross-entropy over the vocabulary, accumulated in fp32 whatever the
// dtype of the logits. One dispatch point: today the ATen reference; a fused
// CUDA kernel that avoids an fp32 copy of the logits plugs in behind it.
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
CrossEntropyResult softmax_cross_entropy(const torch::Tensor& logits, const torch::Tensor& targets,
                                         const torch::Tensor& mask, double label_smoothing = 0.0);

// The ATen reference implementation (what the dispatch point falls back to).
CrossEntropyResult softmax_cross_entropy_reference(const torch::Tensor& logits,
                                                   const torch::Tensor& targets,
                                                   const torch::Tensor& mask,
                                                   double label_smoothing);

}  // namespace moetrain::kernels

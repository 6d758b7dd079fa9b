// Global-norm gradient clipping over the flat fp32 gradient buffer.
#pragma once

#include <torch/torch.h>

namespace moetrain::optim {

// The L2 norm of `grads` (as torch.nn.utils.clip_grad_norm_ computes it).
double global_grad_norm(const torch::Tensor& grads);

// Scales grads by min(1, max_norm / (norm + 1e-6)) given the already computed
// global norm; max_norm <= 0 disables clipping. Returns the scale applied.
double clip_grads(torch::Tensor& grads, double norm, double max_norm);

}  // namespace moetrain::optim

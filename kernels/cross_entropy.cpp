#include "kernels/cross_entropy.h"

#include <stdexcept>

namespace moetrain::kernels {

CrossEntropyResult softmax_cross_entropy_reference(const torch::Tensor& logits,
                                                   const torch::Tensor& targets,
                                                   const torch::Tensor& mask,
                                                   double label_smoothing) {
  const auto log_probs = torch::log_softmax(logits.to(torch::kFloat32), /*dim=*/-1);
  // Masked-out targets may hold any id (padding); gather index 0 there instead.
  const auto safe_targets = torch::where(mask, targets, torch::zeros_like(targets));
  auto nll = -log_probs.gather(-1, safe_targets.unsqueeze(-1)).squeeze(-1);
  if (label_smoothing > 0.0) {
    const auto smooth = -log_probs.mean(-1);
    nll = (1.0 - label_smoothing) * nll + label_smoothing * smooth;
  }
  CrossEntropyResult result;
  result.loss_sum = (nll * mask.to(torch::kFloat32)).sum();
  result.num_tokens = mask.sum().item<int64_t>();
  return result;
}

CrossEntropyResult softmax_cross_entropy(const torch::Tensor& logits, const torch::Tensor& targets,
                                         const torch::Tensor& mask, double label_smoothing) {
  if (logits.dim() != 2 || targets.dim() != 1 || mask.dim() != 1 ||
      logits.size(0) != targets.size(0) || targets.size(0) != mask.size(0)) {
    throw std::invalid_argument("softmax_cross_entropy: expected logits [N,V], targets [N], mask [N]");
  }
  if (label_smoothing < 0.0 || label_smoothing >= 1.0) {
    throw std::invalid_argument("softmax_cross_entropy: label_smoothing must be in [0, 1)");
  }
  return softmax_cross_entropy_reference(logits, targets, mask, label_smoothing);
}

}  // namespace moetrain::kernels

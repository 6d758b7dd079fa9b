#include "optim/grad_clip.h"

#include <cmath>

namespace moetrain::optim {

double global_grad_norm(const torch::Tensor& grads) { return grads.norm().item<double>(); }

double clip_grads(torch::Tensor& grads, double norm, double max_norm) {
  if (max_norm <= 0.0 || !std::isfinite(norm)) return 1.0;
  const double coef = max_norm / (norm + 1e-6);
  if (coef >= 1.0) return 1.0;
  torch::NoGradGuard no_grad;
  grads.mul_(coef);
  return coef;
}

}  // namespace moetrain::optim

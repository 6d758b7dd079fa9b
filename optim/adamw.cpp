#include "optim/adamw.h"

#include <cmath>

namespace moetrain::optim {

AdamW::AdamW(const OptimConfig& config, int64_t numel, std::vector<DecaySegment> segments,
             const torch::TensorOptions& options)
    : config_(config), segments_(std::move(segments)) {
  exp_avg_ = torch::zeros({numel}, options.dtype(torch::kFloat32));
  exp_avg_sq_ = torch::zeros({numel}, options.dtype(torch::kFloat32));
}

void AdamW::step(torch::Tensor& master, const torch::Tensor& grads, double lr) {
  torch::NoGradGuard no_grad;
  ++step_;
  auto& p = master;
  const auto& g = grads;

  if (config_.weight_decay != 0.0) {
    for (const auto& s : segments_) {
      if (s.weight_decay) p.narrow(0, s.begin, s.end - s.begin).mul_(1.0 - lr * config_.weight_decay);
    }
  }
  exp_avg_.mul_(config_.beta1).add_(g, 1.0 - config_.beta1);
  exp_avg_sq_.mul_(config_.beta2).addcmul_(g, g, 1.0 - config_.beta2);
  const double bc1 = 1.0 - std::pow(config_.beta1, static_cast<double>(step_));
  const double bc2 = 1.0 - std::pow(config_.beta2, static_cast<double>(step_));
  const auto denom = (exp_avg_sq_.sqrt() / std::sqrt(bc2)).add_(config_.eps);
  p.addcdiv_(exp_avg_, denom, -lr / bc1);
}

int64_t AdamW::state_bytes() const {
  return (exp_avg_.numel() + exp_avg_sq_.numel()) * static_cast<int64_t>(sizeof(float));
}

}  // namespace moetrain::optim

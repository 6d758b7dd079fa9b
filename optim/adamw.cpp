#include "optim/adamw.h"

#include <algorithm>
#include <cmath>

namespace moetrain::optim {

AdamW::AdamW(const OptimConfig& config, int64_t begin, int64_t end,
             std::vector<DecaySegment> segments, const torch::TensorOptions& options)
    : config_(config), begin_(begin), end_(end), segments_(std::move(segments)) {
  exp_avg_ = torch::zeros({end - begin}, options.dtype(torch::kFloat32));
  exp_avg_sq_ = torch::zeros({end - begin}, options.dtype(torch::kFloat32));
}

void AdamW::step(torch::Tensor& master, const torch::Tensor& grads, double lr) {
  torch::NoGradGuard no_grad;
  ++step_;
  auto p = master.narrow(0, begin_, end_ - begin_);
  const auto g = grads.narrow(0, begin_, end_ - begin_);

  if (config_.weight_decay != 0.0) {
    for (const auto& s : segments_) {
      if (!s.weight_decay) continue;
      const int64_t lo = std::max(s.begin, begin_), hi = std::min(s.end, end_);
      if (lo < hi) p.narrow(0, lo - begin_, hi - lo).mul_(1.0 - lr * config_.weight_decay);
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

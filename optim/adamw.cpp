#include "optim/adamw.h"

#include <algorithm>
#include <stdexcept>
#include <string>

#include "kernels/adamw.h"

namespace moetrain::optim {

namespace {

// [0, numel) as consecutive runs: the decay segments (decayed when
// `weight_decay` is on) and the gaps between them (never decayed), with
// neighbours of the same setting merged.
std::vector<DecaySegment> update_runs(std::vector<DecaySegment> segments, int64_t numel, bool weight_decay) {
  std::sort(segments.begin(), segments.end(),
            [](const DecaySegment& a, const DecaySegment& b) { return a.begin < b.begin; });
  std::vector<DecaySegment> runs;
  int64_t cursor = 0;
  for (const DecaySegment& s : segments) {
    if (s.begin < cursor || s.end < s.begin || s.end > numel) {
      throw std::invalid_argument("AdamW: decay segment [" + std::to_string(s.begin) + ", " + std::to_string(s.end) +
                                  ") overlaps another or leaves [0, " + std::to_string(numel) + ")");
    }
    append_decay_segment(runs, cursor, s.begin, false);
    append_decay_segment(runs, s.begin, s.end, weight_decay && s.weight_decay);
    cursor = s.end;
  }
  append_decay_segment(runs, cursor, numel, false);
  return runs;
}

}  // namespace

AdamW::AdamW(const OptimConfig& config, int64_t numel, std::vector<DecaySegment> segments,
             const torch::TensorOptions& options)
    : config_(config), update_runs_(update_runs(std::move(segments), numel, config.weight_decay != 0.0)) {
  exp_avg_ = torch::zeros({numel}, options.dtype(torch::kFloat32));
  exp_avg_sq_ = torch::zeros({numel}, options.dtype(torch::kFloat32));
}

void AdamW::step(torch::Tensor& master, const torch::Tensor& grads, double lr) {
  const int64_t numel = exp_avg_.numel();
  if (master.numel() != numel || grads.numel() != numel) {
    throw std::invalid_argument("AdamW::step: expected master and grads of " + std::to_string(numel) +
                                " elements, got " + std::to_string(master.numel()) + " and " +
                                std::to_string(grads.numel()));
  }
  torch::NoGradGuard no_grad;
  ++step_;

  std::vector<kernels::AdamWTensors> groups;
  groups.reserve(update_runs_.size());
  for (const DecaySegment& r : update_runs_) {
    const int64_t len = r.end - r.begin;
    groups.push_back({master.narrow(0, r.begin, len), grads.narrow(0, r.begin, len), exp_avg_.narrow(0, r.begin, len),
                      exp_avg_sq_.narrow(0, r.begin, len), r.weight_decay});
  }
  kernels::AdamWHyperparameters h;
  h.lr = lr;
  h.beta1 = config_.beta1;
  h.beta2 = config_.beta2;
  h.eps = config_.eps;
  h.weight_decay = config_.weight_decay;
  h.step = step_;
  kernels::adamw_update(groups, h);
}

int64_t AdamW::state_bytes() const {
  return (exp_avg_.numel() + exp_avg_sq_.numel()) * static_cast<int64_t>(sizeof(float));
}

}  // namespace moetrain::optim

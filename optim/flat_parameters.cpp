#include "optim/flat_parameters.h"

#include <stdexcept>

namespace moetrain::optim {

FlatParameters::FlatParameters(
    const std::vector<std::pair<std::string, torch::Tensor>>& named_parameters,
    torch::ScalarType compute_dtype,
    const std::function<bool(const std::string&, const torch::Tensor&)>& decays)
    : compute_dtype_(compute_dtype) {
  int64_t total = 0;
  torch::Device device = torch::kCPU;
  for (const auto& [name, param] : named_parameters) {
    if (!param.requires_grad()) continue;
    FlatParameterEntry e;
    e.name = name;
    e.param = param;
    e.offset = total;
    e.numel = param.numel();
    e.shape = param.sizes().vec();
    e.weight_decay = decays(name, param);
    total += e.numel;
    device = param.device();
    entries_.push_back(std::move(e));
  }
  const auto fp32 = torch::TensorOptions().dtype(torch::kFloat32).device(device);
  master_ = torch::empty({total}, fp32);
  grads_ = torch::zeros({total}, fp32);
  torch::NoGradGuard no_grad;
  for (auto& e : entries_) {
    view(master_, e).copy_(e.param.detach());
  }
  model_ = compute_dtype == torch::kFloat32 ? master_ : master_.to(compute_dtype);
  for (auto& e : entries_) {
    e.param.set_data(view(model_, e));
  }
}

const FlatParameterEntry& FlatParameters::entry(const std::string& name) const {
  for (const auto& e : entries_) {
    if (e.name == name) return e;
  }
  throw std::out_of_range("no trainable parameter named '" + name + "'");
}

std::vector<DecaySegment> FlatParameters::decay_segments() const {
  std::vector<DecaySegment> segments;
  for (const auto& e : entries_) {
    if (!segments.empty() && segments.back().weight_decay == e.weight_decay &&
        segments.back().end == e.offset) {
      segments.back().end = e.offset + e.numel;
    } else {
      segments.push_back({e.offset, e.offset + e.numel, e.weight_decay});
    }
  }
  return segments;
}

torch::Tensor FlatParameters::view(const torch::Tensor& flat, const FlatParameterEntry& e) const {
  return flat.narrow(0, e.offset, e.numel).view(e.shape);
}

void FlatParameters::accumulate_grads() {
  torch::NoGradGuard no_grad;
  for (auto& e : entries_) {
    auto& grad = e.param.mutable_grad();
    if (!grad.defined()) continue;  // unused this micro-batch (e.g. an idle expert)
    grads_.narrow(0, e.offset, e.numel).add_(grad.reshape({-1}));
    grad = torch::Tensor();
  }
}

void FlatParameters::zero_grads() { grads_.zero_(); }

void FlatParameters::copy_master_to_model() {
  if (compute_dtype_ == torch::kFloat32) return;  // model aliases master
  torch::NoGradGuard no_grad;
  model_.copy_(master_);
}

}  // namespace moetrain::optim

#include "optim/flat_parameters.h"

#include <algorithm>
#include <regex>
#include <stdexcept>

namespace moetrain::optim {

bool is_expert_parameter(const std::string& name) { return name.find(".moe.experts_") != std::string::npos; }

std::string unit_of(const std::string& name, bool expert_units) {
  if (expert_units && is_expert_parameter(name)) return name.substr(0, name.find(".moe.experts_")) + ".moe.experts";
  static const std::regex layer("^(.*\\.layers\\.[0-9]+)\\..*$");
  std::smatch m;
  if (std::regex_match(name, m, layer)) return m[1];
  const auto dot = name.rfind('.');
  return dot == std::string::npos ? name : name.substr(0, dot);
}

FlatParameters::FlatParameters(const std::vector<std::pair<std::string, torch::Tensor>>& named_parameters,
                               torch::ScalarType compute_dtype,
                               const std::function<bool(const std::string&, const torch::Tensor&)>& decays,
                               const ShardingOptions& sharding, std::optional<torch::Device> run_device)
    : compute_dtype_(compute_dtype), sharding_(sharding) {
  if (sharding_.shards < 1 || sharding_.rank < 0 || sharding_.rank >= sharding_.shards) {
    throw std::invalid_argument("FlatParameters: bad sharding rank/shards");
  }
  if (sharding_.shard_grads && !sharding_.shard_master) {
    throw std::invalid_argument("FlatParameters: sharded grads need a sharded master");
  }
  if (sharding_.expert_shards < 0 ||
      (sharding_.expert_shards > 0 &&
       (sharding_.expert_rank < 0 || sharding_.expert_rank >= sharding_.expert_shards))) {
    throw std::invalid_argument("FlatParameters: bad expert sharding rank/shards");
  }
  if (sharding_.shard_params && !sharding_.shard_grads) {
    throw std::invalid_argument("FlatParameters: sharded parameters need sharded grads and master");
  }
  torch::Device device = run_device.value_or(torch::kCPU);
  // Group parameters by unit, keeping the model's registration order.
  for (const auto& [name, param] : named_parameters) {
    if (!param.requires_grad()) continue;
    const bool expert_units = sharding_.expert_shards > 0;
    const std::string unit = unit_of(name, expert_units);
    if (units_.empty() || units_.back().name != unit) {
      FlatUnit u;
      u.name = unit;
      u.expert = expert_units && is_expert_parameter(name);
      u.shards = u.expert ? sharding_.expert_shards : sharding_.shards;
      u.shard_rank = u.expert ? sharding_.expert_rank : sharding_.rank;
      units_.push_back(u);
    }
    FlatParameterEntry e;
    e.name = name;
    e.param = param;
    e.numel = param.numel();
    e.shape = param.sizes().vec();
    e.weight_decay = decays(name, param);
    e.unit = units_.size() - 1;
    units_.back().numel += e.numel;
    if (!run_device) device = param.device();
    if (param.device() != device) {
      throw std::invalid_argument("FlatParameters: " + name + " is on " + param.device().str() + ", not on " +
                                  device.str());
    }
    entries_.push_back(std::move(e));
  }
  int64_t offset = 0, local = 0;
  for (auto& u : units_) {
    const int64_t n = u.shards;
    u.offset = offset;
    u.padded = (u.numel + n - 1) / n * n;
    u.shard = u.padded / n;
    u.local_offset = local;
    offset += u.padded;
    local += u.shard;
    numel_ += u.numel;
  }
  padded_ = offset;
  local_numel_ = local;
  unit_entries_.assign(units_.size(), {0, 0});
  for (size_t i = entries_.size(); i-- > 0;) unit_entries_[entries_[i].unit].first = i;
  for (size_t i = 0; i < entries_.size(); ++i) unit_entries_[entries_[i].unit].second = i + 1;
  {
    std::vector<int64_t> next(units_.size());
    for (size_t i = 0; i < units_.size(); ++i) next[i] = units_[i].offset;
    for (auto& e : entries_) {
      e.offset = next[e.unit];
      next[e.unit] += e.numel;
    }
  }

  const auto fp32 = torch::TensorOptions().dtype(torch::kFloat32).device(device);
  torch::NoGradGuard no_grad;
  // The initial weights in fp32 (identical on every rank: same seed).
  auto initial = torch::zeros({padded_}, fp32);
  for (auto& e : entries_) view(initial, e).copy_(e.param.detach());
  // ZeRO 3 keeps no full copy in the compute dtype: `initial` lives only
  // until the master shard is cut from it.
  if (!sharding_.shard_params) {
    model_ = compute_dtype == torch::kFloat32 ? initial : initial.to(compute_dtype);
  }
  if (sharding_.shard_master) {
    master_ = torch::empty({local_numel_}, fp32);
    for (const auto& u : units_) {
      const auto [begin, end] = piece_range(u);
      master_.narrow(0, u.local_offset, u.shard).copy_(initial.narrow(0, begin, end - begin));
    }
  } else {
    master_ = initial;  // with fp32 compute, the same storage as model_
  }
  grads_ = torch::zeros({sharding_.shard_grads ? local_numel_ : padded_}, fp32);
  if (sharding_.shard_params) {
    for (size_t u = 0; u < units_.size(); ++u) release_unit(u);
  } else {
    for (auto& e : entries_) e.param.set_data(view(model_, e));
  }
}

const FlatParameterEntry& FlatParameters::entry(const std::string& name) const {
  for (const auto& e : entries_) {
    if (e.name == name) return e;
  }
  throw std::out_of_range("no trainable parameter named '" + name + "'");
}

std::pair<int64_t, int64_t> FlatParameters::piece_range(const FlatUnit& u) const {
  const int64_t begin = u.offset + u.shard_rank * u.shard;
  return {begin, begin + u.shard};
}

FlatParameters::LocalPiece FlatParameters::local_piece(const FlatParameterEntry& e) const {
  if (!sharding_.shard_master) return {0, e.numel, e.offset};
  const auto& u = units_[e.unit];
  const auto [pb, pe] = piece_range(u);
  const int64_t lo = std::max(pb, e.offset), hi = std::min(pe, e.offset + e.numel);
  if (lo >= hi) return {0, 0, 0};
  return {lo - e.offset, hi - e.offset, u.local_offset + (lo - pb)};
}

void append_decay_segment(std::vector<DecaySegment>& segments, int64_t begin, int64_t end, bool weight_decay) {
  if (begin >= end) return;
  if (!segments.empty() && segments.back().weight_decay == weight_decay && segments.back().end == begin) {
    segments.back().end = end;
  } else {
    segments.push_back({begin, end, weight_decay});
  }
}

std::vector<DecaySegment> FlatParameters::master_decay_segments() const {
  std::vector<DecaySegment> segments;
  for (const auto& e : entries_) {
    const auto piece = local_piece(e);
    append_decay_segment(segments, piece.master_offset, piece.master_offset + (piece.end - piece.begin),
                         e.weight_decay);
  }
  return segments;
}

torch::Tensor FlatParameters::view(const torch::Tensor& flat, const FlatParameterEntry& e) const {
  return flat.narrow(0, e.offset, e.numel).view(e.shape);
}

void FlatParameters::bind_unit(size_t u, const torch::Tensor& full) {
  const auto& unit = units_.at(u);
  if (full.numel() != unit.padded || full.scalar_type() != compute_dtype_) {
    throw std::invalid_argument("bind_unit: '" + unit.name + "' needs " + std::to_string(unit.padded) +
                                " elements of the compute dtype");
  }
  const auto [begin, end] = unit_entries_[u];
  for (size_t i = begin; i < end; ++i) {
    auto& e = entries_[i];
    e.param.set_data(full.narrow(0, e.offset - unit.offset, e.numel).view(e.shape));
  }
}

void FlatParameters::release_unit(size_t u) {
  const auto [begin, end] = unit_entries_.at(u);
  for (size_t i = begin; i < end; ++i) {
    auto& e = entries_[i];
    // set_data keeps the parameter (its identity, requires_grad, registration
    // in the module) and only swaps what it points at.
    e.param.set_data(torch::empty({0}, e.param.options().dtype(compute_dtype_)));
  }
}

void FlatParameters::flatten_unit_grads(size_t u, const std::vector<torch::Tensor>& grads, torch::Tensor& flat) const {
  const auto& unit = units_.at(u);
  const auto [begin, end] = unit_entries_[u];
  if (grads.size() != end - begin || flat.numel() != unit.padded) {
    throw std::invalid_argument("flatten_unit_grads: wrong sizes for '" + unit.name + "'");
  }
  torch::NoGradGuard no_grad;
  flat.zero_();
  for (size_t i = begin; i < end; ++i) {
    const auto& g = grads[i - begin];
    if (!g.defined()) continue;  // unused this micro-batch (e.g. an idle expert)
    flat.narrow(0, entries_[i].offset - unit.offset, entries_[i].numel).copy_(g.reshape({-1}));
  }
}

int64_t FlatParameters::resident_param_bytes() const {
  return model_.defined() ? model_.numel() * static_cast<int64_t>(model_.element_size()) : 0;
}

void FlatParameters::accumulate_grads_into(torch::Tensor& target) {
  torch::NoGradGuard no_grad;
  for (auto& e : entries_) {
    auto& grad = e.param.mutable_grad();
    if (!grad.defined()) continue;  // unused this micro-batch (e.g. an idle expert)
    target.narrow(0, e.offset, e.numel).add_(grad.reshape({-1}));
    grad = torch::Tensor();
  }
}

void FlatParameters::zero_grads() { grads_.zero_(); }

void FlatParameters::copy_master_to_model() {
  if (sharding_.shard_master) {
    throw std::logic_error("copy_master_to_model: a sharded master reaches the model by all-gather");
  }
  if (compute_dtype_ == torch::kFloat32) return;  // model aliases master
  torch::NoGradGuard no_grad;
  model_.copy_(master_);
}

}  // namespace moetrain::optim

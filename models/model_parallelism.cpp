#include "models/model_parallelism.h"

#include <stdexcept>

namespace moetrain::models {

void add_slices(ParameterSlices& into, const std::string& prefix, const ParameterSlices& from) {
  for (const auto& [name, slice] : from) into[prefix + "." + name] = slice;
}

ParameterSlice nest_slice(const ParameterSlice& outer, const ParameterSlice& inner) {
  if (outer.start.size() != inner.start.size()) {
    throw std::invalid_argument("nest_slice: slices of tensors of different rank");
  }
  ParameterSlice nested{outer.global_shape, outer.start};
  for (size_t d = 0; d < nested.start.size(); ++d) nested.start[d] += inner.start[d];
  return nested;
}

ParameterSlice split_parameter(torch::Tensor& param, int64_t dim, int64_t rank, int64_t parts, int64_t padded) {
  ParameterSlice slice;
  slice.global_shape = param.sizes().vec();
  slice.start.assign(slice.global_shape.size(), 0);
  const int64_t full = param.size(dim);
  const int64_t total = padded < 0 ? full : padded;
  if (total < full || total % parts != 0) {
    throw std::invalid_argument("split_parameter: " + std::to_string(parts) + " parts do not divide " +
                                std::to_string(total) + " along dim " + std::to_string(dim));
  }
  const int64_t local = total / parts;
  torch::NoGradGuard no_grad;
  torch::Tensor source = param.detach();
  if (total > full) {
    auto pad_shape = source.sizes().vec();
    pad_shape[static_cast<size_t>(dim)] = total - full;
    source = torch::cat({source, torch::zeros(pad_shape, source.options())}, dim);
  }
  param.set_data(source.narrow(dim, rank * local, local).clone());
  slice.start[static_cast<size_t>(dim)] = rank * local;
  return slice;
}

namespace {
at::Generator default_generator(const torch::Device& device) {
  return device.is_cuda() ? at::globalContext().defaultGenerator(device) : at::detail::getDefaultCPUGenerator();
}
}  // namespace

TensorParallelRngScope::TensorParallelRngScope(parallel::TensorParallelRng* rng, const torch::Device& device)
    : rng_(rng) {
  if (!rng_) return;
  default_ = default_generator(device);
  at::Generator tp = rng_->generator(device);
  saved_ = default_.get_state();
  default_.set_state(tp.get_state());
  tp_ = tp;
}

TensorParallelRngScope::~TensorParallelRngScope() {
  if (!rng_) return;
  tp_.set_state(default_.get_state());
  default_.set_state(saved_);
}

}  // namespace moetrain::models

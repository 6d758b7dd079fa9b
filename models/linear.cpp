#include "models/linear.h"

#include <stdexcept>
#include <map>
#include <string>

namespace moetrain::models {

LinearImpl::LinearImpl(int64_t in_features, int64_t out_features, bool with_bias,
                       double init_std)
    : in_features_(in_features), out_features_(out_features) {
  if (in_features <= 0 || out_features <= 0) {
    throw std::invalid_argument("Linear: sizes must be positive, got in=" +
                                std::to_string(in_features) +
                                " out=" + std::to_string(out_features));
  }
  weight = register_parameter("weight", torch::empty({out_features, in_features}));
  {
    torch::NoGradGuard no_grad;
    weight.normal_(0.0, init_std);
  }
  if (with_bias) bias = register_parameter("bias", torch::zeros({out_features}));
}

torch::Tensor LinearImpl::forward(const torch::Tensor& x) {
  if (x.dim() < 1 || x.size(-1) != in_features_) {
    throw std::invalid_argument("Linear: expected input [..., " + std::to_string(in_features_) +
                                "], got " + c10::str(x.sizes()));
  }
  switch (split_) {
    case LinearSplit::Column: return parallel::column_parallel_linear(x, weight, bias, tp_);
    case LinearSplit::Row: return parallel::row_parallel_linear(x, weight, bias, tp_);
    case LinearSplit::None: break;
  }
  return torch::linear(x, weight, bias);
}

ParameterSlices LinearImpl::split_tensor_parallel(LinearSplit split,
                                                                        parallel::Communicator* tp) {
  ParameterSlices slices;
  const int64_t parts = tp ? tp->size() : 1;
  if (split == LinearSplit::None || parts == 1) return slices;
  if (split_ != LinearSplit::None) throw std::logic_error("Linear: already split");
  const int64_t rank = tp->rank();
  if (split == LinearSplit::Column) {
    slices["weight"] = split_parameter(weight, 0, rank, parts);
    if (bias.defined()) slices["bias"] = split_parameter(bias, 0, rank, parts);
    out_features_ /= parts;
  } else {
    slices["weight"] = split_parameter(weight, 1, rank, parts);
    in_features_ /= parts;
  }
  split_ = split;
  tp_ = tp;
  return slices;
}

}  // namespace moetrain::models

#include "models/linear.h"

#include <stdexcept>
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
  return torch::linear(x, weight, bias);
}

}  // namespace moetrain::models

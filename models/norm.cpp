#include "models/norm.h"

#include <stdexcept>
#include <string>

#include "kernels/layer_norm.h"

namespace moetrain::models {

NormImpl::NormImpl(NormType type, int64_t dim, double eps) : type_(type), dim_(dim), eps_(eps) {
  if (dim <= 0) throw std::invalid_argument("Norm: dim must be positive, got " + std::to_string(dim));
  weight = register_parameter("weight", torch::ones({dim}));
  if (type == NormType::LayerNorm) bias = register_parameter("bias", torch::zeros({dim}));
}

torch::Tensor NormImpl::forward(const torch::Tensor& x) {
  if (x.dim() < 1 || x.size(-1) != dim_) {
    throw std::invalid_argument("Norm: expected input [..., " + std::to_string(dim_) + "], got " + c10::str(x.sizes()));
  }
  // bias is undefined for RMSNorm.
  return kernels::layer_norm_activation(x, weight, bias, eps_, kernels::NormActivation::None,
                                        /*rms=*/type_ == NormType::RMSNorm);
}

}  // namespace moetrain::models

#include "models/norm.h"

#include <stdexcept>
#include <string>

namespace moetrain::models {

NormImpl::NormImpl(NormType type, int64_t dim, double eps) : type_(type), dim_(dim), eps_(eps) {
  if (dim <= 0) throw std::invalid_argument("Norm: dim must be positive, got " + std::to_string(dim));
  weight = register_parameter("weight", torch::ones({dim}));
  if (type == NormType::LayerNorm) bias = register_parameter("bias", torch::zeros({dim}));
}

torch::Tensor NormImpl::forward(const torch::Tensor& x) {
  if (x.dim() < 1 || x.size(-1) != dim_) {
    throw std::invalid_argument("Norm: expected input [..., " + std::to_string(dim_) + "], got " +
                                c10::str(x.sizes()));
  }
  const torch::Tensor x32 = x.to(torch::kFloat);
  const torch::Tensor w32 = weight.to(torch::kFloat);
  torch::Tensor y;
  if (type_ == NormType::LayerNorm) {
    y = torch::layer_norm(x32, {dim_}, w32, bias.to(torch::kFloat), eps_);
  } else {
    y = x32 * torch::rsqrt(x32.pow(2).mean(-1, /*keepdim=*/true) + eps_) * w32;
  }
  return y.to(x.scalar_type());
}

}  // namespace moetrain::models

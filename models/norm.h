// Norm: LayerNorm or RMSNorm over the last dimension, as ModelConfig::norm says.
// Statistics are always computed in fp32, whatever the parameter dtype (bf16 /
// fp16 variance underflows and loses precision); the result is cast back to
// the input dtype so the surrounding layer keeps running in the compute dtype.
#pragma once

#include <torch/torch.h>

#include <cstdint>

#include "models/model_config.h"

namespace moetrain::models {

class NormImpl : public torch::nn::Module {
 public:
  NormImpl(NormType type, int64_t dim, double eps);

  // x [..., dim] -> same shape and dtype.
  torch::Tensor forward(const torch::Tensor& x);

  NormType type() const { return type_; }

  torch::Tensor weight;  // [dim], ones
  torch::Tensor bias;    // [dim], zeros; LayerNorm only (undefined for RMSNorm)

 private:
  NormType type_;
  int64_t dim_;
  double eps_;
};
TORCH_MODULE(Norm);

}  // namespace moetrain::models

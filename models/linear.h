// Linear: the one dense projection every model layer uses, y = x W^T + b with
// W [out, in]. It is ours rather than torch::nn::Linear so that LoRA and
// tensor-parallel variants can later replace it while keeping the parameter
// names `weight` and `bias` that checkpoints and export rely on.
#pragma once

#include <torch/torch.h>

#include <cstdint>

namespace moetrain::models {

class LinearImpl : public torch::nn::Module {
 public:
  // weight ~ normal(0, init_std); bias (when requested) starts at zero.
  LinearImpl(int64_t in_features, int64_t out_features, bool bias, double init_std);

  // x [..., in] -> [..., out], in the dtype of the parameters.
  torch::Tensor forward(const torch::Tensor& x);

  int64_t in_features() const { return in_features_; }
  int64_t out_features() const { return out_features_; }

  torch::Tensor weight;  // [out, in]
  torch::Tensor bias;    // [out]; undefined when built without bias

 private:
  int64_t in_features_;
  int64_t out_features_;
};
TORCH_MODULE(Linear);

}  // namespace moetrain::models

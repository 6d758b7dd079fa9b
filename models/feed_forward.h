// FeedForward: the dense position-wise FFN of a non-MoE layer,
// fc2(dropout(act(fc1(x)))), with d_model -> d_ff -> d_model. The activation
// helper is shared with the MoE experts so both compute the same function.
#pragma once

#include <torch/torch.h>

#include "models/linear.h"
#include "models/model_config.h"

namespace moetrain::models {

// relu, gelu (exact, erf form) or silu.
torch::Tensor apply_activation(const torch::Tensor& x, Activation activation);

class FeedForwardImpl : public torch::nn::Module {
 public:
  explicit FeedForwardImpl(const ModelConfig& cfg);

  // x [..., d_model] -> [..., d_model]. Dropout (cfg.dropout) acts on the
  // hidden activations while training.
  torch::Tensor forward(const torch::Tensor& x);

  // Tensor parallelism: fc1 column-parallel, fc2 row-parallel (d_ff split);
  // the hidden dropout draws from the tensor-parallel generator.
  ParameterSlices split_tensor_parallel(const ModelParallelism& mp);

  Linear fc1{nullptr};
  Linear fc2{nullptr};

 private:
  Activation activation_;
  double dropout_;
  parallel::TensorParallelRng* tp_rng_ = nullptr;
};
TORCH_MODULE(FeedForward);

}  // namespace moetrain::models

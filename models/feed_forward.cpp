#include "models/feed_forward.h"

namespace moetrain::models {

torch::Tensor apply_activation(const torch::Tensor& x, Activation activation) {
  switch (activation) {
    case Activation::ReLU:
      return torch::relu(x);
    case Activation::GELU:
      return torch::gelu(x);
    case Activation::SiLU:
      return torch::silu(x);
  }
  return x;  // unreachable: every enumerator is handled above
}

FeedForwardImpl::FeedForwardImpl(const ModelConfig& cfg)
    : activation_(cfg.activation), dropout_(cfg.dropout) {
  fc1 = register_module("fc1", Linear(cfg.d_model, cfg.d_ff, cfg.bias, cfg.init_std));
  fc2 = register_module("fc2", Linear(cfg.d_ff, cfg.d_model, cfg.bias, cfg.init_std));
}

torch::Tensor FeedForwardImpl::forward(const torch::Tensor& x) {
  torch::Tensor h = apply_activation(fc1(x), activation_);
  h = torch::dropout(h, dropout_, is_training());
  return fc2(h);
}

}  // namespace moetrain::models

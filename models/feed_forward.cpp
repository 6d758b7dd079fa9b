#include "models/feed_forward.h"

namespace moetrain::models {

torch::Tensor apply_activation(const torch::Tensor& x, Activation activation) {
  switch (activation) {
    case Activation::ReLU: return torch::relu(x);
    case Activation::GELU: return torch::gelu(x);
    case Activation::SiLU: return torch::silu(x);
  }
  return x;  // unreachable: every enumerator is handled above
}

FeedForwardImpl::FeedForwardImpl(const ModelConfig& cfg) : activation_(cfg.activation), dropout_(cfg.dropout) {
  fc1 = register_module("fc1", Linear(cfg.d_model, cfg.d_ff, cfg.bias, cfg.init_std));
  fc2 = register_module("fc2", Linear(cfg.d_ff, cfg.d_model, cfg.bias, cfg.init_std));
}

torch::Tensor FeedForwardImpl::forward(const torch::Tensor& x) {
  torch::Tensor h = apply_activation(fc1(x), activation_);
  {
    TensorParallelRngScope rng(dropout_ > 0 && is_training() ? tp_rng_ : nullptr, h.device());
    h = torch::dropout(h, dropout_, is_training());
  }
  return fc2(h);
}

ParameterSlices FeedForwardImpl::split_tensor_parallel(const ModelParallelism& mp) {
  ParameterSlices slices;
  const int64_t tp = mp.tp_size();
  if (tp == 1) return slices;
  if (fc1->out_features() % tp != 0) {
    throw std::invalid_argument("FeedForward: tensor parallelism " + std::to_string(tp) + " must divide d_ff " +
                                std::to_string(fc1->out_features()));
  }
  add_slices(slices, "fc1", fc1->split_tensor_parallel(LinearSplit::Column, mp.tp));
  add_slices(slices, "fc2", fc2->split_tensor_parallel(LinearSplit::Row, mp.tp));
  tp_rng_ = mp.tp_rng;
  return slices;
}

}  // namespace moetrain::models

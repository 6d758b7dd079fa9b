#include "models/linear.h"

#include <map>
#include <stdexcept>
#include <string>

#include "models/activation_checkpoint.h"

namespace moetrain::models {

LinearImpl::LinearImpl(int64_t in_features, int64_t out_features, bool with_bias, double init_std)
    : in_features_(in_features), out_features_(out_features) {
  if (in_features <= 0 || out_features <= 0) {
    throw std::invalid_argument("Linear: sizes must be positive, got in=" + std::to_string(in_features) +
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
    throw std::invalid_argument("Linear: expected input [..., " + std::to_string(in_features_) + "], got " +
                                c10::str(x.sizes()));
  }
  torch::Tensor y;
  switch (split_) {
    case LinearSplit::Column: y = parallel::column_parallel_linear(x, weight, bias, tp_); break;
    case LinearSplit::Row: y = parallel::row_parallel_linear(x, weight, bias, tp_); break;
    case LinearSplit::None: y = torch::linear(x, weight, bias); break;
  }
  if (!has_lora()) return y;
  // The adapter: scale * dropout(x) A^T B^T. A row-parallel layer's input is
  // this rank's split part, so its dropout draws from the tensor-parallel
  // stream; a replicated input draws the same mask on every TP rank.
  torch::Tensor input = x;
  if (lora_dropout_ > 0 && is_training()) {
    TensorParallelRngScope rng(split_ == LinearSplit::Row ? tensor_parallel_rng() : nullptr, x.device());
    input = torch::dropout(x, lora_dropout_, true);
  }
  torch::Tensor low = torch::linear(input, lora_A);  // [..., r]
  if (split_ == LinearSplit::Column) low = parallel::copy_to_tensor_parallel_region(low, tp_);
  if (split_ == LinearSplit::Row) low = parallel::reduce_from_tensor_parallel_region(low, tp_);
  return y + lora_scale_ * torch::linear(low, lora_B);
}

void LinearImpl::add_lora(const LoraConfig& lora) {
  if (has_lora()) throw std::logic_error("Linear: already has a LoRA adapter");
  if (split_ != LinearSplit::None) throw std::logic_error("Linear: add_lora after split_tensor_parallel");
  lora_A = register_parameter("lora_A", lora_init_a({lora.r, in_features_}, in_features_));
  lora_B = register_parameter("lora_B", torch::zeros({out_features_, lora.r}));
  lora_scale_ = lora.scale();
  lora_dropout_ = lora.dropout;
}

ParameterSlices LinearImpl::split_tensor_parallel(LinearSplit split, parallel::Communicator* tp) {
  ParameterSlices slices;
  const int64_t parts = tp ? tp->size() : 1;
  if (split == LinearSplit::None || parts == 1) return slices;
  if (split_ != LinearSplit::None) throw std::logic_error("Linear: already split");
  const int64_t rank = tp->rank();
  if (split == LinearSplit::Column) {
    slices["weight"] = split_parameter(weight, 0, rank, parts);
    if (bias.defined()) slices["bias"] = split_parameter(bias, 0, rank, parts);
    if (has_lora()) slices["lora_B"] = split_parameter(lora_B, 0, rank, parts);
    out_features_ /= parts;
  } else {
    slices["weight"] = split_parameter(weight, 1, rank, parts);
    if (has_lora()) slices["lora_A"] = split_parameter(lora_A, 1, rank, parts);
    in_features_ /= parts;
  }
  split_ = split;
  tp_ = tp;
  return slices;
}

}  // namespace moetrain::models

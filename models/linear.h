// Linear: the one dense projection every model layer uses, y = x W^T + b with
// W [out, in]. It is ours rather than torch::nn::Linear so that LoRA and
// tensor-parallel variants can later replace it while keeping the parameter
// names `weight` and `bias` that checkpoints and export rely on.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <string>

#include "models/lora.h"
#include "models/model_parallelism.h"

namespace moetrain::models {

// Tensor-parallel form of a Linear (Megatron): Column splits the output
// features (input replicated, output split), Row splits the input features
// (input split, output all-reduced; the bias, replicated, is added after).
enum class LinearSplit { None, Column, Row };

class LinearImpl : public torch::nn::Module {
 public:
  // weight ~ normal(0, init_std); bias (when requested) starts at zero.
  LinearImpl(int64_t in_features, int64_t out_features, bool bias, double init_std);

  // x [..., in] -> [..., out], in the dtype of the parameters (with a split,
  // `in`/`out` are this rank's part where the split makes them so).
  torch::Tensor forward(const torch::Tensor& x);

  // Keeps this TP rank's part of the weight (and bias for Column) and computes
  // in that form from now on. Returns the slices of the split parameters by
  // their names ("weight", "bias").
  ParameterSlices split_tensor_parallel(LinearSplit split, parallel::Communicator* tp);

  // Adds a LoRA adapter (models/lora.h): parameters `lora_A` [r, in] and
  // `lora_B` [out, r]. Call on the whole layer, before split_tensor_parallel
  // (which then splits the adapter with the layer).
  void add_lora(const LoraConfig& lora);
  bool has_lora() const { return lora_A.defined(); }

  int64_t in_features() const { return in_features_; }
  int64_t out_features() const { return out_features_; }

  torch::Tensor weight;  // [out, in]
  torch::Tensor bias;    // [out]; undefined when built without bias
  torch::Tensor lora_A;  // [r, in]; undefined without an adapter
  torch::Tensor lora_B;  // [out, r]

 private:
  int64_t in_features_;
  int64_t out_features_;
  LinearSplit split_ = LinearSplit::None;
  parallel::Communicator* tp_ = nullptr;
  double lora_scale_ = 0;
  double lora_dropout_ = 0;
};
TORCH_MODULE(Linear);

}  // namespace moetrain::models

// LoRA (Hu et al. 2021): a frozen weight W [out, in] gains a trainable
// low-rank update, y = x W^T + b + scale * dropout(x) A^T B^T, with
// A [r, in] initialised Kaiming-uniform (as PEFT does: bound 1/sqrt(in)) and
// B [out, r] at zero, so a fresh adapter leaves the model unchanged.
// scale = alpha / r, or alpha / sqrt(r) with rslora (Kalajdzievski 2023).
//
// Where adapters go (LoraConfig::targets, matched against the last component
// of a module's name):
//   q_proj, k_proj, v_proj, o_proj  attention projections (self and cross)
//   fc1, fc2                        the dense FFN of non-MoE layers
//   experts                         every expert of every MoE layer (both of
//                                   its projections; experts_fc1 or
//                                   experts_fc2 for one of them)
//   all-linear                      all of the above
// The router, the dynamic-attention gate, the embeddings and lm_head take no
// adapter.
//
// Parameter names: a Linear `P` gets `P.lora_A` and `P.lora_B`; a MoE layer's
// stacked experts get `experts_fc1_lora_A` [E, r, D], `experts_fc1_lora_B`
// [E, F, r], `experts_fc2_lora_A` [E, r, F] and `experts_fc2_lora_B` [E, D, r]
// (one adapter per expert, like the weights they adapt).
//
// Tensor parallelism splits an adapter the way its layer is split: for a
// column-parallel layer (output split) B is split by rows and A replicated;
// for a row-parallel one (input split) A is split by columns and B
// replicated. The low-rank activation x A^T of a column-parallel layer passes
// through copy_to_tensor_parallel_region (its gradient is summed over TP, so
// the replicated A gets the whole gradient on every rank); that of a
// row-parallel layer is all-reduced before B. Every rank's merged block is
// then its block of W + scale * B A.
#pragma once

#include <torch/torch.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace moetrain::models {

struct LoraConfig {
  int64_t r = 8;
  double alpha = 16.0;
  double dropout = 0.0;  // on the adapter's input, while training
  std::vector<std::string> targets = {"q_proj", "v_proj"};
  bool rslora = false;

  double scale() const { return rslora ? alpha / std::sqrt(static_cast<double>(r)) : alpha / static_cast<double>(r); }
};

// The module names LoraConfig::targets may hold.
const std::vector<std::string>& lora_target_names();
// Throws std::invalid_argument "unknown LoRA target 'x' (one of: ...)" for a
// target not in lora_target_names().
void check_lora_targets(const std::vector<std::string>& targets);

// Whether a (full) parameter name is a LoRA adapter's A or B.
bool is_lora_parameter(const std::string& name);

// A [..., r, fan_in] drawn as PEFT draws it (kaiming_uniform_ with a = sqrt(5):
// U(-1/sqrt(fan_in), 1/sqrt(fan_in))) from the default generator.
torch::Tensor lora_init_a(std::vector<int64_t> shape, int64_t fan_in);

// The adapted weight's name for an adapter parameter: "P.lora_A" ->
// "P.weight", "P.experts_fc1_lora_B" -> "P.experts_fc1_weight".
std::string lora_base_weight_name(const std::string& lora_name);

// `named` with every adapter folded into its weight, in fp32:
// W + scale * B A (batched over experts), and the adapter tensors left out.
// Works on whole tensors and on any rank's matching blocks of W, A and B.
// Throws std::invalid_argument when an adapter has no weight or mismatched
// shapes.
std::vector<std::pair<std::string, torch::Tensor>> merge_lora(
    const std::vector<std::pair<std::string, torch::Tensor>>& named, double scale);

}  // namespace moetrain::models

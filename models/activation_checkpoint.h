// Activation checkpointing for LibTorch C++, which has no torch.utils.checkpoint,
// and the RNG snapshot every recompute-in-backward scheme replays from.
//
// checkpoint(fn, inputs, params) runs fn(inputs) without building a graph (so
// none of fn's intermediate activations are kept), saving only `inputs`. In
// backward it replays fn with grad enabled, from the same default-generator
// state (CPU always, CUDA for the inputs' device when they are on a GPU), so
// dropout draws the same masks, and back-propagates through the replay.
//
// `params` are the tensors fn reads besides its inputs (a layer's parameters):
// passing them makes them inputs of the checkpoint node, so its backward runs
// even when no input needs a gradient (a frozen embedding under LoRA); the
// replay's backward accumulates their gradients into their .grad directly, so
// each parameter's gradient hooks fire once. Gradients flow to floating
// outputs (e.g. the hidden state and the MoE losses); integer outputs (counts)
// are non-differentiable.
//
// Contract on fn: a pure function of (inputs, params, RNG state); it must not
// modify its inputs in place, and the tensors it captures by value stay alive
// until backward.
#pragma once

#include <torch/torch.h>

#include "parallel/tensor_parallel.h"

#include <functional>
#include <optional>
#include <vector>

namespace moetrain::models {

using CheckpointedFunction = std::function<std::vector<torch::Tensor>(const std::vector<torch::Tensor>& inputs)>;

std::vector<torch::Tensor> checkpoint(CheckpointedFunction fn, const std::vector<torch::Tensor>& inputs,
                                      const std::vector<torch::Tensor>& params);

// The default-generator states a recomputation must replay from: the CPU one,
// and the CUDA one of the device the inputs live on (if any). Shared with
// every other recompute-in-backward scheme (ZeRO stage 3).
// With tensor parallelism the snapshot also holds the tensor-parallel dropout
// generators (set_tensor_parallel_rng), so split regions replay their masks.
struct RngSnapshot {
  torch::Tensor cpu;
  std::optional<c10::Device> cuda_device;
  torch::Tensor cuda;
  std::vector<torch::Tensor> tensor_parallel;
};
RngSnapshot capture_rng(const std::vector<torch::Tensor>& inputs);
void restore_rng(const RngSnapshot& snapshot);

// The process's tensor-parallel dropout generators (null: none), included in
// every RngSnapshot from now on. The object must outlive its use.
void set_tensor_parallel_rng(parallel::TensorParallelRng* rng);
parallel::TensorParallelRng* tensor_parallel_rng();

}  // namespace moetrain::models

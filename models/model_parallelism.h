// ModelParallelism: how this rank's copy of the model is split, and the helpers
// the layers use to split themselves.
//
// A model is always built whole first, from the one seed every rank shares, so
// its initial weights are exactly the single-process ones; split_*() then keeps
// this rank's slice of each tensor-parallel parameter (param.set_data), and the
// layers switch to the Megatron forms: column-parallel in, row-parallel out,
// vocabulary-parallel embedding and output projection. Every split parameter
// records where its slice sits in the full tensor (ParameterSlice), which the
// checkpoint writes next to each shard.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "parallel/communicator.h"
#include "parallel/context_parallel.h"
#include "parallel/tensor_parallel.h"

namespace moetrain::models {

struct ModelParallelism {
  parallel::Communicator* tp = nullptr;  // tensor-parallel group; null or size 1: none
  // Dropout inside split activations (TP) and inside experts (EP): a stream
  // that differs per TP rank and per EP rank.
  parallel::TensorParallelRng* tp_rng = nullptr;
  parallel::Communicator* ep = nullptr;  // expert-parallel group; null or size 1: none
  // Context-parallel group (null or size 1: none): every sequence is split
  // over it (parallel/context_parallel.h), attention runs across it in
  // cp_mode, and the MoE losses count the tokens of all of it.
  parallel::Communicator* cp = nullptr;
  parallel::ContextParallelMode cp_mode = parallel::ContextParallelMode::AllToAll;

  int64_t tp_size() const { return tp ? tp->size() : 1; }
  int64_t tp_rank() const { return tp ? tp->rank() : 0; }
  bool tensor_parallel() const { return tp_size() > 1; }
  int64_t ep_size() const { return ep ? ep->size() : 1; }
  int64_t ep_rank() const { return ep ? ep->rank() : 0; }
  bool expert_parallel() const { return ep_size() > 1; }
  int64_t cp_size() const { return cp ? cp->size() : 1; }
  int64_t cp_rank() const { return cp ? cp->rank() : 0; }
  bool context_parallel() const { return cp_size() > 1; }
};

// This rank's part of a parameter: the full tensor's shape, and where the
// local tensor starts in it along each dim (the local shape is the tensor's
// own). A slice may run past the full shape: the last vocabulary shard is
// padded with zero rows, which belong to no real token.
struct ParameterSlice {
  std::vector<int64_t> global_shape;
  std::vector<int64_t> start;
};

// Slices by parameter name, relative to the module that returns them.
using ParameterSlices = std::map<std::string, ParameterSlice>;

// Adds `from` to `into` with `prefix` + "." before each name.
void add_slices(ParameterSlices& into, const std::string& prefix, const ParameterSlices& from);

// A slice of a slice: `inner` is where a block sits in the block `outer`
// describes; the result is where it sits in outer's whole tensor.
ParameterSlice nest_slice(const ParameterSlice& outer, const ParameterSlice& inner);

// Keeps part `rank` of `parts` equal parts of `param` along `dim`, in place,
// after padding that dim with zeros to `padded` (-1: no padding; the size must
// then divide). Returns where the kept part sits in the full tensor.
ParameterSlice split_parameter(torch::Tensor& param, int64_t dim, int64_t rank, int64_t parts, int64_t padded = -1);

// Runs fn() with the default generator of `device` swapped for the
// tensor-parallel one (so dropout inside a split region differs per TP rank
// and is independent of the replicated stream); just fn() when rng is null.
class TensorParallelRngScope {
 public:
  TensorParallelRngScope(parallel::TensorParallelRng* rng, const torch::Device& device);
  ~TensorParallelRngScope();
  TensorParallelRngScope(const TensorParallelRngScope&) = delete;
  TensorParallelRngScope& operator=(const TensorParallelRngScope&) = delete;

 private:
  parallel::TensorParallelRng* rng_;
  at::Generator default_;
  at::Generator tp_;
  torch::Tensor saved_;
};

}  // namespace moetrain::models

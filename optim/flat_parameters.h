// FlatParameters: the model's trainable parameters laid out in flat buffers,
// the layout the optimizer, gradient reduction and ZeRO sharding work on.
//
// Parameters are grouped into units (a layer, the embedding, a final norm:
// see unit_of), each unit contiguous in the flat space and padded to a
// multiple of the number of shards. Rank r of N owns, in every unit, the r-th
// of N equal pieces; its local shard is those pieces concatenated. Under
// expert parallelism expert units are sharded over the expert-data-parallel
// group instead (FlatUnit::shards; see ShardingOptions::expert_shards).
//
//   model   compute dtype, full flat space: every parameter is a view into it
//           (absent under ZeRO 3, see below)
//   master  fp32 weights the optimizer updates: the full flat space when not
//           sharded (with fp32 compute it *is* the model buffer), else the
//           local shard only (ZeRO >= 1)
//   grads   fp32 gradient accumulator: the full flat space, or the local shard
//           only when gradients are sharded (ZeRO >= 2)
//
// ZeRO 3 (shard_params): there is no model buffer. Between uses every
// trainable parameter is an empty tensor of the compute dtype; the trainer
// all-gathers a unit's weights into a temporary buffer of unit_buffer_numel
// elements and points the unit's parameters at it (bind_unit) for as long as
// it needs them, then release_unit drops them again. Only the fp32 master
// shard stays resident.
//
// Frozen parameters (requires_grad false) are not part of the buffers.
// Ownership: the buffers live here and the model's parameters alias them, so
// this object must outlive any use of the model.
#pragma once

#include <torch/torch.h>

#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace moetrain::optim {

struct FlatParameterEntry {
  std::string name;
  torch::Tensor param;  // the model's parameter (a view into `model`)
  int64_t offset = 0;   // start in the flat space
  int64_t numel = 0;
  std::vector<int64_t> shape;
  bool weight_decay = true;
  size_t unit = 0;  // index into units()
};

struct FlatUnit {
  std::string name;          // e.g. "encoder.layers.3", "embed_tokens"
  int64_t offset = 0;        // start in the flat space
  int64_t numel = 0;         // parameters in it
  int64_t padded = 0;        // numel rounded up to a multiple of the shard count
  int64_t shard = 0;         // padded / shards: one rank's piece
  int64_t local_offset = 0;  // where this rank's piece sits in the local shard
  // Expert parallelism: the unit holds only this rank's experts and is
  // replicated (and sharded) over the expert-data-parallel group, not the
  // whole data-parallel group.
  bool expert = false;
  int64_t shards = 1;      // ranks the unit is sharded over
  int64_t shard_rank = 0;  // this rank among them
};

// A run of consecutive elements that share one weight-decay setting.
struct DecaySegment {
  int64_t begin = 0;
  int64_t end = 0;
  bool weight_decay = true;
};

// Appends [begin, end) to `segments`, extending the last segment instead when
// it ends at `begin` with the same weight_decay; an empty range adds nothing.
void append_decay_segment(std::vector<DecaySegment>& segments, int64_t begin, int64_t end, bool weight_decay);

struct ShardingOptions {
  int64_t shards = 1;         // data-parallel ranks sharing the optimizer state
  int64_t rank = 0;           // this rank among them
  bool shard_master = false;  // ZeRO >= 1: master weights and moments sharded
  bool shard_grads = false;   // ZeRO >= 2: gradient accumulator sharded
  bool shard_params = false;  // ZeRO 3: no full model copy; units gathered on use
  // Expert parallelism (> 0): expert weights (is_expert_parameter) go into
  // units of their own ("<layer>.moe.experts"), sharded over the
  // `expert_shards` ranks of the expert-data-parallel group, of which this
  // is `expert_rank`. 0: experts are ordinary parameters of their layer.
  int64_t expert_shards = 0;
  int64_t expert_rank = 0;
};

// Stacked expert weights of a MoE layer ("...moe.experts_fc1_weight" ...).
bool is_expert_parameter(const std::string& parameter_name);

// The unit a parameter belongs to: "encoder.layers.3.self_attn.q_proj.weight"
// -> "encoder.layers.3"; otherwise the module path ("encoder.final_norm").
// With `expert_units`, expert weights form their own unit:
// "encoder.layers.3.moe.experts_fc1_weight" -> "encoder.layers.3.moe.experts".
std::string unit_of(const std::string& parameter_name, bool expert_units = false);

class FlatParameters {
 public:
  // `decays(name, param)` says whether a parameter gets weight decay. The
  // flat buffers live on `device` (the run's: a pipeline stage may hold no
  // trainable parameter at all); without it, on the parameters' device, or
  // the CPU when there are none.
  FlatParameters(const std::vector<std::pair<std::string, torch::Tensor>>& named_parameters,
                 torch::ScalarType compute_dtype,
                 const std::function<bool(const std::string&, const torch::Tensor&)>& decays,
                 const ShardingOptions& sharding = {}, std::optional<torch::Device> device = std::nullopt);

  int64_t numel() const { return numel_; }              // parameters (unpadded)
  int64_t padded_numel() const { return padded_; }      // the flat space
  int64_t local_numel() const { return local_numel_; }  // this rank's shard
  torch::ScalarType compute_dtype() const { return compute_dtype_; }
  const ShardingOptions& sharding() const { return sharding_; }
  const std::vector<FlatParameterEntry>& entries() const { return entries_; }
  const std::vector<FlatUnit>& units() const { return units_; }
  const FlatParameterEntry& entry(const std::string& name) const;

  // Decay runs in the coordinates of master()/the optimizer state: the flat
  // space when unsharded, the local shard when sharded.
  std::vector<DecaySegment> master_decay_segments() const;

  // Undefined under ZeRO 3.
  torch::Tensor& model() { return model_; }
  torch::Tensor& master() { return master_; }
  torch::Tensor& grads() { return grads_; }
  const torch::Tensor& master() const { return master_; }
  const torch::Tensor& grads() const { return grads_; }

  // The range of the flat space this rank's piece of unit u covers.
  std::pair<int64_t, int64_t> piece_range(const FlatUnit& u) const;
  // The part of parameter e (as [begin, end) of its flattened elements) whose
  // master copy lives on this rank, and where it is in master(); empty
  // (begin == end) when none does.
  struct LocalPiece {
    int64_t begin = 0, end = 0;  // within the flattened parameter
    int64_t master_offset = 0;   // index in master() of element `begin`
  };
  LocalPiece local_piece(const FlatParameterEntry& e) const;

  // A view of a full-flat-space buffer shaped like parameter e.
  torch::Tensor view(const torch::Tensor& flat, const FlatParameterEntry& e) const;

  // ZeRO 3. The entries of unit u are entries()[range.first, range.second).
  std::pair<size_t, size_t> unit_entries(size_t u) const { return unit_entries_.at(u); }
  // Points unit u's parameters at views of `full` (compute dtype, u.padded
  // elements, laid out like the unit's part of the flat space).
  void bind_unit(size_t u, const torch::Tensor& full);
  // Points unit u's parameters at empty tensors, dropping the gathered weights.
  void release_unit(size_t u);
  // Copies unit u's parameter gradients (`grads[i]` for the unit's i-th entry,
  // undefined = zero) into `flat` (fp32, u.padded elements, padding zero).
  void flatten_unit_grads(size_t u, const std::vector<torch::Tensor>& grads, torch::Tensor& flat) const;
  // Bytes of compute-dtype parameters that stay resident between steps: the
  // model buffer, none under ZeRO 3.
  int64_t resident_param_bytes() const;

  // Adds every parameter's .grad into `target` (fp32, full flat space; the
  // grads buffer when it is not sharded) and releases .grad.
  void accumulate_grads_into(torch::Tensor& target);
  void accumulate_grads() { accumulate_grads_into(grads_); }
  void zero_grads();
  // Unsharded master: model = master cast to the compute dtype. (Sharded
  // masters reach the model through an all-gather: BucketedGradSync.)
  void copy_master_to_model();

 private:
  torch::ScalarType compute_dtype_;
  ShardingOptions sharding_;
  std::vector<FlatParameterEntry> entries_;
  std::vector<FlatUnit> units_;
  std::vector<std::pair<size_t, size_t>> unit_entries_;
  int64_t numel_ = 0, padded_ = 0, local_numel_ = 0;
  torch::Tensor model_, master_, grads_;
};

}  // namespace moetrain::optim

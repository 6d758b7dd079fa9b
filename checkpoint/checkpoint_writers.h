// CheckpointWriters: which rank writes which parameter into a checkpoint, so
// that every value is written exactly once however the run is laid out.
//
//   ZeRO >= 1  every rank writes its own shard of the trainable parameters;
//   replicas   otherwise the first rank of the group a parameter is
//              replicated over writes it (dp, or edp for experts);
//   TP         a parameter TP does not split is written by TP rank 0 alone;
//   tied       the last pipeline stage's copy of the tied embedding is never
//              written (the first stage's is).
// Frozen parameters (LoRA's base, finetune.freeze) are never sharded: the
// same rules without the first one.
#pragma once

#include <string>

#include "models/model_parallelism.h"
#include "optim/flat_parameters.h"
#include "parallel/process_groups.h"

namespace moetrain::checkpoint {

class CheckpointWriters {
 public:
  // All three must outlive this object.
  CheckpointWriters(const parallel::ProcessGroups& groups, const optim::FlatParameters& params,
                    const models::ParameterSlices& slices)
      : groups_(groups), params_(params), slices_(slices) {}

  // Whether this rank writes trainable parameter e.
  bool writes(const optim::FlatParameterEntry& e) const;
  // Whether this rank writes the frozen parameter `name`.
  bool writes_frozen(const std::string& name) const;
  // Whether e is the last stage's copy of the tied embedding (also left out
  // of the gradient norm, which counts the first stage's).
  bool is_tied_copy(const std::string& name) const;

 private:
  bool replicated_over_tp_and_not_first(const std::string& name) const;

  const parallel::ProcessGroups& groups_;
  const optim::FlatParameters& params_;
  const models::ParameterSlices& slices_;
};

}  // namespace moetrain::checkpoint

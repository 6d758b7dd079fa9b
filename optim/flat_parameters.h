// FlatParameters: the model's trainable parameters laid out in flat buffers,
// the layout the optimizer, gradient reduction and ZeRO sharding work on.
//
//   master  fp32 [numel]  the weights the optimizer updates
//   model   compute dtype [numel]; every parameter's data is a view into it.
//           With fp32 compute it *is* the master buffer (no copy).
//   grads   fp32 [numel]  gradients accumulated over micro-batches
//
// Parameters keep the order the model registers them in; frozen parameters
// (requires_grad false) are not part of the buffers. Ownership: the buffers
// live here; the model's parameters alias them, so this object must outlive
// any use of the model.
#pragma once

#include <torch/torch.h>

#include <string>
#include <utility>
#include <vector>

namespace moetrain::optim {

struct FlatParameterEntry {
  std::string name;
  torch::Tensor param;   // the model's parameter (a view into `model`)
  int64_t offset = 0;    // start in the flat buffers
  int64_t numel = 0;
  std::vector<int64_t> shape;
  bool weight_decay = true;
};

// A run of consecutive elements that share one weight-decay setting.
struct DecaySegment {
  int64_t begin = 0;
  int64_t end = 0;
  bool weight_decay = true;
};

class FlatParameters {
 public:
  // `decays(name, param)` says whether a parameter gets weight decay.
  FlatParameters(const std::vector<std::pair<std::string, torch::Tensor>>& named_parameters,
                 torch::ScalarType compute_dtype,
                 const std::function<bool(const std::string&, const torch::Tensor&)>& decays);

  int64_t numel() const { return master_.numel(); }
  torch::ScalarType compute_dtype() const { return compute_dtype_; }
  const std::vector<FlatParameterEntry>& entries() const { return entries_; }
  const FlatParameterEntry& entry(const std::string& name) const;
  std::vector<DecaySegment> decay_segments() const;

  torch::Tensor& master() { return master_; }
  torch::Tensor& grads() { return grads_; }
  const torch::Tensor& master() const { return master_; }
  const torch::Tensor& grads() const { return grads_; }

  // A view of `flat` (any buffer laid out like master) shaped like parameter e.
  torch::Tensor view(const torch::Tensor& flat, const FlatParameterEntry& e) const;

  // Adds every parameter's .grad (compute dtype) into the fp32 grads buffer and
  // releases .grad, so the next micro-batch starts from none.
  void accumulate_grads();
  void zero_grads();
  // After an optimizer step: model weights = master cast to the compute dtype.
  void copy_master_to_model();

 private:
  torch::ScalarType compute_dtype_;
  std::vector<FlatParameterEntry> entries_;
  torch::Tensor master_, model_, grads_;
};

}  // namespace moetrain::optim

// AdamW (decoupled weight decay, Loshchilov & Hutter) over flat fp32 buffers.
//
// The optimizer owns the fp32 moments of one flat master buffer (the whole
// model without ZeRO, this rank's shard with it) and updates it in place.
// The update matches torch.optim.AdamW:
//   p -= lr*wd*p;  m, v updated;  p -= lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps).
// It runs as kernels::adamw_update over the buffer cut into runs of one decay
// setting (the decay segments, and the elements between them without decay).
#pragma once

#include <torch/torch.h>

#include <vector>

#include "optim/flat_parameters.h"
#include "optim/optim_config.h"

namespace moetrain::optim {

class AdamW {
 public:
  // `segments` say which elements of the master buffer get weight decay;
  // they must lie in [0, numel) and not overlap.
  AdamW(const OptimConfig& config, int64_t numel, std::vector<DecaySegment> segments,
        const torch::TensorOptions& options);

  // One update with learning rate `lr`; master and grads are [numel] fp32.
  void step(torch::Tensor& master, const torch::Tensor& grads, double lr);

  int64_t steps_taken() const { return step_; }
  void set_steps_taken(int64_t step) { step_ = step; }
  torch::Tensor& exp_avg() { return exp_avg_; }        // [numel]
  torch::Tensor& exp_avg_sq() { return exp_avg_sq_; }  // [numel]
  const torch::Tensor& exp_avg() const { return exp_avg_; }
  const torch::Tensor& exp_avg_sq() const { return exp_avg_sq_; }
  int64_t state_bytes() const;

 private:
  OptimConfig config_;
  // [0, numel) cut into consecutive runs, each decayed or not as a whole.
  std::vector<DecaySegment> update_runs_;
  torch::Tensor exp_avg_, exp_avg_sq_;
  int64_t step_ = 0;
};

}  // namespace moetrain::optim

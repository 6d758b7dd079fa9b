// AdamW (decoupled weight decay, Loshchilov & Hutter) over flat fp32 buffers.
//
// The optimizer owns the moments for the range [begin, end) of the flat
// buffers (the whole range without ZeRO, this rank's shard with it) and
// updates that range of the master weights in place. The update matches
// torch.optim.AdamW: p -= lr*wd*p; m, v updated; p -= lr/bc1 * m/(sqrt(v)/sqrt(bc2)+eps).
#pragma once

#include <torch/torch.h>

#include <vector>

#include "optim/flat_parameters.h"
#include "optim/optim_config.h"

namespace moetrain::optim {

class AdamW {
 public:
  AdamW(const OptimConfig& config, int64_t begin, int64_t end, std::vector<DecaySegment> segments,
        const torch::TensorOptions& options);

  // One update with learning rate `lr`. master and grads are the full flat
  // buffers; only [begin, end) is read and written.
  void step(torch::Tensor& master, const torch::Tensor& grads, double lr);

  int64_t steps_taken() const { return step_; }
  void set_steps_taken(int64_t step) { step_ = step; }
  torch::Tensor& exp_avg() { return exp_avg_; }        // [end - begin]
  torch::Tensor& exp_avg_sq() { return exp_avg_sq_; }  // [end - begin]
  const torch::Tensor& exp_avg() const { return exp_avg_; }
  const torch::Tensor& exp_avg_sq() const { return exp_avg_sq_; }
  int64_t begin() const { return begin_; }
  int64_t end() const { return end_; }
  int64_t state_bytes() const;

 private:
  OptimConfig config_;
  int64_t begin_, end_;
  std::vector<DecaySegment> segments_;
  torch::Tensor exp_avg_, exp_avg_sq_;
  int64_t step_ = 0;
};

}  // namespace moetrain::optim

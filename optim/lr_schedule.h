// LrSchedule: learning rate as a function of the optimizer step. Linear warmup
// from lr/warmup to lr, then cosine, linear or constant decay to min_lr at
// decay_steps, and min_lr after that.
#pragma once

#include <cstdint>

#include "optim/optim_config.h"

namespace moetrain::optim {

class LrSchedule {
 public:
  LrSchedule(const OptimConfig& config, int64_t max_steps);
  // step is 0-based: the learning rate used by the (step+1)-th update.
  double lr_at(int64_t step) const;

 private:
  OptimConfig config_;
  int64_t decay_steps_;
};

}  // namespace moetrain::optim

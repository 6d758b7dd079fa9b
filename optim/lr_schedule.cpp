#include "optim/lr_schedule.h"

#include <algorithm>
#include <cmath>

namespace moetrain::optim {

LrSchedule::LrSchedule(const OptimConfig& config, int64_t max_steps)
    : config_(config), decay_steps_(config.decay_steps > 0 ? config.decay_steps : max_steps) {}

double LrSchedule::lr_at(int64_t step) const {
  const double lr = config_.lr;
  if (step < config_.warmup_steps) {
    return lr * static_cast<double>(step + 1) / static_cast<double>(config_.warmup_steps);
  }
  if (config_.schedule == ScheduleType::Constant) return lr;
  const int64_t span = decay_steps_ - config_.warmup_steps;
  if (span <= 0 || step >= decay_steps_) return config_.min_lr;
  const double progress = static_cast<double>(step - config_.warmup_steps) / static_cast<double>(span);
  double factor = 1.0 - progress;  // linear
  if (config_.schedule == ScheduleType::Cosine) factor = 0.5 * (1.0 + std::cos(M_PI * progress));
  return std::max(config_.min_lr, config_.min_lr + (lr - config_.min_lr) * factor);
}

}  // namespace moetrain::optim

#include "optim/loss_scaler.h"

#include <algorithm>

namespace moetrain::optim {

DynamicLossScaler::DynamicLossScaler(const LossScaleConfig& config, bool enabled) : config_(config), enabled_(enabled) {
  state_.scale = enabled ? config.initial : 1.0;
  state_.hysteresis_left = config.hysteresis;
}

bool DynamicLossScaler::update(bool overflow) {
  if (!enabled_) return !overflow;
  if (overflow) {
    state_.good_steps = 0;
    if (state_.scale <= config_.min) return false;
    if (--state_.hysteresis_left <= 0) {
      state_.scale = std::max(config_.min, state_.scale * config_.backoff_factor);
      state_.hysteresis_left = config_.hysteresis;
    }
    return true;
  }
  if (++state_.good_steps >= config_.growth_interval) {
    state_.scale *= config_.growth_factor;
    state_.good_steps = 0;
    state_.hysteresis_left = config_.hysteresis;
  }
  return true;
}

}  // namespace moetrain::optim

// DynamicLossScaler: the fp16 loss scale. An overflow halves the scale once
// `hysteresis` overflows have been seen since the last growth and skips the
// step; `growth_interval` clean steps in a row double it. Reaching the minimum
// scale and still overflowing is fatal (the caller aborts with a message).
// With fp32/bf16 the scaler is disabled and the scale is 1.
#pragma once

#include <cstdint>

#include "optim/optim_config.h"

namespace moetrain::optim {

struct LossScalerState {
  double scale = 1.0;
  int64_t good_steps = 0;
  int64_t hysteresis_left = 0;
};

class DynamicLossScaler {
 public:
  DynamicLossScaler(const LossScaleConfig& config, bool enabled);

  bool enabled() const { return enabled_; }
  double scale() const { return state_.scale; }
  // Records the outcome of one step. Returns false when the scale is at its
  // minimum and the step still overflowed: training cannot make progress.
  bool update(bool overflow);

  const LossScalerState& state() const { return state_; }
  void set_state(const LossScalerState& state) { state_ = state; }

 private:
  LossScaleConfig config_;
  bool enabled_;
  LossScalerState state_;
};

}  // namespace moetrain::optim

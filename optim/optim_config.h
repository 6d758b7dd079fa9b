// OptimConfig and LossScaleConfig: the `optim:` and `precision.loss_scale:`
// sections of the YAML config as plain values.
#pragma once

#include <cstdint>
#include <string>

namespace moetrain::optim {

enum class ScheduleType { Cosine, Linear, Constant };

struct OptimConfig {
  double lr = 3e-4;
  double min_lr = 0.0;  // floor the decay never goes below
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.1;
  bool decay_norms_and_biases = false;
  bool decay_embeddings = false;
  int64_t warmup_steps = 0;
  ScheduleType schedule = ScheduleType::Cosine;
  int64_t decay_steps = 0;  // step at which decay reaches min_lr; 0: train.max_steps
  double grad_clip = 1.0;   // global-norm clipping threshold; 0 disables
};

struct LossScaleConfig {
  double initial = 65536.0;  // 2^16
  int64_t growth_interval = 1000;
  int64_t hysteresis = 2;
  double min = 1.0;
  double growth_factor = 2.0;
  double backoff_factor = 0.5;
};

}  // namespace moetrain::optim

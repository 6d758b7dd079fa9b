// Cross-field checks of a loaded Config, by section (model, layout and batch,
// train, optim, precision, data, fine-tuning, each phase on its own), and the
// pipeline cuts it names. Enumerated values are parsed by their concern's own
// parser (parallel::parse_schedule, models::check_lora_targets).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "config/config.h"
#include "config/load.h"

namespace moetrain::config {

// Cross-field checks that need the world size (global_batch divisible by
// micro_batch * dp, the parallel layout) and the file system (data files).
// Throws ConfigError naming the key.
void validate_config(const Config& config, int64_t world_size, const ConfigSource& source);

// The pipeline partition parallel.pp_cuts gives (the first unit of every
// stage, starting with 0), each cut a unit name of the model
// (ModelConfig::pipeline_unit_name) or its index; empty when pp_cuts is
// (stages are then balanced by parameter count). Throws ConfigError naming
// the cut that is unknown, out of order or leaves a stage empty.
std::vector<int64_t> resolve_pp_cuts(const Config& config, const ConfigSource* source = nullptr);

}  // namespace moetrain::config

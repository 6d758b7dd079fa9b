#include "config/config.h"

#include <algorithm>
#include <stdexcept>

namespace moetrain::config {

const std::vector<std::pair<const char*, ComputeDtype>>& compute_dtype_names() {
  static const std::vector<std::pair<const char*, ComputeDtype>> names = {
      {"fp32", ComputeDtype::FP32}, {"bf16", ComputeDtype::BF16}, {"fp16", ComputeDtype::FP16}};
  return names;
}

std::string to_string(ComputeDtype dtype) {
  for (const auto& [name, value] : compute_dtype_names()) {
    if (value == dtype) return name;
  }
  return "fp32";
}

torch::ScalarType to_scalar_type(ComputeDtype dtype) {
  switch (dtype) {
    case ComputeDtype::BF16: return torch::kBFloat16;
    case ComputeDtype::FP16: return torch::kFloat16;
    case ComputeDtype::FP32: break;
  }
  return torch::kFloat32;
}

ComputeDtype parse_compute_dtype(const std::string& name) {
  std::string allowed;
  for (const auto& [choice, value] : compute_dtype_names()) {
    if (name == choice) return value;
    allowed += std::string(allowed.empty() ? "" : ", ") + choice;
  }
  throw std::invalid_argument("'" + name + "' is not one of: " + allowed);
}
int64_t phase_start(const Config& config, size_t i) {
  int64_t start = 0;
  for (size_t j = 0; j < i && j < config.phases.size(); ++j) start += config.phases[j].steps;
  return start;
}

Config phase_config(const Config& config, size_t i) {
  const PhaseConfig& phase = config.phases.at(i);
  Config c = config;
  c.finetune = phase.finetune;
  c.lora = phase.lora;
  c.optim = phase.optim;
  c.data = phase.data;
  c.train.max_steps = std::min(config.train.max_steps, phase_start(config, i) + phase.steps);
  c.phases.clear();
  return c;
}

}  // namespace moetrain::config

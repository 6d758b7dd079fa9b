#include "models/lora.h"

#include <algorithm>
#include <map>
#include <stdexcept>

namespace moetrain::models {

const std::vector<std::string>& lora_target_names() {
  static const std::vector<std::string> names = {"q_proj", "k_proj",  "v_proj",      "o_proj",      "fc1",
                                                 "fc2",    "experts", "experts_fc1", "experts_fc2", "all-linear"};
  return names;
}

void check_lora_targets(const std::vector<std::string>& targets) {
  const auto& known = lora_target_names();
  for (const auto& t : targets) {
    if (std::find(known.begin(), known.end(), t) != known.end()) continue;
    std::string list;
    for (const auto& k : known) list += (list.empty() ? "" : ", ") + k;
    throw std::invalid_argument("unknown LoRA target '" + t + "' (one of: " + list + ")");
  }
}

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

bool is_lora_parameter(const std::string& name) { return ends_with(name, "lora_A") || ends_with(name, "lora_B"); }

torch::Tensor lora_init_a(std::vector<int64_t> shape, int64_t fan_in) {
  const double bound = 1.0 / std::sqrt(static_cast<double>(fan_in));
  torch::NoGradGuard no_grad;
  return torch::empty(shape).uniform_(-bound, bound);
}

std::string lora_base_weight_name(const std::string& lora_name) {
  if (!is_lora_parameter(lora_name)) throw std::invalid_argument("not a LoRA parameter: " + lora_name);
  const std::string stem = lora_name.substr(0, lora_name.size() - std::string("lora_A").size());
  // "P." -> "P.weight"; "P.experts_fc1_" -> "P.experts_fc1_weight".
  return stem + "weight";
}

std::vector<std::pair<std::string, torch::Tensor>> merge_lora(
    const std::vector<std::pair<std::string, torch::Tensor>>& named, double scale) {
  torch::NoGradGuard no_grad;
  std::map<std::string, torch::Tensor> a, b;
  for (const auto& [name, t] : named) {
    if (ends_with(name, "lora_A")) a[lora_base_weight_name(name)] = t;
    if (ends_with(name, "lora_B")) b[lora_base_weight_name(name)] = t;
  }
  std::vector<std::pair<std::string, torch::Tensor>> out;
  size_t merged = 0;
  for (const auto& [name, t] : named) {
    if (is_lora_parameter(name)) continue;
    const auto ia = a.find(name), ib = b.find(name);
    if (ia == a.end() && ib == b.end()) {
      out.emplace_back(name, t);
      continue;
    }
    if (ia == a.end() || ib == b.end())
      throw std::invalid_argument("LoRA: " + name + " has only one of lora_A, lora_B");
    // [.., out, r] x [.., r, in] -> [.., out, in]
    const torch::Tensor delta = torch::matmul(ib->second.to(torch::kFloat), ia->second.to(torch::kFloat));
    if (delta.sizes() != t.sizes()) {
      throw std::invalid_argument("LoRA: " + name + " is " + c10::str(t.sizes()) + " but B A is " +
                                  c10::str(delta.sizes()));
    }
    out.emplace_back(name, t.to(torch::kFloat) + scale * delta);
    ++merged;
  }
  // Every adapter found its weight above, or names one the model lacks.
  if (merged != a.size() || merged != b.size()) {
    for (const auto* adapters : {&a, &b}) {
      for (const auto& [weight, unused] : *adapters) {
        const bool found = std::any_of(named.begin(), named.end(), [&](const auto& x) { return x.first == weight; });
        if (!found) throw std::invalid_argument("LoRA: adapter without its weight " + weight);
      }
    }
  }
  return out;
}

}  // namespace moetrain::models

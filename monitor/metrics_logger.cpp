#include "monitor/metrics_logger.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <sstream>
#include <vector>

#include "monitor/tensorboard_writer.h"

namespace moetrain::monitor {

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) seconds = 0;
  const auto s = static_cast<long long>(seconds + 0.5);
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%lld:%02lld:%02lld", s / 3600, (s / 60) % 60, s % 60);
  return buf;
}

namespace {

void add_scalars(const std::string& prefix, const nlohmann::json& value,
                 std::vector<std::pair<std::string, double>>& scalars) {
  if (value.is_boolean()) {
    scalars.emplace_back(prefix, value.get<bool>() ? 1.0 : 0.0);
  } else if (value.is_number()) {
    scalars.emplace_back(prefix, value.get<double>());
  } else if (value.is_object() || value.is_array()) {
    for (const auto& [key, sub] : value.items()) add_scalars(prefix + "/" + key, sub, scalars);
  }
}

// {"dp": {"all_reduce": {"bytes": .., "seconds": ..}}, ..}
nlohmann::json comm_json(const std::map<std::string, CommFigures>& comm) {
  nlohmann::json out = nlohmann::json::object();
  for (const auto& [key, figures] : comm) {
    const auto space = key.find(' ');
    out[key.substr(0, space)][key.substr(space + 1)] = {{"bytes", figures.bytes}, {"seconds", figures.seconds}};
  }
  return out;
}

// {"encoder.layers.1": [tokens of expert 0, 1, ..], ..}
nlohmann::json expert_tokens_json(const StepMetrics& m) {
  nlohmann::json out = nlohmann::json::object();
  if (m.moe_layers.empty()) return out;
  const size_t experts = m.expert_tokens.size() / m.moe_layers.size();
  for (size_t l = 0; l < m.moe_layers.size(); ++l) {
    out[m.moe_layers[l]] =
        std::vector<int64_t>(m.expert_tokens.begin() + static_cast<std::ptrdiff_t>(l * experts),
                             m.expert_tokens.begin() + static_cast<std::ptrdiff_t>((l + 1) * experts));
  }
  return out;
}

}  // namespace

std::pair<double, std::string> worst_expert_load(const StepMetrics& m) {
  std::pair<double, std::string> worst{0.0, ""};
  if (m.moe_layers.empty()) return worst;
  const size_t experts = m.expert_tokens.size() / m.moe_layers.size();
  for (size_t l = 0; l < m.moe_layers.size(); ++l) {
    int64_t total = 0, most = 0;
    for (size_t e = 0; e < experts; ++e) {
      total += m.expert_tokens[l * experts + e];
      most = std::max(most, m.expert_tokens[l * experts + e]);
    }
    if (total == 0) continue;
    const double ratio = static_cast<double>(most) * static_cast<double>(experts) / static_cast<double>(total);
    if (ratio > worst.first) worst = {ratio, m.moe_layers[l]};
  }
  return worst;
}

std::vector<std::pair<std::string, double>> tensorboard_scalars(const nlohmann::json& record) {
  std::vector<std::pair<std::string, double>> scalars;
  for (const auto& [key, value] : record.items()) {
    if (key == "step") continue;
    const bool eval = key.rfind("eval_", 0) == 0;
    add_scalars(eval ? "eval/" + key.substr(5) : "train/" + key, value, scalars);
  }
  return scalars;
}

MetricsLogger::MetricsLogger(const std::string& output_dir, int64_t resume_step, const MetricsOptions& options)
    : phase_(options.phase) {
  const auto path = std::filesystem::path(output_dir) / "metrics.jsonl";
  std::vector<std::string> kept;
  if (resume_step > 0 && std::filesystem::exists(path)) {
    std::ifstream in(path);
    for (std::string line; std::getline(in, line);) {
      try {
        const auto record = nlohmann::json::parse(line);
        if (record.value("step", int64_t{0}) <= resume_step) kept.push_back(line);
      } catch (const nlohmann::json::exception&) {
        // A torn last line from a killed run: drop it.
      }
    }
  }
  out_.open(path, std::ios::trunc);
  for (const auto& line : kept) out_ << line << "\n";
  out_.flush();
  if (options.tensorboard) {
    auto dir = std::filesystem::path(output_dir) / "tensorboard";
    if (!phase_.empty()) dir /= phase_;
    tensorboard_ = std::make_unique<TensorBoardWriter>(dir.string(), resume_step + 1);
  }
}

MetricsLogger::~MetricsLogger() = default;

void MetricsLogger::write(nlohmann::json record) {
  if (!phase_.empty()) record["phase"] = phase_;
  out_ << record.dump() << "\n";
  out_.flush();
  if (!tensorboard_) return;
  const auto scalars = tensorboard_scalars(record);
  if (!scalars.empty()) tensorboard_->add_scalars(record.value("step", int64_t{0}), scalars);
}

void MetricsLogger::log_step(const StepMetrics& m) {
  const auto [load_ratio, load_layer] = worst_expert_load(m);
  char experts[64] = "";
  if (load_ratio > 0) std::snprintf(experts, sizeof(experts), " | experts max/mean %.2f", load_ratio);
  char mfu[32] = "";
  if (m.mfu) std::snprintf(mfu, sizeof(mfu), " | MFU %.1f%%", 100.0 * *m.mfu);
  char distill[64] = "";
  if (m.distill_kl && m.distill_loss)
    std::snprintf(distill, sizeof(distill), " | distill %.4f (kl %.4f)", *m.distill_loss, *m.distill_kl);
  char line[704];
  std::snprintf(line, sizeof(line),
                "step %lld/%lld | loss %.4f%s | aux %.3f | z %.3f | lr %.2e | grad norm %.3f | "
                "%.0f tok/s%s | %.0f ms%s | elapsed %s | eta %s%s",
                static_cast<long long>(m.step), static_cast<long long>(m.max_steps), m.loss, distill, m.aux_loss,
                m.z_loss, m.lr, m.grad_norm, m.tokens_per_s, mfu, m.step_ms, experts,
                format_duration(m.elapsed_s).c_str(), format_duration(m.eta_s).c_str(),
                m.skipped ? " | skipped (fp16 overflow)" : "");
  std::cout << line << std::endl;
  nlohmann::json record = {{"step", m.step},
                           {"loss", m.loss},
                           {"aux_loss", m.aux_loss},
                           {"z_loss", m.z_loss},
                           {"lr", m.lr},
                           {"grad_norm", m.grad_norm},
                           {"loss_scale", m.loss_scale},
                           {"tokens_per_s", m.tokens_per_s},
                           {"step_ms", m.step_ms},
                           {"data_wait_ms", m.data_wait_ms},
                           {"elapsed_s", m.elapsed_s},
                           {"tokens", m.tokens},
                           {"dropped_tokens", m.dropped_tokens},
                           {"skipped", m.skipped},
                           {"rss_bytes", m.rss_bytes},
                           {"peak_rss_bytes", m.peak_rss_bytes},
                           {"cuda_peak_bytes", m.cuda_peak_bytes},
                           {"comm", comm_json(m.comm)}};
  if (m.mfu) record["mfu"] = *m.mfu;
  if (m.distill_kl) record["distill_kl"] = *m.distill_kl;
  if (m.distill_loss) record["distill_loss"] = *m.distill_loss;
  if (!m.moe_layers.empty()) {
    record["expert_tokens"] = expert_tokens_json(m);
    record["expert_load_max_ratio"] = load_ratio;
  }
  write(std::move(record));
}

void MetricsLogger::log_eval(int64_t step, double loss, int64_t tokens) {
  char line[256];
  std::snprintf(line, sizeof(line), "eval at step %lld | loss %.4f | ppl %.2f | %lld tokens",
                static_cast<long long>(step), loss, std::exp(loss), static_cast<long long>(tokens));
  std::cout << line << std::endl;
  write({{"step", step}, {"eval_loss", loss}, {"eval_ppl", std::exp(loss)}, {"eval_tokens", tokens}});
}

void MetricsLogger::log_event(int64_t step, const std::string& text) {
  std::cout << text << std::endl;
  write({{"step", step}, {"event", text}});
}

void MetricsLogger::log_checkpoint(int64_t step, const std::string& dir, double seconds, int64_t bytes) {
  const std::string text = "checkpoint saved: " + dir;
  std::cout << text << std::endl;
  write({{"step", step}, {"event", text}, {"checkpoint_seconds", seconds}, {"checkpoint_bytes", bytes}});
}

}  // namespace moetrain::monitor

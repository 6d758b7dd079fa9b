#include "monitor/metrics_logger.h"

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <sstream>
#include <vector>

namespace moetrain::monitor {

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) seconds = 0;
  const auto s = static_cast<long long>(seconds + 0.5);
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%lld:%02lld:%02lld", s / 3600, (s / 60) % 60, s % 60);
  return buf;
}

MetricsLogger::MetricsLogger(const std::string& output_dir, int64_t resume_step) {
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
}

void MetricsLogger::write(const nlohmann::json& record) {
  out_ << record.dump() << "\n";
  out_.flush();
}

void MetricsLogger::log_step(const StepMetrics& m) {
  char line[512];
  std::snprintf(line, sizeof(line),
                "step %lld/%lld | loss %.4f | aux %.3f | z %.3f | lr %.2e | grad norm %.3f | "
                "%.0f tok/s | %.0f ms | elapsed %s | eta %s%s",
                static_cast<long long>(m.step), static_cast<long long>(m.max_steps), m.loss, m.aux_loss, m.z_loss, m.lr,
                m.grad_norm, m.tokens_per_s, m.step_ms, format_duration(m.elapsed_s).c_str(),
                format_duration(m.eta_s).c_str(), m.skipped ? " | skipped (fp16 overflow)" : "");
  std::cout << line << std::endl;
  write({{"step", m.step},
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
         {"skipped", m.skipped}});
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

}  // namespace moetrain::monitor

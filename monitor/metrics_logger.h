// MetricsLogger: the one progress line rank 0 prints every log.every steps,
// and OUTPUT/metrics.jsonl with one JSON object per logged step.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <fstream>
#include <string>

namespace moetrain::monitor {

struct StepMetrics {
  int64_t step = 0;  // 1-based: the number of optimizer steps done
  int64_t max_steps = 0;
  double loss = 0;      // cross-entropy per target token over the global batch
  double aux_loss = 0;  // MoE load-balancing loss (unweighted, summed over layers)
  double z_loss = 0;    // router z-loss (unweighted, summed over layers)
  double lr = 0;
  double grad_norm = 0;  // before clipping
  double loss_scale = 1;
  double tokens_per_s = 0;  // source + target tokens per second, this step
  double step_ms = 0;
  double data_wait_ms = 0;  // of step_ms, waiting for this step's batches (data/batch_prefetcher.h)
  double elapsed_s = 0;     // this process
  double eta_s = 0;
  int64_t tokens = 0;          // source + target tokens in this step's global batch
  int64_t dropped_tokens = 0;  // MoE assignments over capacity
  bool skipped = false;        // fp16 overflow: no update
};

class MetricsLogger {
 public:
  // Opens OUTPUT/metrics.jsonl. When resuming at `resume_step`, lines of later
  // steps (from a run that went further before dying) are dropped first.
  MetricsLogger(const std::string& output_dir, int64_t resume_step);

  void log_step(const StepMetrics& m);
  void log_eval(int64_t step, double loss, int64_t tokens);
  void log_event(int64_t step, const std::string& text);  // printed and recorded

 private:
  void write(const nlohmann::json& record);
  std::ofstream out_;
};

std::string format_duration(double seconds);  // "1:02:03"

}  // namespace moetrain::monitor

// MetricsLogger: the one progress line rank 0 prints every log.every steps,
// OUTPUT/metrics.jsonl with one JSON object per logged step, and the same
// numbers as TensorBoard scalars (monitor/tensorboard_writer.h) when asked.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace moetrain::monitor {

// One (group, op) of a rank's collectives over some steps.
struct CommFigures {
  int64_t calls = 0;
  int64_t bytes = 0;
  double seconds = 0;
};

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
  // Model FLOPs utilisation of this step, 0..1: the global batch's model
  // FLOPs per second over every rank's peak (log.peak_tflops); unset when
  // the peak is unknown.
  std::optional<double> mfu;
  // Word-level distillation (distill.teacher): the KL term per target token
  // and the loss trained on (alpha T^2 KL + (1 - alpha) loss).
  std::optional<double> distill_kl, distill_loss;
  double step_ms = 0;
  double data_wait_ms = 0;  // of step_ms, waiting for this step's batches (data/batch_prefetcher.h)
  double elapsed_s = 0;     // this process
  double eta_s = 0;
  int64_t tokens = 0;           // source + target tokens in this step's global batch
  int64_t dropped_tokens = 0;   // MoE assignments over capacity
  bool skipped = false;         // fp16 overflow: no update
  int64_t rss_bytes = 0;        // this process's resident set now
  int64_t peak_rss_bytes = 0;   // and its high-water mark
  int64_t cuda_peak_bytes = 0;  // the CUDA caching allocator's peak of live tensors (0 on the CPU)
  // This rank's collectives, keyed "<group> <op>" (parallel::ProcessGroups::
  // stats): of this step for Prometheus, since the last logged line in
  // metrics.jsonl.
  std::map<std::string, CommFigures> comm;
  // Token assignments each expert kept, row-major [MoE layer, expert] with
  // the layers named in moe_layers: of this step for Prometheus, summed since
  // the last logged line in metrics.jsonl.
  std::vector<std::string> moe_layers;
  std::vector<int64_t> expert_tokens;
};

// The worst MoE layer's max/mean tokens per expert (1: perfectly balanced),
// and that layer; {0, ""} without MoE layers or tokens.
std::pair<double, std::string> worst_expert_load(const StepMetrics& m);

class TensorBoardWriter;

struct MetricsOptions {
  bool tensorboard = false;  // also OUTPUT/tensorboard/[PHASE/]events.out.tfevents.*
  std::string phase;         // in a run of phases, the phase's name: recorded with each line
};

class MetricsLogger {
 public:
  // Opens OUTPUT/metrics.jsonl. When resuming at `resume_step`, lines of later
  // steps (from a run that went further before dying) are dropped first, and
  // a new TensorBoard file tells TensorBoard to drop them too.
  MetricsLogger(const std::string& output_dir, int64_t resume_step, const MetricsOptions& options = {});
  ~MetricsLogger();

  void log_step(const StepMetrics& m);
  void log_eval(int64_t step, double loss, int64_t tokens);
  void log_event(int64_t step, const std::string& text);  // printed and recorded
  // "checkpoint saved: DIR", with the save's seconds and the bytes in DIR.
  void log_checkpoint(int64_t step, const std::string& dir, double seconds, int64_t bytes);

 private:
  void write(nlohmann::json record);
  std::ofstream out_;
  std::string phase_;
  std::unique_ptr<TensorBoardWriter> tensorboard_;
};

// The TensorBoard scalars of a metrics.jsonl record: each number or boolean
// under its key, "train/KEY" or, for "eval_KEY", "eval/KEY"; objects
// flattened as "train/KEY/SUBKEY" and arrays as "train/KEY/INDEX". "step" is
// the event's step, not a scalar.
std::vector<std::pair<std::string, double>> tensorboard_scalars(const nlohmann::json& record);

std::string format_duration(double seconds);  // "1:02:03"

}  // namespace moetrain::monitor

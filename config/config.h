// Config: the whole YAML configuration as typed structs (one per section;
// the sections of models, optim, data and parallel live with their concern),
// the error every config problem is reported as, and the phases of a run.
// Loading is config/load.h, cross-field checks config/validate.h.
//
// Every config error is a ConfigError with one line of text naming the key
// (and its file:line); the CLI prints it and exits with code 2.
#pragma once

#include <torch/torch.h>

#include <map>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "data/data_config.h"
#include "models/lora.h"
#include "models/model_config.h"
#include "optim/optim_config.h"
#include "parallel/parallel_config.h"

namespace moetrain::config {

class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

enum class ComputeDtype { FP32, BF16, FP16 };
// The names a config may give, with their values.
const std::vector<std::pair<const char*, ComputeDtype>>& compute_dtype_names();
std::string to_string(ComputeDtype dtype);  // "fp32" | "bf16" | "fp16"
// The inverse; throws std::invalid_argument "'NAME' is not one of: fp32, bf16, fp16".
ComputeDtype parse_compute_dtype(const std::string& name);
torch::ScalarType to_scalar_type(ComputeDtype dtype);

struct PrecisionConfig {
  ComputeDtype compute = ComputeDtype::FP32;
  optim::LossScaleConfig loss_scale;
};

struct TrainConfig {
  int64_t global_batch = 32;  // samples per optimizer step, over all DP ranks
  int64_t micro_batch = 8;    // samples per forward/backward on one rank
  int64_t max_steps = 1000;
  uint64_t seed = 1234;
  std::string device = "cpu";  // cpu | cuda | auto
  double label_smoothing = 0.0;
  int64_t eval_every = 0;    // 0: no evaluation during training
  int64_t eval_batches = 4;  // global batches of the valid split per evaluation
  int64_t threads = 0;       // intra-op CPU threads; 0: LibTorch's default
  // > 0: after that step's gradients are reduced and unscaled (before
  // clipping), write them to OUTPUT/grads-step-NNNNNN in the checkpoint
  // layout, to compare gradients across parallel layouts. 0: never.
  int64_t dump_grads_step = 0;
};

struct CheckpointConfig {
  int64_t every = 0;  // 0: only at the end (and on SIGTERM/SIGINT)
  int64_t keep = 3;   // complete checkpoints kept; 0 keeps all
};

struct LogConfig {
  int64_t every = 10;
  bool tensorboard = true;  // OUTPUT/tensorboard/: the metrics as TensorBoard scalars
  // Prometheus endpoint (monitor/prometheus_exporter.h): 0 = off; rank 0
  // serves http://prometheus_bind:prometheus_port/metrics, or with
  // prometheus_all_ranks every rank at prometheus_port + its node-local rank.
  int64_t prometheus_port = 0;
  std::string prometheus_bind = "127.0.0.1";
  bool prometheus_all_ranks = false;
  // Stall watchdog (monitor/stall_watchdog.h): rank 0 prints a line when no
  // step has finished for stall_factor x the median step time, and at least
  // stall_min_s seconds; 0 turns it off.
  double stall_factor = 10;
  double stall_min_s = 60;
  // One device's peak matmul rate in the compute dtype, TFLOP/s (989 for an
  // H100 SXM in bf16): the denominator of model FLOPs utilisation (MFU,
  // models/flops.h). 0: unknown, no MFU reported.
  double peak_tflops = 0;
};

enum class FinetuneMode { Full, Lora };

struct FinetuneConfig {
  FinetuneMode mode = FinetuneMode::Full;
  std::vector<std::string> freeze;  // parameter-name substrings kept frozen
};

// lora.{r, alpha, dropout, targets, rslora}: see models/lora.h.
using LoraConfig = models::LoraConfig;

// Word-level distillation (train/distillation.h): with a teacher, each
// micro-batch's loss per target token is
//   alpha * temperature^2 * KL(teacher_T || student_T) + (1 - alpha) * CE
// where X_T = softmax(logits / temperature), the teacher's restricted to its
// top_k logits (0: all) and renormalised.
struct DistillConfig {
  std::string teacher;  // a checkpoint or run directory; empty: no distillation
  double temperature = 1.0;
  double alpha = 0.5;
  int64_t top_k = 0;
};

// One phase of a run (the `phases:` list): `steps` optimizer steps with its
// own fine-tuning mode, LoRA settings, optimizer settings (a fresh optimizer,
// its learning-rate schedule over the phase) and data (a fresh data position
// at the phase's first step). Sections a phase does not name are the run's.
struct PhaseConfig {
  std::string name;  // default "phase<i>"
  int64_t steps = 0;
  FinetuneConfig finetune;
  LoraConfig lora;
  optim::OptimConfig optim;
  data::DataConfig data;
};

struct Config {
  models::ModelConfig model;
  parallel::ParallelConfig parallel;
  PrecisionConfig precision;
  optim::OptimConfig optim;
  TrainConfig train;
  data::DataConfig data;
  CheckpointConfig checkpoint;
  LogConfig log;
  FinetuneConfig finetune;
  LoraConfig lora;
  DistillConfig distill;
  // Empty: one phase, the sections above. Otherwise the run is these phases
  // in order, and train.max_steps defaults to their total.
  std::vector<PhaseConfig> phases;
};

// The first step of phase i (the sum of the earlier phases' steps).
int64_t phase_start(const Config& config, size_t i);

// The config phase i trains with: the run's, with the phase's sections,
// train.max_steps at the phase's last step (or the run's max_steps when that
// comes first) and no phases.
Config phase_config(const Config& config, size_t i);

}  // namespace moetrain::config

// Config: the whole YAML configuration as typed structs, and the strict loader
// that fills it.
//
// Loading is strict: an unknown key is an error naming its path, file and line
// (with a suggestion for a near miss); a wrong type, an out-of-range value or
// an inconsistent combination is an error too. Every such error is a
// ConfigError with one line of text; the CLI prints it and exits with code 2.
#pragma once

#include <torch/torch.h>

#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "data/data_config.h"
#include "models/lora.h"
#include "models/model_config.h"
#include "optim/optim_config.h"
#include "parallel/parallel_config.h"

namespace moetrain::trainer {

class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

enum class ComputeDtype { FP32, BF16, FP16 };
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
  int64_t eval_every = 0;      // 0: no evaluation during training
  int64_t eval_batches = 4;    // global batches of the valid split per evaluation
  int64_t threads = 0;         // intra-op CPU threads; 0: LibTorch's default
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
};

enum class FinetuneMode { Full, Lora };

struct FinetuneConfig {
  FinetuneMode mode = FinetuneMode::Full;
  std::vector<std::string> freeze;  // parameter-name substrings kept frozen
};

// lora.{r, alpha, dropout, targets, rslora}: see models/lora.h.
using LoraConfig = models::LoraConfig;

// One phase of a run (the `phases:` list): `steps` optimizer steps with its
// own fine-tuning mode, LoRA settings, optimizer settings (a fresh optimizer,
// its learning-rate schedule over the phase) and data (a fresh data position
// at the phase's first step). Sections a phase does not name are the run's.
struct PhaseConfig {
  std::string name;   // default "phase<i>"
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

// Where a config came from, so that cross-field errors can name file:line.
struct ConfigSource {
  std::string file;
  std::map<std::string, std::string> locations;  // "model.d_model" -> "cfg.yaml:12"
  std::string where(const std::string& key) const;
};

// Reads `path`, applies `overrides` ("a.b=value", YAML syntax for the value)
// and returns the typed config. Throws ConfigError. Does not touch the
// file system beyond reading `path` (see validate_config for data paths).
Config load_config(const std::string& path, const std::vector<std::string>& overrides,
                   ConfigSource* source = nullptr);

// The config in YAML text (a checkpoint's meta.json carries its run's);
// `origin` names it in errors. Throws ConfigError.
Config load_config_text(const std::string& yaml, const std::string& origin);

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

// The full resolved config (defaults included) as YAML text.
std::string config_to_yaml(const Config& config);

}  // namespace moetrain::trainer

// Trainer: one rank's part of a training run, built from a Config: its
// process groups, its pipeline stage of the model, the flat parameters and
// AdamW, the gradient-sync strategy of its ZeRO stage, the loss scaler and
// the learning-rate schedule. `train_step` is one optimizer step, top to
// bottom; `evaluate` the loss over held-out batches. The loop around them
// (resume, log, evaluate, checkpoint, stop) is train/training_loop.h, a run
// of phases train/phases.h.
//
// Layout (parallel::ProcessGroups): tensor parallelism splits layers inside
// each rank's model, expert parallelism gives each rank a block of every MoE
// layer's experts, and pipeline parallelism gives each rank a stage: a
// contiguous range of the model's pipeline units, whose parameters are the
// only ones it keeps. With pp = 1 the one stage is the whole model.
//
// Every rank of the world constructs a Trainer and calls its methods in
// lockstep; rank 0 alone prints (it sits on the first stage; the loss,
// computed on the last stage, reaches every rank).
#pragma once

#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "checkpoint/checkpoint.h"
#include "checkpoint/checkpoint_writers.h"
#include "config/config.h"
#include "data/batch.h"
#include "models/seq2seq_transformer.h"
#include "optim/adamw.h"
#include "optim/flat_parameters.h"
#include "optim/grad_sync.h"
#include "optim/loss_scaler.h"
#include "optim/lr_schedule.h"
#include "parallel/communicator.h"
#include "parallel/pipeline.h"
#include "parallel/process_groups.h"
#include "parallel/tensor_parallel.h"
#include "train/distillation.h"
#include "train/run_device.h"

namespace moetrain::train {

// Training cannot go on (a NaN, persistent fp16 overflow). The message names
// what went wrong and where; nothing is written over the last checkpoint.
class TrainingError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Where a Trainer sits in a run of phases (Config::phases): the phase spans
// steps [start, end) (its learning-rate schedule too); this Trainer trains up
// to config.train.max_steps, which may stop it earlier. index -1: a run
// without phases.
struct PhaseInfo {
  int64_t index = -1;
  std::string name;
  int64_t start = 0;
  int64_t end = 0;
  bool in_phases() const { return index >= 0; }
};

struct TrainOptions {
  std::string output_dir;
  std::string resume;     // checkpoint (or run) to resume from; empty: OUTPUT's newest
  std::string init_from;  // checkpoint whose weights start a new run
};

struct StepResult {
  double loss = 0;  // cross-entropy per target token of the global batch
  double aux_loss = 0;
  double z_loss = 0;
  double grad_norm = 0;
  double lr = 0;
  double loss_scale = 1;
  int64_t tokens = 0;
  int64_t target_tokens = 0;
  int64_t dropped_tokens = 0;
  // Model FLOPs of the global batch at its padded shapes (models/flops.h):
  // the numerator of MFU.
  double model_flops = 0;
  // With distill.teacher, per target token of the global batch: the KL term
  // and the loss trained on, kl_weight x distill_kl + ce_weight x loss.
  std::optional<double> distill_kl, distill_loss;
  bool skipped = false;
  // Token assignments each expert kept this step over the global batch,
  // row-major [MoE layer, expert] in the order of Trainer::moe_layer_names()
  // (empty without MoE layers).
  std::vector<int64_t> expert_tokens;
};

// Bytes this rank holds for the optimizer: fp32 master weights (when they are
// a separate copy or a shard), Adam moments.
struct OptimizerMemory {
  int64_t master_bytes = 0;
  int64_t moment_bytes = 0;
  int64_t grad_bytes = 0;  // the persistent fp32 gradient accumulator
  // Compute-dtype model weights resident between steps: the full model for
  // ZeRO 0-2 (with fp32 compute and ZeRO 0 it is the master itself), none for
  // ZeRO 3, whose only resident copy is the master shard.
  int64_t param_bytes = 0;
  // Frozen weights (LoRA's base, finetune.freeze): compute dtype, no master,
  // gradient or moments.
  int64_t frozen_bytes = 0;
};

class Trainer {
 public:
  // config.model.vocab_size must be set (the CLI fills it from the tokenizer).
  // `world` spans every rank of the job (size 1 for a single process).
  Trainer(config::Config config, std::shared_ptr<parallel::Communicator> world, PhaseInfo phase = {});
  ~Trainer();

  // One optimizer step over the micro-batches of one global batch. `step` is
  // the 0-based index of the update (it selects the learning rate).
  StepResult train_step(const std::vector<data::Seq2SeqBatch>& micro_batches, int64_t step);

  // Mean cross-entropy per target token over `batches`, without gradients,
  // and the target tokens counted (over every DP rank's batches).
  std::pair<double, int64_t> evaluate(const std::vector<data::Seq2SeqBatch>& batches);

  // Checkpoints. The contents this rank writes at `step` (meta left empty
  // for the caller); resuming loads weights, optimizer state and the loss
  // scale (the generators too when the layout is the saved one); initialising
  // loads weights only (merging LoRA adapters into a full fine-tune).
  checkpoint::CheckpointContents checkpoint_contents(int64_t step) const;
  checkpoint::LoadedCheckpoint resume_from(const std::string& dir);
  // Returns the LoRA scale merged into the weights (0: none).
  double init_weights_from(const std::string& dir);
  // The layout a checkpoint records (sizes, ZeRO stage, pipeline stages).
  nlohmann::json layout() const;
  // train.dump_grads_step: where gradient dumps go (empty: nowhere).
  void set_output_dir(std::string dir) { output_dir_ = std::move(dir); }

  const config::Config& config() const { return config_; }
  const PhaseInfo& phase() const { return phase_; }
  models::Seq2SeqTransformer& model() { return model_; }
  const models::Seq2SeqTransformer& model() const { return model_; }
  optim::FlatParameters& params() { return *params_; }
  const optim::FlatParameters& params() const { return *params_; }
  optim::AdamW& optimizer() { return *optimizer_; }
  torch::Device device() const { return run_device_.device; }
  // The GPU mapping and the backend chosen at start-up (train/run_device.h).
  const RunDevice& run_device() const { return run_device_; }
  const parallel::ProcessGrid& grid() const { return groups_->grid(); }
  parallel::Communicator& world() { return groups_->world(); }
  OptimizerMemory optimizer_memory() const;
  int64_t trainable_numel() const { return model_numel_; }  // the whole model's
  int64_t total_numel() const { return total_numel_; }      // LoRA adapters included
  int64_t lora_projections() const { return lora_projections_; }
  // The teacher of a distill: run, or null.
  const Distillation* distillation() const { return distillation_.get(); }

  // This rank's pipeline stage: units [stage_begin(), stage_end()) of the
  // model (Seq2SeqTransformer::pipeline_unit_name), and every stage's first
  // unit (the same on every rank).
  int64_t stage_begin() const { return stage_begin_; }
  int64_t stage_end() const { return stage_end_; }
  const std::vector<int64_t>& stage_starts() const { return stage_starts_; }
  // The model's MoE layers, the encoder's then the decoder's
  // ("encoder.layers.1", ...): the rows of StepResult::expert_tokens.
  const std::vector<std::string>& moe_layer_names() const { return moe_layer_names_; }
  // What the pipeline executor measured on this rank in the last train_step.
  const parallel::PipelineStats& pipeline_stats() const { return pipeline_stats_; }
  // Communication of this rank since the last reset, per group and
  // operation (parallel::ProcessGroups::stats).
  parallel::CommStats comm_stats() const { return groups_->stats(); }
  void reset_comm_stats() { groups_->reset_stats(); }

 private:
  // Construction, in order.
  void build_model();
  // parallel.cp_mode, parsed (a ConfigError when unknown).
  parallel::ContextParallelMode context_parallel_mode() const;
  // This rank's parts of host micro-batches under context parallelism (the
  // batches themselves when cp = 1).
  std::vector<data::Seq2SeqBatch> context_parallel_parts(const std::vector<data::Seq2SeqBatch>& batches) const;
  void keep_stage_parameters(std::vector<std::pair<std::string, torch::Tensor>>& trainable);
  void build_optimizer(const std::vector<std::pair<std::string, torch::Tensor>>& trainable);

  // The global batch's token counts and model FLOPs (summed over DP) into r.
  void count_tokens(const std::vector<data::Seq2SeqBatch>& micro_batches, StepResult& r);
  // The metrics of the global batch, summed over DP and PP, into r.
  void sum_step_metrics(const torch::Tensor& loss_terms, const torch::Tensor& expert_tokens, double token_divisor,
                        double global_micro, StepResult& r);
  // A non-finite norm or loss: skips the step (fp16) or throws TrainingError.
  void handle_nonfinite(StepResult& r, const torch::Tensor& grads, int64_t step);
  void dump_gradients(const torch::Tensor& grads, int64_t step);

  std::string first_nonfinite_parameter(const torch::Tensor& grads) const;
  // Tied embeddings on the first and last pipeline stages: both copies get
  // the sum of the two stages' gradients (after the DP reduction).
  void reduce_tied_embedding_grads(torch::Tensor& grads);
  // This stage's forward of one micro-batch on the previous stage's
  // activations (none on the first stage).
  models::StageOutput forward_stage(const data::Seq2SeqBatch& mb, const std::vector<torch::Tensor>& inputs);
  // Buffers for a micro-batch's activations from the previous stage.
  std::vector<torch::Tensor> activation_buffers(const data::Seq2SeqBatch& mb) const;
  bool holds_lm_head() const { return stage_end_ == model_->num_pipeline_units(); }
  // Sum of a value over the data-parallel and pipeline groups (each DP rank
  // holds part of the batch, each stage part of the model's losses).
  torch::Tensor sum_over_dp_and_pp(torch::Tensor values);
  // Cross-entropy of a micro-batch's logits (vocabulary-parallel under TP).
  kernels::CrossEntropyResult cross_entropy(const torch::Tensor& logits, const data::Seq2SeqBatch& mb,
                                            double label_smoothing);
  // The gradient norm over the whole model: every element counted once,
  // however it is sharded (ZeRO), split (TP, EP) or replicated.
  double global_grad_norm(const torch::Tensor& grads);

  config::Config config_;
  PhaseInfo phase_;
  std::string output_dir_;  // where train.dump_grads_step writes
  std::unique_ptr<parallel::ProcessGroups> groups_;
  std::unique_ptr<parallel::TensorParallelRng> tp_rng_;  // tp > 1 or ep > 1
  parallel::PipelineSchedule pipeline_schedule_ = parallel::PipelineSchedule::OneFOneB;
  int64_t model_numel_ = 0;       // trainable parameters of the whole model
  int64_t total_numel_ = 0;       // all parameters of the whole model (LoRA adapters included)
  int64_t lora_projections_ = 0;  // projections carrying a LoRA adapter
  // This stage's frozen parameters (the model's own tensors, compute dtype).
  std::vector<std::pair<std::string, torch::Tensor>> frozen_;
  std::vector<int64_t> stage_starts_;
  int64_t stage_begin_ = 0, stage_end_ = 0;
  std::vector<std::string> moe_layer_names_;
  torch::Tensor stage_moe_rows_;  // int64: the rows of moe_layer_names_ this stage's MoE layers are
  parallel::PipelineStats pipeline_stats_;
  RunDevice run_device_;
  models::Seq2SeqTransformer model_{nullptr};
  std::unique_ptr<optim::FlatParameters> params_;
  std::unique_ptr<optim::GradSync> grad_sync_;
  std::unique_ptr<optim::AdamW> optimizer_;
  std::unique_ptr<optim::DynamicLossScaler> scaler_;
  std::unique_ptr<optim::LrSchedule> schedule_;
  std::unique_ptr<checkpoint::CheckpointWriters> writers_;
  std::unique_ptr<Distillation> distillation_;  // with distill.teacher
};

}  // namespace moetrain::train

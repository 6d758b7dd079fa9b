// Trainer: builds the model, flat parameters, optimizer and data from a
// Config, and runs the training loop: forward/backward over the micro-batches
// of each global batch as this rank's pipeline stage, gradient reduction over
// data-parallel ranks (ZeRO 0-3; stage 3 gathers weights per unit on use, see
// zero3_params.h), unscale, check, clip, AdamW step, log, evaluate,
// checkpoint. `train_step` is the whole optimizer step, top to bottom.
//
// Layout (ProcessGrid): tensor parallelism splits layers inside each rank's
// model, expert parallelism gives each rank a block of every MoE layer's
// experts, and pipeline parallelism gives each rank a stage: a contiguous
// range of the model's pipeline units, whose parameters are the only ones it
// keeps. With pp = 1 the one stage is the whole model.
//
// Every rank of the world constructs a Trainer and calls run() (or
// train_step) in lockstep; rank 0 alone prints and writes metrics (it sits on
// the first stage; the loss, computed on the last stage, reaches every rank).
#pragma once

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "data/batch.h"
#include "kernels/cross_entropy.h"
#include "models/seq2seq_transformer.h"
#include "optim/adamw.h"
#include "optim/flat_parameters.h"
#include "optim/grad_reducer.h"
#include "optim/loss_scaler.h"
#include "optim/lr_schedule.h"
#include "parallel/communicator.h"
#include "parallel/pipeline.h"
#include "parallel/process_grid.h"
#include "parallel/tensor_parallel.h"
#include "trainer/config.h"
#include "trainer/zero3_params.h"

namespace moetrain::trainer {

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
  bool skipped = false;
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
  Trainer(Config config, std::shared_ptr<parallel::Communicator> world, PhaseInfo phase = {});

  // The training loop on config.data; returns the process exit code.
  int run(const TrainOptions& options);

  // One optimizer step over the micro-batches of one global batch. `step` is
  // the 0-based index of the update (it selects the learning rate).
  StepResult train_step(const std::vector<data::Seq2SeqBatch>& micro_batches, int64_t step);

  // Mean cross-entropy per target token over `batches`, without gradients.
  std::pair<double, int64_t> evaluate(const std::vector<data::Seq2SeqBatch>& batches);

  models::Seq2SeqTransformer& model() { return model_; }
  optim::FlatParameters& params() { return *params_; }
  optim::AdamW& optimizer() { return *optimizer_; }
  torch::Device device() const { return device_; }
  const parallel::ProcessGrid& grid() const { return *grid_; }
  parallel::Communicator& world() { return *world_; }
  OptimizerMemory optimizer_memory() const;

  // This rank's pipeline stage: units [stage_begin(), stage_end()) of the
  // model (Seq2SeqTransformer::pipeline_unit_name), and every stage's first
  // unit (the same on every rank).
  int64_t stage_begin() const { return stage_begin_; }
  int64_t stage_end() const { return stage_end_; }
  const std::vector<int64_t>& stage_starts() const { return stage_starts_; }
  // What the pipeline executor measured on this rank in the last train_step.
  const parallel::PipelineStats& pipeline_stats() const { return pipeline_stats_; }
  // Communication of this rank since the last reset, per group and
  // operation: keys "<group> <op>" with group one of world, dp, tp, pp, ep,
  // edp (expert data parallel) and tied (the tied-embedding pair of stages).
  parallel::CommStats comm_stats() const;
  void reset_comm_stats();

 private:
  data::Seq2SeqBatch to_device(const data::Seq2SeqBatch& batch) const;
  std::string first_nonfinite_parameter() const;
  // The part of parameter e's gradient this rank holds in `grads` (the full
  // flat space, or under ZeRO >= 1 its shard); undefined when it holds none.
  torch::Tensor local_grad(const torch::Tensor& grads, const optim::FlatParameterEntry& e) const;
  // Gradient reduction over the data-parallel group, per ZeRO stage.
  void reduce_scatter_unit(const optim::FlatUnit& u, const torch::Tensor& full_grads, torch::Tensor& shard,
                           bool accumulate);
  // The group a unit's gradients are reduced over and its shards live in:
  // the data-parallel group, or for expert units under EP the
  // expert-data-parallel group (the DP ranks holding the same experts).
  parallel::Communicator& group_of(const optim::FlatUnit& u) const;
  // The reduction of one bucket: all-reduce of full_grads' range (ZeRO 0), or
  // reduce-scatter of each of its units into `shard` (ZeRO 1/2; added to it
  // when `accumulate`). The overlapped reducer runs it during the backward;
  // reduce_grads runs it over every bucket after one.
  optim::GradReducer::ReduceFn bucket_reduction(torch::Tensor& full_grads, torch::Tensor& shard, bool accumulate);
  void reduce_grads(torch::Tensor& full_grads, torch::Tensor& shard, bool accumulate);
  // Tied embeddings on the first and last pipeline stages: both copies get
  // the sum of the two stages' gradients (after the DP reduction).
  void reduce_tied_embedding_grads(torch::Tensor& grads);
  // Whether parameter e is the last stage's copy of the tied embedding (the
  // first stage's copy is the one counted in the norm and written).
  bool is_tied_copy(const optim::FlatParameterEntry& e) const;
  // This stage's forward of one micro-batch on the previous stage's
  // activations (none on the first stage).
  models::StageOutput forward_stage(const data::Seq2SeqBatch& mb, const std::vector<torch::Tensor>& inputs);
  // Buffers for a micro-batch's activations from the previous stage.
  std::vector<torch::Tensor> activation_buffers(const data::Seq2SeqBatch& mb) const;
  bool holds_lm_head() const { return stage_end_ == model_->num_pipeline_units(); }
  // Sum of a value over the data-parallel and pipeline groups (each DP rank
  // holds part of the batch, each stage part of the model's losses).
  torch::Tensor sum_over_dp_and_pp(torch::Tensor values);
  // Model weights from the master copy: a cast, or an all-gather of shards.
  void refresh_model_from_master();
  // Cross-entropy of a micro-batch's logits (this rank's vocabulary columns
  // under TP, where it is computed vocabulary-parallel).
  kernels::CrossEntropyResult cross_entropy(const torch::Tensor& logits, const data::Seq2SeqBatch& mb,
                                            double label_smoothing);
  // The gradient norm over the whole model: every element counted once,
  // however it is sharded (ZeRO), split (TP, EP) or replicated.
  double global_grad_norm(const torch::Tensor& grads);
  // Whether this rank writes parameter e in a checkpoint (replicas: only the
  // first rank of the group holding it).
  bool writes_in_checkpoint(const optim::FlatParameterEntry& e) const;
  bool writes_frozen_in_checkpoint(const std::string& name) const;
  // The layout a checkpoint records (sizes, ZeRO stage, pipeline stages).
  nlohmann::json checkpoint_layout() const;
  bool is_leader() const { return world_->rank() == 0; }

  Config config_;
  PhaseInfo phase_;
  std::string output_dir_;  // run()'s; where train.dump_grads_step writes
  std::shared_ptr<parallel::Communicator> world_;
  parallel::Communicator* dp_ = nullptr;   // the data-parallel group (the world itself for one rank)
  parallel::Communicator* edp_ = nullptr;  // the expert-data-parallel group (dp_ while ep = 1)
  parallel::Communicator* pp_ = nullptr;   // this rank's pipeline (the stages holding the same DP/TP piece)
  std::unique_ptr<parallel::ProcessGrid> grid_;
  // Split from the world where the layout needs them: DP and PP whenever
  // the world has more than one rank (so each group's traffic is counted
  // apart), TP for tp > 1, for ep > 1 the expert all-to-all group and the
  // expert-data-parallel group, and for pp > 1 with tied embeddings the pair
  // of first and last stage (ranks of the middle stages get a group of their
  // own).
  std::unique_ptr<parallel::Communicator> tp_comm_, dp_comm_, ep_comm_, edp_comm_, pp_comm_, tied_comm_;
  std::unique_ptr<parallel::TensorParallelRng> tp_rng_;  // tp > 1 or ep > 1
  parallel::PipelineSchedule pipeline_schedule_ = parallel::PipelineSchedule::OneFOneB;
  int64_t model_numel_ = 0;  // trainable parameters of the whole model
  int64_t total_numel_ = 0;  // all parameters of the whole model (LoRA adapters included)
  int64_t lora_projections_ = 0;  // projections carrying a LoRA adapter
  // This stage's frozen parameters (the model's own tensors, compute dtype).
  std::vector<std::pair<std::string, torch::Tensor>> frozen_;
  std::vector<int64_t> stage_starts_;
  int64_t stage_begin_ = 0, stage_end_ = 0;
  parallel::PipelineStats pipeline_stats_;
  torch::Tensor local_grads_;  // ZeRO 1: this rank's reduced gradient shard
  torch::Device device_;
  models::Seq2SeqTransformer model_{nullptr};
  std::unique_ptr<optim::FlatParameters> params_;
  std::unique_ptr<optim::AdamW> optimizer_;
  std::unique_ptr<optim::DynamicLossScaler> scaler_;
  std::unique_ptr<optim::LrSchedule> schedule_;
  std::unique_ptr<Zero3Params> zero3_;  // ZeRO 3 only
  std::vector<optim::GradBucket> grad_buckets_;   // ZeRO 0-2, in reduction order
  std::unique_ptr<optim::GradReducer> reducer_;  // ZeRO 0-2 with DP > 1 and overlap on
};

// `moetrain train`: the whole run of `config` from where its output
// directory (or options.resume) left off: one Trainer, or with phases one
// Trainer per phase in turn, each started from the previous phase's last
// checkpoint (its weights, with LoRA adapters merged when the next phase
// fine-tunes fully; a fresh optimizer and data position). options.init_from
// starts the first phase. Returns the exit code.
int train_run(const Config& config, std::shared_ptr<parallel::Communicator> world, const TrainOptions& options);

}  // namespace moetrain::trainer

#include "trainer/trainer.h"

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>

#include "data/batch_source.h"
#include "data/tokenizer.h"
#include "kernels/cross_entropy.h"
#include "models/activation_checkpoint.h"
#include "optim/grad_clip.h"
#include "parallel/mpi_runtime.h"
#include "trainer/checkpoint.h"
#include "trainer/metrics_logger.h"
#include "trainer/shutdown_signal.h"

namespace fs = std::filesystem;

namespace moetrain::trainer {

namespace {

torch::Device select_device(const std::string& name) {
  if (name == "cuda" || (name == "auto" && torch::cuda::is_available())) {
    if (!torch::cuda::is_available()) {
      throw ConfigError("train.device: cuda requested but no CUDA device is available");
    }
    return torch::Device(torch::kCUDA, 0);
  }
  return torch::kCPU;
}

// Weight decay applies to matrices; norms, biases and embeddings are exempt
// unless the config says otherwise (the GPT-2 / Megatron convention).
bool decays(const optim::OptimConfig& cfg, const std::string& name, const torch::Tensor& p) {
  if (name.find("embed") != std::string::npos) return cfg.decay_embeddings;
  if (p.dim() < 2 || name.find("norm") != std::string::npos) return cfg.decay_norms_and_biases;
  return true;
}

// LoRA trains the adapters alone; full fine-tuning everything but the
// parameters finetune.freeze names.
bool is_trainable(const Config& cfg, const std::string& name) {
  if (cfg.finetune.mode == FinetuneMode::Lora) return models::is_lora_parameter(name);
  for (const auto& pattern : cfg.finetune.freeze) {
    if (name.find(pattern) != std::string::npos) return false;
  }
  return true;
}

}  // namespace

namespace {

at::Generator cpu_generator() { return at::detail::getDefaultCPUGenerator(); }

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

Trainer::Trainer(Config config, std::shared_ptr<parallel::Communicator> world, PhaseInfo phase)
    : config_(std::move(config)),
      phase_(std::move(phase)),
      world_(std::move(world)),
      device_(select_device(config_.train.device)) {
  if (config_.model.vocab_size <= 0) {
    throw ConfigError("model.vocab_size must be known before the model is built");
  }
  // Collectives go through the MPI communicator, which takes CPU tensors: a
  // CUDA run is one process on one GPU (NCCL groups for several GPUs are not
  // wired into the trainer).
  if (device_.is_cuda() && world_->size() > 1) {
    throw ConfigError("train.device: " + config_.train.device + " selects CUDA, but training on CUDA runs as one "
                      "rank and this job has " + std::to_string(world_->size()) +
                      " (several GPUs are not supported yet); start one rank, or set train.device: cpu");
  }
  grid_ = std::make_unique<parallel::ProcessGrid>(world_->size(), world_->rank(), config_.parallel);
  // Splits are collective: every rank takes part in each (with its own group).
  dp_ = world_.get();
  if (grid_->tp_size() > 1) tp_comm_ = world_->split(grid_->tp_group());
  if (world_->size() > 1) {
    dp_comm_ = world_->split(grid_->dp_group());
    dp_ = dp_comm_.get();
  }
  edp_ = dp_;
  if (grid_->ep_size() > 1) {
    ep_comm_ = world_->split(grid_->ep_group());
    edp_comm_ = world_->split(grid_->expert_dp_group());
    edp_ = edp_comm_.get();
  }
  pp_ = world_.get();
  if (world_->size() > 1) {
    pp_comm_ = world_->split(grid_->pp_group());
    pp_ = pp_comm_.get();
  }
  const int64_t pp = grid_->pp_size(), pp_rank = grid_->pp_rank();
  if (pp > 1 && config_.model.tie_embeddings) {
    // The first and last stages both hold the tied embedding.
    std::vector<int64_t> pair{grid_->rank_of(grid_->dp_rank(), 0, grid_->tp_rank()),
                              grid_->rank_of(grid_->dp_rank(), pp - 1, grid_->tp_rank())};
    if (pp_rank != 0 && pp_rank != pp - 1) pair = {world_->rank()};
    tied_comm_ = world_->split(pair);
  }
  try {
    pipeline_schedule_ = parallel::parse_schedule(config_.parallel.schedule);
  } catch (const std::invalid_argument& e) {
    throw ConfigError(std::string("parallel.schedule: ") + e.what());
  }
  if (config_.train.threads > 0) at::set_num_threads(static_cast<int>(config_.train.threads));
  // One seed decides the initial weights, the same on every rank; the
  // generator then drives dropout (one stream per pipeline stage, so stages
  // do not draw the same masks).
  torch::manual_seed(config_.train.seed);
  model_ = models::Seq2SeqTransformer(config_.model);
  if (config_.finetune.mode == FinetuneMode::Lora) {
    try {
      lora_projections_ = model_->add_lora(config_.lora);
    } catch (const std::invalid_argument& e) {
      throw ConfigError(std::string("lora.targets: ") + e.what());
    }
  }
  if (pp_rank > 0) torch::manual_seed(config_.train.seed + 1000003 * static_cast<uint64_t>(pp_rank));
  for (const auto& item : model_->named_parameters(/*recurse=*/true)) {
    total_numel_ += item.value().numel();
    if (is_trainable(config_, item.key())) model_numel_ += item.value().numel();
  }
  // Stages from the whole model's parameter counts (the same on every rank).
  stage_starts_ = resolve_pp_cuts(config_);
  if (stage_starts_.empty()) stage_starts_ = parallel::partition_stages(model_->pipeline_unit_costs(), pp);
  stage_begin_ = stage_starts_[static_cast<size_t>(pp_rank)];
  stage_end_ = pp_rank + 1 < pp ? stage_starts_[static_cast<size_t>(pp_rank + 1)] : model_->num_pipeline_units();
  if (grid_->tp_size() > 1 || grid_->ep_size() > 1) {
    // Built whole from the shared seed, then each TP rank keeps its slices
    // and each EP rank its experts. Split regions and experts draw dropout
    // from a stream of their own per (stage, EP rank, TP rank).
    const int64_t stream = (pp_rank * grid_->ep_size() + grid_->ep_rank()) * grid_->tp_size() + grid_->tp_rank();
    tp_rng_ = std::make_unique<parallel::TensorParallelRng>(config_.train.seed, stream);
    models::set_tensor_parallel_rng(tp_rng_.get());
    model_->parallelize({tp_comm_.get(), tp_rng_.get(), ep_comm_.get()});
  }
  // A stage keeps only the parameters its units use: the others are freed
  // and never reach the optimizer. Frozen parameters stay in the model, in
  // the compute dtype, with no gradient, master copy or optimizer state.
  // (Module::to below moves the kept ones in place, so the handles in
  // `named` and frozen_ stay the model's parameters.)
  std::vector<std::pair<std::string, torch::Tensor>> named;
  for (auto& item : model_->named_parameters(/*recurse=*/true)) {
    if (!model_->pipeline_units_use(stage_begin_, stage_end_, item.key())) {
      item.value().set_requires_grad(false);
      item.value().set_data(torch::empty({0}, item.value().options()));
      continue;
    }
    if (!is_trainable(config_, item.key())) {
      item.value().set_requires_grad(false);
      frozen_.emplace_back(item.key(), item.value());
      continue;
    }
    named.emplace_back(item.key(), item.value());
  }
  model_->to(device_);
  {
    torch::NoGradGuard no_grad;
    for (auto& [name, p] : frozen_) p.set_data(p.to(to_scalar_type(config_.precision.compute)));
  }
  const int64_t zero = config_.parallel.zero_stage;
  optim::ShardingOptions sharding;
  sharding.shards = grid_->dp_size();
  sharding.rank = grid_->dp_rank();
  sharding.shard_master = zero >= 1;
  sharding.shard_grads = zero >= 2;
  sharding.shard_params = zero >= 3;
  if (grid_->ep_size() > 1) {
    sharding.expert_shards = edp_->size();
    sharding.expert_rank = edp_->rank();
  }
  const auto& ocfg = config_.optim;
  params_ = std::make_unique<optim::FlatParameters>(
      named, to_scalar_type(config_.precision.compute),
      [&ocfg](const std::string& n, const torch::Tensor& p) { return decays(ocfg, n, p); }, sharding);
  if (zero == 1) local_grads_ = torch::zeros({params_->local_numel()}, params_->master().options());
  if (zero >= 3) {
    zero3_ = std::make_unique<Zero3Params>(*params_, *dp_, edp_);
    model_->set_layer_runner(zero3_->layer_runner());
  }
  // Overlapped gradient reduction needs a communication thread beside the
  // backward (MPI) or an asynchronous stream (NCCL); ZeRO 3 reduces per unit
  // inside its own backward hook already.
  // Buckets: whole units of at least bucket_mb for the all-reduce (ZeRO 0),
  // one unit each for the per-unit reduce-scatter (ZeRO 1/2).
  if (zero <= 2) {
    const int64_t bucket_elems =
        zero == 0 ? static_cast<int64_t>(config_.parallel.bucket_mb * 1024 * 1024 / 4) : 0;
    grad_buckets_ = optim::GradReducer::make_buckets(*params_, bucket_elems);
  }
  const bool mpi_threads_ok = dp_->backend() != "mpi" || parallel::mpi_thread_level() == MPI_THREAD_MULTIPLE;
  if (config_.parallel.overlap_grad_reduce && dp_->size() > 1 && zero <= 2 && mpi_threads_ok) {
    reducer_ = std::make_unique<optim::GradReducer>(*params_, grad_buckets_, /*async_thread=*/dp_->backend() == "mpi");
  }
  optimizer_ = std::make_unique<optim::AdamW>(config_.optim, params_->master().numel(),
                                              params_->master_decay_segments(), params_->master().options());
  scaler_ = std::make_unique<optim::DynamicLossScaler>(
      config_.precision.loss_scale, config_.precision.compute == ComputeDtype::FP16);
  // The schedule runs over the phase (the whole run without phases).
  const int64_t schedule_end = phase_.in_phases() ? phase_.end : config_.train.max_steps;
  schedule_ = std::make_unique<optim::LrSchedule>(config_.optim, schedule_end - phase_.start);
}

OptimizerMemory Trainer::optimizer_memory() const {
  OptimizerMemory m;
  const bool separate_master = params_->sharding().shard_master || params_->compute_dtype() != torch::kFloat32;
  if (separate_master) m.master_bytes = params_->master().numel() * 4;
  m.moment_bytes = optimizer_->state_bytes();
  m.grad_bytes = params_->grads().numel() * 4 + (local_grads_.defined() ? local_grads_.numel() * 4 : 0);
  m.param_bytes = params_->resident_param_bytes();
  for (const auto& [name, p] : frozen_) m.frozen_bytes += p.numel() * p.element_size();
  return m;
}

parallel::Communicator& Trainer::group_of(const optim::FlatUnit& u) const { return u.expert ? *edp_ : *dp_; }

void Trainer::reduce_scatter_unit(const optim::FlatUnit& u, const torch::Tensor& full_grads, torch::Tensor& shard,
                                  bool accumulate) {
  const auto input = full_grads.narrow(0, u.offset, u.padded);
  auto piece = shard.narrow(0, u.local_offset, u.shard);
  auto& group = group_of(u);
  if (group.size() == 1) {
    accumulate ? piece.add_(input) : piece.copy_(input);
  } else if (accumulate) {
    auto reduced = torch::empty_like(piece);
    group.reduce_scatter(input, reduced);
    piece.add_(reduced);
  } else {
    group.reduce_scatter(input, piece);
  }
}

void Trainer::reduce_grads(torch::Tensor& full_grads, torch::Tensor& shard, bool accumulate) {
  if (config_.parallel.zero_stage == 0 && dp_->size() == 1) return;  // nothing to add up
  const auto reduce = bucket_reduction(full_grads, shard, accumulate);
  for (const auto& b : grad_buckets_) reduce(b);
}

optim::GradReducer::ReduceFn Trainer::bucket_reduction(torch::Tensor& full_grads, torch::Tensor& shard,
                                                       bool accumulate) {
  if (config_.parallel.zero_stage == 0) {
    return [this, full_grads](const optim::GradBucket& b) {
      auto& group = b.expert ? *edp_ : *dp_;
      if (group.size() == 1) return;
      auto bucket = full_grads.narrow(0, b.begin, b.end - b.begin);
      group.all_reduce(bucket);
    };
  }
  return [this, full_grads, shard, accumulate](const optim::GradBucket& b) mutable {
    for (size_t u = b.first_unit; u <= b.last_unit; ++u) {
      reduce_scatter_unit(params_->units()[u], full_grads, shard, accumulate);
    }
  };
}

void Trainer::refresh_model_from_master() {
  torch::NoGradGuard no_grad;
  if (zero3_) return;  // no model copy: units are gathered from the master on use
  if (!params_->sharding().shard_master) {
    params_->copy_master_to_model();
    return;
  }
  auto& model = params_->model();
  for (const auto& u : params_->units()) {
    const auto piece = params_->master().narrow(0, u.local_offset, u.shard).to(model.scalar_type());
    auto full = model.narrow(0, u.offset, u.padded);
    auto& group = group_of(u);
    if (group.size() == 1) {
      full.copy_(piece);
    } else {
      group.all_gather(piece, full);
    }
  }
}

torch::Tensor Trainer::sum_over_dp_and_pp(torch::Tensor values) {
  if (dp_->size() > 1) dp_->all_reduce(values);
  if (pp_->size() > 1) pp_->all_reduce(values);
  return values;
}

bool Trainer::is_tied_copy(const optim::FlatParameterEntry& e) const {
  return tied_comm_ && grid_->pp_rank() == grid_->pp_size() - 1 && e.name == "embed_tokens.weight";
}

void Trainer::reduce_tied_embedding_grads(torch::Tensor& grads) {
  if (!tied_comm_ || tied_comm_->size() == 1) return;
  // Both stages shard the embedding's unit alike, so their pieces match.
  for (const auto& e : params_->entries()) {
    if (e.name != "embed_tokens.weight") continue;
    torch::Tensor g = local_grad(grads, e);
    if (g.defined()) tied_comm_->all_reduce(g);
  }
}

models::StageOutput Trainer::forward_stage(const data::Seq2SeqBatch& mb, const std::vector<torch::Tensor>& inputs) {
  models::StageActivations in;
  if (!inputs.empty()) in = {inputs.at(0), inputs.at(1)};
  // ZeRO 3: layers gather their own weights (the model's layer runner); the
  // other units are gathered for the forward and again for the backward
  // (see zero3_params.h).
  if (zero3_) zero3_->gather_non_layer();
  auto out = model_->forward_stage(stage_begin_, stage_end_, mb.src_tokens, mb.src_mask, mb.tgt_in, mb.tgt_mask, in);
  if (zero3_) zero3_->release_non_layer();
  return out;
}

std::vector<torch::Tensor> Trainer::activation_buffers(const data::Seq2SeqBatch& mb) const {
  const auto options = torch::TensorOptions().dtype(to_scalar_type(config_.precision.compute)).device(device_);
  const int64_t batch = mb.src_tokens.size(0), d = config_.model.d_model;
  return {torch::empty({batch, mb.src_tokens.size(1), d}, options), torch::empty({batch, mb.tgt_in.size(1), d}, options)};
}

parallel::CommStats Trainer::comm_stats() const {
  parallel::CommStats all;
  const std::pair<const char*, const parallel::Communicator*> groups[] = {
      {"world", world_.get()}, {"dp", dp_comm_.get()}, {"tp", tp_comm_.get()}, {"pp", pp_comm_.get()},
      {"ep", ep_comm_.get()}, {"edp", edp_comm_.get()}, {"tied", tied_comm_.get()}};
  for (const auto& [name, comm] : groups) {
    if (!comm) continue;
    for (const auto& [op, stats] : comm->stats()) all[std::string(name) + " " + op] = stats;
  }
  return all;
}

void Trainer::reset_comm_stats() {
  for (auto* comm : {world_.get(), dp_comm_.get(), tp_comm_.get(), pp_comm_.get(), ep_comm_.get(), edp_comm_.get(),
                     tied_comm_.get()}) {
    if (comm) comm->reset_stats();
  }
}

kernels::CrossEntropyResult Trainer::cross_entropy(const torch::Tensor& logits, const data::Seq2SeqBatch& mb,
                                                   double label_smoothing) {
  const auto flat = logits.reshape({-1, logits.size(-1)});
  const auto targets = mb.tgt_out.reshape({-1});
  const auto mask = mb.tgt_mask.reshape({-1});
  if (tp_comm_) {
    return parallel::vocab_parallel_cross_entropy(flat, targets, mask, model_->vocab_shard(), label_smoothing,
                                                  tp_comm_.get());
  }
  return kernels::softmax_cross_entropy(flat, targets, mask, label_smoothing);
}

double Trainer::global_grad_norm(const torch::Tensor& grads) {
  // Each rank adds the squares of the gradient elements it holds, weighed by
  // one over the number of ranks holding the same values, and the world sums:
  //   DP: a ZeRO shard is held once; an unsharded replica by every rank of
  //       the unit's group (DP, or expert-DP for experts, which differ per EP
  //       rank);
  //   TP: a split parameter is held once, a replicated one by every TP rank;
  //   PP: a stage's parameters are held by it alone, but for the tied
  //       embedding, whose last-stage copy is not counted.
  const bool sharded = params_->sharding().shard_master;  // grads hold this rank's shard
  const auto& slices = model_->parameter_slices();
  auto sum_sq = torch::zeros({1}, grads.options().dtype(torch::kFloat64));
  for (const auto& e : params_->entries()) {
    const torch::Tensor g = local_grad(grads, e);
    if (!g.defined() || is_tied_copy(e)) continue;
    const auto& unit = params_->units()[e.unit];
    const double dp_copies = sharded ? 1.0 : static_cast<double>(group_of(unit).size());
    const double tp_copies = tp_comm_ && !slices.count(e.name) ? static_cast<double>(tp_comm_->size()) : 1.0;
    sum_sq += g.to(torch::kFloat64).pow(2).sum() / (dp_copies * tp_copies);
  }
  if (world_->size() > 1) world_->all_reduce(sum_sq);
  return std::sqrt(sum_sq.item<double>());
}

nlohmann::json Trainer::checkpoint_layout() const {
  return {{"world", world_->size()}, {"dp", grid_->dp_size()},         {"tp", grid_->tp_size()},
          {"pp", grid_->pp_size()},  {"pp_stage_starts", stage_starts_}, {"ep", grid_->ep_size()},
          {"zero_stage", config_.parallel.zero_stage}};
}

bool Trainer::writes_frozen_in_checkpoint(const std::string& name) const {
  if (tied_comm_ && grid_->pp_rank() == grid_->pp_size() - 1 && name == "embed_tokens.weight") return false;
  if (tp_comm_ && tp_comm_->rank() != 0 && !model_->parameter_slices().count(name)) return false;
  // Replicated over the data-parallel group (experts: the expert-data-parallel one).
  const bool expert = grid_->ep_size() > 1 && optim::is_expert_parameter(name);
  return (expert ? *edp_ : *dp_).rank() == 0;
}

bool Trainer::writes_in_checkpoint(const optim::FlatParameterEntry& e) const {
  if (is_tied_copy(e)) return false;  // the first stage writes it
  // Replicated over TP (not split): the first TP rank writes it.
  if (tp_comm_ && tp_comm_->rank() != 0 && !model_->parameter_slices().count(e.name)) return false;
  if (params_->sharding().shard_master) return true;  // every rank writes its own shard
  return group_of(params_->units()[e.unit]).rank() == 0;
}

data::Seq2SeqBatch Trainer::to_device(const data::Seq2SeqBatch& b) const {
  if (device_.is_cpu()) return b;
  data::Seq2SeqBatch d = b;
  d.src_tokens = b.src_tokens.to(device_, /*non_blocking=*/true);
  d.src_mask = b.src_mask.to(device_, true);
  d.tgt_in = b.tgt_in.to(device_, true);
  d.tgt_out = b.tgt_out.to(device_, true);
  d.tgt_mask = b.tgt_mask.to(device_, true);
  return d;
}

torch::Tensor Trainer::local_grad(const torch::Tensor& grads, const optim::FlatParameterEntry& e) const {
  if (!params_->sharding().shard_master) return params_->view(grads, e);
  const auto piece = params_->local_piece(e);
  if (piece.end == piece.begin) return {};
  return grads.narrow(0, piece.master_offset, piece.end - piece.begin);
}

std::string Trainer::first_nonfinite_parameter() const {
  // Under ZeRO a rank sees only its shard of the gradients.
  const auto& grads = local_grads_.defined() ? local_grads_ : params_->grads();
  const bool sharded = params_->sharding().shard_master;
  for (const auto& e : params_->entries()) {
    const torch::Tensor g = local_grad(grads, e);
    if (g.defined() && !torch::isfinite(g).all().item<bool>()) return e.name;
  }
  return sharded ? "(none in this rank's shard)" : "(none: the loss itself is not finite)";
}

StepResult Trainer::train_step(const std::vector<data::Seq2SeqBatch>& micro_batches, int64_t step) {
  StepResult r;
  const auto& moe = config_.model.moe;
  const int64_t zero = config_.parallel.zero_stage;
  // Every micro-batch of every DP rank weighs the same in the MoE losses.
  const double global_micro = static_cast<double>(micro_batches.size() * dp_->size());

  // 1. The loss is a mean over every target token of the global batch (all
  //    DP ranks), so it does not depend on how the batch is cut up.
  for (const auto& mb : micro_batches) {
    r.target_tokens += mb.num_target_tokens;
    r.tokens += mb.num_target_tokens + mb.num_source_tokens;
  }
  if (dp_->size() > 1) {
    auto counts = torch::tensor({r.target_tokens, r.tokens}, torch::kInt64);
    dp_->all_reduce(counts);
    r.target_tokens = counts[0].item<int64_t>();
    r.tokens = counts[1].item<int64_t>();
  }
  const double token_divisor = static_cast<double>(std::max<int64_t>(r.target_tokens, 1));
  r.loss_scale = scaler_->scale();

  // 2. Forward and backward per micro-batch, as this rank's pipeline stage
  //    (the whole model when pp = 1), in the order of the pipeline schedule;
  //    activations come from the previous stage and go to the next, their
  //    gradients the other way (parallel/pipeline.h). Gradients accumulate
  //    in fp32 (ZeRO 2: reduce-scattered after each micro-batch into this
  //    rank's shard; ZeRO 3: per unit, as each unit's backward finishes).
  model_->train();
  params_->zero_grads();
  std::vector<data::Seq2SeqBatch> batches;
  for (const auto& mb : micro_batches) batches.push_back(to_device(mb));
  const int64_t m = static_cast<int64_t>(batches.size());
  const bool last_stage = grid_->pp_rank() == grid_->pp_size() - 1;
  // Each micro-batch's loss terms on this stage, from its forward to its
  // backward: its MoE layers' losses, and on the last stage the
  // cross-entropy.
  std::map<int64_t, torch::Tensor> stage_losses;
  torch::Tensor micro_grads;  // ZeRO 2: one micro-batch's full gradient, transient
  double ce_sum = 0, aux = 0, z = 0;
  bool reduced_in_backward = false;
  parallel::PipelineStageCallbacks stage;
  stage.input_buffers = [&](int64_t i) { return activation_buffers(batches[i]); };
  stage.forward = [&](int64_t i, const std::vector<torch::Tensor>& inputs) {
    const auto& mb = batches[i];
    const auto out = forward_stage(mb, inputs);
    torch::Tensor loss = (moe.aux_loss_coef * out.moe.aux_loss + moe.z_loss_coef * out.moe.z_loss) / global_micro;
    aux += out.moe.aux_loss.item<double>();
    z += out.moe.z_loss.item<double>();
    r.dropped_tokens += out.moe.dropped;
    if (holds_lm_head()) {
      const auto ce = cross_entropy(out.logits, mb, config_.train.label_smoothing);
      loss = loss + ce.loss_sum / token_divisor;
      ce_sum += ce.loss_sum.item<double>();
    }
    stage_losses[i] = loss;
    if (last_stage) return std::vector<torch::Tensor>{};
    return std::vector<torch::Tensor>{out.activations.encoder, out.activations.decoder};
  };
  stage.backward = [&](int64_t i, const std::vector<torch::Tensor>& outputs,
                       const std::vector<torch::Tensor>& output_grads) {
    const bool last = i + 1 == m;
    // With the overlapped reducer armed, gradient hooks add each parameter's
    // gradient into the fp32 buffer as the backward produces it and reduce
    // complete buckets over DP meanwhile: ZeRO 0/1 on the last micro-batch
    // (after it the sum is final), ZeRO 2 on every one.
    if (reducer_ && zero == 2) {
      micro_grads = torch::zeros({params_->padded_numel()}, params_->grads().options());
      reducer_->arm(micro_grads, bucket_reduction(micro_grads, params_->grads(), /*accumulate=*/true));
    } else if (reducer_ && last) {
      reducer_->arm(params_->grads(), bucket_reduction(params_->grads(), local_grads_, /*accumulate=*/false));
      reduced_in_backward = true;
    }
    if (zero3_) zero3_->gather_non_layer();
    // The outputs' gradients from the next stage, and this stage's own loss
    // terms, scaled.
    std::vector<torch::Tensor> roots = outputs, seeds = output_grads;
    const torch::Tensor loss = stage_losses.at(i) * r.loss_scale;
    stage_losses.erase(i);
    roots.push_back(loss);
    seeds.push_back(torch::ones_like(loss));
    parallel::backward_from_outputs(roots, seeds);
    if (reducer_ && (zero == 2 || last)) {
      reducer_->finish();
      micro_grads = torch::Tensor();
    } else if (zero3_) {
      zero3_->reduce_non_layer_grads();
    } else if (zero >= 2) {
      micro_grads = torch::zeros({params_->padded_numel()}, params_->grads().options());
      params_->accumulate_grads_into(micro_grads);
      reduce_grads(micro_grads, params_->grads(), /*accumulate=*/true);
      micro_grads = torch::Tensor();
    } else {
      params_->accumulate_grads();
    }
  };
  pipeline_stats_ = parallel::run_pipeline(pipeline_schedule_, m, *pp_, stage);

  // 3. Reduce gradients over DP: all-reduce (ZeRO 0) or reduce-scatter into
  //    this rank's shard (ZeRO 1; ZeRO 2 did it above), unless the backward
  //    did it already; then add up the tied embedding's two stages.
  if (!reduced_in_backward && zero <= 1) reduce_grads(params_->grads(), local_grads_, /*accumulate=*/false);
  auto& grads = zero == 1 ? local_grads_ : params_->grads();
  reduce_tied_embedding_grads(grads);

  // Metrics of the whole global batch (every DP rank's micro-batches, every
  // stage's MoE layers; the cross-entropy is the last stage's), in one small
  // all-reduce per group.
  {
    auto sums = sum_over_dp_and_pp(
        torch::tensor({ce_sum, aux, z, static_cast<double>(r.dropped_tokens)}, torch::kFloat64));
    ce_sum = sums[0].item<double>();
    aux = sums[1].item<double>();
    z = sums[2].item<double>();
    r.dropped_tokens = static_cast<int64_t>(sums[3].item<double>());
  }
  r.loss = ce_sum / token_divisor;
  r.aux_loss = aux / global_micro;
  r.z_loss = z / global_micro;

  // 4. Unscale, then check: an fp16 overflow skips the step on every rank
  //    (the norm is global, so all agree); any other non-finite value stops
  //    training before anything is written.
  if (r.loss_scale != 1.0) grads.mul_(1.0 / r.loss_scale);
  if (config_.train.dump_grads_step == step + 1 && !output_dir_.empty()) {
    save_gradient_dump((fs::path(output_dir_) / ("grads-" + checkpoint_name(step + 1))).string(), *params_, grads,
                       &model_->parameter_slices(),
                       [this](const optim::FlatParameterEntry& e) { return writes_in_checkpoint(e); }, step + 1,
                       *world_);
  }
  r.grad_norm = global_grad_norm(grads);
  const bool finite = std::isfinite(r.grad_norm) && std::isfinite(r.loss);
  if (!finite) {
    if (scaler_->enabled()) {
      r.skipped = true;
      if (!scaler_->update(/*overflow=*/true)) {
        throw TrainingError("fp16 gradients still overflow at the minimum loss scale (" +
                            std::to_string(scaler_->scale()) + ") at step " + std::to_string(step + 1) +
                            "; first non-finite gradient: " + first_nonfinite_parameter());
      }
      r.lr = schedule_->lr_at(step - phase_.start);
      return r;
    }
    throw TrainingError("non-finite " + std::string(std::isfinite(r.loss) ? "gradient" : "loss") +
                        " at step " + std::to_string(step + 1) + " (loss " + std::to_string(r.loss) +
                        "); first non-finite gradient: " + first_nonfinite_parameter());
  }

  // 5. Clip by the global norm, step AdamW on the fp32 master weights (this
  //    rank's shard under ZeRO), and bring the model weights up to date
  //    (ZeRO 3: nothing to do, the next use gathers from the master).
  optim::clip_grads(grads, r.grad_norm, config_.optim.grad_clip);
  r.lr = schedule_->lr_at(step - phase_.start);
  optimizer_->step(params_->master(), grads, r.lr);
  refresh_model_from_master();
  scaler_->update(/*overflow=*/false);
  return r;
}

std::pair<double, int64_t> Trainer::evaluate(const std::vector<data::Seq2SeqBatch>& host_batches) {
  torch::NoGradGuard no_grad;
  model_->eval();
  std::vector<data::Seq2SeqBatch> batches;
  for (const auto& b : host_batches) batches.push_back(to_device(b));
  double loss_sum = 0, tokens = 0;
  // Forward only, stage by stage; the last stage scores.
  parallel::PipelineStageCallbacks stage;
  stage.input_buffers = [&](int64_t i) { return activation_buffers(batches[i]); };
  stage.forward = [&](int64_t i, const std::vector<torch::Tensor>& inputs) {
    const auto out = forward_stage(batches[i], inputs);
    if (!holds_lm_head()) return std::vector<torch::Tensor>{out.activations.encoder, out.activations.decoder};
    const auto ce = cross_entropy(out.logits, batches[i], 0.0);
    loss_sum += ce.loss_sum.item<double>();
    tokens += static_cast<double>(ce.num_tokens);
    return std::vector<torch::Tensor>{};
  };
  if (!batches.empty()) parallel::run_forward_pipeline(static_cast<int64_t>(batches.size()), *pp_, stage);
  model_->train();
  const auto sums = sum_over_dp_and_pp(torch::tensor({loss_sum, tokens}, torch::kFloat64));
  const auto total_tokens = static_cast<int64_t>(sums[1].item<double>());
  return {sums[0].item<double>() / static_cast<double>(std::max<int64_t>(total_tokens, 1)), total_tokens};
}

int Trainer::run(const TrainOptions& options) {
  const auto& cfg = config_;
  const bool leader = is_leader();
  output_dir_ = options.output_dir;
  if (leader) {
    fs::create_directories(options.output_dir);
    if (!phase_.in_phases()) {  // a run of phases writes its whole config itself
      std::ofstream out(fs::path(options.output_dir) / "config.yaml", std::ios::trunc);
      out << config_to_yaml(cfg);
    }
  }
  world_->barrier();
  const std::string checkpoints_dir = (fs::path(options.output_dir) / "checkpoints").string();

  const auto tokenizer = data::Tokenizer::load(data::resolve_tokenizer_path(cfg.data));
  const auto special = tokenizer.special_tokens();
  const data::BatchSource train_data(cfg.data, special, cfg.train.seed, "train");
  std::optional<data::BatchSource> valid_data;
  if (!cfg.data.valid.empty()) {
    data::DataConfig valid_cfg = cfg.data;
    valid_cfg.train = cfg.data.valid;
    valid_data.emplace(valid_cfg, special, cfg.train.seed, "valid");
  }

  // Resume: --resume, else the newest complete checkpoint of this output dir.
  // In a run of phases, a checkpoint of an earlier phase (its last step)
  // starts this one instead: its weights, a fresh optimizer.
  int64_t start_step = phase_.start;
  std::optional<std::string> resume_dir;
  std::string init_from = options.init_from;
  if (!options.resume.empty()) {
    resume_dir = resolve_checkpoint_path(options.resume);
  } else {
    resume_dir = find_latest_checkpoint(checkpoints_dir);
  }
  if (resume_dir && phase_.in_phases() && checkpoint_phase(*resume_dir) < phase_.index) {
    init_from = *resume_dir;
    resume_dir.reset();
  }
  if (resume_dir) {
    ExtraWeights extra;
    extra.frozen = frozen_;
    const auto loaded = load_checkpoint(*resume_dir, *params_, optimizer_.get(), world_->rank(),
                                        &model_->parameter_slices(), extra);
    refresh_model_from_master();
    start_step = loaded.step;
    scaler_->set_state(loaded.scaler);
    // Parameters and optimizer state load under any layout; the generators
    // only under the one they were saved with (each rank's own streams).
    const nlohmann::json layout = checkpoint_layout();
    const nlohmann::json saved_layout = loaded.meta.value("layout", nlohmann::json::object());
    if (saved_layout == layout) {
      if (loaded.rng_state.defined()) cpu_generator().set_state(loaded.rng_state);
      if (tp_rng_ && !loaded.tp_rng_states.empty()) tp_rng_->set_state(loaded.tp_rng_states);
      if (loaded.cuda_rng_state.defined() && device_.is_cuda()) {
        auto generator = at::globalContext().defaultGenerator(device_);
        generator.set_state(loaded.cuda_rng_state);
      }
    }
    if (leader) {
      std::cout << "resumed from " << *resume_dir << " at step " << start_step << std::endl;
      if (saved_layout != layout) {
        std::cout << "layout changed from " << saved_layout.dump() << " to " << layout.dump()
                  << ": weights and optimizer state resharded; dropout generators start afresh from the seed"
                  << std::endl;
      }
      const int64_t saved_batch = loaded.meta.value("data", nlohmann::json::object()).value("samples_consumed", -1);
      const int64_t position = (start_step - phase_.start) * cfg.train.global_batch;
      if (saved_batch >= 0 && saved_batch != position) {
        std::cout << "train.global_batch changed: the checkpoint consumed " << saved_batch << " samples in "
                  << start_step - phase_.start << " steps; this run continues at sample " << position
                  << " (the data position is step x global_batch)" << std::endl;
      }
    }
  } else if (!init_from.empty()) {
    // Weights only (the optimizer starts afresh). A LoRA run keeps its fresh
    // adapters when the checkpoint has none; a full fine-tune of a LoRA
    // checkpoint folds the adapters into the weights.
    const std::string dir = resolve_checkpoint_path(init_from);
    const bool lora = cfg.finetune.mode == FinetuneMode::Lora;
    ExtraWeights extra;
    extra.frozen = frozen_;
    extra.adapters_may_be_absent = lora;
    if (!lora) extra.merge_lora_scale = checkpoint_lora_scale(dir);
    load_checkpoint(dir, *params_, nullptr, world_->rank(), &model_->parameter_slices(), extra);
    refresh_model_from_master();
    if (leader) {
      std::cout << "initialised weights from " << init_from;
      if (extra.merge_lora_scale > 0) std::cout << " (its LoRA adapters merged into the weights)";
      std::cout << std::endl;
    }
  }

  const int64_t max_steps = cfg.train.max_steps;
  const int64_t global_batch = cfg.train.global_batch;
  const int64_t dp_rank = grid_->dp_rank(), dp_size = grid_->dp_size();
  if (leader) {
    if (cfg.finetune.mode == FinetuneMode::Lora) {
      std::cout << "LoRA: rank " << cfg.lora.r << ", scale " << cfg.lora.scale() << " on " << lora_projections_
                << " projections; " << model_numel_ << " adapter parameters train, " << total_numel_ - model_numel_
                << " base parameters frozen" << std::endl;
    } else if (model_numel_ < total_numel_) {
      std::cout << "finetune.freeze: " << total_numel_ - model_numel_ << " of " << total_numel_
                << " parameters frozen" << std::endl;
    }
    std::cout << "model: " << model_numel_ << " trainable parameters (" << params_->numel() << " on rank 0), "
              << train_data.num_samples()
              << " training samples per epoch, " << global_batch / (cfg.train.micro_batch * dp_size)
              << " micro-batch(es) of " << cfg.train.micro_batch << " per step on each of " << dp_size
              << " data-parallel rank(s), ZeRO stage " << cfg.parallel.zero_stage << ", tensor parallel "
              << grid_->tp_size() << ", expert parallel " << grid_->ep_size() << ", pipeline parallel "
              << grid_->pp_size() << ", device " << device_ << std::endl;
    if (train_data.num_datasets() > 1) {
      std::cout << "data: a mixture of";
      for (int64_t d = 0; d < train_data.num_datasets(); ++d) {
        std::cout << (d ? ", " : " ") << train_data.dataset_names()[static_cast<size_t>(d)] << " (weight "
                  << train_data.dataset_weights()[static_cast<size_t>(d)] << ", " << train_data.num_samples(d)
                  << " samples)";
      }
      std::cout << std::endl;
    }
    if (grid_->pp_size() > 1) {
      std::cout << "pipeline: " << grid_->pp_size() << " stages, schedule " << cfg.parallel.schedule << ", "
                << global_batch / (cfg.train.micro_batch * dp_size) << " micro-batches per step";
      for (size_t st = 0; st < stage_starts_.size(); ++st) {
        const int64_t begin = stage_starts_[st];
        const int64_t end = st + 1 < stage_starts_.size() ? stage_starts_[st + 1] : model_->num_pipeline_units();
        std::cout << (st ? "; " : ": ") << "stage " << st << " = " << model_->pipeline_unit_name(begin);
        if (end - begin > 1) std::cout << " .. " << model_->pipeline_unit_name(end - 1);
      }
      std::cout << std::endl;
    }
  }
  if (start_step >= max_steps) {
    if (leader) std::cout << "nothing to do: already at step " << start_step << " of " << max_steps << std::endl;
    return 0;
  }

  std::optional<MetricsLogger> metrics;
  if (leader) metrics.emplace(options.output_dir, start_step);
  auto save = [&](int64_t step) {
    CheckpointContents c;
    c.step = step;
    c.writes_entry = [this](const optim::FlatParameterEntry& e) { return writes_in_checkpoint(e); };
    c.params = params_.get();
    for (const auto& [name, p] : frozen_) {
      if (writes_frozen_in_checkpoint(name)) c.frozen.emplace_back(name, p);
    }
    c.optimizer = optimizer_.get();
    c.scaler = scaler_->state();
    c.rng_state = cpu_generator().get_state();
    c.slices = &model_->parameter_slices();
    if (tp_rng_) c.tp_rng_states = tp_rng_->get_state();
    if (device_.is_cuda()) {
      auto generator = at::globalContext().defaultGenerator(device_);
      c.cuda_rng_state = generator.get_state();
    }
    const int64_t data_step = step - phase_.start;  // steps on this phase's data
    nlohmann::json mixture = nlohmann::json::object();
    const auto drawn = train_data.mixture_position(data_step, global_batch);
    for (size_t d = 0; d < drawn.size(); ++d) mixture[train_data.dataset_names()[d]] = drawn[d];
    c.meta = {{"config", config_to_yaml(cfg)},
              {"compute_dtype", to_string(cfg.precision.compute)},
              {"data", {{"next_step", step},
                        {"samples_consumed", data_step * global_batch},
                        {"epoch", train_data.epoch_of(data_step, global_batch)},
                        {"mixture_position", mixture}}},
              {"layout", checkpoint_layout()}};
    if (phase_.in_phases()) {
      c.meta["phase"] = {{"index", phase_.index}, {"name", phase_.name}, {"start", phase_.start}, {"end", phase_.end}};
    }
    return save_checkpoint(checkpoints_dir, c, cfg.checkpoint.keep, *world_);
  };

  ShutdownSignal::install();
  const auto t0 = std::chrono::steady_clock::now();
  int64_t steps_this_run = 0;
  for (int64_t step = start_step; step < max_steps; ++step) {
    const auto step_t0 = std::chrono::steady_clock::now();
    const auto batches =
        train_data.step_batches(step - phase_.start, dp_rank, dp_size, global_batch, cfg.train.micro_batch);
    const StepResult r = train_step(batches, step);
    // The optimizer's kernels may still be queued: count them in this step.
    if (device_.is_cuda()) torch::cuda::synchronize(device_.index());
    const double step_s = seconds_since(step_t0);
    ++steps_this_run;
    const int64_t done = step + 1;

    if (leader && (done % cfg.log.every == 0 || done == max_steps || done == start_step + 1)) {
      StepMetrics m;
      m.step = done;
      m.max_steps = max_steps;
      m.loss = r.loss;
      m.aux_loss = r.aux_loss;
      m.z_loss = r.z_loss;
      m.lr = r.lr;
      m.grad_norm = r.grad_norm;
      m.loss_scale = r.loss_scale;
      m.tokens = r.tokens;
      m.tokens_per_s = static_cast<double>(r.tokens) / step_s;
      m.step_ms = step_s * 1000.0;
      m.dropped_tokens = r.dropped_tokens;
      m.skipped = r.skipped;
      // ETA from this run's pace, not from steps done before a resume.
      m.elapsed_s = seconds_since(t0);
      m.eta_s = m.elapsed_s / static_cast<double>(steps_this_run) * static_cast<double>(max_steps - done);
      metrics->log_step(m);
    }
    if (valid_data && cfg.train.eval_every > 0 && done % cfg.train.eval_every == 0) {
      std::vector<data::Seq2SeqBatch> eval_batches;
      for (int64_t e = 0; e < cfg.train.eval_batches; ++e) {
        auto b = valid_data->step_batches(e, dp_rank, dp_size, global_batch, cfg.train.micro_batch);
        eval_batches.insert(eval_batches.end(), b.begin(), b.end());
      }
      const auto [loss, tokens] = evaluate(eval_batches);
      if (leader) metrics->log_eval(done, loss, tokens);
    }
    // Ranks may see a signal at different moments: agree before acting on it.
    bool stop = ShutdownSignal::requested();
    if (world_->size() > 1) {
      auto flag = torch::tensor({stop ? 1 : 0}, torch::kInt32);
      world_->all_reduce(flag, parallel::ReduceOp::Max);
      stop = flag.item<int>() != 0;
    }
    const bool interval = cfg.checkpoint.every > 0 && done % cfg.checkpoint.every == 0;
    if (interval || done == max_steps || stop) {
      const auto dir = save(done);
      if (leader) metrics->log_event(done, "checkpoint saved: " + dir);
    }
    if (stop) {
      if (leader) {
        metrics->log_event(done, std::string("stopping on ") +
                                     (ShutdownSignal::requested() ? ShutdownSignal::name() : "a signal") +
                                     " after step " + std::to_string(done));
      }
      return 0;
    }
  }
  if (leader) {
    std::cout << "training done: " << max_steps << " steps in " << format_duration(seconds_since(t0))
              << std::endl;
  }
  return 0;
}

int train_run(const Config& config, std::shared_ptr<parallel::Communicator> world, const TrainOptions& options) {
  if (config.phases.empty()) {
    Trainer trainer(config, world);
    return trainer.run(options);
  }
  const bool leader = world->rank() == 0;
  if (leader) {
    fs::create_directories(options.output_dir);
    std::ofstream out(fs::path(options.output_dir) / "config.yaml", std::ios::trunc);
    out << config_to_yaml(config);
  }
  // The phase holding the next step of the newest checkpoint (the first
  // phase of a new run).
  const std::string checkpoints_dir = (fs::path(options.output_dir) / "checkpoints").string();
  const std::optional<std::string> latest =
      options.resume.empty() ? find_latest_checkpoint(checkpoints_dir) : resolve_checkpoint_path(options.resume);
  size_t first = 0;
  if (latest) {
    const int64_t step = read_checkpoint_meta(*latest).value("step", int64_t{0});
    while (first + 1 < config.phases.size() && phase_start(config, first + 1) <= step) ++first;
  }
  for (size_t i = first; i < config.phases.size(); ++i) {
    const int64_t start = phase_start(config, i);
    if (start >= config.train.max_steps) break;
    const Config phase = phase_config(config, i);
    if (leader) {
      std::cout << "phase " << i << " (" << config.phases[i].name << "): steps " << start + 1 << " to "
                << phase.train.max_steps << ", "
                << (phase.finetune.mode == FinetuneMode::Lora ? "LoRA" : "full") << " fine-tuning, lr "
                << phase.optim.lr << std::endl;
    }
    TrainOptions phase_options = options;
    if (i > first) phase_options.resume.clear();  // the previous phase's last checkpoint starts it
    int rc = 0;
    {
      const PhaseInfo info{static_cast<int64_t>(i), config.phases[i].name, start, start + config.phases[i].steps};
      Trainer trainer(phase, world, info);
      rc = trainer.run(phase_options);
    }
    if (rc != 0 || ShutdownSignal::requested()) return rc;
  }
  return 0;
}

}  // namespace moetrain::trainer

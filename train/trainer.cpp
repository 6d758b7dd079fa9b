#include "train/trainer.h"

#include <cmath>
#include <filesystem>
#include <map>

#include "config/validate.h"
#include "data/batch_source.h"
#include "eval/dataset_loss.h"
#include "kernels/cross_entropy.h"
#include "models/activation_checkpoint.h"
#include "models/flops.h"
#include "optim/grad_clip.h"
#include "train/context_parallel_batch.h"

namespace fs = std::filesystem;

namespace moetrain::train {

namespace {

// Weight decay applies to matrices; norms, biases and embeddings are exempt
// unless the config says otherwise (the GPT-2 / Megatron convention).
bool decays(const optim::OptimConfig& cfg, const std::string& name, const torch::Tensor& p) {
  if (name.find("embed") != std::string::npos) return cfg.decay_embeddings;
  if (p.dim() < 2 || name.find("norm") != std::string::npos) return cfg.decay_norms_and_biases;
  return true;
}

// LoRA trains the adapters alone; full fine-tuning everything but the
// parameters finetune.freeze names.
bool is_trainable(const config::Config& cfg, const std::string& name) {
  if (cfg.finetune.mode == config::FinetuneMode::Lora) return models::is_lora_parameter(name);
  for (const auto& pattern : cfg.finetune.freeze) {
    if (name.find(pattern) != std::string::npos) return false;
  }
  return true;
}

at::Generator cpu_generator() { return at::detail::getDefaultCPUGenerator(); }

}  // namespace

Trainer::Trainer(config::Config config, std::shared_ptr<parallel::Communicator> world, PhaseInfo phase)
    : config_(std::move(config)), phase_(std::move(phase)) {
  if (config_.model.vocab_size <= 0) {
    throw config::ConfigError("model.vocab_size must be known before the model is built");
  }
  // The GPU and the backend first: nothing may touch CUDA before the device
  // is chosen. The data groups are split from a data world of that backend;
  // `world` (MPI) stays the control plane.
  run_device_ = setup_run_device(config_, *world);
  const torch::Device device = run_device_.device;
  auto data_world = parallel::make_data_world(run_device_.backend.backend, *world,
                                              device.is_cuda() ? device.index() : -1, config_.parallel.timeout_s);
  groups_ = std::make_unique<parallel::ProcessGroups>(std::move(world), config_.parallel, config_.model.tie_embeddings,
                                                      std::move(data_world));
  try {
    pipeline_schedule_ = parallel::parse_schedule(config_.parallel.schedule);
  } catch (const std::invalid_argument& e) {
    throw config::ConfigError(std::string("parallel.schedule: ") + e.what());
  }
  if (config_.train.threads > 0) at::set_num_threads(static_cast<int>(config_.train.threads));
  build_model();
  std::vector<std::pair<std::string, torch::Tensor>> trainable;
  keep_stage_parameters(trainable);
  build_optimizer(trainable);
  if (!config_.distill.teacher.empty()) {
    distillation_ = std::make_unique<Distillation>(config_.distill, data::resolve_tokenizer_path(config_.data),
                                                   config_.model.vocab_size, device,
                                                   config::to_scalar_type(config_.precision.compute));
  }
}

Trainer::~Trainer() {
  // The model's layers may still point at this trainer's TP generator.
  if (tp_rng_ && models::tensor_parallel_rng() == tp_rng_.get()) models::set_tensor_parallel_rng(nullptr);
}

void Trainer::build_model() {
  const auto& grid = groups_->grid();
  const int64_t pp = grid.pp_size(), pp_rank = grid.pp_rank();
  // One seed decides the initial weights, the same on every rank; the
  // generator then drives dropout (one stream per pipeline stage, so stages
  // do not draw the same masks).
  torch::manual_seed(config_.train.seed);
  model_ = models::Seq2SeqTransformer(config_.model);
  if (config_.finetune.mode == config::FinetuneMode::Lora) {
    try {
      lora_projections_ = model_->add_lora(config_.lora);
    } catch (const std::invalid_argument& e) {
      throw config::ConfigError(std::string("lora.targets: ") + e.what());
    }
  }
  if (pp_rank > 0) torch::manual_seed(config_.train.seed + 1000003 * static_cast<uint64_t>(pp_rank));
  for (const auto& item : model_->named_parameters(/*recurse=*/true)) {
    total_numel_ += item.value().numel();
    if (is_trainable(config_, item.key())) model_numel_ += item.value().numel();
  }
  // Stages from the whole model's parameter counts (the same on every rank).
  stage_starts_ = config::resolve_pp_cuts(config_);
  if (stage_starts_.empty()) stage_starts_ = parallel::partition_stages(model_->pipeline_unit_costs(), pp);
  stage_begin_ = stage_starts_[static_cast<size_t>(pp_rank)];
  stage_end_ = pp_rank + 1 < pp ? stage_starts_[static_cast<size_t>(pp_rank + 1)] : model_->num_pipeline_units();
  std::vector<int64_t> stage_rows;
  for (int64_t u = 0; u < model_->num_pipeline_units(); ++u) {
    if (!config_.model.is_moe_unit(u)) continue;
    if (u >= stage_begin_ && u < stage_end_) stage_rows.push_back(static_cast<int64_t>(moe_layer_names_.size()));
    moe_layer_names_.push_back(model_->pipeline_unit_name(u));
  }
  stage_moe_rows_ = torch::tensor(stage_rows, torch::kInt64).to(run_device_.device);
  if (grid.tp_size() > 1 || grid.ep_size() > 1) {
    // Built whole from the shared seed, then each TP rank keeps its slices
    // and each EP rank its experts. Split regions and experts draw dropout
    // from a stream of their own per (stage, EP rank, TP rank).
    const int64_t stream = (pp_rank * grid.ep_size() + grid.ep_rank()) * grid.tp_size() + grid.tp_rank();
    tp_rng_ = std::make_unique<parallel::TensorParallelRng>(config_.train.seed, stream);
    models::set_tensor_parallel_rng(tp_rng_.get());
    model_->parallelize({groups_->tp(), tp_rng_.get(), groups_->ep(), groups_->cp(), context_parallel_mode()});
  } else if (grid.cp_size() > 1) {
    model_->parallelize({nullptr, nullptr, nullptr, groups_->cp(), context_parallel_mode()});
  }
}

parallel::ContextParallelMode Trainer::context_parallel_mode() const {
  try {
    return parallel::parse_context_parallel_mode(config_.parallel.cp_mode);
  } catch (const std::invalid_argument& e) {
    throw config::ConfigError(std::string("parallel.cp_mode: ") + e.what());
  }
}

std::vector<data::Seq2SeqBatch> Trainer::context_parallel_parts(const std::vector<data::Seq2SeqBatch>& batches) const {
  const auto& grid = groups_->grid();
  if (grid.cp_size() == 1) return batches;
  std::vector<data::Seq2SeqBatch> parts;
  for (const auto& b : batches) {
    parts.push_back(context_parallel_part(b, grid.cp_size(), grid.cp_rank(), config_.model.pad_id));
  }
  return parts;
}

void Trainer::keep_stage_parameters(std::vector<std::pair<std::string, torch::Tensor>>& trainable) {
  // A stage keeps only the parameters its units use: the others are freed
  // and never reach the optimizer. Frozen parameters stay in the model, in
  // the compute dtype, with no gradient, master copy or optimizer state.
  // (Module::to below moves the kept ones in place, so the handles in
  // `trainable` and frozen_ stay the model's parameters.)
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
    trainable.emplace_back(item.key(), item.value());
  }
  model_->to(run_device_.device);
  torch::NoGradGuard no_grad;
  for (auto& [name, p] : frozen_) p.set_data(p.to(config::to_scalar_type(config_.precision.compute)));
}

void Trainer::build_optimizer(const std::vector<std::pair<std::string, torch::Tensor>>& trainable) {
  // The ZeRO stage is read here, and only here: it decides what the flat
  // buffers shard and which gradient-sync strategy the step runs.
  const int64_t zero = config_.parallel.zero_stage;
  const auto& grid = groups_->grid();
  // Shards over the ranks holding the same parameters: DP x CP.
  optim::ShardingOptions sharding = optim::sharding_for_stage(zero, groups_->dp().size(), groups_->dp().rank());
  if (grid.ep_size() > 1) {
    sharding.expert_shards = groups_->edp().size();
    sharding.expert_rank = groups_->edp().rank();
  }
  const auto& ocfg = config_.optim;
  params_ = std::make_unique<optim::FlatParameters>(
      trainable, config::to_scalar_type(config_.precision.compute),
      [&ocfg](const std::string& n, const torch::Tensor& p) { return decays(ocfg, n, p); }, sharding,
      run_device_.device);
  optim::GradSyncOptions sync;
  sync.zero_stage = zero;
  sync.bucket_mb = config_.parallel.bucket_mb;
  sync.overlap_grad_reduce = config_.parallel.overlap_grad_reduce;
  grad_sync_ = optim::make_grad_sync(*params_, {&groups_->dp(), &groups_->edp()}, sync);
  if (auto runner = grad_sync_->layer_runner()) model_->set_layer_runner(runner);
  optimizer_ = std::make_unique<optim::AdamW>(config_.optim, params_->master().numel(),
                                              params_->master_decay_segments(), params_->master().options());
  scaler_ = std::make_unique<optim::DynamicLossScaler>(config_.precision.loss_scale,
                                                       config_.precision.compute == config::ComputeDtype::FP16);
  // The schedule runs over the phase (the whole run without phases).
  const int64_t schedule_end = phase_.in_phases() ? phase_.end : config_.train.max_steps;
  schedule_ = std::make_unique<optim::LrSchedule>(config_.optim, schedule_end - phase_.start);
  writers_ = std::make_unique<checkpoint::CheckpointWriters>(*groups_, *params_, model_->parameter_slices());
}

OptimizerMemory Trainer::optimizer_memory() const {
  OptimizerMemory m;
  const bool separate_master = params_->sharding().shard_master || params_->compute_dtype() != torch::kFloat32;
  if (separate_master) m.master_bytes = params_->master().numel() * 4;
  m.moment_bytes = optimizer_->state_bytes();
  m.grad_bytes = params_->grads().numel() * 4 + grad_sync_->extra_grad_bytes();
  m.param_bytes = params_->resident_param_bytes();
  for (const auto& [name, p] : frozen_) m.frozen_bytes += p.numel() * p.element_size();
  return m;
}

StepResult Trainer::train_step(const std::vector<data::Seq2SeqBatch>& whole_micro_batches, int64_t step) {
  StepResult r;
  const auto& moe = config_.model.moe;
  // 1. The loss is a mean over every target token of the global batch (all
  //    DP ranks), so it does not depend on how the batch is cut up; every
  //    micro-batch of every DP rank weighs the same in the MoE losses. Under
  //    context parallelism this rank holds part of every sequence, and the
  //    sums run over DP x CP (each CP rank's MoE losses are the whole
  //    micro-batch's, so they count 1 / cp each).
  const std::vector<data::Seq2SeqBatch> micro_batches = context_parallel_parts(whole_micro_batches);
  count_tokens(micro_batches, r);
  const double token_divisor = static_cast<double>(std::max<int64_t>(r.target_tokens, 1));
  const double global_micro = static_cast<double>(micro_batches.size() * groups_->dp().size());
  r.loss_scale = scaler_->scale();

  // 2. Forward and backward per micro-batch, as this rank's pipeline stage
  //    (the whole model when pp = 1), in the order of the pipeline schedule;
  //    activations come from the previous stage and go to the next, their
  //    gradients the other way (parallel/pipeline.h). The gradient-sync
  //    strategy accumulates the gradients in fp32 and reduces them over DP,
  //    overlapped with the backward where it can (optim/grad_sync.h).
  model_->train();
  grad_sync_->begin_step();
  std::vector<data::Seq2SeqBatch> batches;
  for (const auto& mb : micro_batches) batches.push_back(mb.to(run_device_.device, /*non_blocking=*/true));
  const int64_t m = static_cast<int64_t>(batches.size());
  std::map<int64_t, torch::Tensor> stage_losses;  // each micro-batch's loss terms, forward to backward
  // The loss terms summed on the device in fp64 (ce, aux, z, distillation
  // KL): read once per step, not once per micro-batch.
  torch::Tensor loss_terms =
      torch::zeros({4}, torch::TensorOptions().dtype(torch::kFloat64).device(run_device_.device));
  // Kept assignments per [MoE layer, expert], this stage's rows filled.
  torch::Tensor expert_tokens =
      torch::zeros({static_cast<int64_t>(moe_layer_names_.size()), config_.model.moe.num_experts},
                   torch::TensorOptions().dtype(torch::kInt64).device(run_device_.device));
  parallel::PipelineStageCallbacks stage;
  stage.input_buffers = [&](int64_t i) { return activation_buffers(batches[i]); };
  stage.forward = [&](int64_t i, const std::vector<torch::Tensor>& inputs) {
    const auto out = forward_stage(batches[i], inputs);
    torch::Tensor loss = (moe.aux_loss_coef * out.moe.aux_loss + moe.z_loss_coef * out.moe.z_loss) / global_micro;
    loss_terms[1] += out.moe.aux_loss.detach().to(torch::kFloat64);
    loss_terms[2] += out.moe.z_loss.detach().to(torch::kFloat64);
    r.dropped_tokens += out.moe.dropped;
    if (out.moe.num_moe_layers > 0) expert_tokens.index_add_(0, stage_moe_rows_, out.moe.tokens_per_expert);
    if (holds_lm_head()) {
      const auto ce = cross_entropy(out.logits, batches[i], config_.train.label_smoothing);
      loss_terms[0] += ce.loss_sum.detach().to(torch::kFloat64);
      if (distillation_) {
        // The teacher's forward on the same micro-batch; the KL in fp32.
        const auto kl = distillation_->kl_sum(out.logits, batches[i]);
        loss_terms[3] += kl.detach().to(torch::kFloat64);
        loss = loss + (distillation_->kl_weight() * kl + distillation_->ce_weight() * ce.loss_sum) / token_divisor;
      } else {
        loss = loss + ce.loss_sum / token_divisor;
      }
    }
    stage_losses[i] = loss;
    if (grid().pp_rank() == grid().pp_size() - 1) return std::vector<torch::Tensor>{};
    return std::vector<torch::Tensor>{out.activations.encoder, out.activations.decoder};
  };
  stage.backward = [&](int64_t i, const std::vector<torch::Tensor>& outputs,
                       const std::vector<torch::Tensor>& output_grads) {
    const bool last = i + 1 == m;
    grad_sync_->before_backward(last);
    // The outputs' gradients from the next stage, and this stage's own loss
    // terms, scaled.
    std::vector<torch::Tensor> roots = outputs, seeds = output_grads;
    roots.push_back(stage_losses.at(i) * r.loss_scale);
    seeds.push_back(torch::ones_like(roots.back()));
    stage_losses.erase(i);
    parallel::backward_from_outputs(roots, seeds);
    grad_sync_->after_backward(last);
  };
  pipeline_stats_ = parallel::run_pipeline(pipeline_schedule_, m, groups_->pp(), stage);

  // 3. The reduced gradients this rank holds (the whole flat space, or its
  //    shard), the tied embedding's two stages added up, and the global
  //    batch's metrics.
  torch::Tensor& grads = grad_sync_->finish_step();
  reduce_tied_embedding_grads(grads);
  sum_step_metrics(loss_terms, expert_tokens, token_divisor, global_micro, r);

  // 4. Unscale, then check: an fp16 overflow skips the step on every rank
  //    (the norm is global, so all agree); any other non-finite value stops
  //    training before anything is written.
  if (r.loss_scale != 1.0) grads.mul_(1.0 / r.loss_scale);
  if (config_.train.dump_grads_step == step + 1 && !output_dir_.empty()) dump_gradients(grads, step);
  r.grad_norm = global_grad_norm(grads);
  r.lr = schedule_->lr_at(step - phase_.start);
  if (!std::isfinite(r.grad_norm) || !std::isfinite(r.loss)) {
    handle_nonfinite(r, grads, step);
    return r;
  }

  // 5. Clip by the global norm, step AdamW on the fp32 master weights (this
  //    rank's shard under ZeRO), and bring the model weights up to date.
  optim::clip_grads(grads, r.grad_norm, config_.optim.grad_clip);
  optimizer_->step(params_->master(), grads, r.lr);
  grad_sync_->refresh_model();
  scaler_->update(/*overflow=*/false);
  return r;
}

void Trainer::count_tokens(const std::vector<data::Seq2SeqBatch>& micro_batches, StepResult& r) {
  for (const auto& mb : micro_batches) {
    r.target_tokens += mb.num_target_tokens;
    r.tokens += mb.num_target_tokens + mb.num_source_tokens;
    r.model_flops +=
        models::train_step_flops(config_.model, mb.src_tokens.size(0), mb.src_tokens.size(1), mb.tgt_in.size(1));
  }
  if (groups_->dp().size() > 1) {
    // fp64 holds the counts exactly (below 2^53).
    auto sums = torch::tensor({static_cast<double>(r.target_tokens), static_cast<double>(r.tokens), r.model_flops},
                              torch::kFloat64);
    groups_->dp().all_reduce(sums);
    r.target_tokens = static_cast<int64_t>(sums[0].item<double>());
    r.tokens = static_cast<int64_t>(sums[1].item<double>());
    r.model_flops = sums[2].item<double>();
  }
}

void Trainer::sum_step_metrics(const torch::Tensor& loss_terms, const torch::Tensor& expert_tokens,
                               double token_divisor, double global_micro, StepResult& r) {
  // Every DP rank's micro-batches, every stage's MoE layers (the
  // cross-entropy is the last stage's), in one small all-reduce per group,
  // on the host: one device-to-host copy of the loss terms and one of the
  // expert counts (exact in fp64).
  const auto host = loss_terms.cpu();
  auto sums =
      sum_over_dp_and_pp(torch::cat({host, torch::tensor({static_cast<double>(r.dropped_tokens)}, torch::kFloat64),
                                     expert_tokens.cpu().to(torch::kFloat64).flatten()}));
  r.loss = sums[0].item<double>() / token_divisor;
  r.aux_loss = sums[1].item<double>() / global_micro;
  r.z_loss = sums[2].item<double>() / global_micro;
  if (distillation_) {
    r.distill_kl = sums[3].item<double>() / token_divisor;
    r.distill_loss = distillation_->kl_weight() * *r.distill_kl + distillation_->ce_weight() * r.loss;
  }
  r.dropped_tokens = static_cast<int64_t>(sums[4].item<double>());
  const auto counts = sums.slice(0, 5).to(torch::kInt64).contiguous();
  r.expert_tokens.assign(counts.data_ptr<int64_t>(), counts.data_ptr<int64_t>() + counts.numel());
}

void Trainer::handle_nonfinite(StepResult& r, const torch::Tensor& grads, int64_t step) {
  if (scaler_->enabled()) {
    r.skipped = true;
    if (!scaler_->update(/*overflow=*/true)) {
      throw TrainingError("fp16 gradients still overflow at the minimum loss scale (" +
                          std::to_string(scaler_->scale()) + ") at step " + std::to_string(step + 1) +
                          "; first non-finite gradient: " + first_nonfinite_parameter(grads));
    }
    return;
  }
  throw TrainingError("non-finite " + std::string(std::isfinite(r.loss) ? "gradient" : "loss") + " at step " +
                      std::to_string(step + 1) + " (loss " + std::to_string(r.loss) +
                      "); first non-finite gradient: " + first_nonfinite_parameter(grads));
}

std::pair<double, int64_t> Trainer::evaluate(const std::vector<data::Seq2SeqBatch>& host_batches) {
  torch::NoGradGuard no_grad;
  model_->eval();
  std::vector<data::Seq2SeqBatch> batches;
  for (const auto& b : context_parallel_parts(host_batches)) {
    batches.push_back(b.to(run_device_.device, /*non_blocking=*/true));
  }
  eval::LossTotals totals;
  // Forward only, stage by stage; the last stage scores.
  parallel::PipelineStageCallbacks stage;
  stage.input_buffers = [&](int64_t i) { return activation_buffers(batches[i]); };
  stage.forward = [&](int64_t i, const std::vector<torch::Tensor>& inputs) {
    const auto out = forward_stage(batches[i], inputs);
    if (!holds_lm_head()) return std::vector<torch::Tensor>{out.activations.encoder, out.activations.decoder};
    totals.add(cross_entropy(out.logits, batches[i], 0.0));
    return std::vector<torch::Tensor>{};
  };
  if (!batches.empty()) parallel::run_forward_pipeline(static_cast<int64_t>(batches.size()), groups_->pp(), stage);
  model_->train();
  const auto sums = sum_over_dp_and_pp(torch::tensor({totals.loss_sum, totals.tokens}, torch::kFloat64));
  eval::LossTotals all{sums[0].item<double>(), sums[1].item<double>()};
  return {all.mean(), static_cast<int64_t>(all.tokens)};
}

torch::Tensor Trainer::sum_over_dp_and_pp(torch::Tensor values) {
  if (groups_->dp().size() > 1) groups_->dp().all_reduce(values);
  if (groups_->pp().size() > 1) groups_->pp().all_reduce(values);
  return values;
}

void Trainer::reduce_tied_embedding_grads(torch::Tensor& grads) {
  auto* tied = groups_->tied();
  if (!tied || tied->size() == 1) return;
  // Both stages shard the embedding's unit alike, so their pieces match.
  for (const auto& e : params_->entries()) {
    if (e.name != "embed_tokens.weight") continue;
    torch::Tensor g = optim::local_grad(*params_, grads, e);
    if (g.defined()) tied->all_reduce(g);
  }
}

models::StageOutput Trainer::forward_stage(const data::Seq2SeqBatch& mb, const std::vector<torch::Tensor>& inputs) {
  models::StageActivations in;
  if (!inputs.empty()) in = {inputs.at(0), inputs.at(1)};
  // ZeRO 3 gathers the units outside the layers here (layers gather their
  // own weights through the model's layer runner).
  grad_sync_->before_forward();
  auto out = model_->forward_stage(stage_begin_, stage_end_, mb.src_tokens, mb.src_mask, mb.tgt_in, mb.tgt_mask, in);
  grad_sync_->after_forward();
  return out;
}

std::vector<torch::Tensor> Trainer::activation_buffers(const data::Seq2SeqBatch& mb) const {
  const auto options =
      torch::TensorOptions().dtype(config::to_scalar_type(config_.precision.compute)).device(run_device_.device);
  const int64_t batch = mb.src_tokens.size(0), d = config_.model.d_model;
  return {torch::empty({batch, mb.src_tokens.size(1), d}, options),
          torch::empty({batch, mb.tgt_in.size(1), d}, options)};
}

kernels::CrossEntropyResult Trainer::cross_entropy(const torch::Tensor& logits, const data::Seq2SeqBatch& mb,
                                                   double label_smoothing) {
  return eval::batch_cross_entropy(logits, mb, label_smoothing, groups_->tp(), &model_->vocab_shard());
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
  auto* tp = groups_->tp();
  auto sum_sq = torch::zeros({1}, grads.options().dtype(torch::kFloat64));
  for (const auto& e : params_->entries()) {
    const torch::Tensor g = optim::local_grad(*params_, grads, e);
    if (!g.defined() || writers_->is_tied_copy(e.name)) continue;
    const auto& unit = params_->units()[e.unit];
    const double dp_copies = sharded ? 1.0 : static_cast<double>(groups_->replicas(unit.expert).size());
    const double tp_copies = tp && !slices.count(e.name) ? static_cast<double>(tp->size()) : 1.0;
    sum_sq += g.to(torch::kFloat64).pow(2).sum() / (dp_copies * tp_copies);
  }
  // A host value: one device-to-host copy, then over MPI (the control plane).
  auto total = sum_sq.cpu();
  if (world().size() > 1) world().all_reduce(total);
  return std::sqrt(total.item<double>());
}

void Trainer::dump_gradients(const torch::Tensor& grads, int64_t step) {
  const auto dir = fs::path(output_dir_) / ("grads-" + checkpoint::checkpoint_name(step + 1));
  checkpoint::save_gradient_dump(
      dir.string(), *params_, grads, &model_->parameter_slices(),
      [this](const optim::FlatParameterEntry& e) { return writers_->writes(e); }, step + 1, world());
}

std::string Trainer::first_nonfinite_parameter(const torch::Tensor& grads) const {
  // Under ZeRO a rank sees only its shard of the gradients.
  for (const auto& e : params_->entries()) {
    const torch::Tensor g = optim::local_grad(*params_, grads, e);
    if (g.defined() && !torch::isfinite(g).all().item<bool>()) return e.name;
  }
  return params_->sharding().shard_master ? "(none in this rank's shard)" : "(none: the loss itself is not finite)";
}

nlohmann::json Trainer::layout() const {
  const auto& g = grid();
  nlohmann::json out = {{"world", g.world_size()},
                        {"dp", g.dp_size()},
                        {"tp", g.tp_size()},
                        {"pp", g.pp_size()},
                        {"pp_stage_starts", stage_starts_},
                        {"ep", g.ep_size()},
                        {"zero_stage", config_.parallel.zero_stage}};
  // cp only when used: layouts saved before context parallelism existed
  // compare equal to today's cp = 1 ones.
  if (g.cp_size() > 1) out["cp"] = g.cp_size();
  return out;
}

checkpoint::CheckpointContents Trainer::checkpoint_contents(int64_t step) const {
  checkpoint::CheckpointContents c;
  c.step = step;
  c.writes_entry = [this](const optim::FlatParameterEntry& e) { return writers_->writes(e); };
  c.params = params_.get();
  for (const auto& [name, p] : frozen_) {
    if (writers_->writes_frozen(name)) c.frozen.emplace_back(name, p);
  }
  c.optimizer = optimizer_.get();
  c.scaler = scaler_->state();
  c.rng_state = cpu_generator().get_state();
  c.slices = &model_->parameter_slices();
  if (tp_rng_) c.tp_rng_states = tp_rng_->get_state();
  if (run_device_.device.is_cuda()) {
    auto generator = at::globalContext().defaultGenerator(run_device_.device);
    c.cuda_rng_state = generator.get_state();
  }
  return c;
}

checkpoint::LoadedCheckpoint Trainer::resume_from(const std::string& dir) {
  checkpoint::ExtraWeights extra;
  extra.frozen = frozen_;
  auto loaded =
      checkpoint::load_checkpoint(dir, *params_, optimizer_.get(), world().rank(), &model_->parameter_slices(), extra);
  grad_sync_->refresh_model();
  scaler_->set_state(loaded.scaler);
  // Parameters and optimizer state load under any layout; the generators
  // only under the one they were saved with (each rank's own streams).
  if (loaded.meta.value("layout", nlohmann::json::object()) == layout()) {
    if (loaded.rng_state.defined()) cpu_generator().set_state(loaded.rng_state);
    if (tp_rng_ && !loaded.tp_rng_states.empty()) tp_rng_->set_state(loaded.tp_rng_states);
    if (loaded.cuda_rng_state.defined() && run_device_.device.is_cuda()) {
      auto generator = at::globalContext().defaultGenerator(run_device_.device);
      generator.set_state(loaded.cuda_rng_state);
    }
  }
  return loaded;
}

double Trainer::init_weights_from(const std::string& dir) {
  // Weights only (the optimizer starts afresh). A LoRA run keeps its fresh
  // adapters when the checkpoint has none; a full fine-tune of a LoRA
  // checkpoint folds the adapters into the weights.
  const bool lora = config_.finetune.mode == config::FinetuneMode::Lora;
  checkpoint::ExtraWeights extra;
  extra.frozen = frozen_;
  extra.adapters_may_be_absent = lora;
  if (!lora) extra.merge_lora_scale = checkpoint::checkpoint_lora_scale(dir);
  checkpoint::load_checkpoint(dir, *params_, nullptr, world().rank(), &model_->parameter_slices(), extra);
  grad_sync_->refresh_model();
  return extra.merge_lora_scale;
}

}  // namespace moetrain::train

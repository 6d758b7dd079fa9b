#include "train/training_loop.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "checkpoint/checkpoint.h"
#include "checkpoint/verify.h"
#include "config/load.h"
#include "data/batch_prefetcher.h"
#include "data/batch_source.h"
#include "data/tokenizer.h"
#include "monitor/memory_usage.h"
#include "monitor/metrics_logger.h"
#include "parallel/mpi_runtime.h"
#include "train/shutdown_signal.h"

namespace fs = std::filesystem;

namespace moetrain::train {
namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// One run of the loop: its data, where it writes, and where it starts.
class TrainingLoop {
 public:
  TrainingLoop(Trainer& trainer, const TrainOptions& options, RunMonitors& monitors);
  int run();

 private:
  // The step to start from: a checkpoint's (resumed), or the phase's first.
  int64_t resume_or_initialise();
  void print_resume_notes(const checkpoint::LoadedCheckpoint& loaded, int64_t start_step) const;
  void print_banner() const;
  // Every step's figures to Prometheus; every log.every steps to the
  // progress line, metrics.jsonl and TensorBoard.
  void report_step(const StepResult& r, int64_t done, double step_s, double data_wait_ms, int64_t steps_this_run);
  // This rank's collectives since the last call, per "<group> <op>".
  std::map<std::string, monitor::CommFigures> take_comm_stats();
  void evaluate(int64_t done);
  std::string save(int64_t step);
  // save(), timed, reported to metrics.jsonl, TensorBoard and Prometheus.
  void save_and_report(int64_t step);
  // Tells the stall watchdog what this rank is doing now.
  void doing(const std::string& activity) {
    if (stall_) stall_->set_activity(activity);
  }
  // Ranks may see a signal at different moments: they agree before acting.
  bool agree_to_stop();

  Trainer& trainer_;
  const config::Config& cfg_;
  const PhaseInfo& phase_;
  TrainOptions options_;
  bool leader_;
  std::string checkpoints_dir_;
  std::optional<data::BatchSource> train_data_, valid_data_;
  std::optional<monitor::MetricsLogger> metrics_;
  monitor::PrometheusExporter* prometheus_;  // null where this rank serves none
  monitor::StallWatchdog* stall_;            // rank 0's, or null
  // Rank 0, for the next metrics line: collectives and expert tokens since the last.
  std::map<std::string, monitor::CommFigures> comm_since_log_;
  std::vector<int64_t> expert_tokens_since_log_;
  std::chrono::steady_clock::time_point t0_;
};

// A hook for the stall tests: MOETRAIN_TEST_PAUSE="STEP:RANK:SECONDS:WHERE"
// makes rank RANK sleep SECONDS in step STEP, while loading its batches
// (WHERE "data") or before its compute (WHERE "compute").
void test_pause(int64_t step, const char* where) {
  static const char* spec = std::getenv("MOETRAIN_TEST_PAUSE");
  if (spec == nullptr) return;
  long long at_step = 0, rank = 0;
  double seconds = 0;
  char place[16] = "";
  if (std::sscanf(spec, "%lld:%lld:%lf:%15s", &at_step, &rank, &seconds, place) != 4) return;
  const int my_rank = parallel::mpi_running() ? parallel::world_rank() : 0;
  if (at_step != step || rank != my_rank || std::string(place) != where) return;
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
}

int64_t directory_bytes(const std::string& dir) {
  int64_t bytes = 0;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {  // a checkpoint is flat
    if (entry.is_regular_file(ec)) bytes += static_cast<int64_t>(entry.file_size(ec));
  }
  return bytes;
}

TrainingLoop::TrainingLoop(Trainer& trainer, const TrainOptions& options, RunMonitors& monitors)
    : trainer_(trainer),
      cfg_(trainer.config()),
      phase_(trainer.phase()),
      options_(options),
      leader_(trainer.world().rank() == 0),
      checkpoints_dir_(checkpoint::checkpoints_dir_of(options.output_dir)),
      prometheus_(monitors.prometheus.get()),
      stall_(monitors.stall.get()) {
  trainer_.set_output_dir(options.output_dir);
  // A run of phases writes its whole config itself (train_run).
  if (leader_ && !phase_.in_phases()) write_run_config(options.output_dir, cfg_);
  trainer_.world().barrier();
  const auto tokenizer = data::Tokenizer::load(data::resolve_tokenizer_path(cfg_.data));
  const auto special = tokenizer.special_tokens();
  train_data_.emplace(cfg_.data, special, cfg_.train.seed, "train");
  if (!cfg_.data.valid.empty()) {
    data::DataConfig valid_cfg = cfg_.data;
    valid_cfg.train = cfg_.data.valid;
    valid_data_.emplace(valid_cfg, special, cfg_.train.seed, "valid");
  }
}

int TrainingLoop::run() {
  const int64_t start_step = resume_or_initialise();
  const int64_t max_steps = cfg_.train.max_steps;
  if (leader_) print_banner();
  if (start_step >= max_steps) {
    if (leader_) std::cout << "nothing to do: already at step " << start_step << " of " << max_steps << std::endl;
    return 0;
  }
  if (leader_) {
    metrics_.emplace(options_.output_dir, start_step,
                     monitor::MetricsOptions{cfg_.log.tensorboard, phase_.in_phases() ? phase_.name : ""});
  }
  if (prometheus_) prometheus_->set_phase(phase_.in_phases() ? phase_.name : "");
  ShutdownSignal::install();
  take_comm_stats();  // what loading and resuming moved is no step's
  t0_ = std::chrono::steady_clock::now();
  const auto& grid = trainer_.grid();
  // The next steps' micro-batches are built in the background meanwhile.
  data::BatchPrefetcher batches_ahead(*train_data_,
                                      {grid.dp_rank(), grid.dp_size(), cfg_.train.global_batch, cfg_.train.micro_batch},
                                      start_step - phase_.start, cfg_.data.prefetch, trainer_.device().is_cuda());
  for (int64_t step = start_step; step < max_steps; ++step) {
    const auto step_t0 = std::chrono::steady_clock::now();
    double data_wait_ms = 0;
    doing("loading the batches of step " + std::to_string(step + 1));
    test_pause(step + 1, "data");
    const auto batches = batches_ahead.next(step - phase_.start, data_wait_ms);
    doing("step " + std::to_string(step + 1) + "'s forward, backward and update");
    test_pause(step + 1, "compute");
    const StepResult r = trainer_.train_step(batches, step);
    // The optimizer's kernels may still be queued: count them in this step.
    if (trainer_.device().is_cuda()) torch::cuda::synchronize(trainer_.device().index());
    const int64_t done = step + 1;
    report_step(r, done, seconds_since(step_t0), data_wait_ms, done - start_step);
    if (valid_data_ && cfg_.train.eval_every > 0 && done % cfg_.train.eval_every == 0) evaluate(done);
    const bool stop = agree_to_stop();
    const bool interval = cfg_.checkpoint.every > 0 && done % cfg_.checkpoint.every == 0;
    if (interval || done == max_steps || stop) save_and_report(done);
    if (stop) {
      if (leader_) {
        metrics_->log_event(done, std::string("stopping on ") +
                                      (ShutdownSignal::requested() ? ShutdownSignal::name() : "a signal") +
                                      " after step " + std::to_string(done));
      }
      return 0;
    }
  }
  if (leader_) {
    std::cout << "training done: " << max_steps << " steps in " << monitor::format_duration(seconds_since(t0_))
              << std::endl;
  }
  return 0;
}

int64_t TrainingLoop::resume_or_initialise() {
  // Resume: --resume, else the newest complete checkpoint of this output dir.
  // In a run of phases, a checkpoint of an earlier phase (its last step)
  // starts this one instead: its weights, a fresh optimizer.
  std::optional<std::string> resume_dir =
      checkpoint::checkpoint_to_resume(options_.output_dir, options_.resume, trainer_.world());
  std::string init_from = options_.init_from;
  if (resume_dir && phase_.in_phases() && checkpoint::checkpoint_phase(*resume_dir) < phase_.index) {
    init_from = *resume_dir;
    resume_dir.reset();
  }
  if (resume_dir) {
    const auto loaded = trainer_.resume_from(*resume_dir);
    if (leader_) {
      std::cout << "resumed from " << *resume_dir << " at step " << loaded.step << std::endl;
      print_resume_notes(loaded, loaded.step);
    }
    return loaded.step;
  }
  if (!init_from.empty()) {
    const double merged = trainer_.init_weights_from(checkpoint::resolve_checkpoint_path(init_from));
    if (leader_) {
      std::cout << "initialised weights from " << init_from;
      if (merged > 0) std::cout << " (its LoRA adapters merged into the weights)";
      std::cout << std::endl;
    }
  }
  return phase_.start;
}

void TrainingLoop::print_resume_notes(const checkpoint::LoadedCheckpoint& loaded, int64_t start_step) const {
  const nlohmann::json layout = trainer_.layout();
  const nlohmann::json saved_layout = loaded.meta.value("layout", nlohmann::json::object());
  if (saved_layout != layout) {
    std::cout << "layout changed from " << saved_layout.dump() << " to " << layout.dump()
              << ": weights and optimizer state resharded; dropout generators start afresh from the seed" << std::endl;
  }
  const int64_t saved_batch = checkpoint::meta_int(loaded.meta.value("data", nlohmann::json::object()),
                                                   "samples_consumed", -1, "meta.json (data)");
  const int64_t position = (start_step - phase_.start) * cfg_.train.global_batch;
  if (saved_batch >= 0 && saved_batch != position) {
    std::cout << "train.global_batch changed: the checkpoint consumed " << saved_batch << " samples in "
              << start_step - phase_.start << " steps; this run continues at sample " << position
              << " (the data position is step x global_batch)" << std::endl;
  }
}

void TrainingLoop::print_banner() const {
  const auto& grid = trainer_.grid();
  const auto& model = trainer_.model();
  const auto& data = *train_data_;
  const int64_t trainable = trainer_.trainable_numel(), total = trainer_.total_numel();
  const int64_t micro_batches = cfg_.train.global_batch / (cfg_.train.micro_batch * grid.dp_size());
  if (cfg_.finetune.mode == config::FinetuneMode::Lora) {
    std::cout << "LoRA: rank " << cfg_.lora.r << ", scale " << cfg_.lora.scale() << " on "
              << trainer_.lora_projections() << " projections; " << trainable << " adapter parameters train, "
              << total - trainable << " base parameters frozen" << std::endl;
  } else if (trainable < total) {
    std::cout << "finetune.freeze: " << total - trainable << " of " << total << " parameters frozen" << std::endl;
  }
  std::cout << "model: " << trainable << " trainable parameters (" << trainer_.params().numel() << " on rank 0), "
            << data.num_samples() << " training samples per epoch, " << micro_batches << " micro-batch(es) of "
            << cfg_.train.micro_batch << " per step on each of " << grid.dp_size()
            << " data-parallel rank(s), ZeRO stage " << cfg_.parallel.zero_stage << ", tensor parallel "
            << grid.tp_size() << ", expert parallel " << grid.ep_size() << ", pipeline parallel " << grid.pp_size();
  if (grid.cp_size() > 1) std::cout << ", context parallel " << grid.cp_size() << " (" << cfg_.parallel.cp_mode << ")";
  std::cout << ", device " << trainer_.device() << std::endl;
  const auto& run_device = trainer_.run_device();
  for (const auto& line : run_device.device_map) std::cout << "# devices " << line << std::endl;
  if (grid.world_size() > 1 || run_device.device.is_cuda()) {
    std::cout << "collectives: " << parallel::backend_name(run_device.backend.backend) << " ("
              << run_device.backend.reason << ") for the data groups, mpi for control" << std::endl;
  }
  if (data.num_datasets() > 1) {
    std::cout << "data: a mixture of";
    for (int64_t d = 0; d < data.num_datasets(); ++d) {
      std::cout << (d ? ", " : " ") << data.dataset_names()[static_cast<size_t>(d)] << " (weight "
                << data.dataset_weights()[static_cast<size_t>(d)] << ", " << data.num_samples(d) << " samples)";
    }
    std::cout << std::endl;
  }
  if (const auto* distill = trainer_.distillation()) {
    std::cout << "distill: " << distill->describe() << ", replicated on every rank; temperature "
              << cfg_.distill.temperature << ", alpha " << cfg_.distill.alpha << ", top_k " << cfg_.distill.top_k
              << std::endl;
  }
  if (grid.pp_size() > 1) {
    const auto& starts = trainer_.stage_starts();
    std::cout << "pipeline: " << grid.pp_size() << " stages, schedule " << cfg_.parallel.schedule << ", "
              << micro_batches << " micro-batches per step";
    for (size_t st = 0; st < starts.size(); ++st) {
      const int64_t begin = starts[st];
      const int64_t end = st + 1 < starts.size() ? starts[st + 1] : model->num_pipeline_units();
      std::cout << (st ? "; " : ": ") << "stage " << st << " = " << model->pipeline_unit_name(begin);
      if (end - begin > 1) std::cout << " .. " << model->pipeline_unit_name(end - 1);
    }
    std::cout << std::endl;
  }
}

void TrainingLoop::report_step(const StepResult& r, int64_t done, double step_s, double data_wait_ms,
                               int64_t steps_this_run) {
  const int64_t max_steps = cfg_.train.max_steps;
  monitor::StepMetrics m;
  m.step = done;
  m.max_steps = max_steps;
  m.loss = r.loss;
  m.aux_loss = r.aux_loss;
  m.z_loss = r.z_loss;
  m.lr = r.lr;
  m.grad_norm = r.grad_norm;
  m.loss_scale = r.loss_scale;
  m.tokens = r.tokens;
  m.data_wait_ms = data_wait_ms;
  m.tokens_per_s = static_cast<double>(r.tokens) / step_s;
  if (cfg_.log.peak_tflops > 0)
    m.mfu = r.model_flops / step_s / (cfg_.log.peak_tflops * 1e12 * static_cast<double>(trainer_.world().size()));
  m.step_ms = step_s * 1000.0;
  m.dropped_tokens = r.dropped_tokens;
  m.distill_kl = r.distill_kl;
  m.distill_loss = r.distill_loss;
  m.skipped = r.skipped;
  // ETA from this run's pace, not from steps done before a resume.
  m.elapsed_s = seconds_since(t0_);
  m.eta_s = m.elapsed_s / static_cast<double>(steps_this_run) * static_cast<double>(max_steps - done);
  // Rank 0 writes a metrics line at this step; the endpoint (when served)
  // takes every step.
  const bool logged = leader_ && (done % cfg_.log.every == 0 || done == max_steps || steps_this_run == 1);
  if (logged || prometheus_) {
    m.rss_bytes = monitor::resident_bytes();
    m.peak_rss_bytes = monitor::peak_resident_bytes();
    m.cuda_peak_bytes = monitor::cuda_memory(trainer_.device()).allocated_peak;
  }
  if (stall_) stall_->step_finished(done, step_s);
  m.comm = take_comm_stats();
  m.moe_layers = trainer_.moe_layer_names();
  m.expert_tokens = r.expert_tokens;
  if (prometheus_) prometheus_->record_step(m);
  if (!leader_) return;
  // The metrics line sums collectives and expert tokens over its interval.
  for (const auto& [key, figures] : m.comm) {
    auto& sum = comm_since_log_[key];
    sum.calls += figures.calls;
    sum.bytes += figures.bytes;
    sum.seconds += figures.seconds;
  }
  expert_tokens_since_log_.resize(m.expert_tokens.size(), 0);
  for (size_t i = 0; i < m.expert_tokens.size(); ++i) expert_tokens_since_log_[i] += m.expert_tokens[i];
  if (!logged) return;
  m.comm = std::exchange(comm_since_log_, {});
  m.expert_tokens = std::exchange(expert_tokens_since_log_, {});
  metrics_->log_step(m);
}

std::map<std::string, monitor::CommFigures> TrainingLoop::take_comm_stats() {
  std::map<std::string, monitor::CommFigures> comm;
  for (const auto& [key, op] : trainer_.comm_stats()) comm[key] = {op.calls, op.bytes, op.seconds};
  trainer_.reset_comm_stats();
  return comm;
}

void TrainingLoop::save_and_report(int64_t step) {
  doing("writing the checkpoint of step " + std::to_string(step));
  const auto t0 = std::chrono::steady_clock::now();
  const auto dir = save(step);
  const double seconds = seconds_since(t0);
  const int64_t bytes = leader_ || prometheus_ ? directory_bytes(dir) : 0;
  if (leader_) metrics_->log_checkpoint(step, dir, seconds, bytes);
  if (prometheus_) prometheus_->record_checkpoint(step, seconds, bytes);
}

void TrainingLoop::evaluate(int64_t done) {
  doing("evaluating at step " + std::to_string(done));
  const auto& grid = trainer_.grid();
  std::vector<data::Seq2SeqBatch> batches;
  for (int64_t e = 0; e < cfg_.train.eval_batches; ++e) {
    auto b =
        valid_data_->step_batches(e, grid.dp_rank(), grid.dp_size(), cfg_.train.global_batch, cfg_.train.micro_batch);
    batches.insert(batches.end(), b.begin(), b.end());
  }
  const auto [loss, tokens] = trainer_.evaluate(batches);
  if (leader_) metrics_->log_eval(done, loss, tokens);
  if (prometheus_) prometheus_->record_eval(done, loss);
}

std::string TrainingLoop::save(int64_t step) {
  checkpoint::CheckpointContents c = trainer_.checkpoint_contents(step);
  const int64_t global_batch = cfg_.train.global_batch;
  const int64_t data_step = step - phase_.start;  // steps on this phase's data
  nlohmann::json mixture = nlohmann::json::object();
  const auto drawn = train_data_->mixture_position(data_step, global_batch);
  for (size_t d = 0; d < drawn.size(); ++d) mixture[train_data_->dataset_names()[d]] = drawn[d];
  c.meta = {{"config", config::config_to_yaml(cfg_)},
            {"compute_dtype", config::to_string(cfg_.precision.compute)},
            {"data",
             {{"next_step", step},
              {"samples_consumed", data_step * global_batch},
              {"epoch", train_data_->epoch_of(data_step, global_batch)},
              {"mixture_position", mixture}}},
            {"layout", trainer_.layout()}};
  if (phase_.in_phases()) {
    c.meta["phase"] = {{"index", phase_.index}, {"name", phase_.name}, {"start", phase_.start}, {"end", phase_.end}};
  }
  return checkpoint::save_checkpoint(checkpoints_dir_, c, cfg_.checkpoint.keep, trainer_.world());
}

bool TrainingLoop::agree_to_stop() {
  bool stop = ShutdownSignal::requested();
  if (trainer_.world().size() > 1) {
    auto flag = torch::tensor({stop ? 1 : 0}, torch::kInt32);
    trainer_.world().all_reduce(flag, parallel::ReduceOp::Max);
    stop = flag.item<int>() != 0;
  }
  return stop;
}

}  // namespace

int run_training(Trainer& trainer, const TrainOptions& options, RunMonitors& monitors) {
  return TrainingLoop(trainer, options, monitors).run();
}

void write_run_config(const std::string& output_dir, const config::Config& config) {
  fs::create_directories(output_dir);
  std::ofstream out(fs::path(output_dir) / "config.yaml", std::ios::trunc);
  out << config::config_to_yaml(config);
}

}  // namespace moetrain::train

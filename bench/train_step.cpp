// bench_train_step: times whole optimizer steps (forward, backward, AdamW) of
// a config on random tokens and prints ms/step, tokens/s and peak memory (RSS
// on the CPU, the caching allocator's peak on CUDA). With --peak-tflops or
// --measure-matmul it also prints model FLOPs utilisation (models/flops.h says
// what is counted). Under mpirun it also prints one step's communication
// (rank 0's bytes per collective as in the ZeRO paper's accounting, and with
// --layout every group's bytes per collective type summed over all ranks)
// and, with pipeline parallelism, each stage's idle fraction next to the
// ideal bubble.
//
//   bench_train_step [--preset tiny|base-small]... [--config F [--name N]] [--set k=v]...
//                    [--device cpu|cuda] [--kernels fused|reference] [--steps N] [--warmup N]
//                    [--vocab V] [--layout] [--json] [--peak-tflops X | --measure-matmul]
//   bench_train_step --matmul-only [--device cpu|cuda] [--matmul-size N] [--json]
//
// Presets: `tiny` is configs/tiny.yaml; `base-small` is the 12/6-layer,
// 8-expert top-2 shape of configs/base-moe.yaml at d_model 128 on the CPU.
// scripts/bench-gpu.sh runs the GPU presets (full-width configs) through
// --config and --set, next to the Python peers in bench/peers/.
//
// --json prints one JSON object per run instead of the table: impl, preset,
// device, tokens_per_step, ms_per_step (median), tokens_per_s,
// peak_mem_bytes, params, active_params, flops_per_step, mfu, ...

#include <boost/program_options.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <iostream>

#ifdef MOETRAIN_BENCH_CUDA
#include <ATen/cuda/CUDAContext.h>
#endif

#include "bench/device_stats.h"
#include "config/config.h"
#include "config/load.h"
#include "kernels/dispatch.h"
#include "models/flops.h"
#include "parallel/context_parallel.h"
#include "parallel/mpi_communicator.h"
#include "train/trainer.h"

namespace po = boost::program_options;
using namespace moetrain;

namespace {

struct Preset {
  std::string name, config;
  std::vector<std::string> overrides;
};

std::vector<Preset> presets(const std::string& source_dir) {
  return {
      {"tiny", source_dir + "/configs/tiny.yaml", {}},
      {"base-small",
       source_dir + "/configs/base-moe.yaml",
       {"model.d_model=128", "model.n_heads=4", "model.d_ff=512", "model.dropout=0.0", "precision.compute=fp32",
        "train.device=cpu", "train.global_batch=8", "train.micro_batch=8", "data.src_len=128", "data.tgt_len=32"}},
  };
}

// Random (never constant) token ids with a little padding, as real batches have.
data::Seq2SeqBatch random_batch(int64_t batch, int64_t src_len, int64_t tgt_len, int64_t vocab) {
  data::Seq2SeqBatch b;
  b.src_tokens = torch::randint(4, vocab, {batch, src_len}, torch::kInt64);
  b.tgt_out = torch::randint(4, vocab, {batch, tgt_len}, torch::kInt64);
  b.src_mask = torch::ones({batch, src_len}, torch::kBool);
  b.tgt_mask = torch::ones({batch, tgt_len}, torch::kBool);
  b.src_mask.index_put_({0, torch::indexing::Slice(src_len - src_len / 8, torch::indexing::None)}, false);
  b.src_tokens.masked_fill_(b.src_mask.logical_not(), 0);
  b.tgt_in = torch::cat({torch::full({batch, 1}, 3, torch::kInt64), b.tgt_out.slice(1, 0, tgt_len - 1)}, 1);
  b.num_source_tokens = b.src_mask.sum().item<int64_t>();
  b.num_target_tokens = b.tgt_mask.sum().item<int64_t>();
  return b;
}

double peak_rss_mib() { return static_cast<double>(monitor::peak_resident_bytes()) / (1024.0 * 1024.0); }
double current_rss_mib() { return static_cast<double>(monitor::resident_bytes()) / (1024.0 * 1024.0); }

// The communicator groups and operations of Trainer::comm_stats(), in a
// fixed order so ranks can add up their figures element by element.
const char* const kGroups[] = {"world", "dp", "cp", "tp", "pp", "ep", "edp", "tied"};
const char* const kOps[] = {"all_reduce", "reduce_scatter", "all_gather", "broadcast", "all_to_all",
                            "send",       "recv",           "send_recv",  "barrier"};

// This rank's calls and bytes per (group, op), summed over the world.
std::vector<double> world_comm_totals(train::Trainer& t) {
  const auto stats = t.comm_stats();
  std::vector<double> v;
  for (const char* g : kGroups) {
    for (const char* op : kOps) {
      const auto it = stats.find(std::string(g) + " " + op);
      v.push_back(it == stats.end() ? 0.0 : static_cast<double>(it->second.calls));
      v.push_back(it == stats.end() ? 0.0 : static_cast<double>(it->second.bytes));
    }
  }
  auto tensor = torch::tensor(v, torch::kFloat64);
  if (t.world().size() > 1) t.world().all_reduce(tensor);
  return std::vector<double>(tensor.data_ptr<double>(), tensor.data_ptr<double>() + tensor.numel());
}

// Rank 0 prints the layout, one step's communication of all ranks
// (`totals` from world_comm_totals) and, under pipeline parallelism, each
// stage's idle time over the timed steps (`compute_s` and `total_s` are this
// rank's pipeline compute and whole-pipeline seconds summed over `steps`).
void print_layout(train::Trainer& t, int64_t zero_stage, const std::vector<double>& totals, double compute_s,
                  double total_s, int64_t steps, int64_t micro_batches) {
  const auto& g = t.grid();
  auto mine = torch::tensor({compute_s, total_s}, torch::kFloat64);
  auto all = mine;
  if (t.world().size() > 1) {
    all = torch::zeros({2 * t.world().size()}, torch::kFloat64);
    t.world().all_gather(mine, all);
  }
  if (t.world().rank() != 0) return;
  std::printf("  layout: world %lld = dp %lld x tp %lld x pp %lld, ep %lld, ZeRO %lld, %lld micro-batch(es) per step\n",
              static_cast<long long>(t.world().size()), static_cast<long long>(g.dp_size()),
              static_cast<long long>(g.tp_size()), static_cast<long long>(g.pp_size()),
              static_cast<long long>(g.ep_size()), static_cast<long long>(zero_stage),
              static_cast<long long>(micro_batches));
  std::printf("  communication of one step, all ranks together:\n");
  std::printf("    %-22s %8s %14s\n", "group collective", "calls", "bytes");
  size_t i = 0;
  double sum = 0;
  for (const char* group : kGroups) {
    for (const char* op : kOps) {
      const double calls = totals[i], bytes = totals[i + 1];
      i += 2;
      if (calls == 0) continue;
      std::printf("    %-22s %8.0f %14.0f\n", (std::string(group) + " " + op).c_str(), calls, bytes);
      sum += bytes;
    }
  }
  std::printf("    %-22s %8s %14.0f\n", "total", "", sum);
  if (g.pp_size() == 1) return;
  const int64_t p = g.pp_size();
  std::printf(
      "  pipeline stages (ranks of dp 0, tp 0), ideal bubble with p = %lld, m = %lld: "
      "(p-1)/m = %.3f of compute, (p-1)/(m+p-1) = %.3f of the step\n",
      static_cast<long long>(p), static_cast<long long>(micro_batches), parallel::ideal_bubble_ratio(p, micro_batches),
      parallel::ideal_bubble_fraction(p, micro_batches));
  for (int64_t s = 0; s < p; ++s) {
    const int64_t r = g.rank_of(0, s, 0);
    const double c = all[2 * r].item<double>(), w = all[2 * r + 1].item<double>();
    const double idle = std::max(0.0, w - c);
    std::printf(
        "    stage %lld: idle %.3f of the step, %.3f of its compute (compute %.1f ms, pipeline %.1f ms per step)\n",
        static_cast<long long>(s), w > 0 ? idle / w : 0.0, c > 0 ? idle / c : 0.0,
        1000.0 * c / static_cast<double>(steps), 1000.0 * w / static_cast<double>(steps));
  }
}

// Everything a run needs besides its config.
struct BenchOptions {
  int64_t steps = 10, warmup = 2, vocab = 8000;
  bool layout = false, json = false;
  double peak_tflops = 0;  // the MFU denominator; 0: no MFU
  std::string kernels;     // as set (for the record)
};

bool on_cuda(const torch::Device& device) { return device.is_cuda(); }

std::string device_name(const torch::Device& device) {
#ifdef MOETRAIN_BENCH_CUDA
  if (on_cuda(device)) return at::cuda::getCurrentDeviceProperties()->name;
#endif
  return on_cuda(device) ? "CUDA" : "CPU";
}

// The median rate of n x n x n bf16 matmuls on `device` (random operands,
// never zeros), in TFLOP/s, after warm-up.
double measure_matmul_tflops(const torch::Device& device, int64_t n, int64_t reps) {
  torch::NoGradGuard no_grad;
  const auto options = torch::TensorOptions().dtype(torch::kBFloat16).device(device);
  const torch::Tensor a = torch::randn({n, n}, options), b = torch::randn({n, n}, options);
  torch::Tensor c;
  for (int i = 0; i < 3; ++i) c = torch::matmul(a, b);
  bench::synchronize(device);
  std::vector<double> seconds;
  for (int64_t i = 0; i < reps; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    c = torch::matmul(a, b);
    bench::synchronize(device);
    seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  if (!std::isfinite(c.abs().max().item<double>())) throw std::runtime_error("matmul benchmark: non-finite result");
  std::sort(seconds.begin(), seconds.end());
  return 2.0 * static_cast<double>(n) * n * n / seconds[seconds.size() / 2] / 1e12;
}

// The model's own parameter count, to check count_parameters against
// (a single rank holds the whole model).
int64_t model_parameters(train::Trainer& t) {
  int64_t n = 0;
  for (const auto& p : t.model()->parameters(/*recurse=*/true)) n += p.numel();
  return n;
}

// The table's header, once, before the first row.
void print_header(const torch::Device& device, const BenchOptions& o) {
  static bool printed = false;
  if (printed) return;
  printed = true;
  const bool cuda = on_cuda(device);
  if (cuda) {
    std::printf("# %s, kernels %s (fused CUDA kernels %s), median of %lld steps after %lld warm-up\n",
                device_name(device).c_str(), o.kernels.c_str(),
                kernels::cuda_kernels_compiled() ? "compiled" : "not compiled", static_cast<long long>(o.steps),
                static_cast<long long>(o.warmup));
  } else {
    std::printf("# CPU, %d intra-op threads, median of %lld steps after %lld warm-up\n", at::get_num_threads(),
                static_cast<long long>(o.steps), static_cast<long long>(o.warmup));
  }
  std::printf("%-12s %12s %8s %10s %12s %10s", "preset", "params", "tokens", "ms/step", "tokens/s",
              cuda ? "peak GPU MiB" : "peak RSS MiB");
  if (cuda || o.peak_tflops > 0) {
    std::printf(" %8s", "TFLOP/s");
    if (o.peak_tflops > 0) std::printf(" %7s", "MFU");
  }
  std::printf("\n");
}

// What the timed steps measured on this rank.
struct StepTimings {
  std::vector<double> ms;                               // per timed step
  int64_t tokens = 0;                                   // of the last step
  double pipeline_compute_s = 0, pipeline_total_s = 0;  // summed over the timed steps
};

// Runs `warmup` untimed and then `steps` timed optimizer steps on `batches`;
// the CUDA peak memory counts from the first timed step on.
StepTimings time_steps(train::Trainer& t, const std::vector<data::Seq2SeqBatch>& batches, int64_t warmup,
                       int64_t steps) {
  const torch::Device device = t.device();
  StepTimings timings;
  for (int64_t s = 0; s < warmup + steps; ++s) {
    if (s == warmup) bench::reset_cuda_peak(device);
    bench::synchronize(device);
    const auto t0 = std::chrono::steady_clock::now();
    const auto r = t.train_step(batches, s);
    bench::synchronize(device);
    const double elapsed = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    if (s >= warmup) {
      timings.ms.push_back(elapsed);
      timings.pipeline_compute_s += t.pipeline_stats().compute_s();
      timings.pipeline_total_s += t.pipeline_stats().total_s;
    }
    timings.tokens = r.tokens;
  }
  return timings;
}

// Rank 0's figures per operation, every group together (the ZeRO accounting).
parallel::CommStats comm_stats_by_op(train::Trainer& t) {
  parallel::CommStats stats;
  for (const auto& [key, op] : t.comm_stats()) {
    auto& s = stats[key.substr(key.find(' ') + 1)];
    s.calls += op.calls;
    s.bytes += op.bytes;
    s.seconds += op.seconds;
  }
  return stats;
}

// A run's measurements and the figures derived from them.
struct RunFigures {
  StepTimings timings;  // timings.ms sorted
  bench::CudaMemory cuda_memory;
  double median = 0;  // ms per step
  double tokens_per_s = 0;
  models::ParameterCounts counts;
  double flops = 0, achieved_tflops = 0, mfu = 0;
  double peak_mib = 0;    // the largest of any rank's
  double before_mib = 0;  // the largest resident set of any rank before the first step (CPU)
};

// Fills the derived figures of `f` from its timings; warns when the model's
// parameter count disagrees with models/flops.cpp's.
void derive_figures(train::Trainer& t, const config::Config& cfg, const BenchOptions& o, RunFigures& f) {
  std::vector<double>& ms = f.timings.ms;
  std::sort(ms.begin(), ms.end());
  f.median = ms[ms.size() / 2];
  f.tokens_per_s = static_cast<double>(f.timings.tokens) / (f.median / 1000.0);
  // Model FLOPs of the global batch, against the peak of every rank's device.
  f.counts = models::count_parameters(cfg.model);
  f.flops = models::train_step_flops(cfg.model, cfg.train.global_batch, cfg.data.src_len, cfg.data.tgt_len);
  f.achieved_tflops = f.flops / (f.median / 1000.0) / 1e12;
  f.mfu = o.peak_tflops > 0 ? f.achieved_tflops / (o.peak_tflops * static_cast<double>(t.world().size())) : 0;
  if (t.world().size() == 1 && cfg.finetune.mode != config::FinetuneMode::Lora &&
      model_parameters(t) != f.counts.total) {
    std::cerr << "bench_train_step: warning: the model has " << model_parameters(t)
              << " parameters, models/flops.cpp counts " << f.counts.total << "; FLOPs and MFU are off" << std::endl;
  }
  f.peak_mib =
      on_cuda(t.device()) ? static_cast<double>(f.cuda_memory.allocated_peak) / (1024.0 * 1024.0) : peak_rss_mib();
  if (t.world().size() > 1) {
    auto both = torch::tensor({f.peak_mib, f.before_mib}, torch::kFloat64);
    t.world().all_reduce(both, parallel::ReduceOp::Max);
    f.peak_mib = both[0].item<double>();
    f.before_mib = both[1].item<double>();
  }
}

// The run as one JSON object on stdout (--json).
void print_json(const std::string& name, train::Trainer& t, const config::Config& cfg, const BenchOptions& o,
                int64_t n_micro, const RunFigures& f, const std::vector<double>& totals) {
  const torch::Device device = t.device();
  nlohmann::ordered_json j{
      {"impl", "moetrain"},
      {"preset", name},
      {"device", device_name(device)},
      {"kernels", o.kernels},
      {"cuda_kernels_compiled", kernels::cuda_kernels_compiled()},
      {"dtype", config::to_string(cfg.precision.compute)},
      {"activation_checkpointing", cfg.model.activation_checkpointing},
      {"world_size", t.world().size()},
      {"micro_batch", cfg.train.micro_batch},
      {"micro_batches", n_micro},
      {"src_len", cfg.data.src_len},
      {"tgt_len", cfg.data.tgt_len},
      {"vocab", o.vocab},
      {"steps", o.steps},
      {"warmup", o.warmup},
      {"tokens_per_step", f.timings.tokens},
      {"ms_per_step", f.median},
      {"ms_min", f.timings.ms.front()},
      {"ms_max", f.timings.ms.back()},
      {"tokens_per_s", f.tokens_per_s},
      {"peak_mem_bytes", static_cast<int64_t>(f.peak_mib * 1024 * 1024)},  // the largest of any rank's
      {"peak_mem_kind", on_cuda(device) ? "cuda_allocated" : "rss"},
      {"mem_before_steps_bytes", static_cast<int64_t>(f.before_mib * 1024 * 1024)},
      {"cp", t.grid().cp_size()},
      {"cp_mode", cfg.parallel.cp_mode},
      {"d_model", cfg.model.d_model},
      {"encoder_layers", cfg.model.encoder_layers},
      {"decoder_layers", cfg.model.decoder_layers},
      {"local_window", cfg.model.local_window},
      {"attention", cfg.model.attention == models::AttentionType::Global  ? "global"
                    : cfg.model.attention == models::AttentionType::Local ? "local"
                                                                          : "dynamic"},
      {"peak_reserved_bytes", f.cuda_memory.reserved_peak},
      {"params", f.counts.total},
      {"active_params", f.counts.active},
      {"flops_per_step", f.flops},
      {"achieved_tflops", f.achieved_tflops},
      {"peak_tflops", o.peak_tflops},
      {"mfu", f.mfu},
  };
  // One step's bytes per group and collective, all ranks together.
  nlohmann::ordered_json comm = nlohmann::ordered_json::object();
  size_t i = 0;
  for (const char* group : kGroups) {
    for (const char* op : kOps) {
      if (totals[i] > 0) comm[std::string(group) + " " + op] = {{"calls", totals[i]}, {"bytes", totals[i + 1]}};
      i += 2;
    }
  }
  j["comm"] = comm;
  std::printf("%s\n", j.dump().c_str());
  std::fflush(stdout);
}

// The table's row (after the header, once); on CUDA, and whenever a peak is
// known, with model TFLOP/s and MFU after the memory column.
void print_row(const std::string& name, train::Trainer& t, const BenchOptions& o, const RunFigures& f) {
  const torch::Device device = t.device();
  print_header(device, o);
  std::printf("%-12s %12lld %8lld %10.1f %12.0f %10.0f", name.c_str(), static_cast<long long>(t.params().numel()),
              static_cast<long long>(f.timings.tokens), f.median, f.tokens_per_s, f.peak_mib);
  if (on_cuda(device) || o.peak_tflops > 0) {
    std::printf(" %8.3g", f.achieved_tflops);
    if (o.peak_tflops > 0) std::printf(" %6.1f%%", 100.0 * f.mfu);
  }
  std::printf("\n");
}

// Where a rank's parameter memory goes: trainable weights and their
// optimizer, and frozen weights (LoRA's base, finetune.freeze), which carry
// no master copy, moments or gradient buffer.
void print_memory(train::Trainer& t) {
  const auto mem = t.optimizer_memory();
  auto mib = [](int64_t bytes) { return static_cast<double>(bytes) / (1024.0 * 1024.0); };
  std::printf(
      "  memory, rank 0: trainable weights %.2f MiB, fp32 master %.2f MiB, Adam moments %.2f MiB, "
      "gradient buffers %.2f MiB, frozen weights %.2f MiB\n",
      mib(mem.param_bytes), mib(mem.master_bytes), mib(mem.moment_bytes), mib(mem.grad_bytes), mib(mem.frozen_bytes));
}

// Rank 0's communication (`stats`, from comm_stats_by_op) and optimizer state
// next to the ZeRO paper's per-rank figures: 2 psi of traffic per step for
// stages 0-2, 3 psi for stage 3 (psi: parameter bytes in the fp32 reduction
// dtype), and 12 bytes per parameter / N of optimizer state (fp32 master, m,
// v) for stages >= 1.
void print_zero_accounting(train::Trainer& t, int64_t zero_stage, const parallel::CommStats& stats) {
  const int64_t n = t.world().size();
  const double psi = static_cast<double>(t.params().numel()) * 4.0;
  const double expected = (zero_stage == 3 ? 3.0 : 2.0) * psi;
  int64_t total = 0;
  std::printf("  communication per step, rank 0 (world %lld, ZeRO %lld):\n", static_cast<long long>(n),
              static_cast<long long>(zero_stage));
  for (const auto& [op, s] : stats) {
    std::printf("    %-15s %6lld calls %14lld bytes\n", op.c_str(), static_cast<long long>(s.calls),
                static_cast<long long>(s.bytes));
    total += s.bytes;
  }
  std::printf("    total %lld bytes = %.4f psi (ZeRO paper: %.0f psi; psi = %.0f bytes)\n",
              static_cast<long long>(total), static_cast<double>(total) / psi, expected / psi, psi);
  const auto mem = t.optimizer_memory();
  const double state = static_cast<double>(mem.master_bytes + mem.moment_bytes);
  const double zero_state = 12.0 * static_cast<double>(t.params().numel()) / static_cast<double>(n);
  std::printf(
      "    optimizer state per rank %.0f bytes (12 bytes x params / N = %.0f, ratio %.4f); "
      "fp32 gradient buffers %lld bytes\n",
      state, zero_state, state / zero_state, static_cast<long long>(mem.grad_bytes));
  // ZeRO 3 keeps no model copy between steps (only the master shard).
  std::printf("    model weights resident between steps %lld bytes (%.4f x params x 4 bytes)\n",
              static_cast<long long>(mem.param_bytes), static_cast<double>(mem.param_bytes) / psi);
}

// Builds a Trainer for `cfg` (vocabulary from `o`), times its steps on random
// batches and prints the results: a table row, a JSON object or the layout.
void run_one(const std::string& name, config::Config cfg, const BenchOptions& o) {
  cfg.model.vocab_size = o.vocab;
  train::Trainer t(cfg, parallel::make_world_communicator(cfg.parallel.timeout_s));
  const torch::Device device = t.device();
  const int64_t micro = cfg.train.micro_batch;
  // This rank's share of the global batch.
  const int64_t n_micro = cfg.train.global_batch / (micro * t.grid().dp_size());
  std::vector<data::Seq2SeqBatch> batches;
  for (int64_t i = 0; i < n_micro; ++i) {
    batches.push_back(random_batch(micro, cfg.data.src_len, cfg.data.tgt_len, o.vocab));
  }
  RunFigures f;
  f.before_mib = on_cuda(device) ? 0 : current_rss_mib();
  f.timings = time_steps(t, batches, o.warmup, o.steps);
  f.cuda_memory = bench::cuda_memory_stats(device);
  // One more step with fresh counters: the communication of exactly one step.
  t.reset_comm_stats();
  t.train_step(batches, o.warmup + o.steps);
  const parallel::CommStats stats = comm_stats_by_op(t);
  const auto totals = world_comm_totals(t);
  derive_figures(t, cfg, o, f);

  if (o.json) {
    if (t.world().rank() == 0) print_json(name, t, cfg, o, n_micro, f, totals);
    return;
  }
  if (o.layout) {
    if (t.world().rank() == 0) print_row(name, t, o, f);
    print_layout(t, cfg.parallel.zero_stage, totals, f.timings.pipeline_compute_s, f.timings.pipeline_total_s, o.steps,
                 n_micro);
    std::fflush(stdout);
    return;
  }
  if (t.world().rank() != 0) return;
  print_row(name, t, o, f);
  print_memory(t);
  if (t.world().size() > 1 || cfg.parallel.zero_stage > 0) print_zero_accounting(t, cfg.parallel.zero_stage, stats);
  std::fflush(stdout);
}

// The command line: BenchOptions and what picks the runs and the matmul measurement.
struct CommandLine {
  std::vector<std::string> preset_names, overrides;
  std::string config_path, run_name, device_arg, kernels_arg, source_dir = MOETRAIN_SOURCE_DIR;
  int64_t threads = 0, matmul_size = 8192, matmul_reps = 10, ring_tile_elements = 0;
  bool measure_matmul = false, matmul_only = false;
  BenchOptions o;
};

// Declares the options, bound to the fields of `c`.
void add_options(po::options_description& options, CommandLine& c) {
  BenchOptions& o = c.o;
  // clang-format off
  options.add_options()
      ("help,h", "show this help")
      ("preset", po::value(&c.preset_names)->composing(), "tiny | base-small (repeatable; default: both)")
      ("config", po::value(&c.config_path), "a YAML config instead of a preset")
      ("name", po::value(&c.run_name), "the run's name in the output (default: the preset or config path)")
      ("set", po::value(&c.overrides)->composing(), "override a config key (repeatable)")
      ("device", po::value(&c.device_arg), "cpu | cuda (train.device; default: the config's)")
      ("kernels", po::value(&c.kernels_arg),
       "fused | reference: the fused CUDA kernels or their ATen references (default: MOETRAIN_KERNELS, else fused)")
      ("steps", po::value(&o.steps), "timed steps (default 10)")
      ("warmup", po::value(&o.warmup), "untimed steps first (default 2)")
      ("vocab", po::value(&o.vocab), "vocabulary size (default 8000)")
      ("threads", po::value(&c.threads), "intra-op threads (default: LibTorch's)")
      ("ring-tile-elements", po::value(&c.ring_tile_elements),
       "context parallelism, ring: fp32 scores per query tile (default 2^24)")
      ("json", po::bool_switch(&o.json), "print one JSON object per run instead of the table")
      ("peak-tflops", po::value(&o.peak_tflops), "the device's bf16 matmul rate in TFLOP/s, the MFU denominator")
      ("measure-matmul", po::bool_switch(&c.measure_matmul),
       "measure the bf16 matmul rate first (median of timed N^3 matmuls) and use it as --peak-tflops")
      ("matmul-only", po::bool_switch(&c.matmul_only), "only measure and print the bf16 matmul rate")
      ("matmul-size", po::value(&c.matmul_size), "N of the N^3 matmul (default 8192)")
      ("matmul-reps", po::value(&c.matmul_reps), "timed matmuls (default 10)")
      ("layout", po::bool_switch(&o.layout),
       "print the parallel layout, every group's bytes per collective summed over all ranks, and the pipeline "
       "stages' idle time, instead of rank 0's ZeRO accounting");
  // clang-format on
}

// Parses and checks the command line into `c` and `vm` and selects the kernel
// backend; false (after printing why) on a bad command line.
bool parse_command_line(int argc, char** argv, const po::options_description& options, CommandLine& c,
                        po::variables_map& vm) {
  try {
    po::store(po::parse_command_line(argc, argv, options), vm);
    po::notify(vm);
    if (c.o.steps < 1 || c.o.warmup < 0) throw po::error("--steps must be >= 1 and --warmup >= 0");
    if (!c.device_arg.empty() && c.device_arg != "cpu" && c.device_arg != "cuda") {
      throw po::error("--device must be cpu or cuda, got '" + c.device_arg + "'");
    }
    if (!c.kernels_arg.empty()) kernels::set_kernel_backend(kernels::parse_kernel_backend(c.kernels_arg));
  } catch (const std::exception& e) {
    std::cerr << "bench_train_step: " << e.what() << std::endl;
    return false;
  }
  return true;
}

// Measures the bf16 matmul rate (the MFU denominator unless --peak-tflops set
// one); the leader prints it.
void measure_matmul(const torch::Device& device, bool leader, CommandLine& c) {
  const double rate = measure_matmul_tflops(device, c.matmul_size, c.matmul_reps);
  if (c.o.peak_tflops <= 0) c.o.peak_tflops = rate;
  if (!leader) return;
  if (c.o.json) {
    nlohmann::ordered_json j{{"impl", "matmul"},      {"device", device_name(device)}, {"dtype", "bf16"},
                             {"size", c.matmul_size}, {"reps", c.matmul_reps},         {"tflops", rate}};
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf("# %s bf16 matmul %lld^3: %.4g TFLOP/s (median of %lld)\n", device_name(device).c_str(),
                static_cast<long long>(c.matmul_size), rate, static_cast<long long>(c.matmul_reps));
  }
  std::fflush(stdout);
}

// Runs --config, or else the presets (default: tiny and base-small); the exit
// code, 2 for an unknown preset.
int run_configs(CommandLine& c) {
  if (!c.config_path.empty()) {
    run_one(c.run_name.empty() ? c.config_path : c.run_name, config::load_config(c.config_path, c.overrides), c.o);
    return 0;
  }
  if (c.preset_names.empty()) c.preset_names = {"tiny", "base-small"};
  for (const auto& wanted : c.preset_names) {
    bool found = false;
    for (const auto& p : presets(c.source_dir)) {
      if (p.name != wanted) continue;
      found = true;
      auto preset_overrides = p.overrides;
      preset_overrides.insert(preset_overrides.end(), c.overrides.begin(), c.overrides.end());
      run_one(c.run_name.empty() ? p.name : c.run_name, config::load_config(p.config, preset_overrides), c.o);
    }
    if (!found) {
      std::cerr << "bench_train_step: unknown preset '" << wanted << "'" << std::endl;
      return 2;
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CommandLine c;
  po::options_description options("bench_train_step options");
  add_options(options, c);
  po::variables_map vm;
  if (!parse_command_line(argc, argv, options, c, vm)) return 2;
  if (vm.count("help")) {
    std::cout << options << std::endl;
    return 0;
  }
  if (c.threads > 0) at::set_num_threads(static_cast<int>(c.threads));
  if (c.ring_tile_elements > 0) parallel::set_ring_tile_elements(c.ring_tile_elements);
  c.o.kernels = kernels::kernel_backend_name(kernels::kernel_backend());
  // --device goes last, over the preset's and the user's settings.
  if (!c.device_arg.empty()) c.overrides.push_back("train.device=" + c.device_arg);
  const bool cuda = c.device_arg == "cuda";
  const torch::Device device = cuda ? torch::Device(torch::kCUDA, 0) : torch::Device(torch::kCPU);
  // Under mpirun only the first rank prints the header (the launcher names the rank).
  const char* launcher_rank = std::getenv("OMPI_COMM_WORLD_RANK");
  const bool leader = launcher_rank == nullptr || std::string(launcher_rank) == "0";
  try {
    if (cuda && !torch::cuda::is_available()) throw std::runtime_error("--device cuda: no CUDA device is available");
    if (c.matmul_only || c.measure_matmul) {
      measure_matmul(device, leader, c);
      if (c.matmul_only) return 0;
    }
    return run_configs(c);
  } catch (const std::exception& e) {
    std::cerr << "bench_train_step: " << e.what() << std::endl;
    return 1;
  }
}

// bench_train_step: times whole optimizer steps (forward, backward, AdamW) of
// a config on random tokens and prints ms/step, tokens/s and peak memory (RSS
// on the CPU, the caching allocator's peak on CUDA). With --peak-tflops or
// --measure-matmul it also prints model FLOPs utilisation (bench/flops.h says
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
#include <sys/resource.h>

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
#include "bench/flops.h"
#include "kernels/dispatch.h"
#include "parallel/mpi_communicator.h"
#include "trainer/config.h"
#include "trainer/trainer.h"

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
       {"model.d_model=128", "model.n_heads=4", "model.d_ff=512", "model.dropout=0.0",
        "precision.compute=fp32", "train.device=cpu", "train.global_batch=8", "train.micro_batch=8",
        "data.src_len=128", "data.tgt_len=32"}},
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

double peak_rss_mib() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / 1024.0;  // ru_maxrss is in KiB on Linux
}

// The communicator groups and operations of Trainer::comm_stats(), in a
// fixed order so ranks can add up their figures element by element.
const char* const kGroups[] = {"world", "dp", "tp", "pp", "ep", "edp", "tied"};
const char* const kOps[] = {"all_reduce", "reduce_scatter", "all_gather", "broadcast", "all_to_all",
                            "send", "recv", "send_recv", "barrier"};

// This rank's calls and bytes per (group, op), summed over the world.
std::vector<double> world_comm_totals(trainer::Trainer& t) {
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
void print_layout(trainer::Trainer& t, int64_t zero_stage, const std::vector<double>& totals, double compute_s,
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
  std::printf("  pipeline stages (ranks of dp 0, tp 0), ideal bubble with p = %lld, m = %lld: "
              "(p-1)/m = %.3f of compute, (p-1)/(m+p-1) = %.3f of the step\n",
              static_cast<long long>(p), static_cast<long long>(micro_batches),
              parallel::ideal_bubble_ratio(p, micro_batches), parallel::ideal_bubble_fraction(p, micro_batches));
  for (int64_t s = 0; s < p; ++s) {
    const int64_t r = g.rank_of(0, s, 0);
    const double c = all[2 * r].item<double>(), w = all[2 * r + 1].item<double>();
    const double idle = std::max(0.0, w - c);
    std::printf("    stage %lld: idle %.3f of the step, %.3f of its compute (compute %.1f ms, pipeline %.1f ms per step)\n",
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
int64_t model_parameters(trainer::Trainer& t) {
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

void run_one(const std::string& name, trainer::Config cfg, const BenchOptions& o) {
  const int64_t vocab = o.vocab, steps = o.steps, warmup = o.warmup;
  const bool layout = o.layout;
  cfg.model.vocab_size = vocab;
  trainer::Trainer t(cfg, parallel::make_world_communicator(cfg.parallel.timeout_s));
  const torch::Device device = t.device();
  const int64_t micro = cfg.train.micro_batch;
  // This rank's share of the global batch.
  const int64_t n_micro = cfg.train.global_batch / (micro * t.grid().dp_size());
  std::vector<data::Seq2SeqBatch> batches;
  for (int64_t i = 0; i < n_micro; ++i) {
    batches.push_back(random_batch(micro, cfg.data.src_len, cfg.data.tgt_len, vocab));
  }
  std::vector<double> ms;
  int64_t tokens = 0;
  double pipeline_compute_s = 0, pipeline_total_s = 0;
  for (int64_t s = 0; s < warmup + steps; ++s) {
    if (s == warmup) bench::reset_cuda_peak(device);
    bench::synchronize(device);
    const auto t0 = std::chrono::steady_clock::now();
    const auto r = t.train_step(batches, s);
    bench::synchronize(device);
    const double elapsed = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    if (s >= warmup) {
      ms.push_back(elapsed);
      pipeline_compute_s += t.pipeline_stats().compute_s();
      pipeline_total_s += t.pipeline_stats().total_s;
    }
    tokens = r.tokens;
  }
  const bench::CudaMemory cuda_memory = bench::cuda_memory_stats(device);
  // One more step with fresh counters: the communication of exactly one step.
  t.reset_comm_stats();
  t.train_step(batches, warmup + steps);
  // Rank 0's figures, every group together (the ZeRO accounting).
  parallel::CommStats stats;
  for (const auto& [key, op] : t.comm_stats()) {
    auto& s = stats[key.substr(key.find(' ') + 1)];
    s.calls += op.calls;
    s.bytes += op.bytes;
    s.seconds += op.seconds;
  }
  const auto totals = world_comm_totals(t);

  std::sort(ms.begin(), ms.end());
  const double median = ms[ms.size() / 2];
  const double tokens_per_s = static_cast<double>(tokens) / (median / 1000.0);
  // Model FLOPs of the global batch, against the peak of every rank's device.
  const bench::ParameterCounts counts = bench::count_parameters(cfg.model);
  const double flops = bench::train_step_flops(cfg.model, cfg.train.global_batch, cfg.data.src_len, cfg.data.tgt_len);
  const double achieved_tflops = flops / (median / 1000.0) / 1e12;
  const double mfu = o.peak_tflops > 0 ? achieved_tflops / (o.peak_tflops * static_cast<double>(t.world().size())) : 0;
  if (t.world().size() == 1 && cfg.finetune.mode != trainer::FinetuneMode::Lora &&
      model_parameters(t) != counts.total) {
    std::cerr << "bench_train_step: warning: the model has " << model_parameters(t)
              << " parameters, bench/flops.cpp counts " << counts.total << "; FLOPs and MFU are off" << std::endl;
  }
  const double peak_mib = on_cuda(device) ? static_cast<double>(cuda_memory.allocated_peak) / (1024.0 * 1024.0) : peak_rss_mib();
  if (o.json) {
    if (t.world().rank() != 0) return;
    nlohmann::ordered_json j{
        {"impl", "moetrain"},
        {"preset", name},
        {"device", device_name(device)},
        {"kernels", o.kernels},
        {"cuda_kernels_compiled", kernels::cuda_kernels_compiled()},
        {"dtype", trainer::to_string(cfg.precision.compute)},
        {"activation_checkpointing", cfg.model.activation_checkpointing},
        {"world_size", t.world().size()},
        {"micro_batch", micro},
        {"micro_batches", n_micro},
        {"src_len", cfg.data.src_len},
        {"tgt_len", cfg.data.tgt_len},
        {"vocab", vocab},
        {"steps", steps},
        {"warmup", warmup},
        {"tokens_per_step", tokens},
        {"ms_per_step", median},
        {"ms_min", ms.front()},
        {"ms_max", ms.back()},
        {"tokens_per_s", tokens_per_s},
        {"peak_mem_bytes", on_cuda(device) ? cuda_memory.allocated_peak : static_cast<int64_t>(peak_rss_mib() * 1024 * 1024)},
        {"peak_mem_kind", on_cuda(device) ? "cuda_allocated" : "rss"},
        {"peak_reserved_bytes", cuda_memory.reserved_peak},
        {"params", counts.total},
        {"active_params", counts.active},
        {"flops_per_step", flops},
        {"achieved_tflops", achieved_tflops},
        {"peak_tflops", o.peak_tflops},
        {"mfu", mfu},
    };
    std::printf("%s\n", j.dump().c_str());
    std::fflush(stdout);
    return;
  }
  // The table's row; on CUDA, and whenever a peak is known, with model
  // TFLOP/s and MFU after the memory column.
  auto print_row = [&]() {
    print_header(device, o);
    std::printf("%-12s %12lld %8lld %10.1f %12.0f %10.0f", name.c_str(),
                static_cast<long long>(t.params().numel()), static_cast<long long>(tokens), median, tokens_per_s,
                peak_mib);
    if (on_cuda(device) || o.peak_tflops > 0) {
      std::printf(" %8.3g", achieved_tflops);
      if (o.peak_tflops > 0) std::printf(" %6.1f%%", 100.0 * mfu);
    }
    std::printf("\n");
  };
  if (layout) {
    if (t.world().rank() == 0) print_row();
    print_layout(t, cfg.parallel.zero_stage, totals, pipeline_compute_s, pipeline_total_s, steps, n_micro);
    std::fflush(stdout);
    return;
  }
  if (t.world().rank() != 0) return;
  print_row();
  {
    // Where a rank's parameter memory goes: trainable weights and their
    // optimizer, and frozen weights (LoRA's base, finetune.freeze), which
    // carry no master copy, moments or gradient buffer.
    const auto mem = t.optimizer_memory();
    auto mib = [](int64_t bytes) { return static_cast<double>(bytes) / (1024.0 * 1024.0); };
    std::printf("  memory, rank 0: trainable weights %.2f MiB, fp32 master %.2f MiB, Adam moments %.2f MiB, "
                "gradient buffers %.2f MiB, frozen weights %.2f MiB\n",
                mib(mem.param_bytes), mib(mem.master_bytes), mib(mem.moment_bytes), mib(mem.grad_bytes),
                mib(mem.frozen_bytes));
  }
  if (t.world().size() > 1 || cfg.parallel.zero_stage > 0) {
    // The ZeRO paper's per-rank traffic per step: 2 psi for stages 0-2, 3 psi
    // for stage 3 (psi: parameter bytes in the fp32 reduction dtype), and
    // 12 bytes per parameter / N of optimizer state (fp32 master, m, v) for
    // stages >= 1.
    const int64_t n = t.world().size();
    const double psi = static_cast<double>(t.params().numel()) * 4.0;
    const double expected = (cfg.parallel.zero_stage == 3 ? 3.0 : 2.0) * psi;
    int64_t total = 0;
    std::printf("  communication per step, rank 0 (world %lld, ZeRO %lld):\n", static_cast<long long>(n),
                static_cast<long long>(cfg.parallel.zero_stage));
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
    std::printf("    optimizer state per rank %.0f bytes (12 bytes x params / N = %.0f, ratio %.4f); "
                "fp32 gradient buffers %lld bytes\n",
                state, zero_state, state / zero_state, static_cast<long long>(mem.grad_bytes));
    // ZeRO 3 keeps no model copy between steps (only the master shard).
    std::printf("    model weights resident between steps %lld bytes (%.4f x params x 4 bytes)\n",
                static_cast<long long>(mem.param_bytes),
                static_cast<double>(mem.param_bytes) / psi);
  }
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> preset_names, overrides;
  std::string config_path, run_name, device_arg, kernels_arg, source_dir = MOETRAIN_SOURCE_DIR;
  int64_t threads = 0, matmul_size = 8192, matmul_reps = 10;
  bool measure_matmul = false, matmul_only = false;
  BenchOptions o;
  po::options_description options("bench_train_step options");
  options.add_options()("help,h", "show this help")(
      "preset", po::value(&preset_names)->composing(), "tiny | base-small (repeatable; default: both)")(
      "config", po::value(&config_path), "a YAML config instead of a preset")(
      "name", po::value(&run_name), "the run's name in the output (default: the preset or config path)")(
      "set", po::value(&overrides)->composing(), "override a config key (repeatable)")(
      "device", po::value(&device_arg), "cpu | cuda (train.device; default: the config's)")(
      "kernels", po::value(&kernels_arg),
      "fused | reference: the fused CUDA kernels or their ATen references (default: MOETRAIN_KERNELS, else fused)")(
      "steps", po::value(&o.steps), "timed steps (default 10)")("warmup", po::value(&o.warmup), "untimed steps first (default 2)")(
      "vocab", po::value(&o.vocab), "vocabulary size (default 8000)")(
      "threads", po::value(&threads), "intra-op threads (default: LibTorch's)")(
      "json", po::bool_switch(&o.json), "print one JSON object per run instead of the table")(
      "peak-tflops", po::value(&o.peak_tflops), "the device's bf16 matmul rate in TFLOP/s, the MFU denominator")(
      "measure-matmul", po::bool_switch(&measure_matmul),
      "measure the bf16 matmul rate first (median of timed N^3 matmuls) and use it as --peak-tflops")(
      "matmul-only", po::bool_switch(&matmul_only), "only measure and print the bf16 matmul rate")(
      "matmul-size", po::value(&matmul_size), "N of the N^3 matmul (default 8192)")(
      "matmul-reps", po::value(&matmul_reps), "timed matmuls (default 10)")(
      "layout", po::bool_switch(&o.layout),
      "print the parallel layout, every group's bytes per collective summed over all ranks, and the pipeline "
      "stages' idle time, instead of rank 0's ZeRO accounting");
  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc, argv, options), vm);
    po::notify(vm);
    if (o.steps < 1 || o.warmup < 0) throw po::error("--steps must be >= 1 and --warmup >= 0");
    if (!device_arg.empty() && device_arg != "cpu" && device_arg != "cuda") {
      throw po::error("--device must be cpu or cuda, got '" + device_arg + "'");
    }
    if (!kernels_arg.empty()) kernels::set_kernel_backend(kernels::parse_kernel_backend(kernels_arg));
  } catch (const std::exception& e) {
    std::cerr << "bench_train_step: " << e.what() << std::endl;
    return 2;
  }
  if (vm.count("help")) {
    std::cout << options << std::endl;
    return 0;
  }
  if (threads > 0) at::set_num_threads(static_cast<int>(threads));
  o.kernels = kernels::kernel_backend_name(kernels::kernel_backend());
  // --device goes last, over the preset's and the user's settings.
  if (!device_arg.empty()) overrides.push_back("train.device=" + device_arg);
  const bool cuda = device_arg == "cuda";
  const torch::Device device = cuda ? torch::Device(torch::kCUDA, 0) : torch::Device(torch::kCPU);
  // Under mpirun only the first rank prints the header (the launcher names the rank).
  const char* launcher_rank = std::getenv("OMPI_COMM_WORLD_RANK");
  const bool leader = launcher_rank == nullptr || std::string(launcher_rank) == "0";
  try {
    if (cuda && !torch::cuda::is_available()) throw std::runtime_error("--device cuda: no CUDA device is available");
    if (matmul_only || measure_matmul) {
      const double rate = measure_matmul_tflops(device, matmul_size, matmul_reps);
      if (o.peak_tflops <= 0) o.peak_tflops = rate;
      if (leader) {
        if (o.json) {
          nlohmann::ordered_json j{{"impl", "matmul"}, {"device", device_name(device)}, {"dtype", "bf16"},
                                   {"size", matmul_size}, {"reps", matmul_reps}, {"tflops", rate}};
          std::printf("%s\n", j.dump().c_str());
        } else {
          std::printf("# %s bf16 matmul %lld^3: %.4g TFLOP/s (median of %lld)\n", device_name(device).c_str(),
                      static_cast<long long>(matmul_size), rate, static_cast<long long>(matmul_reps));
        }
        std::fflush(stdout);
      }
      if (matmul_only) return 0;
    }
    if (!config_path.empty()) {
      run_one(run_name.empty() ? config_path : run_name, trainer::load_config(config_path, overrides), o);
      return 0;
    }
    if (preset_names.empty()) preset_names = {"tiny", "base-small"};
    for (const auto& wanted : preset_names) {
      bool found = false;
      for (const auto& p : presets(source_dir)) {
        if (p.name != wanted) continue;
        found = true;
        auto preset_overrides = p.overrides;
        preset_overrides.insert(preset_overrides.end(), overrides.begin(), overrides.end());
        run_one(run_name.empty() ? p.name : run_name, trainer::load_config(p.config, preset_overrides), o);
      }
      if (!found) {
        std::cerr << "bench_train_step: unknown preset '" << wanted << "'" << std::endl;
        return 2;
      }
    }
  } catch (const std::exception& e) {
    std::cerr << "bench_train_step: " << e.what() << std::endl;
    return 1;
  }
  return 0;
}

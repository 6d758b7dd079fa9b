// bench_generate: how fast eval::generate decodes, on a randomly initialised
// model of a config, at a fixed output length (EOS is disabled, so every row
// generates exactly --length tokens and runs do the same work every time).
//
//   bench_generate [--config F] [--set k=v]... [--vocab N] [--batch B] [--src-len S]
//                  [--length L] [--beam-size K] [--device cpu|cuda] [--dtype fp32|bf16|fp16]
//                  [--repeats R] [--threads T]
//
// Rows: greedy and beam search as moetrain runs them (the decoder's
// key/value cache, every source of the batch in one decoder call per step),
// and greedy by the whole-prefix decoder (each step re-runs the decoder over
// the whole prefix: generation without the cache), which must choose the same
// tokens. Each row prints the median wall time of R runs, output tokens per
// second (batch x length / time) and, on CUDA, the allocator's peak.
#include <torch/torch.h>
#include <boost/program_options.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <iostream>
#include <string>
#include <vector>

#include "bench/device_stats.h"
#include "config/config.h"
#include "config/load.h"
#include "eval/generate.h"
#include "models/seq2seq_transformer.h"

namespace po = boost::program_options;
using namespace moetrain;

namespace {

struct Options {
  int64_t vocab = 8000, batch = 16, src_len = 64, length = 32, beam_size = 4, repeats = 3;
  std::string device = "cpu", dtype = "fp32";
};

// Greedy decoding without the cache: each step runs the decoder over the whole
// prefix and takes the last position's argmax. [B, length] tokens.
torch::Tensor greedy_whole_prefix(models::Seq2SeqTransformerImpl& model, const torch::Tensor& src,
                                  const torch::Tensor& mask, int64_t length, int64_t bos) {
  torch::NoGradGuard no_grad;
  const auto encoded = model.encode(src, mask).hidden;
  auto prefix = torch::full({src.size(0), 1}, bos, src.options());
  for (int64_t t = 0; t < length; ++t) {
    const auto logits = model.decode(prefix, torch::ones_like(prefix, torch::kBool), encoded, mask).logits;
    prefix = torch::cat({prefix, logits.select(1, -1).argmax(-1, /*keepdim=*/true)}, 1);
  }
  return prefix.narrow(1, 1, length).cpu();
}

// Median wall time of `repeats` runs of fn (after one untimed run).
double median_seconds(const torch::Device& device, int64_t repeats, const std::function<void()>& fn) {
  fn();
  std::vector<double> times;
  for (int64_t r = 0; r < repeats; ++r) {
    bench::synchronize(device);
    const auto start = std::chrono::steady_clock::now();
    fn();
    bench::synchronize(device);
    times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

void print_row(const std::string& method, const Options& o, double seconds, const torch::Device& device) {
  const double tokens = static_cast<double>(o.batch * o.length);
  std::printf("%-22s %6lld %7lld %10.3f %12.1f", method.c_str(), static_cast<long long>(o.batch),
              static_cast<long long>(o.length), seconds, tokens / seconds);
  if (device.is_cuda())
    std::printf(" %10.1f", static_cast<double>(bench::cuda_memory_stats(device).allocated_peak) / (1 << 20));
  std::printf("\n");
  std::fflush(stdout);
}

// The config's model with o.vocab, no dropout and dropless MoE (as
// generate runs), random weights from seed 0, on `device` in o.dtype.
models::Seq2SeqTransformer build_model(const Options& o, const std::string& config_path,
                                       const std::vector<std::string>& overrides, const torch::Device& device) {
  auto cfg = config::load_config(config_path, overrides).model;
  cfg.vocab_size = o.vocab;
  cfg.dropout = 0;
  cfg.moe.capacity_factor = 0;
  if (o.src_len > cfg.max_positions || o.length + 1 > cfg.max_positions) {
    throw std::runtime_error("--src-len and --length + 1 must be at most model.max_positions (" +
                             std::to_string(cfg.max_positions) + ")");
  }
  torch::manual_seed(0);
  models::Seq2SeqTransformer model(cfg);
  model->eval();
  model->place(device, config::to_scalar_type(config::parse_compute_dtype(o.dtype)));
  return model;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  std::string config_path = std::string(MOETRAIN_SOURCE_DIR) + "/configs/tiny.yaml";
  std::vector<std::string> overrides;
  int64_t threads = 0;
  po::options_description options("bench_generate options");
  // clang-format off
  options.add_options()
      ("help,h", "show this help")
      ("config", po::value(&config_path), "the model's YAML config (default configs/tiny.yaml)")
      ("set", po::value(&overrides)->composing(), "override a config key (repeatable)")
      ("vocab", po::value(&o.vocab), "vocabulary size (default 8000)")
      ("batch", po::value(&o.batch), "sources per batch (default 16)")
      ("src-len", po::value(&o.src_len), "source tokens (default 64)")
      ("length", po::value(&o.length), "tokens generated per output (default 32)")
      ("beam-size", po::value(&o.beam_size), "beams of the beam-search row (default 4)")
      ("device", po::value(&o.device), "cpu | cuda (default cpu)")
      ("dtype", po::value(&o.dtype), "fp32 | bf16 | fp16: the parameters' dtype (default fp32)")
      ("repeats", po::value(&o.repeats), "timed runs per row, the median printed (default 3)")
      ("threads", po::value(&threads), "intra-op threads (default: LibTorch's)");
  // clang-format on
  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc, argv, options), vm);
    po::notify(vm);
    if (o.vocab < 8 || o.batch < 1 || o.src_len < 1 || o.length < 1 || o.beam_size < 1 || o.repeats < 1) {
      throw po::error("--vocab must be >= 8 and --batch, --src-len, --length, --beam-size, --repeats >= 1");
    }
    if (o.device != "cpu" && o.device != "cuda")
      throw po::error("--device must be cpu or cuda, got '" + o.device + "'");
    try {
      config::parse_compute_dtype(o.dtype);
    } catch (const std::invalid_argument&) {
      throw po::error("--dtype must be fp32, bf16 or fp16, got '" + o.dtype + "'");
    }
  } catch (const std::exception& e) {
    std::cerr << "bench_generate: " << e.what() << std::endl;
    return 2;
  }
  if (vm.count("help")) {
    std::cout << options << std::endl;
    return 0;
  }
  try {
    if (threads > 0) at::set_num_threads(static_cast<int>(threads));
    if (o.device == "cuda" && !torch::cuda::is_available()) {
      throw std::runtime_error("--device cuda: no CUDA device is available");
    }
    const torch::Device device = o.device == "cuda" ? torch::Device(torch::kCUDA, 0) : torch::Device(torch::kCPU);
    models::Seq2SeqTransformer model = build_model(o, config_path, overrides, device);
    int64_t params = 0;
    for (const auto& p : model->parameters()) params += p.numel();
    const auto src = torch::randint(4, o.vocab, {o.batch, o.src_len}, torch::kInt64);
    const auto mask = torch::ones({o.batch, o.src_len}, torch::kBool);

    eval::GenerateOptions g;
    g.max_length = o.length;
    g.eos = -1;  // never ends early: every row generates `length` tokens
    std::printf("# %s, %lld parameters, %s on %s, source %lld tokens\n", config_path.c_str(),
                static_cast<long long>(params), o.dtype.c_str(), o.device.c_str(), static_cast<long long>(o.src_len));
    std::printf("%-22s %6s %7s %10s %12s%s\n", "method", "batch", "length", "seconds", "tokens/s",
                device.is_cuda() ? "   peak MiB" : "");

    std::vector<eval::Generated> cached;
    bench::reset_cuda_peak(device);
    print_row("greedy (cache)", o,
              median_seconds(device, o.repeats, [&] { cached = eval::generate(*model, src, mask, g); }), device);
    torch::Tensor whole;
    bench::reset_cuda_peak(device);
    print_row(
        "greedy (whole prefix)", o,
        median_seconds(
            device, o.repeats,
            [&] { whole = greedy_whole_prefix(*model, src.to(device), mask.to(device), o.length, g.decoder_start); }),
        device);
    int64_t agree = 0;
    for (int64_t b = 0; b < o.batch; ++b) {
      const auto row = whole[b];
      agree += std::vector<int64_t>(row.data_ptr<int64_t>(), row.data_ptr<int64_t>() + row.numel()) ==
               cached[static_cast<size_t>(b)].tokens;
    }
    g.method = eval::DecodeMethod::Beam;
    g.beam_size = o.beam_size;
    bench::reset_cuda_peak(device);
    print_row("beam " + std::to_string(o.beam_size) + " (cache)", o,
              median_seconds(device, o.repeats, [&] { eval::generate(*model, src, mask, g); }), device);
    std::printf("# greedy outputs of the cache and the whole-prefix decoder agree in %lld of %lld rows\n",
                static_cast<long long>(agree), static_cast<long long>(o.batch));
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "bench_generate: " << e.what() << std::endl;
    return 1;
  }
}

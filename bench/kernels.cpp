// bench_kernels: times each fused op of kernels/ against its ATen reference
// on the same random inputs at realistic sizes, forward and forward+backward,
// and prints ms (median after warm-up), the speed-up, the effective memory
// bandwidth (the bytes an ideal kernel reads and writes, over its time) and
// the peak memory each version allocates.
//
//   bench_kernels [--device cuda|cpu] [--small] [--iters N] [--warmup N] [--only NAME]
//
// On the GPU this is what docs/performance.md's kernel table comes from. On a
// CPU both columns run the ATen reference (the fused kernels are CUDA-only),
// so `--device cpu --small` only checks that the program runs.
#include <boost/program_options.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <iostream>
#include <string>
#include <vector>

#include "bench/device_stats.h"
#include "kernels/adamw.h"
#include "kernels/cross_entropy.h"
#include "kernels/dispatch.h"
#include "kernels/layer_norm.h"
#include "kernels/moe_permute.h"

namespace po = boost::program_options;
using namespace moetrain;

namespace {

struct Options {
  torch::Device device{torch::kCPU};
  int64_t iters = 20, warmup = 5;
  bool small = false;
  std::string only;
};

struct Timing {
  double ms = 0;
  int64_t peak = 0;
};

// Median ms of `fn` over opt.iters runs after opt.warmup, with the backend set.
Timing time_op(const Options& opt, kernels::KernelBackend backend, const std::function<void()>& fn) {
  kernels::set_kernel_backend(backend);
  for (int64_t i = 0; i < opt.warmup; ++i) fn();
  bench::synchronize(opt.device);
  const int64_t baseline = bench::cuda_memory_stats(opt.device).allocated_now;
  bench::reset_cuda_peak(opt.device);
  std::vector<double> ms;
  for (int64_t i = 0; i < opt.iters; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    bench::synchronize(opt.device);
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  Timing t;
  t.ms = ms[ms.size() / 2];
  t.peak = bench::cuda_memory_stats(opt.device).allocated_peak - baseline;
  kernels::set_kernel_backend(kernels::KernelBackend::Fused);
  return t;
}

void print_header() {
  std::printf("%-44s %10s %10s %8s %12s %12s %12s\n", "op (shape)", "fused ms", "ATen ms", "speed-up", "fused GB/s",
              "fused MiB", "ATen MiB");
}

void report(const Options& opt, const std::string& name, double bytes, const std::function<void()>& fn) {
  if (!opt.only.empty() && name.find(opt.only) == std::string::npos) return;
  const Timing fused = time_op(opt, kernels::KernelBackend::Fused, fn);
  const Timing ref = time_op(opt, kernels::KernelBackend::Reference, fn);
  const double mib = 1024.0 * 1024.0;
  std::printf("%-44s %10.3f %10.3f %7.2fx %12.1f %12.1f %12.1f\n", name.c_str(), fused.ms, ref.ms, ref.ms / fused.ms,
              bytes / (fused.ms * 1e-3) / 1e9, static_cast<double>(fused.peak) / mib,
              static_cast<double>(ref.peak) / mib);
  std::fflush(stdout);
}

const char* dtype_name(torch::ScalarType t) {
  return t == torch::kBFloat16 ? "bf16" : t == torch::kHalf ? "fp16" : "fp32";
}

void bench_layer_norm(const Options& opt, int64_t rows, int64_t dim, torch::ScalarType dt) {
  torch::manual_seed(1);
  const auto o = torch::TensorOptions().device(opt.device).dtype(dt);
  const auto x0 = torch::randn({rows, dim}, o);
  const auto w = (1.0 + 0.1 * torch::randn({dim}, o)).requires_grad_();
  const auto b = (0.1 * torch::randn({dim}, o)).requires_grad_();
  const auto dy = torch::randn({rows, dim}, o);
  const double elt = static_cast<double>(x0.element_size());
  const std::string shape = "[" + std::to_string(rows) + "x" + std::to_string(dim) + "] " + dtype_name(dt);
  report(opt, "layernorm+gelu fwd " + shape, 2.0 * rows * dim * elt, [&] {
    torch::NoGradGuard ng;
    kernels::layer_norm_activation(x0, w, b, 1e-5, kernels::NormActivation::GELU);
  });
  report(opt, "layernorm+gelu fwd+bwd " + shape, 5.0 * rows * dim * elt, [&] {
    auto x = x0.detach().requires_grad_();
    kernels::layer_norm_activation(x, w, b, 1e-5, kernels::NormActivation::GELU).backward(dy);
  });
}

void bench_cross_entropy(const Options& opt, int64_t rows, int64_t vocab, torch::ScalarType dt) {
  torch::manual_seed(2);
  const auto o = torch::TensorOptions().device(opt.device);
  const auto logits0 = (3.0 * torch::randn({rows, vocab}, o.dtype(dt)));
  const auto targets = torch::randint(0, vocab, {rows}, o.dtype(torch::kLong));
  const auto mask = torch::rand({rows}, o.dtype(torch::kFloat)) > 0.05;
  const double elt = static_cast<double>(logits0.element_size());
  const std::string shape = "[" + std::to_string(rows) + "x" + std::to_string(vocab) + "] " + dtype_name(dt);
  report(opt, "cross-entropy ls=0.1 fwd " + shape, 1.0 * rows * vocab * elt, [&] {
    torch::NoGradGuard ng;
    kernels::softmax_cross_entropy(logits0, targets, mask, 0.1);
  });
  report(opt, "cross-entropy ls=0.1 fwd+bwd " + shape, 3.0 * rows * vocab * elt, [&] {
    auto logits = logits0.detach().requires_grad_();
    kernels::softmax_cross_entropy(logits, targets, mask, 0.1).loss_sum.backward();
  });
}

void bench_permute(const Options& opt, int64_t tokens, int64_t top_k, int64_t experts, int64_t dim,
                   torch::ScalarType dt) {
  torch::manual_seed(3);
  const auto o = torch::TensorOptions().device(opt.device);
  const auto x0 = torch::randn({tokens, dim}, o.dtype(dt));
  // Routing as the router makes it: top-k distinct experts per token, rows
  // sorted by expert (stable), a gate per row.
  const auto scores = torch::rand({tokens, experts}, o.dtype(torch::kFloat));
  const auto expert = std::get<1>(scores.topk(top_k, -1)).reshape({-1});
  const auto order = std::get<1>(expert.sort(/*stable=*/true, 0, false));
  const auto token_index = torch::arange(tokens, o.dtype(torch::kLong)).repeat_interleave(top_k).index_select(0, order);
  const auto gates0 = torch::rand({tokens * top_k}, o.dtype(torch::kFloat));
  const int64_t m = token_index.size(0);
  const auto out0 = torch::randn({m, dim}, o.dtype(dt));
  const auto dy = torch::randn({m, dim}, o.dtype(dt));
  const auto dz = torch::randn({tokens, dim}, o.dtype(dt));
  const double elt = static_cast<double>(x0.element_size());
  const std::string shape = "[" + std::to_string(tokens) + "x" + std::to_string(dim) + "] top-" +
                            std::to_string(top_k) + "/" + std::to_string(experts) + " " + dtype_name(dt);
  report(opt, "moe permute fwd+bwd " + shape, (2.0 * m * dim + (m + tokens) * dim) * elt, [&] {
    auto x = x0.detach().requires_grad_();
    kernels::permute_rows(x, token_index).backward(dy);
  });
  report(opt, "moe unpermute fwd+bwd " + shape, ((m + tokens) * dim + (tokens + 2.0 * m) * dim) * elt, [&] {
    auto out = out0.detach().requires_grad_();
    auto gates = gates0.detach().requires_grad_();
    kernels::unpermute_rows(out, gates, token_index, tokens).backward(dz);
  });
}

void bench_adamw(const Options& opt, const std::vector<int64_t>& sizes) {
  torch::manual_seed(4);
  const auto o = torch::TensorOptions().device(opt.device).dtype(torch::kFloat);
  int64_t total = 0;
  for (int64_t s : sizes) total += s;
  const auto p = torch::randn({total}, o), g = torch::randn({total}, o) * 1e-2;
  const auto m = torch::randn({total}, o) * 1e-3, v = torch::rand({total}, o) * 1e-4;
  std::vector<kernels::AdamWTensors> groups;
  int64_t at = 0;
  for (size_t i = 0; i < sizes.size(); ++i) {
    // As a model's layout alternates: matrices decay, norms and biases do not.
    groups.push_back({p.narrow(0, at, sizes[i]), g.narrow(0, at, sizes[i]), m.narrow(0, at, sizes[i]),
                      v.narrow(0, at, sizes[i]), i % 2 == 0});
    at += sizes[i];
  }
  kernels::AdamWHyperparameters h{1e-4, 0.9, 0.95, 1e-8, 0.1, 10};
  const std::string shape = std::to_string(sizes.size()) + " tensors, " + std::to_string(total / 1000000) + "M params";
  report(opt, "adamw " + shape, 7.0 * 4.0 * static_cast<double>(total), [&] { kernels::adamw_update(groups, h); });
}

// A model's parameter list: per layer an [d, d] x4 attention, [4d, d] and
// [d, 4d] FFN matrices and their d / 4d biases and norms.
std::vector<int64_t> layer_sizes(int64_t layers, int64_t d) {
  std::vector<int64_t> sizes;
  for (int64_t l = 0; l < layers; ++l) {
    for (int64_t k = 0; k < 4; ++k) sizes.insert(sizes.end(), {d * d, d});
    sizes.insert(sizes.end(), {4 * d * d, 4 * d, 4 * d * d, d, d, d});
  }
  return sizes;
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  std::string device = torch::cuda::is_available() ? "cuda" : "cpu";
  po::options_description options("bench_kernels options");
  // clang-format off
  options.add_options()("help,h", "show this help")("device", po::value(&device), "cuda | cpu (default: cuda if present)")(
      "small", po::bool_switch(&opt.small), "small sizes (a quick check that everything runs)")(
      "iters", po::value(&opt.iters), "timed runs per op (default 20)")("warmup", po::value(&opt.warmup),
                                                                         "untimed runs first (default 5)")(
      "only", po::value(&opt.only), "only ops whose name contains this");
  // clang-format on
  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc, argv, options), vm);
    po::notify(vm);
    if (vm.count("help")) {
      std::cout << options << std::endl;
      return 0;
    }
    if (device != "cuda" && device != "cpu") throw std::invalid_argument("--device must be cuda or cpu");
    if (device == "cuda" && !torch::cuda::is_available()) {
      throw std::invalid_argument("--device cuda: no CUDA device is available");
    }
    if (opt.iters < 1 || opt.warmup < 0) throw std::invalid_argument("--iters must be >= 1 and --warmup >= 0");
    opt.device = torch::Device(device == "cuda" ? torch::kCUDA : torch::kCPU);
  } catch (const std::exception& e) {
    std::cerr << "bench_kernels: " << e.what() << std::endl;
    return 2;
  }
  std::printf("# %s; fused kernels %s; median of %lld runs after %lld warm-up\n",
              opt.device.is_cuda() ? "CUDA" : "CPU (both columns are the ATen reference)",
              kernels::cuda_kernels_compiled() ? "compiled" : "not compiled", static_cast<long long>(opt.iters),
              static_cast<long long>(opt.warmup));
  print_header();
  try {
    const auto bf16 = torch::kBFloat16;
    if (opt.small) {
      bench_layer_norm(opt, 256, 128, torch::kFloat);
      bench_cross_entropy(opt, 64, 1000, torch::kFloat);
      bench_permute(opt, 256, 2, 8, 128, torch::kFloat);
      bench_adamw(opt, layer_sizes(2, 64));
      return 0;
    }
    bench_layer_norm(opt, 16384, 1024, bf16);
    bench_layer_norm(opt, 16384, 4096, bf16);
    bench_cross_entropy(opt, 8192, 32000, bf16);
    bench_cross_entropy(opt, 4096, 256206, bf16);
    bench_permute(opt, 16384, 2, 8, 1024, bf16);
    bench_permute(opt, 16384, 2, 128, 2048, bf16);
    bench_adamw(opt, layer_sizes(24, 1024));
  } catch (const std::exception& e) {
    std::cerr << "bench_kernels: " << e.what() << std::endl;
    return 1;
  }
  return 0;
}

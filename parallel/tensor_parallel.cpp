#include "parallel/tensor_parallel.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/detail/CUDAHooksInterface.h>
#include <torch/cuda.h>

#include <cstdint>
#include <limits>
#include <mutex>
#include <stdexcept>
#include <string>

namespace moetrain::parallel {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

bool is_parallel(const Communicator* group) { return group != nullptr && group->size() > 1; }

std::string shape_of(const torch::Tensor& t) {
  std::string s = "[";
  for (int64_t i = 0; i < t.dim(); ++i) s += (i ? ", " : "") + std::to_string(t.size(i));
  return s + "]";
}

// Autograd contexts hold IValues; the group travels as its address (the
// header requires it to outlive backward).
void store_group(AutogradContext* ctx, Communicator* group) {
  ctx->saved_data["group"] = static_cast<int64_t>(reinterpret_cast<intptr_t>(group));
}

Communicator* load_group(AutogradContext* ctx) {
  return reinterpret_cast<Communicator*>(static_cast<intptr_t>(ctx->saved_data["group"].toInt()));
}

// A contiguous copy summed over the group (the input, possibly shared with
// other parts of the graph, is never reduced in place).
torch::Tensor all_reduce_copy(const torch::Tensor& x, Communicator* group) {
  torch::Tensor out = x.clone(at::MemoryFormat::Contiguous);
  group->all_reduce(out, ReduceOp::Sum);
  return out;
}

// [..., c] on every rank -> [..., size * c], rank r's values at [r*c, (r+1)*c).
torch::Tensor all_gather_last_dim(const torch::Tensor& x, Communicator* group) {
  const torch::Tensor input = x.contiguous();
  std::vector<int64_t> stacked_shape{group->size()};
  for (int64_t d : input.sizes()) stacked_shape.push_back(d);
  torch::Tensor stacked = torch::empty(stacked_shape, input.options());
  group->all_gather(input, stacked);
  std::vector<int64_t> shape = input.sizes().vec();
  shape.back() *= group->size();
  // [size, ..., c] -> [..., size, c] -> [..., size * c]
  return stacked.movedim(0, -2).reshape(shape);
}

// This rank's chunk of the last dim, as a contiguous copy.
torch::Tensor own_chunk_last_dim(const torch::Tensor& x, Communicator* group) {
  const int64_t chunk = x.size(-1) / group->size();
  return x.narrow(-1, group->rank() * chunk, chunk).clone(at::MemoryFormat::Contiguous);
}

struct CopyToRegion : torch::autograd::Function<CopyToRegion> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, Communicator* group) {
    store_group(ctx, group);
    return x;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return {all_reduce_copy(grads[0], load_group(ctx)), torch::Tensor()};
  }
};

struct ReduceFromRegion : torch::autograd::Function<ReduceFromRegion> {
  static torch::Tensor forward(AutogradContext* /*ctx*/, const torch::Tensor& x, Communicator* group) {
    return all_reduce_copy(x, group);
  }
  static variable_list backward(AutogradContext* /*ctx*/, variable_list grads) { return {grads[0], torch::Tensor()}; }
};

struct ScatterToRegion : torch::autograd::Function<ScatterToRegion> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, Communicator* group) {
    store_group(ctx, group);
    return own_chunk_last_dim(x, group);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return {all_gather_last_dim(grads[0], load_group(ctx)), torch::Tensor()};
  }
};

struct GatherFromRegion : torch::autograd::Function<GatherFromRegion> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, Communicator* group) {
    store_group(ctx, group);
    return all_gather_last_dim(x, group);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return {own_chunk_last_dim(grads[0], load_group(ctx)), torch::Tensor()};
  }
};

void check_has_last_dim(const char* fn, const torch::Tensor& x) {
  if (!x.defined() || x.dim() < 1) {
    throw std::invalid_argument(std::string(fn) + ": expected a tensor with at least one dimension");
  }
}

void check_last_dim_divides(const char* fn, const torch::Tensor& x, const Communicator* group) {
  check_has_last_dim(fn, x);
  if (x.size(-1) % group->size() != 0) {
    throw std::invalid_argument(std::string(fn) + ": last dim " + std::to_string(x.size(-1)) + " of shape " +
                                shape_of(x) + " does not split into " + std::to_string(group->size()) +
                                " equal chunks");
  }
}

void check_linear_args(const char* fn, const torch::Tensor& x, const char* x_name, const torch::Tensor& weight,
                       const torch::Tensor& bias, const char* bias_name) {
  if (!x.defined() || x.dim() < 1 || !weight.defined() || weight.dim() != 2) {
    throw std::invalid_argument(std::string(fn) + ": expected " + x_name + " [..., in] and a 2-D weight");
  }
  if (x.size(-1) != weight.size(1)) {
    throw std::invalid_argument(std::string(fn) + ": " + x_name + " " + shape_of(x) + " does not match weight " +
                                shape_of(weight) + " (last dims differ)");
  }
  if (bias.defined() && (bias.dim() != 1 || bias.size(0) != weight.size(0))) {
    throw std::invalid_argument(std::string(fn) + ": " + bias_name + " " + shape_of(bias) + " should be [" +
                                std::to_string(weight.size(0)) + "] for weight " + shape_of(weight));
  }
}

// The shard must be the one vocab_shard gives this rank of the group.
void check_shard(const char* fn, const VocabShard& shard, const Communicator* group) {
  const int64_t tp = group ? group->size() : 1;
  const int64_t rank = group ? group->rank() : 0;
  const VocabShard expected = vocab_shard(shard.vocab_size, tp, rank);
  if (shard.padded_size != expected.padded_size || shard.local_size != expected.local_size ||
      shard.begin != expected.begin || shard.real_end != expected.real_end) {
    throw std::invalid_argument(
        std::string(fn) + ": shard (V " + std::to_string(shard.vocab_size) + ", padded " +
        std::to_string(shard.padded_size) + ", ids [" + std::to_string(shard.begin) + ", " +
        std::to_string(shard.begin + shard.local_size) + ") real to " + std::to_string(shard.real_end) +
        ") is not vocab_shard(V, " + std::to_string(tp) + ", " + std::to_string(rank) +
        ") for this rank of the group (ids [" + std::to_string(expected.begin) + ", " +
        std::to_string(expected.begin + expected.local_size) + ") real to " + std::to_string(expected.real_end) + ")");
  }
}

struct VocabParallelCrossEntropy : torch::autograd::Function<VocabParallelCrossEntropy> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& logits_shard, const torch::Tensor& targets,
                               const torch::Tensor& mask, VocabShard shard, double label_smoothing,
                               Communicator* group) {
    const bool parallel = is_parallel(group);
    const int64_t n = logits_shard.size(0);
    const int64_t real = shard.real_size();
    // fp32 view of this rank's real columns; padding columns are never read.
    const torch::Tensor logits = logits_shard.to(torch::kFloat32).narrow(1, 0, real);

    // 1. Per-token max over the whole vocabulary (a rank holding padding only
    //    offers -inf, which never wins: V >= 1 real column exists somewhere).
    torch::Tensor max = real > 0 ? std::get<0>(logits.max(1)).contiguous()
                                 : torch::full({n}, -std::numeric_limits<float>::infinity(), logits.options());
    if (parallel) group->all_reduce(max, ReduceOp::Max);
    const torch::Tensor shifted = logits - max.unsqueeze(1);

    // 2. Per-token sum of exp(logit - max).
    torch::Tensor sum_exp = shifted.exp().sum(1);
    if (parallel) group->all_reduce(sum_exp, ReduceOp::Sum);

    // 3. The target's shifted logit (from the one rank holding it; counted
    //    tokens only), with the per-token sum of shifted logits for smoothing.
    const torch::Tensor in_shard = mask & (targets >= shard.begin) & (targets < shard.real_end);
    const torch::Tensor local_targets = torch::where(in_shard, targets - shard.begin, torch::zeros_like(targets));
    torch::Tensor target_logit =
        real > 0 ? shifted.gather(1, local_targets.unsqueeze(1)).squeeze(1).masked_fill(~in_shard, 0.0)
                 : torch::zeros({n}, logits.options());
    const bool smoothing = label_smoothing > 0.0;
    torch::Tensor packed =
        smoothing ? torch::stack({target_logit, shifted.sum(1)}, 1) : target_logit.unsqueeze(1).contiguous();
    if (parallel) group->all_reduce(packed, ReduceOp::Sum);

    const torch::Tensor log_sum_exp = sum_exp.log();
    torch::Tensor loss = log_sum_exp - packed.select(1, 0);
    if (smoothing) {
      // -mean over the real vocabulary of log p = log_sum_exp - sum(shifted) / V.
      const torch::Tensor smooth = log_sum_exp - packed.select(1, 1) / static_cast<double>(shard.vocab_size);
      loss = (1.0 - label_smoothing) * loss + label_smoothing * smooth;
    }
    ctx->save_for_backward({logits_shard, max + log_sum_exp, targets, mask});
    ctx->saved_data["begin"] = shard.begin;
    ctx->saved_data["real_end"] = shard.real_end;
    ctx->saved_data["vocab_size"] = shard.vocab_size;
    ctx->saved_data["label_smoothing"] = label_smoothing;
    return torch::where(mask, loss, torch::zeros_like(loss)).sum();
  }

  // d loss_sum / d logit[i, j] = mask_i * (softmax_ij - (1 - ls) * [j == t_i] - ls / V)
  // for real columns j, 0 for padding: all local, no communication.
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor& logits_shard = saved[0];
    const torch::Tensor& log_z = saved[1];
    const torch::Tensor& targets = saved[2];
    const torch::Tensor& mask = saved[3];
    const int64_t begin = ctx->saved_data["begin"].toInt();
    const int64_t real_end = ctx->saved_data["real_end"].toInt();
    const int64_t vocab_size = ctx->saved_data["vocab_size"].toInt();
    const double label_smoothing = ctx->saved_data["label_smoothing"].toDouble();
    const int64_t real = real_end - begin;

    torch::Tensor grad = torch::zeros(logits_shard.sizes(), logits_shard.options().dtype(torch::kFloat32));
    if (real > 0) {
      torch::Tensor probs = (logits_shard.to(torch::kFloat32).narrow(1, 0, real) - log_z.unsqueeze(1)).exp();
      if (label_smoothing > 0.0) probs.sub_(label_smoothing / static_cast<double>(vocab_size));
      const torch::Tensor in_shard = mask & (targets >= begin) & (targets < real_end);
      const torch::Tensor local_targets = torch::where(in_shard, targets - begin, torch::zeros_like(targets));
      const torch::Tensor onehot_weight = in_shard.to(torch::kFloat32) * -(1.0 - label_smoothing);
      probs.scatter_add_(1, local_targets.unsqueeze(1), onehot_weight.unsqueeze(1));
      probs.masked_fill_(~mask.unsqueeze(1), 0.0);
      probs.mul_(grads[0]);
      grad.narrow(1, 0, real).copy_(probs);
    }
    return {grad.to(logits_shard.scalar_type()),
            torch::Tensor(),
            torch::Tensor(),
            torch::Tensor(),
            torch::Tensor(),
            torch::Tensor()};
  }
};

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

// Scrambles the seed (so seed s, rank r+1 is unrelated to seed s+1, rank r)
// and adds the rank afterwards, so distinct ranks always get distinct seeds,
// even in the low 32 bits, the only ones the CPU generator (mt19937) uses.
uint64_t tp_seed(uint64_t seed, int64_t tp_rank) { return splitmix64(seed) + static_cast<uint64_t>(tp_rank); }

}  // namespace

torch::Tensor copy_to_tensor_parallel_region(const torch::Tensor& x, Communicator* group) {
  if (!is_parallel(group)) return x;
  return CopyToRegion::apply(x, group);
}

torch::Tensor reduce_from_tensor_parallel_region(const torch::Tensor& x, Communicator* group) {
  if (!is_parallel(group)) return x;
  return ReduceFromRegion::apply(x, group);
}

torch::Tensor scatter_to_tensor_parallel_region(const torch::Tensor& x, Communicator* group) {
  if (!is_parallel(group)) return x;
  check_last_dim_divides("scatter_to_tensor_parallel_region", x, group);
  return ScatterToRegion::apply(x, group);
}

torch::Tensor gather_from_tensor_parallel_region(const torch::Tensor& x, Communicator* group) {
  if (!is_parallel(group)) return x;
  check_has_last_dim("gather_from_tensor_parallel_region", x);
  return GatherFromRegion::apply(x, group);
}

torch::Tensor column_parallel_linear(const torch::Tensor& x, const torch::Tensor& weight_shard,
                                     const torch::Tensor& bias_shard, Communicator* group) {
  check_linear_args("column_parallel_linear", x, "x", weight_shard, bias_shard, "bias_shard");
  return torch::linear(copy_to_tensor_parallel_region(x, group), weight_shard, bias_shard);
}

torch::Tensor row_parallel_linear(const torch::Tensor& x_shard, const torch::Tensor& weight_shard,
                                  const torch::Tensor& bias, Communicator* group) {
  check_linear_args("row_parallel_linear", x_shard, "x_shard", weight_shard, bias, "bias");
  torch::Tensor y = reduce_from_tensor_parallel_region(torch::linear(x_shard, weight_shard), group);
  return bias.defined() ? y + bias : y;
}

VocabShard vocab_shard(int64_t vocab_size, int64_t tp_size, int64_t tp_rank) {
  if (vocab_size < 1 || tp_size < 1 || tp_rank < 0 || tp_rank >= tp_size) {
    throw std::invalid_argument("vocab_shard: need vocab_size >= 1, tp_size >= 1, 0 <= tp_rank < tp_size (got " +
                                std::to_string(vocab_size) + ", " + std::to_string(tp_size) + ", " +
                                std::to_string(tp_rank) + ")");
  }
  VocabShard shard;
  shard.vocab_size = vocab_size;
  shard.padded_size = (vocab_size + tp_size - 1) / tp_size * tp_size;
  shard.local_size = shard.padded_size / tp_size;
  shard.begin = tp_rank * shard.local_size;
  shard.real_end = std::max(shard.begin, std::min(vocab_size, shard.begin + shard.local_size));
  return shard;
}

torch::Tensor vocab_parallel_embedding(const torch::Tensor& tokens, const torch::Tensor& weight_shard,
                                       const VocabShard& shard, Communicator* group) {
  const char* fn = "vocab_parallel_embedding";
  if (!tokens.defined() || tokens.scalar_type() != torch::kLong) {
    throw std::invalid_argument(std::string(fn) + ": tokens must be an int64 tensor");
  }
  if (!weight_shard.defined() || weight_shard.dim() != 2 || weight_shard.size(0) != shard.local_size) {
    throw std::invalid_argument(std::string(fn) + ": weight_shard " +
                                (weight_shard.defined() ? shape_of(weight_shard) : std::string("(undefined)")) +
                                " should be [" + std::to_string(shard.local_size) + ", D]");
  }
  if (!weight_shard.is_floating_point()) {
    throw std::invalid_argument(std::string(fn) + ": weight_shard must be a float tensor");
  }
  check_shard(fn, shard, group);
  if (tokens.numel() > 0) {
    const auto [lo, hi] = torch::aminmax(tokens);
    const int64_t min_id = lo.item<int64_t>(), max_id = hi.item<int64_t>();
    if (min_id < 0 || max_id >= shard.vocab_size) {
      throw std::invalid_argument(std::string(fn) + ": token id " + std::to_string(min_id < 0 ? min_id : max_id) +
                                  " is outside the vocabulary [0, " + std::to_string(shard.vocab_size) + ")");
    }
  }
  if (!is_parallel(group)) return torch::embedding(weight_shard, tokens);

  const torch::Tensor in_shard = (tokens >= shard.begin) & (tokens < shard.real_end);
  const torch::Tensor local_ids = torch::where(in_shard, tokens - shard.begin, torch::zeros_like(tokens));
  const torch::Tensor rows = torch::embedding(weight_shard, local_ids).masked_fill(~in_shard.unsqueeze(-1), 0.0);
  return reduce_from_tensor_parallel_region(rows, group);
}

kernels::CrossEntropyResult vocab_parallel_cross_entropy(const torch::Tensor& logits_shard,
                                                         const torch::Tensor& targets, const torch::Tensor& mask,
                                                         const VocabShard& shard, double label_smoothing,
                                                         Communicator* group) {
  const char* fn = "vocab_parallel_cross_entropy";
  if (!logits_shard.defined() || !targets.defined() || !mask.defined() || logits_shard.dim() != 2 ||
      targets.dim() != 1 || mask.dim() != 1 || logits_shard.size(0) != targets.size(0) ||
      targets.size(0) != mask.size(0)) {
    throw std::invalid_argument(std::string(fn) + ": expected logits_shard [N, local_size], targets [N], mask [N]");
  }
  if (!logits_shard.is_floating_point() || targets.scalar_type() != torch::kLong ||
      mask.scalar_type() != torch::kBool) {
    throw std::invalid_argument(std::string(fn) + ": expected float logits, int64 targets and a bool mask");
  }
  if (logits_shard.size(1) != shard.local_size) {
    throw std::invalid_argument(std::string(fn) + ": logits_shard " + shape_of(logits_shard) + " should have " +
                                std::to_string(shard.local_size) + " columns (the shard's local_size)");
  }
  if (label_smoothing < 0.0 || label_smoothing >= 1.0) {
    throw std::invalid_argument(std::string(fn) + ": label_smoothing must be in [0, 1), got " +
                                std::to_string(label_smoothing));
  }
  check_shard(fn, shard, group);
  const torch::Tensor bad = mask & ((targets < 0) | (targets >= shard.vocab_size));
  if (bad.any().item<bool>()) {
    const int64_t i = bad.nonzero()[0][0].item<int64_t>();
    throw std::invalid_argument(std::string(fn) + ": target " + std::to_string(targets[i].item<int64_t>()) +
                                " of counted token " + std::to_string(i) + " is outside the vocabulary [0, " +
                                std::to_string(shard.vocab_size) + ")");
  }

  kernels::CrossEntropyResult result;
  result.loss_sum = VocabParallelCrossEntropy::apply(logits_shard, targets, mask, shard, label_smoothing, group);
  result.num_tokens = mask.sum().item<int64_t>();
  return result;
}

TensorParallelRng::TensorParallelRng(uint64_t seed, int64_t tp_rank)
    : seed_(tp_seed(seed, tp_rank)), tp_rank_(tp_rank), cpu_(at::detail::createCPUGenerator(seed_)) {
  if (tp_rank < 0) {
    throw std::invalid_argument("TensorParallelRng: tp_rank must be >= 0, got " + std::to_string(tp_rank));
  }
  if (torch::cuda::is_available()) {
    const int64_t devices = static_cast<int64_t>(torch::cuda::device_count());
    for (int64_t i = 0; i < devices; ++i) {
      at::Generator gen = at::detail::getCUDAHooks().getNewGenerator(static_cast<c10::DeviceIndex>(i));
      std::lock_guard<std::mutex> lock(gen.mutex());
      gen.set_current_seed(seed_);
      cuda_.push_back(gen);
    }
  }
}

at::Generator TensorParallelRng::generator(const torch::Device& device) {
  if (device.is_cpu()) return cpu_;
  if (device.is_cuda()) {
    const int64_t index = device.has_index() ? device.index() : at::detail::getCUDAHooks().current_device();
    if (index < 0 || index >= static_cast<int64_t>(cuda_.size())) {
      throw std::invalid_argument("TensorParallelRng: no generator for " + device.str() + " (" +
                                  std::to_string(cuda_.size()) + " CUDA devices were visible at construction)");
    }
    return cuda_[static_cast<size_t>(index)];
  }
  throw std::invalid_argument("TensorParallelRng: no generator for device " + device.str() + " (CPU and CUDA only)");
}

torch::Tensor TensorParallelRng::dropout(const torch::Tensor& x, double p, bool training) {
  if (p < 0.0 || p > 1.0) {
    throw std::invalid_argument("TensorParallelRng::dropout: p must be in [0, 1], got " + std::to_string(p));
  }
  if (!training || p == 0.0) return x;
  if (!x.is_floating_point()) {
    throw std::invalid_argument("TensorParallelRng::dropout: expected a float tensor");
  }
  if (p == 1.0) return x * torch::zeros({}, x.options());
  torch::Tensor keep = torch::empty_like(x).bernoulli_(1.0 - p, generator(x.device()));
  keep.div_(1.0 - p);
  return x * keep;
}

std::vector<torch::Tensor> TensorParallelRng::get_state() {
  std::vector<torch::Tensor> state;
  state.reserve(1 + cuda_.size());
  {
    std::lock_guard<std::mutex> lock(cpu_.mutex());
    state.push_back(cpu_.get_state());
  }
  for (auto& gen : cuda_) {
    std::lock_guard<std::mutex> lock(gen.mutex());
    state.push_back(gen.get_state());
  }
  return state;
}

void TensorParallelRng::set_state(const std::vector<torch::Tensor>& state) {
  if (state.size() != 1 + cuda_.size()) {
    throw std::invalid_argument("TensorParallelRng::set_state: got " + std::to_string(state.size()) +
                                " states, this object holds " + std::to_string(1 + cuda_.size()) +
                                " generators (CPU + " + std::to_string(cuda_.size()) + " CUDA)");
  }
  {
    std::lock_guard<std::mutex> lock(cpu_.mutex());
    cpu_.set_state(state[0]);
  }
  for (size_t i = 0; i < cuda_.size(); ++i) {
    std::lock_guard<std::mutex> lock(cuda_[i].mutex());
    cuda_[i].set_state(state[i + 1]);
  }
}

}  // namespace moetrain::parallel

#include "models/moe_layer.h"

#include <cmath>
#include <numeric>
#include <stdexcept>
#include <string>

#include "kernels/dispatch.h"
#include "kernels/moe_permute.h"
#include "models/feed_forward.h"
#include "parallel/expert_dispatch.h"

namespace moetrain::models {

namespace {

void check_token_mask(const torch::Tensor& token_mask, int64_t n, const char* who) {
  if (!token_mask.defined() || token_mask.scalar_type() != torch::kBool || token_mask.dim() != 1 ||
      token_mask.size(0) != n) {
    throw std::invalid_argument(std::string(who) + ": expected token_mask [" + std::to_string(n) + "] bool, got " +
                                kernels::describe_tensor(token_mask));
  }
}

void check_fp32_matrix(const torch::Tensor& t, const char* who, const char* what) {
  if (!t.defined() || t.dim() != 2 || t.scalar_type() != torch::kFloat) {
    throw std::invalid_argument(std::string(who) + ": expected " + what + " [N, E] float32, got " +
                                kernels::describe_tensor(t));
  }
}

// Valid tokens as a float divisor that is never zero (no valid token: the
// masked sums are zero, so the losses are zero rather than NaN).
torch::Tensor valid_count(const torch::Tensor& token_mask, parallel::Communicator* group = nullptr) {
  torch::Tensor n = token_mask.sum().to(torch::kFloat);
  if (group != nullptr && group->size() > 1) group->all_reduce(n);
  return n.clamp_min(1.0);
}

// x summed over `group` (gradient included), or x.
torch::Tensor sum_over(const torch::Tensor& x, parallel::Communicator* group) {
  return parallel::all_reduce_context_parallel(x, group);
}

}  // namespace

RoutingResult route_tokens(const torch::Tensor& logits_fp32, const torch::Tensor& token_mask, int64_t top_k,
                           double capacity_factor, bool normalize_top_k) {
  check_fp32_matrix(logits_fp32, "route_tokens", "logits");
  const int64_t n = logits_fp32.size(0);
  const int64_t e = logits_fp32.size(1);
  check_token_mask(token_mask, n, "route_tokens");
  if (top_k < 1 || top_k > e) {
    throw std::invalid_argument("route_tokens: top_k " + std::to_string(top_k) +
                                " must be in [1, num_experts=" + std::to_string(e) + "]");
  }
  if (!(capacity_factor >= 0.0) || !std::isfinite(capacity_factor)) {
    throw std::invalid_argument("route_tokens: capacity_factor must be >= 0 (0 = dropless), got " +
                                std::to_string(capacity_factor));
  }

  RoutingResult r;
  r.probs = torch::softmax(logits_fp32, -1);
  auto [top_p, top_i] = r.probs.topk(top_k, -1, /*largest=*/true, /*sorted=*/true);
  torch::Tensor gates = normalize_top_k ? top_p / top_p.sum(-1, /*keepdim=*/true) : top_p;
  const torch::Tensor valid = token_mask.unsqueeze(1).expand({n, top_k});
  r.gates = torch::where(valid, gates, torch::zeros({}, gates.options()));

  // Priority order is choice-major: row c * N + t is token t's choice c.
  const torch::Tensor expert_cm = top_i.t().reshape({-1});
  const torch::Tensor valid_cm = valid.t().reshape({-1});
  const torch::Tensor one_hot = torch::one_hot(expert_cm, e) * valid_cm.unsqueeze(1).to(torch::kLong);
  r.assigned_per_expert = one_hot.sum(0);

  torch::Tensor kept_cm = valid_cm;
  if (capacity_factor > 0.0) {
    // The capacity depends on the valid count: the one extra host sync of
    // capacity-limited routing.
    r.num_valid = token_mask.sum().item<int64_t>();
    const double slots = capacity_factor * static_cast<double>(r.num_valid * top_k) / static_cast<double>(e);
    r.capacity = static_cast<int64_t>(std::ceil(slots - 1e-9));
    // Slot of each assignment within its expert, counting earlier-priority ones.
    const torch::Tensor slot = (one_hot.cumsum(0) * one_hot).sum(1) - 1;
    kept_cm = valid_cm & (slot < r.capacity);
  }
  r.kept = kept_cm.view({top_k, n}).t().contiguous();
  r.tokens_per_expert = (one_hot * kept_cm.unsqueeze(1).to(torch::kLong)).sum(0);
  // What the host needs, in one device-to-host copy: the split sizes and the
  // valid count. Every kept assignment is counted once in tokens_per_expert.
  const torch::Tensor host =
      torch::cat({r.tokens_per_expert, token_mask.sum().reshape({1}).to(torch::kLong)}).to(torch::kCPU).contiguous();
  const int64_t* counts = host.data_ptr<int64_t>();
  r.tokens_per_expert_host.assign(counts, counts + e);
  r.num_valid = counts[e];
  const int64_t kept_total = std::accumulate(counts, counts + e, int64_t{0});
  r.dropped = r.num_valid * top_k - kept_total;
  r.expert_index = top_i.masked_fill(~valid, -1);
  return r;
}

torch::Tensor load_balancing_loss(const torch::Tensor& probs, const torch::Tensor& assigned_per_expert,
                                  const torch::Tensor& token_mask, int64_t top_k,
                                  parallel::Communicator* sequence_group) {
  check_fp32_matrix(probs, "load_balancing_loss", "probs");
  const int64_t e = probs.size(1);
  check_token_mask(token_mask, probs.size(0), "load_balancing_loss");
  if (assigned_per_expert.dim() != 1 || assigned_per_expert.size(0) != e) {
    throw std::invalid_argument("load_balancing_loss: assigned_per_expert must be [" + std::to_string(e) + "], got " +
                                c10::str(assigned_per_expert.sizes()));
  }
  if (top_k < 1) throw std::invalid_argument("load_balancing_loss: top_k must be >= 1");
  const torch::Tensor n_valid = valid_count(token_mask, sequence_group);
  const torch::Tensor assigned = sum_over(assigned_per_expert.to(torch::kFloat), sequence_group);
  const torch::Tensor f = assigned / (n_valid * static_cast<double>(top_k));
  const torch::Tensor masked = torch::where(token_mask.unsqueeze(1), probs, torch::zeros({}, probs.options()));
  const torch::Tensor p = sum_over(masked.sum(0), sequence_group) / n_valid;
  return static_cast<double>(e) * (f * p).sum();
}

torch::Tensor router_z_loss(const torch::Tensor& logits_fp32, const torch::Tensor& token_mask,
                            parallel::Communicator* sequence_group) {
  check_fp32_matrix(logits_fp32, "router_z_loss", "logits");
  check_token_mask(token_mask, logits_fp32.size(0), "router_z_loss");
  const torch::Tensor lse_sq = torch::logsumexp(logits_fp32, -1).square();
  const torch::Tensor masked = torch::where(token_mask, lse_sq, torch::zeros({}, lse_sq.options()));
  return sum_over(masked.sum(), sequence_group) / valid_count(token_mask, sequence_group);
}

PermutedTokens permute_tokens(const torch::Tensor& x, const RoutingResult& routing) {
  if (x.dim() != 2 || !routing.expert_index.defined() || routing.expert_index.dim() != 2 ||
      routing.expert_index.size(0) != x.size(0)) {
    throw std::invalid_argument(
        "permute_tokens: expected x [N, D] matching routing [N, k], got " + c10::str(x.sizes()) + " and " +
        (routing.expert_index.defined() ? c10::str(routing.expert_index.sizes()) : std::string("no routing")));
  }
  const int64_t n = x.size(0);
  const int64_t k = routing.expert_index.size(1);
  const auto long_opts = torch::TensorOptions().dtype(torch::kLong).device(x.device());
  const torch::Tensor flat_token = torch::arange(n, long_opts).unsqueeze(1).expand({n, k}).reshape({-1});
  PermutedTokens p;
  p.tokens_per_expert = routing.tokens_per_expert_host;
  if (p.tokens_per_expert.empty()) {
    const torch::Tensor counts = routing.tokens_per_expert.to(torch::kCPU).contiguous();
    p.tokens_per_expert.assign(counts.data_ptr<int64_t>(), counts.data_ptr<int64_t>() + counts.numel());
  }
  const int64_t experts = static_cast<int64_t>(p.tokens_per_expert.size());
  const int64_t kept = std::accumulate(p.tokens_per_expert.begin(), p.tokens_per_expert.end(), int64_t{0});
  // Kept assignments by expert, each expert's in (token, choice) order: a
  // stable sort with the dropped ones keyed past the last expert, cut at the
  // kept count the host already knows (no nonzero(), which would wait for
  // the device).
  const torch::Tensor key =
      torch::where(routing.kept.reshape({-1}), routing.expert_index.reshape({-1}), torch::full({}, experts, long_opts));
  const torch::Tensor source =
      std::get<1>(key.sort(/*stable=*/true, /*dim=*/0, /*descending=*/false)).narrow(0, 0, kept);

  p.token_index = flat_token.index_select(0, source);
  p.gates = routing.gates.reshape({-1}).index_select(0, source);
  p.hidden = kernels::permute_rows(x, p.token_index);
  return p;
}

torch::Tensor unpermute_tokens(const torch::Tensor& expert_output, const PermutedTokens& permuted, int64_t num_tokens) {
  if (expert_output.dim() != 2 || expert_output.size(0) != permuted.token_index.size(0)) {
    throw std::invalid_argument("unpermute_tokens: expected expert_output [" +
                                std::to_string(permuted.token_index.size(0)) + ", D], got " +
                                c10::str(expert_output.sizes()));
  }
  return kernels::unpermute_rows(expert_output, permuted.gates, permuted.token_index, num_tokens);
}

MoELayerImpl::MoELayerImpl(const ModelConfig& cfg)
    : d_model_(cfg.d_model),
      num_experts_(cfg.moe.num_experts),
      top_k_(cfg.moe.top_k),
      capacity_factor_(cfg.moe.capacity_factor),
      normalize_top_k_(cfg.moe.normalize_top_k),
      activation_(cfg.activation),
      dropout_(cfg.dropout),
      token_dropout_(cfg.moe.token_dropout) {
  if (num_experts_ < 1 || top_k_ < 1 || top_k_ > num_experts_) {
    throw std::invalid_argument("MoELayer: need 1 <= top_k (" + std::to_string(top_k_) + ") <= num_experts (" +
                                std::to_string(num_experts_) + ")");
  }
  const int64_t f = cfg.expert_ffn_dim();
  router = register_module("router", Linear(d_model_, num_experts_, /*bias=*/false, cfg.init_std));
  experts_fc1_weight = register_parameter("experts_fc1_weight", torch::empty({num_experts_, f, d_model_}));
  if (cfg.bias) experts_fc1_bias = register_parameter("experts_fc1_bias", torch::zeros({num_experts_, f}));
  experts_fc2_weight = register_parameter("experts_fc2_weight", torch::empty({num_experts_, d_model_, f}));
  if (cfg.bias) experts_fc2_bias = register_parameter("experts_fc2_bias", torch::zeros({num_experts_, d_model_}));
  torch::NoGradGuard no_grad;
  experts_fc1_weight.normal_(0.0, cfg.init_std);
  experts_fc2_weight.normal_(0.0, cfg.init_std);
}

torch::Tensor MoELayerImpl::router_logits(const torch::Tensor& x) {
  return torch::linear(x.to(torch::kFloat), router->weight.to(torch::kFloat));
}

torch::Tensor MoELayerImpl::expert_forward(const torch::Tensor& permuted_hidden,
                                           const std::vector<int64_t>& tokens_per_expert) {
  const int64_t local_experts = experts_fc1_weight.size(0);
  const int64_t total = std::accumulate(tokens_per_expert.begin(), tokens_per_expert.end(), int64_t{0});
  if (static_cast<int64_t>(tokens_per_expert.size()) != local_experts || permuted_hidden.dim() != 2 ||
      permuted_hidden.size(0) != total || permuted_hidden.size(1) != d_model_) {
    throw std::invalid_argument("MoELayer::expert_forward: expected " + std::to_string(local_experts) +
                                " segment sizes summing to the rows of hidden [M, " + std::to_string(d_model_) +
                                "], got " + std::to_string(tokens_per_expert.size()) + " sizes summing to " +
                                std::to_string(total) + " and hidden " + c10::str(permuted_hidden.sizes()));
  }
  // Under TP each rank holds a slice of every expert's hidden width: its fc2
  // output is a partial sum, completed by an all-reduce before the (whole)
  // fc2 bias is added.
  const bool split = tp_ != nullptr;
  const torch::Tensor input = split ? parallel::copy_to_tensor_parallel_region(permuted_hidden, tp_) : permuted_hidden;
  // LoRA: fc1's adapter reads the replicated rows (not `input`, whose
  // gradient is summed over TP: the adapter's is whole already) and sums its
  // low-rank gradient over TP for the replicated A; fc2's adapter reads the
  // split hidden rows, so its low-rank activations are partial sums,
  // all-reduced (for all experts at once) before the replicated B.
  const bool training = is_training();
  auto lora_input = [&](const torch::Tensor& x, parallel::TensorParallelRng* rng) {
    if (lora_dropout_ <= 0 || !training) return x;
    TensorParallelRngScope scope(rng, x.device());
    return torch::dropout(x, lora_dropout_, true);
  };
  std::vector<torch::Tensor> outputs, fc2_low;
  std::vector<int64_t> fc2_experts;
  int64_t offset = 0;
  for (int64_t e = 0; e < local_experts; ++e) {
    const int64_t count = tokens_per_expert[static_cast<size_t>(e)];
    if (count == 0) continue;
    const torch::Tensor segment = input.narrow(0, offset, count);
    torch::Tensor h = torch::linear(segment, experts_fc1_weight[e],
                                    experts_fc1_bias.defined() ? experts_fc1_bias[e] : torch::Tensor());
    if (experts_fc1_lora_A.defined()) {
      torch::Tensor low =
          torch::linear(lora_input(permuted_hidden.narrow(0, offset, count), nullptr), experts_fc1_lora_A[e]);
      if (split) low = parallel::copy_to_tensor_parallel_region(low, tp_);
      h = h + lora_scale_ * torch::linear(low, experts_fc1_lora_B[e]);
    }
    offset += count;
    h = apply_activation(h, activation_);
    {
      TensorParallelRngScope rng(dropout_ > 0 && training ? tp_rng_ : nullptr, h.device());
      h = torch::dropout(h, dropout_, training);
    }
    const bool bias_here = experts_fc2_bias.defined() && !split;
    torch::Tensor y = torch::linear(h, experts_fc2_weight[e], bias_here ? experts_fc2_bias[e] : torch::Tensor());
    if (experts_fc2_lora_A.defined()) {
      const torch::Tensor low = torch::linear(lora_input(h, tp_rng_), experts_fc2_lora_A[e]);
      if (split) {
        fc2_low.push_back(low);
        fc2_experts.push_back(e);
      } else {
        y = y + lora_scale_ * torch::linear(low, experts_fc2_lora_B[e]);
      }
    }
    outputs.push_back(y);
  }
  torch::Tensor out = outputs.empty() ? torch::zeros({0, d_model_}, permuted_hidden.options()) : torch::cat(outputs, 0);
  if (split) {
    out = parallel::reduce_from_tensor_parallel_region(out, tp_);
    if (experts_fc2_bias.defined() && total > 0) {
      const auto counts = torch::tensor(tokens_per_expert, torch::kLong).to(out.device());
      out = out + experts_fc2_bias.repeat_interleave(counts, 0);
    }
    if (!fc2_low.empty()) {
      const torch::Tensor low = parallel::reduce_from_tensor_parallel_region(torch::cat(fc2_low, 0), tp_);
      std::vector<torch::Tensor> adapter_out;
      int64_t row = 0;
      for (const int64_t e : fc2_experts) {
        const int64_t count = tokens_per_expert[static_cast<size_t>(e)];
        adapter_out.push_back(torch::linear(low.narrow(0, row, count), experts_fc2_lora_B[e]));
        row += count;
      }
      out = out + lora_scale_ * torch::cat(adapter_out, 0);
    }
  }
  return out;
}

void MoELayerImpl::add_lora(const LoraConfig& lora, bool fc1, bool fc2) {
  if (tp_ || ep_) throw std::logic_error("MoELayer: add_lora after parallelize");
  const int64_t e = num_experts_, f = experts_fc1_weight.size(1), d = d_model_, r = lora.r;
  if (fc1 && !experts_fc1_lora_A.defined()) {
    experts_fc1_lora_A = register_parameter("experts_fc1_lora_A", lora_init_a({e, r, d}, d));
    experts_fc1_lora_B = register_parameter("experts_fc1_lora_B", torch::zeros({e, f, r}));
  }
  if (fc2 && !experts_fc2_lora_A.defined()) {
    experts_fc2_lora_A = register_parameter("experts_fc2_lora_A", lora_init_a({e, r, f}, f));
    experts_fc2_lora_B = register_parameter("experts_fc2_lora_B", torch::zeros({e, d, r}));
  }
  lora_scale_ = lora.scale();
  lora_dropout_ = lora.dropout;
}

ParameterSlices MoELayerImpl::parallelize(const ModelParallelism& mp) {
  ParameterSlices slices;
  if (mp.context_parallel()) cp_ = mp.cp;
  // Keeps part `rank` of `parts` along `dim`, nested in an earlier split.
  auto split = [&slices](const std::string& name, torch::Tensor& p, int64_t dim, int64_t rank, int64_t parts) {
    const ParameterSlice inner = split_parameter(p, dim, rank, parts);
    const auto it = slices.find(name);
    slices[name] = it == slices.end() ? inner : nest_slice(it->second, inner);
  };
  const int64_t ep = mp.ep_size();
  if (ep > 1) {
    if (num_experts_ % ep != 0) {
      throw std::invalid_argument("MoELayer: expert parallelism " + std::to_string(ep) +
                                  " must divide the number of experts " + std::to_string(num_experts_));
    }
    split("experts_fc1_weight", experts_fc1_weight, 0, mp.ep_rank(), ep);
    if (experts_fc1_bias.defined()) split("experts_fc1_bias", experts_fc1_bias, 0, mp.ep_rank(), ep);
    split("experts_fc2_weight", experts_fc2_weight, 0, mp.ep_rank(), ep);
    if (experts_fc2_bias.defined()) split("experts_fc2_bias", experts_fc2_bias, 0, mp.ep_rank(), ep);
    const std::pair<const char*, torch::Tensor*> adapters[] = {{"experts_fc1_lora_A", &experts_fc1_lora_A},
                                                               {"experts_fc1_lora_B", &experts_fc1_lora_B},
                                                               {"experts_fc2_lora_A", &experts_fc2_lora_A},
                                                               {"experts_fc2_lora_B", &experts_fc2_lora_B}};
    for (const auto& [name, p] : adapters) {
      if (p->defined()) split(name, *p, 0, mp.ep_rank(), ep);
    }
    ep_ = mp.ep;
  }
  const int64_t tp = mp.tp_size();
  if (tp > 1) {
    const int64_t f = experts_fc1_weight.size(1);
    if (f % tp != 0) {
      throw std::invalid_argument("MoELayer: tensor parallelism " + std::to_string(tp) +
                                  " must divide the expert hidden width " + std::to_string(f));
    }
    split("experts_fc1_weight", experts_fc1_weight, 1, mp.tp_rank(), tp);
    if (experts_fc1_bias.defined()) split("experts_fc1_bias", experts_fc1_bias, 1, mp.tp_rank(), tp);
    split("experts_fc2_weight", experts_fc2_weight, 2, mp.tp_rank(), tp);
    // Adapters split with the hidden width: fc1's B by rows, fc2's A by columns.
    if (experts_fc1_lora_B.defined()) split("experts_fc1_lora_B", experts_fc1_lora_B, 1, mp.tp_rank(), tp);
    if (experts_fc2_lora_A.defined()) split("experts_fc2_lora_A", experts_fc2_lora_A, 2, mp.tp_rank(), tp);
    tp_ = mp.tp;
  }
  if (ep > 1 || tp > 1) tp_rng_ = mp.tp_rng;
  return slices;
}

MoEOutput MoELayerImpl::forward(const torch::Tensor& x, const torch::Tensor& token_mask) {
  if (x.dim() != 2 || x.size(1) != d_model_) {
    throw std::invalid_argument("MoELayer: expected x [N, " + std::to_string(d_model_) + "], got " +
                                c10::str(x.sizes()));
  }
  check_token_mask(token_mask, x.size(0), "MoELayer");

  const torch::Tensor logits = router_logits(x);
  const RoutingResult routing = route_tokens(logits, token_mask, top_k_, capacity_factor_, normalize_top_k_);
  const PermutedTokens permuted = permute_tokens(x, routing);
  torch::Tensor expert_output;
  if (ep_) {
    // To the experts' owners and back; every EP rank takes part in both
    // all-to-alls whatever its counts (an expert with no token stalls nobody).
    const parallel::ExpertDispatchPlan plan = parallel::plan_expert_dispatch(permuted.tokens_per_expert, ep_);
    const torch::Tensor local = parallel::dispatch_tokens(permuted.hidden, plan, ep_);
    const torch::Tensor local_output = expert_forward(local, plan.local_tokens_per_expert);
    expert_output = parallel::combine_tokens(local_output, plan, ep_);
  } else {
    expert_output = expert_forward(permuted.hidden, permuted.tokens_per_expert);
  }

  MoEOutput out;
  out.hidden = unpermute_tokens(expert_output, permuted, x.size(0)).to(x.scalar_type());
  if (token_dropout_ > 0) {
    // NLLB-MoE's token dropout (ModelConfig's moe.token_dropout). The output is
    // whole on every TP rank here, and the default generator agrees across them.
    out.hidden = is_training() ? torch::dropout(out.hidden, token_dropout_, true) : out.hidden * (1.0 - token_dropout_);
  }
  out.stats.aux_loss = load_balancing_loss(routing.probs, routing.assigned_per_expert, token_mask, top_k_, cp_);
  out.stats.z_loss = router_z_loss(logits, token_mask, cp_);
  out.stats.tokens_per_expert = routing.tokens_per_expert.detach();
  out.stats.dropped = routing.dropped;
  return out;
}

}  // namespace moetrain::models

#include "models/attention.h"

#include <stdexcept>
#include <string>

#include "kernels/dispatch.h"
#include "models/positions.h"

namespace moetrain::models {

namespace {

void check_padding_mask(const torch::Tensor& mask, const char* who) {
  if (!mask.defined() || mask.dim() != 2 || mask.scalar_type() != torch::kBool) {
    throw std::invalid_argument(std::string(who) + ": expected a padding mask [B, T] of bool, got " +
                                kernels::describe_tensor(mask));
  }
}

void check_mask(const torch::Tensor& mask, int64_t batch, int64_t tq, int64_t tk, const char* which) {
  if (!mask.defined()) {
    throw std::invalid_argument(std::string("MultiHeadAttention: the ") + which +
                                " mask is required by this attention kind but is undefined");
  }
  if (mask.scalar_type() != torch::kBool || mask.dim() != 4 || mask.size(0) != batch || mask.size(1) != 1 ||
      mask.size(2) != tq || mask.size(3) != tk) {
    throw std::invalid_argument(std::string("MultiHeadAttention: ") + which + " mask must be bool [" +
                                std::to_string(batch) + ", 1, " + std::to_string(tq) + ", " + std::to_string(tk) +
                                "], got " + c10::str(mask.sizes(), " ", mask.scalar_type()));
  }
}

// Whether queries at positions q may see keys at positions k (int64 tensors
// that broadcast against each other): causal (k <= q) and the window as the
// header defines it (window <= 0: none). Bool, of the broadcast shape.
torch::Tensor visible_keys(const torch::Tensor& q, const torch::Tensor& k, bool causal, int64_t window) {
  const torch::Tensor distance = q - k;
  torch::Tensor allowed = torch::ones_like(distance, torch::kBool);
  if (causal) allowed = allowed & (distance >= 0);
  if (window > 0) allowed = allowed & (causal ? (distance < window) : (distance.abs() <= window / 2));
  return allowed;
}

}  // namespace

torch::Tensor make_self_attention_mask(const torch::Tensor& padding_mask, bool causal, int64_t window) {
  check_padding_mask(padding_mask, "make_self_attention_mask");
  const int64_t t = padding_mask.size(1);
  const auto opts = torch::TensorOptions().dtype(torch::kLong).device(padding_mask.device());
  const torch::Tensor q = torch::arange(t, opts).unsqueeze(1);            // [T, 1]
  const torch::Tensor k = torch::arange(t, opts).unsqueeze(0);            // [1, T]
  const torch::Tensor allowed = visible_keys(q, k, causal, window);       // [T, T]
  torch::Tensor mask = allowed.unsqueeze(0) & padding_mask.unsqueeze(1);  // [B, T, T]
  // A padded query may have no visible key at all; letting it see itself keeps
  // softmax finite and cannot change an unpadded row (its diagonal is visible).
  mask = mask | torch::eye(t, opts.dtype(torch::kBool)).unsqueeze(0);
  return mask.unsqueeze(1);
}

torch::Tensor make_cross_attention_mask(const torch::Tensor& src_padding_mask, int64_t tgt_len) {
  check_padding_mask(src_padding_mask, "make_cross_attention_mask");
  if (tgt_len <= 0) {
    throw std::invalid_argument("make_cross_attention_mask: tgt_len must be positive, got " + std::to_string(tgt_len));
  }
  const torch::Tensor empty_source = ~src_padding_mask.any(1, /*keepdim=*/true);  // [B, 1]
  const torch::Tensor keys = src_padding_mask | empty_source;                     // [B, S]
  return keys.unsqueeze(1).unsqueeze(1).expand({keys.size(0), 1, tgt_len, keys.size(1)});
}

AttentionMasks make_self_attention_masks(AttentionType type, int64_t local_window, const torch::Tensor& padding_mask,
                                         bool causal) {
  AttentionMasks masks;
  if (type != AttentionType::Local) masks.global = make_self_attention_mask(padding_mask, causal, 0);
  if (type != AttentionType::Global) {
    if (local_window <= 0) {
      throw std::invalid_argument("local attention: local_window must be positive, got " +
                                  std::to_string(local_window));
    }
    masks.local = make_self_attention_mask(padding_mask, causal, local_window);
  }
  return masks;
}

AttentionMasks make_context_parallel_self_masks(const torch::Tensor& padding_mask, const torch::Tensor& positions,
                                                bool causal, parallel::Communicator* group,
                                                parallel::ContextParallelMode mode) {
  check_padding_mask(padding_mask, "make_context_parallel_self_masks");
  AttentionMasks masks;
  masks.cp = {group, mode, padding_mask, positions, positions, causal, /*self=*/true};
  return masks;
}

AttentionMasks make_context_parallel_cross_masks(const torch::Tensor& src_mask, const torch::Tensor& q_positions,
                                                 const torch::Tensor& k_positions, parallel::Communicator* group,
                                                 parallel::ContextParallelMode mode) {
  check_padding_mask(src_mask, "make_context_parallel_cross_masks");
  torch::Tensor any_source = src_mask.any(1).contiguous();  // [B]
  if (group != nullptr && group->size() > 1) group->all_reduce(any_source, parallel::ReduceOp::Max);
  AttentionMasks masks;
  masks.cp = {group, mode, src_mask | ~any_source.unsqueeze(1), q_positions, k_positions, false, false};
  return masks;
}

MultiHeadAttentionImpl::MultiHeadAttentionImpl(const ModelConfig& cfg, AttentionType type, bool rotary)
    : type_(type),
      rotary_(rotary),
      d_model_(cfg.d_model),
      n_heads_(cfg.n_heads),
      head_dim_(cfg.n_heads > 0 ? cfg.d_model / cfg.n_heads : 0),
      rope_theta_(cfg.rope_theta),
      max_positions_(cfg.max_positions),
      attention_dropout_(cfg.attention_dropout),
      local_window_(cfg.local_window) {
  if (n_heads_ <= 0 || d_model_ % n_heads_ != 0) {
    throw std::invalid_argument("MultiHeadAttention: n_heads " + std::to_string(n_heads_) + " must divide d_model " +
                                std::to_string(d_model_));
  }
  if (rotary_ && head_dim_ % 2 != 0) {
    throw std::invalid_argument("MultiHeadAttention: rotary positions need an even head_dim, got " +
                                std::to_string(head_dim_));
  }
  q_proj = register_module("q_proj", Linear(d_model_, d_model_, cfg.bias, cfg.init_std));
  k_proj = register_module("k_proj", Linear(d_model_, d_model_, cfg.bias, cfg.init_std));
  v_proj = register_module("v_proj", Linear(d_model_, d_model_, cfg.bias, cfg.init_std));
  o_proj = register_module("o_proj", Linear(d_model_, d_model_, cfg.bias, cfg.init_std));
  if (type_ == AttentionType::Dynamic) {
    gate = register_module("gate", Linear(d_model_, n_heads_, cfg.bias, cfg.init_std));
  }
}

torch::Tensor MultiHeadAttentionImpl::attend(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                             const AttentionMasks& masks, bool local) {
  const double p = is_training() ? attention_dropout_ : 0.0;
  // Heads are split across TP ranks: their dropout masks must differ.
  TensorParallelRngScope rng(p > 0 ? tp_rng_ : nullptr, q.device());
  const ContextParallelMasks& cp = masks.cp;
  if (cp.group != nullptr) {
    const parallel::ContextAttentionMask visible{cp.causal, local ? local_window_ : 0, cp.self};
    return parallel::context_parallel_attention(q, k, v, cp.key_mask, cp.q_positions, cp.k_positions, visible, cp.mode,
                                                cp.group, p);
  }
  return torch::scaled_dot_product_attention(q, k, v, local ? masks.local : masks.global, p);
}

ParameterSlices MultiHeadAttentionImpl::split_tensor_parallel(const ModelParallelism& mp) {
  ParameterSlices slices;
  const int64_t tp = mp.tp_size();
  if (tp == 1) return slices;
  if (n_heads_ % tp != 0) {
    throw std::invalid_argument("MultiHeadAttention: tensor parallelism " + std::to_string(tp) +
                                " must divide n_heads " + std::to_string(n_heads_));
  }
  add_slices(slices, "q_proj", q_proj->split_tensor_parallel(LinearSplit::Column, mp.tp));
  add_slices(slices, "k_proj", k_proj->split_tensor_parallel(LinearSplit::Column, mp.tp));
  add_slices(slices, "v_proj", v_proj->split_tensor_parallel(LinearSplit::Column, mp.tp));
  add_slices(slices, "o_proj", o_proj->split_tensor_parallel(LinearSplit::Row, mp.tp));
  if (!gate.is_empty()) add_slices(slices, "gate", gate->split_tensor_parallel(LinearSplit::Column, mp.tp));
  n_heads_ /= tp;
  tp_rng_ = mp.tp_rng;
  return slices;
}

torch::Tensor MultiHeadAttentionImpl::forward(const torch::Tensor& query_states, const torch::Tensor& key_value_states,
                                              const AttentionMasks& masks) {
  if (query_states.dim() != 3 || key_value_states.dim() != 3 || query_states.size(2) != d_model_ ||
      key_value_states.size(2) != d_model_ || query_states.size(0) != key_value_states.size(0)) {
    throw std::invalid_argument("MultiHeadAttention: expected query [B, Tq, " + std::to_string(d_model_) +
                                "] and key/value [B, Tk, " + std::to_string(d_model_) + "], got " +
                                c10::str(query_states.sizes()) + " and " + c10::str(key_value_states.sizes()));
  }
  const int64_t b = query_states.size(0);
  const int64_t tq = query_states.size(1);
  const int64_t tk = key_value_states.size(1);
  const ContextParallelMasks& cp = masks.cp;
  if (cp.group == nullptr) {
    if (type_ != AttentionType::Local) check_mask(masks.global, b, tq, tk, "global");
    if (type_ != AttentionType::Global) check_mask(masks.local, b, tq, tk, "local");
  }

  torch::Tensor q = project_heads(q_proj, query_states);
  torch::Tensor k = project_heads(k_proj, key_value_states);
  const torch::Tensor v = project_heads(v_proj, key_value_states);
  if (rotary_ && cp.group != nullptr) {
    q = apply_rotary(q, rope_theta_, max_positions_, cp.q_positions);
    k = apply_rotary(k, rope_theta_, max_positions_, cp.k_positions);
  } else if (rotary_) {
    q = apply_rotary(q, rope_theta_, max_positions_);
    k = apply_rotary(k, rope_theta_, max_positions_);
  }
  return attend_and_project(q, k, v, masks, query_states);
}

torch::Tensor MultiHeadAttentionImpl::project_heads(Linear& proj, const torch::Tensor& x) {
  return proj(x).view({x.size(0), x.size(1), n_heads_, head_dim_}).transpose(1, 2);
}

torch::Tensor MultiHeadAttentionImpl::attend_and_project(const torch::Tensor& q, const torch::Tensor& k,
                                                         const torch::Tensor& v, const AttentionMasks& masks,
                                                         const torch::Tensor& query_states) {
  torch::Tensor out;
  switch (type_) {
    case AttentionType::Global: out = attend(q, k, v, masks, /*local=*/false); break;
    case AttentionType::Local: out = attend(q, k, v, masks, /*local=*/true); break;
    case AttentionType::Dynamic: {
      const torch::Tensor local = attend(q, k, v, masks, /*local=*/true);
      const torch::Tensor global = attend(q, k, v, masks, /*local=*/false);
      // The gate sees only its own token, so it keeps the decoder causal.
      const torch::Tensor g = torch::sigmoid(gate(query_states)).transpose(1, 2).unsqueeze(-1);
      out = g * local + (1 - g) * global;  // g: [B, H, Tq, 1]
      break;
    }
  }
  const int64_t b = query_states.size(0);
  const int64_t tq = query_states.size(1);
  return o_proj(out.transpose(1, 2).reshape({b, tq, n_heads_ * head_dim_}));
}

void KeyValueCache::select_rows(const torch::Tensor& index) {
  if (!k.defined()) return;
  k = k.index_select(0, index.to(k.device()));
  v = v.index_select(0, index.to(v.device()));
}

KeyValueCache MultiHeadAttentionImpl::project_key_values(const torch::Tensor& key_value_states) {
  if (key_value_states.dim() != 3 || key_value_states.size(2) != d_model_) {
    throw std::invalid_argument("MultiHeadAttention: expected key/value [B, S, " + std::to_string(d_model_) +
                                "], got " + c10::str(key_value_states.sizes()));
  }
  return {project_heads(k_proj, key_value_states), project_heads(v_proj, key_value_states)};
}

torch::Tensor MultiHeadAttentionImpl::forward_cached(const torch::Tensor& query_states, const KeyValueCache& cache,
                                                     const AttentionMasks& masks) {
  if (query_states.dim() != 3 || query_states.size(2) != d_model_ || cache.length() == 0 ||
      cache.k.size(0) != query_states.size(0)) {
    throw std::invalid_argument("MultiHeadAttention: expected query [B, Tq, " + std::to_string(d_model_) +
                                "] and a cache of B rows, got " + c10::str(query_states.sizes()) + " and " +
                                (cache.k.defined() ? c10::str(cache.k.sizes()) : std::string("none")));
  }
  const int64_t b = query_states.size(0);
  const int64_t tq = query_states.size(1);
  if (type_ != AttentionType::Local) check_mask(masks.global, b, tq, cache.length(), "global");
  if (type_ != AttentionType::Global) check_mask(masks.local, b, tq, cache.length(), "local");
  return attend_and_project(project_heads(q_proj, query_states), cache.k, cache.v, masks, query_states);
}

torch::Tensor MultiHeadAttentionImpl::forward_step(const torch::Tensor& query_states, KeyValueCache& cache) {
  if (query_states.dim() != 3 || query_states.size(1) != 1 || query_states.size(2) != d_model_ ||
      (cache.k.defined() && cache.k.size(0) != query_states.size(0))) {
    throw std::invalid_argument("MultiHeadAttention::forward_step: expected query [B, 1, " + std::to_string(d_model_) +
                                "] matching the cache's rows, got " + c10::str(query_states.sizes()));
  }
  const int64_t position = cache.length();
  torch::Tensor q = project_heads(q_proj, query_states);
  torch::Tensor k = project_heads(k_proj, query_states);
  const torch::Tensor v = project_heads(v_proj, query_states);
  if (rotary_) {
    q = apply_rotary(q, rope_theta_, max_positions_, position);
    k = apply_rotary(k, rope_theta_, max_positions_, position);
  }
  cache.k = cache.k.defined() ? torch::cat({cache.k, k}, 2) : k;
  cache.v = cache.v.defined() ? torch::cat({cache.v, v}, 2) : v;
  // The new position's row of the causal masks (every key is a real token).
  const int64_t b = query_states.size(0);
  const int64_t keys = position + 1;
  const auto j = torch::arange(keys, torch::TensorOptions().dtype(torch::kLong).device(query_states.device()));
  const auto row = [&](int64_t window) {
    return visible_keys(torch::full({1}, position, j.options()), j, /*causal=*/true, window)
        .view({1, 1, 1, keys})
        .expand({b, 1, 1, keys});
  };
  AttentionMasks masks;
  if (type_ != AttentionType::Local) masks.global = row(0);
  if (type_ != AttentionType::Global) masks.local = row(local_window_);
  return attend_and_project(q, cache.k, cache.v, masks, query_states);
}

}  // namespace moetrain::models

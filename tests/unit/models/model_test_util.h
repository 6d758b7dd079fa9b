// Helpers shared by the models unit tests: a tiny config and padded batches.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "models/model_config.h"

namespace moetrain::models::testing {

// Small enough for a fast CPU suite; one MoE layer each in encoder and decoder
// (every = 2 with 2 layers), dropless so the decoder is strictly causal.
inline ModelConfig tiny_config() {
  ModelConfig c;
  c.vocab_size = 29;
  c.d_model = 16;
  c.n_heads = 2;
  c.d_ff = 24;
  c.encoder_layers = 2;
  c.decoder_layers = 2;
  c.max_positions = 32;
  c.local_window = 3;
  c.dropout = 0.0;
  c.attention_dropout = 0.0;
  c.init_std = 0.2;  // larger than the default so that perturbations are visible
  c.moe.num_experts = 4;
  c.moe.top_k = 2;
  c.moe.capacity_factor = 0.0;
  c.moe.every = 2;
  c.moe.d_ff_expert = 12;
  return c;
}

struct Batch {
  torch::Tensor src, src_mask, tgt, tgt_mask;
};

// B = 2; row 1 is padded at the end of both source and target (src_pad and
// tgt_pad padded positions).
inline Batch make_batch(const ModelConfig& cfg, int64_t src_len, int64_t tgt_len, int64_t src_pad = 2,
                        int64_t tgt_pad = 1, uint64_t seed = 7) {
  torch::Generator gen = at::detail::createCPUGenerator(seed);
  Batch b;
  b.src = torch::randint(1, cfg.vocab_size, {2, src_len}, gen, torch::kLong);
  b.tgt = torch::randint(1, cfg.vocab_size, {2, tgt_len}, gen, torch::kLong);
  b.src_mask = torch::ones({2, src_len}, torch::kBool);
  b.tgt_mask = torch::ones({2, tgt_len}, torch::kBool);
  if (src_pad > 0) b.src_mask[1].narrow(0, src_len - src_pad, src_pad).fill_(false);
  if (tgt_pad > 0) b.tgt_mask[1].narrow(0, tgt_len - tgt_pad, tgt_pad).fill_(false);
  b.src.masked_fill_(~b.src_mask, 0);
  b.tgt.masked_fill_(~b.tgt_mask, 0);
  return b;
}

// Another token id at [row, col] (never equal to the current one).
inline torch::Tensor perturb(const torch::Tensor& tokens, int64_t row, int64_t col, int64_t vocab) {
  torch::Tensor t = tokens.clone();
  const int64_t old = t[row][col].item<int64_t>();
  t[row][col] = (old + 5) % vocab == old ? (old + 1) % vocab : (old + 5) % vocab;
  return t;
}

// Names for parameterised tests.
inline std::string attention_name(AttentionType t) {
  switch (t) {
    case AttentionType::Global: return "Global";
    case AttentionType::Local: return "Local";
    case AttentionType::Dynamic: return "Dynamic";
  }
  return "Unknown";
}

inline std::string position_name(PositionType p) {
  switch (p) {
    case PositionType::Sinusoidal: return "Sinusoidal";
    case PositionType::Learned: return "Learned";
    case PositionType::Rotary: return "Rotary";
    case PositionType::SinusoidalFairseq: return "SinusoidalFairseq";
  }
  return "Unknown";
}

inline double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kDouble) - b.to(torch::kDouble)).abs().max().item<double>();
}

}  // namespace moetrain::models::testing

#include "models/flops.h"

namespace moetrain::models {

namespace {

int64_t linear(int64_t in, int64_t out, bool bias) { return in * out + (bias ? out : 0); }

int64_t norm(const ModelConfig& cfg) { return cfg.norm == NormType::LayerNorm ? 2 * cfg.d_model : cfg.d_model; }

// q, k, v, o and, for dynamic self-attention, the per-head gate.
int64_t attention(const ModelConfig& cfg, bool self_attention) {
  int64_t n = 4 * linear(cfg.d_model, cfg.d_model, cfg.bias);
  if (self_attention && cfg.attention == AttentionType::Dynamic) n += linear(cfg.d_model, cfg.n_heads, cfg.bias);
  return n;
}

struct FeedForwardCounts {
  int64_t total = 0;
  int64_t active = 0;
};

FeedForwardCounts feed_forward(const ModelConfig& cfg, int64_t layer) {
  if (!cfg.is_moe_layer(layer)) {
    const int64_t n = linear(cfg.d_model, cfg.d_ff, cfg.bias) + linear(cfg.d_ff, cfg.d_model, cfg.bias);
    return {n, n};
  }
  const int64_t f = cfg.expert_ffn_dim();
  const int64_t expert = linear(cfg.d_model, f, cfg.bias) + linear(f, cfg.d_model, cfg.bias);
  const int64_t router = cfg.d_model * cfg.moe.num_experts;  // no bias
  return {router + cfg.moe.num_experts * expert, router + cfg.moe.top_k * expert};
}

}  // namespace

ParameterCounts count_parameters(const ModelConfig& cfg) {
  ParameterCounts c;
  for (int64_t i = 0; i < cfg.encoder_layers; ++i) {
    const auto ffn = feed_forward(cfg, i);
    const int64_t rest = 2 * norm(cfg) + attention(cfg, true);
    c.total += rest + ffn.total;
    c.encoder_active += rest + ffn.active;
  }
  c.total += norm(cfg);
  c.encoder_active += norm(cfg);
  for (int64_t i = 0; i < cfg.decoder_layers; ++i) {
    const auto ffn = feed_forward(cfg, i);
    const int64_t rest = 3 * norm(cfg) + attention(cfg, true) + attention(cfg, false);
    c.total += rest + ffn.total;
    c.decoder_active += rest + ffn.active;
  }
  c.total += norm(cfg);
  c.decoder_active += norm(cfg);
  c.output_projection = cfg.vocab_size * cfg.d_model;
  c.total += cfg.vocab_size * cfg.d_model;                  // embed_tokens (the head when tied)
  if (!cfg.tie_embeddings) c.total += c.output_projection;  // lm_head
  if (cfg.position == PositionType::Learned) c.total += cfg.max_positions * cfg.d_model;
  c.active = c.encoder_active + c.decoder_active + c.output_projection;
  return c;
}

double train_step_flops(const ModelConfig& cfg, int64_t sequences, int64_t src_len, int64_t tgt_len) {
  const ParameterCounts c = count_parameters(cfg);
  const double b = static_cast<double>(sequences), s = static_cast<double>(src_len), t = static_cast<double>(tgt_len);
  const double dense = 6.0 * (static_cast<double>(c.encoder_active) * b * s +
                              static_cast<double>(c.decoder_active + c.output_projection) * b * t);
  const double scores =
      static_cast<double>(cfg.encoder_layers) * s * s + static_cast<double>(cfg.decoder_layers) * (t * t + t * s);
  const double attention = 3.0 * 4.0 * static_cast<double>(cfg.d_model) * b * scores;
  return dense + attention;
}

}  // namespace moetrain::models

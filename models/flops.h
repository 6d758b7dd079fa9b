// Parameter counts and model FLOPs of one training step, from the model
// config alone (bench/peers/common.py computes the same from its own modules;
// equal numbers for the same config show the peers build the same model).
//
// Model FLOPs of a step (the numerator of model FLOPs utilisation, MFU):
//   dense:     6 x (encoder active parameters x source positions
//                   + (decoder active parameters + output projection) x target positions)
//   attention: 3 x 4 x d_model x batch x (encoder_layers x S^2
//                                          + decoder_layers x (T^2 + T x S))
// where
//   - "active" parameters are those a token's forward multiplies by: every
//     parameter of a dense layer, and in an MoE layer the router and top_k of
//     the num_experts experts. Norms and biases are counted (negligible);
//   - the token and position embeddings are lookups, not matmuls, so they are
//     not counted; the output projection (vocab x d_model, tied or not) is;
//   - positions are the batch's [B, S] and [B, T] shapes, padded ones
//     included (the GPU computes them);
//   - attention is QK^T and AV, 2 x 2 x Tq x Tk x d_model forward, x3 for
//     forward and backward. The decoder's causal self-attention is counted
//     in full (T^2, not T^2 / 2), as moetrain passes an explicit mask and the
//     attention kernel computes every score, and as PaLM's MFU counts it;
//   - activation checkpointing's recomputation is not counted (model FLOPs,
//     not hardware FLOPs), so MFU compares runs with and without it fairly.
#pragma once

#include <cstdint>

#include "models/model_config.h"

namespace moetrain::models {

struct ParameterCounts {
  int64_t total = 0;              // every parameter (the tied embedding once)
  int64_t active = 0;             // per token: MoE layers count the router and top_k experts only
  int64_t encoder_active = 0;     // encoder layers and final norm
  int64_t decoder_active = 0;     // decoder layers and final norm
  int64_t output_projection = 0;  // vocab_size x d_model
};

// cfg.vocab_size must be set. LoRA adapters are not counted.
ParameterCounts count_parameters(const ModelConfig& cfg);

// Model FLOPs of one optimizer step over `sequences` sequence pairs of
// src_len source and tgt_len target positions (the whole global batch).
double train_step_flops(const ModelConfig& cfg, int64_t sequences, int64_t src_len, int64_t tgt_len);

}  // namespace moetrain::models

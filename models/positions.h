// Position information for the encoder-decoder, one of three kinds
// (ModelConfig::position):
//   - sinusoidal: the fixed Vaswani et al. table, PE[p, 2i] = sin(p / 10000^(2i/d)),
//     PE[p, 2i+1] = cos(p / 10000^(2i/d)), added to the token embeddings;
//   - learned: a trained table [max_positions, d_model] added to the embeddings;
//   - rotary: no additive term; q and k of *self*-attention are rotated instead
//     (apply_rotary, the half-split "rotate_half" layout of GPT-NeoX / LLaMA).
// Every kind refuses positions at or beyond max_positions with
// std::invalid_argument, so an over-long batch fails loudly instead of
// silently reading past a table or extrapolating rotary angles.
#pragma once

#include <torch/torch.h>

#include <cstdint>

#include "models/model_config.h"

namespace moetrain::models {

// Throws std::invalid_argument naming the length and the limit when positions
// [offset, offset + length) do not all lie below max_positions.
void check_positions(int64_t length, int64_t offset, int64_t max_positions);

// The Vaswani table, fp32 [num_positions, dim] (dim may be odd: the last
// column is then a sine).
torch::Tensor sinusoidal_table(int64_t num_positions, int64_t dim);

// Additive positions (sinusoidal or learned), shared by encoder and decoder.
// Registered names: `weight` [max_positions, d_model] for learned positions;
// for sinusoidal, the non-trained buffer `table` (kept as a buffer so that
// module.to(device) moves it).
class AbsolutePositionsImpl : public torch::nn::Module {
 public:
  explicit AbsolutePositionsImpl(const ModelConfig& cfg);  // cfg.position != Rotary

  // x [B, L, D] -> x + positions[offset : offset + L], computed in x's dtype
  // (the buffer is fp32 and is cast at use, so bf16 parameters work).
  torch::Tensor forward(const torch::Tensor& x, int64_t offset = 0);

  torch::Tensor weight;  // learned only
  torch::Tensor table;   // sinusoidal only

 private:
  PositionType type_;
  int64_t max_positions_;
  int64_t dim_;
};
TORCH_MODULE(AbsolutePositions);

// Rotates x [B, H, L, head_dim] for positions offset .. offset+L-1 with
// frequencies theta^(-2i/head_dim). Angles and the rotation are computed in fp32
// and the result is cast back to x's dtype. head_dim must be even.
torch::Tensor apply_rotary(const torch::Tensor& x, double theta, int64_t max_positions,
                           int64_t offset = 0);

}  // namespace moetrain::models

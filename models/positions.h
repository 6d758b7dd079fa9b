// Position information for the encoder-decoder, one of four kinds
// (ModelConfig::position):
//   - sinusoidal: the fixed Vaswani et al. table, PE[p, 2i] = sin(p / 10000^(2i/d)),
//     PE[p, 2i+1] = cos(p / 10000^(2i/d)), added to the token embeddings;
//   - sinusoidal_fairseq: the fixed table of fairseq, M2M100 and NLLB(-MoE),
//     with h = d/2 sines followed by h cosines (not interleaved) and
//     frequencies w_i = 10000^(-i/(h-1)): row r = [sin(r w_0) .. sin(r w_{h-1}),
//     cos(r w_0) .. cos(r w_{h-1})] (a zero last column when d is odd). Those
//     models number a sequence's tokens from padding_idx + 1, so position p
//     reads row p + pad_id + 1 (ModelConfig::pad_id: 0 for moetrain's
//     tokenizers, 1 for NLLB's) and a model computes what Hugging Face's
//     NLLB-MoE and M2M100 compute for right-padded batches (padded
//     tokens get a real position here and the zero row there; no real
//     token attends to them, so no real token's output differs). The table
//     is computed in fp32 with the same operations fairseq uses, so it is the
//     one NLLB-MoE was trained with;
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

// The fairseq table, fp32 [num_rows, dim], rows 0 .. num_rows-1 as defined
// above (row 0 is all sines 0 and cosines 1; fairseq zeroes its padding row
// itself). Throws std::invalid_argument when dim < 4 (h - 1 would be 0).
torch::Tensor fairseq_sinusoidal_table(int64_t num_rows, int64_t dim);

// Additive positions (sinusoidal, sinusoidal_fairseq or learned), shared by
// encoder and decoder. Registered names: `weight` [max_positions, d_model]
// for learned positions; for the sinusoidal kinds, the non-trained buffer
// `table` [max_positions, d_model] (kept as a buffer so that module.to(device)
// moves it; for sinusoidal_fairseq its row p is the fairseq table's row
// p + pad_id + 1).
class AbsolutePositionsImpl : public torch::nn::Module {
 public:
  explicit AbsolutePositionsImpl(const ModelConfig& cfg);  // cfg.position != Rotary

  // x [B, L, D] -> x + positions[offset : offset + L], computed in x's dtype
  // (the buffer is fp32 and is cast at use, so bf16 parameters work).
  torch::Tensor forward(const torch::Tensor& x, int64_t offset = 0);
  // The same at the given positions [L] int64 (context parallelism: a rank's
  // positions are not contiguous).
  torch::Tensor at_positions(const torch::Tensor& x, const torch::Tensor& positions);

  torch::Tensor weight;  // learned only
  torch::Tensor table;   // the sinusoidal kinds only

 private:
  PositionType type_;
  int64_t max_positions_;
  int64_t dim_;
};
TORCH_MODULE(AbsolutePositions);

// Rotates x [B, H, L, head_dim] for positions offset .. offset+L-1 with
// frequencies theta^(-2i/head_dim). Angles and the rotation are computed in fp32
// and the result is cast back to x's dtype. head_dim must be even.
torch::Tensor apply_rotary(const torch::Tensor& x, double theta, int64_t max_positions, int64_t offset = 0);
// The same at the given positions [L] int64.
torch::Tensor apply_rotary(const torch::Tensor& x, double theta, int64_t max_positions, const torch::Tensor& positions);

}  // namespace moetrain::models

#include "models/positions.h"

#include <cmath>
#include <stdexcept>
#include <string>

namespace moetrain::models {

void check_positions(int64_t length, int64_t offset, int64_t max_positions) {
  if (length < 0 || offset < 0) {
    throw std::invalid_argument("positions: negative length " + std::to_string(length) + " or offset " +
                                std::to_string(offset));
  }
  if (offset + length > max_positions) {
    throw std::invalid_argument("positions: sequence length " + std::to_string(length) +
                                (offset > 0 ? " at offset " + std::to_string(offset) : "") + " exceeds max_positions " +
                                std::to_string(max_positions));
  }
}

torch::Tensor sinusoidal_table(int64_t num_positions, int64_t dim) {
  const auto f64 = torch::TensorOptions().dtype(torch::kDouble);
  // Computed in double so the table does not depend on fp32 rounding of large angles.
  const torch::Tensor pos = torch::arange(num_positions, f64).unsqueeze(1);
  const torch::Tensor even = torch::arange(0, dim, 2, f64);
  const torch::Tensor angles = pos / torch::pow(10000.0, even / static_cast<double>(dim));
  torch::Tensor table = torch::zeros({num_positions, dim}, f64);
  table.index_put_({torch::indexing::Slice(), torch::indexing::Slice(0, dim, 2)}, torch::sin(angles));
  const int64_t n_odd = dim / 2;
  table.index_put_({torch::indexing::Slice(), torch::indexing::Slice(1, dim, 2)},
                   torch::cos(angles.narrow(1, 0, n_odd)));
  return table.to(torch::kFloat);
}

torch::Tensor fairseq_sinusoidal_table(int64_t num_rows, int64_t dim) {
  if (dim < 4) {
    throw std::invalid_argument("positions: sinusoidal_fairseq needs a dimension of at least 4, got " +
                                std::to_string(dim));
  }
  // fp32 throughout, in fairseq's order of operations, so the values are the
  // ones its models were trained with.
  const auto f32 = torch::TensorOptions().dtype(torch::kFloat);
  const int64_t half = dim / 2;
  const double step = std::log(10000.0) / static_cast<double>(half - 1);
  const torch::Tensor freq = torch::exp(torch::arange(half, f32) * -step);
  const torch::Tensor angles = torch::arange(num_rows, f32).unsqueeze(1) * freq.unsqueeze(0);
  torch::Tensor table = torch::cat({torch::sin(angles), torch::cos(angles)}, 1);
  if (dim % 2 == 1) table = torch::cat({table, torch::zeros({num_rows, 1}, f32)}, 1);
  return table;
}

AbsolutePositionsImpl::AbsolutePositionsImpl(const ModelConfig& cfg)
    : type_(cfg.position), max_positions_(cfg.max_positions), dim_(cfg.d_model) {
  if (cfg.pad_id < 0) throw std::invalid_argument("positions: pad_id must be >= 0, got " + std::to_string(cfg.pad_id));
  if (max_positions_ <= 0) {
    throw std::invalid_argument("positions: max_positions must be positive, got " + std::to_string(max_positions_));
  }
  switch (type_) {
    case PositionType::Sinusoidal: table = register_buffer("table", sinusoidal_table(max_positions_, dim_)); break;
    case PositionType::SinusoidalFairseq:
      // fairseq numbers a sequence's tokens from padding_idx + 1: position p
      // is row p + pad_id + 1.
      table = register_buffer("table", fairseq_sinusoidal_table(max_positions_ + cfg.pad_id + 1, dim_)
                                           .narrow(0, cfg.pad_id + 1, max_positions_)
                                           .clone());
      break;
    case PositionType::Learned:
      weight = register_parameter("weight", torch::empty({max_positions_, dim_}));
      {
        torch::NoGradGuard no_grad;
        weight.normal_(0.0, cfg.init_std);
      }
      break;
    case PositionType::Rotary:
      throw std::invalid_argument("AbsolutePositions: rotary positions are applied in attention");
  }
}

torch::Tensor AbsolutePositionsImpl::forward(const torch::Tensor& x, int64_t offset) {
  if (x.dim() != 3 || x.size(2) != dim_) {
    throw std::invalid_argument("AbsolutePositions: expected x [B, L, " + std::to_string(dim_) + "], got " +
                                c10::str(x.sizes()));
  }
  const int64_t length = x.size(1);
  check_positions(length, offset, max_positions_);
  const torch::Tensor& source = type_ == PositionType::Learned ? weight : table;
  return x + source.narrow(0, offset, length).to(x.scalar_type()).unsqueeze(0);
}

torch::Tensor AbsolutePositionsImpl::at_positions(const torch::Tensor& x, const torch::Tensor& positions) {
  if (x.dim() != 3 || x.size(2) != dim_ || positions.dim() != 1 || positions.size(0) != x.size(1)) {
    throw std::invalid_argument("AbsolutePositions: expected x [B, L, " + std::to_string(dim_) +
                                "] and positions [L], got " + c10::str(x.sizes()) + " and " +
                                c10::str(positions.sizes()));
  }
  if (positions.numel() > 0) check_positions(positions.max().item<int64_t>() + 1, 0, max_positions_);
  const torch::Tensor& source = type_ == PositionType::Learned ? weight : table;
  return x + source.index_select(0, positions.to(source.device())).to(x.scalar_type()).unsqueeze(0);
}

torch::Tensor apply_rotary(const torch::Tensor& x, double theta, int64_t max_positions, int64_t offset) {
  if (x.dim() != 4) {
    throw std::invalid_argument("apply_rotary: expected x [B, H, L, head_dim], got " + c10::str(x.sizes()));
  }
  check_positions(x.size(2), offset, max_positions);
  const auto longs = torch::TensorOptions().dtype(torch::kLong).device(x.device());
  return apply_rotary(x, theta, max_positions, torch::arange(offset, offset + x.size(2), longs));
}

torch::Tensor apply_rotary(const torch::Tensor& x, double theta, int64_t max_positions,
                           const torch::Tensor& positions) {
  if (x.dim() != 4 || positions.dim() != 1 || positions.size(0) != x.size(2)) {
    throw std::invalid_argument("apply_rotary: expected x [B, H, L, head_dim] and positions [L], got " +
                                c10::str(x.sizes()) + " and " + c10::str(positions.sizes()));
  }
  const int64_t head_dim = x.size(3);
  if (head_dim % 2 != 0) {
    throw std::invalid_argument("apply_rotary: head_dim must be even, got " + std::to_string(head_dim));
  }
  if (positions.numel() > 0) check_positions(positions.max().item<int64_t>() + 1, 0, max_positions);
  const auto f32 = torch::TensorOptions().dtype(torch::kFloat).device(x.device());
  const int64_t half = head_dim / 2;
  const torch::Tensor inv_freq =
      torch::pow(theta, -torch::arange(0, half, f32) * (2.0 / static_cast<double>(head_dim)));
  const torch::Tensor angles = positions.to(f32).unsqueeze(1) * inv_freq.unsqueeze(0);  // [L, half]
  const torch::Tensor cos = torch::cat({angles.cos(), angles.cos()}, -1);               // [L, hd]
  const torch::Tensor sin = torch::cat({angles.sin(), angles.sin()}, -1);
  const torch::Tensor x32 = x.to(torch::kFloat);
  const torch::Tensor x1 = x32.narrow(-1, 0, half);
  const torch::Tensor x2 = x32.narrow(-1, half, half);
  const torch::Tensor rotated = torch::cat({-x2, x1}, -1);
  return (x32 * cos + rotated * sin).to(x.scalar_type());
}

}  // namespace moetrain::models

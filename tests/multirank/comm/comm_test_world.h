// The world communicator every multi-rank comm test uses, created by
// test_main.cpp after MPI is initialised, plus helpers shared by the tests.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "parallel/communicator.h"

namespace moetrain::parallel::comm_test {

// Timeout of the test communicators: long enough for a loaded CI machine,
// short enough that a test that desynchronises the ranks ends the job soon.
constexpr double kTestTimeoutS = 60.0;

Communicator& test_world();

// Every rank of `comm`, for a split that copies it (traffic of its own).
inline std::vector<int64_t> all_ranks(const Communicator& comm) {
  std::vector<int64_t> ranks(static_cast<size_t>(comm.size()));
  for (int64_t r = 0; r < comm.size(); ++r) ranks[static_cast<size_t>(r)] = r;
  return ranks;
}

// The dtypes every backend must handle.
inline std::vector<torch::ScalarType> all_dtypes() {
  return {torch::kFloat, torch::kDouble, torch::kInt,      torch::kLong,
          torch::kChar,  torch::kByte,   torch::kBFloat16, torch::kHalf};
}

// A tensor that depends on `rank`: small integers, so every dtype holds them
// exactly and sums over a few ranks stay exact (below 127 for int8).
inline torch::Tensor rank_tensor(int64_t rank, int64_t numel, torch::ScalarType dtype) {
  auto values = (torch::arange(numel, torch::kLong) * 3 + rank * 5) % 11;
  const bool is_signed = dtype != torch::kByte && dtype != torch::kBool;
  if (is_signed) values = values - 5;
  return values.to(dtype);
}

}  // namespace moetrain::parallel::comm_test

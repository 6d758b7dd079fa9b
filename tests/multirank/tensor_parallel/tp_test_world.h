// Shared setup of the multi-rank tensor-parallel suite: the world and the TP
// groups the tests run on (created by test_main.cpp after MPI is initialised),
// seeded tensors every rank generates identically, and comparisons.
#pragma once

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "parallel/communicator.h"

namespace moetrain::parallel::tp_test {

// Timeout of the test communicators: long enough for a loaded CI machine,
// short enough that a test that desynchronises the ranks ends the job soon.
constexpr double kTestTimeoutS = 60.0;

Communicator& test_world();

// The TP groups every test runs on, each a partition of the world: the whole
// world, and at 4 ranks also pairs {0,1}, {2,3} (a group rank that differs
// from the world rank). Every rank iterates over the same list in the same
// order, holding the group it belongs to.
std::vector<Communicator*> tp_groups();

// A group of size 1 (every rank alone): the "no tensor parallelism" path.
Communicator& solo_group();

// Describes a group for failure messages: "tp=2 rank 1".
inline std::string describe(const Communicator& group) {
  return "tp=" + std::to_string(group.size()) + " rank " + std::to_string(group.rank());
}

// The same values on every rank for the same seed.
inline torch::Tensor seeded_randn(uint64_t seed, at::IntArrayRef shape, torch::ScalarType dtype = torch::kFloat) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  return torch::randn(shape, gen, torch::TensorOptions().dtype(torch::kFloat)).to(dtype);
}

inline torch::Tensor seeded_randint(uint64_t seed, int64_t high, at::IntArrayRef shape) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  return torch::randint(high, shape, gen, torch::TensorOptions().dtype(torch::kLong));
}

// Elementwise |a - b| <= atol + rtol * |b| in fp64, with the worst offender in
// the message.
inline ::testing::AssertionResult all_close(const torch::Tensor& actual, const torch::Tensor& expected, double rtol,
                                            double atol) {
  if (!actual.defined() || !expected.defined()) {
    return ::testing::AssertionFailure() << "undefined tensor (actual " << actual.defined() << ", expected "
                                         << expected.defined() << ")";
  }
  if (actual.sizes() != expected.sizes()) {
    return ::testing::AssertionFailure() << "shape " << actual.sizes() << " != expected " << expected.sizes();
  }
  const torch::Tensor a = actual.detach().to(torch::kDouble);
  const torch::Tensor b = expected.detach().to(torch::kDouble);
  const torch::Tensor excess = (a - b).abs() - (atol + rtol * b.abs());
  if (excess.numel() == 0 || excess.max().item<double>() <= 0.0) return ::testing::AssertionSuccess();
  const int64_t worst = excess.reshape({-1}).argmax().item<int64_t>();
  return ::testing::AssertionFailure() << "element " << worst << ": " << a.reshape({-1})[worst].item<double>()
                                       << " vs expected " << b.reshape({-1})[worst].item<double>() << " (rtol " << rtol
                                       << ", atol " << atol << ")";
}

// The slice [rank * n, (rank + 1) * n) of `full` along `dim`, n = size / parts.
inline torch::Tensor shard_of(const torch::Tensor& full, int64_t dim, int64_t parts, int64_t rank) {
  const int64_t n = full.size(dim) / parts;
  return full.narrow(dim, rank * n, n);
}

// The real ids of a vocabulary shard, [begin, real_end), along `dim` of a
// tensor over the full vocabulary (empty for a rank holding padding only,
// whose begin may lie past the end).
inline torch::Tensor real_slice(const torch::Tensor& full, int64_t dim, int64_t begin, int64_t real_size) {
  return full.narrow(dim, std::min(begin, full.size(dim)), real_size);
}

}  // namespace moetrain::parallel::tp_test

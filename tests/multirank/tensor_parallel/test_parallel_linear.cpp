// Column-parallel then row-parallel linear layers (the Megatron MLP) against a
// plain 2-layer MLP every rank computes on the full weights: the output, the
// input gradient, and each weight/bias gradient equal to this rank's slice of
// the full one.
#include <gtest/gtest.h>

#include <stdexcept>

#include "parallel/tensor_parallel.h"
#include "tests/multirank/tensor_parallel/tp_test_world.h"

namespace moetrain::parallel::tp_test {
namespace {

constexpr int64_t kModel = 6, kHidden = 8;  // kHidden splits over 2 and 4 ranks

struct FullMlp {
  torch::Tensor x, w1, b1, w2, b2;  // [2, 3, D], [H, D], [H], [D, H], [D]
};

FullMlp make_mlp(bool with_bias) {
  FullMlp m;
  m.x = seeded_randn(10, {2, 3, kModel}).requires_grad_();
  m.w1 = seeded_randn(11, {kHidden, kModel}).requires_grad_();
  m.w2 = seeded_randn(12, {kModel, kHidden}).requires_grad_();
  if (with_bias) {
    m.b1 = seeded_randn(13, {kHidden}).requires_grad_();
    m.b2 = seeded_randn(14, {kModel}).requires_grad_();
  }
  return m;
}

torch::Tensor leaf_copy(const torch::Tensor& t) {
  return t.defined() ? t.detach().clone().requires_grad_() : torch::Tensor();
}

TEST(TensorParallelLinear, ColumnThenRowMatchesAPlainMlp) {
  for (Communicator* group : tp_groups()) {
    for (bool with_bias : {true, false}) {
      SCOPED_TRACE(describe(*group) + (with_bias ? " with bias" : " without bias"));
      const int64_t tp = group->size(), rank = group->rank();
      FullMlp full = make_mlp(with_bias);
      const torch::Tensor upstream = seeded_randn(15, {2, 3, kModel});
      const torch::Tensor y_ref = torch::linear(torch::gelu(torch::linear(full.x, full.w1, full.b1)), full.w2, full.b2);
      (y_ref * upstream).sum().backward();

      const torch::Tensor x = leaf_copy(full.x);
      const torch::Tensor w1 = leaf_copy(shard_of(full.w1, 0, tp, rank));
      const torch::Tensor b1 = with_bias ? leaf_copy(shard_of(full.b1, 0, tp, rank)) : torch::Tensor();
      const torch::Tensor w2 = leaf_copy(shard_of(full.w2, 1, tp, rank));
      const torch::Tensor b2 = leaf_copy(full.b2);
      group->reset_stats();
      const torch::Tensor hidden = column_parallel_linear(x, w1, b1, group);
      EXPECT_EQ(hidden.sizes(), (std::vector<int64_t>{2, 3, kHidden / tp}));
      const torch::Tensor y = row_parallel_linear(torch::gelu(hidden), w2, b2, group);
      EXPECT_EQ(group->stats().at("all_reduce").calls, 1) << "forward: the row-parallel sum only";
      EXPECT_TRUE(all_close(y, y_ref, 1e-5, 1e-6));

      (y * upstream).sum().backward();
      EXPECT_EQ(group->stats().at("all_reduce").calls, 2) << "backward: the column-parallel input gradient";
      EXPECT_TRUE(all_close(x.grad(), full.x.grad(), 1e-5, 1e-6));
      EXPECT_TRUE(all_close(w1.grad(), shard_of(full.w1.grad(), 0, tp, rank), 1e-5, 1e-6));
      EXPECT_TRUE(all_close(w2.grad(), shard_of(full.w2.grad(), 1, tp, rank), 1e-5, 1e-6));
      if (with_bias) {
        EXPECT_TRUE(all_close(b1.grad(), shard_of(full.b1.grad(), 0, tp, rank), 1e-5, 1e-6));
        EXPECT_TRUE(all_close(b2.grad(), full.b2.grad(), 1e-5, 1e-6));
      }
    }
  }
}

TEST(TensorParallelLinear, SizeOneAndNullGroupsAreExactlyPlainLinear) {
  for (Communicator* group : {static_cast<Communicator*>(nullptr), &solo_group()}) {
    FullMlp full = make_mlp(true);
    const torch::Tensor y_ref = torch::linear(torch::gelu(torch::linear(full.x, full.w1, full.b1)), full.w2, full.b2);
    const torch::Tensor y = row_parallel_linear(torch::gelu(column_parallel_linear(full.x, full.w1, full.b1, group)),
                                                full.w2, full.b2, group);
    EXPECT_TRUE(torch::equal(y, y_ref));
    if (group) {
      EXPECT_TRUE(group->stats().empty());
    }
  }
}

TEST(TensorParallelLinear, RejectsMismatchedShapes) {
  for (Communicator* group : tp_groups()) {
    SCOPED_TRACE(describe(*group));
    const torch::Tensor x = torch::zeros({2, kModel});
    EXPECT_THROW(column_parallel_linear(x, torch::zeros({4, kModel + 1}), {}, group), std::invalid_argument);
    EXPECT_THROW(column_parallel_linear(x, torch::zeros({4, kModel}), torch::zeros({5}), group), std::invalid_argument);
    EXPECT_THROW(row_parallel_linear(x, torch::zeros({4, 3}), {}, group), std::invalid_argument);
    EXPECT_THROW(row_parallel_linear(x, torch::zeros({4, kModel}), torch::zeros({kModel}), group),
                 std::invalid_argument);
  }
}

}  // namespace
}  // namespace moetrain::parallel::tp_test

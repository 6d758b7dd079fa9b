// The f/g pair and scatter/gather on 2 and 4 ranks: forward values and input
// gradients against what every rank computes locally from the seeded inputs
// of all ranks, the collectives each direction makes, and the plain
// single-process behaviour of null and size-1 groups.
#include <gtest/gtest.h>

#include <stdexcept>

#include "parallel/tensor_parallel.h"
#include "tests/multirank/tensor_parallel/tp_test_world.h"

namespace moetrain::parallel::tp_test {
namespace {

int64_t calls(const Communicator& group, const char* op) {
  const auto it = group.stats().find(op);
  return it == group.stats().end() ? 0 : it->second.calls;
}

TEST(TensorParallelRegions, CopyIsIdentityForwardAndSumsGradientsBackward) {
  for (Communicator* group : tp_groups()) {
    SCOPED_TRACE(describe(*group));
    const int64_t tp = group->size();
    const torch::Tensor x = seeded_randn(1, {3, 4, 6}).requires_grad_();
    group->reset_stats();
    const torch::Tensor y = copy_to_tensor_parallel_region(x, group);
    EXPECT_TRUE(torch::equal(y, x));
    EXPECT_EQ(calls(*group, "all_reduce"), 0) << "f communicates nothing in forward";

    // Each rank weighs the output differently, so the gradient sums them all.
    (y * seeded_randn(100 + group->rank(), {3, 4, 6})).sum().backward();
    torch::Tensor expected = torch::zeros({3, 4, 6});
    for (int64_t r = 0; r < tp; ++r) expected += seeded_randn(100 + r, {3, 4, 6});
    EXPECT_TRUE(all_close(x.grad(), expected, 1e-6, 1e-6));
    EXPECT_EQ(calls(*group, "all_reduce"), 1);
  }
}

TEST(TensorParallelRegions, ReduceSumsForwardAndIsIdentityBackward) {
  for (Communicator* group : tp_groups()) {
    SCOPED_TRACE(describe(*group));
    const int64_t tp = group->size();
    const torch::Tensor x = seeded_randn(200 + group->rank(), {5, 6}).requires_grad_();
    group->reset_stats();
    const torch::Tensor y = reduce_from_tensor_parallel_region(x, group);
    torch::Tensor expected = torch::zeros({5, 6});
    for (int64_t r = 0; r < tp; ++r) expected += seeded_randn(200 + r, {5, 6});
    EXPECT_TRUE(all_close(y, expected, 1e-6, 1e-6));
    EXPECT_TRUE(torch::equal(x, seeded_randn(200 + group->rank(), {5, 6}))) << "the input was reduced in place";
    EXPECT_EQ(calls(*group, "all_reduce"), 1);

    const torch::Tensor upstream = seeded_randn(300, {5, 6});
    (y * upstream).sum().backward();
    EXPECT_TRUE(torch::equal(x.grad(), upstream));
    EXPECT_EQ(calls(*group, "all_reduce"), 1) << "g communicates nothing in backward";
  }
}

TEST(TensorParallelRegions, ScatterKeepsOwnChunkAndGathersGradients) {
  for (Communicator* group : tp_groups()) {
    SCOPED_TRACE(describe(*group));
    const int64_t tp = group->size(), rank = group->rank();
    // A non-contiguous input: [2, 12, 3] transposed to [2, 3, 12].
    const torch::Tensor x = seeded_randn(400, {2, 12, 3}).transpose(1, 2).requires_grad_();
    ASSERT_FALSE(x.is_contiguous());
    const torch::Tensor s = scatter_to_tensor_parallel_region(x, group);
    EXPECT_TRUE(torch::equal(s, shard_of(x, -1, tp, rank)));
    EXPECT_EQ(s.sizes(), (std::vector<int64_t>{2, 3, 12 / tp}));

    const torch::Tensor upstream = seeded_randn(401, {2, 3, 12});
    (s * shard_of(upstream, -1, tp, rank)).sum().backward();
    EXPECT_TRUE(torch::equal(x.grad(), upstream)) << "every rank's chunk of the gradient, in rank order";
  }
}

TEST(TensorParallelRegions, GatherConcatenatesInRankOrderAndKeepsOwnGradientChunk) {
  for (Communicator* group : tp_groups()) {
    SCOPED_TRACE(describe(*group));
    const int64_t tp = group->size(), rank = group->rank();
    for (const auto& shape : {std::vector<int64_t>{2, 3, 8}, std::vector<int64_t>{8}}) {
      const torch::Tensor full = seeded_randn(500, shape);
      const torch::Tensor x = shard_of(full, -1, tp, rank).clone().requires_grad_();
      group->reset_stats();
      const torch::Tensor y = gather_from_tensor_parallel_region(x, group);
      EXPECT_TRUE(torch::equal(y, full));
      EXPECT_EQ(calls(*group, "all_gather"), 1);

      const torch::Tensor upstream = seeded_randn(501, shape);
      (y * upstream).sum().backward();
      EXPECT_TRUE(torch::equal(x.grad(), shard_of(upstream, -1, tp, rank)));
      EXPECT_EQ(calls(*group, "all_gather"), 1) << "gather's backward communicates nothing";
    }
  }
}

TEST(TensorParallelRegions, ScatterRejectsALastDimThatDoesNotSplitEvenly) {
  for (Communicator* group : tp_groups()) {
    SCOPED_TRACE(describe(*group));
    EXPECT_THROW(scatter_to_tensor_parallel_region(torch::zeros({3, 5}), group), std::invalid_argument);
    EXPECT_THROW(gather_from_tensor_parallel_region(torch::zeros({}), group), std::invalid_argument);
  }
}

TEST(TensorParallelRegions, NullAndSizeOneGroupsArePlainOps) {
  for (Communicator* group : {static_cast<Communicator*>(nullptr), &solo_group()}) {
    if (group) group->reset_stats();
    const torch::Tensor x = seeded_randn(600, {4, 6}).requires_grad_();
    const torch::Tensor upstream = seeded_randn(601, {4, 6});
    for (auto fn : {copy_to_tensor_parallel_region, reduce_from_tensor_parallel_region,
                    scatter_to_tensor_parallel_region, gather_from_tensor_parallel_region}) {
      x.mutable_grad() = torch::Tensor();
      const torch::Tensor y = fn(x, group);
      EXPECT_TRUE(torch::equal(y, x));
      (y * upstream).sum().backward();
      EXPECT_TRUE(torch::equal(x.grad(), upstream));
    }
    // Odd sizes are fine without parallelism.
    EXPECT_NO_THROW(scatter_to_tensor_parallel_region(torch::zeros({3, 5}), group));
    if (group) {
      EXPECT_TRUE(group->stats().empty()) << "a size-1 group must not communicate";
    }
  }
}

}  // namespace
}  // namespace moetrain::parallel::tp_test

// GradReducer: gradients reach the flat buffer exactly as accumulate_grads
// puts them there, buckets are handed out in one fixed order (the end of the
// flat space first) whatever order the backward completes them in, buckets
// whose parameters got no gradient are settled by finish(), and a failing
// reduction is rethrown.
#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <stdexcept>

#include "optim/flat_parameters.h"
#include "optim/grad_reducer.h"

using namespace moetrain::optim;

namespace {

// Three "layers" (units) of a small MLP plus one parameter no loss uses.
struct Toy {
  std::vector<torch::Tensor> w;
  torch::Tensor unused;
  std::unique_ptr<FlatParameters> flat;

  Toy() {
    torch::manual_seed(7);
    for (int i = 0; i < 3; ++i) w.push_back(torch::randn({6, 6}).requires_grad_());
    unused = torch::randn({5}).requires_grad_();
    std::vector<std::pair<std::string, torch::Tensor>> named;
    for (int i = 0; i < 3; ++i) named.emplace_back("encoder.layers." + std::to_string(i) + ".fc.weight", w[i]);
    named.emplace_back("decoder.final_norm.weight", unused);
    ShardingOptions sharding;
    sharding.shards = 2;  // padding as under DP 2
    flat = std::make_unique<FlatParameters>(
        named, torch::kFloat32, [](const std::string&, const torch::Tensor&) { return true; }, sharding);
  }

  torch::Tensor loss(const torch::Tensor& x) {
    torch::Tensor h = x;
    for (auto& p : w) h = torch::tanh(torch::matmul(h, p));
    return h.pow(2).sum();
  }
};

}  // namespace

TEST(GradReducer, BucketsCoverUnitsFromTheEnd) {
  Toy toy;
  const auto& units = toy.flat->units();
  const auto per_unit = GradReducer::make_buckets(*toy.flat, 0);
  ASSERT_EQ(per_unit.size(), units.size());
  for (size_t b = 0; b < per_unit.size(); ++b) {
    const size_t u = units.size() - 1 - b;
    EXPECT_EQ(per_unit[b].first_unit, u);
    EXPECT_EQ(per_unit[b].last_unit, u);
    EXPECT_EQ(per_unit[b].begin, units[u].offset);
    EXPECT_EQ(per_unit[b].end, units[u].offset + units[u].padded);
  }
  // At least 60 elements each: the 36-element layers pair up from the end.
  const auto grouped = GradReducer::make_buckets(*toy.flat, 60);
  int64_t covered = 0;
  for (const auto& b : grouped) {
    EXPECT_TRUE(b.end - b.begin >= 60 || &b == &grouped.back());
    covered += b.end - b.begin;
  }
  EXPECT_EQ(covered, toy.flat->padded_numel());
  EXPECT_EQ(grouped.back().begin, 0);
}

class GradReducerModes : public ::testing::TestWithParam<bool> {};

TEST_P(GradReducerModes, SameGradientsAsAccumulateInFixedOrder) {
  const bool async_thread = GetParam();
  Toy toy;
  const auto x1 = torch::randn({4, 6});
  const auto x2 = torch::randn({4, 6});

  // Reference: two micro-batches accumulated after each backward.
  toy.flat->zero_grads();
  toy.loss(x1).backward();
  toy.flat->accumulate_grads();
  toy.loss(x2).backward();
  toy.flat->accumulate_grads();
  const torch::Tensor expected = toy.flat->grads().clone();

  // The reducer takes the second micro-batch's gradients from the hooks.
  GradReducer reducer(*toy.flat, GradReducer::make_buckets(*toy.flat, 0), async_thread);
  toy.flat->zero_grads();
  toy.loss(x1).backward();
  toy.flat->accumulate_grads();
  std::mutex m;
  std::vector<size_t> order;
  std::vector<torch::Tensor> seen;
  reducer.arm(toy.flat->grads(), [&](const GradBucket& b) {
    std::lock_guard<std::mutex> lock(m);
    order.push_back(b.first_unit);
    seen.push_back(toy.flat->grads().narrow(0, b.begin, b.end - b.begin).clone());
  });
  toy.loss(x2).backward();
  reducer.finish();

  EXPECT_TRUE(torch::equal(toy.flat->grads(), expected)) << "hooks must add exactly what accumulate_grads adds";
  // Every bucket once, in the fixed order (last unit first), and each saw its
  // final values when handed out: the unused parameter's bucket included.
  const auto& buckets = reducer.buckets();
  ASSERT_EQ(order.size(), buckets.size());
  for (size_t b = 0; b < buckets.size(); ++b) {
    EXPECT_EQ(order[b], buckets[b].first_unit);
    EXPECT_TRUE(torch::equal(seen[b], expected.narrow(0, buckets[b].begin, buckets[b].end - buckets[b].begin)));
  }
  for (const auto& p : toy.w) EXPECT_FALSE(p.grad().defined()) << "finish() releases .grad";

  // Disarmed: a later backward leaves the flat buffer alone and fills .grad.
  const torch::Tensor before = toy.flat->grads().clone();
  toy.loss(x1).backward();
  EXPECT_TRUE(torch::equal(toy.flat->grads(), before));
  EXPECT_TRUE(toy.w[0].grad().defined());
}

TEST_P(GradReducerModes, FailureIsRethrownAndLaterBucketsAreSkipped) {
  Toy toy;
  GradReducer reducer(*toy.flat, GradReducer::make_buckets(*toy.flat, 0), GetParam());
  toy.flat->zero_grads();
  std::atomic<int> calls{0};
  reducer.arm(toy.flat->grads(), [&](const GradBucket&) {
    ++calls;
    throw std::runtime_error("all_reduce failed");
  });
  toy.loss(torch::randn({2, 6})).backward();
  EXPECT_THROW(reducer.finish(), std::runtime_error);
  EXPECT_EQ(calls.load(), 1);
  // Usable again afterwards.
  reducer.arm(toy.flat->grads(), [](const GradBucket&) {});
  toy.loss(torch::randn({2, 6})).backward();
  EXPECT_NO_THROW(reducer.finish());
}

INSTANTIATE_TEST_SUITE_P(ThreadAndInline, GradReducerModes, ::testing::Values(true, false));

// TensorParallelRng: dropout masks differ across the ranks of a TP group, are
// reproducible from (seed, rank), replay after set_state, leave the default
// generator (the replicated stream) alone, and scale what they keep.
#include <gtest/gtest.h>

#include <stdexcept>

#include "parallel/tensor_parallel.h"
#include "tests/multirank/tensor_parallel/tp_test_world.h"

namespace moetrain::parallel::tp_test {
namespace {

constexpr int64_t kElements = 4096;

// The kept positions of a dropout of ones.
torch::Tensor kept(TensorParallelRng& rng, double p, const torch::Device& device = torch::kCPU) {
  return rng.dropout(torch::ones({kElements}, torch::TensorOptions().device(device)), p, true).cpu() != 0;
}

TEST(TensorParallelRng, MasksDifferAcrossTheRanksOfAGroup) {
  for (Communicator* group : tp_groups()) {
    SCOPED_TRACE(describe(*group));
    const int64_t tp = group->size();
    TensorParallelRng rng(1234, group->rank());
    const torch::Tensor mine = kept(rng, 0.5).to(torch::kByte);
    torch::Tensor all = torch::empty({tp, kElements}, torch::kByte);
    group->all_gather(mine, all);
    for (int64_t a = 0; a < tp; ++a) {
      for (int64_t b = a + 1; b < tp; ++b) {
        EXPECT_FALSE(torch::equal(all[a], all[b])) << "ranks " << a << " and " << b << " drew the same mask";
      }
    }
    const double fraction = mine.to(torch::kDouble).mean().item<double>();
    EXPECT_GT(fraction, 0.45);
    EXPECT_LT(fraction, 0.55);
  }
}

TEST(TensorParallelRng, SameSeedAndRankGiveTheSameMask) {
  const int64_t rank = test_world().rank();
  TensorParallelRng a(7, rank), b(7, rank);
  const torch::Tensor mask = kept(a, 0.3);
  EXPECT_TRUE(torch::equal(mask, kept(b, 0.3)));
  EXPECT_EQ(a.seed(), b.seed());
  TensorParallelRng other_seed(8, rank), next_rank(7, rank + 1);
  EXPECT_FALSE(torch::equal(mask, kept(other_seed, 0.3)));
  EXPECT_FALSE(torch::equal(mask, kept(next_rank, 0.3)));
  // Seeds are scrambled before the rank is added: (7, r+1) and (8, r) differ.
  TensorParallelRng seed8(8, rank), seed7_next(7, rank + 1);
  EXPECT_FALSE(torch::equal(kept(seed8, 0.3), kept(seed7_next, 0.3)));
}

TEST(TensorParallelRng, DropoutLeavesTheDefaultGeneratorAlone) {
  const torch::Tensor before = at::detail::getDefaultCPUGenerator().get_state();
  TensorParallelRng rng(5, test_world().rank());
  kept(rng, 0.5);
  EXPECT_TRUE(torch::equal(at::detail::getDefaultCPUGenerator().get_state(), before));
}

TEST(TensorParallelRng, SetStateReplaysTheSameMasks) {
  TensorParallelRng rng(99, test_world().rank());
  const std::vector<torch::Tensor> state = rng.get_state();
  const torch::Tensor first = kept(rng, 0.5);
  const torch::Tensor second = kept(rng, 0.5);
  EXPECT_FALSE(torch::equal(first, second)) << "the generator did not advance";
  rng.set_state(state);
  EXPECT_TRUE(torch::equal(kept(rng, 0.5), first));
  EXPECT_TRUE(torch::equal(kept(rng, 0.5), second));
  std::vector<torch::Tensor> too_many = state;
  too_many.push_back(state[0]);
  EXPECT_THROW(rng.set_state(too_many), std::invalid_argument);
}

TEST(TensorParallelRng, InvertedDropoutScalesKeptValuesAndItsGradient) {
  TensorParallelRng rng(3, test_world().rank());
  for (auto dtype : {torch::kFloat, torch::kBFloat16}) {
    SCOPED_TRACE(c10::toString(dtype));
    const torch::Tensor x = seeded_randn(40, {64, 32}, dtype).requires_grad_();
    const torch::Tensor y = rng.dropout(x, 0.25, true);
    EXPECT_EQ(y.scalar_type(), dtype);
    const torch::Tensor keep = y != 0;
    // Kept values are x / 0.75 (rounded in the dtype), dropped ones zero.
    EXPECT_TRUE(all_close(y.masked_select(keep), (x.detach().to(torch::kFloat) / 0.75).masked_select(keep),
                          dtype == torch::kFloat ? 1e-6 : 1e-2, 0.0));
    y.sum().backward();
    EXPECT_TRUE(all_close(x.grad(), keep.to(torch::kFloat) / 0.75, dtype == torch::kFloat ? 1e-6 : 1e-2, 0.0));
  }
}

TEST(TensorParallelRng, IdentityWhenNotTrainingOrPIsZero) {
  TensorParallelRng rng(3, test_world().rank());
  const torch::Tensor x = seeded_randn(41, {8, 8});
  const std::vector<torch::Tensor> state = rng.get_state();
  EXPECT_TRUE(rng.dropout(x, 0.5, false).is_same(x));
  EXPECT_TRUE(rng.dropout(x, 0.0, true).is_same(x));
  EXPECT_TRUE(torch::equal(rng.get_state()[0], state[0])) << "no draw when dropout is off";
  EXPECT_TRUE(torch::equal(rng.dropout(x, 1.0, true), torch::zeros_like(x)));
  EXPECT_THROW(rng.dropout(x, 1.5, true), std::invalid_argument);
  EXPECT_THROW(rng.dropout(x, -0.1, true), std::invalid_argument);
}

TEST(TensorParallelRng, CudaGeneratorDiffersPerRankAndReplays) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device: the CUDA generator is not exercised";
  for (Communicator* group : tp_groups()) {
    SCOPED_TRACE(describe(*group));
    const int64_t tp = group->size();
    TensorParallelRng rng(1234, group->rank());
    const torch::Device cuda(torch::kCUDA, 0);
    EXPECT_EQ(rng.generator(cuda).device().type(), torch::kCUDA);
    const std::vector<torch::Tensor> state = rng.get_state();
    const torch::Tensor mine = kept(rng, 0.5, cuda).to(torch::kByte);
    torch::Tensor all = torch::empty({tp, kElements}, torch::kByte);
    group->all_gather(mine, all);
    for (int64_t a = 0; a < tp; ++a) {
      for (int64_t b = a + 1; b < tp; ++b) EXPECT_FALSE(torch::equal(all[a], all[b]));
    }
    rng.set_state(state);
    EXPECT_TRUE(torch::equal(kept(rng, 0.5, cuda).to(torch::kByte), mine));
    TensorParallelRng same(1234, group->rank());
    EXPECT_TRUE(torch::equal(kept(same, 0.5, cuda).to(torch::kByte), mine));
  }
}

}  // namespace
}  // namespace moetrain::parallel::tp_test

// vocab_shard's layout (hand-computed cases) and the vocabulary-parallel
// embedding against torch::embedding on the full table every rank builds from
// the same seed: output on every rank, and this rank's rows of the full
// weight gradient, with vocabularies that do and do not divide by tp (padding
// rows, and at V=5, tp=4 a rank holding padding only).
#include <gtest/gtest.h>

#include <stdexcept>

#include "parallel/tensor_parallel.h"
#include "tests/multirank/tensor_parallel/tp_test_world.h"

namespace moetrain::parallel::tp_test {
namespace {

constexpr int64_t kDim = 4;

TEST(VocabShard, LayoutOfHandComputedCases) {
  struct Case {
    int64_t vocab, tp, rank, padded, local, begin, real_end;
  };
  for (const Case& c : {Case{11, 4, 3, 12, 3, 9, 11}, Case{11, 4, 0, 12, 3, 0, 3}, Case{10, 4, 3, 12, 3, 9, 10},
                        Case{11, 2, 1, 12, 6, 6, 11}, Case{12, 4, 2, 12, 3, 6, 9}, Case{5, 4, 2, 8, 2, 4, 5},
                        Case{5, 4, 3, 8, 2, 6, 6}, Case{7, 1, 0, 7, 7, 0, 7}}) {
    SCOPED_TRACE("V=" + std::to_string(c.vocab) + " tp=" + std::to_string(c.tp) + " rank " + std::to_string(c.rank));
    const VocabShard s = vocab_shard(c.vocab, c.tp, c.rank);
    EXPECT_EQ(s.vocab_size, c.vocab);
    EXPECT_EQ(s.padded_size, c.padded);
    EXPECT_EQ(s.local_size, c.local);
    EXPECT_EQ(s.begin, c.begin);
    EXPECT_EQ(s.real_end, c.real_end);
    EXPECT_EQ(s.real_size(), c.real_end - c.begin);
  }
  EXPECT_THROW(vocab_shard(0, 2, 0), std::invalid_argument);
  EXPECT_THROW(vocab_shard(10, 0, 0), std::invalid_argument);
  EXPECT_THROW(vocab_shard(10, 2, 2), std::invalid_argument);
}

// This rank's [local_size, D] rows of `full` [V, D]; padding rows hold large
// values that would show up in any output they leaked into.
torch::Tensor weight_shard_of(const torch::Tensor& full, const VocabShard& shard) {
  torch::Tensor w = torch::full({shard.local_size, full.size(1)}, 1000.0, full.options());
  w.narrow(0, 0, shard.real_size()).copy_(real_slice(full, 0, shard.begin, shard.real_size()));
  return w;
}

TEST(VocabParallelEmbedding, MatchesTheFullTableForwardAndBackward) {
  for (Communicator* group : tp_groups()) {
    for (int64_t vocab : {11, 10, 12, 5}) {
      for (auto dtype : {torch::kFloat, torch::kBFloat16}) {
        SCOPED_TRACE(describe(*group) + " V=" + std::to_string(vocab) + " " + c10::toString(dtype));
        const VocabShard shard = vocab_shard(vocab, group->size(), group->rank());
        const torch::Tensor full = seeded_randn(20, {vocab, kDim}, dtype).requires_grad_();
        // Every id occurs (7 is coprime with every V here and 21 >= V), some twice.
        const torch::Tensor tokens = (torch::arange(21, torch::kLong) * 7 % vocab).reshape({3, 7});
        const torch::Tensor upstream = seeded_randn(21, {3, 7, kDim}, dtype);
        const torch::Tensor y_ref = torch::embedding(full, tokens);
        (y_ref * upstream).sum().backward();

        const torch::Tensor w = weight_shard_of(full.detach(), shard).requires_grad_();
        group->reset_stats();
        const torch::Tensor y = vocab_parallel_embedding(tokens, w, shard, group);
        EXPECT_EQ(y.scalar_type(), dtype);
        EXPECT_TRUE(torch::equal(y, y_ref)) << "one rank contributes each row, so the sum is exact";
        EXPECT_EQ(group->stats().at("all_reduce").calls, 1);

        (y * upstream).sum().backward();
        EXPECT_EQ(group->stats().at("all_reduce").calls, 1) << "the weight gradient stays local";
        EXPECT_TRUE(all_close(w.grad().narrow(0, 0, shard.real_size()),
                              real_slice(full.grad(), 0, shard.begin, shard.real_size()), 1e-6, 1e-6));
        const int64_t padding = shard.local_size - shard.real_size();
        EXPECT_TRUE(
            torch::equal(w.grad().narrow(0, shard.real_size(), padding), torch::zeros({padding, kDim}, w.options())))
            << "padding rows get no gradient";
      }
    }
  }
}

TEST(VocabParallelEmbedding, SizeOneAndNullGroupsAreExactlyPlainEmbedding) {
  for (Communicator* group : {static_cast<Communicator*>(nullptr), &solo_group()}) {
    const VocabShard shard = vocab_shard(9, 1, 0);
    const torch::Tensor w = seeded_randn(22, {9, kDim});
    const torch::Tensor tokens = seeded_randint(23, 9, {4, 5});
    EXPECT_TRUE(torch::equal(vocab_parallel_embedding(tokens, w, shard, group), torch::embedding(w, tokens)));
    if (group) {
      EXPECT_TRUE(group->stats().empty());
    }
  }
}

TEST(VocabParallelEmbedding, RejectsIdsOutsideTheVocabularyAndAForeignShard) {
  for (Communicator* group : tp_groups()) {
    SCOPED_TRACE(describe(*group));
    const VocabShard shard = vocab_shard(11, group->size(), group->rank());
    const torch::Tensor w = torch::zeros({shard.local_size, kDim});
    EXPECT_THROW(vocab_parallel_embedding(torch::tensor({0, 11}, torch::kLong), w, shard, group),
                 std::invalid_argument);
    EXPECT_THROW(vocab_parallel_embedding(torch::tensor({-1, 3}, torch::kLong), w, shard, group),
                 std::invalid_argument);
    const VocabShard other = vocab_shard(11, group->size(), (group->rank() + 1) % group->size());
    EXPECT_THROW(vocab_parallel_embedding(torch::tensor({1, 2}, torch::kLong), w, other, group), std::invalid_argument);
    EXPECT_THROW(vocab_parallel_embedding(torch::tensor({1, 2}, torch::kLong),
                                          torch::zeros({shard.local_size + 1, kDim}), shard, group),
                 std::invalid_argument);
  }
}

}  // namespace
}  // namespace moetrain::parallel::tp_test

// Vocabulary-parallel cross-entropy against kernels::softmax_cross_entropy on
// the full unpadded logits every rank builds from the same seed: loss_sum
// (rtol 1e-6), num_tokens and this rank's columns of the full logits gradient,
// with and without label smoothing, masked tokens holding out-of-range ids,
// fp32 and bf16 logits, and vocabularies that do not divide by tp (padding
// columns hold large values that would dominate the result if they counted).
// Forward makes exactly three all-reduces, backward none.
#include <gtest/gtest.h>

#include <stdexcept>

#include "kernels/cross_entropy.h"
#include "parallel/tensor_parallel.h"
#include "tests/multirank/tensor_parallel/tp_test_world.h"

namespace moetrain::parallel::tp_test {
namespace {

constexpr double kPaddingLogit = 30.0;
constexpr double kUpstream = 0.37;  // a non-unit gradient of loss_sum

struct Case {
  int64_t vocab;
  double label_smoothing;
  bool mask_some;
  torch::ScalarType dtype;

  std::string name() const {
    return "V=" + std::to_string(vocab) + " ls=" + std::to_string(label_smoothing) +
           (mask_some ? " masked" : " all counted") + " " + c10::toString(dtype);
  }
};

struct Batch {
  torch::Tensor logits;   // [N, V] in the case's dtype
  torch::Tensor targets;  // [N], every id at least twice among counted tokens
  torch::Tensor mask;     // [N]
};

Batch make_batch(const Case& c) {
  Batch b;
  const int64_t counted = 2 * c.vocab + 3;
  // Counted tokens' targets: every id, shuffled by a seeded permutation.
  const torch::Tensor ids = torch::arange(counted, torch::kLong) % c.vocab;
  at::Generator gen = at::detail::createCPUGenerator(31);
  const torch::Tensor counted_targets = ids.index_select(0, torch::randperm(counted, gen, torch::kLong));
  if (c.mask_some) {
    // Every third token is masked and holds an id no rank owns.
    const int64_t n = counted + (counted + 1) / 2;
    b.mask = torch::arange(n, torch::kLong) % 3 != 1;
    b.targets = torch::full({n}, -100, torch::kLong);
    b.targets.index_put_({b.mask}, counted_targets.narrow(0, 0, b.mask.sum().item<int64_t>()));
    b.targets.index_put_({torch::arange(n, torch::kLong) % 6 == 4}, c.vocab + 5);
  } else {
    b.mask = torch::ones({counted}, torch::kBool);
    b.targets = counted_targets;
  }
  b.logits = (seeded_randn(32, {b.targets.size(0), c.vocab}) * 3.0).to(c.dtype);
  return b;
}

// This rank's [N, local_size] columns; padding columns hold kPaddingLogit.
torch::Tensor logits_shard_of(const torch::Tensor& full, const VocabShard& shard) {
  torch::Tensor s = torch::full({full.size(0), shard.local_size}, kPaddingLogit, full.options());
  s.narrow(1, 0, shard.real_size()).copy_(real_slice(full, 1, shard.begin, shard.real_size()));
  return s;
}

int64_t calls(const Communicator& group, const char* op) {
  const auto it = group.stats().find(op);
  return it == group.stats().end() ? 0 : it->second.calls;
}

void check_case(Communicator* group, const Case& c) {
  const int64_t tp = group ? group->size() : 1;
  const int64_t rank = group ? group->rank() : 0;
  const VocabShard shard = vocab_shard(c.vocab, tp, rank);
  const Batch batch = make_batch(c);

  const torch::Tensor full = batch.logits.clone().requires_grad_();
  const kernels::CrossEntropyResult ref =
      kernels::softmax_cross_entropy(full, batch.targets, batch.mask, c.label_smoothing);
  (ref.loss_sum * kUpstream).backward();

  // The test data itself: targets of counted tokens land in every shard that
  // holds real ids.
  const torch::Tensor mine = batch.mask & (batch.targets >= shard.begin) & (batch.targets < shard.real_end);
  if (shard.real_size() > 0) {
    EXPECT_GT(mine.sum().item<int64_t>(), 0) << "no counted target on this rank";
  }

  const torch::Tensor logits = logits_shard_of(batch.logits, shard).requires_grad_();
  const torch::Tensor logits_before = logits.detach().clone();
  if (group) group->reset_stats();
  const kernels::CrossEntropyResult got =
      vocab_parallel_cross_entropy(logits, batch.targets, batch.mask, shard, c.label_smoothing, group);
  if (group) {
    EXPECT_EQ(calls(*group, "all_reduce"), tp > 1 ? 3 : 0);
    EXPECT_EQ(group->stats().size(), tp > 1 ? 1u : 0u) << "all_reduce is the only collective";
  }
  EXPECT_EQ(got.num_tokens, ref.num_tokens);
  EXPECT_EQ(got.loss_sum.scalar_type(), torch::kFloat);
  EXPECT_EQ(got.loss_sum.dim(), 0);
  EXPECT_TRUE(all_close(got.loss_sum, ref.loss_sum, 1e-6, 0.0));

  (got.loss_sum * kUpstream).backward();
  if (group) {
    EXPECT_EQ(calls(*group, "all_reduce"), tp > 1 ? 3 : 0) << "backward communicates nothing";
  }
  EXPECT_TRUE(torch::equal(logits.detach(), logits_before)) << "the caller's logits changed";
  ASSERT_TRUE(logits.grad().defined());
  EXPECT_EQ(logits.grad().scalar_type(), c.dtype);
  // The gradient is (softmax - one-hot) x upstream: at a target whose
  // probability is near 1 the difference keeps only the last digits of the
  // probability, so a few fp32 ulps of 1 (times the upstream gradient) is
  // the floor of the absolute agreement, whatever the CPU's exp and sums.
  const double rtol = c.dtype == torch::kFloat ? 1e-5 : 1e-2;
  const double atol = c.dtype == torch::kFloat ? 1e-6 * kUpstream : 1e-5;
  EXPECT_TRUE(all_close(logits.grad().narrow(1, 0, shard.real_size()),
                        real_slice(full.grad(), 1, shard.begin, shard.real_size()), rtol, atol));
  const int64_t padding = shard.local_size - shard.real_size();
  EXPECT_TRUE(torch::equal(logits.grad().narrow(1, shard.real_size(), padding),
                           torch::zeros({logits.size(0), padding}, logits.options())))
      << "padding columns get no gradient";
}

std::vector<Case> all_cases() {
  std::vector<Case> cases;
  // 11: not divisible by 2 or 4; 10: divisible by 2, not 4; 16: divisible by
  // both; 5 at tp=4: the last rank holds padding only.
  for (int64_t vocab : {11, 10, 16, 5}) {
    for (double ls : {0.0, 0.1}) {
      for (bool mask_some : {false, true}) {
        for (auto dtype : {torch::kFloat, torch::kBFloat16}) cases.push_back({vocab, ls, mask_some, dtype});
      }
    }
  }
  return cases;
}

TEST(VocabParallelCrossEntropy, MatchesSingleProcessLossAndGradients) {
  for (Communicator* group : tp_groups()) {
    for (const Case& c : all_cases()) {
      SCOPED_TRACE(describe(*group) + " " + c.name());
      check_case(group, c);
    }
  }
}

TEST(VocabParallelCrossEntropy, SizeOneAndNullGroupsMatchSingleProcess) {
  for (Communicator* group : {static_cast<Communicator*>(nullptr), &solo_group()}) {
    for (const Case& c : all_cases()) {
      SCOPED_TRACE(std::string(group ? "size-1 group " : "null group ") + c.name());
      check_case(group, c);
    }
  }
}

TEST(VocabParallelCrossEntropy, RejectsBadArguments) {
  for (Communicator* group : tp_groups()) {
    SCOPED_TRACE(describe(*group));
    const VocabShard shard = vocab_shard(11, group->size(), group->rank());
    const torch::Tensor logits = torch::zeros({3, shard.local_size});
    const torch::Tensor mask = torch::ones({3}, torch::kBool);
    // A counted target outside [0, V): the padding id 11 included.
    for (int64_t bad : {-1, 11, 12}) {
      const torch::Tensor targets = torch::tensor({int64_t{0}, bad, int64_t{2}}, torch::kLong);
      EXPECT_THROW(vocab_parallel_cross_entropy(logits, targets, mask, shard, 0.0, group), std::invalid_argument);
    }
    const torch::Tensor targets = torch::tensor({0, 5, 10}, torch::kLong);
    EXPECT_THROW(
        vocab_parallel_cross_entropy(torch::zeros({3, shard.local_size + 1}), targets, mask, shard, 0.0, group),
        std::invalid_argument);
    EXPECT_THROW(vocab_parallel_cross_entropy(logits, targets, mask, shard, 1.0, group), std::invalid_argument);
    EXPECT_THROW(vocab_parallel_cross_entropy(logits, targets, torch::ones({3}, torch::kLong), shard, 0.0, group),
                 std::invalid_argument);
    const VocabShard other = vocab_shard(11, group->size(), (group->rank() + 1) % group->size());
    EXPECT_THROW(vocab_parallel_cross_entropy(logits, targets, mask, other, 0.0, group), std::invalid_argument);
  }
}

}  // namespace
}  // namespace moetrain::parallel::tp_test

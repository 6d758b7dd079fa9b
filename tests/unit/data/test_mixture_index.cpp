// MixtureIndex: the greedy blended index (exact sequence and ties, prefix
// proportions, periodicity), its memo against fresh replays in any query
// order and from several threads, the replay speed, and bad weights.
#include "data/mixture_index.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <stdexcept>
#include <thread>

namespace moetrain::data {
namespace {

// The greedy rule written out directly in floating point, for small k.
std::vector<int64_t> reference_choices(const std::vector<double>& weights, int64_t n) {
  double sum = 0;
  for (double w : weights) sum += w;
  std::vector<int64_t> counts(weights.size(), 0), out;
  for (int64_t k = 0; k < n; ++k) {
    size_t best = 0;
    double best_score = -1e300;
    for (size_t d = 0; d < weights.size(); ++d) {
      const double score = weights[d] / sum * static_cast<double>(k + 1) - static_cast<double>(counts[d]);
      if (score > best_score + 1e-9) {
        best = d;
        best_score = score;
      }
    }
    ++counts[best];
    out.push_back(static_cast<int64_t>(best));
  }
  return out;
}

TEST(MixtureIndex, GreedySequenceWithTiesToTheLowestDataset) {
  MixtureIndex index({6, 3, 1});  // normalised to 0.6/0.3/0.1
  EXPECT_EQ(index.weights(), (std::vector<double>{0.6, 0.3, 0.1}));
  EXPECT_EQ(index.period(), 10);
  EXPECT_EQ(index.quanta(), (std::vector<int64_t>{6, 3, 1}));
  // Worked by hand: k=0 scores .6/.3/.1 -> 0; k=1 .2/.6/.2 -> 1; ...
  const std::vector<int64_t> expected = {0, 1, 0, 0, 1, 0, 2, 0, 1, 0, 0, 1, 0, 0, 1, 0, 2, 0, 1, 0};
  std::vector<int64_t> got;
  std::vector<int64_t> counts(3, 0);
  for (const auto& d : index.draws(0, 20)) {
    got.push_back(d.dataset);
    EXPECT_EQ(d.draw, counts[static_cast<size_t>(d.dataset)]) << "a dataset's draws count up from 0";
    ++counts[static_cast<size_t>(d.dataset)];
  }
  EXPECT_EQ(got, expected);
  EXPECT_EQ(got, reference_choices({0.6, 0.3, 0.1}, 20));
  EXPECT_EQ(index.counts_at(10), (std::vector<int64_t>{6, 3, 1}));
  EXPECT_EQ(index.counts_at(20), (std::vector<int64_t>{12, 6, 2}));

  // Equal weights tie at every period start: the lowest dataset goes first.
  MixtureIndex even({2.5, 2.5, 2.5});
  std::vector<int64_t> order;
  for (const auto& d : even.draws(0, 9)) order.push_back(d.dataset);
  EXPECT_EQ(order, (std::vector<int64_t>{0, 1, 2, 0, 1, 2, 0, 1, 2}));

  // Weights with no small common period are rounded; the sequence still
  // follows the rule.
  const std::vector<double> odd = {1.0, std::sqrt(2.0), M_PI};
  MixtureIndex rounded(odd);
  EXPECT_GT(rounded.period(), MixtureIndex::kMaxExactPeriod);
  std::vector<int64_t> rounded_order;
  for (const auto& d : rounded.draws(0, 500)) rounded_order.push_back(d.dataset);
  EXPECT_EQ(rounded_order, reference_choices(odd, 500));
}

TEST(MixtureIndex, EveryPrefixFollowsTheWeights) {
  const std::vector<double> weights = {0.6, 0.3, 0.1};
  MixtureIndex index(weights);
  std::vector<int64_t> counts(3, 0);
  const auto draws = index.draws(0, 10000);
  for (int64_t k = 0; k <= 10000; ++k) {
    for (size_t d = 0; d < 3; ++d)
      ASSERT_LT(std::abs(static_cast<double>(counts[d]) - weights[d] * static_cast<double>(k)), 1.0)
          << "dataset " << d << " after " << k << " samples";
    if (k < 10000) ++counts[static_cast<size_t>(draws[static_cast<size_t>(k)].dataset)];
  }
  EXPECT_EQ(counts, (std::vector<int64_t>{6000, 3000, 1000}));

  // Many datasets of very unequal weights: never a whole sample ahead of the
  // share, never datasets - 1 behind, and the counts add up.
  std::mt19937_64 gen(7);
  std::vector<double> many;
  for (int d = 0; d < 12; ++d) many.push_back(std::ldexp(1.0 + static_cast<double>(gen() % 1000), -(gen() % 10)));
  MixtureIndex skewed(many);
  const auto weights_many = skewed.weights();
  std::vector<int64_t> c(many.size(), 0);
  const auto skewed_draws = skewed.draws(0, 20000);
  for (int64_t k = 0; k < 20000; ++k) {
    ++c[static_cast<size_t>(skewed_draws[static_cast<size_t>(k)].dataset)];
    for (size_t d = 0; d < many.size(); ++d) {
      const double share = weights_many[d] * static_cast<double>(k + 1);
      ASSERT_LT(static_cast<double>(c[d]), share + 1.0);
      ASSERT_GT(static_cast<double>(c[d]), share - static_cast<double>(many.size() - 1));
    }
  }
  EXPECT_EQ(skewed.counts_at(20000), c);
}

TEST(MixtureIndex, RepeatsWithItsPeriod) {
  MixtureIndex index({0.5, 0.25, 0.125, 0.125});
  ASSERT_EQ(index.period(), 8);
  const auto first = index.draws(0, 8);
  const auto later = index.draws(8 * 1000003, 8);
  for (size_t i = 0; i < 8; ++i) {
    EXPECT_EQ(later[i].dataset, first[i].dataset);
    EXPECT_EQ(later[i].draw, first[i].draw + 1000003 * index.quanta()[static_cast<size_t>(first[i].dataset)]);
  }
  EXPECT_EQ(index.counts_at(int64_t{8} << 40),
            (std::vector<int64_t>{int64_t{4} << 40, int64_t{2} << 40, int64_t{1} << 40, int64_t{1} << 40}));
}

// Queries in any order, far apart or across snapshots, give what a fresh
// index replaying from 0 gives.
TEST(MixtureIndex, MemoAgreesWithFreshReplayInAnyOrder) {
  const std::vector<double> weights = {1.0, std::sqrt(2.0), M_PI};  // rounded: no short period
  MixtureIndex memo(weights);
  const int64_t S = MixtureIndex::kSnapshotEvery;
  const std::vector<int64_t> queries = {5, 3 * S + 17, 3 * S + 40, 100, S, S - 1, 2 * S + 3, 3 * S + 17, 0, 4 * S + 1};
  for (int64_t k : queries) {
    MixtureIndex fresh(weights);
    const auto expected = fresh.counts_at(k);
    int64_t sum = 0;
    for (int64_t c : expected) sum += c;
    EXPECT_EQ(sum, k);
    EXPECT_EQ(memo.counts_at(k), expected) << "k = " << k;
    // A draw at k is dataset d's expected[d]-th sample.
    const auto draw = memo.draw(k);
    EXPECT_EQ(draw.draw, expected[static_cast<size_t>(draw.dataset)]);
    // The next few draws continue from there.
    const auto next = memo.draws(k, 5);
    const auto next_fresh = MixtureIndex(weights).draws(k, 5);
    for (size_t i = 0; i < 5; ++i) {
      EXPECT_EQ(next[i].dataset, next_fresh[i].dataset);
      EXPECT_EQ(next[i].draw, next_fresh[i].draw);
    }
  }
}

TEST(MixtureIndex, ConcurrentQueriesAgree) {
  const std::vector<double> weights = {3.0, std::exp(1.0), 0.5};
  MixtureIndex shared(weights);
  const int64_t S = MixtureIndex::kSnapshotEvery;
  std::vector<int64_t> starts = {0, S / 2, S + 9, 2 * S - 3};
  std::vector<std::vector<MixtureIndex::Draw>> got(starts.size());
  std::vector<std::thread> threads;
  for (size_t t = 0; t < starts.size(); ++t)
    threads.emplace_back([&, t] {
      for (int64_t step = 0; step < 50; ++step) {
        auto part = shared.draws(starts[t] + step * 64, 64);
        got[t].insert(got[t].end(), part.begin(), part.end());
      }
    });
  for (auto& th : threads) th.join();
  for (size_t t = 0; t < starts.size(); ++t) {
    const auto expected = MixtureIndex(weights).draws(starts[t], 50 * 64);
    ASSERT_EQ(got[t].size(), expected.size());
    for (size_t i = 0; i < expected.size(); ++i) {
      ASSERT_EQ(got[t][i].dataset, expected[i].dataset) << "thread " << t << " sample " << i;
      ASSERT_EQ(got[t][i].draw, expected[i].draw) << "thread " << t << " sample " << i;
    }
  }
}

// The cost of a cold query far into a run (weights without a short period,
// so the whole prefix is replayed), printed for the record.
TEST(MixtureIndex, ReplaySpeed) {
  const std::vector<double> weights = {1.0, std::sqrt(2.0), M_PI};
  MixtureIndex index(weights);
  const int64_t k = 20000000;
  const auto t0 = std::chrono::steady_clock::now();
  const auto counts = index.counts_at(k);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("replayed the blended index of 3 datasets to k = %lld in %.3f s (%.2f ns per sample)\n",
              static_cast<long long>(k), s, s * 1e9 / static_cast<double>(k));
  for (size_t d = 0; d < 3; ++d)
    EXPECT_LT(std::abs(static_cast<double>(counts[d]) - index.weights()[d] * static_cast<double>(k)), 2.0);
  // Asking again nearby is cheap: from the memo, not from 0.
  const auto t1 = std::chrono::steady_clock::now();
  index.counts_at(k - 1000);
  index.counts_at(k + 1000);
  const double again = std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
  EXPECT_LT(again, s / 4);
}

TEST(MixtureIndex, RejectsBadWeights) {
  EXPECT_THROW(MixtureIndex({}), std::invalid_argument);
  EXPECT_THROW(MixtureIndex({1.0, 0.0}), std::invalid_argument);
  EXPECT_THROW(MixtureIndex({1.0, -2.0}), std::invalid_argument);
  EXPECT_THROW(MixtureIndex({1.0, std::nan("")}), std::invalid_argument);
  EXPECT_THROW(MixtureIndex({1.0, INFINITY}), std::invalid_argument);
  MixtureIndex one({4.0});
  EXPECT_EQ(one.counts_at(123), std::vector<int64_t>{123});
  EXPECT_EQ(one.draw(77).draw, 77);
  EXPECT_THROW(one.counts_at(-1), std::out_of_range);
}

}  // namespace
}  // namespace moetrain::data

// Span corruption: T5's counts and lengths, mask structure, exact
// reconstruction of the raw tokens, determinism in the seed.
#include "data/span_corruption.h"

#include <gtest/gtest.h>

#include <numeric>

namespace moetrain::data {
namespace {

std::vector<int64_t> sentinel_ids() {
  std::vector<int64_t> s(100);
  std::iota(s.begin(), s.end(), 4);  // <extra_id_i> = 4 + i, as the tokenizer assigns
  return s;
}

constexpr int64_t kEos = 1;

// Rebuilds the raw tokens: each sentinel in the input is replaced by the
// tokens that follow the same sentinel in the target.
std::vector<int64_t> reconstruct(const CorruptedSpans& c, const std::vector<int64_t>& sentinels) {
  auto is_sentinel = [&](int64_t id) { return std::find(sentinels.begin(), sentinels.end(), id) != sentinels.end(); };
  std::map<int64_t, std::vector<int64_t>> spans;
  int64_t current = -1;
  for (size_t i = 0; i + 1 < c.target.size(); ++i) {  // the last one is EOS
    if (is_sentinel(c.target[i]))
      current = c.target[i];
    else
      spans[current].push_back(c.target[i]);
  }
  std::vector<int64_t> out;
  for (size_t i = 0; i + 1 < c.input.size(); ++i) {
    if (is_sentinel(c.input[i]))
      out.insert(out.end(), spans[c.input[i]].begin(), spans[c.input[i]].end());
    else
      out.push_back(c.input[i]);
  }
  return out;
}

TEST(SpanCorruption, CountsFollowT5Rounding) {
  // 568 * 0.15 = 85.2 -> 85 noise; 85 / 3 = 28.3 -> 28 spans.
  auto c = noise_span_counts(568, 0.15, 3.0);
  EXPECT_EQ(c.num_noise, 85);
  EXPECT_EQ(c.num_spans, 28);
  // 10 * 0.25 = 2.5 rounds half to even -> 2; 2 / 3 -> 1 span.
  c = noise_span_counts(10, 0.25, 3.0);
  EXPECT_EQ(c.num_noise, 2);
  EXPECT_EQ(c.num_spans, 1);
  // 14 * 0.25 = 3.5 -> 4 (half to even).
  EXPECT_EQ(noise_span_counts(14, 0.25, 3.0).num_noise, 4);
  // Clamped to [1, length - 1].
  EXPECT_EQ(noise_span_counts(2, 0.01, 3.0).num_noise, 1);
  EXPECT_EQ(noise_span_counts(4, 0.99, 1.0).num_noise, 3);
  EXPECT_THROW(noise_span_counts(1, 0.15, 3.0), std::invalid_argument);
  EXPECT_THROW(noise_span_counts(10, 0.0, 3.0), std::invalid_argument);
}

TEST(SpanCorruption, MaskHasExpectedNoiseAndSpans) {
  for (int64_t length : {2, 3, 10, 57, 568, 1000}) {
    for (uint64_t seed = 0; seed < 20; ++seed) {
      auto mask = random_spans_noise_mask(length, 0.15, 3.0, seed);
      auto c = noise_span_counts(length, 0.15, 3.0);
      ASSERT_EQ(static_cast<int64_t>(mask.size()), length);
      EXPECT_EQ(std::count(mask.begin(), mask.end(), true), c.num_noise);
      int64_t spans = 0;
      for (int64_t i = 0; i < length; ++i)
        if (mask[i] && (i == 0 || !mask[i - 1])) ++spans;
      EXPECT_EQ(spans, c.num_spans);
      EXPECT_FALSE(mask.front()) << "T5 interleaving starts with non-noise";
      EXPECT_TRUE(mask.back()) << "and ends with noise";
    }
  }
}

TEST(SpanCorruption, NoiseFractionAndSpanLengthMatchTheParameters) {
  int64_t noise = 0, spans = 0, total = 0;
  for (uint64_t seed = 0; seed < 200; ++seed) {
    auto mask = random_spans_noise_mask(500, 0.3, 4.0, seed);
    for (size_t i = 0; i < mask.size(); ++i) {
      noise += mask[i];
      spans += mask[i] && (i == 0 || !mask[i - 1]);
    }
    total += 500;
  }
  EXPECT_NEAR(static_cast<double>(noise) / total, 0.3, 0.005);
  EXPECT_NEAR(static_cast<double>(noise) / spans, 4.0, 0.1);
}

TEST(SpanCorruption, SpanPositionsVaryWithTheSeed) {
  // Every position except the forced first/last should be noise for some seed.
  std::vector<int> noise_hits(50, 0);
  for (uint64_t seed = 0; seed < 300; ++seed) {
    auto mask = random_spans_noise_mask(50, 0.2, 2.0, seed);
    for (int i = 0; i < 50; ++i) noise_hits[i] += mask[i];
  }
  EXPECT_EQ(noise_hits[0], 0);
  EXPECT_EQ(noise_hits[49], 300);
  for (int i = 1; i < 49; ++i) EXPECT_GT(noise_hits[i], 0) << i;
  EXPECT_NE(random_spans_noise_mask(100, 0.15, 3.0, 1), random_spans_noise_mask(100, 0.15, 3.0, 2));
}

TEST(SpanCorruption, InputAndTargetReconstructTheRawTokens) {
  const auto sentinels = sentinel_ids();
  for (int64_t length : {2, 5, 100, 568}) {
    std::vector<int64_t> raw(length);
    for (int64_t i = 0; i < length; ++i) raw[i] = 200 + (i * 7919) % 5000;
    for (uint64_t seed = 0; seed < 10; ++seed) {
      auto c = corrupt_spans(raw, 0.15, 3.0, sentinels, kEos, seed);
      auto counts = noise_span_counts(length, 0.15, 3.0);
      EXPECT_EQ(c.input.back(), kEos);
      EXPECT_EQ(c.target.back(), kEos);
      EXPECT_EQ(static_cast<int64_t>(c.input.size()), length - counts.num_noise + counts.num_spans + 1);
      EXPECT_EQ(static_cast<int64_t>(c.target.size()), counts.num_noise + counts.num_spans + 1);
      EXPECT_EQ(c.target.front(), sentinels[0]);  // the target opens with <extra_id_0>
      EXPECT_EQ(reconstruct(c, sentinels), raw) << "length " << length << " seed " << seed;
      // Sentinels appear in order: <extra_id_0>, <extra_id_1>, ...
      int64_t expected = 0;
      for (int64_t id : c.input) {
        if (id >= 4 && id < 104) {
          EXPECT_EQ(id, sentinels[expected++]);
        }
      }
      EXPECT_EQ(expected, counts.num_spans);
    }
  }
}

TEST(SpanCorruption, SameSeedSameResult) {
  std::vector<int64_t> raw(300);
  std::iota(raw.begin(), raw.end(), 500);
  auto a = corrupt_spans(raw, 0.15, 3.0, sentinel_ids(), kEos, 99);
  auto b = corrupt_spans(raw, 0.15, 3.0, sentinel_ids(), kEos, 99);
  auto c = corrupt_spans(raw, 0.15, 3.0, sentinel_ids(), kEos, 100);
  EXPECT_EQ(a.input, b.input);
  EXPECT_EQ(a.target, b.target);
  EXPECT_NE(a.input, c.input);
}

TEST(SpanCorruption, TooFewSentinelsThrows) {
  std::vector<int64_t> raw(1000, 300);
  std::vector<int64_t> few = {4, 5, 6};
  EXPECT_THROW(corrupt_spans(raw, 0.15, 3.0, few, kEos, 0), std::invalid_argument);
}

TEST(SpanCorruption, LengthsMatchT5AndFit) {
  // T5's random_spans_helper(inputs_length=512, 0.15, 3) gives 568 raw tokens
  // and 114 target tokens.
  auto l = span_corruption_lengths(512, 114, 0.15, 3.0);
  EXPECT_EQ(l.raw_length, 568);
  EXPECT_EQ(l.input_length, 512);
  EXPECT_EQ(l.target_length, 114);

  for (int64_t src : {8, 16, 33, 64, 128, 512}) {
    for (int64_t tgt : {4, 8, 16, 32, 128}) {
      SpanCorruptionLengths l2;
      try {
        l2 = span_corruption_lengths(src, tgt, 0.15, 3.0);
      } catch (const std::invalid_argument&) {
        continue;
      }
      EXPECT_LE(l2.input_length, src);
      EXPECT_LE(l2.target_length, tgt);
      // Maximal: one more raw token overflows src or tgt.
      auto c = noise_span_counts(l2.raw_length + 1, 0.15, 3.0);
      EXPECT_TRUE(l2.raw_length + 1 - c.num_noise + c.num_spans + 1 > src || c.num_noise + c.num_spans + 1 > tgt)
          << src << " " << tgt;
      // The actual corruption has exactly these lengths.
      std::vector<int64_t> raw(l2.raw_length, 500);
      auto cs = corrupt_spans(raw, 0.15, 3.0, sentinel_ids(), kEos, 5);
      EXPECT_EQ(static_cast<int64_t>(cs.input.size()), l2.input_length);
      EXPECT_EQ(static_cast<int64_t>(cs.target.size()), l2.target_length);
    }
  }
  // The target limit binds when it is small.
  auto tight = span_corruption_lengths(512, 8, 0.15, 3.0);
  EXPECT_LE(tight.target_length, 8);
  EXPECT_LT(tight.raw_length, 100);
  EXPECT_THROW(span_corruption_lengths(2, 2, 0.15, 3.0), std::invalid_argument);
}

}  // namespace
}  // namespace moetrain::data

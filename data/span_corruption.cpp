// Span corruption: T5's noise mask with PortableRng in place of TensorFlow's
// random shuffle.
#include "data/span_corruption.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "data/portable_rng.h"

namespace moetrain::data {
namespace {

// Python 3's round() and tf.round: ties go to the even neighbour.
int64_t round_half_even(double x) {
  double r = std::round(x);
  if (std::fabs(x - std::trunc(x)) == 0.5) r = 2.0 * std::round(x / 2.0);
  return static_cast<int64_t>(r);
}

void check_args(int64_t length, double noise_density, double mean_noise_span) {
  if (length < 2) throw std::invalid_argument("span corruption needs at least 2 tokens, got " + std::to_string(length));
  if (!(noise_density > 0.0 && noise_density < 1.0))
    throw std::invalid_argument("noise_density must be in (0, 1), got " + std::to_string(noise_density));
  if (!(mean_noise_span >= 1.0))
    throw std::invalid_argument("mean_noise_span must be >= 1, got " + std::to_string(mean_noise_span));
}

// T5's _random_segmentation: `num_items` items cut into `num_segments`
// non-empty segments, every such cut equally likely. Returns the lengths.
std::vector<int64_t> random_segmentation(int64_t num_items, int64_t num_segments, PortableRng& rng) {
  // first_in_segment[i] for items 1..num_items-1: num_segments-1 ones, shuffled.
  std::vector<uint8_t> first(static_cast<size_t>(num_items - 1), 0);
  std::fill(first.begin(), first.begin() + (num_segments - 1), 1);
  rng.shuffle(first);
  std::vector<int64_t> lengths;
  lengths.reserve(static_cast<size_t>(num_segments));
  int64_t current = 1;
  for (uint8_t f : first) {
    if (f) {
      lengths.push_back(current);
      current = 1;
    } else {
      ++current;
    }
  }
  lengths.push_back(current);
  return lengths;
}

}  // namespace

NoiseSpanCounts noise_span_counts(int64_t length, double noise_density, double mean_noise_span) {
  check_args(length, noise_density, mean_noise_span);
  NoiseSpanCounts c;
  c.num_noise = round_half_even(static_cast<double>(length) * noise_density);
  c.num_noise = std::min(std::max<int64_t>(c.num_noise, 1), length - 1);
  c.num_spans = round_half_even(static_cast<double>(c.num_noise) / mean_noise_span);
  c.num_spans = std::max<int64_t>(c.num_spans, 1);
  c.num_spans = std::min(c.num_spans, length - c.num_noise);  // keep every gap non-empty
  return c;
}

std::vector<bool> random_spans_noise_mask(int64_t length, double noise_density, double mean_noise_span, uint64_t seed) {
  const NoiseSpanCounts c = noise_span_counts(length, noise_density, mean_noise_span);
  PortableRng rng(seed);
  // Same order as T5: noise lengths first, then non-noise.
  std::vector<int64_t> noise = random_segmentation(c.num_noise, c.num_spans, rng);
  std::vector<int64_t> gaps = random_segmentation(length - c.num_noise, c.num_spans, rng);
  std::vector<bool> mask;
  mask.reserve(static_cast<size_t>(length));
  for (int64_t s = 0; s < c.num_spans; ++s) {
    mask.insert(mask.end(), static_cast<size_t>(gaps[s]), false);
    mask.insert(mask.end(), static_cast<size_t>(noise[s]), true);
  }
  return mask;
}

CorruptedSpans corrupt_spans(const std::vector<int64_t>& tokens, double noise_density, double mean_noise_span,
                             const std::vector<int64_t>& sentinels, int64_t eos, uint64_t seed) {
  const int64_t length = static_cast<int64_t>(tokens.size());
  const NoiseSpanCounts c = noise_span_counts(length, noise_density, mean_noise_span);
  if (c.num_spans > static_cast<int64_t>(sentinels.size()))
    throw std::invalid_argument("span corruption of " + std::to_string(length) + " tokens needs " +
                                std::to_string(c.num_spans) + " sentinels, the tokenizer has " +
                                std::to_string(sentinels.size()));
  const std::vector<bool> mask = random_spans_noise_mask(length, noise_density, mean_noise_span, seed);
  CorruptedSpans out;
  out.input.reserve(static_cast<size_t>(length - c.num_noise + c.num_spans + 1));
  out.target.reserve(static_cast<size_t>(c.num_noise + c.num_spans + 1));
  size_t span = 0;
  for (int64_t i = 0; i < length; ++i) {
    if (!mask[i]) {
      out.input.push_back(tokens[i]);
      continue;
    }
    if (i == 0 || !mask[i - 1]) {  // a span starts
      out.input.push_back(sentinels[span]);
      out.target.push_back(sentinels[span]);
      ++span;
    }
    out.target.push_back(tokens[i]);
  }
  out.input.push_back(eos);
  out.target.push_back(eos);
  return out;
}

SpanCorruptionLengths span_corruption_lengths(int64_t src_len, int64_t tgt_len, double noise_density,
                                              double mean_noise_span) {
  check_args(2, noise_density, mean_noise_span);
  SpanCorruptionLengths best;
  // Every raw token lands in the input or the target, so no raw length beyond
  // src_len + tgt_len can fit. The corrupted lengths are scanned rather than
  // solved for, so rounding never makes the answer one off.
  for (int64_t raw = 2; raw <= src_len + tgt_len; ++raw) {
    NoiseSpanCounts c = noise_span_counts(raw, noise_density, mean_noise_span);
    int64_t input = raw - c.num_noise + c.num_spans + 1;
    int64_t target = c.num_noise + c.num_spans + 1;
    if (input <= src_len && target <= tgt_len) best = {raw, input, target};
  }
  if (best.raw_length == 0)
    throw std::invalid_argument("src_len " + std::to_string(src_len) + " / tgt_len " + std::to_string(tgt_len) +
                                " leave no room for span corruption (need at least 2 raw tokens)");
  return best;
}

}  // namespace moetrain::data

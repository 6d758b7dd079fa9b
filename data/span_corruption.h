// T5-style span corruption, as pure functions of their arguments so that any
// rank can rebuild any sample from (tokens, seed) alone.
//
// Semantics follow T5's `random_spans_noise_mask` and
// `random_spans_helper` (t5/data/preprocessors.py):
//   num_noise = round(length * noise_density), clamped to [1, length - 1]
//   num_spans = max(1, round(num_noise / mean_noise_span))
//   (round is round-half-to-even, as Python's and TensorFlow's). The noise
//   tokens are cut into num_spans random non-empty spans and the rest into
//   num_spans random non-empty gaps, interleaved gap first: the text never
//   starts with noise and always ends with it.
// One deviation: num_spans is also clamped to at most the number of non-noise
// tokens, where T5 would produce empty spans (only reachable with extreme
// densities).
//
// The encoder input is the non-noise tokens with each noise span replaced by
// the next sentinel, then EOS; the target is, for each span, its sentinel and
// its tokens, then EOS. Given the input and the target the original tokens are
// recovered exactly (replace each sentinel in the input by its span).
#pragma once

#include <cstdint>
#include <vector>

namespace moetrain::data {

struct NoiseSpanCounts {
  int64_t num_noise = 0;
  int64_t num_spans = 0;
};

// The deterministic part of the mask: how many noise tokens and spans a raw
// sequence of `length` (>= 2) tokens gets.
NoiseSpanCounts noise_span_counts(int64_t length, double noise_density, double mean_noise_span);

// mask[i] is true where token i is noise. `length` >= 2.
std::vector<bool> random_spans_noise_mask(int64_t length, double noise_density, double mean_noise_span, uint64_t seed);

struct CorruptedSpans {
  std::vector<int64_t> input;   // encoder input, ends with EOS
  std::vector<int64_t> target;  // decoder target, ends with EOS
};

// Corrupts `tokens` (at least 2). Throws std::invalid_argument when there are
// more noise spans than `sentinels`.
CorruptedSpans corrupt_spans(const std::vector<int64_t>& tokens, double noise_density, double mean_noise_span,
                             const std::vector<int64_t>& sentinels, int64_t eos, uint64_t seed);

struct SpanCorruptionLengths {
  int64_t raw_length = 0;     // tokens cut from the corpus per sample
  int64_t input_length = 0;   // corrupted encoder input, incl. EOS (<= src_len)
  int64_t target_length = 0;  // target, incl. EOS (<= tgt_len)
};

// The largest raw length whose corrupted input fits `src_len` and whose target
// fits `tgt_len` (both counting EOS); the lengths are exact, since they depend
// only on the counts above, not on the random segmentation. With T5's defaults
// (512, 114, 0.15, 3.0) this is T5's 568. Throws std::invalid_argument when
// not even 2 raw tokens fit.
SpanCorruptionLengths span_corruption_lengths(int64_t src_len, int64_t tgt_len, double noise_density,
                                              double mean_noise_span);

}  // namespace moetrain::data

// Text metrics for generated sequences.
//
//   corpus_bleu, corpus_chrf: computed as sacrebleu 2.x computes them with
//     its defaults (BLEU: 13a tokenization, 4-grams, exponential smoothing,
//     closest reference length; chrF: character 6-grams without whitespace,
//     beta 2, no word n-grams), so the scores are the same as sacrebleu's on
//     the same text. Several reference streams may be given, as sacrebleu's
//     `corpus_bleu(hypotheses, [refs_a, refs_b])`.
//   rouge_l: ROUGE-L F1 per segment averaged over the corpus, on lowercased
//     alphanumeric tokens (the tokenization of Google's rouge-score package).
//   error rates: edit distance over tokens (words for WER, phonemes for PER)
//     summed over the corpus and divided by the reference length; and the
//     share of segments not exactly right (the word error rate of
//     grapheme-to-phoneme, where a segment is one word's pronunciation).
//
// Text is UTF-8. chrF counts characters (code points); BLEU's tokenizer and
// every whitespace split treat ASCII whitespace as whitespace.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace moetrain::eval {

// sacrebleu's "13a" tokenization (mteval-v13a): punctuation and symbols split
// off, periods and commas split unless between digits, a dash after a digit
// split off; tokens joined by single spaces.
std::string tokenize_13a(const std::string& line);

struct BleuScore {
  double score = 0;                    // 0..100
  std::array<int64_t, 4> correct{};    // matched n-grams, n = 1..4
  std::array<int64_t, 4> total{};      // hypothesis n-grams
  std::array<double, 4> precisions{};  // in percent, smoothed
  double brevity_penalty = 1;
  int64_t hypothesis_length = 0;
  int64_t reference_length = 0;
};

// references[k][i] is the k-th reference of segment i; every stream has one
// entry per hypothesis. Throws std::invalid_argument otherwise, or with no
// reference stream.
BleuScore corpus_bleu(const std::vector<std::string>& hypotheses,
                      const std::vector<std::vector<std::string>>& references, bool lowercase = false);

struct ChrfOptions {
  int64_t char_order = 6;
  int64_t word_order = 0;  // 2: chrF++
  double beta = 2;
  bool whitespace = false;  // count whitespace in character n-grams
};

// 0..100. Per segment, the reference with the best F score counts.
double corpus_chrf(const std::vector<std::string>& hypotheses, const std::vector<std::vector<std::string>>& references,
                   const ChrfOptions& options = {});

// Mean ROUGE-L F1 (0..100) over segments, one reference each.
double rouge_l(const std::vector<std::string>& hypotheses, const std::vector<std::string>& references);

// Levenshtein distance (insertions, deletions, substitutions cost 1).
int64_t edit_distance(const std::vector<std::string>& hypothesis, const std::vector<std::string>& reference);

// Whitespace-separated tokens.
std::vector<std::string> split_tokens(const std::string& text);

struct ErrorRate {
  int64_t errors = 0;
  int64_t total = 0;  // reference tokens, or segments
  double rate() const { return total > 0 ? static_cast<double>(errors) / static_cast<double>(total) : 0.0; }
};

// Summed token edit distance over summed reference tokens (WER over words,
// PER over phonemes).
ErrorRate token_error_rate(const std::vector<std::string>& hypotheses, const std::vector<std::string>& references);
// Segments whose tokens differ from the reference at all, over segments.
ErrorRate segment_error_rate(const std::vector<std::string>& hypotheses, const std::vector<std::string>& references);

// The same against several reference streams (references[k][i], as for
// BLEU), where a segment may have fewer references than there are streams
// (an empty line is no reference, unless all of the segment's are empty):
// per segment the closest reference counts (fewest edits; on a tie the
// shorter), and a segment is right if it equals any of its references. For
// G2P, the alternative pronunciations of a word.
ErrorRate token_error_rate(const std::vector<std::string>& hypotheses,
                           const std::vector<std::vector<std::string>>& references);
ErrorRate segment_error_rate(const std::vector<std::string>& hypotheses,
                             const std::vector<std::vector<std::string>>& references);

}  // namespace moetrain::eval

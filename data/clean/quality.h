// Heuristic quality rules with the published thresholds as defaults:
//   Gopher quality and repetition (Rae et al. 2021, "Scaling Language Models",
//   appendix A), C4 (Raffel et al. 2020, section 2.2) and FineWeb's extra
//   line rules (Penedo et al. 2024). Names and defaults follow datatrove's
//   implementation of each so decisions can be compared one to one.
// CJK text (see is_cjk_text) is measured in characters where the rules count
// words: each ideograph is a word, the mean-word-length rule is skipped, stop
// words are Chinese function characters, and CJK sentence punctuation ends
// lines and sentences.
// Each check returns the reason of the first failing rule, or "" to keep.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace moetrain::data::clean {

struct GopherQualityParams {
  bool enabled = true;
  int min_doc_words = 50;
  int max_doc_words = 100000;
  double min_avg_word_length = 3;
  double max_avg_word_length = 10;
  double max_symbol_word_ratio = 0.1;  // '#' and ellipses per word
  double max_bullet_lines_ratio = 0.9;
  double max_ellipsis_lines_ratio = 0.3;
  double min_alpha_words_ratio = 0.8;  // words with at least one letter
  int min_stop_words = 2;              // distinct ones of: the, be, to, of, and, that, have, with
};

struct GopherRepetitionParams {
  bool enabled = true;
  double dup_line_frac = 0.3;
  double dup_para_frac = 0.3;
  double dup_line_char_frac = 0.2;
  double dup_para_char_frac = 0.2;
  std::vector<std::pair<int, double>> top_n_grams = {{2, 0.2}, {3, 0.18}, {4, 0.16}};
  std::vector<std::pair<int, double>> dup_n_grams = {{5, 0.15}, {6, 0.14}, {7, 0.13}, {8, 0.12}, {9, 0.11}, {10, 0.10}};
};

struct C4Params {
  bool enabled = true;
  bool filter_lines = true;  // drop lines failing the line rules (changes the text)
  int min_words_per_line = 3;
  int max_word_length = 1000;
  int min_sentences = 5;
  bool require_terminal_punct = true;
  bool drop_lorem_ipsum = true;    // whole document
  bool drop_curly_bracket = true;  // whole document
  bool drop_javascript_lines = true;
  bool drop_policy_lines = true;
};

struct FineWebParams {
  bool enabled = true;
  double min_line_punct_ratio = 0.12;
  double max_short_line_ratio = 0.67;
  int short_line_length = 30;      // characters
  int cjk_short_line_length = 10;  // characters, for CJK text
  double max_char_dup_ratio = 0.01;
  double max_newline_word_ratio = 0.3;
};

std::string gopher_quality(std::string_view text, const GopherQualityParams& p);
std::string gopher_repetition(std::string_view text, const GopherRepetitionParams& p);
// May rewrite `text` (kept lines only) when p.filter_lines.
std::string c4_quality(std::string& text, const C4Params& p);
std::string fineweb_quality(std::string_view text, const FineWebParams& p);

}  // namespace moetrain::data::clean

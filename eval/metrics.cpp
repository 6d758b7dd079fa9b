#include "eval/metrics.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <map>
#include <stdexcept>

namespace moetrain::eval {

namespace {

// UTF-8 decoding of one code point at s[i]; advances i. Malformed bytes
// decode as themselves (one byte each).
char32_t next_code_point(const std::string& s, size_t& i) {
  const auto b = static_cast<unsigned char>(s[i]);
  int extra = b >= 0xF0 ? 3 : b >= 0xE0 ? 2 : b >= 0xC0 ? 1 : 0;
  if (extra > 0 && i + static_cast<size_t>(extra) >= s.size()) extra = 0;
  char32_t cp = extra == 0 ? b : b & (0x3F >> extra);
  for (int k = 1; k <= extra; ++k) {
    const auto c = static_cast<unsigned char>(s[i + static_cast<size_t>(k)]);
    if ((c & 0xC0) != 0x80) {
      extra = 0;
      cp = b;
      break;
    }
    cp = (cp << 6) | (c & 0x3F);
  }
  i += static_cast<size_t>(extra) + 1;
  return cp;
}

// What Python's str.split() splits on.
bool is_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

// The text split into code points, each as its UTF-8 bytes; with
// `drop_spaces`, whitespace code points are left out.
std::vector<std::string> code_points(const std::string& s, bool drop_spaces = false) {
  std::vector<std::string> out;
  for (size_t i = 0; i < s.size();) {
    const size_t start = i;
    const char32_t cp = next_code_point(s, i);
    if (!(drop_spaces && is_space(cp))) out.push_back(s.substr(start, i - start));
  }
  return out;
}

std::string rstrip(const std::string& s) {
  size_t end = 0;  // just past the last non-space code point
  for (size_t i = 0; i < s.size();) {
    if (!is_space(next_code_point(s, i))) end = i;
  }
  return s.substr(0, end);
}

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  for (size_t pos = s.find(from); pos != std::string::npos; pos = s.find(from, pos + to.size())) {
    s.replace(pos, from.size(), to);
  }
  return s;
}

std::string ascii_lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// The 13a tokenizer's first rule: these ASCII symbols get spaces around them.
bool is_13a_symbol(char c) {
  return (c >= '{' && c <= '~') || (c >= '[' && c <= '`') || (c >= ' ' && c <= '&') || (c >= '(' && c <= '+') ||
         (c >= ':' && c <= '@') || c == '/';
}

bool is_digit(char c) { return c >= '0' && c <= '9'; }

// A two-character rule of the 13a tokenizer applied left to right without
// overlaps, as a regular-expression substitution does: where `first(a)` and
// `second(b)` hold for neighbours a b, emit `replace(a, b)` and go on after b.
template <class First, class Second>
std::string substitute_pairs(const std::string& s, First first, Second second, std::string (*replace)(char, char)) {
  std::string out;
  out.reserve(s.size() + s.size() / 4);
  size_t i = 0;
  while (i < s.size()) {
    if (i + 1 < s.size() && first(s[i]) && second(s[i + 1])) {
      out += replace(s[i], s[i + 1]);
      i += 2;
    } else {
      out += s[i++];
    }
  }
  return out;
}

std::vector<std::string> split_ngrams(const std::vector<std::string>& tokens, int64_t n) {
  std::vector<std::string> out;
  for (size_t i = 0; i + static_cast<size_t>(n) <= tokens.size(); ++i) {
    std::string key = tokens[i];
    for (int64_t k = 1; k < n; ++k) key += " " + tokens[i + static_cast<size_t>(k)];
    out.push_back(std::move(key));
  }
  return out;
}

using Counts = std::map<std::string, int64_t>;

Counts count(const std::vector<std::string>& items) {
  Counts c;
  for (const auto& item : items) ++c[item];
  return c;
}

void check_streams(const std::vector<std::string>& hypotheses, const std::vector<std::vector<std::string>>& references,
                   const char* metric) {
  if (references.empty()) throw std::invalid_argument(std::string(metric) + ": no reference stream");
  for (size_t k = 0; k < references.size(); ++k) {
    if (references[k].size() != hypotheses.size()) {
      throw std::invalid_argument(std::string(metric) + ": reference stream " + std::to_string(k) + " has " +
                                  std::to_string(references[k].size()) + " segments but there are " +
                                  std::to_string(hypotheses.size()) + " hypotheses");
    }
  }
}

// sacrebleu's floored logarithm.
double floored_log(double x) { return x == 0.0 ? -9999999999.0 : std::log(x); }

// chrF's character n-grams of orders 1..max_order (whitespace removed unless
// kept), then word n-grams of orders 1..word_order.
std::vector<Counts> chrf_ngrams(const std::string& text, const ChrfOptions& o) {
  const std::vector<std::string> chars = code_points(text, /*drop_spaces=*/!o.whitespace);
  std::vector<Counts> out;
  for (int64_t n = 1; n <= o.char_order; ++n) {
    Counts c;
    for (size_t i = 0; i + static_cast<size_t>(n) <= chars.size(); ++i) {
      std::string key;
      for (int64_t k = 0; k < n; ++k) key += chars[i + static_cast<size_t>(k)];
      ++c[key];
    }
    out.push_back(std::move(c));
  }
  if (o.word_order > 0) {
    // chrF++ words: punctuation split off a word's end, else its start.
    static const std::string puncts = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";
    std::vector<std::string> words;
    for (const auto& w : split_tokens(text)) {
      const auto cps = code_points(w);
      if (cps.size() == 1) {
        words.push_back(w);
      } else if (puncts.find(w.back()) != std::string::npos) {
        words.push_back(w.substr(0, w.size() - 1));
        words.push_back(w.substr(w.size() - 1));
      } else if (puncts.find(w.front()) != std::string::npos) {
        words.push_back(w.substr(0, 1));
        words.push_back(w.substr(1));
      } else {
        words.push_back(w);
      }
    }
    for (int64_t n = 1; n <= o.word_order; ++n) out.push_back(count(split_ngrams(words, n)));
  }
  return out;
}

double chrf_from_stats(const std::vector<int64_t>& stats, double beta) {
  const double factor = beta * beta;
  double avg_prec = 0, avg_rec = 0;
  int64_t effective_order = 0;
  for (size_t i = 0; i + 2 < stats.size(); i += 3) {
    const int64_t n_hyp = stats[i], n_ref = stats[i + 1], n_match = stats[i + 2];
    if (n_hyp > 0 && n_ref > 0) {
      avg_prec += static_cast<double>(n_match) / static_cast<double>(n_hyp);
      avg_rec += static_cast<double>(n_match) / static_cast<double>(n_ref);
      ++effective_order;
    }
  }
  if (effective_order == 0) return 0.0;
  avg_prec /= static_cast<double>(effective_order);
  avg_rec /= static_cast<double>(effective_order);
  if (avg_prec + avg_rec == 0.0) return 0.0;
  return 100.0 * (1 + factor) * avg_prec * avg_rec / (factor * avg_prec + avg_rec);
}

std::vector<std::string> rouge_tokens(const std::string& text) {
  std::string cleaned;
  for (char c : ascii_lower(text)) cleaned += (std::isalnum(static_cast<unsigned char>(c)) && !(c & 0x80)) ? c : ' ';
  return split_tokens(cleaned);
}

int64_t lcs_length(const std::vector<std::string>& a, const std::vector<std::string>& b) {
  std::vector<int64_t> row(b.size() + 1, 0);
  for (const auto& x : a) {
    int64_t diagonal = 0;
    for (size_t j = 1; j <= b.size(); ++j) {
      const int64_t up = row[j];
      row[j] = x == b[j - 1] ? diagonal + 1 : std::max(row[j], row[j - 1]);
      diagonal = up;
    }
  }
  return row[b.size()];
}

}  // namespace

std::vector<std::string> split_tokens(const std::string& text) {
  std::vector<std::string> tokens;
  std::string current;
  for (size_t i = 0; i < text.size();) {
    const size_t start = i;
    if (is_space(next_code_point(text, i))) {
      if (!current.empty()) tokens.push_back(std::move(current));
      current.clear();
    } else {
      current += text.substr(start, i - start);
    }
  }
  if (!current.empty()) tokens.push_back(std::move(current));
  return tokens;
}

std::string tokenize_13a(const std::string& input) {
  std::string line = replace_all(input, "<skipped>", "");
  line = replace_all(line, "-\n", "");
  line = replace_all(line, "\n", " ");
  if (line.find('&') != std::string::npos) {
    line = replace_all(line, "&quot;", "\"");
    line = replace_all(line, "&amp;", "&");
    line = replace_all(line, "&lt;", "<");
    line = replace_all(line, "&gt;", ">");
  }
  line = " " + line + " ";
  std::string spaced;
  spaced.reserve(line.size() * 2);
  for (char c : line) {
    if (is_13a_symbol(c)) {
      spaced += ' ';
      spaced += c;
      spaced += ' ';
    } else {
      spaced += c;
    }
  }
  auto period_or_comma = [](char c) { return c == '.' || c == ','; };
  auto not_digit = [](char c) { return !is_digit(c); };
  spaced = substitute_pairs(spaced, not_digit, period_or_comma,
                            [](char a, char b) { return std::string(1, a) + " " + b + " "; });
  spaced = substitute_pairs(spaced, period_or_comma, not_digit,
                            [](char a, char b) { return std::string(" ") + a + " " + b; });
  spaced = substitute_pairs(
      spaced, is_digit, [](char c) { return c == '-'; },
      [](char a, char b) { return std::string(1, a) + " " + b + " "; });
  std::string out;
  for (const auto& token : split_tokens(spaced)) out += (out.empty() ? "" : " ") + token;
  return out;
}

BleuScore corpus_bleu(const std::vector<std::string>& hypotheses,
                      const std::vector<std::vector<std::string>>& references, bool lowercase) {
  check_streams(hypotheses, references, "corpus_bleu");
  auto preprocess = [&](const std::string& s) { return tokenize_13a(rstrip(lowercase ? ascii_lower(s) : s)); };
  BleuScore r;
  for (size_t i = 0; i < hypotheses.size(); ++i) {
    // The references' n-grams, each at its largest count over references.
    Counts ref_ngrams;
    std::vector<int64_t> ref_lens;
    for (const auto& stream : references) {
      const auto tokens = split_tokens(preprocess(stream[i]));
      ref_lens.push_back(static_cast<int64_t>(tokens.size()));
      for (int64_t n = 1; n <= 4; ++n) {
        for (const auto& [gram, c] : count(split_ngrams(tokens, n))) ref_ngrams[gram] = std::max(ref_ngrams[gram], c);
      }
    }
    const auto hyp = split_tokens(preprocess(hypotheses[i]));
    const auto hyp_len = static_cast<int64_t>(hyp.size());
    // The closest reference length, the shorter one on a tie.
    int64_t closest = -1, closest_diff = -1;
    for (int64_t len : ref_lens) {
      const int64_t diff = std::abs(hyp_len - len);
      if (closest_diff == -1 || diff < closest_diff || (diff == closest_diff && len < closest)) {
        closest_diff = diff;
        closest = len;
      }
    }
    r.hypothesis_length += hyp_len;
    r.reference_length += closest;
    for (int64_t n = 1; n <= 4; ++n) {
      for (const auto& [gram, c] : count(split_ngrams(hyp, n))) {
        r.total[static_cast<size_t>(n - 1)] += c;
        const auto it = ref_ngrams.find(gram);
        if (it != ref_ngrams.end()) r.correct[static_cast<size_t>(n - 1)] += std::min(c, it->second);
      }
    }
  }
  const auto sys = static_cast<double>(r.hypothesis_length), ref = static_cast<double>(r.reference_length);
  if (r.hypothesis_length < r.reference_length)
    r.brevity_penalty = r.hypothesis_length > 0 ? std::exp(1 - ref / sys) : 0.0;
  if (std::all_of(r.correct.begin(), r.correct.end(), [](int64_t c) { return c == 0; })) return r;
  double smooth = 1;
  for (size_t n = 0; n < 4; ++n) {
    if (r.total[n] == 0) break;
    if (r.correct[n] == 0) {
      smooth *= 2;  // exponential smoothing (mteval-v13a's NIST method)
      r.precisions[n] = 100.0 / (smooth * static_cast<double>(r.total[n]));
    } else {
      r.precisions[n] = 100.0 * static_cast<double>(r.correct[n]) / static_cast<double>(r.total[n]);
    }
  }
  double log_sum = 0;
  for (double p : r.precisions) log_sum += floored_log(p);
  r.score = r.brevity_penalty * std::exp(log_sum / 4.0);
  return r;
}

double corpus_chrf(const std::vector<std::string>& hypotheses, const std::vector<std::vector<std::string>>& references,
                   const ChrfOptions& options) {
  check_streams(hypotheses, references, "corpus_chrf");
  const size_t orders = static_cast<size_t>(options.char_order + options.word_order);
  std::vector<int64_t> totals(3 * orders, 0);
  for (size_t i = 0; i < hypotheses.size(); ++i) {
    const auto hyp = chrf_ngrams(hypotheses[i], options);
    std::vector<int64_t> best;
    double best_f = -1;
    for (const auto& stream : references) {
      const auto ref = chrf_ngrams(stream[i], options);
      std::vector<int64_t> stats;
      for (size_t o = 0; o < orders; ++o) {
        int64_t hyp_count = 0, match = 0, ref_count = 0;
        for (const auto& [gram, c] : hyp[o]) {
          hyp_count += c;
          const auto it = ref[o].find(gram);
          if (it != ref[o].end()) match += std::min(c, it->second);
        }
        for (const auto& entry : ref[o]) ref_count += entry.second;
        // No hits count where the reference has no n-gram of this order.
        stats.insert(stats.end(), {ref[o].empty() ? 0 : hyp_count, ref_count, match});
      }
      const double f = chrf_from_stats(stats, options.beta);
      if (f > best_f) {
        best_f = f;
        best = std::move(stats);
      }
    }
    for (size_t k = 0; k < totals.size(); ++k) totals[k] += best[k];
  }
  return chrf_from_stats(totals, options.beta);
}

double rouge_l(const std::vector<std::string>& hypotheses, const std::vector<std::string>& references) {
  check_streams(hypotheses, {references}, "rouge_l");
  if (hypotheses.empty()) return 0.0;
  double sum = 0;
  for (size_t i = 0; i < hypotheses.size(); ++i) {
    const auto hyp = rouge_tokens(hypotheses[i]), ref = rouge_tokens(references[i]);
    if (hyp.empty() || ref.empty()) continue;
    const auto lcs = static_cast<double>(lcs_length(hyp, ref));
    const double p = lcs / static_cast<double>(hyp.size()), r = lcs / static_cast<double>(ref.size());
    if (p + r > 0) sum += 2 * p * r / (p + r);
  }
  return 100.0 * sum / static_cast<double>(hypotheses.size());
}

int64_t edit_distance(const std::vector<std::string>& hypothesis, const std::vector<std::string>& reference) {
  std::vector<int64_t> row(reference.size() + 1);
  for (size_t j = 0; j <= reference.size(); ++j) row[j] = static_cast<int64_t>(j);
  for (size_t i = 1; i <= hypothesis.size(); ++i) {
    int64_t diagonal = row[0];
    row[0] = static_cast<int64_t>(i);
    for (size_t j = 1; j <= reference.size(); ++j) {
      const int64_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (hypothesis[i - 1] == reference[j - 1] ? 0 : 1)});
      diagonal = up;
    }
  }
  return row[reference.size()];
}

namespace {

// Segment i's references: the non-empty lines of every stream, or one empty
// reference when there is none.
std::vector<std::vector<std::string>> segment_references(const std::vector<std::vector<std::string>>& streams,
                                                         size_t i) {
  std::vector<std::vector<std::string>> refs;
  for (const auto& stream : streams) {
    auto tokens = split_tokens(stream[i]);
    if (!tokens.empty()) refs.push_back(std::move(tokens));
  }
  if (refs.empty()) refs.emplace_back();
  return refs;
}

}  // namespace

ErrorRate token_error_rate(const std::vector<std::string>& hypotheses,
                           const std::vector<std::vector<std::string>>& references) {
  check_streams(hypotheses, references, "token_error_rate");
  ErrorRate e;
  for (size_t i = 0; i < hypotheses.size(); ++i) {
    const auto hyp = split_tokens(hypotheses[i]);
    int64_t best = -1, best_length = 0;
    for (const auto& ref : segment_references(references, i)) {
      const int64_t d = edit_distance(hyp, ref);
      const auto length = static_cast<int64_t>(ref.size());
      if (best < 0 || d < best || (d == best && length < best_length)) {
        best = d;
        best_length = length;
      }
    }
    e.errors += best;
    e.total += best_length;
  }
  return e;
}

ErrorRate segment_error_rate(const std::vector<std::string>& hypotheses,
                             const std::vector<std::vector<std::string>>& references) {
  check_streams(hypotheses, references, "segment_error_rate");
  ErrorRate e;
  for (size_t i = 0; i < hypotheses.size(); ++i) {
    const auto hyp = split_tokens(hypotheses[i]);
    bool right = false;
    for (const auto& ref : segment_references(references, i)) right = right || hyp == ref;
    e.errors += right ? 0 : 1;
    e.total += 1;
  }
  return e;
}

ErrorRate token_error_rate(const std::vector<std::string>& hypotheses, const std::vector<std::string>& references) {
  return token_error_rate(hypotheses, std::vector<std::vector<std::string>>{references});
}

ErrorRate segment_error_rate(const std::vector<std::string>& hypotheses, const std::vector<std::string>& references) {
  return segment_error_rate(hypotheses, std::vector<std::vector<std::string>>{references});
}

}  // namespace moetrain::eval

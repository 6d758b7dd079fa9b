// Gopher, C4 and FineWeb rules (see quality.h).
#include "data/clean/quality.h"

#include <algorithm>
#include <string>
#include <unordered_map>
#include <unordered_set>

#include "data/clean/text_units.h"

namespace moetrain::data::clean {
namespace {

const std::unordered_set<std::string_view>& english_stop_words() {
  static const std::unordered_set<std::string_view> words = {"the", "be", "to", "of", "and", "that", "have", "with"};
  return words;
}

const std::unordered_set<std::string_view>& chinese_stop_words() {
  static const std::unordered_set<std::string_view> words = {"的", "了", "是", "在", "不", "和", "有",
                                                             "我", "这", "也", "就", "人", "都", "一",
                                                             "他", "你", "们", "之", "而", "其"};
  return words;
}

bool starts_with(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }
bool ends_with(std::string_view s, std::string_view p) {
  return s.size() >= p.size() && s.substr(s.size() - p.size()) == p;
}

size_t count_substr(std::string_view s, std::string_view needle) {
  size_t n = 0, pos = 0;
  while ((pos = s.find(needle, pos)) != std::string_view::npos) {
    ++n;
    pos += needle.size();
  }
  return n;
}

std::string_view ltrim(std::string_view s) {
  size_t i = 0;
  while (i < s.size() && (s[i] == ' ' || s[i] == '\t')) ++i;
  return s.substr(i);
}
std::string_view rtrim(std::string_view s) {
  size_t e = s.size();
  while (e > 0 && (s[e - 1] == ' ' || s[e - 1] == '\t')) --e;
  return s.substr(0, e);
}

// Elements seen before: how many, and their characters.
std::pair<size_t, size_t> find_duplicates(const std::vector<std::string_view>& items) {
  std::unordered_set<std::string_view> seen;
  size_t dup = 0, dup_chars = 0;
  for (auto item : items) {
    if (!seen.insert(item).second) {
      ++dup;
      dup_chars += count_chars(item);
    }
  }
  return {dup, dup_chars};
}

// Words joined by spaces for n-gram comparisons.
std::string join(const std::vector<std::string_view>& words, size_t from, size_t n, const char* sep) {
  std::string out;
  for (size_t k = from; k < from + n; ++k) {
    if (k > from) out += sep;
    out.append(words[k]);
  }
  return out;
}

bool ends_with_terminal(std::string_view line) {
  static const char* const kEnds[] = {".",
                                      "!",
                                      "?",
                                      "\"",
                                      "'",
                                      "\xE2\x80\x9D" /* ” */,
                                      "\xE2\x80\x99" /* ’ */,
                                      "\xE2\x80\xA6" /* … */,
                                      "\xE3\x80\x82" /* 。 */,
                                      "\xEF\xBC\x81" /* ！ */,
                                      "\xEF\xBC\x9F" /* ？ */};
  for (const char* e : kEnds)
    if (ends_with(line, e)) return true;
  return false;
}

}  // namespace

std::string gopher_quality(std::string_view text, const GopherQualityParams& p) {
  if (!p.enabled) return "";
  const bool cjk = is_cjk_text(text);
  const auto words = split_words(text);
  if (words.empty()) return "gopher_too_few_words";
  size_t non_symbol = 0, non_symbol_chars = 0;
  for (auto w : words)
    if (has_non_punct(w)) {
      ++non_symbol;
      non_symbol_chars += count_chars(w);
    }
  if (p.min_doc_words > 0 && non_symbol < static_cast<size_t>(p.min_doc_words)) return "gopher_too_few_words";
  if (p.max_doc_words > 0 && non_symbol > static_cast<size_t>(p.max_doc_words)) return "gopher_too_many_words";
  if (!cjk && non_symbol > 0) {
    const double avg = static_cast<double>(non_symbol_chars) / static_cast<double>(non_symbol);
    if (p.min_avg_word_length > 0 && avg < p.min_avg_word_length) return "gopher_short_avg_word";
    if (p.max_avg_word_length > 0 && avg > p.max_avg_word_length) return "gopher_long_avg_word";
  }
  const double n_words = static_cast<double>(words.size());
  if (p.max_symbol_word_ratio > 0) {
    if (static_cast<double>(count_substr(text, "#")) / n_words > p.max_symbol_word_ratio) return "gopher_hash_ratio";
    const double ellipses = static_cast<double>(count_substr(text, "...") + count_substr(text, "\xE2\x80\xA6"));
    if (ellipses / n_words > p.max_symbol_word_ratio) return "gopher_ellipsis_ratio";
  }
  const auto lines = split_lines(text);
  if (!lines.empty()) {
    size_t bullets = 0, ellipsis_end = 0;
    for (auto line : lines) {
      const auto l = ltrim(line), r = rtrim(line);
      if (starts_with(l, "\xE2\x80\xA2" /* • */) || starts_with(l, "-")) ++bullets;
      if (ends_with(r, "...") || ends_with(r, "\xE2\x80\xA6")) ++ellipsis_end;
    }
    const double n_lines = static_cast<double>(lines.size());
    if (p.max_bullet_lines_ratio > 0 && bullets / n_lines > p.max_bullet_lines_ratio) return "gopher_bullet_lines";
    if (p.max_ellipsis_lines_ratio > 0 && ellipsis_end / n_lines > p.max_ellipsis_lines_ratio)
      return "gopher_ellipsis_lines";
  }
  if (p.min_alpha_words_ratio > 0) {
    // CJK punctuation is one token per mark, far denser than in spaced
    // scripts: for CJK text the share is taken over non-punctuation tokens.
    size_t alpha = 0;
    for (auto w : words) alpha += has_alpha(w) ? 1 : 0;
    const double denominator = cjk ? static_cast<double>(std::max<size_t>(non_symbol, 1)) : n_words;
    if (alpha / denominator < p.min_alpha_words_ratio) return "gopher_alpha_words";
  }
  if (p.min_stop_words > 0) {
    const auto& stop = cjk ? chinese_stop_words() : english_stop_words();
    // Distinct stop words, matched as written (case-sensitive), like the
    // reference implementation.
    std::unordered_set<std::string_view> seen;
    int found = 0;
    for (auto w : words) {
      if (stop.count(w) > 0 && seen.insert(w).second && ++found >= p.min_stop_words) break;
    }
    if (found < p.min_stop_words) return "gopher_stop_words";
  }
  return "";
}

std::string gopher_repetition(std::string_view text, const GopherRepetitionParams& p) {
  if (!p.enabled) return "";
  const std::string_view body = trim(text);
  const double total_chars = static_cast<double>(count_chars(text));
  if (total_chars == 0) return "";

  const auto paragraphs = split_paragraphs(body);
  if (!paragraphs.empty()) {
    const auto [dup, dup_chars] = find_duplicates(paragraphs);
    if (p.dup_para_frac > 0 && static_cast<double>(dup) / paragraphs.size() > p.dup_para_frac)
      return "gopher_dup_para_frac";
    if (p.dup_para_char_frac > 0 && dup_chars / total_chars > p.dup_para_char_frac) return "gopher_dup_para_char_frac";
  }
  std::vector<std::string_view> lines;
  for (auto line : split_lines(text))
    if (!line.empty()) lines.push_back(line);
  if (!lines.empty()) {
    const auto [dup, dup_chars] = find_duplicates(lines);
    if (p.dup_line_frac > 0 && static_cast<double>(dup) / lines.size() > p.dup_line_frac) return "gopher_dup_line_frac";
    if (p.dup_line_char_frac > 0 && dup_chars / total_chars > p.dup_line_char_frac) return "gopher_dup_line_char_frac";
  }

  const auto words = split_words(text);
  // CJK tokens are single characters: join them without the space, which
  // would otherwise add half again to every n-gram's character count.
  const char* sep = is_cjk_text(text) ? "" : " ";
  for (const auto& [n, frac] : p.top_n_grams) {
    if (words.size() < static_cast<size_t>(n)) continue;
    std::unordered_map<std::string, size_t> counts;
    for (size_t i = 0; i + n <= words.size(); ++i) ++counts[join(words, i, n, sep)];
    size_t best_count = 0, best_chars = 0;
    for (const auto& [gram, c] : counts) {
      // Most frequent n-gram; ties go to the longest (its character share is what counts).
      const size_t chars = count_chars(gram);
      if (c > best_count || (c == best_count && chars > best_chars)) {
        best_count = c;
        best_chars = chars;
      }
    }
    // An n-gram seen once is not a repetition (this matters for short texts only).
    if (best_count >= 2 && static_cast<double>(best_chars * best_count) / total_chars > frac)
      return "gopher_top_" + std::to_string(n) + "_gram";
  }
  for (const auto& [n, frac] : p.dup_n_grams) {
    if (words.size() < static_cast<size_t>(n)) continue;
    std::unordered_set<std::string> seen;
    size_t repeated = 0, i = 0;
    while (i + n <= words.size()) {
      std::string gram = join(words, i, n, "");
      if (seen.count(gram) > 0) {
        repeated += count_chars(gram);
        i += n;
      } else {
        seen.insert(std::move(gram));
        ++i;
      }
    }
    if (repeated / total_chars > frac) return "gopher_dup_" + std::to_string(n) + "_grams";
  }
  return "";
}

std::string c4_quality(std::string& text, const C4Params& p) {
  if (!p.enabled) return "";
  static const char* const kPolicy[] = {"terms of use", "privacy policy", "cookie policy",
                                        "uses cookies", "use of cookies", "use cookies"};
  const bool cjk = is_cjk_text(text);
  std::string kept;
  size_t sentences = 0;
  for (auto raw : split_lines(text)) {
    std::string line(trim(raw));
    if (line.empty()) continue;
    const auto words = cjk ? split_words(line) : std::vector<std::string_view>{};
    size_t n_words = 0;
    bool too_long = false;
    if (cjk) {
      for (auto w : words) n_words += has_non_punct(w) ? 1 : 0;
    } else {
      size_t i = 0;
      while (i < line.size()) {
        while (i < line.size() && line[i] == ' ') ++i;
        if (i >= line.size()) break;
        size_t e = line.find(' ', i);
        if (e == std::string::npos) e = line.size();
        ++n_words;
        if (p.max_word_length > 0 &&
            count_chars(std::string_view(line).substr(i, e - i)) > static_cast<size_t>(p.max_word_length))
          too_long = true;
        i = e;
      }
    }
    if (too_long) continue;
    // Citation marks such as "[1]", "[edit]", "[citation needed]" are removed.
    for (const char* mark : {"[edit]", "[citation needed]"}) {
      size_t pos;
      while ((pos = line.find(mark)) != std::string::npos) line.erase(pos, std::string(mark).size());
    }
    for (size_t pos = line.find('['); pos != std::string::npos; pos = line.find('[', pos + 1)) {
      size_t e = pos + 1;
      while (e < line.size() && line[e] >= '0' && line[e] <= '9') ++e;
      if (e < line.size() && line[e] == ']') line.erase(pos, e - pos + 1);
    }
    if (p.require_terminal_punct && (!ends_with_terminal(line) || ends_with(line, "..."))) continue;
    if (n_words < static_cast<size_t>(p.min_words_per_line)) continue;
    const std::string lower = lowercase(line);
    if (p.drop_lorem_ipsum && lower.find("lorem ipsum") != std::string::npos) return "c4_lorem_ipsum";
    if (p.drop_javascript_lines && lower.find("javascript") != std::string::npos) continue;
    if (p.drop_curly_bracket && line.find('{') != std::string::npos) return "c4_curly_bracket";
    bool policy = false;
    if (p.drop_policy_lines)
      for (const char* phrase : kPolicy) policy = policy || lower.find(phrase) != std::string::npos;
    if (policy) continue;
    sentences += split_sentences(line).size();
    if (!kept.empty()) kept.push_back('\n');
    kept += line;
  }
  if (p.min_sentences > 0 && sentences < static_cast<size_t>(p.min_sentences)) return "c4_too_few_sentences";
  if (p.filter_lines) text = std::move(kept);
  return "";
}

std::string fineweb_quality(std::string_view text, const FineWebParams& p) {
  if (!p.enabled) return "";
  std::vector<std::string_view> lines;
  for (auto line : split_lines(text))
    if (!trim(line).empty()) lines.push_back(line);
  if (lines.empty()) return "fineweb_empty";
  const double n = static_cast<double>(lines.size());
  const bool cjk = is_cjk_text(text);
  size_t punct = 0, short_lines = 0;
  const size_t short_len = static_cast<size_t>(cjk ? p.cjk_short_line_length : p.short_line_length);
  for (auto line : lines) {
    punct += ends_with_terminal(line) ? 1 : 0;
    short_lines += count_chars(line) <= short_len ? 1 : 0;
  }
  if (punct / n < p.min_line_punct_ratio) return "fineweb_line_punct_ratio";
  if (short_lines / n > p.max_short_line_ratio) return "fineweb_short_line_ratio";
  const double chars_without_newlines =
      static_cast<double>(count_chars(text) - static_cast<size_t>(std::count(text.begin(), text.end(), '\n')));
  if (chars_without_newlines > 0 && find_duplicates(lines).second / chars_without_newlines > p.max_char_dup_ratio)
    return "fineweb_char_dup_ratio";
  const auto words = split_words(text);
  const double newlines = static_cast<double>(std::count(text.begin(), text.end(), '\n'));
  if (!words.empty() && newlines / words.size() > p.max_newline_word_ratio) return "fineweb_list_ratio";
  return "";
}

}  // namespace moetrain::data::clean

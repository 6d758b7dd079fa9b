// Word-boundary and CJK substring matching of term lists (see keyword_matcher.h).
#include "data/clean/keyword_matcher.h"

#include <algorithm>
#include <fstream>
#include <stdexcept>

#include "data/clean/text_units.h"

namespace moetrain::data::clean {
namespace {

bool has_cjk(std::string_view s) {
  size_t i = 0;
  while (i < s.size())
    if (is_cjk(next_code_point(s, i))) return true;
  return false;
}

// Words of a term or text: maximal runs of letters, digits and apostrophes.
struct WordSpan {
  size_t begin, end;
};

std::vector<WordSpan> word_spans(std::string_view text) {
  std::vector<WordSpan> spans;
  size_t i = 0;
  bool in_word = false;
  size_t start = 0;
  while (i < text.size()) {
    const size_t at = i;
    const char32_t cp = next_code_point(text, i);
    const bool part = (is_alnum(cp) && !is_cjk(cp)) || ((cp == '\'' || cp == 0x2019) && in_word);
    if (part && !in_word) {
      start = at;
      in_word = true;
    } else if (!part && in_word) {
      spans.push_back({start, at});
      in_word = false;
    }
  }
  if (in_word) spans.push_back({start, text.size()});
  return spans;
}

}  // namespace

KeywordMatcher::KeywordMatcher(const std::vector<std::string>& terms) {
  for (const auto& t : terms) add(t);
}

void KeywordMatcher::add(const std::string& term) {
  const std::string lower = lowercase(trim(term));
  if (lower.empty()) return;
  if (has_cjk(lower)) {
    cjk_.push_back(lower);
    return;
  }
  std::string joined;
  const auto spans = word_spans(lower);
  for (const auto& s : spans) {
    if (!joined.empty()) joined.push_back(' ');
    joined.append(lower, s.begin, s.end - s.begin);
  }
  if (joined.empty()) return;
  max_words_ = std::max(max_words_, std::min<size_t>(spans.size(), 4));
  words_.insert(joined);
}

std::vector<KeywordMatch> KeywordMatcher::find_all(std::string_view text) const {
  std::vector<KeywordMatch> matches;
  if (empty()) return matches;
  const std::string lower = lowercase(text);
  // Lower-casing keeps byte offsets only where lengths agree; map through
  // code point counts when they do not (rare: a few Unicode letters).
  const bool same_offsets = lower.size() == text.size();
  if (!words_.empty()) {
    const auto spans = word_spans(lower);
    std::string key;
    for (size_t i = 0; i < spans.size(); ++i) {
      key.clear();
      for (size_t n = 1; n <= max_words_ && i + n <= spans.size(); ++n) {
        if (n > 1) key.push_back(' ');
        key.append(lower, spans[i + n - 1].begin, spans[i + n - 1].end - spans[i + n - 1].begin);
        if (words_.count(key) > 0) {
          matches.push_back({spans[i].begin, spans[i + n - 1].end, key});
          break;
        }
      }
    }
  }
  for (const auto& term : cjk_) {
    for (size_t pos = lower.find(term); pos != std::string::npos; pos = lower.find(term, pos + 1))
      matches.push_back({pos, pos + term.size(), term});
  }
  std::sort(matches.begin(), matches.end(), [](const KeywordMatch& a, const KeywordMatch& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  if (!same_offsets) {
    // Convert offsets: walk both strings code point by code point.
    std::vector<size_t> map(lower.size() + 1, text.size());
    size_t i = 0, j = 0;
    while (i < text.size() && j < lower.size()) {
      map[j] = i;
      next_code_point(text, i);
      next_code_point(lower, j);
    }
    for (auto& m : matches) {
      m.begin = map[m.begin];
      m.end = map[std::min(m.end, lower.size())];
    }
  }
  return matches;
}

std::vector<std::string> read_term_list(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error(path + ": cannot read the term list");
  std::vector<std::string> terms;
  std::string line;
  while (std::getline(in, line)) {
    const auto t = trim(line);
    if (t.empty() || t[0] == '#') continue;
    terms.emplace_back(t);
  }
  return terms;
}

const std::vector<std::string>& builtin_toxic_terms() {
  // Strong slurs and obscenities only: words that are offensive in nearly
  // every context, so a match is a signal rather than noise.
  static const std::vector<std::string> terms = {
      // English
      "fuck", "fucking", "fucked", "fucker", "motherfucker", "shit", "bullshit", "cunt", "bitch", "bitches", "asshole",
      "dickhead", "faggot", "fag", "nigger", "nigga", "retard", "slut", "whore", "wanker", "twat", "cocksucker", "kike",
      "spic", "chink", "tranny",
      // Spanish
      "puta", "puto", "pendejo", "maricón", "cabrón", "gilipollas", "coño",
      // French
      "putain", "connard", "salope", "enculé", "pédé",
      // German
      "scheiße", "scheisse", "arschloch", "fotze", "wichser", "hurensohn",
      // Portuguese
      "caralho", "porra", "filho da puta",
      // Italian
      "cazzo", "stronzo", "vaffanculo", "troia",
      // Chinese
      "傻逼", "操你妈", "他妈的", "王八蛋", "婊子", "贱人", "狗日的", "草泥马"};
  return terms;
}

}  // namespace moetrain::data::clean

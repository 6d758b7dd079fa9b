// KeywordMatcher: counts occurrences of listed terms in a text, for the domain
// and toxicity stages. Matching is case-insensitive. A term of letters and
// spaces (one to four words) matches whole words only ("ass" does not match
// "class"); a term containing CJK characters matches anywhere, since CJK text
// has no word boundaries.
#pragma once

#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

namespace moetrain::data::clean {

struct KeywordMatch {
  size_t begin;  // byte offsets into the text
  size_t end;
  std::string term;
};

class KeywordMatcher {
 public:
  KeywordMatcher() = default;
  explicit KeywordMatcher(const std::vector<std::string>& terms);

  void add(const std::string& term);
  bool empty() const { return words_.empty() && cjk_.empty(); }
  size_t size() const { return words_.size() + cjk_.size(); }

  // Every match, in text order (overlapping CJK matches included).
  std::vector<KeywordMatch> find_all(std::string_view text) const;
  size_t count(std::string_view text) const { return find_all(text).size(); }

 private:
  std::unordered_set<std::string> words_;  // lower-case, words joined by one space
  std::vector<std::string> cjk_;           // lower-case
  size_t max_words_ = 1;
};

// Terms from a file: one per line, '#' starts a comment line. Throws
// std::runtime_error naming the file when it cannot be read.
std::vector<std::string> read_term_list(const std::string& path);

// The built-in multilingual list of offensive terms used when the toxicity
// stage is given no list of its own (English, Spanish, French, German,
// Portuguese, Italian, Chinese).
const std::vector<std::string>& builtin_toxic_terms();

}  // namespace moetrain::data::clean

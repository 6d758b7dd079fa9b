// Normalisation: NFKC, escapes and control characters out, whitespace
// normalised, nothing else changed; idempotent on real text.
#include <gtest/gtest.h>

#include "clean_test_support.h"
#include "data/clean/normalize.h"
#include "data/clean/text_units.h"

namespace moetrain::data::clean {
namespace {

TEST(clean_Normalize, NfkcControlsEscapesWhitespace) {
  // Full-width Latin and digits, a ligature, an ideographic space, NBSP.
  EXPECT_EQ(normalize_text("\xEF\xBC\xA1\xEF\xBC\xA2\xEF\xBC\x91 \xEF\xAC\x81le\xE3\x80\x80x\xC2\xA0y"),
            "AB1 file x y");
  EXPECT_EQ(normalize_text("\x1b[33m    -- Debian \x1b[32mcode\x1b[m end"), "-- Debian code end");
  EXPECT_EQ(normalize_text(std::string("a\x07"
                                       "b\x00"
                                       "c\x7f",
                                       6)),
            "abc");
  EXPECT_EQ(normalize_text("  one\t\ttwo  \r\nthree\r\n\r\n\r\n\r\nfour  "), "one two\nthree\n\nfour");
  NormalizeCounts counts;
  normalize_text("x\x1b]0;title\x07y\x01", &counts);
  EXPECT_EQ(counts.escapes, 1);
  EXPECT_EQ(counts.controls, 1);
  // Case, punctuation and words are untouched.
  EXPECT_EQ(normalize_text("Hello, World! It's 3 o'clock."), "Hello, World! It's 3 o'clock.");
}

TEST(clean_Normalize, RealChineseFortunesLoseTheirEscapesAndStayIdempotent) {
  CLEAN_NEED_SHARED("zh_fortunes.jsonl");
  size_t with_escapes = 0;
  for (const auto& rec : test::read_jsonl(test::shared_data("zh_fortunes.jsonl"), 800)) {
    const std::string raw = rec.at("text");
    const std::string once = normalize_text(raw);
    if (raw.find('\x1b') != std::string::npos) ++with_escapes;
    EXPECT_EQ(once.find('\x1b'), std::string::npos);
    EXPECT_EQ(once.find("[33m"), std::string::npos);
    EXPECT_EQ(normalize_text(once), once);
    // The Chinese characters survive: the same number of CJK ideographs.
    size_t cjk_raw = 0, cjk_once = 0, i = 0;
    while (i < raw.size()) {
      char32_t c = next_code_point(raw, i);
      cjk_raw += c >= 0x4E00 && c <= 0x9FFF;
    }
    i = 0;
    while (i < once.size()) {
      char32_t c = next_code_point(once, i);
      cjk_once += c >= 0x4E00 && c <= 0x9FFF;
    }
    EXPECT_EQ(cjk_raw, cjk_once);
  }
  EXPECT_GT(with_escapes, 100u) << "the sample should carry ANSI colour escapes";
}

TEST(clean_TextUnits, WordsSplitPunctuationAndCjkCharacters) {
  const auto w = split_words("The end. \"Quoted\" 中文字");
  std::vector<std::string> got(w.begin(), w.end());
  EXPECT_EQ(got, (std::vector<std::string>{"The", "end", ".", "\"", "Quoted", "\"", "中", "文", "字"}));
  // English punctuation is split the way spaCy's tokenizer (datatrove's) does.
  const auto e = split_words("Well-known U.S. firms don't -- ok!!! see http://x.com/a-b. ...end e.g. 5kg :-)");
  std::vector<std::string> english(e.begin(), e.end());
  EXPECT_EQ(english, (std::vector<std::string>{"Well", "-",   "known", "U.S.", "firms", "do",  "n't",
                                               "--",   "ok",  "!",     "!",    "!",     "see", "http://x.com/a-b",
                                               ".",    "...", "end",   "e.g.", "5",     "kg",  ":-)"}));
  EXPECT_TRUE(is_cjk_text("这是一个中文句子，里面有几个 English words"));
  EXPECT_FALSE(is_cjk_text("An English sentence with 中文 in it."));
}

}  // namespace
}  // namespace moetrain::data::clean

// Text units shared by the cleaning stages: UTF-8 decoding, character classes
// (letters, punctuation, CJK), and the splitting of a document into words,
// lines, paragraphs and sentences.
//
// Words: text without spaces (Chinese, Japanese) has no word boundaries, so
// every CJK ideograph, kana or hangul syllable counts as one word; other text
// is split on whitespace and then the way common English word tokenizers
// (spaCy, which datatrove uses for the Gopher rules) split punctuation:
// "end." -> "end" "."; "!!!" -> three tokens; "don't" -> "do" "n't";
// "well-known" -> "well" "-" "known"; URLs, e-mail addresses, "U.S.", "--"
// and "..." stay whole. The published rules count these tokens.
// All functions expect valid UTF-8 (the pipeline rejects anything else before
// any stage runs); an invalid byte is treated as one U+FFFD character.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace moetrain::data::clean {

// The code point starting at s[i]; advances i past it.
char32_t next_code_point(std::string_view s, size_t& i);
void append_utf8(std::string& out, char32_t cp);

bool is_cjk(char32_t cp);        // Han, kana, hangul, CJK symbols and punctuation
bool is_alpha(char32_t cp);      // Unicode letter (categories L*)
bool is_alnum(char32_t cp);      // letter or number (L*, N*)
bool is_punct(char32_t cp);      // punctuation or symbol (P*, S*)
bool is_space(char32_t cp);      // whitespace incl. Unicode spaces and newlines
char32_t to_lower(char32_t cp);  // simple lower-case mapping

// Lower-cased copy (simple per-character mapping).
std::string lowercase(std::string_view text);

// Share of the letters in `text` that are CJK; >= 0.3 marks a CJK document,
// whose rules count characters instead of words (a CJK character carries
// about as much as a short word, so this is about half the content).
double cjk_letter_fraction(std::string_view text);
bool is_cjk_text(std::string_view text);

// Words as described above. Views into `text`.
std::vector<std::string_view> split_words(std::string_view text);

// True when the token has at least one character that is not punctuation.
bool has_non_punct(std::string_view token);
// True when the token has at least one letter.
bool has_alpha(std::string_view token);

// Lines without their '\n'; a final empty line after a trailing '\n' is dropped.
std::vector<std::string_view> split_lines(std::string_view text);
// Paragraphs: runs of lines separated by one or more blank lines.
std::vector<std::string_view> split_paragraphs(std::string_view text);
// Sentences: text up to and including ., !, ?, 。, ！, ？ (and closing quotes
// after them), or a line end; trimmed, empty ones dropped.
std::vector<std::string_view> split_sentences(std::string_view text);

// Number of code points.
size_t count_chars(std::string_view text);

std::string_view trim(std::string_view s);

}  // namespace moetrain::data::clean

// Text units: UTF-8 decoding and character classes from utf8proc.
#include "data/clean/text_units.h"

#include <utf8proc.h>

#include <algorithm>

namespace moetrain::data::clean {

char32_t next_code_point(std::string_view s, size_t& i) {
  const auto* p = reinterpret_cast<const utf8proc_uint8_t*>(s.data() + i);
  utf8proc_int32_t cp = 0;
  const utf8proc_ssize_t n = utf8proc_iterate(p, static_cast<utf8proc_ssize_t>(s.size() - i), &cp);
  if (n <= 0) {
    ++i;
    return 0xFFFD;
  }
  i += static_cast<size_t>(n);
  return static_cast<char32_t>(cp);
}

void append_utf8(std::string& out, char32_t cp) {
  utf8proc_uint8_t buf[4];
  const auto n = utf8proc_encode_char(static_cast<utf8proc_int32_t>(cp), buf);
  out.append(reinterpret_cast<const char*>(buf), static_cast<size_t>(n));
}

bool is_cjk(char32_t c) {
  return (c >= 0x4E00 && c <= 0x9FFF) ||    // CJK unified ideographs
         (c >= 0x3400 && c <= 0x4DBF) ||    // extension A
         (c >= 0x20000 && c <= 0x2FA1F) ||  // extensions B.. and compatibility supplement
         (c >= 0xF900 && c <= 0xFAFF) ||    // compatibility ideographs
         (c >= 0x3040 && c <= 0x30FF) ||    // hiragana, katakana
         (c >= 0x31F0 && c <= 0x31FF) ||    // katakana extensions
         (c >= 0xAC00 && c <= 0xD7AF) ||    // hangul syllables
         (c >= 0x1100 && c <= 0x11FF) ||    // hangul jamo
         (c >= 0x3000 && c <= 0x303F);      // CJK symbols and punctuation
}

namespace {
utf8proc_category_t category(char32_t cp) { return utf8proc_category(static_cast<utf8proc_int32_t>(cp)); }
}  // namespace

bool is_alpha(char32_t cp) {
  if (cp < 0x80) return (cp | 0x20) >= 'a' && (cp | 0x20) <= 'z';
  const auto c = category(cp);
  return c >= UTF8PROC_CATEGORY_LU && c <= UTF8PROC_CATEGORY_LO;
}

bool is_alnum(char32_t cp) {
  if (cp < 0x80) return is_alpha(cp) || (cp >= '0' && cp <= '9');
  const auto c = category(cp);
  return (c >= UTF8PROC_CATEGORY_LU && c <= UTF8PROC_CATEGORY_LO) ||
         (c >= UTF8PROC_CATEGORY_ND && c <= UTF8PROC_CATEGORY_NO);
}

bool is_punct(char32_t cp) {
  if (cp < 0x80) return cp > 0x20 && cp < 0x7F && !is_alnum(cp);
  const auto c = category(cp);
  return (c >= UTF8PROC_CATEGORY_PC && c <= UTF8PROC_CATEGORY_PO) ||
         (c >= UTF8PROC_CATEGORY_SM && c <= UTF8PROC_CATEGORY_SO);
}

bool is_space(char32_t cp) {
  if (cp < 0x80) return cp == ' ' || (cp >= '\t' && cp <= '\r');
  if (cp == 0x85) return true;
  const auto c = category(cp);
  return c == UTF8PROC_CATEGORY_ZS || c == UTF8PROC_CATEGORY_ZL || c == UTF8PROC_CATEGORY_ZP;
}

char32_t to_lower(char32_t cp) {
  if (cp < 0x80) return (cp >= 'A' && cp <= 'Z') ? cp + 32 : cp;
  return static_cast<char32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(cp)));
}

std::string lowercase(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    const unsigned char b = static_cast<unsigned char>(text[i]);
    if (b < 0x80) {
      out.push_back(static_cast<char>(b >= 'A' && b <= 'Z' ? b + 32 : b));
      ++i;
      continue;
    }
    append_utf8(out, to_lower(next_code_point(text, i)));
  }
  return out;
}

double cjk_letter_fraction(std::string_view text) {
  size_t letters = 0, cjk = 0, i = 0;
  while (i < text.size()) {
    const char32_t cp = next_code_point(text, i);
    if (is_cjk(cp) && cp >= 0x3040) {  // ideographs and kana, not CJK punctuation
      ++cjk;
      ++letters;
    } else if (is_alpha(cp)) {
      ++letters;
    }
  }
  return letters == 0 ? 0.0 : static_cast<double>(cjk) / static_cast<double>(letters);
}

// One CJK character carries about as much as a short word, so a third of the
// letters being CJK already makes a text mostly CJK by content.
bool is_cjk_text(std::string_view text) { return cjk_letter_fraction(text) >= 0.3; }

namespace {

bool starts_with(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }

bool ends_with_ci(std::string_view s, std::string_view suffix) {
  if (s.size() <= suffix.size()) return false;
  for (size_t i = 0; i < suffix.size(); ++i) {
    char a = s[s.size() - suffix.size() + i], b = suffix[i];
    if (a >= 'A' && a <= 'Z') a = static_cast<char>(a + 32);
    if (a != b) return false;
  }
  return true;
}

// The code point that ends s, and where it starts.
char32_t last_code_point(std::string_view s, size_t& start) {
  start = s.size() - 1;
  while (start > 0 && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
  size_t i = start;
  return next_code_point(s, i);
}

bool is_ascii_letter(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool is_ascii_digit(char c) { return c >= '0' && c <= '9'; }

// Punctuation that stays attached at the edges of a token: hyphen and tilde
// runs ("--", "~~~"), "|", "/", "@".
bool sticky(char32_t c) { return c == '-' || c == '~' || c == '|' || c == '/' || c == '@' || c == '\\' || c == '^'; }

// Tokens kept whole: emoticons and a few names with symbols.
bool kept_whole(std::string_view t) {
  static const char* const kWhole[] = {":-)", ":)", ";-)", ";)",  ":-(", ":(",  ":-D", ":D",
                                       ":-P", ":P", "=)",  "(-:", "C++", "'em", "''"};
  for (const char* w : kWhole)
    if (t == w) return true;
  return false;
}

// A period after these stays with the word: single letters with dots
// ("U.S", "e.g", "p.m") and a single letter ("J").
bool dotted_letters(std::string_view core) {
  if (core.empty()) return false;
  for (size_t i = 0; i < core.size(); ++i) {
    const bool letter_slot = i % 2 == 0;
    if (letter_slot ? !is_ascii_letter(core[i]) : core[i] != '.') return false;
  }
  return core.size() % 2 == 1;
}

bool looks_like_url_or_email(std::string_view t) {
  if (t.find("://") != std::string_view::npos || starts_with(t, "www.")) return true;
  const size_t at = t.find('@');
  return at != std::string_view::npos && at > 0 && at + 1 < t.size() && t.find('.', at) != std::string_view::npos;
}

// Moves leading punctuation of `tok` to `out` one mark at a time ('' and a run
// of dots go as one token); sticky marks, a period and a last character stay.
void split_leading_punctuation(std::string_view& tok, std::vector<std::string_view>& out) {
  while (tok.size() > 1 && !kept_whole(tok)) {
    if (starts_with(tok, "''")) {
      out.push_back(tok.substr(0, 2));
      tok.remove_prefix(2);
      continue;
    }
    if (starts_with(tok, "..")) {  // a leading run of dots is one token
      const size_t dots = std::min(tok.find_first_not_of('.'), tok.size());
      if (dots == tok.size()) break;
      out.push_back(tok.substr(0, dots));
      tok.remove_prefix(dots);
      continue;
    }
    size_t j = 0;
    const char32_t c = next_code_point(tok, j);
    if (!is_punct(c) || sticky(c) || c == '.' || j == tok.size()) break;
    out.push_back(tok.substr(0, j));
    tok.remove_prefix(j);
  }
}

// Cuts a contraction after a letter ("n't", "'s", ...) off the end of `tok`
// into `suffixes`; false when there is none.
bool split_contraction(std::string_view& tok, std::vector<std::string_view>& suffixes) {
  for (std::string_view contraction : {"n't", "'s", "'m", "'re", "'ve", "'ll", "'d", "\xE2\x80\x99s"}) {
    if (ends_with_ci(tok, contraction) && is_ascii_letter(tok[tok.size() - contraction.size() - 1])) {
      suffixes.push_back(tok.substr(tok.size() - contraction.size()));
      tok.remove_suffix(contraction.size());
      return true;
    }
  }
  return false;
}

// `tok` ends in a period that starts at `at`: cuts it (or a trailing run of
// dots) into `suffixes`, or returns false when it stays with the word (all
// dots, dotted letters, abbreviations).
bool split_final_period(std::string_view& tok, size_t at, std::vector<std::string_view>& suffixes) {
  if (tok.find_first_not_of('.') == std::string_view::npos) return false;  // "..", "...."
  if (tok.size() >= 3 && tok[tok.size() - 2] == '.') {                     // a trailing run of dots is one token
    size_t from = tok.size();
    while (from > 0 && tok[from - 1] == '.') --from;
    suffixes.push_back(tok.substr(from));
    tok.remove_suffix(tok.size() - from);
    return true;
  }
  const std::string_view core = tok.substr(0, at);
  if (dotted_letters(core)) return false;  // "U.S.", "p.m.", initials "J."
  static const char* const kAbbreviations[] = {"Mr",  "Mrs",  "Ms",  "Dr",  "St",  "Jr",   "Sr", "Mt",   "Jan", "Feb",
                                               "Aug", "Sept", "Oct", "Nov", "Dec", "Inc",  "Co", "Corp", "Ltd", "vs",
                                               "Gen", "Gov",  "Rev", "Sen", "Rep", "Prof", "Ft", "Ave"};
  bool abbreviation = false;
  for (const char* a : kAbbreviations) abbreviation = abbreviation || core == a;
  if (abbreviation) return false;
  suffixes.push_back(tok.substr(at));
  tok.remove_suffix(tok.size() - at);
  return true;
}

// Cuts contractions, final periods and trailing punctuation off the end of
// `tok` into `suffixes` (in reverse order). A URL or e-mail address only loses
// marks that cannot end one.
void split_trailing_punctuation(std::string_view& tok, bool link, std::vector<std::string_view>& suffixes) {
  while (tok.size() > 1) {
    if (!link && split_contraction(tok, suffixes)) continue;
    size_t at = 0;
    const char32_t c = last_code_point(tok, at);
    if (c == '.') {
      if (!split_final_period(tok, at, suffixes)) break;
      continue;
    }
    const bool splits = link ? (c == ',' || c == ';' || c == ':' || c == '!' || c == '?' || c == ')' || c == '"' ||
                                c == '\'' || c == '>')
                             : (is_punct(c) && !sticky(c));
    if (!splits) break;
    if (tok.size() >= 3 && tok.substr(tok.size() - 2) == "''") at = tok.size() - 2;  // closing '' quote
    suffixes.push_back(tok.substr(at));
    tok.remove_suffix(tok.size() - at);
  }
}

// Splits `tok` at infixes, moving every piece but the last to `out`: hyphens
// (and -- and dashes) between letters or digits; '=', ':', ',', '/' between
// letters; a run of dots after a letter ("x...y").
void split_infixes(std::string_view& tok, std::vector<std::string_view>& out) {
  size_t piece = 0, i = 0;
  while (i < tok.size()) {
    const size_t at = i;
    const char32_t c = next_code_point(tok, i);
    if (at == 0 || i >= tok.size()) continue;
    const char before = tok[at - 1];
    size_t end = i;
    if (c == '-') {
      while (end < tok.size() && tok[end] == '-') ++end;  // "--"
    }
    if (end >= tok.size()) continue;
    const char after = tok[end];
    const bool letters = is_ascii_letter(before) && is_ascii_letter(after);
    const bool alnum =
        (is_ascii_letter(before) || is_ascii_digit(before)) && (is_ascii_letter(after) || is_ascii_digit(after));
    const bool dash = c == '-' || c == 0x2013 || c == 0x2014;
    const bool dots = c == '.' && end == i && i + 1 < tok.size() && tok[i] == '.';
    if (dots) {  // "x...y"
      size_t e = i;
      while (e < tok.size() && tok[e] == '.') ++e;
      if (e < tok.size() && is_ascii_letter(before)) {
        out.push_back(tok.substr(piece, at - piece));
        out.push_back(tok.substr(at, e - at));
        piece = e;
        i = e;
      }
      continue;
    }
    if ((dash && alnum) || ((c == '=' || c == ':' || c == ',' || c == '/' || c == '<' || c == '>') && letters)) {
      out.push_back(tok.substr(piece, at - piece));
      out.push_back(tok.substr(at, end - at));
      piece = end;
      i = end;
    }
  }
  tok.remove_prefix(piece);
}

// A number followed by a unit: moves the number of "5kg", "10am" to `out`.
void split_number_unit(std::string_view& tok, std::vector<std::string_view>& out) {
  size_t d = 0;
  while (d < tok.size() && is_ascii_digit(tok[d])) ++d;
  if (d > 0 && d < tok.size()) {
    size_t l = d;
    while (l < tok.size() && is_ascii_letter(tok[l])) ++l;
    if (l == tok.size()) {
      out.push_back(tok.substr(0, d));
      tok.remove_prefix(d);
    }
  }
}

// One whitespace-separated token without CJK characters, split the way
// common English word tokenizers do (spaCy's rules, approximately): leading
// and trailing punctuation one mark at a time ("!!!" is three tokens; hyphen
// and dot runs stay whole), contractions ("do" "n't"), a final period except
// after abbreviations ("U.S.", "Mr.", single letters), hyphens and a few
// other marks between letters ("well-known" -> "well" "-" "known"), and a
// unit after a number ("5kg" -> "5" "kg").
void split_token(std::string_view tok, std::vector<std::string_view>& out) {
  split_leading_punctuation(tok, out);
  if (kept_whole(tok)) {
    out.push_back(tok);
    return;
  }
  const bool link = looks_like_url_or_email(tok);
  std::vector<std::string_view> suffixes;  // collected from the end
  split_trailing_punctuation(tok, link, suffixes);
  if (!link && !tok.empty()) {
    split_infixes(tok, out);
    split_number_unit(tok, out);
  }
  if (!tok.empty()) out.push_back(tok);
  out.insert(out.end(), suffixes.rbegin(), suffixes.rend());
}

}  // namespace

std::vector<std::string_view> split_words(std::string_view text) {
  std::vector<std::string_view> words;
  size_t i = 0;
  while (i < text.size()) {
    const size_t start = i;
    const char32_t cp = next_code_point(text, i);
    if (is_space(cp)) continue;
    if (is_cjk(cp)) {
      words.push_back(text.substr(start, i - start));
      continue;
    }
    // A whitespace token, ending before whitespace or a CJK character.
    size_t end = i;
    while (end < text.size()) {
      size_t j = end;
      const char32_t c = next_code_point(text, j);
      if (is_space(c) || is_cjk(c)) break;
      end = j;
    }
    split_token(text.substr(start, end - start), words);
    i = end;
  }
  return words;
}

bool has_non_punct(std::string_view token) {
  size_t i = 0;
  while (i < token.size())
    if (!is_punct(next_code_point(token, i))) return true;
  return false;
}

bool has_alpha(std::string_view token) {
  size_t i = 0;
  while (i < token.size()) {
    const char32_t cp = next_code_point(token, i);
    if (is_alpha(cp) || (is_cjk(cp) && cp >= 0x3040)) return true;
  }
  return false;
}

std::vector<std::string_view> split_lines(std::string_view text) {
  std::vector<std::string_view> lines;
  size_t start = 0;
  while (start < text.size()) {
    size_t nl = text.find('\n', start);
    if (nl == std::string_view::npos) nl = text.size();
    lines.push_back(text.substr(start, nl - start));
    start = nl + 1;
  }
  return lines;
}

std::string_view trim(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && (s[b] == ' ' || s[b] == '\t' || s[b] == '\n' || s[b] == '\r')) ++b;
  while (e > b && (s[e - 1] == ' ' || s[e - 1] == '\t' || s[e - 1] == '\n' || s[e - 1] == '\r')) --e;
  return s.substr(b, e - b);
}

std::vector<std::string_view> split_paragraphs(std::string_view text) {
  std::vector<std::string_view> paragraphs;
  size_t start = std::string_view::npos, end = 0, pos = 0;
  while (pos <= text.size()) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string_view::npos) nl = text.size();
    const bool blank = trim(text.substr(pos, nl - pos)).empty();
    if (blank) {
      if (start != std::string_view::npos) paragraphs.push_back(text.substr(start, end - start));
      start = std::string_view::npos;
    } else {
      if (start == std::string_view::npos) start = pos;
      end = nl;
    }
    pos = nl + 1;
  }
  if (start != std::string_view::npos) paragraphs.push_back(text.substr(start, end - start));
  return paragraphs;
}

std::vector<std::string_view> split_sentences(std::string_view text) {
  std::vector<std::string_view> sentences;
  size_t start = 0, i = 0;
  auto emit = [&](size_t end) {
    std::string_view s = trim(text.substr(start, end - start));
    if (!s.empty()) sentences.push_back(s);
    start = end;
  };
  while (i < text.size()) {
    const char32_t cp = next_code_point(text, i);
    if (cp == '\n') {
      emit(i);
    } else if (cp == '.' || cp == '!' || cp == '?' || cp == 0x3002 || cp == 0xFF01 || cp == 0xFF1F) {
      // Absorb repeated terminators and closing quotes/brackets.
      while (i < text.size()) {
        size_t j = i;
        const char32_t c = next_code_point(text, j);
        if (c == '.' || c == '!' || c == '?' || c == '"' || c == '\'' || c == ')' || c == 0x201D || c == 0x2019 ||
            c == 0x3002 || c == 0xFF01 || c == 0xFF1F || c == 0x300D)
          i = j;
        else
          break;
      }
      // A CJK terminator ends a sentence anywhere; '.' only before whitespace or the end.
      if (cp >= 0x3000 || i >= text.size() || text[i] == ' ' || text[i] == '\n' || text[i] == '\t') emit(i);
    }
  }
  emit(text.size());
  return sentences;
}

size_t count_chars(std::string_view text) {
  size_t n = 0;
  for (char c : text)
    if ((static_cast<unsigned char>(c) & 0xC0) != 0x80) ++n;
  return n;
}

}  // namespace moetrain::data::clean

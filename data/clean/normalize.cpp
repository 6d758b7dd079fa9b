// Normalisation: escapes, NFKC, control characters, whitespace (see normalize.h).
#include "data/clean/normalize.h"

#include <utf8proc.h>

#include <cstdlib>
#include <memory>
#include <stdexcept>

#include "data/clean/text_units.h"

namespace moetrain::data::clean {

std::string strip_escape_sequences(std::string_view s, long* removed) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  long count = 0;
  while (i < s.size()) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    // C1 CSI (U+009B) encoded in UTF-8 is C2 9B.
    const bool c1_csi = c == 0xC2 && i + 1 < s.size() && static_cast<unsigned char>(s[i + 1]) == 0x9B;
    if (c != 0x1B && !c1_csi) {
      out.push_back(s[i++]);
      continue;
    }
    ++count;
    if (c1_csi || (i + 1 < s.size() && s[i + 1] == '[')) {
      // CSI: parameter and intermediate bytes 0x20-0x3F, then one final byte 0x40-0x7E.
      i += 2;
      while (i < s.size() && static_cast<unsigned char>(s[i]) >= 0x20 && static_cast<unsigned char>(s[i]) <= 0x3F) ++i;
      if (i < s.size() && static_cast<unsigned char>(s[i]) >= 0x40 && static_cast<unsigned char>(s[i]) <= 0x7E) ++i;
    } else if (i + 1 < s.size() && s[i + 1] == ']') {
      // OSC: up to BEL or ESC '\'.
      i += 2;
      while (i < s.size() && s[i] != '\a' && !(s[i] == 0x1B && i + 1 < s.size() && s[i + 1] == '\\')) ++i;
      if (i < s.size()) i += s[i] == '\a' ? 1 : 2;
    } else if (i + 1 < s.size() && static_cast<unsigned char>(s[i + 1]) >= 0x20 &&
               static_cast<unsigned char>(s[i + 1]) < 0x7F) {
      i += 2;  // ESC followed by one ASCII character
    } else {
      i += 1;  // a lone ESC
    }
  }
  if (removed) *removed += count;
  return out;
}

namespace {

std::string nfkc(const std::string& text) {
  utf8proc_uint8_t* result = nullptr;
  const auto n =
      utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(text.data()), static_cast<utf8proc_ssize_t>(text.size()),
                   &result, static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT));
  if (n < 0) throw std::runtime_error(std::string("NFKC normalisation failed: ") + utf8proc_errmsg(n));
  std::unique_ptr<utf8proc_uint8_t, decltype(&std::free)> owned(result, &std::free);
  return std::string(reinterpret_cast<const char*>(result), static_cast<size_t>(n));
}

bool all_ascii(std::string_view s) {
  for (char c : s)
    if (static_cast<unsigned char>(c) >= 0x80) return false;
  return true;
}

}  // namespace

std::string normalize_text(std::string_view text, NormalizeCounts* counts) {
  long escapes = 0;
  std::string stripped = strip_escape_sequences(text, &escapes);
  // ASCII is already NFKC: skip the allocation-heavy mapping for it.
  std::string composed = all_ascii(stripped) ? std::move(stripped) : nfkc(stripped);

  std::string out;
  out.reserve(composed.size());
  long controls = 0;
  bool pending_space = false;  // spaces seen since the last character of this line
  int pending_newlines = 0;    // newlines seen since the last character
  bool any = false;
  size_t i = 0;
  while (i < composed.size()) {
    const size_t start = i;
    char32_t cp;
    const unsigned char b = static_cast<unsigned char>(composed[i]);
    if (b < 0x80) {
      cp = b;
      ++i;
    } else {
      cp = next_code_point(composed, i);
    }
    if (cp == '\r') {
      if (i < composed.size() && composed[i] == '\n') continue;  // "\r\n": the '\n' follows
      cp = '\n';
    }
    if (cp == '\n') {
      ++pending_newlines;
      pending_space = false;
      continue;
    }
    if (cp == '\t' || cp == ' ' || (cp >= 0x80 && is_space(cp))) {
      pending_space = true;
      continue;
    }
    if (cp == 0xFEFF || (cp < 0x20) || (cp >= 0x7F && cp < 0xA0)) {
      ++controls;
      continue;
    }
    if (any) {
      if (pending_newlines > 0)
        out.append(pending_newlines >= 2 ? "\n\n" : "\n");
      else if (pending_space)
        out.push_back(' ');
    }
    pending_newlines = 0;
    pending_space = false;
    any = true;
    out.append(composed, start, i - start);
  }
  if (counts) {
    counts->escapes += escapes;
    counts->controls += controls;
  }
  return out;
}

}  // namespace moetrain::data::clean

// Normalisation, the stage every document goes through first:
//   1. terminal escape sequences are removed (CSI "ESC [ ... final", OSC
//      "ESC ] ... BEL|ESC \", and two-byte "ESC x"), as are the C1 CSI forms;
//   2. Unicode NFKC (utf8proc): compatibility forms (full-width Latin,
//      ligatures, ideographic space) become their plain equivalents;
//   3. control characters (Unicode Cc, other than newline and tab) and the
//      byte-order mark are removed; "\r\n" and a lone "\r" become "\n";
//   4. whitespace: tabs and Unicode spaces become ' ', runs of spaces inside a
//      line become one, spaces at the start and end of each line go, more than
//      one blank line in a row becomes one, and the document is trimmed.
// Nothing else about the text changes (case, punctuation and words are kept).
// Input must be valid UTF-8; the result is valid UTF-8 and idempotent:
// normalize_text(normalize_text(x)) == normalize_text(x).
#pragma once

#include <string>
#include <string_view>

namespace moetrain::data::clean {

struct NormalizeCounts {
  long escapes = 0;   // escape sequences removed
  long controls = 0;  // control characters removed
};

std::string normalize_text(std::string_view text, NormalizeCounts* counts = nullptr);

// Step 1 alone (exposed for tests).
std::string strip_escape_sequences(std::string_view text, long* removed = nullptr);

}  // namespace moetrain::data::clean

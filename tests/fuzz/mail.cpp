// Fuzz target: the mail extractor (data/clean/mail_extract.h): RFC-822
// headers, MIME multiparts, quoted-printable and base64 bodies, RFC 2047
// encoded words, charsets and HTML to text.
//
// Input: one raw message. The target runs extract_mail_text on it and the
// building blocks (decode_header_value, html_to_text, decode_quoted_printable,
// decode_base64) on the same bytes.
//
// A bug: a crash, a sanitizer report, a hang (libFuzzer's -timeout; inputs
// are a few KiB, so quadratic time shows only in the slowest units), any
// exception (none is documented), or output that is not valid UTF-8 for an
// input that is (the extractor promises valid UTF-8 whatever the body's
// charset: a message arrives as a UTF-8 JSON string and leaves as one).
#include <cstddef>
#include <cstdint>
#include <string>

#include "data/clean/mail_extract.h"
#include "data/jsonl_reader.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace clean = moetrain::data::clean;
  using moetrain::data::is_valid_utf8;
  const std::string message(reinterpret_cast<const char*>(data), size);
  const bool utf8 = is_valid_utf8(message);

  const std::string text = clean::extract_mail_text(message);
  if (utf8) FUZZ_CHECK(is_valid_utf8(text), "extract_mail_text made invalid UTF-8 of valid UTF-8");

  const std::string header = clean::decode_header_value(message);
  if (utf8) FUZZ_CHECK(is_valid_utf8(header), "decode_header_value made invalid UTF-8 of valid UTF-8");
  const std::string html = clean::html_to_text(message);
  if (utf8) FUZZ_CHECK(is_valid_utf8(html), "html_to_text made invalid UTF-8 of valid UTF-8");
  clean::decode_quoted_printable(message);
  clean::decode_base64(message);
  return 0;
}

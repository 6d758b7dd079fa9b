// Mail extraction: turns one raw RFC-822 message (headers, MIME multipart,
// quoted-printable or base64 bodies, HTML parts) into plain text: the Subject
// line, a blank line, then the body. Of a multipart/alternative the text/plain
// part is taken (the HTML one only when there is no plain part); other
// multiparts contribute every text part in order; attachments and non-text
// parts are dropped. HTML becomes text: script/style removed, tags removed,
// block tags become line breaks, entities decoded. Bodies in ISO-8859-1 or
// windows-1252 are converted to UTF-8; a body in any other charset is kept as
// is when it is valid UTF-8 and otherwise read as windows-1252.
// Input that does not start with a header block is returned unchanged.
#pragma once

#include <string>

namespace moetrain::data::clean {

std::string extract_mail_text(const std::string& message);

// Building blocks (exposed for tests).
std::string decode_quoted_printable(const std::string& body);
std::string decode_base64(const std::string& body);
std::string html_to_text(const std::string& html);
// RFC 2047 encoded words ("=?utf-8?q?...?=") in a header value.
std::string decode_header_value(const std::string& value);

}  // namespace moetrain::data::clean

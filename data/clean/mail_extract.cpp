// RFC-822 / MIME to plain text (see mail_extract.h).
#include "data/clean/mail_extract.h"

#include <algorithm>
#include <cctype>
#include <map>
#include <string_view>
#include <vector>

#include "data/clean/text_units.h"
#include "data/jsonl_reader.h"

namespace moetrain::data::clean {
namespace {

std::string lower_ascii(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

struct Part {
  std::map<std::string, std::string> headers;  // lower-case names, unfolded values
  std::string body;
};

// Splits headers from body. False when the text has no header block.
bool parse_part(std::string_view text, Part& part, bool require_headers) {
  size_t pos = 0;
  std::string name, value;
  auto flush = [&] {
    if (!name.empty()) part.headers[lower_ascii(name)] = std::string(trim(value));
    name.clear();
    value.clear();
  };
  size_t header_lines = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string_view::npos) nl = text.size();
    std::string_view line = text.substr(pos, nl - pos);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) {
      pos = nl + 1;
      break;
    }
    if ((line[0] == ' ' || line[0] == '\t') && !name.empty()) {
      value += ' ';
      value += std::string(trim(line));
    } else {
      const size_t colon = line.find(':');
      const bool mbox_from = header_lines == 0 && line.substr(0, 5) == "From ";
      if (mbox_from) {
        ++header_lines;
        pos = nl + 1;
        continue;
      }
      if (colon == std::string_view::npos || colon == 0 || line.substr(0, colon).find(' ') != std::string_view::npos) {
        if (require_headers && header_lines == 0) return false;
        break;  // not a header: the body starts here
      }
      flush();
      name = std::string(line.substr(0, colon));
      value = std::string(line.substr(colon + 1));
      ++header_lines;
    }
    pos = nl + 1;
  }
  flush();
  if (require_headers && header_lines == 0) return false;
  part.body = std::string(text.substr(std::min(pos, text.size())));
  return true;
}

// A parameter of a header value: boundary="x" / charset=utf-8.
std::string header_param(const std::string& value, const std::string& param) {
  const std::string lower = lower_ascii(value);
  size_t pos = 0;
  while ((pos = lower.find(param + "=", pos)) != std::string::npos) {
    if (pos > 0 && (std::isalnum(static_cast<unsigned char>(lower[pos - 1])) || lower[pos - 1] == '-')) {
      ++pos;
      continue;
    }
    size_t start = pos + param.size() + 1;
    if (start < value.size() && value[start] == '"') {
      const size_t end = value.find('"', start + 1);
      return value.substr(start + 1, end == std::string::npos ? std::string::npos : end - start - 1);
    }
    size_t end = value.find_first_of("; \t", start);
    return value.substr(start, end == std::string::npos ? std::string::npos : end - start);
  }
  return "";
}

std::string media_type(const Part& p) {
  auto it = p.headers.find("content-type");
  if (it == p.headers.end()) return "text/plain";
  std::string t = lower_ascii(std::string(trim(it->second.substr(0, it->second.find(';')))));
  return t.empty() ? "text/plain" : t;
}

// windows-1252 (a superset of ISO-8859-1's printable range) to UTF-8.
std::string cp1252_to_utf8(const std::string& s) {
  static const char32_t k80[32] = {0x20AC, 0xFFFD, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021,
                                   0x02C6, 0x2030, 0x0160, 0x2039, 0x0152, 0xFFFD, 0x017D, 0xFFFD,
                                   0xFFFD, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014,
                                   0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0xFFFD, 0x017E, 0x0178};
  std::string out;
  out.reserve(s.size());
  for (unsigned char c : s) {
    if (c < 0x80)
      out.push_back(static_cast<char>(c));
    else if (c < 0xA0)
      append_utf8(out, k80[c - 0x80]);
    else
      append_utf8(out, c);
  }
  return out;
}

std::string to_utf8(const std::string& bytes, const std::string& charset) {
  const std::string cs = lower_ascii(charset);
  const bool latin = cs == "iso-8859-1" || cs == "latin1" || cs == "windows-1252" || cs == "cp1252" ||
                     cs == "us-ascii" || cs == "iso-8859-15";
  if (!latin && is_valid_utf8(bytes)) return bytes;
  return cp1252_to_utf8(bytes);
}

// The raw message arrived as a UTF-8 JSON string; bytes of a decoded body may
// be in any charset. Every output of this file is valid UTF-8.
std::string decode_body(const Part& p) {
  auto enc_it = p.headers.find("content-transfer-encoding");
  const std::string enc = enc_it == p.headers.end() ? "" : lower_ascii(std::string(trim(enc_it->second)));
  std::string bytes;
  if (enc == "quoted-printable")
    bytes = decode_quoted_printable(p.body);
  else if (enc == "base64")
    bytes = decode_base64(p.body);
  else
    return p.body;  // 7bit/8bit: already text in the JSON's UTF-8
  auto ct = p.headers.find("content-type");
  return to_utf8(bytes, ct == p.headers.end() ? "" : header_param(ct->second, "charset"));
}

void extract_part(const Part& p, std::vector<std::string>& texts, int depth) {
  const std::string type = media_type(p);
  auto disp = p.headers.find("content-disposition");
  if (disp != p.headers.end() && lower_ascii(disp->second).rfind("attachment", 0) == 0) return;
  if (type.rfind("multipart/", 0) == 0 && depth < 8) {
    const std::string boundary = header_param(p.headers.at("content-type"), "boundary");
    if (boundary.empty()) {
      texts.push_back(p.body);
      return;
    }
    const std::string delim = "--" + boundary;
    std::vector<Part> parts;
    size_t pos = p.body.find(delim);
    while (pos != std::string::npos) {
      size_t start = p.body.find('\n', pos);
      if (start == std::string::npos) break;
      if (p.body.compare(pos + delim.size(), 2, "--") == 0) break;  // closing delimiter
      size_t next = p.body.find("\n" + delim, start);
      const size_t end = next == std::string::npos ? p.body.size() : next;
      Part child;
      parse_part(std::string_view(p.body).substr(start + 1, end - start - 1), child, false);
      parts.push_back(std::move(child));
      pos = next == std::string::npos ? next : next + 1;
    }
    if (type == "multipart/alternative") {
      const Part* best = nullptr;
      for (const auto& c : parts)
        if (media_type(c) == "text/plain") best = &c;
      if (best == nullptr)
        for (const auto& c : parts)
          if (media_type(c) == "text/html" || media_type(c).rfind("multipart/", 0) == 0) best = &c;
      if (best != nullptr) extract_part(*best, texts, depth + 1);
      return;
    }
    for (const auto& c : parts) extract_part(c, texts, depth + 1);
    return;
  }
  if (type == "text/plain" || type == "text") {
    texts.push_back(decode_body(p));
  } else if (type == "text/html") {
    texts.push_back(html_to_text(decode_body(p)));
  }
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  c = static_cast<char>(c | 0x20);
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

}  // namespace

std::string decode_quoted_printable(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '=') {
      out.push_back(s[i]);
      continue;
    }
    if (i + 1 < s.size() && (s[i + 1] == '\n' || s[i + 1] == '\r')) {  // soft line break
      i += (s[i + 1] == '\r' && i + 2 < s.size() && s[i + 2] == '\n') ? 2 : 1;
      continue;
    }
    const int hi = i + 1 < s.size() ? hex_value(s[i + 1]) : -1;
    const int lo = i + 2 < s.size() ? hex_value(s[i + 2]) : -1;
    if (hi < 0 || lo < 0) {
      out.push_back('=');
      continue;
    }
    out.push_back(static_cast<char>(hi * 16 + lo));
    i += 2;
  }
  return out;
}

std::string decode_base64(const std::string& s) {
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (char c : s) {
    int v;
    if (c >= 'A' && c <= 'Z')
      v = c - 'A';
    else if (c >= 'a' && c <= 'z')
      v = c - 'a' + 26;
    else if (c >= '0' && c <= '9')
      v = c - '0' + 52;
    else if (c == '+')
      v = 62;
    else if (c == '/')
      v = 63;
    else
      continue;  // padding, line breaks, garbage
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xFF));
    }
  }
  return out;
}

std::string html_to_text(const std::string& html) {
  static const std::map<std::string, std::string> kEntities = {{"amp", "&"},
                                                               {"lt", "<"},
                                                               {"gt", ">"},
                                                               {"quot", "\""},
                                                               {"apos", "'"},
                                                               {"nbsp", " "},
                                                               {"copy", "\xC2\xA9"},
                                                               {"reg", "\xC2\xAE"},
                                                               {"mdash", "\xE2\x80\x94"},
                                                               {"ndash", "\xE2\x80\x93"},
                                                               {"hellip", "\xE2\x80\xA6"},
                                                               {"rsquo", "\xE2\x80\x99"},
                                                               {"lsquo", "\xE2\x80\x98"},
                                                               {"rdquo", "\xE2\x80\x9D"},
                                                               {"ldquo", "\xE2\x80\x9C"},
                                                               {"euro", "\xE2\x82\xAC"},
                                                               {"pound", "\xC2\xA3"}};
  static const char* const kBlock[] = {"p",      "/p", "br",  "br/", "div", "/div",       "tr",          "/tr", "li",
                                       "h1",     "h2", "h3",  "h4",  "/h1", "/h2",        "/h3",         "/h4", "table",
                                       "/table", "ul", "/ul", "ol",  "/ol", "blockquote", "/blockquote", "hr"};
  std::string out;
  const std::string lower = lower_ascii(html);
  size_t i = 0;
  while (i < html.size()) {
    const char c = html[i];
    if (c == '<') {
      if (lower.compare(i, 4, "<!--") == 0) {
        size_t e = lower.find("-->", i + 4);
        i = e == std::string::npos ? html.size() : e + 3;
        continue;
      }
      size_t e = html.find('>', i);
      if (e == std::string::npos) break;
      std::string tag = lower.substr(i + 1, e - i - 1);
      const size_t sp = tag.find_first_of(" \t\r\n");
      const std::string name = tag.substr(0, sp);
      i = e + 1;
      if (name == "script" || name == "style" || name == "head" || name == "title") {
        size_t close = lower.find("</" + name, i);
        if (close == std::string::npos) break;
        size_t ce = html.find('>', close);
        i = ce == std::string::npos ? html.size() : ce + 1;
        continue;
      }
      for (const char* b : kBlock)
        if (name == b || name == std::string(b) + "/") {
          out.push_back('\n');
          break;
        }
      continue;
    }
    if (c == '&') {
      // An entity's ';' is at most 10 characters on: look no further (a search
      // to the end made a megabyte of '&' take seconds, quadratic time).
      const size_t semi = std::string_view(html).substr(i, 11).find(';');
      const size_t e = semi == std::string_view::npos ? std::string::npos : i + semi;
      if (e != std::string::npos) {
        const std::string ent = lower.substr(i + 1, e - i - 1);
        if (!ent.empty() && ent[0] == '#') {
          long cp = 0;
          try {
            cp = (ent.size() > 1 && ent[1] == 'x') ? std::stol(ent.substr(2), nullptr, 16) : std::stol(ent.substr(1));
          } catch (...) {
            cp = -1;
          }
          if (cp > 0 && cp < 0x110000 && !(cp >= 0xD800 && cp < 0xE000)) {
            append_utf8(out, static_cast<char32_t>(cp));
            i = e + 1;
            continue;
          }
        } else if (auto it = kEntities.find(ent); it != kEntities.end()) {
          out += it->second;
          i = e + 1;
          continue;
        }
      }
    }
    // Line breaks in HTML source are spaces.
    out.push_back(c == '\n' || c == '\r' ? ' ' : c);
    ++i;
  }
  return out;
}

std::string decode_header_value(const std::string& value) {
  std::string out;
  size_t pos = 0;
  while (pos < value.size()) {
    size_t start = value.find("=?", pos);
    if (start == std::string::npos) {
      out.append(value, pos, std::string::npos);
      break;
    }
    const size_t q1 = value.find('?', start + 2);
    const size_t q2 = q1 == std::string::npos ? q1 : value.find('?', q1 + 1);
    const size_t end = q2 == std::string::npos ? q2 : value.find("?=", q2 + 1);
    if (end == std::string::npos) {
      out.append(value, pos, std::string::npos);
      break;
    }
    std::string between = value.substr(pos, start - pos);
    if (trim(between).empty() && pos > 0) between.clear();  // whitespace between encoded words
    out += between;
    const std::string charset = value.substr(start + 2, q1 - start - 2);
    const char enc = static_cast<char>(std::tolower(static_cast<unsigned char>(value[q1 + 1])));
    std::string text = value.substr(q2 + 1, end - q2 - 1);
    if (enc == 'q') {
      std::replace(text.begin(), text.end(), '_', ' ');
      text = decode_quoted_printable(text);
    } else {
      text = decode_base64(text);
    }
    out += to_utf8(text, charset);
    pos = end + 2;
  }
  return out;
}

std::string extract_mail_text(const std::string& message) {
  Part top;
  if (!parse_part(message, top, true)) return message;
  std::vector<std::string> texts;
  extract_part(top, texts, 0);
  std::string out;
  auto subject = top.headers.find("subject");
  if (subject != top.headers.end()) out = decode_header_value(subject->second) + "\n\n";
  for (const auto& t : texts) {
    if (!out.empty() && out.back() != '\n') out += "\n\n";
    out += t;
  }
  if (!is_valid_utf8(out)) out = cp1252_to_utf8(out);
  return out;
}

}  // namespace moetrain::data::clean

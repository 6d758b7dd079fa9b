// JsonlReader: a line source (plain or zstd-streamed) under a record parser
// (JSON lines via simdjson's DOM parser, which validates the whole line,
// UTF-8 included, rather than only the fields it is asked for; or blank-line
// separated text).
#include "data/jsonl_reader.h"

#include <simdjson.h>
#include <zstd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <vector>

namespace moetrain::data {
namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool is_blank(const std::string& line) {
  return line.find_first_not_of(" \t\r\f\v") == std::string::npos;
}

// Messages must stay on one line.
std::string one_line(std::string s) {
  for (char& c : s)
    if (c == '\n' || c == '\r') c = ' ';
  return s;
}

}  // namespace

InputFormat input_format_of(const std::string& path) {
  if (ends_with(path, ".jsonl.zst") || ends_with(path, ".json.zst")) return InputFormat::JsonlZst;
  if (ends_with(path, ".zst")) return InputFormat::TextZst;
  if (ends_with(path, ".jsonl") || ends_with(path, ".json")) return InputFormat::Jsonl;
  return InputFormat::Text;
}

bool is_valid_utf8(const std::string& bytes) {
  return simdjson::validate_utf8(bytes.data(), bytes.size());
}

// Splits a byte stream into lines, decompressing zstd on the fly. Counts lines
// so errors can name them.
class JsonlReader::LineSource {
 public:
  LineSource(const std::string& path, bool zstd) : path_(path) {
    file_ = std::fopen(path.c_str(), "rb");
    if (file_ == nullptr)
      throw InputError(path + ": cannot open input: " + std::strerror(errno));
    if (zstd) {
      dctx_ = ZSTD_createDCtx();
      if (dctx_ == nullptr) throw InputError(path + ": cannot create zstd decoder");
      compressed_.resize(ZSTD_DStreamInSize());
      decompressed_.resize(ZSTD_DStreamOutSize());
    }
  }
  ~LineSource() {
    if (dctx_ != nullptr) ZSTD_freeDCtx(dctx_);
    if (file_ != nullptr) std::fclose(file_);
  }
  LineSource(const LineSource&) = delete;
  LineSource& operator=(const LineSource&) = delete;

  // The next line without its '\n' (and a '\r' before it); false at the end.
  bool next(std::string& line) {
    // Bytes before scan_from are known to hold no '\n', so a long line is
    // scanned once, not once per refill.
    size_t scan_from = pos_;
    while (true) {
      size_t nl = buffer_.find('\n', scan_from);
      if (nl != std::string::npos) {
        line.assign(buffer_, pos_, nl - pos_);
        pos_ = nl + 1;
        break;
      }
      const size_t scanned = buffer_.size() - pos_;
      if (!fill()) {
        if (pos_ >= buffer_.size()) return false;
        line.assign(buffer_, pos_, std::string::npos);  // last line, no '\n'
        pos_ = buffer_.size();
        break;
      }
      scan_from = pos_ + scanned;  // fill() moved the unread bytes to the front
    }
    ++line_number_;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    // A UTF-8 byte order mark is not part of the first record.
    if (line_number_ == 1 && line.compare(0, 3, "\xEF\xBB\xBF") == 0) line.erase(0, 3);
    return true;
  }

  int64_t line_number() const { return line_number_; }

 private:
  // Appends more bytes to buffer_; false at the end of the input.
  bool fill() {
    buffer_.erase(0, pos_);
    pos_ = 0;
    if (dctx_ == nullptr) {
      char chunk[1 << 16];
      size_t n = std::fread(chunk, 1, sizeof(chunk), file_);
      if (n == 0 && std::ferror(file_)) fail_io("read error");
      buffer_.append(chunk, n);
      return n > 0;
    }
    while (true) {
      if (in_.pos >= in_.size) {
        size_t n = std::fread(compressed_.data(), 1, compressed_.size(), file_);
        if (n == 0) {
          if (std::ferror(file_)) fail_io("read error");
          // A frame that started but did not finish: the file was cut short.
          if (frame_open_) fail_io("truncated zstd stream");
          return false;
        }
        in_ = ZSTD_inBuffer{compressed_.data(), n, 0};
      }
      ZSTD_outBuffer out{decompressed_.data(), decompressed_.size(), 0};
      size_t ret = ZSTD_decompressStream(dctx_, &out, &in_);
      if (ZSTD_isError(ret)) fail_io(std::string("corrupt zstd stream: ") + ZSTD_getErrorName(ret));
      frame_open_ = ret != 0;
      if (out.pos > 0) {
        buffer_.append(decompressed_.data(), out.pos);
        return true;
      }
    }
  }

  [[noreturn]] void fail_io(const std::string& what) const {
    throw InputError(path_ + ":" + std::to_string(line_number_ + 1) + ": " + what);
  }

  std::string path_;
  FILE* file_ = nullptr;
  ZSTD_DCtx* dctx_ = nullptr;
  std::vector<char> compressed_;
  std::vector<char> decompressed_;
  ZSTD_inBuffer in_{nullptr, 0, 0};
  bool frame_open_ = false;
  std::string buffer_;
  size_t pos_ = 0;
  int64_t line_number_ = 0;
};

struct JsonlReader::Json {
  simdjson::dom::parser parser;
};

JsonlReader::JsonlReader(const std::string& path, RecordFields fields)
    : path_(path), fields_(std::move(fields)), format_(input_format_of(path)) {
  const bool json = format_ == InputFormat::Jsonl || format_ == InputFormat::JsonlZst;
  if (fields_.pairs() && !json)
    throw InputError(path + ": source/target pairs need JSONL input (.jsonl or .jsonl.zst)");
  if (!fields_.pairs() && fields_.text_field.empty() && json)
    throw InputError(path + ": no text field given");
  if (!fields_.source_field.empty() != !fields_.target_field.empty())
    throw InputError(path + ": pairs mode needs both a source and a target field");
  lines_ = std::make_unique<LineSource>(
      path, format_ == InputFormat::JsonlZst || format_ == InputFormat::TextZst);
  if (json) json_ = std::make_unique<Json>();
}

JsonlReader::~JsonlReader() = default;
JsonlReader::JsonlReader(JsonlReader&&) noexcept = default;
JsonlReader& JsonlReader::operator=(JsonlReader&&) noexcept = default;

void JsonlReader::fail(int64_t line, const std::string& what) const {
  throw InputError(one_line(path_ + ":" + std::to_string(line) + ": " + what));
}

bool JsonlReader::next(TextRecord& record) {
  return json_ ? next_jsonl(record) : next_text(record);
}

bool JsonlReader::next_jsonl(TextRecord& record) {
  std::string line;
  do {
    if (!lines_->next(line)) return false;
  } while (is_blank(line));
  const int64_t line_no = lines_->line_number();

  simdjson::dom::element doc;
  if (auto err = json_->parser.parse(line).get(doc))
    fail(line_no, std::string("invalid JSON: ") + simdjson::error_message(err));
  simdjson::dom::object obj;
  if (doc.get_object().get(obj)) fail(line_no, "a JSONL line must be a JSON object");

  auto field = [&](const std::string& name) {
    simdjson::dom::element value;
    auto err = obj.at_key(name).get(value);
    if (err == simdjson::NO_SUCH_FIELD) fail(line_no, "missing field '" + name + "'");
    if (err) fail(line_no, "field '" + name + "': " + simdjson::error_message(err));
    std::string_view text;
    if (value.get_string().get(text)) fail(line_no, "field '" + name + "' is not a string");
    std::string out(text);
    // simdjson checked the raw bytes; escapes such as a lone "\ud800" are
    // checked here.
    if (!is_valid_utf8(out)) fail(line_no, "field '" + name + "' is not valid UTF-8");
    return out;
  };

  record.line = line_no;
  if (fields_.pairs()) {
    record.text = field(fields_.source_field);
    record.target = field(fields_.target_field);
  } else {
    record.text = field(fields_.text_field);
    record.target.clear();
  }
  return true;
}

bool JsonlReader::next_text(TextRecord& record) {
  std::string line;
  // Skip the blank lines before the document.
  do {
    if (!lines_->next(line)) return false;
  } while (is_blank(line));
  record.line = lines_->line_number();
  record.target.clear();
  record.text.clear();
  while (true) {
    if (!is_valid_utf8(line)) fail(lines_->line_number(), "invalid UTF-8");
    if (!record.text.empty()) record.text += '\n';
    record.text += line;
    if (!lines_->next(line) || is_blank(line)) break;
  }
  return true;
}

}  // namespace moetrain::data

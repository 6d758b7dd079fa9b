// JsonlReader: a LineReader (plain or zstd-streamed) under a record parser
// (JSON lines via simdjson's DOM parser, which validates the whole line,
// UTF-8 included, rather than only the fields it is asked for; or blank-line
// separated text).
#include "data/jsonl_reader.h"

#include <algorithm>

#include <simdjson.h>

namespace moetrain::data {
namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool is_blank(const std::string& line) { return line.find_first_not_of(" \t\r\f\v") == std::string::npos; }

// A record-level problem: skippable under JsonlReader::skip_bad_records.
class BadRecordError : public InputError {
 public:
  using InputError::InputError;
};

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

bool is_valid_utf8(const std::string& bytes) { return simdjson::validate_utf8(bytes.data(), bytes.size()); }

struct JsonlReader::Json {
  simdjson::dom::parser parser;
};

JsonlReader::JsonlReader(const std::string& path, RecordFields fields)
    : path_(path), fields_(std::move(fields)), format_(input_format_of(path)) {
  const bool json = format_ == InputFormat::Jsonl || format_ == InputFormat::JsonlZst;
  if (fields_.pairs() && !json)
    throw InputError(path + ": source/target pairs need JSONL input (.jsonl or .jsonl.zst)");
  if (!fields_.pairs() && fields_.text_field.empty() && json) throw InputError(path + ": no text field given");
  if (!fields_.source_field.empty() != !fields_.target_field.empty())
    throw InputError(path + ": pairs mode needs both a source and a target field");
  if ((!fields_.source_lang_field.empty() || !fields_.target_lang_field.empty()) && !fields_.pairs())
    throw InputError(path + ": language fields are for pairs mode");
  lines_ = std::make_unique<LineReader>(path);
  if (json) json_ = std::make_unique<Json>();
}

JsonlReader::~JsonlReader() = default;
JsonlReader::JsonlReader(JsonlReader&&) noexcept = default;
JsonlReader& JsonlReader::operator=(JsonlReader&&) noexcept = default;

void JsonlReader::fail(int64_t line, const std::string& what) const {
  throw BadRecordError(one_line(path_ + ":" + std::to_string(line) + ": " + what));
}

bool JsonlReader::next(TextRecord& record) {
  while (true) {
    try {
      return json_ ? next_jsonl(record) : next_text(record);
    } catch (const BadRecordError& e) {
      if (bad_ == nullptr) throw;
      bad_->add(e.what());  // the bad record is consumed: go on with the next
    }
  }
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

  auto language = [&](const std::string& name) {
    if (name.empty()) return std::string();
    std::string code = field(name);
    if (!std::binary_search(fields_.language_codes.begin(), fields_.language_codes.end(), code))
      fail(line_no, "field '" + name + "': '" + code + "' is not a language code of the tokenizer");
    return code;
  };

  record.line = line_no;
  if (fields_.pairs()) {
    record.text = field(fields_.source_field);
    record.target = field(fields_.target_field);
    record.source_lang = language(fields_.source_lang_field);
    record.target_lang = language(fields_.target_lang_field);
  } else {
    record.text = field(fields_.text_field);
    record.target.clear();
    record.source_lang.clear();
    record.target_lang.clear();
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
  int64_t bad_line = 0;  // the first line of invalid UTF-8; the document is read to its end regardless
  while (true) {
    if (bad_line == 0 && !is_valid_utf8(line)) bad_line = lines_->line_number();
    if (!record.text.empty()) record.text += '\n';
    record.text += line;
    if (!lines_->next(line) || is_blank(line)) break;
  }
  if (bad_line != 0) fail(bad_line, "invalid UTF-8");
  return true;
}

}  // namespace moetrain::data

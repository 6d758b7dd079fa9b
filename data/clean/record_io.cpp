// Record reading (lines from data::LineReader; JSONL via simdjson; blank-line text)
// and output composition (see record_io.h).
#include "data/clean/record_io.h"

#include <simdjson.h>

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <stdexcept>

#include "data/clean/text_units.h"
#include "data/jsonl_reader.h"

namespace moetrain::data::clean {

struct RecordReader::Json {
  simdjson::dom::parser parser;
};

namespace {
bool is_blank(const std::string& s) { return s.find_first_not_of(" \t\r\f\v") == std::string::npos; }
}  // namespace

RecordReader::RecordReader(const std::string& path, std::string text_field, std::string id_field)
    : path_(path), text_field_(std::move(text_field)), id_field_(std::move(id_field)) {
  const auto format = input_format_of(path);
  json_format_ = format == InputFormat::Jsonl || format == InputFormat::JsonlZst;
  std::string stem = std::filesystem::path(path).filename().string();
  for (const char* ext : {".zst", ".jsonl", ".json", ".txt"})
    if (stem.size() > std::strlen(ext) && stem.compare(stem.size() - std::strlen(ext), std::string::npos, ext) == 0)
      stem.erase(stem.size() - std::strlen(ext));
  stem_ = stem;
  lines_ = std::make_unique<LineReader>(path);
  if (json_format_) json_ = std::make_unique<Json>();
}

RecordReader::~RecordReader() = default;

ReadStatus RecordReader::next(InputRecord& record, std::string& reason) {
  return json_format_ ? next_json(record, reason) : next_text(record, reason);
}

ReadStatus RecordReader::next_json(InputRecord& record, std::string& reason) {
  std::string& line = record.raw;
  do {
    if (!lines_->next(line)) return ReadStatus::End;
  } while (is_blank(line));
  record.line = lines_->line_number();
  record.text.clear();
  record.id.clear();
  record.has_id = false;
  simdjson::dom::element doc;
  if (auto err = json_->parser.parse(line).get(doc)) {
    reason =
        err == simdjson::UTF8_ERROR ? "invalid UTF-8" : std::string("invalid JSON: ") + simdjson::error_message(err);
    return ReadStatus::Bad;
  }
  simdjson::dom::object obj;
  if (doc.get_object().get(obj)) {
    reason = "not a JSON object";
    return ReadStatus::Bad;
  }
  simdjson::dom::element value;
  auto err = obj.at_key(text_field_).get(value);
  if (err) {
    reason = "missing text field '" + text_field_ + "'";
    return ReadStatus::Bad;
  }
  std::string_view text;
  if (value.get_string().get(text)) {
    reason = "text field '" + text_field_ + "' is not a string";
    return ReadStatus::Bad;
  }
  record.text.assign(text);
  if (!is_valid_utf8(record.text)) {  // an escaped lone surrogate, e.g. "\ud800"
    reason = "invalid UTF-8";
    return ReadStatus::Bad;
  }
  if (is_blank(record.text)) {
    reason = "empty text";
    return ReadStatus::Bad;
  }
  simdjson::dom::element id;
  if (!id_field_.empty() && !obj.at_key(id_field_).get(id)) {
    std::string_view s;
    if (!id.get_string().get(s))
      record.id.assign(s);
    else
      record.id = simdjson::minify(id);
    record.has_id = true;
  } else {
    record.id = stem_ + ":" + std::to_string(record.line);
  }
  return ReadStatus::Ok;
}

ReadStatus RecordReader::next_text(InputRecord& record, std::string& reason) {
  std::string line;
  do {
    if (!lines_->next(line)) return ReadStatus::End;
  } while (is_blank(line));
  record.line = lines_->line_number();
  record.raw.clear();
  record.has_id = false;
  record.id = stem_ + ":" + std::to_string(record.line);
  record.text = line;
  while (lines_->next(line) && !is_blank(line)) {
    record.text.push_back('\n');
    record.text += line;
  }
  if (!is_valid_utf8(record.text)) {
    reason = "invalid UTF-8";
    return ReadStatus::Bad;
  }
  return ReadStatus::Ok;
}

std::string compose_output_line(const InputRecord& record, const std::string& text_field, const std::string& id_field,
                                const std::string& text, const nlohmann::json& meta) {
  nlohmann::json merged_meta = meta;
  std::string out = "{";
  bool first = true;
  auto field = [&](const std::string& key, const std::string& json_value) {
    if (!first) out += ", ";
    first = false;
    out += nlohmann::json(key).dump();
    out += ": ";
    out += json_value;
  };
  if (record.raw.empty()) {
    field(id_field.empty() ? "id" : id_field, nlohmann::json(record.id).dump());
    field(text_field, nlohmann::json(text).dump());
  } else {
    thread_local simdjson::dom::parser parser;  // reused: its buffers outlive one record
    simdjson::dom::object obj;
    if (parser.parse(record.raw).get_object().get(obj))
      throw std::logic_error("compose_output_line: the record is no longer valid JSON");
    if (!record.has_id && !id_field.empty()) field(id_field, nlohmann::json(record.id).dump());
    for (auto [key, value] : obj) {
      const std::string k(key);
      if (k == text_field) {
        field(k, nlohmann::json(text).dump());
      } else if (k == "meta") {  // ours is merged into an input meta object, or replaces it
        if (value.is_object()) {
          nlohmann::json existing = nlohmann::json::parse(simdjson::minify(value));
          for (auto it = meta.begin(); it != meta.end(); ++it) existing[it.key()] = it.value();
          merged_meta = std::move(existing);
        }
      } else {
        field(k, simdjson::minify(value));
      }
    }
  }
  field("meta", merged_meta.dump());
  out += "}";
  return out;
}

LineWriter::LineWriter(std::string path) : path_(std::move(path)) {
  file_ = std::fopen(path_.c_str(), "wb");
  if (file_ == nullptr) throw std::runtime_error(path_ + ": cannot create: " + std::strerror(errno));
}

LineWriter::~LineWriter() {
  if (file_ != nullptr) std::fclose(file_);
}

void LineWriter::write(const std::string& line) {
  if (std::fwrite(line.data(), 1, line.size(), file_) != line.size() || std::fputc('\n', file_) == EOF)
    throw std::runtime_error(path_ + ": write failed: " + std::strerror(errno));
  ++lines_;
}

void LineWriter::close() {
  if (file_ == nullptr) return;
  const bool ok = std::fflush(file_) == 0 && ::fsync(fileno(file_)) == 0;
  const bool closed = std::fclose(file_) == 0;
  file_ = nullptr;
  if (!ok || !closed) throw std::runtime_error(path_ + ": write failed: " + std::strerror(errno));
}

}  // namespace moetrain::data::clean

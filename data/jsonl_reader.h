// JsonlReader: streams text records out of one corpus file, one at a time, so
// corpora larger than memory can be tokenized. Three input formats, chosen by
// file name:
//   *.jsonl / *.json        one JSON object per line
//   *.jsonl.zst / *.json.zst  the same, zstd-compressed (streamed, never whole)
//   anything else           plain UTF-8 text; documents separated by blank lines
//                           (*.zst: zstd-compressed text)
// From JSON it extracts either one text field or a source and a target field
// (pairs mode), and in pairs mode optionally the fields naming each side's
// language. Plain text has no fields, so it only supports the text mode.
//
// Bad input (invalid JSON, a missing or non-string field, invalid UTF-8, a
// language field naming a code not in language_codes, a corrupt zstd stream) throws InputError with a one-line message
// "PATH:LINE: what is wrong", which the CLI prints as-is. With
// skip_bad_records, a bad record (everything above but a file that cannot be
// read or a corrupt zstd stream) is counted and skipped instead.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/line_reader.h"

namespace moetrain::data {

enum class InputFormat { Jsonl, JsonlZst, Text, TextZst };

// Decided by the file name, as above.
InputFormat input_format_of(const std::string& path);

// Which fields to extract. With source_field and target_field both set the
// reader is in pairs mode and text_field is ignored.
struct RecordFields {
  std::string text_field = "text";
  std::string source_field;
  std::string target_field;
  // Pairs mode: fields holding each record's source (target) language code,
  // which must be one of language_codes (sorted); empty: none.
  std::string source_lang_field, target_lang_field;
  std::vector<std::string> language_codes;

  bool pairs() const { return !source_field.empty() && !target_field.empty(); }
};

struct TextRecord {
  std::string text;                      // the text field, or the source field in pairs mode
  std::string target;                    // pairs mode only
  std::string source_lang, target_lang;  // from the language fields, when given
  int64_t line = 0;                      // 1-based line the record starts on
};

// Records skipped as bad: how many, and the first few as "PATH:LINE: what".
struct BadRecords {
  static constexpr size_t kKept = 10;
  int64_t count = 0;
  std::vector<std::string> first;

  void add(const std::string& line) {
    ++count;
    if (first.size() < kKept) first.push_back(line);
  }
};

class JsonlReader {
 public:
  // Opens the file; throws InputError when it cannot be read.
  JsonlReader(const std::string& path, RecordFields fields);
  ~JsonlReader();
  JsonlReader(JsonlReader&&) noexcept;
  JsonlReader& operator=(JsonlReader&&) noexcept;

  // Reads the next record into `record`; false at the end of the file. JSONL
  // lines that are empty or only whitespace are skipped.
  bool next(TextRecord& record);

  const std::string& path() const { return path_; }
  InputFormat format() const { return format_; }

  // From now on bad records go to `sink` (which must outlive the reader) and
  // next() moves on to the following record.
  void skip_bad_records(BadRecords* sink) { bad_ = sink; }

 private:
  struct Json;  // the simdjson parser, kept out of this header

  bool next_jsonl(TextRecord& record);
  bool next_text(TextRecord& record);
  [[noreturn]] void fail(int64_t line, const std::string& what) const;

  std::string path_;
  RecordFields fields_;
  InputFormat format_;
  std::unique_ptr<LineReader> lines_;
  std::unique_ptr<Json> json_;
  BadRecords* bad_ = nullptr;
};

// True when `bytes` is valid UTF-8.
bool is_valid_utf8(const std::string& bytes);

}  // namespace moetrain::data

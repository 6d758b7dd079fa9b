// Record input and output for the cleaning pipeline.
//
// RecordReader reads one input file as records, without ever throwing on a
// bad record: invalid JSON, a line that is not an object, a missing or
// non-string text field, invalid UTF-8 and empty text come back as
// ReadStatus::Bad with a reason, so the pipeline can count them (or stop,
// with --strict). Formats as data::input_format_of decides: JSONL (one object
// a line), .jsonl.zst, and plain text (documents separated by blank lines,
// .zst compressed or not). Only an unreadable file or a corrupt zstd stream
// throws (data::InputError, "PATH:LINE: what").
//
// compose_output_line writes a record back: every input field in its order
// and with its value, the text field replaced by the cleaned text, and a
// `meta` object (merged into an existing one).
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "data/line_reader.h"

namespace moetrain::data::clean {

struct InputRecord {
  int64_t line = 0;     // 1-based line where the record starts
  std::string id;       // the id field (a string, or a number's JSON text), or "<file stem>:<line>"
  bool has_id = false;  // the record had an id field
  std::string raw;      // the JSON line; empty for plain text input
  std::string text;
};

enum class ReadStatus { Ok, Bad, End };

class RecordReader {
 public:
  RecordReader(const std::string& path, std::string text_field, std::string id_field);
  ~RecordReader();
  RecordReader(const RecordReader&) = delete;
  RecordReader& operator=(const RecordReader&) = delete;

  // Ok: `record` holds the next record. Bad: record.line and `reason` say
  // which and why. End: no more records.
  ReadStatus next(InputRecord& record, std::string& reason);

 private:
  struct Json;
  ReadStatus next_json(InputRecord& record, std::string& reason);
  ReadStatus next_text(InputRecord& record, std::string& reason);

  std::string path_, stem_, text_field_, id_field_;
  bool json_format_;
  std::unique_ptr<LineReader> lines_;
  std::unique_ptr<Json> json_;
};

std::string compose_output_line(const InputRecord& record, const std::string& text_field, const std::string& id_field,
                                const std::string& text, const nlohmann::json& meta);

// Appends lines to a file through stdio buffering; throws std::runtime_error
// naming the file on any write failure.
class LineWriter {
 public:
  explicit LineWriter(std::string path);
  ~LineWriter();
  LineWriter(const LineWriter&) = delete;
  LineWriter& operator=(const LineWriter&) = delete;
  void write(const std::string& line);  // adds the '\n'
  void close();
  const std::string& path() const { return path_; }
  int64_t lines() const { return lines_; }

 private:
  std::string path_;
  FILE* file_ = nullptr;
  int64_t lines_ = 0;
};

}  // namespace moetrain::data::clean

// The record stream and pass 1 of tokenize_corpus (tokenize_input.h).
#include "data/tokenize_input.h"

#include <algorithm>

namespace moetrain::data {

RecordFields record_fields_of(const TokenizeOptions& options, const std::vector<std::string>& language_codes) {
  RecordFields f;
  f.text_field = options.text_field;
  f.source_field = options.source_field;
  f.target_field = options.target_field;
  f.source_lang_field = options.source_lang_field;
  f.target_lang_field = options.target_lang_field;
  if (!f.source_lang_field.empty() || !f.target_lang_field.empty()) {
    f.language_codes = language_codes;
    std::sort(f.language_codes.begin(), f.language_codes.end());
  }
  return f;
}

RecordStream::RecordStream(const TokenizeOptions& options, const std::vector<std::string>& language_codes)
    : options_(options), fields_(record_fields_of(options, language_codes)) {}

bool RecordStream::next(TextRecord& record, bool* from_valid_inputs) {
  const size_t n_inputs = options_.inputs.size();
  const size_t n_files = n_inputs + options_.valid_inputs.size();
  while (file_ < n_files) {
    if (!reader_) {
      const std::string& path = file_ < n_inputs ? options_.inputs[file_] : options_.valid_inputs[file_ - n_inputs];
      reader_ = std::make_unique<JsonlReader>(path, fields_);
      if (!options_.strict) reader_->skip_bad_records(&bad_);
    }
    if (reader_->next(record)) {
      *from_valid_inputs = file_ >= n_inputs;
      return true;
    }
    reader_.reset();
    ++file_;
  }
  return false;
}

const std::string& RecordStream::path() const {
  static const std::string none = "tokenize inputs";
  return reader_ ? reader_->path() : none;
}

void SentenceSampler::add_text(const std::string& text) {
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    if (text.find_first_not_of(" \t\r\f\v", start) < end) add_line(text.substr(start, end - start));
    start = end + 1;
  }
}

void SentenceSampler::add_line(std::string line) {
  ++seen_;
  if (static_cast<int64_t>(sample_.size()) < capacity_) {
    sample_.push_back(std::move(line));
    return;
  }
  uint64_t j = rng_.uniform(static_cast<uint64_t>(seen_));
  if (j < static_cast<uint64_t>(capacity_)) sample_[j] = std::move(line);
}

InputCounts count_records(const TokenizeOptions& options, SentenceSampler* sampler,
                          const std::vector<std::string>& language_codes) {
  InputCounts counts;
  RecordStream stream(options, language_codes);
  TextRecord record;
  bool from_valid_inputs = false;
  const bool pairs = record_fields_of(options).pairs();
  while (stream.next(record, &from_valid_inputs)) {
    if (from_valid_inputs) {
      ++counts.valid_input_records;
      continue;
    }
    ++counts.records;
    if (sampler) {
      sampler->add_text(record.text);
      if (pairs) sampler->add_text(record.target);
    }
  }
  counts.bad = stream.bad_records();
  return counts;
}

}  // namespace moetrain::data

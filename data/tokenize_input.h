// The input side of tokenize_corpus: the record stream both passes read, and
// pass 1 (validate and count every record, sample the tokenizer's training
// lines).
//
// The record stream is every record of options.inputs, file by file, then
// every record of options.valid_inputs. Pass 1 reads all of it, so a bad
// record anywhere is skipped and counted (both passes skip the same ones),
// or under options.strict an InputError before the output folder is touched.
//
// SentenceSampler keeps a uniform sample of at most `capacity` non-blank
// lines of the texts it is given (seeded reservoir sampling over all the
// inputs): memory stays bounded whatever the corpus size, and the sample
// depends only on the lines, their order and the seed.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/jsonl_reader.h"
#include "data/portable_rng.h"
#include "data/tokenize.h"

namespace moetrain::data {

// The fields options names; `language_codes`: the tokenizer's, which the
// language fields (if any) must name.
RecordFields record_fields_of(const TokenizeOptions& options, const std::vector<std::string>& language_codes = {});

// Streams the records of inputs, then of valid_inputs.
class RecordStream {
 public:
  explicit RecordStream(const TokenizeOptions& options, const std::vector<std::string>& language_codes = {});

  // The next record; false at the end. *from_valid_inputs says which list
  // its file is on.
  bool next(TextRecord& record, bool* from_valid_inputs);
  // The file of the record last returned (for messages).
  const std::string& path() const;
  // The bad records skipped so far (none under options.strict, where the
  // first one throws InputError).
  const BadRecords& bad_records() const { return bad_; }

 private:
  const TokenizeOptions& options_;
  RecordFields fields_;
  size_t file_ = 0;  // index into inputs, then valid_inputs
  std::unique_ptr<JsonlReader> reader_;
  BadRecords bad_;
};

class SentenceSampler {
 public:
  SentenceSampler(int64_t capacity, uint64_t seed) : capacity_(capacity), rng_(seed) {}

  // Offers every non-blank line of `text`.
  void add_text(const std::string& text);
  std::vector<std::string>& sentences() { return sample_; }

 private:
  void add_line(std::string line);

  int64_t capacity_;
  PortableRng rng_;
  int64_t seen_ = 0;
  std::vector<std::string> sample_;
};

struct InputCounts {
  int64_t records = 0;              // of inputs
  int64_t valid_input_records = 0;  // of valid_inputs
  BadRecords bad;                   // skipped, in either (not counted above)
};

// Pass 1: reads the whole record stream; the records of `inputs` (sources
// and targets) go to `sampler` when it is given.
InputCounts count_records(const TokenizeOptions& options, SentenceSampler* sampler,
                          const std::vector<std::string>& language_codes = {});

}  // namespace moetrain::data

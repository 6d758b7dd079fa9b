// tokenize_corpus: the work behind `moetrain tokenize` (app/tokenize_command.cpp
// fills TokenizeOptions and prints the TokenizeSummary).
//
// It reads the inputs twice, streaming, so corpora need not fit in memory:
//   pass 1 validates every record, counts them and samples up to
//          max_training_sentences lines (seeded reservoir sampling) for the
//          tokenizer, which is then trained (or loaded from tokenizer_model);
//   pass 2 encodes every record and writes the token shards.
// Bad input is found in pass 1, before anything in output_dir is touched.
//
// OUTPUT/ then holds
//   tokenizer.model, tokenizer.vocab
//   train-00000.h5 ...   documents (or pairs) shards, docs_per_shard records each
//   valid-00000.h5 ...   when valid_fraction > 0
//   dataset.json         kind, counts, vocab size, inputs, shard lists
// every file written under a temporary name and renamed; dataset.json is
// written last and is what BatchSource trusts (it is removed first, so an
// interrupted rerun leaves no manifest pointing at a mix of old and new
// shards). Shards of an earlier run that the new one did not write are removed.
//
// Validation records are chosen exactly: round(n * valid_fraction) of the n
// input records (at least 1 when valid_fraction > 0, never all), picked by
// `seed`. Records that encode to no tokens (or, for pairs, whose source or
// target does) are skipped and counted.
//
// Failures throw std::runtime_error (InputError for bad input) with a one-line
// message naming the file and, for bad records, the line.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace moetrain::data {

struct TokenizeOptions {
  std::vector<std::string> inputs;  // .jsonl, .jsonl.zst or text files
  std::string output_dir;
  int64_t vocab_size = 8000;
  std::string text_field = "text";
  std::string source_field, target_field;  // both set: pairs mode
  std::string tokenizer_model;             // existing .model to load instead of training
  std::string model_type = "unigram";
  double valid_fraction = 0.0;  // documents (or pairs) held out, chosen deterministically by seed
  // Files whose every record goes to the valid split (a held-out set of its
  // own, e.g. split by word); they do not train the tokenizer.
  std::vector<std::string> valid_inputs;
  int64_t docs_per_shard = 100000;
  int64_t max_training_sentences = 2000000;
  uint64_t seed = 1234;
};

struct TokenizeSplitSummary {
  int64_t records = 0;              // documents or pairs written
  int64_t tokens = 0;               // all tokens written (source + target for pairs)
  int64_t source_tokens = 0;        // pairs only
  int64_t target_tokens = 0;        // pairs only
  std::vector<std::string> shards;  // file names inside output_dir, in order
};

struct TokenizeSummary {
  std::string kind;  // "documents" or "pairs"
  std::string output_dir;
  std::string tokenizer_path;
  std::string dataset_json;  // path of dataset.json
  bool trained_tokenizer = false;
  int64_t vocab_size = 0;
  int64_t training_sentences = 0;  // lines the tokenizer was trained on (0 when loaded)
  int64_t input_records = 0;       // records read from the inputs
  int64_t skipped_empty = 0;       // records dropped because they encode to nothing
  TokenizeSplitSummary train;
  TokenizeSplitSummary valid;
};

TokenizeSummary tokenize_corpus(const TokenizeOptions& options);

}  // namespace moetrain::data

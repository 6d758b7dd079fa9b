// tokenize_corpus: the work behind `moetrain tokenize` (app/tokenize_command.cpp
// fills TokenizeOptions, runs it on every rank of the job and prints the
// TokenizeSummary of rank 0).
//
// It reads the inputs twice, streaming, so corpora need not fit in memory:
//   pass 1 (rank 0) validates every record, counts them and samples up to
//          max_training_sentences lines over all inputs (seeded reservoir
//          sampling) for the tokenizer, which is then trained (or loaded from
//          tokenizer_model) and handed to the other ranks;
//   pass 2 (every rank) encodes the records of its own shards with `threads`
//          threads and writes them.
// Bad input is found in pass 1, before anything in output_dir is touched.
//
// Shards depend only on the record sequence: with docs_per_shard K, shard j of
// a split holds the records at positions [j*K, (j+1)*K) of that split (the
// train split is the inputs' records minus the valid ones; the valid split is
// the valid ones, then every record of valid_inputs), minus those that encode
// to no tokens. Shard g of the job (train shards first, then valid shards) is
// written by rank g % ranks. So the output is the same, byte for byte, for any
// number of threads and ranks (tokenize_plan.h).
//
// OUTPUT/ then holds
//   tokenizer.model, tokenizer.vocab
//   train-00000.h5 ...   documents (or pairs) shards
//   valid-00000.h5 ...   when there is a valid split
//   dataset.json         kind, counts, vocab size, inputs, shard lists with
//                        each shard's records, tokens and checksum; written
//                        last, by rank 0, after every rank has finished
//   .tokenize/           resume state: the options' fingerprint and one
//                        marker per finished shard (tokenize_state.h)
// every file written under a temporary name and renamed. dataset.json is what
// BatchSource trusts; it is removed first, so an interrupted run leaves no
// manifest pointing at a mix of old and new shards. A rerun with the same
// options (and unchanged inputs) skips the shards an earlier run finished; a
// rerun with other options starts over. Shards of an earlier run that the new
// one does not list are removed at the end.
//
// Validation records are chosen exactly: round(n * valid_fraction) of the n
// input records (at least 1 when valid_fraction > 0, never all), picked by
// `seed`. Records that encode to no tokens (or, for pairs, whose source or
// target does) are skipped and counted.
//
// Failures throw std::runtime_error (InputError for bad input) with a one-line
// message naming the file and, for bad records under `strict`, the line;
// otherwise bad records are skipped, counted and listed in the summary.
#pragma once

#include <cstdint>
#include <functional>
#include <iosfwd>
#include <string>
#include <vector>

#include "data/jsonl_reader.h"
#include "data/tokenize_ranks.h"

namespace moetrain::data {

// How far this rank is in pass 2: the shards it writes in this run (those an
// earlier run finished are not counted), their records, and the text
// encoded so far (source and target, in bytes).
struct TokenizeProgress {
  int64_t shards_done = 0;
  int64_t shards = 0;
  int64_t records_done = 0;
  int64_t records = 0;
  int64_t text_bytes = 0;
};

struct TokenizeOptions {
  std::vector<std::string> inputs;  // .jsonl, .jsonl.zst or text files
  std::string output_dir;
  int64_t vocab_size = 8000;
  std::string text_field = "text";
  std::string source_field, target_field;  // both set: pairs mode
  // Pairs mode, a tokenizer with language codes (fairseq's layout): the code
  // written before each source's (target's) tokens, as NllbTokenizer does.
  // Each side's code is fixed (source_lang) or read from each record's field
  // (source_lang_field); either both sides have one or neither.
  std::string source_lang, target_lang;
  std::string source_lang_field, target_lang_field;
  std::string tokenizer_model;  // existing .model to load instead of training
  std::string model_type = "unigram";
  double valid_fraction = 0.0;  // documents (or pairs) held out, chosen deterministically by seed
  // Files whose every record goes to the valid split (a held-out set of its
  // own, e.g. split by word); they do not train the tokenizer.
  std::vector<std::string> valid_inputs;
  int64_t docs_per_shard = 100000;
  int deflate_level = 0;  // token arrays: 0 uncompressed, 1..9 shuffle + deflate at this zlib level
  int64_t max_training_sentences = 2000000;
  uint64_t seed = 1234;
  int threads = 1;      // encoding threads of each rank; the output does not depend on it
  bool strict = false;  // a bad record is fatal (otherwise skipped and counted)
  // Called after each block pass 2 encodes on this rank, and once before
  // the first, with this rank's figures (see TokenizeProgress).
  std::function<void(const TokenizeProgress&)> progress;

  bool source_language() const { return !source_lang.empty() || !source_lang_field.empty(); }
  bool target_language() const { return !target_lang.empty() || !target_lang_field.empty(); }
  bool languages() const { return source_language() || target_language(); }
};

// One written shard, as dataset.json lists it.
struct TokenizedShard {
  std::string name;  // file name inside output_dir
  int64_t records = 0;
  int64_t tokens = 0;         // source + target for pairs
  int64_t source_tokens = 0;  // pairs only
  int64_t target_tokens = 0;  // pairs only
  int64_t skipped_empty = 0;  // records of its range that encoded to nothing
  int64_t bytes = 0;          // file size
  uint64_t checksum = 0;      // FNV-1a 64 of the file's bytes
};

struct TokenizeSplitSummary {
  int64_t records = 0;                     // documents or pairs written
  int64_t tokens = 0;                      // all tokens written (source + target for pairs)
  int64_t source_tokens = 0;               // pairs only
  int64_t target_tokens = 0;               // pairs only
  std::vector<std::string> shards;         // file names inside output_dir, in order
  std::vector<TokenizedShard> shard_info;  // the same shards with their counts
};

struct TokenizeSummary {
  std::string kind;  // "documents" or "pairs"
  std::string output_dir;
  std::string tokenizer_path;
  std::string dataset_json;  // path of dataset.json
  bool trained_tokenizer = false;
  int64_t vocab_size = 0;
  int64_t training_sentences = 0;  // lines the tokenizer was trained on (0 when loaded or reused)
  int64_t input_records = 0;       // records read from the inputs (valid_inputs included)
  int64_t skipped_empty = 0;       // records dropped because they encode to nothing
  BadRecords skipped_bad;          // records skipped as bad (invalid JSON or UTF-8, missing field)
  TokenizeSplitSummary train;
  TokenizeSplitSummary valid;
  // How the job ran (the same output whatever these are).
  int ranks = 1;
  int threads = 1;
  bool reused_tokenizer = false;  // an interrupted run's tokenizer was kept
  int64_t shards_written = 0;     // by this run, all ranks
  int64_t shards_skipped = 0;     // finished by an earlier run
  int64_t encoded_bytes = 0;      // text bytes encoded by this run, all ranks
  double encode_seconds = 0;      // pass 2 of the slowest rank
  double seconds = 0;             // the whole run, as rank 0 saw it
};

// Every rank of the job calls it with the same options (it is collective over
// `ranks`). The summary is complete on rank 0; on the others it holds the
// kind, paths and run fields only.
TokenizeSummary tokenize_corpus(const TokenizeOptions& options, TokenizeRanks& ranks);

// A job of one process.
TokenizeSummary tokenize_corpus(const TokenizeOptions& options);

}  // namespace moetrain::data

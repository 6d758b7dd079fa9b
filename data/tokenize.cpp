// tokenize_corpus: two streaming passes over the inputs (see tokenize.h).
#include "data/tokenize.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <regex>
#include <set>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "data/atomic_file.h"
#include "data/jsonl_reader.h"
#include "data/portable_rng.h"
#include "data/token_shard.h"
#include "data/tokenizer.h"

namespace moetrain::data {
namespace {

namespace fs = std::filesystem;

constexpr uint64_t kSentenceSampleTag = 0x73656e74656e6365ULL;  // "sentence"
constexpr uint64_t kValidSplitTag = 0x76616c6964737031ULL;      // "validsp1"

void check_options(const TokenizeOptions& o) {
  if (o.inputs.empty()) throw std::invalid_argument("tokenize: no input files given");
  if (o.output_dir.empty()) throw std::invalid_argument("tokenize: no output directory given");
  if (o.source_field.empty() != o.target_field.empty())
    throw std::invalid_argument("tokenize: pairs mode needs both a source and a target field");
  if (!(o.valid_fraction >= 0.0 && o.valid_fraction < 1.0))
    throw std::invalid_argument("tokenize: valid_fraction must be in [0, 1), got " + std::to_string(o.valid_fraction));
  if (o.docs_per_shard < 1) throw std::invalid_argument("tokenize: docs_per_shard must be >= 1");
  if (o.tokenizer_model.empty()) {
    if (o.model_type != "unigram" && o.model_type != "bpe")
      throw std::invalid_argument("tokenize: model_type must be unigram or bpe, got '" + o.model_type + "'");
    if (o.max_training_sentences < 1) throw std::invalid_argument("tokenize: max_training_sentences must be >= 1");
  }
  for (const auto& input : o.inputs) {
    std::error_code ec;
    if (!fs::is_regular_file(input, ec))
      throw std::runtime_error(input + ": input file does not exist or is not a regular file");
  }
}

RecordFields fields_of(const TokenizeOptions& o) {
  RecordFields f;
  f.text_field = o.text_field;
  f.source_field = o.source_field;
  f.target_field = o.target_field;
  return f;
}

// Seeded reservoir sampling over the non-blank lines of the records: a uniform
// sample of at most `capacity` lines, whatever the corpus size.
class SentenceSampler {
 public:
  SentenceSampler(int64_t capacity, uint64_t seed) : capacity_(capacity), rng_(seed) {}

  void add_text(const std::string& text) {
    size_t start = 0;
    while (start <= text.size()) {
      size_t end = text.find('\n', start);
      if (end == std::string::npos) end = text.size();
      if (text.find_first_not_of(" \t\r\f\v", start) < end) add_line(text.substr(start, end - start));
      start = end + 1;
    }
  }

  std::vector<std::string>& sentences() { return sample_; }

 private:
  void add_line(std::string line) {
    ++seen_;
    if (static_cast<int64_t>(sample_.size()) < capacity_) {
      sample_.push_back(std::move(line));
      return;
    }
    uint64_t j = rng_.uniform(static_cast<uint64_t>(seen_));
    if (j < static_cast<uint64_t>(capacity_)) sample_[j] = std::move(line);
  }

  int64_t capacity_;
  PortableRng rng_;
  int64_t seen_ = 0;
  std::vector<std::string> sample_;
};

// Exactly k of n records for validation (Floyd's sampling algorithm).
std::vector<bool> choose_valid(int64_t n, double fraction, uint64_t seed) {
  std::vector<bool> valid(static_cast<size_t>(n), false);
  if (fraction <= 0.0 || n < 2) return valid;
  int64_t k = static_cast<int64_t>(std::llround(static_cast<double>(n) * fraction));
  k = std::min(std::max<int64_t>(k, 1), n - 1);
  PortableRng rng(combine_seeds({seed, kValidSplitTag}));
  for (int64_t j = n - k; j < n; ++j) {
    int64_t t = static_cast<int64_t>(rng.uniform(static_cast<uint64_t>(j + 1)));
    if (valid[t])
      valid[j] = true;
    else
      valid[t] = true;
  }
  return valid;
}

// Accumulates one split's records and writes a shard every docs_per_shard.
class ShardWriter {
 public:
  ShardWriter(std::string dir, std::string split, bool pairs, int64_t per_shard, int64_t vocab)
      : dir_(std::move(dir)), split_(std::move(split)), pairs_(pairs), per_shard_(per_shard), vocab_(vocab) {
    reset();
  }

  void add(const std::vector<int32_t>& source, const std::vector<int32_t>* target) {
    source_.insert(source_.end(), source.begin(), source.end());
    source_offsets_.push_back(static_cast<int64_t>(source_.size()));
    summary_.records += 1;
    summary_.tokens += static_cast<int64_t>(source.size());
    if (pairs_) {
      target_.insert(target_.end(), target->begin(), target->end());
      target_offsets_.push_back(static_cast<int64_t>(target_.size()));
      summary_.source_tokens += static_cast<int64_t>(source.size());
      summary_.target_tokens += static_cast<int64_t>(target->size());
      summary_.tokens += static_cast<int64_t>(target->size());
    }
    if (static_cast<int64_t>(source_offsets_.size()) - 1 >= per_shard_) flush();
  }

  void flush() {
    if (source_offsets_.size() <= 1) return;
    char name[64];
    std::snprintf(name, sizeof(name), "%s-%05zu.h5", split_.c_str(), summary_.shards.size());
    const std::string path = (fs::path(dir_) / name).string();
    if (pairs_) {
      PairShard shard;
      shard.source = make_token_sequences(source_, source_offsets_);
      shard.target = make_token_sequences(target_, target_offsets_);
      shard.vocab_size = vocab_;
      write_pair_shard(path, shard);
    } else {
      DocumentShard shard;
      shard.documents = make_token_sequences(source_, source_offsets_);
      shard.vocab_size = vocab_;
      write_document_shard(path, shard);
    }
    summary_.shards.push_back(name);
    reset();
  }

  const TokenizeSplitSummary& summary() const { return summary_; }

 private:
  void reset() {
    source_.clear();
    target_.clear();
    source_offsets_.assign(1, 0);
    target_offsets_.assign(1, 0);
  }

  std::string dir_, split_;
  bool pairs_;
  int64_t per_shard_, vocab_;
  std::vector<int32_t> source_, target_;
  std::vector<int64_t> source_offsets_, target_offsets_;
  TokenizeSplitSummary summary_;
};

nlohmann::json split_json(const TokenizeSplitSummary& s, bool pairs) {
  nlohmann::json j = {{pairs ? "pairs" : "documents", s.records}, {"tokens", s.tokens}, {"shards", s.shards}};
  if (pairs) {
    j["source_tokens"] = s.source_tokens;
    j["target_tokens"] = s.target_tokens;
  }
  return j;
}

// Removes <split>-NNNNN.h5 files of an earlier run that this run did not write.
void remove_stale_shards(const std::string& dir, const std::set<std::string>& keep) {
  static const std::regex shard_name(R"((train|valid)-[0-9]{5,}\.h5)");
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (entry.is_regular_file() && std::regex_match(name, shard_name) && !keep.count(name)) fs::remove(entry.path());
  }
}

// Pass 1: validates and counts the records and, when `sampler` is given, samples
// the lines the tokenizer is trained on.
int64_t count_records(const TokenizeOptions& options, const RecordFields& fields, bool pairs,
                      SentenceSampler* sampler) {
  int64_t n_records = 0;
  for (const auto& input : options.inputs) {
    JsonlReader reader(input, fields);
    TextRecord record;
    while (reader.next(record)) {
      ++n_records;
      if (sampler) {
        sampler->add_text(record.text);
        if (pairs) sampler->add_text(record.target);
      }
    }
  }
  return n_records;
}

// Trains the tokenizer on the sampled sentences (freeing the sample before encoding).
Tokenizer train_tokenizer_on(SentenceSampler& sampler, const TokenizeOptions& options, TokenizeSummary& summary) {
  if (sampler.sentences().empty()) throw std::runtime_error("tokenize: the inputs hold no text");
  TokenizerTrainOptions t;
  t.vocab_size = options.vocab_size;
  t.model_type = options.model_type;
  t.seed = options.seed;
  summary.training_sentences = static_cast<int64_t>(sampler.sentences().size());
  Tokenizer tokenizer = Tokenizer::train(sampler.sentences(), t);
  sampler.sentences() = {};  // free the sample before encoding
  summary.trained_tokenizer = true;
  return tokenizer;
}

// Creates output_dir, removes an old dataset.json (so a failed run leaves none
// behind) and saves the tokenizer; from here on output_dir changes.
void prepare_output_dir(const TokenizeOptions& options, const Tokenizer& tokenizer, TokenizeSummary& summary) {
  std::error_code ec;
  fs::create_directories(options.output_dir, ec);
  if (ec) throw std::runtime_error("cannot create output directory " + options.output_dir + ": " + ec.message());
  const fs::path out_dir(options.output_dir);
  summary.dataset_json = (out_dir / "dataset.json").string();
  fs::remove(summary.dataset_json, ec);
  summary.tokenizer_path = (out_dir / "tokenizer.model").string();
  tokenizer.save(summary.tokenizer_path);
}

// Pass 2: encodes every record into the train and valid shards and fills
// summary.train, summary.valid, skipped_empty and the valid_inputs' records.
void encode_records(const TokenizeOptions& options, const RecordFields& fields, bool pairs, int64_t n_records,
                    const Tokenizer& tokenizer, TokenizeSummary& summary) {
  const std::vector<bool> is_valid = choose_valid(n_records, options.valid_fraction, options.seed);
  ShardWriter train(options.output_dir, "train", pairs, options.docs_per_shard, summary.vocab_size);
  ShardWriter valid(options.output_dir, "valid", pairs, options.docs_per_shard, summary.vocab_size);
  // Encodes a record and adds it to `split`, or counts it as empty.
  auto write = [&](const TextRecord& record, ShardWriter& split) {
    std::vector<int32_t> source = tokenizer.encode(record.text);
    std::vector<int32_t> target;
    if (pairs) target = tokenizer.encode(record.target);
    if (source.empty() || (pairs && target.empty())) {
      ++summary.skipped_empty;
    } else {
      split.add(source, pairs ? &target : nullptr);
    }
  };
  int64_t index = 0;
  for (const auto& input : options.inputs) {
    JsonlReader reader(input, fields);
    TextRecord record;
    while (reader.next(record)) {
      if (index >= n_records)
        throw std::runtime_error(input + ": changed while being tokenized (more records than in pass 1)");
      write(record, is_valid[index] ? valid : train);
      ++index;
    }
  }
  if (index != n_records)
    throw std::runtime_error("tokenize: the inputs changed while being tokenized (fewer records than in pass 1)");
  for (const auto& input : options.valid_inputs) {
    JsonlReader reader(input, fields);
    TextRecord record;
    while (reader.next(record)) {
      ++summary.input_records;
      write(record, valid);
    }
  }
  train.flush();
  valid.flush();
  summary.train = train.summary();
  summary.valid = valid.summary();
}

// The dataset.json manifest describing the finished run.
nlohmann::json make_manifest(const TokenizeOptions& options, const TokenizeSummary& summary,
                             const SpecialTokens& special, bool pairs) {
  nlohmann::json manifest = {
      {"format_version", kTokenShardFormatVersion},
      {"kind", summary.kind},
      {"vocab_size", summary.vocab_size},
      {"tokenizer", "tokenizer.model"},
      {"trained_tokenizer", summary.trained_tokenizer},
      {"special_tokens",
       {{"pad", special.pad},
        {"eos", special.eos},
        {"bos", special.bos},
        {"unk", special.unk},
        {"num_sentinels", special.sentinels.size()}}},
      {"inputs", options.inputs},
      {"valid_inputs", options.valid_inputs},
      {"seed", options.seed},
      {"valid_fraction", options.valid_fraction},
      {"docs_per_shard", options.docs_per_shard},
      {"input_records", summary.input_records},
      {"skipped_empty", summary.skipped_empty},
  };
  if (pairs)
    manifest["fields"] = {{"source", options.source_field}, {"target", options.target_field}};
  else
    manifest["fields"] = {{"text", options.text_field}};
  if (summary.trained_tokenizer) {
    manifest["tokenizer_training"] = {{"model_type", options.model_type},
                                      {"requested_vocab_size", options.vocab_size},
                                      {"sentences", summary.training_sentences}};
  } else {
    manifest["tokenizer_source"] = options.tokenizer_model;
  }
  manifest["splits"]["train"] = split_json(summary.train, pairs);
  if (!summary.valid.shards.empty()) manifest["splits"]["valid"] = split_json(summary.valid, pairs);
  return manifest;
}

}  // namespace

TokenizeSummary tokenize_corpus(const TokenizeOptions& options) {
  check_options(options);
  const bool pairs = !options.source_field.empty();
  const RecordFields fields = fields_of(options);
  TokenizeSummary summary;
  summary.kind = pairs ? "pairs" : "documents";
  summary.output_dir = options.output_dir;

  // Pass 1: validate, count, sample training sentences.
  const bool train_tokenizer = options.tokenizer_model.empty();
  SentenceSampler sampler(options.max_training_sentences, combine_seeds({options.seed, kSentenceSampleTag}));
  const int64_t n_records = count_records(options, fields, pairs, train_tokenizer ? &sampler : nullptr);
  if (n_records == 0) throw std::runtime_error("tokenize: the inputs hold no records");
  summary.input_records = n_records;

  const Tokenizer tokenizer =
      train_tokenizer ? train_tokenizer_on(sampler, options, summary) : Tokenizer::load(options.tokenizer_model);
  summary.vocab_size = tokenizer.vocab_size();

  prepare_output_dir(options, tokenizer, summary);

  // Pass 2: encode and write.
  encode_records(options, fields, pairs, n_records, tokenizer, summary);
  if (summary.train.records == 0)
    throw std::runtime_error("tokenize: no non-empty " + summary.kind + " left for the train split");

  std::set<std::string> keep(summary.train.shards.begin(), summary.train.shards.end());
  keep.insert(summary.valid.shards.begin(), summary.valid.shards.end());
  remove_stale_shards(options.output_dir, keep);

  const nlohmann::json manifest = make_manifest(options, summary, tokenizer.special_tokens(), pairs);
  write_file_atomically(summary.dataset_json, manifest.dump(2) + "\n");
  return summary;
}

}  // namespace moetrain::data

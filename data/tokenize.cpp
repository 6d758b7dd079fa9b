// tokenize_corpus: pass 1 and the tokenizer on rank 0, pass 2 on every rank,
// dataset.json on rank 0 (see tokenize.h).
#include "data/tokenize.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <map>
#include <optional>
#include <regex>
#include <set>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "data/atomic_file.h"
#include "data/tokenize_encode.h"
#include "data/tokenize_input.h"
#include "data/tokenize_manifest.h"
#include "data/tokenize_plan.h"
#include "data/tokenize_state.h"
#include "data/tokenize_workers.h"
#include "data/tokenizer.h"

namespace moetrain::data {
namespace {

namespace fs = std::filesystem;

constexpr uint64_t kSentenceSampleTag = 0x73656e74656e6365ULL;  // "sentence"

void check_options(const TokenizeOptions& o) {
  if (o.inputs.empty()) throw std::invalid_argument("tokenize: no input files given");
  if (o.output_dir.empty()) throw std::invalid_argument("tokenize: no output directory given");
  if (o.source_field.empty() != o.target_field.empty())
    throw std::invalid_argument("tokenize: pairs mode needs both a source and a target field");
  if (!o.source_lang.empty() && !o.source_lang_field.empty())
    throw std::invalid_argument("tokenize: the source language is a code or a field, not both");
  if (!o.target_lang.empty() && !o.target_lang_field.empty())
    throw std::invalid_argument("tokenize: the target language is a code or a field, not both");
  if (o.source_language() != o.target_language())
    throw std::invalid_argument("tokenize: a source language needs a target language, and the other way round");
  if (o.languages() && o.source_field.empty())
    throw std::invalid_argument("tokenize: source and target languages are for pairs mode");
  if (o.languages() && o.tokenizer_model.empty())
    throw std::invalid_argument("tokenize: source and target languages need a tokenizer with language codes");
  if (!(o.valid_fraction >= 0.0 && o.valid_fraction < 1.0))
    throw std::invalid_argument("tokenize: valid_fraction must be in [0, 1), got " + std::to_string(o.valid_fraction));
  if (o.docs_per_shard < 1) throw std::invalid_argument("tokenize: docs_per_shard must be >= 1");
  if (o.deflate_level < 0 || o.deflate_level > 9)
    throw std::invalid_argument("tokenize: deflate_level must be in 0..9, got " + std::to_string(o.deflate_level));
  if (o.threads < 1) throw std::invalid_argument("tokenize: threads must be >= 1");
  if (o.tokenizer_model.empty()) {
    if (o.model_type != "unigram" && o.model_type != "bpe")
      throw std::invalid_argument("tokenize: model_type must be unigram or bpe, got '" + o.model_type + "'");
    if (o.max_training_sentences < 1) throw std::invalid_argument("tokenize: max_training_sentences must be >= 1");
  }
  for (const auto* files : {&o.inputs, &o.valid_inputs}) {
    for (const auto& input : *files) {
      std::error_code ec;
      if (!fs::is_regular_file(input, ec))
        throw std::runtime_error(input + ": input file does not exist or is not a regular file");
    }
  }
}

// What rank 0 hands every rank after pass 1: the counts, the tokenizer and
// how it came about. Sent as one JSON line, then the model's bytes.
struct Handoff {
  InputCounts counts;
  bool trained = false, reused = false;
  int64_t training_sentences = 0;
  std::string model_bytes;

  std::string encode() const {
    const nlohmann::json head = {{"records", counts.records},
                                 {"valid_input_records", counts.valid_input_records},
                                 {"bad_records", counts.bad.count},
                                 {"bad_examples", counts.bad.first},
                                 {"trained", trained},
                                 {"reused", reused},
                                 {"training_sentences", training_sentences}};
    return head.dump() + "\n" + model_bytes;
  }

  static Handoff decode(const std::string& message) {
    const size_t eol = message.find('\n');
    if (eol == std::string::npos) throw std::runtime_error("tokenize: malformed message from rank 0");
    const auto head = nlohmann::json::parse(message.substr(0, eol));
    Handoff h;
    h.counts.records = head.at("records").get<int64_t>();
    h.counts.valid_input_records = head.at("valid_input_records").get<int64_t>();
    h.counts.bad.count = head.at("bad_records").get<int64_t>();
    h.counts.bad.first = head.at("bad_examples").get<std::vector<std::string>>();
    h.trained = head.at("trained").get<bool>();
    h.reused = head.at("reused").get<bool>();
    h.training_sentences = head.at("training_sentences").get<int64_t>();
    h.model_bytes = message.substr(eol + 1);
    return h;
  }
};

Tokenizer train_on_sample(SentenceSampler& sampler, const TokenizeOptions& options) {
  if (sampler.sentences().empty()) throw std::runtime_error("tokenize: the inputs hold no text");
  TokenizerTrainOptions t;
  t.vocab_size = options.vocab_size;
  t.model_type = options.model_type;
  t.seed = options.seed;
  Tokenizer tokenizer = Tokenizer::train(sampler.sentences(), t);
  sampler.sentences() = {};  // free the sample before encoding
  return tokenizer;
}

// Rank 0, before any other rank touches the output: pass 1, the tokenizer
// (trained, loaded, or kept from an interrupted run with the same
// fingerprint), then the output folder: dataset.json removed, the resume
// state kept or cleared, the tokenizer saved.
Handoff prepare_on_rank0(const TokenizeOptions& options) {
  const fs::path out(options.output_dir);
  const TokenizeState state(options.output_dir);
  const nlohmann::json fingerprint = run_fingerprint(options);
  const std::string model_path = (out / "tokenizer.model").string();
  const std::optional<SavedTokenizer> saved = state.saved_tokenizer(fingerprint);
  Handoff h;
  h.reused = saved && fs::exists(model_path) && fnv1a64_file(model_path) == saved->checksum;
  h.trained = options.tokenizer_model.empty();
  const bool train_now = h.trained && !h.reused;

  SentenceSampler sampler(options.max_training_sentences, combine_seeds({options.seed, kSentenceSampleTag}));
  // A tokenizer that is not trained is loaded first: the language fields
  // (languages need a loaded one) are checked against its codes in pass 1.
  std::optional<Tokenizer> loaded;
  if (!train_now) loaded = Tokenizer::load(h.reused ? model_path : options.tokenizer_model);
  if (loaded) language_prefix(*loaded, options);  // a code it lacks fails here, before pass 1
  h.counts = count_records(options, train_now ? &sampler : nullptr,
                           loaded ? loaded->language_codes() : std::vector<std::string>{});
  if (h.counts.records == 0) throw std::runtime_error("tokenize: the inputs hold no records");
  h.training_sentences = train_now ? static_cast<int64_t>(sampler.sentences().size()) : 0;
  const Tokenizer tokenizer = loaded ? std::move(*loaded) : train_on_sample(sampler, options);
  h.model_bytes = tokenizer.model_bytes();

  // From here on the output folder changes.
  std::error_code ec;
  fs::create_directories(out, ec);
  if (ec) throw std::runtime_error("cannot create output directory " + options.output_dir + ": " + ec.message());
  fs::remove(out / "dataset.json", ec);
  if (h.reused) {
    h.training_sentences = saved->training_sentences;
    state.remove_temporaries();
  } else {
    state.clear();
    tokenizer.save(model_path);
    state.begin(fingerprint, {fnv1a64(h.model_bytes), h.training_sentences});
  }
  return h;
}

// Rank 0: every rank's shards into the summary's splits.
void merge_rank_results(const std::vector<std::string>& messages, const ShardPlan& plan, TokenizeSummary& summary) {
  std::map<std::string, TokenizedShard> by_name;
  for (const auto& message : messages) {
    const auto j = nlohmann::json::parse(message);
    for (const auto& s : j.at("shards")) {
      TokenizedShard shard = shard_from_json(s);
      by_name[shard.name] = shard;
    }
    summary.shards_written += j.at("written").get<int64_t>();
    summary.shards_skipped += j.at("skipped").get<int64_t>();
    summary.encoded_bytes += j.at("encoded_bytes").get<int64_t>();
    summary.encode_seconds = std::max(summary.encode_seconds, j.at("seconds").get<double>());
  }
  for (const PlannedShard& planned : plan.shards()) {
    auto it = by_name.find(planned.name);
    if (it == by_name.end()) throw std::runtime_error("tokenize: no rank reported shard " + planned.name);
    const TokenizedShard& shard = it->second;
    TokenizeSplitSummary& split = planned.split == TokenSplit::Train ? summary.train : summary.valid;
    split.records += shard.records;
    split.tokens += shard.tokens;
    split.source_tokens += shard.source_tokens;
    split.target_tokens += shard.target_tokens;
    split.shards.push_back(shard.name);
    split.shard_info.push_back(shard);
    summary.skipped_empty += shard.skipped_empty;
  }
}

std::string rank_result_message(const RankEncodeResult& r) {
  nlohmann::json shards = nlohmann::json::array();
  for (const auto& s : r.shards) shards.push_back(shard_to_json(s));
  return nlohmann::json{{"shards", shards},
                        {"written", r.written},
                        {"skipped", r.skipped},
                        {"encoded_bytes", r.encoded_bytes},
                        {"seconds", r.seconds}}
      .dump();
}

// Removes <split>-NNNNN.h5 files of an earlier run that this run did not write.
void remove_stale_shards(const std::string& dir, const TokenizeSummary& summary) {
  std::set<std::string> keep(summary.train.shards.begin(), summary.train.shards.end());
  keep.insert(summary.valid.shards.begin(), summary.valid.shards.end());
  static const std::regex shard_name(R"((train|valid)-[0-9]{5,}\.h5)");
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (entry.is_regular_file() && std::regex_match(name, shard_name) && !keep.count(name)) {
      fs::remove(entry.path());
      fs::remove(fs::path(dir) / ".tokenize" / (name + ".json"));
    }
  }
}

}  // namespace

TokenizeSummary tokenize_corpus(const TokenizeOptions& options, TokenizeRanks& ranks) {
  const auto start = std::chrono::steady_clock::now();
  check_options(options);
  TokenizeSummary summary;
  summary.kind = record_fields_of(options).pairs() ? "pairs" : "documents";
  summary.output_dir = options.output_dir;
  summary.tokenizer_path = (fs::path(options.output_dir) / "tokenizer.model").string();
  summary.dataset_json = (fs::path(options.output_dir) / "dataset.json").string();
  summary.ranks = ranks.size();
  summary.threads = options.threads;
  const int rank = ranks.rank();

  // Rank 0's pass 1 and tokenizer; the other ranks wait here for them.
  const Handoff h = Handoff::decode(ranks.broadcast_from_rank0(rank == 0 ? prepare_on_rank0(options).encode() : ""));
  const Tokenizer tokenizer = Tokenizer::from_bytes(h.model_bytes, "the tokenizer of rank 0");
  summary.trained_tokenizer = h.trained;
  summary.reused_tokenizer = h.reused;
  summary.training_sentences = h.training_sentences;
  summary.vocab_size = tokenizer.vocab_size();
  summary.input_records = h.counts.records + h.counts.valid_input_records;
  summary.skipped_bad = h.counts.bad;

  // Pass 2: each rank its own shards; then rank 0 gathers what they wrote.
  const ShardPlan plan(h.counts, options.valid_fraction, options.seed, options.docs_per_shard, ranks.size());
  const TokenizeState state(options.output_dir);
  const RankEncodeResult mine = encode_rank_shards(options, tokenizer, plan, rank, ranks.size(), state);
  const std::vector<std::string> results = ranks.all_gather(rank_result_message(mine));
  if (rank != 0) return summary;

  merge_rank_results(results, plan, summary);
  if (summary.train.records == 0)
    throw std::runtime_error("tokenize: no non-empty " + summary.kind + " left for the train split");
  remove_stale_shards(options.output_dir, summary);
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const nlohmann::json manifest = make_manifest(options, summary, tokenizer.special_tokens());
  write_file_atomically(summary.dataset_json, manifest.dump(2) + "\n");
  return summary;
}

TokenizeSummary tokenize_corpus(const TokenizeOptions& options) {
  LocalTokenizeRanks one;
  return tokenize_corpus(options, one);
}

}  // namespace moetrain::data

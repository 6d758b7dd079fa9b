// Pass 2 of tokenize_corpus on one rank (tokenize_encode.h).
#include "data/tokenize_encode.h"

#include <sys/stat.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <stdexcept>

#include "data/token_shard.h"
#include "data/tokenize_input.h"
#include "data/tokenize_workers.h"

namespace moetrain::data {
namespace {

namespace fs = std::filesystem;

// A block closes at this many records or text bytes, whichever comes first.
constexpr size_t kBlockRecords = 256;
constexpr int64_t kBlockBytes = int64_t{1} << 20;
// Blocks submitted and not yet taken back, per encoding thread.
constexpr size_t kBlocksPerThread = 4;

// The records of one planned shard, appended in stream order; written once
// the last one is in.
class ShardBuilder {
 public:
  ShardBuilder(const PlannedShard& plan, bool pairs) : plan_(plan), pairs_(pairs) { shard_.name = plan.name; }

  void add(const std::vector<int32_t>& source, const std::vector<int32_t>* target) {
    ++seen_;
    if (source.empty() || (pairs_ && target->empty())) {
      ++shard_.skipped_empty;
      return;
    }
    append(source_, source_offsets_, source);
    shard_.records += 1;
    shard_.tokens += static_cast<int64_t>(source.size());
    if (pairs_) {
      append(target_, target_offsets_, *target);
      shard_.source_tokens += static_cast<int64_t>(source.size());
      shard_.target_tokens += static_cast<int64_t>(target->size());
      shard_.tokens += static_cast<int64_t>(target->size());
    }
  }

  bool complete() const { return seen_ == plan_.records; }

  // Writes the shard into `dir` and returns it with its size and checksum.
  TokenizedShard write(const std::string& dir, int64_t vocab_size, const ShardWriteOptions& write_options) {
    const std::string path = (fs::path(dir) / plan_.name).string();
    if (pairs_) {
      PairShard shard;
      shard.source = make_token_sequences(source_, source_offsets_);
      shard.target = make_token_sequences(target_, target_offsets_);
      shard.vocab_size = vocab_size;
      write_pair_shard(path, shard, write_options);
    } else {
      DocumentShard shard;
      shard.documents = make_token_sequences(source_, source_offsets_);
      shard.vocab_size = vocab_size;
      write_document_shard(path, shard, write_options);
    }
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) throw std::runtime_error("cannot stat " + path + " after writing it");
    shard_.bytes = static_cast<int64_t>(st.st_size);
    shard_.checksum = fnv1a64_file(path);
    return shard_;
  }

 private:
  static void append(std::vector<int32_t>& tokens, std::vector<int64_t>& offsets, const std::vector<int32_t>& ids) {
    tokens.insert(tokens.end(), ids.begin(), ids.end());
    offsets.push_back(static_cast<int64_t>(tokens.size()));
  }

  const PlannedShard& plan_;
  bool pairs_;
  int64_t seen_ = 0;
  std::vector<int32_t> source_, target_;
  std::vector<int64_t> source_offsets_{0}, target_offsets_{0};
  TokenizedShard shard_;
};

class RankEncoder {
 public:
  RankEncoder(const TokenizeOptions& options, const Tokenizer& tokenizer, const ShardPlan& plan, int rank, int ranks,
              const TokenizeState& state)
      : options_(options),
        tokenizer_(tokenizer),
        plan_(plan),
        rank_(rank),
        ranks_(ranks),
        state_(state),
        pairs_(record_fields_of(options).pairs()),
        writes_here_(plan.shards().size(), false) {}

  RankEncodeResult run() {
    int64_t shards_to_write = 0;
    for (size_t g = 0; g < plan_.shards().size(); ++g) {
      const PlannedShard& s = plan_.shards()[g];
      if (s.owner != rank_) continue;
      if (auto done = state_.finished(s.name)) {
        finished_[static_cast<int64_t>(g)] = *done;
        ++result_.skipped;
      } else {
        writes_here_[g] = true;
        ++shards_to_write;
        records_left_ += s.records;
      }
    }
    const auto start = std::chrono::steady_clock::now();
    progress_.shards = shards_to_write;
    progress_.records = records_left_;
    if (options_.progress) options_.progress(progress_);
    if (shards_to_write > 0) read_and_encode();
    for (auto& [g, shard] : finished_) result_.shards.push_back(std::move(shard));
    result_.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return std::move(result_);
  }

 private:
  // Reads the stream, submitting this rank's unfinished records in blocks.
  void read_and_encode() {
    EncoderPool pool(tokenizer_, pairs_, options_.threads, language_prefix(tokenizer_, options_));
    const size_t max_in_flight = kBlocksPerThread * static_cast<size_t>(options_.threads);
    RecordStream stream(options_, tokenizer_.language_codes());
    RecordRouter router(plan_);
    TextRecord record;
    bool from_valid_inputs = false;
    auto block = std::make_unique<EncodeBlock>();
    while (records_left_ > 0 && stream.next(record, &from_valid_inputs)) {
      const int64_t g = router.next(from_valid_inputs, stream.path());
      if (!writes_here_[static_cast<size_t>(g)]) continue;
      --records_left_;
      block->shard.push_back(g);
      block->text_bytes += static_cast<int64_t>(record.text.size() + record.target.size());
      block->source.push_back(std::move(record.text));
      if (pairs_) block->target.push_back(std::move(record.target));
      if (!options_.source_lang_field.empty()) block->source_lang.push_back(std::move(record.source_lang));
      if (!options_.target_lang_field.empty()) block->target_lang.push_back(std::move(record.target_lang));
      if (block->size() >= kBlockRecords || block->text_bytes >= kBlockBytes) {
        pool.submit(std::move(block));
        block = std::make_unique<EncodeBlock>();
        while (pool.in_flight() > max_in_flight) take_back(*pool.take_oldest());
      }
    }
    if (records_left_ > 0) router.check_complete();  // the stream ended early: throws
    if (block->size() > 0) pool.submit(std::move(block));
    while (pool.in_flight() > 0) take_back(*pool.take_oldest());
    if (!open_.empty()) throw std::logic_error("tokenize: a shard was left incomplete");
  }

  // Appends an encoded block to its shards, writing each shard it completes.
  void take_back(EncodeBlock& block) {
    for (size_t i = 0; i < block.size(); ++i) {
      const int64_t g = block.shard[i];
      auto it = open_.find(g);
      if (it == open_.end()) it = open_.emplace(g, ShardBuilder(plan_.shards()[g], pairs_)).first;
      it->second.add(block.source_ids[i], pairs_ ? &block.target_ids[i] : nullptr);
      ++progress_.records_done;
      if (it->second.complete()) {
        TokenizedShard shard =
            it->second.write(options_.output_dir, tokenizer_.vocab_size(), ShardWriteOptions{options_.deflate_level});
        open_.erase(it);
        state_.mark_finished(shard);
        finished_[g] = std::move(shard);
        ++result_.written;
      }
    }
    result_.encoded_bytes += block.text_bytes;
    progress_.shards_done = result_.written;
    progress_.text_bytes = result_.encoded_bytes;
    if (options_.progress) options_.progress(progress_);
  }

  const TokenizeOptions& options_;
  const Tokenizer& tokenizer_;
  const ShardPlan& plan_;
  const int rank_, ranks_;
  const TokenizeState& state_;
  const bool pairs_;
  std::vector<bool> writes_here_;  // by plan index: this rank writes the shard in this run
  int64_t records_left_ = 0;       // records of the shards to write not yet read
  std::map<int64_t, ShardBuilder> open_;
  std::map<int64_t, TokenizedShard> finished_;  // by plan index
  TokenizeProgress progress_;                   // records_done: encoded and appended
  RankEncodeResult result_;
};

}  // namespace

RankEncodeResult encode_rank_shards(const TokenizeOptions& options, const Tokenizer& tokenizer, const ShardPlan& plan,
                                    int rank, int ranks, const TokenizeState& state) {
  return RankEncoder(options, tokenizer, plan, rank, ranks, state).run();
}

}  // namespace moetrain::data

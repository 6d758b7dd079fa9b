// The in-memory TokenStore, and the choice between it and the streamed one.
#include "data/token_store.h"

#include <algorithm>
#include <stdexcept>

#include "data/streamed_token_store.h"
#include "data/token_shard.h"

namespace moetrain::data {
namespace {

// Every shard read and validated at start-up, the dataset held whole.
class InMemoryTokenStore : public TokenStore {
 public:
  InMemoryTokenStore(const std::vector<std::string>& shards, Objective objective, int64_t eos,
                     const std::string& label) {
    for (const auto& path : shards) {
      const ShardKind kind = read_shard_kind(path);
      check_shard_kind(path, kind, objective);
      if (kind == ShardKind::Documents) {
        DocumentShard shard = read_document_shard(path);
        check_same_vocab(vocab_size_, path, shard.vocab_size, label);
        append_documents(shard.documents, eos);
      } else {
        PairShard shard = read_pair_shard(path);
        check_same_vocab(vocab_size_, path, shard.vocab_size, label);
        append(shard.source, source_tokens_, source_offsets_);
        append(shard.target, target_tokens_, target_offsets_);
      }
    }
  }

  int64_t vocab_size() const override { return vocab_size_; }
  int64_t stream_length() const override { return static_cast<int64_t>(stream_.size()); }
  std::vector<int64_t> stream(int64_t begin, int64_t end) const override {
    return std::vector<int64_t>(stream_.begin() + begin, stream_.begin() + end);
  }
  int64_t num_pairs() const override { return static_cast<int64_t>(source_offsets_.size()) - 1; }
  std::vector<int64_t> pair_side(int64_t pair, bool target, int64_t max_tokens) const override {
    const auto& tokens = target ? target_tokens_ : source_tokens_;
    const auto& offsets = target ? target_offsets_ : source_offsets_;
    const int64_t begin = offsets[pair];
    const int64_t n = std::min(offsets[pair + 1] - begin, max_tokens);
    return std::vector<int64_t>(tokens.begin() + begin, tokens.begin() + begin + n);
  }

 private:
  void append_documents(const TokenSequences& docs, int64_t eos) {
    const int32_t* tokens = docs.tokens.data_ptr<int32_t>();
    const int64_t* offsets = docs.offsets.data_ptr<int64_t>();
    stream_.reserve(stream_.size() + docs.num_tokens() + docs.size());
    for (int64_t d = 0; d < docs.size(); ++d) {
      stream_.insert(stream_.end(), tokens + offsets[d], tokens + offsets[d + 1]);
      stream_.push_back(static_cast<int32_t>(eos));
    }
  }

  static void append(const TokenSequences& seq, std::vector<int32_t>& tokens, std::vector<int64_t>& offsets) {
    const int64_t base = static_cast<int64_t>(tokens.size());
    const int32_t* t = seq.tokens.data_ptr<int32_t>();
    const int64_t* o = seq.offsets.data_ptr<int64_t>();
    tokens.insert(tokens.end(), t, t + seq.num_tokens());
    for (int64_t i = 1; i <= seq.size(); ++i) offsets.push_back(base + o[i]);
  }

  int64_t vocab_size_ = 0;
  std::vector<int32_t> stream_;
  std::vector<int32_t> source_tokens_, target_tokens_;
  std::vector<int64_t> source_offsets_{0}, target_offsets_{0};
};

}  // namespace

void check_shard_kind(const std::string& path, ShardKind kind, Objective objective) {
  if (objective == Objective::SpanCorruption && kind != ShardKind::Documents) {
    throw std::runtime_error("token shard " + path + " holds pairs; span corruption needs document shards");
  }
  if (objective == Objective::Seq2Seq && kind != ShardKind::Pairs) {
    throw std::runtime_error("token shard " + path + " holds documents; the seq2seq objective needs pair shards");
  }
}

void check_same_vocab(int64_t& dataset_vocab, const std::string& shard, int64_t vocab, const std::string& label) {
  if (dataset_vocab == 0) dataset_vocab = vocab;
  if (vocab != dataset_vocab) {
    throw std::runtime_error("token shard " + shard + " has vocab_size " + std::to_string(vocab) +
                             ", earlier shards of " + label + " have " + std::to_string(dataset_vocab));
  }
}

std::unique_ptr<TokenStore> open_token_store(const std::vector<std::string>& shards, Objective objective, int64_t eos,
                                             const std::string& label, bool streamed) {
  if (streamed) return std::make_unique<StreamedTokenStore>(shards, objective, eos, label);
  return std::make_unique<InMemoryTokenStore>(shards, objective, eos, label);
}

}  // namespace moetrain::data

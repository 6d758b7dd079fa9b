// Token shards: the HDF5 files `moetrain tokenize` writes and BatchSource reads.
//
// A documents shard (pretraining text) holds
//   tokens       int32 [N]           every document's tokens, back to back
//   doc_offsets  int64 [n_docs + 1]  document d is tokens[doc_offsets[d], doc_offsets[d+1])
// A pairs shard (seq2seq fine-tuning) holds the same twice:
//   source_tokens, source_offsets, target_tokens, target_offsets
// (pair p is source p -> target p; both offset arrays have n_pairs + 1 entries).
// File attributes: kind ("documents" | "pairs"), vocab_size, format_version.
// Documents carry no EOS/BOS: the objectives add them. Token arrays may be
// compressed (HDF5 shuffle + deflate in 16 KiB chunks, ShardWriteOptions);
// offset arrays never are (streamed readers binary-search them on disk).
//
// Invariants, checked on every write and every read: offsets start at 0, never
// decrease, end at the length of their token array; every id is in
// [0, vocab_size). A shard that breaks one throws TokenShardError naming the
// file and what is wrong. Writes go through a temporary file and a rename.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <stdexcept>
#include <string>

namespace moetrain::data {

constexpr int64_t kTokenShardFormatVersion = 1;

class TokenShardError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

enum class ShardKind { Documents, Pairs };

// One array of variable-length sequences: tokens int32 [N], offsets int64 [n + 1].
struct TokenSequences {
  torch::Tensor tokens;
  torch::Tensor offsets;

  int64_t size() const { return offsets.defined() ? offsets.numel() - 1 : 0; }
  int64_t num_tokens() const { return tokens.defined() ? tokens.numel() : 0; }
};

struct DocumentShard {
  TokenSequences documents;
  int64_t vocab_size = 0;
};

struct PairShard {
  TokenSequences source;
  TokenSequences target;  // target.size() == source.size()
  int64_t vocab_size = 0;
};

// Builds TokenSequences from flat vectors (copies them into tensors).
TokenSequences make_token_sequences(const std::vector<int32_t>& tokens, const std::vector<int64_t>& offsets);

struct ShardWriteOptions {
  int deflate_level = 0;  // 0: uncompressed token arrays; 1..9: zlib level
};

void write_document_shard(const std::string& path, const DocumentShard& shard, const ShardWriteOptions& options = {});
void write_pair_shard(const std::string& path, const PairShard& shard, const ShardWriteOptions& options = {});

// Which kind a shard holds (reads only the attributes).
ShardKind read_shard_kind(const std::string& path);
DocumentShard read_document_shard(const std::string& path);
PairShard read_pair_shard(const std::string& path);

}  // namespace moetrain::data

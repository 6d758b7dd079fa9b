// StreamedTokenStore: a TokenStore that reads a sample's tokens from the
// shards when it is asked for, keeping only a small index in memory: per
// shard its kind's arrays (where their bytes lie in the file, see
// raw_array.h) and where the shard begins in the dataset (stream position
// or pair number). Opening a dataset reads each shard's HDF5 metadata, not
// its tokens; memory does not grow with the corpus.
//
// A window of the document stream is found by binary search over the
// shard's doc_offsets on disk (document d starts at stream position
// doc_offsets[d] + d, each earlier document having added one EOS), then
// read as one range of offsets and one range of tokens. A pair is two
// offsets and one token range per side. The ids and offsets a read touches
// are checked (ids in the vocabulary, offsets in order and in range): a
// shard damaged after start-up fails with one line naming it.
//
// Up to kOpenFiles shard files stay open (least recently opened closed
// first); reads are thread-safe.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "data/raw_array.h"
#include "data/token_store.h"

namespace moetrain::data {

class StreamedTokenStore : public TokenStore {
 public:
  static constexpr size_t kOpenFiles = 64;

  // Reads every shard's metadata; throws naming the shard (missing,
  // truncated, compressed, of the wrong kind, another vocab size).
  StreamedTokenStore(const std::vector<std::string>& shards, Objective objective, int64_t eos,
                     const std::string& label);

  int64_t vocab_size() const override { return vocab_size_; }
  int64_t stream_length() const override { return stream_length_; }
  std::vector<int64_t> stream(int64_t begin, int64_t end) const override;
  int64_t num_pairs() const override { return num_pairs_; }
  std::vector<int64_t> pair_side(int64_t pair, bool target, int64_t max_tokens) const override;

 private:
  struct Shard {
    std::string path;
    // Documents: tokens, doc_offsets; pairs: source_tokens, source_offsets,
    // target_tokens, target_offsets.
    std::vector<RawArray> arrays;
    int64_t begin = 0;   // first stream position (documents) or pair number (pairs)
    int64_t length = 0;  // stream positions (tokens + documents) or pairs
  };

  void open_shard(const std::string& path, Objective objective, const std::string& label);
  std::shared_ptr<ReadOnlyFile> file_of(size_t shard) const;
  size_t shard_at(int64_t position) const;  // the shard holding stream position / pair number
  // Appends stream positions [a, b) of shard `s` (local positions) to `out`.
  void read_shard_stream(size_t s, int64_t a, int64_t b, std::vector<int64_t>& out) const;
  // The last document d of shard `s` with doc_offsets[d] + d <= position.
  int64_t document_at(const Shard& shard, const ReadOnlyFile& file, int64_t position) const;
  void check_ids(const Shard& shard, const std::vector<int32_t>& ids, int64_t first) const;

  int64_t eos_ = 0;
  int64_t vocab_size_ = 0;
  int64_t stream_length_ = 0;
  int64_t num_pairs_ = 0;
  std::vector<Shard> shards_;

  mutable std::mutex files_mutex_;
  mutable std::vector<std::shared_ptr<ReadOnlyFile>> files_;  // per shard, null when closed
  mutable std::deque<size_t> open_order_;
};

}  // namespace moetrain::data

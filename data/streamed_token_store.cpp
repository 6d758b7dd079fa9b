#include "data/streamed_token_store.h"

#include <algorithm>
#include <stdexcept>

#include "data/hdf5_file.h"

namespace moetrain::data {
namespace {

[[noreturn]] void shard_fail(const std::string& path, const std::string& what) {
  throw TokenShardError("token shard " + path + ": " + what);
}

// Offsets read from disk: in order and within the tokens.
void check_offsets(const std::string& path, const std::string& name, const std::vector<int64_t>& offsets, int64_t first,
                   int64_t num_tokens) {
  for (size_t i = 0; i < offsets.size(); ++i) {
    const bool ordered = i == 0 || offsets[i] >= offsets[i - 1];
    if (!ordered || offsets[i] < 0 || offsets[i] > num_tokens) {
      shard_fail(path, name + "[" + std::to_string(first + static_cast<int64_t>(i)) +
                           "] = " + std::to_string(offsets[i]) + " is out of order or outside the " +
                           std::to_string(num_tokens) + " tokens (the file is damaged)");
    }
  }
}

}  // namespace

StreamedTokenStore::StreamedTokenStore(const std::vector<std::string>& shards, Objective objective, int64_t eos,
                                       const std::string& label)
    : eos_(eos) {
  for (const auto& path : shards) open_shard(path, objective, label);
  files_.resize(shards_.size());
}

void StreamedTokenStore::open_shard(const std::string& path, Objective objective, const std::string& label) {
  const ShardKind kind = read_shard_kind(path);
  check_shard_kind(path, kind, objective);
  check_same_vocab(vocab_size_, path, Hdf5File(path, Hdf5File::Mode::Read).attr_int("/", "vocab_size"), label);
  Shard shard;
  shard.path = path;
  const bool docs = kind == ShardKind::Documents;
  shard.arrays =
      docs ? read_raw_arrays(path, {{"tokens", 4}, {"doc_offsets", 8}})
           : read_raw_arrays(
                 path, {{"source_tokens", 4}, {"source_offsets", 8}, {"target_tokens", 4}, {"target_offsets", 8}});
  // Each offsets array must run from 0 to its tokens' length.
  ReadOnlyFile file(path);
  for (size_t i = 0; i < shard.arrays.size(); i += 2) {
    const RawArray& tokens = shard.arrays[i];
    const RawArray& offsets = shard.arrays[i + 1];
    if (offsets.size() < 1) shard_fail(path, offsets.name() + " is empty (needs n + 1 entries)");
    const auto first = offsets.read<int64_t>(file, 0, 1);
    const auto last = offsets.read<int64_t>(file, offsets.size() - 1, 1);
    if (first[0] != 0 || last[0] != tokens.size()) {
      shard_fail(path, offsets.name() + " runs from " + std::to_string(first[0]) + " to " + std::to_string(last[0]) +
                           ", not from 0 to the " + std::to_string(tokens.size()) + " tokens");
    }
  }
  if (!docs && shard.arrays[1].size() != shard.arrays[3].size()) {
    shard_fail(path, "source_offsets and target_offsets differ in length");
  }
  const int64_t items = shard.arrays[1].size() - 1;  // documents or pairs
  shard.length = docs ? shard.arrays[0].size() + items : items;
  shard.begin = docs ? stream_length_ : num_pairs_;
  (docs ? stream_length_ : num_pairs_) += shard.length;
  shards_.push_back(std::move(shard));
}

std::shared_ptr<ReadOnlyFile> StreamedTokenStore::file_of(size_t shard) const {
  std::lock_guard<std::mutex> lock(files_mutex_);
  if (!files_[shard]) {
    if (open_order_.size() >= kOpenFiles) {
      files_[open_order_.front()].reset();  // closed once its last reader is done
      open_order_.pop_front();
    }
    files_[shard] = std::make_shared<ReadOnlyFile>(shards_[shard].path);
    open_order_.push_back(shard);
  }
  return files_[shard];
}

size_t StreamedTokenStore::shard_at(int64_t position) const {
  auto it =
      std::upper_bound(shards_.begin(), shards_.end(), position, [](int64_t p, const Shard& s) { return p < s.begin; });
  size_t s = static_cast<size_t>(it - shards_.begin()) - 1;
  while (shards_[s].length == 0) ++s;  // empty shards share their begin with the next
  return s;
}

void StreamedTokenStore::check_ids(const Shard& shard, const std::vector<int32_t>& ids, int64_t first) const {
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= vocab_size_) {
      shard_fail(shard.path, "token " + std::to_string(first + static_cast<int64_t>(i)) + " = " +
                                 std::to_string(ids[i]) + " is outside the vocabulary [0, " +
                                 std::to_string(vocab_size_) + ") (the file is damaged)");
    }
  }
}

std::vector<int64_t> StreamedTokenStore::stream(int64_t begin, int64_t end) const {
  if (begin < 0 || end < begin || end > stream_length_) {
    throw std::out_of_range("stream range [" + std::to_string(begin) + ", " + std::to_string(end) + ") outside [0, " +
                            std::to_string(stream_length_) + ")");
  }
  std::vector<int64_t> out;
  out.reserve(static_cast<size_t>(end - begin));
  for (int64_t pos = begin; pos < end;) {
    const size_t s = shard_at(pos);
    const Shard& shard = shards_[s];
    const int64_t stop = std::min(end, shard.begin + shard.length);
    read_shard_stream(s, pos - shard.begin, stop - shard.begin, out);
    pos = stop;
  }
  return out;
}

int64_t StreamedTokenStore::document_at(const Shard& shard, const ReadOnlyFile& file, int64_t position) const {
  const RawArray& offsets = shard.arrays[1];
  int64_t lo = 0, hi = offsets.size() - 1;  // answer in [lo, hi): documents 0 .. n-1
  while (hi - lo > 1) {
    const int64_t mid = lo + (hi - lo) / 2;
    const int64_t start = offsets.read<int64_t>(file, mid, 1)[0] + mid;
    if (start <= position) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  return lo;
}

void StreamedTokenStore::read_shard_stream(size_t s, int64_t a, int64_t b, std::vector<int64_t>& out) const {
  const Shard& shard = shards_[s];
  const auto file = file_of(s);
  const RawArray& tokens = shard.arrays[0];
  const RawArray& offsets_array = shard.arrays[1];
  const int64_t d0 = document_at(shard, *file, a);
  const int64_t d1 = document_at(shard, *file, b - 1);
  const auto offsets = offsets_array.read<int64_t>(*file, d0, d1 - d0 + 2);
  check_offsets(shard.path, offsets_array.name(), offsets, d0, tokens.size());
  // Tokens [t_begin, t_end) cover every document token of positions [a, b).
  const auto start = [&](int64_t d) { return offsets[d - d0] + d; };
  const int64_t t_begin = std::min(offsets[0] + (a - start(d0)), offsets[1]);
  const int64_t t_end = std::min(offsets[d1 - d0] + (b - start(d1)), offsets[d1 - d0 + 1]);
  const auto ids = tokens.read<int32_t>(*file, t_begin, t_end - t_begin);
  check_ids(shard, ids, t_begin);
  for (int64_t d = d0; d <= d1; ++d) {
    const int64_t length = offsets[d - d0 + 1] - offsets[d - d0];
    const int64_t from = std::max(a, start(d)), to = std::min(b, start(d) + length + 1);
    for (int64_t p = from; p < to; ++p) {
      const int64_t within = p - start(d);
      out.push_back(within < length ? ids[static_cast<size_t>(offsets[d - d0] + within - t_begin)] : eos_);
    }
  }
}

std::vector<int64_t> StreamedTokenStore::pair_side(int64_t pair, bool target, int64_t max_tokens) const {
  if (pair < 0 || pair >= num_pairs_) throw std::out_of_range("pair " + std::to_string(pair) + " out of range");
  const size_t s = shard_at(pair);
  const Shard& shard = shards_[s];
  const auto file = file_of(s);
  const RawArray& tokens = shard.arrays[target ? 2 : 0];
  const RawArray& offsets_array = shard.arrays[target ? 3 : 1];
  const int64_t local = pair - shard.begin;
  const auto offsets = offsets_array.read<int64_t>(*file, local, 2);
  check_offsets(shard.path, offsets_array.name(), offsets, local, tokens.size());
  const int64_t n = std::min(offsets[1] - offsets[0], max_tokens);
  const auto ids = tokens.read<int32_t>(*file, offsets[0], n);
  check_ids(shard, ids, offsets[0]);
  return std::vector<int64_t>(ids.begin(), ids.end());
}

}  // namespace moetrain::data

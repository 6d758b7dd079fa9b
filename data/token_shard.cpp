// Token shards on Hdf5File, validated on both sides of the disk so a bad
// shard is caught where it is made or, if the file was damaged later, before
// any of it reaches a batch.
#include "data/token_shard.h"

#include <algorithm>
#include <filesystem>

#include "data/atomic_file.h"
#include "data/hdf5_file.h"

namespace moetrain::data {
namespace {

const char* kind_name(ShardKind kind) { return kind == ShardKind::Documents ? "documents" : "pairs"; }

[[noreturn]] void shard_fail(const std::string& path, const std::string& what) {
  throw TokenShardError("token shard " + path + ": " + what);
}

// Checks the invariants of one (tokens, offsets) pair; `name` is the tokens
// dataset, `offsets_name` the offsets dataset, as they appear in the file.
void validate(const std::string& path, const std::string& name, const std::string& offsets_name,
              const TokenSequences& seq, int64_t vocab_size) {
  const auto& t = seq.tokens;
  const auto& o = seq.offsets;
  if (!t.defined() || t.dim() != 1 || t.scalar_type() != torch::kInt32)
    shard_fail(path, name + " must be a 1-d int32 array");
  if (!o.defined() || o.dim() != 1 || o.scalar_type() != torch::kInt64)
    shard_fail(path, offsets_name + " must be a 1-d int64 array");
  if (o.numel() < 1) shard_fail(path, offsets_name + " is empty (needs n + 1 entries)");
  auto oc = o.contiguous();
  const int64_t* off = oc.data_ptr<int64_t>();
  const int64_t n = oc.numel();
  if (off[0] != 0) shard_fail(path, offsets_name + "[0] is " + std::to_string(off[0]) + ", not 0");
  for (int64_t i = 1; i < n; ++i)
    if (off[i] < off[i - 1])
      shard_fail(path, offsets_name + " decreases at index " + std::to_string(i) + " (" + std::to_string(off[i - 1]) +
                           " -> " + std::to_string(off[i]) + ")");
  if (off[n - 1] != t.numel())
    shard_fail(path, offsets_name + " ends at " + std::to_string(off[n - 1]) + " but " + name + " has " +
                         std::to_string(t.numel()) + " tokens");
  if (t.numel() > 0) {
    auto tc = t.contiguous();
    const int32_t* ids = tc.data_ptr<int32_t>();
    for (int64_t i = 0; i < tc.numel(); ++i)
      if (ids[i] < 0 || ids[i] >= vocab_size)
        shard_fail(path, name + "[" + std::to_string(i) + "] = " + std::to_string(ids[i]) +
                             " is outside the vocabulary [0, " + std::to_string(vocab_size) + ")");
  }
}

void validate_vocab(const std::string& path, int64_t vocab_size) {
  if (vocab_size <= 0 || vocab_size > (int64_t{1} << 31))
    shard_fail(path, "vocab_size " + std::to_string(vocab_size) + " is not a valid vocabulary size");
}

void write_sequences(Hdf5File& file, const std::string& tokens_name, const std::string& offsets_name,
                     const TokenSequences& seq, const ShardWriteOptions& options) {
  file.write_tensor(tokens_name, seq.tokens, DatasetLayout{options.deflate_level});
  file.write_tensor(offsets_name, seq.offsets);
}

// Writes through a temporary file so readers never see a partial shard.
template <typename WriteBody>
void write_shard(const std::string& path, ShardKind kind, int64_t vocab_size, WriteBody&& body) {
  const std::string tmp = temporary_path_for(path);
  try {
    {
      Hdf5File file(tmp, Hdf5File::Mode::Create);
      body(file);
      file.set_attr("/", "kind", std::string(kind_name(kind)));
      file.set_attr("/", "vocab_size", vocab_size);
      file.set_attr("/", "format_version", kTokenShardFormatVersion);
    }
    commit_temporary(tmp, path);
  } catch (...) {
    std::error_code ignored;
    std::filesystem::remove(tmp, ignored);
    throw;
  }
}

// Opens a shard and checks its attributes; throws TokenShardError.
Hdf5File open_shard(const std::string& path, ShardKind expected, int64_t* vocab_size) {
  if (!std::filesystem::exists(path)) shard_fail(path, "no such file");
  try {
    Hdf5File file(path, Hdf5File::Mode::Read);
    for (const char* key : {"kind", "vocab_size", "format_version"})
      if (!file.has_attr("/", key))
        shard_fail(path, std::string("missing file attribute '") + key + "' (not a token shard?)");
    int64_t version = file.attr_int("/", "format_version");
    if (version != kTokenShardFormatVersion)
      shard_fail(path, "format_version " + std::to_string(version) + " is not supported (expected " +
                           std::to_string(kTokenShardFormatVersion) + ")");
    std::string kind = file.attr_string("/", "kind");
    if (kind != kind_name(expected)) shard_fail(path, "holds '" + kind + "', expected '" + kind_name(expected) + "'");
    *vocab_size = file.attr_int("/", "vocab_size");
    validate_vocab(path, *vocab_size);
    return file;
  } catch (const Hdf5Error& e) {
    throw TokenShardError(e.what());  // names the file already
  }
}

TokenSequences read_sequences(const Hdf5File& file, const std::string& tokens_name, const std::string& offsets_name) {
  TokenSequences seq;
  try {
    seq.tokens = file.read_tensor(tokens_name);
    seq.offsets = file.read_tensor(offsets_name);
  } catch (const Hdf5Error& e) {
    throw TokenShardError(e.what());
  }
  return seq;
}

}  // namespace

TokenSequences make_token_sequences(const std::vector<int32_t>& tokens, const std::vector<int64_t>& offsets) {
  TokenSequences seq;
  seq.tokens = torch::empty({static_cast<int64_t>(tokens.size())}, torch::kInt32);
  seq.offsets = torch::empty({static_cast<int64_t>(offsets.size())}, torch::kInt64);
  std::copy(tokens.begin(), tokens.end(), seq.tokens.data_ptr<int32_t>());
  std::copy(offsets.begin(), offsets.end(), seq.offsets.data_ptr<int64_t>());
  return seq;
}

void write_document_shard(const std::string& path, const DocumentShard& shard, const ShardWriteOptions& options) {
  validate_vocab(path, shard.vocab_size);
  validate(path, "tokens", "doc_offsets", shard.documents, shard.vocab_size);
  write_shard(path, ShardKind::Documents, shard.vocab_size,
              [&](Hdf5File& file) { write_sequences(file, "tokens", "doc_offsets", shard.documents, options); });
}

void write_pair_shard(const std::string& path, const PairShard& shard, const ShardWriteOptions& options) {
  validate_vocab(path, shard.vocab_size);
  validate(path, "source_tokens", "source_offsets", shard.source, shard.vocab_size);
  validate(path, "target_tokens", "target_offsets", shard.target, shard.vocab_size);
  if (shard.source.size() != shard.target.size())
    shard_fail(
        path, std::to_string(shard.source.size()) + " sources but " + std::to_string(shard.target.size()) + " targets");
  write_shard(path, ShardKind::Pairs, shard.vocab_size, [&](Hdf5File& file) {
    write_sequences(file, "source_tokens", "source_offsets", shard.source, options);
    write_sequences(file, "target_tokens", "target_offsets", shard.target, options);
  });
}

ShardKind read_shard_kind(const std::string& path) {
  if (!std::filesystem::exists(path)) shard_fail(path, "no such file");
  try {
    Hdf5File file(path, Hdf5File::Mode::Read);
    if (!file.has_attr("/", "kind")) shard_fail(path, "missing file attribute 'kind' (not a token shard?)");
    std::string kind = file.attr_string("/", "kind");
    if (kind == "documents") return ShardKind::Documents;
    if (kind == "pairs") return ShardKind::Pairs;
    shard_fail(path, "unknown kind '" + kind + "'");
  } catch (const Hdf5Error& e) {
    throw TokenShardError(e.what());  // names the file already
  }
}

DocumentShard read_document_shard(const std::string& path) {
  DocumentShard shard;
  Hdf5File file = open_shard(path, ShardKind::Documents, &shard.vocab_size);
  shard.documents = read_sequences(file, "tokens", "doc_offsets");
  validate(path, "tokens", "doc_offsets", shard.documents, shard.vocab_size);
  return shard;
}

PairShard read_pair_shard(const std::string& path) {
  PairShard shard;
  Hdf5File file = open_shard(path, ShardKind::Pairs, &shard.vocab_size);
  shard.source = read_sequences(file, "source_tokens", "source_offsets");
  shard.target = read_sequences(file, "target_tokens", "target_offsets");
  validate(path, "source_tokens", "source_offsets", shard.source, shard.vocab_size);
  validate(path, "target_tokens", "target_offsets", shard.target, shard.vocab_size);
  if (shard.source.size() != shard.target.size())
    shard_fail(
        path, std::to_string(shard.source.size()) + " sources but " + std::to_string(shard.target.size()) + " targets");
  return shard;
}

}  // namespace moetrain::data

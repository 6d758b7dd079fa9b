// Token shards: round trips, and every kind of damage detected on read with
// a message naming the file and the problem.
#include "data/token_shard.h"

#include <gtest/gtest.h>

#include "data/hdf5_file.h"
#include "tests/unit/data/data_test_support.h"

namespace moetrain::data {
namespace {

using test_support::TempDir;

DocumentShard sample_documents() {
  DocumentShard shard;
  shard.documents = make_token_sequences({5, 6, 7, 8, 9, 10, 11, 999}, {0, 3, 3, 8});  // doc 1 empty
  shard.vocab_size = 1000;
  return shard;
}

TEST(TokenShard, DocumentsRoundTrip) {
  TempDir dir;
  const std::string path = dir.file("train-00000.h5");
  write_document_shard(path, sample_documents());
  EXPECT_EQ(read_shard_kind(path), ShardKind::Documents);
  DocumentShard back = read_document_shard(path);
  EXPECT_EQ(back.vocab_size, 1000);
  EXPECT_EQ(back.documents.size(), 3);
  EXPECT_EQ(back.documents.num_tokens(), 8);
  EXPECT_TRUE(torch::equal(back.documents.tokens, sample_documents().documents.tokens));
  EXPECT_TRUE(torch::equal(back.documents.offsets, sample_documents().documents.offsets));
  EXPECT_EQ(back.documents.tokens.scalar_type(), torch::kInt32);
  // The file is self-describing: attributes as documented.
  Hdf5File f(path, Hdf5File::Mode::Read);
  EXPECT_EQ(f.attr_string("/", "kind"), "documents");
  EXPECT_EQ(f.attr_int("/", "vocab_size"), 1000);
  EXPECT_EQ(f.attr_int("/", "format_version"), kTokenShardFormatVersion);
  EXPECT_EQ(f.list("/"), (std::vector<std::string>{"doc_offsets", "tokens"}));
}

TEST(TokenShard, PairsRoundTrip) {
  TempDir dir;
  PairShard shard;
  shard.source = make_token_sequences({10, 11, 12, 13}, {0, 1, 4});
  shard.target = make_token_sequences({20, 21, 22}, {0, 2, 3});
  shard.vocab_size = 64;
  const std::string path = dir.file("p.h5");
  write_pair_shard(path, shard);
  EXPECT_EQ(read_shard_kind(path), ShardKind::Pairs);
  PairShard back = read_pair_shard(path);
  EXPECT_EQ(back.source.size(), 2);
  EXPECT_TRUE(torch::equal(back.source.tokens, shard.source.tokens));
  EXPECT_TRUE(torch::equal(back.target.offsets, shard.target.offsets));
  EXPECT_EQ(back.vocab_size, 64);
  // The kinds are not interchangeable.
  EXPECT_THROW(read_document_shard(path), TokenShardError);
  write_document_shard(dir.file("d.h5"), sample_documents());
  EXPECT_THROW(read_pair_shard(dir.file("d.h5")), TokenShardError);
}

TEST(TokenShard, EmptyShardIsValid) {
  TempDir dir;
  DocumentShard shard;
  shard.documents = make_token_sequences({}, {0});
  shard.vocab_size = 10;
  write_document_shard(dir.file("e.h5"), shard);
  EXPECT_EQ(read_document_shard(dir.file("e.h5")).documents.size(), 0);
}

TEST(TokenShard, WriterRejectsInvalidShards) {
  TempDir dir;
  DocumentShard bad = sample_documents();
  bad.documents = make_token_sequences({1, 2, 3}, {0, 2});  // ends at 2, 3 tokens
  EXPECT_THROW(write_document_shard(dir.file("x.h5"), bad), TokenShardError);
  bad.documents = make_token_sequences({1, 2, 3000}, {0, 3});
  EXPECT_THROW(write_document_shard(dir.file("x.h5"), bad), TokenShardError);
  EXPECT_FALSE(std::filesystem::exists(dir.file("x.h5")));
  PairShard pairs;
  pairs.source = make_token_sequences({1}, {0, 1});
  pairs.target = make_token_sequences({1, 2}, {0, 1, 2});  // 2 targets for 1 source
  pairs.vocab_size = 10;
  EXPECT_THROW(write_pair_shard(dir.file("y.h5"), pairs), TokenShardError);
}

// Writes a documents shard by hand, bypassing the writer's checks.
void write_raw_shard(const std::string& path, const torch::Tensor& tokens, const torch::Tensor& offsets,
                     int64_t vocab = 100, const std::string& kind = "documents", int64_t version = 1) {
  Hdf5File f(path, Hdf5File::Mode::Create);
  f.write_tensor("tokens", tokens);
  f.write_tensor("doc_offsets", offsets);
  f.set_attr("/", "kind", kind);
  f.set_attr("/", "vocab_size", vocab);
  f.set_attr("/", "format_version", version);
}

void expect_shard_error(const std::string& path, const std::string& fragment) {
  try {
    read_document_shard(path);
    ADD_FAILURE() << "read a corrupt shard: expected '" << fragment << "'";
  } catch (const TokenShardError& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
    EXPECT_NE(msg.find(fragment), std::string::npos) << msg;
  }
}

TEST(TokenShard, CorruptShardsAreDetected) {
  TempDir dir;
  const std::string p = dir.file("bad.h5");
  auto tokens = torch::tensor({1, 2, 3, 4}, torch::kInt32);

  write_raw_shard(p, tokens, torch::tensor({1, 4}, torch::kInt64));
  expect_shard_error(p, "doc_offsets[0] is 1");
  write_raw_shard(p, tokens, torch::tensor({0, 3, 2, 4}, torch::kInt64));
  expect_shard_error(p, "decreases at index 2");
  write_raw_shard(p, tokens, torch::tensor({0, 2, 5}, torch::kInt64));
  expect_shard_error(p, "ends at 5");
  write_raw_shard(p, tokens, torch::tensor({0, 2, 3}, torch::kInt64));
  expect_shard_error(p, "ends at 3");
  write_raw_shard(p, torch::tensor({1, 2, 100, 4}, torch::kInt32), torch::tensor({0, 4}, torch::kInt64));
  expect_shard_error(p, "tokens[2] = 100 is outside the vocabulary");
  write_raw_shard(p, torch::tensor({-5, 2}, torch::kInt32), torch::tensor({0, 2}, torch::kInt64));
  expect_shard_error(p, "tokens[0] = -5");
  write_raw_shard(p, tokens.to(torch::kInt64), torch::tensor({0, 4}, torch::kInt64));
  expect_shard_error(p, "int32");
  write_raw_shard(p, tokens, torch::tensor({0, 4}, torch::kInt64), 100, "documents", 2);
  expect_shard_error(p, "format_version 2");
  write_raw_shard(p, tokens, torch::tensor({0, 4}, torch::kInt64), 100, "novels");
  expect_shard_error(p, "'novels'");
  write_raw_shard(p, tokens, torch::tensor({0, 4}, torch::kInt64), 0);
  expect_shard_error(p, "vocab_size 0");
  {
    Hdf5File f(p, Hdf5File::Mode::Create);
    f.write_tensor("tokens", tokens);
  }
  expect_shard_error(p, "missing file attribute");
  {
    Hdf5File f(p, Hdf5File::Mode::Create);
    f.write_tensor("tokens", tokens);
    f.set_attr("/", "kind", std::string("documents"));
    f.set_attr("/", "vocab_size", int64_t{100});
    f.set_attr("/", "format_version", int64_t{1});
  }
  expect_shard_error(p, "doc_offsets");  // dataset missing
  expect_shard_error(dir.file("absent.h5"), "no such file");
}

TEST(TokenShard, TruncatedShardIsAnError) {
  TempDir dir;
  DocumentShard shard;
  std::vector<int32_t> tokens(500000);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<int32_t>(i % 1000);
  shard.documents = make_token_sequences(tokens, {0, 250000, 500000});
  shard.vocab_size = 1000;
  const std::string full = dir.file("full.h5");
  write_document_shard(full, shard);
  const std::string bytes = test_support::read_file(full);
  const std::string cut = dir.file("cut.h5");
  for (double fraction : {0.05, 0.5, 0.99}) {
    test_support::write_file(cut, bytes.substr(0, static_cast<size_t>(bytes.size() * fraction)));
    EXPECT_THROW(read_document_shard(cut), TokenShardError) << fraction;
  }
  test_support::write_file(cut, "garbage, not HDF5");
  expect_shard_error(cut, "not an HDF5 file");
}

}  // namespace
}  // namespace moetrain::data

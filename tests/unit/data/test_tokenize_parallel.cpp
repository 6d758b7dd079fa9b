// Parallel and resumable tokenization: the shard plan, threads giving the
// same shards as one thread, resuming an interrupted output folder, the
// checksum and the progress reports.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <sstream>

#include "data/token_shard.h"
#include "data/tokenize.h"
#include "data/tokenize_plan.h"
#include "data/tokenize_state.h"
#include "tests/unit/data/data_test_support.h"

namespace moetrain::data {
namespace {

using test_support::TempDir;

// `n` Brown documents (their first paragraphs) as JSONL, plus one record
// that encodes to nothing.
void write_brown_documents(const std::string& path, size_t n) {
  std::ofstream out(path);
  size_t i = 0;
  for (const auto& doc : test_support::read_jsonl_field("brown.jsonl", "text", n)) {
    if (i == n / 2) out << nlohmann::json{{"text", " \n "}}.dump() << "\n";
    out << nlohmann::json{{"text", doc.substr(0, doc.find("\n\n", 400))}}.dump() << "\n";
    ++i;
  }
}

// Options tokenizing `docs` Brown documents (written into `dir`) into `out`
// with a trained 700-piece vocabulary.
TokenizeOptions brown_options(const TempDir& dir, size_t docs, const std::string& out, int64_t docs_per_shard) {
  write_brown_documents(dir.file("brown.jsonl"), docs);
  TokenizeOptions options;
  options.inputs = {dir.file("brown.jsonl")};
  options.output_dir = dir.file(out);
  options.vocab_size = 700;
  options.docs_per_shard = docs_per_shard;
  return options;
}

nlohmann::json read_json(const std::string& path) { return nlohmann::json::parse(test_support::read_file(path)); }

// dataset.json without what may differ between runs: the `run` object, and
// the shard checksums (HDF5 stamps each dataset with the second it was
// written, so equal shards written at different times differ in those bytes;
// the scripts in tests/e2e and tests/multirank compare the files with cmp).
nlohmann::json stable_manifest(const std::string& dir) {
  nlohmann::json j = read_json(dir + "/dataset.json");
  j.erase("run");
  for (auto& [name, split] : j["splits"].items())
    for (auto& shard : split["shard_info"]) shard.erase("fnv1a64");
  return j;
}

// Every shard of two output folders holds the same sequences.
void expect_same_shards(const std::string& a, const std::string& b, const TokenizeSummary& summary, bool pairs) {
  for (const auto* split : {&summary.train, &summary.valid}) {
    for (const auto& name : split->shards) {
      SCOPED_TRACE(name);
      if (pairs) {
        const PairShard x = read_pair_shard(a + "/" + name), y = read_pair_shard(b + "/" + name);
        EXPECT_TRUE(torch::equal(x.source.tokens, y.source.tokens) && torch::equal(x.source.offsets, y.source.offsets));
        EXPECT_TRUE(torch::equal(x.target.tokens, y.target.tokens) && torch::equal(x.target.offsets, y.target.offsets));
      } else {
        const DocumentShard x = read_document_shard(a + "/" + name), y = read_document_shard(b + "/" + name);
        EXPECT_TRUE(torch::equal(x.documents.tokens, y.documents.tokens));
        EXPECT_TRUE(torch::equal(x.documents.offsets, y.documents.offsets));
      }
    }
  }
}

ino_t inode_of(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
  return st.st_ino;
}

TEST(TokenizePlan, ShardsFollowTheRecordSequence) {
  InputCounts counts;
  counts.records = 23;
  counts.valid_input_records = 4;
  const ShardPlan plan(counts, 0.2, 7, 4, 3);
  // round(23 * 0.2) = 5 valid input records: train 18 (4 4 4 4 2), valid 5 + 4 = 9 (4 4 1).
  EXPECT_EQ(plan.train_records(), 18);
  EXPECT_EQ(plan.valid_records(), 9);
  std::vector<std::string> names;
  std::vector<int64_t> sizes;
  std::vector<int> owners;
  for (const auto& s : plan.shards()) {
    names.push_back(s.name);
    sizes.push_back(s.records);
    owners.push_back(s.owner);
  }
  EXPECT_EQ(names, (std::vector<std::string>{"train-00000.h5", "train-00001.h5", "train-00002.h5", "train-00003.h5",
                                             "train-00004.h5", "valid-00000.h5", "valid-00001.h5", "valid-00002.h5"}));
  EXPECT_EQ(sizes, (std::vector<int64_t>{4, 4, 4, 4, 2, 4, 4, 1}));
  EXPECT_EQ(owners, (std::vector<int>{0, 1, 2, 0, 1, 2, 0, 1}));

  // The router sends the train records, in order, four to a shard, and the
  // valid ones (chosen, then the valid_inputs' records) to the valid shards.
  RecordRouter router(plan);
  int64_t train = 0, valid = 0;
  for (int64_t i = 0; i < counts.records; ++i) {
    const int64_t g = router.next(false, "in.jsonl");
    if (plan.is_valid_input(i))
      EXPECT_EQ(g, 5 + valid++ / 4) << i;
    else
      EXPECT_EQ(g, train++ / 4) << i;
  }
  for (int64_t i = 0; i < counts.valid_input_records; ++i) EXPECT_EQ(router.next(true, "held.jsonl"), 5 + valid++ / 4);
  router.check_complete();
  EXPECT_THROW(router.next(true, "held.jsonl"), std::runtime_error);

  // The same records in the same shards for any number of ranks.
  const ShardPlan one(counts, 0.2, 7, 4, 1);
  ASSERT_EQ(one.shards().size(), plan.shards().size());
  for (size_t g = 0; g < plan.shards().size(); ++g) {
    EXPECT_EQ(one.shards()[g].first, plan.shards()[g].first);
    EXPECT_EQ(one.shards()[g].records, plan.shards()[g].records);
    EXPECT_EQ(one.shards()[g].owner, 0);
  }
  RecordRouter short_stream(plan);
  short_stream.next(false, "in.jsonl");
  EXPECT_THROW(short_stream.check_complete(), std::runtime_error);
}

TEST(TokenizeState, ChecksumIsFnv1a64) {
  EXPECT_EQ(fnv1a64(""), 0xcbf29ce484222325ULL);
  EXPECT_EQ(fnv1a64("a"), 0xaf63dc4c8601ec8cULL);
  EXPECT_EQ(checksum_hex(0xaf63dc4c8601ec8cULL), "af63dc4c8601ec8c");
  TempDir dir;
  std::string bytes(3 << 20, 'x');  // over one read buffer
  bytes[12345] = '\0';
  test_support::write_file(dir.file("f"), bytes);
  EXPECT_EQ(fnv1a64_file(dir.file("f")), fnv1a64(bytes));
}

class TokenizeParallelTest : public ::testing::Test {
 protected:
  void SetUp() override { MOETRAIN_REQUIRE_SHARED("brown.jsonl"); }
};

TEST_F(TokenizeParallelTest, ThreadsGiveTheSameShards) {
  TempDir dir;
  test_support::write_file(dir.file("held.txt"), "A held-out document.\n\nAnother one, held out too.\n");
  TokenizeOptions options = brown_options(dir, 80, "one", 7);
  options.valid_inputs = {dir.file("held.txt")};
  options.valid_fraction = 0.1;
  const TokenizeSummary one = tokenize_corpus(options);
  EXPECT_EQ(one.input_records, 83);
  EXPECT_EQ(one.skipped_empty, 1);
  EXPECT_EQ(one.train.records + one.valid.records, 82);
  EXPECT_EQ(one.valid.records, 8 + 2);      // round(81 * 0.1), then held.txt
  EXPECT_EQ(one.train.shards.size(), 11u);  // 73 train positions
  EXPECT_EQ(one.shards_written, 13);

  options.threads = 3;
  options.output_dir = dir.file("three");
  // Progress: first the totals with nothing done, counts that only grow,
  // and last every shard and record done.
  std::vector<TokenizeProgress> reports;
  options.progress = [&reports](const TokenizeProgress& p) { reports.push_back(p); };
  const TokenizeSummary three = tokenize_corpus(options);
  EXPECT_EQ(three.threads, 3);
  ASSERT_GE(reports.size(), 2u);
  EXPECT_EQ(reports.front().records_done, 0);
  EXPECT_EQ(reports.front().shards, 13);
  EXPECT_EQ(reports.front().records, 83);  // every record read, the empty one too
  for (size_t i = 1; i < reports.size(); ++i) {
    EXPECT_GE(reports[i].records_done, reports[i - 1].records_done);
    EXPECT_GE(reports[i].text_bytes, reports[i - 1].text_bytes);
  }
  EXPECT_EQ(reports.back().shards_done, 13);
  EXPECT_EQ(reports.back().records_done, 83);
  EXPECT_GT(reports.back().text_bytes, 10000);
  EXPECT_EQ(test_support::read_file(dir.file("one/tokenizer.model")),
            test_support::read_file(dir.file("three/tokenizer.model")));
  EXPECT_EQ(three.train.shards, one.train.shards);
  EXPECT_EQ(three.valid.shards, one.valid.shards);
  expect_same_shards(dir.file("one"), dir.file("three"), one, false);
  EXPECT_EQ(stable_manifest(dir.file("one")), stable_manifest(dir.file("three")));

  // Every shard's checksum in dataset.json is its file's.
  const auto manifest = read_json(dir.file("three/dataset.json"));
  EXPECT_EQ(manifest["checksum"], "fnv1a64");
  for (const auto& shard : manifest["splits"]["train"]["shard_info"])
    EXPECT_EQ(shard["fnv1a64"], checksum_hex(fnv1a64_file(dir.file("three/") + shard["name"].get<std::string>())));
  EXPECT_EQ(manifest["run"]["threads"], 3);
}

// --compression-level: the same sequences in smaller files, byte-identical
// for any number of threads.
TEST_F(TokenizeParallelTest, CompressedShardsHoldTheSameTokens) {
  TempDir dir;
  TokenizeOptions options = brown_options(dir, 80, "plain", 40);
  const TokenizeSummary plain = tokenize_corpus(options);
  options.tokenizer_model = dir.file("plain/tokenizer.model");
  options.deflate_level = 6;
  options.output_dir = dir.file("deflate-1thread");
  const TokenizeSummary one = tokenize_corpus(options);
  options.threads = 3;
  options.output_dir = dir.file("deflate-3threads");
  tokenize_corpus(options);
  ASSERT_EQ(one.train.shards, plain.train.shards);
  expect_same_shards(dir.file("plain"), dir.file("deflate-1thread"), plain, false);
  uintmax_t plain_bytes = 0, deflated_bytes = 0;
  for (const auto& name : one.train.shards) {
    plain_bytes += std::filesystem::file_size(dir.file("plain/" + name));
    deflated_bytes += std::filesystem::file_size(dir.file("deflate-1thread/" + name));
    EXPECT_EQ(test_support::read_file(dir.file("deflate-1thread/" + name)),
              test_support::read_file(dir.file("deflate-3threads/" + name)))
        << name;
  }
  EXPECT_LT(deflated_bytes * 10, plain_bytes * 7) << deflated_bytes << " vs " << plain_bytes;
  EXPECT_EQ(read_json(dir.file("deflate-1thread/dataset.json"))["deflate_level"], 6);
}

TEST_F(TokenizeParallelTest, PairsWithThreads) {
  MOETRAIN_REQUIRE_SHARED("cmudict/dict.txt");
  TempDir dir;
  std::ifstream dict(std::filesystem::path(test_support::shared_data_dir()) / "cmudict/dict.txt");
  std::ofstream out(dir.file("g2p.jsonl"));
  std::string line;
  for (int n = 0; n < 700 && std::getline(dict, line);) {
    const auto sep = line.find("  ");
    if (sep == std::string::npos || line[0] < 'A' || line[0] > 'Z') continue;
    out << nlohmann::json{{"word", line.substr(0, sep)}, {"phonemes", line.substr(sep + 2)}}.dump() << "\n";
    ++n;
  }
  out.close();
  TokenizeOptions options;
  options.inputs = {dir.file("g2p.jsonl")};
  options.source_field = "word";
  options.target_field = "phonemes";
  options.output_dir = dir.file("one");
  options.vocab_size = 400;
  options.valid_fraction = 0.05;
  options.docs_per_shard = 100;
  const TokenizeSummary one = tokenize_corpus(options);
  options.output_dir = dir.file("four");
  options.threads = 4;
  const TokenizeSummary four = tokenize_corpus(options);
  EXPECT_EQ(four.train.shards.size(), 7u);
  EXPECT_EQ(four.train.source_tokens, one.train.source_tokens);
  EXPECT_EQ(four.train.target_tokens, one.train.target_tokens);
  expect_same_shards(dir.file("one"), dir.file("four"), one, true);
  EXPECT_EQ(stable_manifest(dir.file("one")), stable_manifest(dir.file("four")));
}

TEST_F(TokenizeParallelTest, RerunSkipsFinishedShardsAndRedoesTheRest) {
  TempDir dir;
  TokenizeOptions options = brown_options(dir, 60, "out", 10);
  options.threads = 2;
  const TokenizeSummary first = tokenize_corpus(options);
  ASSERT_EQ(first.train.shards.size(), 7u);  // 61 records
  const std::string out = dir.file("out") + "/";
  TokenizeOptions reference = options;
  reference.output_dir = dir.file("reference");
  tokenize_corpus(reference);

  // What a killed run leaves: a shard never written, a shard whose file is
  // damaged, a temporary file, no dataset.json.
  std::filesystem::remove(out + "train-00002.h5");
  test_support::write_file(out + "train-00004.h5", "not a shard");
  test_support::write_file(out + "train-00005.h5.tmp-99999-0", "partial");
  std::filesystem::remove(out + "dataset.json");
  const ino_t kept = inode_of(out + "train-00000.h5");

  options.threads = 1;
  const TokenizeSummary again = tokenize_corpus(options);
  EXPECT_EQ(again.shards_skipped, 5);
  EXPECT_EQ(again.shards_written, 2);
  EXPECT_TRUE(again.reused_tokenizer);
  EXPECT_TRUE(again.trained_tokenizer);
  EXPECT_EQ(again.training_sentences, first.training_sentences);
  EXPECT_EQ(inode_of(out + "train-00000.h5"), kept);  // not rewritten
  EXPECT_FALSE(std::filesystem::exists(out + "train-00005.h5.tmp-99999-0"));
  expect_same_shards(dir.file("out"), dir.file("reference"), first, false);
  EXPECT_EQ(stable_manifest(dir.file("out")), stable_manifest(dir.file("reference")));

  // Other options start over: nothing skipped, the old shards beyond the
  // new ones (and their markers) gone.
  options.docs_per_shard = 25;
  const TokenizeSummary bigger = tokenize_corpus(options);
  EXPECT_EQ(bigger.shards_skipped, 0);
  EXPECT_FALSE(bigger.reused_tokenizer);
  EXPECT_EQ(bigger.train.shards.size(), 3u);
  EXPECT_FALSE(std::filesystem::exists(out + "train-00003.h5"));
  EXPECT_FALSE(std::filesystem::exists(out + ".tokenize/train-00003.h5.json"));
  // So does a changed input.
  EXPECT_EQ(tokenize_corpus(options).shards_skipped, 3);
  std::ofstream(dir.file("brown.jsonl"), std::ios::app)
      << nlohmann::json{{"text", "One more document."}}.dump() << "\n";
  const TokenizeSummary changed = tokenize_corpus(options);
  EXPECT_EQ(changed.shards_skipped, 0);
  EXPECT_EQ(changed.input_records, 62);
}

}  // namespace
}  // namespace moetrain::data

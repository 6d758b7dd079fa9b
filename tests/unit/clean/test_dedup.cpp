// Near-duplicate acceptance: documents built from real Brown paragraphs with
// exact copies, near copies (a few percent of words changed, shingle Jaccard
// >= 0.8) and unrelated documents, run through the pipeline's dedup stage:
// every exact pair and >= 95% of near pairs lose one member, <= 1% of
// unrelated documents are removed. Plus the union-find contract.
#include <gtest/gtest.h>

#include <random>
#include <set>
#include <sstream>

#include "clean_test_support.h"
#include "data/clean/dedup.h"
#include "data/clean/normalize.h"
#include "data/clean/pipeline.h"

namespace moetrain::data::clean {
namespace {

TEST(clean_Dedup, UnionFindKeepsTheSmallestMemberOfEachCluster) {
  std::vector<BandEntry> entries = {{7, 30, 0},          {7, 10, 0},          {9, 30, 1}, {9, 20, 1},
                                    {5, 40, kExactBand}, {5, 50, kExactBand}, {8, 60, 2}};
  const auto edges = edges_from_entries(entries);
  const auto removed = resolve_duplicates(edges);
  ASSERT_EQ(removed.size(), 3u);
  EXPECT_EQ(removed.at(20).kept, 10u);  // 20 - 30 - 10: one cluster
  EXPECT_EQ(removed.at(30).kept, 10u);
  EXPECT_FALSE(removed.at(30).exact);
  EXPECT_EQ(removed.at(50).kept, 40u);
  EXPECT_TRUE(removed.at(50).exact);
  EXPECT_EQ(removed.count(60), 0u);
}

TEST(clean_Dedup, CjkTextIsShingledByCharacters) {
  const std::string a = "床前明月光疑是地上霜举头望明月低头思故乡", b = "床前明月光疑是地上霜举头望明月低头思故里";
  EXPECT_GT(shingle_hashes(a, 5, 5).size(), 10u);
  EXPECT_GT(jaccard(shingle_hashes(a, 5, 5), shingle_hashes(b, 5, 5)), 0.7);
}

std::string change_words(const std::string& text, double fraction, std::mt19937_64& rng) {
  std::istringstream in(text);
  std::vector<std::string> words;
  std::string w;
  while (in >> w) words.push_back(w);
  const size_t n = std::max<size_t>(1, static_cast<size_t>(fraction * words.size()));
  for (size_t k = 0; k < n; ++k) words[rng() % words.size()] = "zq" + std::to_string(rng() % 100000);
  std::string out;
  for (const auto& x : words) out += (out.empty() ? "" : " ") + x;
  return out;
}

TEST(clean_Dedup, AcceptanceOnRealParagraphs) {
  CLEAN_NEED_SHARED("brown.jsonl");
  // Documents of three consecutive long paragraphs each.
  const auto paragraphs = test::brown_paragraphs(40, 3000);
  std::vector<std::string> base;
  for (size_t i = 0; i + 3 <= paragraphs.size(); i += 3)
    base.push_back(paragraphs[i] + "\n\n" + paragraphs[i + 1] + "\n\n" + paragraphs[i + 2]);
  ASSERT_GE(base.size(), 700u);
  std::mt19937_64 rng(7);
  std::vector<nlohmann::json> docs;
  std::vector<std::pair<std::string, std::string>> exact_pairs, near_pairs;
  std::vector<std::string> unrelated;
  MinHashParams params;
  size_t b = 0;
  auto add = [&](const std::string& id, const std::string& text) { docs.push_back({{"id", id}, {"text", text}}); };
  for (; b < 100; ++b) {  // exact copies
    add("e" + std::to_string(b) + "a", base[b]);
    add("e" + std::to_string(b) + "b", base[b]);
    exact_pairs.push_back({"e" + std::to_string(b) + "a", "e" + std::to_string(b) + "b"});
  }
  for (; b < 350; ++b) {  // near copies, 1-2% of the words changed
    const std::string copy = change_words(base[b], 0.01 + 0.005 * (b % 3), rng);
    const double j = jaccard(shingle_hashes(normalize_text(base[b]), 5, 5), shingle_hashes(normalize_text(copy), 5, 5));
    if (j < 0.8) continue;
    add("n" + std::to_string(b) + "a", base[b]);
    add("n" + std::to_string(b) + "b", copy);
    near_pairs.push_back({"n" + std::to_string(b) + "a", "n" + std::to_string(b) + "b"});
  }
  for (; b < base.size(); ++b) {
    add("u" + std::to_string(b), base[b]);
    unrelated.push_back("u" + std::to_string(b));
  }
  ASSERT_GE(near_pairs.size(), 150u);
  ASSERT_GE(unrelated.size(), 300u);
  std::shuffle(docs.begin(), docs.end(), rng);
  test::TempDir dir;
  // Two input shards, so that pairs span files.
  const size_t half = docs.size() / 2;
  test::write_jsonl(dir.file("a.jsonl"), {docs.begin(), docs.begin() + static_cast<long>(half)});
  test::write_jsonl(dir.file("b.jsonl"), {docs.begin() + static_cast<long>(half), docs.end()});

  CleanConfig config;
  config.inputs = {dir.file("a.jsonl"), dir.file("b.jsonl")};
  config.output = dir.file("out");
  config.stages = {"dedup"};
  LocalExchange local;
  const auto result = run_clean_pipeline(config, local);
  std::set<std::string> kept;
  for (const char* shard : {"00000-a", "00001-b"})
    for (const auto& r : test::read_jsonl(config.output + "/kept/" + shard + ".jsonl")) kept.insert(r.at("id"));
  int exact_hit = 0, near_hit = 0, unrelated_removed = 0;
  for (const auto& [x, y] : exact_pairs) exact_hit += (kept.count(x) + kept.count(y)) == 1;
  for (const auto& [x, y] : near_pairs) near_hit += (kept.count(x) + kept.count(y)) == 1;
  for (const auto& u : unrelated) unrelated_removed += kept.count(u) == 0;
  std::printf("exact pairs: %d/%zu, near pairs: %d/%zu, unrelated removed: %d/%zu\n", exact_hit, exact_pairs.size(),
              near_hit, near_pairs.size(), unrelated_removed, unrelated.size());
  EXPECT_EQ(exact_hit, static_cast<int>(exact_pairs.size()));
  EXPECT_GE(near_hit, 0.95 * near_pairs.size());
  EXPECT_LE(unrelated_removed, 0.01 * unrelated.size());
  // The rejected file names the kept member.
  const auto rejected = test::read_jsonl(config.output + "/rejected/dedup.jsonl");
  EXPECT_EQ(rejected.size(), docs.size() - kept.size());
  size_t exact_reasons = 0;
  for (const auto& r : rejected) {
    EXPECT_TRUE(r.contains("duplicate_of"));
    exact_reasons += r.at("reason") == "exact_duplicate";
  }
  EXPECT_GE(exact_reasons, exact_pairs.size());
  const auto& stage = result.stats.at("stages").at(1);
  EXPECT_EQ(stage.at("name"), "dedup");
  EXPECT_EQ(stage.at("docs_in").get<size_t>(), docs.size());
  EXPECT_EQ(stage.at("docs_out").get<size_t>(), kept.size());
}

}  // namespace
}  // namespace moetrain::data::clean

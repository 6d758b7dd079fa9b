// The pipeline end to end in one process: outputs and pass-through fields,
// bad-record accounting and --strict, resume after a crash, config keys.
#include <gtest/gtest.h>

#include <zstd.h>

#include <filesystem>
#include <fstream>

#include "clean_test_support.h"
#include "data/clean/clean_config.h"
#include "data/clean/pipeline.h"

namespace moetrain::data::clean {
namespace {

const char* kProse =
    "The committee met on Tuesday to consider the proposal that had been put before it by the members of the "
    "council. After a long discussion of the costs and of the benefits, it was agreed that the plan should go "
    "ahead with a number of changes. The chairman said that the town would have to wait for the final report. "
    "Several members asked for more time to study the figures, and the meeting was adjourned until the following "
    "week. Everyone agreed that the matter was of great importance to the people of the town.";

CleanConfig small_config(const test::TempDir& dir) {
  CleanConfig c;
  c.output = dir.file("out");
  return c;
}

std::vector<nlohmann::json> kept_records(const std::string& out) {
  std::vector<nlohmann::json> all;
  std::vector<std::string> files;
  for (const auto& e : std::filesystem::directory_iterator(out + "/kept")) files.push_back(e.path().string());
  std::sort(files.begin(), files.end());
  for (const auto& f : files)
    for (auto& r : test::read_jsonl(f)) all.push_back(r);
  return all;
}

TEST(clean_Pipeline, KeepsFieldsAddsMetaAndCountsBadRecords) {
  test::TempDir dir;
  {
    std::ofstream out(dir.file("in.jsonl"));
    out << nlohmann::json(
               {{"id", "good"}, {"lang", "en"}, {"text", std::string(kProse) + " Mail me at jo@example.com."}})
               .dump()
        << "\n";
    out << "{not json\n";
    out << "{\"id\": \"bad-utf8\", \"text\": \"caf\xC3\"}\n";
    out << nlohmann::json({{"id", "no-text"}, {"body", "x"}}).dump() << "\n";
    out << nlohmann::json({{"id", "empty"}, {"text", "   "}}).dump() << "\n";
    out << nlohmann::json({{"id", "short"}, {"text", "Too short to keep."}}).dump() << "\n";
    out << "\n";
    out << nlohmann::json({{"id", 42}, {"n", 1.5}, {"text", std::string(kProse)}}).dump() << "\n";
  }
  CleanConfig c = small_config(dir);
  c.inputs = {dir.file("in.jsonl")};
  LocalExchange local;
  const auto result = run_clean_pipeline(c, local);
  const auto kept = kept_records(c.output);
  ASSERT_EQ(kept.size(), 1u) << "id 42 is a near copy of \"good\" (one sentence fewer)";
  EXPECT_EQ(kept[0].at("id"), "good");
  EXPECT_EQ(kept[0].at("lang"), "en");
  EXPECT_NE(kept[0].at("text").get<std::string>().find("<EMAIL>"), std::string::npos);
  EXPECT_EQ(kept[0].at("meta").at("pii").at("email"), 1);
  const auto& s = result.stats;
  EXPECT_EQ(s.at("records"), 7);
  EXPECT_EQ(s.at("bad_records").at("count"), 4);
  const auto& by_reason = s.at("bad_records").at("by_reason");
  EXPECT_EQ(by_reason.at("invalid UTF-8"), 1);
  EXPECT_EQ(by_reason.at("missing text field 'text'"), 1);
  EXPECT_EQ(by_reason.at("empty text"), 1);
  EXPECT_EQ(s.at("bad_records").at("records").at(0).at("line"), 2);
  EXPECT_EQ(s.at("bad_records").at("records").at(0).at("file"), dir.file("in.jsonl"));
  // Stage order and counts: normalize, dedup, quality, toxicity, pii.
  std::vector<std::string> names;
  for (const auto& st : s.at("stages")) names.push_back(st.at("name"));
  EXPECT_EQ(names, (std::vector<std::string>{"normalize", "dedup", "quality", "toxicity", "pii"}));
  EXPECT_EQ(s.at("stages").at(2).at("removed").at("gopher_too_few_words"), 1);
  EXPECT_EQ(s.at("stages").at(4).at("replaced").at("email"), 1);
  EXPECT_EQ(test::read_jsonl(c.output + "/rejected/quality.jsonl").at(0).at("id"), "short");
  EXPECT_TRUE(std::filesystem::exists(c.output + "/stats.json"));

  // Strict: the first bad record is fatal and names file and line.
  CleanConfig strict = c;
  strict.output = dir.file("strict");
  strict.strict = true;
  try {
    run_clean_pipeline(strict, local);
    FAIL() << "expected CleanInputError";
  } catch (const CleanInputError& e) {
    EXPECT_NE(std::string(e.what()).find(dir.file("in.jsonl") + ":2: invalid JSON"), std::string::npos) << e.what();
  }
}

TEST(clean_Pipeline, MissingInputAndUnknownStageAreConfigErrors) {
  test::TempDir dir;
  CleanConfig c = small_config(dir);
  c.inputs = {dir.file("nowhere.jsonl")};
  LocalExchange local;
  EXPECT_THROW(run_clean_pipeline(c, local), CleanConfigError);
  c.inputs = {dir.path()};
  c.stages = {"dedup", "spelling"};
  EXPECT_THROW(validate_clean_config(c), CleanConfigError);
}

TEST(clean_Pipeline, ResumeAfterACrashGivesTheSameOutput) {
  CLEAN_NEED_SHARED("brown.jsonl");
  test::TempDir dir;
  auto records = test::read_jsonl(test::shared_data("brown.jsonl"), 120);
  for (int s = 0; s < 4; ++s)
    test::write_jsonl(dir.file("part" + std::to_string(s) + ".jsonl"),
                      {records.begin() + s * 30, records.begin() + (s + 1) * 30});
  CleanConfig c = small_config(dir);
  c.inputs = {dir.path()};
  c.output = dir.file("../" + std::filesystem::path(dir.path()).filename().string() + "-full");
  LocalExchange local;
  run_clean_pipeline(c, local);
  const auto full = kept_records(c.output);

  CleanConfig r = c;
  r.output = dir.file("../" + std::filesystem::path(dir.path()).filename().string() + "-resumed");
  run_clean_pipeline(r, local);
  // Simulate a crash: shard 2 never committed, and a partial file was left behind.
  data::remove_tree(r.output + "/.shards/00002-part2");
  std::filesystem::remove(r.output + "/kept/00002-part2.jsonl");
  std::ofstream(r.output + "/kept/00003-part3.jsonl.partial") << "{\"half\": ";
  const auto again = run_clean_pipeline(r, local);
  EXPECT_EQ(again.shards_skipped, 3);
  EXPECT_EQ(again.shards_processed, 1);
  EXPECT_EQ(kept_records(r.output), full);
  EXPECT_FALSE(std::filesystem::exists(r.output + "/kept/00003-part3.jsonl.partial"));
  EXPECT_EQ(test::read_text(r.output + "/rejected/quality.jsonl"),
            test::read_text(c.output + "/rejected/quality.jsonl"));
  // A different config into the same folder is refused.
  CleanConfig other = r;
  other.gopher.min_doc_words = 10;
  EXPECT_THROW(run_clean_pipeline(other, local), CleanConfigError);
  data::remove_tree(c.output);
  data::remove_tree(r.output);
}

TEST(clean_Pipeline, ReadsZstdAndPlainText) {
  test::TempDir dir;
  const std::string line = nlohmann::json({{"id", "z"}, {"text", kProse}}).dump() + "\n";
  std::string compressed(ZSTD_compressBound(line.size()), '\0');
  compressed.resize(ZSTD_compress(compressed.data(), compressed.size(), line.data(), line.size(), 3));
  std::ofstream(dir.file("a.jsonl.zst"), std::ios::binary) << compressed;
  std::ofstream(dir.file("b.txt")) << "Short one.\n\n" << kProse << "\nsecond line of it.\n";
  CleanConfig c = small_config(dir);
  c.inputs = {dir.file("a.jsonl.zst"), dir.file("b.txt")};
  c.stages = {"pii"};
  LocalExchange local;
  run_clean_pipeline(c, local);
  const auto kept = kept_records(c.output);
  ASSERT_EQ(kept.size(), 3u);
  EXPECT_EQ(kept[0].at("id"), "z");
  EXPECT_EQ(kept[1].at("id"), "b:1");
  EXPECT_EQ(kept[2].at("id"), "b:3");
}

TEST(clean_Pipeline, DomainKeywordsAndToxicSentenceRemoval) {
  test::TempDir dir;
  const std::string sport =
      "The football team scored a late goal to win the league match. The coach praised the players after the game, "
      "and the fans celebrated the goal in the stadium.";
  const std::string toxic = "This is a fine day. You are a fucking idiot. The weather will be warm tomorrow.";
  test::write_jsonl(dir.file("in.jsonl"),
                    {{{"id", "sport"}, {"text", sport}},
                     {{"id", "politics"}, {"text", "The senate passed the election law after a long vote."}},
                     {{"id", "toxic"}, {"text", toxic}}});
  CleanConfig c = small_config(dir);
  c.inputs = {dir.file("in.jsonl")};
  c.stages = {"domain", "toxicity"};
  c.domain_keywords = {{"sport", {"football", "goal", "league", "stadium"}}, {"politics", {"senate", "election"}}};
  c.domain_allowed = {"sport", "other"};
  c.toxicity_mode = "sentence";
  LocalExchange local;
  const auto result = run_clean_pipeline(c, local);
  const auto kept = kept_records(c.output);
  ASSERT_EQ(kept.size(), 2u);
  EXPECT_EQ(kept[0].at("id"), "sport");
  EXPECT_EQ(kept[0].at("meta").at("domain"), "sport");
  EXPECT_GT(kept[0].at("meta").at("domain_score").get<double>(), 0.05);
  EXPECT_EQ(kept[1].at("id"), "toxic");
  EXPECT_EQ(kept[1].at("meta").at("domain"), "other");
  EXPECT_EQ(kept[1].at("text"), "This is a fine day. The weather will be warm tomorrow.");
  EXPECT_EQ(kept[1].at("meta").at("toxicity").at("matches"), 1);
  const auto rejected = test::read_jsonl(c.output + "/rejected/domain.jsonl");
  ASSERT_EQ(rejected.size(), 1u);
  EXPECT_EQ(rejected[0].at("id"), "politics");
  EXPECT_EQ(rejected[0].at("domain"), "politics");
  EXPECT_EQ(result.stats.at("stages").at(2).at("replaced").at("sentences_removed"), 1);
}

TEST(clean_Config, YamlKeysOverridesAndErrors) {
  test::TempDir dir;
  std::ofstream(dir.file("c.yaml")) << "input:\n  paths: [a.jsonl]\nstages: [quality, pii]\nquality:\n"
                                       "  gopher_quality:\n    min_doc_words: 20\n  gopher_repetition:\n"
                                       "    top_n_grams: {2: 0.3}\ndomain:\n  keywords:\n    sport: [football, goal]\n";
  auto c = load_clean_config(dir.file("c.yaml"));
  EXPECT_EQ(c.inputs, std::vector<std::string>{"a.jsonl"});
  EXPECT_EQ(c.stages, (std::vector<std::string>{"quality", "pii"}));
  EXPECT_EQ(c.gopher.min_doc_words, 20);
  EXPECT_EQ(c.repetition.top_n_grams, (std::vector<std::pair<int, double>>{{2, 0.3}}));
  EXPECT_EQ(c.domain_keywords.at("sport").size(), 2u);
  apply_override(c, "dedup.bands=20");
  EXPECT_EQ(c.minhash.bands, 20);
  apply_override(c, "pii.types=email,phone");
  EXPECT_EQ(c.pii_types.size(), 2u);
  std::ofstream(dir.file("bad.yaml")) << "quality:\n  gopher_quality:\n    min_doc_wrds: 20\n";
  try {
    load_clean_config(dir.file("bad.yaml"));
    FAIL();
  } catch (const CleanConfigError& e) {
    EXPECT_EQ(std::string(e.what()),
              "unknown key 'quality.gopher_quality.min_doc_wrds' (" + dir.file("bad.yaml") + ":3)");
  }
  EXPECT_THROW(apply_override(c, "dedup.bands=many"), CleanConfigError);
  // configs/clean.yaml spells out every default: loading it changes nothing.
  EXPECT_EQ(clean_config_to_json(load_clean_config(std::string(MOETRAIN_SOURCE_DIR) + "/configs/clean.yaml")),
            clean_config_to_json(CleanConfig{}));
  const auto j = clean_config_to_json(CleanConfig{});
  EXPECT_EQ(j.at("dedup").at("bands"), 14);
  EXPECT_EQ(j.at("quality").at("gopher_quality").at("min_doc_words"), 50);
}

}  // namespace
}  // namespace moetrain::data::clean

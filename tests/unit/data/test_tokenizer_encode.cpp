// Tokenizer::encode (SentencePiece's normalizer and model, no per-piece
// message) gives exactly SentencePieceProcessor::Encode's ids: on the shared
// corpora (English, Chinese through byte fallback, raw mail with headers), for
// unigram and BPE models, for a model without byte fallback (runs of unknown
// pieces become one <unk>), and on edge cases.
#include <gtest/gtest.h>

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>
#include <algorithm>
#include <fstream>

#include "data/tokenizer.h"
#include "tests/unit/data/data_test_support.h"

namespace moetrain::data {
namespace {

using test_support::read_jsonl_field;

// Texts that exercise the normalizer and the unknown-piece rules.
std::vector<std::string> edge_cases() {
  return {
      "",
      " ",
      "\n\n\t  \r\n",
      "a",
      "<extra_id_0>",
      "before<extra_id_3>after <extra_id_99> <extra_id_100>",
      "\xff\xfe invalid \xc3 UTF-8 \xe4\xb8",  // stray and truncated bytes
      std::string("nul\0inside", 10),
      "\x01\x02\x1b[0m control characters",
      "ＦＵＬＬＷＩＤＴＨ ﬁ ligature ① circled Ⅻ roman",  // NFKC rewrites these
      "e\xcc\x81 combining acute, \xc3\xa9 precomposed",
      "emoji 😀🚀 and 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 math letters",
      "混合 text 中文 и кириллица, ελληνικά, עברית, العربية",
      std::string(5000, 'x'),
      std::string(300, ' ') + "padded" + std::string(300, ' '),
  };
}

std::vector<std::string> corpus_texts() {
  std::vector<std::string> texts = edge_cases();
  for (auto* file : {"brown.jsonl", "zh_fortunes.jsonl", "spam_assassin.jsonl"})
    for (auto& text : read_jsonl_field(file, "text", 400)) texts.push_back(std::move(text));
  return texts;
}

// Every text encodes to the processor's ids; returns how many ids in all.
size_t expect_same_ids(const Tokenizer& tokenizer, const std::vector<std::string>& texts) {
  sentencepiece::SentencePieceProcessor reference;
  EXPECT_TRUE(reference.LoadFromSerializedProto(tokenizer.model_bytes()).ok());
  size_t total = 0;
  for (size_t i = 0; i < texts.size(); ++i) {
    std::vector<int> expected;
    EXPECT_TRUE(reference.Encode(texts[i], &expected).ok());
    const std::vector<int32_t> got = tokenizer.encode(texts[i]);
    if (got != std::vector<int32_t>(expected.begin(), expected.end())) {
      ADD_FAILURE() << "text " << i << " encodes to other ids than the processor's: " << texts[i].substr(0, 80);
      return total;
    }
    total += got.size();
  }
  return total;
}

std::vector<std::string> brown_training() { return test_support::brown_paragraphs(300); }

class TokenizerEncode : public ::testing::Test {
 protected:
  void SetUp() override {
    MOETRAIN_REQUIRE_SHARED("brown.jsonl");
    MOETRAIN_REQUIRE_SHARED("zh_fortunes.jsonl");
    MOETRAIN_REQUIRE_SHARED("spam_assassin.jsonl");
  }
};

TEST_F(TokenizerEncode, UnigramWithByteFallbackMatchesTheProcessor) {
  TokenizerTrainOptions options;
  options.vocab_size = 1000;
  const Tokenizer tokenizer = Tokenizer::train(brown_training(), options);
  const auto texts = corpus_texts();
  EXPECT_GT(expect_same_ids(tokenizer, texts), texts.size() * 10);
  // The Chinese went through byte fallback: byte pieces are among the ids.
  const auto zh = tokenizer.encode(read_jsonl_field("zh_fortunes.jsonl", "text", 1).at(0));
  EXPECT_TRUE(std::any_of(zh.begin(), zh.end(), [&](int32_t id) { return tokenizer.piece(id).rfind("<0x", 0) == 0; }));
}

TEST_F(TokenizerEncode, BpeMatchesTheProcessor) {
  TokenizerTrainOptions options;
  options.vocab_size = 1000;
  options.model_type = "bpe";
  const Tokenizer tokenizer = Tokenizer::train(brown_training(), options);
  expect_same_ids(tokenizer, corpus_texts());
}

// A model without byte fallback (as many published ones are): characters
// outside it are <unk>, and a run of them is one <unk>.
TEST_F(TokenizerEncode, UnknownRunsWithoutByteFallbackMatchTheProcessor) {
  std::string text_file = testing::TempDir() + "/moetrain_tokenizer_encode_train.txt";
  {
    std::ofstream out(text_file);
    for (const auto& paragraph : brown_training()) out << paragraph.substr(0, 2000) << '\n';
  }
  const std::string prefix = testing::TempDir() + "/moetrain_tokenizer_encode_nofallback";
  const auto status = sentencepiece::SentencePieceTrainer::Train(
      "--input=" + text_file + " --model_prefix=" + prefix +
      " --vocab_size=600 --byte_fallback=false --pad_id=0 --eos_id=1 --unk_id=2 --bos_id=3"
      " --num_threads=1 --minloglevel=2 --hard_vocab_limit=false");
  ASSERT_TRUE(status.ok()) << status.ToString();
  const Tokenizer tokenizer = Tokenizer::load(prefix + ".model");
  expect_same_ids(tokenizer, corpus_texts());
  const auto ids = tokenizer.encode("abc 中文字符 def");
  EXPECT_EQ(std::count(ids.begin(), ids.end(), static_cast<int32_t>(tokenizer.unk_id())), 1);
}

}  // namespace
}  // namespace moetrain::data

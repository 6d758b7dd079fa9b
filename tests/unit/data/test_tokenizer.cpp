// Tokenizer: trained on real Brown text; fixed special ids, round trips for
// English and (through byte fallback) Chinese, determinism, save/load, errors.
#include "data/nllb_vocabulary.h"
#include "data/tokenizer.h"

#include <gtest/gtest.h>

#include "tests/unit/data/data_test_support.h"

namespace moetrain::data {
namespace {

using test_support::TempDir;

// Brown is ASCII, so the nmt_nfkc normalisation amounts to collapsing
// whitespace runs (newlines included) to one space and trimming.
std::string collapse_whitespace(const std::string& s) {
  std::string out;
  bool space = false;
  for (char c : s) {
    if (c == ' ' || c == '\n' || c == '\t' || c == '\r') {
      space = !out.empty();
    } else {
      if (space) out += ' ';
      space = false;
      out += c;
    }
  }
  return out;
}

// The CJK unified ideographs (U+4E00..U+9FFF, three UTF-8 bytes each) of `text`.
std::string han_characters(const std::string& text) {
  std::string out;
  for (size_t i = 0; i < text.size();) {
    const auto b = static_cast<unsigned char>(text[i]);
    size_t len = b < 0x80 ? 1 : (b >> 5) == 6 ? 2 : (b >> 4) == 14 ? 3 : 4;
    if (len == 3 && i + 3 <= text.size()) {
      uint32_t cp = ((b & 0x0f) << 12) | ((static_cast<unsigned char>(text[i + 1]) & 0x3f) << 6) |
                    (static_cast<unsigned char>(text[i + 2]) & 0x3f);
      if (cp >= 0x4e00 && cp <= 0x9fff) out.append(text, i, 3);
    }
    i += len;
  }
  return out;
}

std::vector<std::string> training_paragraphs() { return test_support::brown_paragraphs(300); }

// Trained once for the suite: training is the slow part.
const Tokenizer& brown_tokenizer() {
  static const Tokenizer tokenizer = [] {
    TokenizerTrainOptions options;
    options.vocab_size = 1000;
    return Tokenizer::train(training_paragraphs(), options);
  }();
  return tokenizer;
}

class TokenizerTest : public ::testing::Test {
 protected:
  void SetUp() override { MOETRAIN_REQUIRE_SHARED("brown.jsonl"); }
};

TEST_F(TokenizerTest, SpecialIdsAreFixed) {
  const Tokenizer& tok = brown_tokenizer();
  EXPECT_EQ(tok.pad_id(), 0);
  EXPECT_EQ(tok.eos_id(), 1);
  EXPECT_EQ(tok.unk_id(), 2);
  EXPECT_EQ(tok.bos_id(), 3);
  EXPECT_EQ(tok.piece(0), "<pad>");
  EXPECT_EQ(tok.piece(1), "</s>");
  EXPECT_EQ(tok.piece(2), "<unk>");
  EXPECT_EQ(tok.piece(3), "<s>");
  ASSERT_EQ(tok.num_sentinels(), 100);
  for (int64_t i = 0; i < 100; ++i) {
    EXPECT_EQ(tok.sentinel_id(i), 4 + i);
    EXPECT_EQ(tok.piece(tok.sentinel_id(i)), "<extra_id_" + std::to_string(i) + ">");
  }
  EXPECT_THROW(tok.sentinel_id(100), std::out_of_range);
  EXPECT_EQ(tok.vocab_size(), 1000);
  const SpecialTokens& s = tok.special_tokens();
  EXPECT_EQ(s.pad, 0);
  EXPECT_EQ(s.eos, 1);
  EXPECT_EQ(s.bos, 3);
  EXPECT_EQ(s.unk, 2);
  EXPECT_EQ(s.sentinels.size(), 100u);
  EXPECT_EQ(s.sentinels[99], 103);
  EXPECT_EQ(s.decoder_start, 3);  // bos
  EXPECT_FALSE(tok.fairseq_layout());
}

TEST_F(TokenizerTest, MoetrainsLayoutHasNoLanguageCodes) {
  const Tokenizer& tok = brown_tokenizer();
  EXPECT_TRUE(tok.language_codes().empty());
  try {
    tok.language_code_id("eng_Latn");
    FAIL() << "a language code moetrain's tokenizer lacks was accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_STREQ(e.what(), "language code 'eng_Latn' is not in the tokenizer (it has no language codes)");
  }
}

TEST_F(TokenizerTest, NllbLayoutRefusesAModelThatIsNotNllbs) {
  // moetrain's model starts with <pad>, not NLLB's <unk> <s> </s>.
  try {
    nllb_layout_model(brown_tokenizer().model_bytes(), {"eng_Latn"}, "m.model");
    FAIL() << "moetrain's model was taken for NLLB's";
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(),
                 "m.model: piece 0 is '<pad>', not <unk> (NLLB's SentencePiece model has <unk> 0, <s> 1, </s> 2)");
  }
  EXPECT_THROW(nllb_layout_model("not a model", {}, "m.model"), std::runtime_error);
}

TEST_F(TokenizerTest, EnglishRoundTripOnUnseenText) {
  const Tokenizer& tok = brown_tokenizer();
  // Paragraphs well past the 300 used for training.
  auto unseen = test_support::brown_paragraphs(1200, 200);
  ASSERT_GT(unseen.size(), 1000u);
  int64_t tokens = 0;
  for (size_t i = 1000; i < unseen.size(); ++i) {
    const std::string& text = unseen[i];
    std::vector<int32_t> ids = tok.encode(text);
    tokens += static_cast<int64_t>(ids.size());
    for (int32_t id : ids) {
      EXPECT_NE(id, tok.unk_id());
      EXPECT_NE(id, tok.eos_id());  // encode adds no specials
      EXPECT_NE(id, tok.bos_id());
    }
    EXPECT_EQ(tok.decode(ids), collapse_whitespace(text));
  }
  EXPECT_GT(tokens, 1000);
}

TEST_F(TokenizerTest, ChineseRoundTripsThroughByteFallback) {
  MOETRAIN_REQUIRE_SHARED("zh_fortunes.jsonl");
  const Tokenizer& tok = brown_tokenizer();  // has seen no Chinese at all
  // Runs of CJK unified ideographs: NFKC leaves them unchanged, so the round
  // trip must be exact.
  int checked = 0;
  for (const auto& text : test_support::read_jsonl_field("zh_fortunes.jsonl", "text", 60)) {
    std::string han_only = han_characters(text);
    if (han_only.empty()) continue;
    std::vector<int32_t> ids = tok.encode(han_only);
    int bytes = 0;
    for (int32_t id : ids) {
      EXPECT_NE(id, tok.unk_id());
      bytes += tok.piece(id).rfind("<0x", 0) == 0;
    }
    EXPECT_GT(bytes, 0) << "unseen characters must fall back to byte pieces";
    EXPECT_EQ(tok.decode(ids), han_only);
    ++checked;
  }
  EXPECT_GT(checked, 20);
  // Mixed script with the full-width punctuation the corpus uses: byte
  // fallback means no <unk>.
  for (const auto& text : test_support::read_jsonl_field("zh_fortunes.jsonl", "text", 30)) {
    for (int32_t id : tok.encode(text)) EXPECT_NE(id, tok.unk_id());
  }
}

TEST_F(TokenizerTest, TrainingIsDeterministic) {
  auto sentences = test_support::brown_paragraphs(120);
  TokenizerTrainOptions options;
  options.vocab_size = 600;
  Tokenizer a = Tokenizer::train(sentences, options);
  Tokenizer b = Tokenizer::train(sentences, options);
  EXPECT_EQ(a.model_bytes(), b.model_bytes());
  const std::string probe = sentences[7] + " " + sentences[50];
  EXPECT_EQ(a.encode(probe), b.encode(probe));
  // A different corpus gives a different model (the comparison can fail).
  Tokenizer c = Tokenizer::train(std::vector<std::string>(sentences.begin() + 60, sentences.end()), options);
  EXPECT_NE(a.model_bytes(), c.model_bytes());
}

TEST_F(TokenizerTest, BpeModelsWork) {
  TokenizerTrainOptions options;
  options.vocab_size = 600;
  options.model_type = "bpe";
  Tokenizer bpe = Tokenizer::train(test_support::brown_paragraphs(100), options);
  EXPECT_EQ(bpe.bos_id(), 3);
  EXPECT_EQ(bpe.sentinel_id(0), 4);
  const std::string text = "The jury said it did find that many of Georgia's registration laws are outmoded.";
  EXPECT_EQ(bpe.decode(bpe.encode(text)), text);
  options.model_type = "word2vec";
  EXPECT_THROW(Tokenizer::train({"a b"}, options), std::invalid_argument);
}

TEST_F(TokenizerTest, SentinelsInTextAreSingleTokens) {
  const Tokenizer& tok = brown_tokenizer();
  auto ids = tok.encode("before <extra_id_7> after");
  EXPECT_NE(std::find(ids.begin(), ids.end(), tok.sentinel_id(7)), ids.end());
}

TEST_F(TokenizerTest, SaveAndLoad) {
  TempDir dir;
  const Tokenizer& tok = brown_tokenizer();
  const std::string path = dir.file("tokenizer.model");
  tok.save(path);
  Tokenizer loaded = Tokenizer::load(path);
  EXPECT_EQ(loaded.model_bytes(), tok.model_bytes());
  EXPECT_EQ(test_support::read_file(path), tok.model_bytes());
  const std::string text = "Mr. Kennedy announced the appointment on Thursday.";
  EXPECT_EQ(loaded.encode(text), tok.encode(text));
  EXPECT_EQ(loaded.num_sentinels(), 100);
  // The .vocab listing has one line per piece.
  std::string vocab = test_support::read_file(dir.file("tokenizer.vocab"));
  EXPECT_EQ(std::count(vocab.begin(), vocab.end(), '\n'), tok.vocab_size());
  EXPECT_EQ(vocab.rfind("<pad>\t", 0), 0u);
  // No temporary files left behind.
  int files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir.path())) (void)e, ++files;
  EXPECT_EQ(files, 2);
}

TEST_F(TokenizerTest, DecodeRejectsIdsOutsideTheVocabulary) {
  const Tokenizer& tok = brown_tokenizer();
  EXPECT_THROW(tok.decode(std::vector<int32_t>{5, 1000}), std::out_of_range);
  EXPECT_THROW(tok.decode(std::vector<int64_t>{-1}), std::out_of_range);
}

TEST(Tokenizer, MissingOrCorruptModelNamesThePath) {
  TempDir dir;
  const std::string missing = dir.file("missing.model");
  try {
    Tokenizer::load(missing);
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(missing), std::string::npos) << e.what();
  }
  for (const std::string& bytes :
       {std::string(), std::string("not a model \x01\x02\xff garbage"), std::string(300, '\x0a')}) {
    const std::string corrupt = dir.file("corrupt.model");
    test_support::write_file(corrupt, bytes);
    try {
      Tokenizer::load(corrupt);
      FAIL() << "loaded garbage";
    } catch (const std::runtime_error& e) {
      EXPECT_NE(std::string(e.what()).find(corrupt), std::string::npos) << e.what();
    }
  }
}

TEST(Tokenizer, TooSmallVocabularyIsAClearError) {
  TokenizerTrainOptions options;
  options.vocab_size = 50;  // less than the 104 specials + 256 bytes
  try {
    Tokenizer::train({"some text here", "and more text"}, options);
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("vocab"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace moetrain::data

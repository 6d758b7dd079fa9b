// tokenize_corpus end to end: a Brown subset into document shards, CMUdict
// grapheme-to-phoneme pairs into pair shards; the output feeds BatchSource.
#include "data/tokenize.h"

#include <gtest/gtest.h>

#include <set>

#include "data/batch_source.h"
#include "data/jsonl_reader.h"
#include "data/token_shard.h"
#include "data/tokenizer.h"
#include "tests/unit/data/data_test_support.h"

namespace moetrain::data {
namespace {

using test_support::TempDir;

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

// The first paragraphs of `n` Brown documents, as a JSONL file with the
// shared corpus' fields; returns the texts in order.
std::vector<std::string> write_brown_subset(const std::string& path, size_t n) {
  std::vector<std::string> texts;
  std::ofstream out(path);
  size_t i = 0;
  for (const auto& doc : test_support::read_jsonl_field("brown.jsonl", "text", n)) {
    size_t cut = 0;
    for (int p = 0; p < 3 && cut != std::string::npos; ++p) cut = doc.find("\n\n", cut + 2);
    std::string text = doc.substr(0, cut);
    out << nlohmann::json{{"id", i++}, {"category", "test"}, {"text", text}}.dump() << "\n";
    texts.push_back(text);
  }
  return texts;
}

std::vector<std::string> decode_documents(const Tokenizer& tok, const std::string& shard_path) {
  DocumentShard shard = read_document_shard(shard_path);
  std::vector<std::string> out;
  const int32_t* t = shard.documents.tokens.data_ptr<int32_t>();
  const int64_t* o = shard.documents.offsets.data_ptr<int64_t>();
  for (int64_t d = 0; d < shard.documents.size(); ++d)
    out.push_back(tok.decode(std::vector<int32_t>(t + o[d], t + o[d + 1])));
  return out;
}

nlohmann::json read_json(const std::string& path) { return nlohmann::json::parse(test_support::read_file(path)); }

class TokenizeTest : public ::testing::Test {
 protected:
  void SetUp() override { MOETRAIN_REQUIRE_SHARED("brown.jsonl"); }
};

// BrownDocumentsEndToEnd: dataset.json describes it all.
void expect_dataset_json(const TokenizeSummary& summary, const TokenizeOptions& options) {
  auto j = read_json(summary.dataset_json);
  EXPECT_EQ(j["kind"], "documents");
  EXPECT_EQ(j["format_version"], 1);
  EXPECT_EQ(j["vocab_size"], 800);
  EXPECT_EQ(j["tokenizer"], "tokenizer.model");
  EXPECT_EQ(j["inputs"], nlohmann::json(options.inputs));
  EXPECT_EQ(j["input_records"], 62);
  EXPECT_EQ(j["splits"]["train"]["documents"], 56);
  EXPECT_EQ(j["splits"]["train"]["tokens"], summary.train.tokens);
  EXPECT_EQ(j["splits"]["valid"]["documents"], 6);
  EXPECT_EQ(j["splits"]["valid"]["shards"], nlohmann::json({"valid-00000.h5"}));
  EXPECT_EQ(j["special_tokens"]["bos"], 3);
  EXPECT_EQ(j["special_tokens"]["num_sentinels"], 100);
}

// BrownDocumentsEndToEnd: the output feeds BatchSource directly, both splits.
void expect_feeds_batch_source(TempDir& dir, const TokenizeSummary& summary, const Tokenizer& tok) {
  DataConfig cfg;
  cfg.train = dir.file("out");
  cfg.valid = dir.file("out");
  cfg.src_len = 64;
  cfg.tgt_len = 24;
  EXPECT_EQ(resolve_tokenizer_path(cfg), summary.tokenizer_path);
  DataConfig by_glob = cfg;
  by_glob.train = dir.file("out/train-*.h5");
  EXPECT_EQ(resolve_tokenizer_path(by_glob), summary.tokenizer_path);
  DataConfig explicit_missing = cfg;
  explicit_missing.tokenizer = dir.file("elsewhere.model");
  EXPECT_THROW(resolve_tokenizer_path(explicit_missing), std::runtime_error);
  BatchSource train(cfg, tok.special_tokens(), 1, "train");
  BatchSource valid(cfg, tok.special_tokens(), 1, "valid");
  EXPECT_EQ(train.shard_paths().size(), 3u);
  EXPECT_GT(train.num_samples(), valid.num_samples());
  auto batches = train.step_batches(0, 0, 1, 4, 2);
  ASSERT_EQ(batches.size(), 2u);
  EXPECT_EQ(batches[0].src_tokens.size(0), 2);
  EXPECT_TRUE(batches[0].tgt_in.select(1, 0).eq(tok.bos_id()).all().item<bool>());
}

TEST_F(TokenizeTest, BrownDocumentsEndToEnd) {
  TempDir dir;
  const std::string input = dir.file("brown.jsonl");
  auto texts = write_brown_subset(input, 60);
  // A plain text input next to it: two documents.
  test_support::write_file(dir.file("extra.txt"), "A plain text document.\nSecond line.\n\nAnother one.\n");

  TokenizeOptions options;
  options.inputs = {input, dir.file("extra.txt")};
  options.output_dir = dir.file("out");
  options.vocab_size = 800;
  options.valid_fraction = 0.1;
  options.docs_per_shard = 20;
  TokenizeSummary summary = tokenize_corpus(options);

  EXPECT_EQ(summary.kind, "documents");
  EXPECT_TRUE(summary.trained_tokenizer);
  EXPECT_EQ(summary.input_records, 62);
  EXPECT_EQ(summary.skipped_empty, 0);
  EXPECT_EQ(summary.valid.records, 6);  // round(62 * 0.1)
  EXPECT_EQ(summary.train.records, 56);
  EXPECT_EQ(summary.train.shards, (std::vector<std::string>{"train-00000.h5", "train-00001.h5", "train-00002.h5"}));
  EXPECT_EQ(summary.valid.shards, std::vector<std::string>{"valid-00000.h5"});
  EXPECT_EQ(summary.vocab_size, 800);
  EXPECT_EQ(summary.tokenizer_path, dir.file("out/tokenizer.model"));
  EXPECT_TRUE(std::filesystem::exists(dir.file("out/tokenizer.vocab")));

  // Every input document is in exactly one split, in input order, and decodes
  // back to its (normalised) text.
  Tokenizer tok = Tokenizer::load(summary.tokenizer_path);
  std::vector<std::string> expected;
  for (const auto& t : texts) expected.push_back(collapse_whitespace(t));
  expected.push_back("A plain text document. Second line.");
  expected.push_back("Another one.");
  std::vector<std::string> train_docs, valid_docs;
  int64_t train_tokens = 0;
  for (const auto& name : summary.train.shards) {
    auto docs = decode_documents(tok, dir.file("out/" + name));
    train_docs.insert(train_docs.end(), docs.begin(), docs.end());
    train_tokens += read_document_shard(dir.file("out/" + name)).documents.num_tokens();
  }
  EXPECT_EQ(train_tokens, summary.train.tokens);
  valid_docs = decode_documents(tok, dir.file("out/valid-00000.h5"));
  size_t ti = 0, vi = 0;
  for (const auto& e : expected) {
    if (ti < train_docs.size() && train_docs[ti] == e)
      ++ti;
    else if (vi < valid_docs.size() && valid_docs[vi] == e)
      ++vi;
    else
      ADD_FAILURE() << "document missing or out of order: " << e.substr(0, 60);
  }
  EXPECT_EQ(ti, train_docs.size());
  EXPECT_EQ(vi, valid_docs.size());

  expect_dataset_json(summary, options);

  // Nothing temporary left behind.
  for (const auto& e : std::filesystem::directory_iterator(dir.file("out")))
    EXPECT_EQ(e.path().filename().string().find(".tmp"), std::string::npos) << e.path();

  expect_feeds_batch_source(dir, summary, tok);

  // Deterministic: a second run gives the same tokenizer and the same shards.
  TokenizeOptions again = options;
  again.output_dir = dir.file("out2");
  tokenize_corpus(again);
  EXPECT_EQ(test_support::read_file(dir.file("out2/tokenizer.model")), tok.model_bytes());
  for (const auto& name : summary.train.shards)
    EXPECT_TRUE(torch::equal(read_document_shard(dir.file("out/" + name)).documents.tokens,
                             read_document_shard(dir.file("out2/" + name)).documents.tokens));

  // Rerun into the same folder with bigger shards and an existing tokenizer:
  // the shards of the first run that were not rewritten are gone.
  TokenizeOptions rerun = options;
  rerun.docs_per_shard = 1000;
  rerun.tokenizer_model = dir.file("out2/tokenizer.model");
  TokenizeSummary s2 = tokenize_corpus(rerun);
  EXPECT_FALSE(s2.trained_tokenizer);
  EXPECT_EQ(s2.train.shards, std::vector<std::string>{"train-00000.h5"});
  EXPECT_FALSE(std::filesystem::exists(dir.file("out/train-00001.h5")));
  EXPECT_EQ(s2.train.tokens, summary.train.tokens);
  EXPECT_EQ(read_json(s2.dataset_json)["trained_tokenizer"], false);
}

// Bad records (invalid UTF-8, invalid JSON, a missing field; in JSONL and
// in plain text) are skipped and counted with file and line; the rest is
// tokenized as if they were not there.
TEST_F(TokenizeTest, BadRecordsAreSkippedAndCounted) {
  TempDir dir;
  const auto docs = test_support::brown_paragraphs(40);
  std::string clean, dirty;
  for (size_t i = 0; i < docs.size(); ++i) {
    const std::string line = nlohmann::json{{"text", docs[i]}}.dump() + "\n";
    clean += line;
    dirty += line;
    if (i == 0) dirty += "{\"text\": \"bad \xff byte\"}\n";  // line 2
    if (i == 2) dirty += "{\"text\": \"unterminated}\n";     // line 5
    if (i == 3) dirty += "{\"body\": \"no text field\"}\n";  // line 7
  }
  test_support::write_file(dir.file("clean.jsonl"), clean);
  test_support::write_file(dir.file("dirty.jsonl"), dirty);
  test_support::write_file(dir.file("held.txt"),
                           "A held-out document.\n\nA bad \xc3 one,\nto its end.\n\nA last one.\n");
  TokenizeOptions options;
  options.inputs = {dir.file("clean.jsonl")};
  options.output_dir = dir.file("clean");
  options.vocab_size = 700;
  const TokenizeSummary reference = tokenize_corpus(options);
  options.inputs = {dir.file("dirty.jsonl")};
  options.valid_inputs = {dir.file("held.txt")};
  options.output_dir = dir.file("dirty");
  const TokenizeSummary s = tokenize_corpus(options);
  EXPECT_EQ(s.skipped_bad.count, 4);
  const std::vector<std::string> expected = {
      dir.file("dirty.jsonl") + ":2: invalid JSON: ", dir.file("dirty.jsonl") + ":5: invalid JSON: ",
      dir.file("dirty.jsonl") + ":7: missing field 'text'", dir.file("held.txt") + ":3: invalid UTF-8"};
  ASSERT_EQ(s.skipped_bad.first.size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i)
    EXPECT_EQ(s.skipped_bad.first[i].rfind(expected[i], 0), 0u) << s.skipped_bad.first[i];
  EXPECT_EQ(s.input_records, static_cast<int64_t>(docs.size()) + 2);
  EXPECT_EQ(s.train.tokens, reference.train.tokens);  // the good records, as if alone
  EXPECT_EQ(read_json(s.dataset_json)["skipped_bad"], 4);

  // --strict: the first bad record stops the run, naming file and line, before the output exists.
  options.strict = true;
  options.output_dir = dir.file("strict");
  try {
    tokenize_corpus(options);
    FAIL() << "expected an error";
  } catch (const InputError& e) {
    EXPECT_EQ(std::string(e.what()).rfind(dir.file("dirty.jsonl") + ":2: invalid JSON", 0), 0u) << e.what();
  }
  EXPECT_FALSE(std::filesystem::exists(dir.file("strict")));
}

TEST_F(TokenizeTest, BadInputIsAOneLineErrorAndTouchesNothing) {
  TempDir dir;
  const std::string input = dir.file("broken.jsonl");
  test_support::write_file(input, "{\"text\": \"fine\"}\n{\"text\": \"also fine\"}\n{\"txt\": \"oops\"}\n");
  TokenizeOptions options;
  options.inputs = {input};
  options.output_dir = dir.file("out");
  options.vocab_size = 400;
  options.strict = true;
  try {
    tokenize_corpus(options);
    FAIL() << "expected an error";
  } catch (const InputError& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find(input + ":3"), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos);
  }
  EXPECT_FALSE(std::filesystem::exists(dir.file("out")));

  options.inputs = {dir.file("absent.jsonl")};
  try {
    tokenize_corpus(options);
    FAIL() << "expected an error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(dir.file("absent.jsonl")), std::string::npos) << e.what();
  }
  options.inputs = {input};
  options.source_field = "src";  // without target_field
  EXPECT_THROW(tokenize_corpus(options), std::invalid_argument);
}

// Two real corpora, tokenized with one tokenizer, as a weighted mixture: the
// proportions, each sample from its own corpus, and a corpus tokenized with
// another vocabulary refused by name.
TEST_F(TokenizeTest, MixtureOfTwoRealCorpora) {
  MOETRAIN_REQUIRE_SHARED("spam_assassin.jsonl");
  TempDir dir;
  write_brown_subset(dir.file("brown.jsonl"), 60);
  {
    std::ofstream mail(dir.file("mail.jsonl"));
    for (const auto& text : test_support::read_jsonl_field("spam_assassin.jsonl", "text", 80))
      mail << nlohmann::json{{"text", text}}.dump() << "\n";
  }
  TokenizeOptions brown;
  brown.inputs = {dir.file("brown.jsonl")};
  brown.output_dir = dir.file("brown");
  brown.vocab_size = 800;
  const TokenizeSummary brown_summary = tokenize_corpus(brown);
  TokenizeOptions mail = brown;
  mail.inputs = {dir.file("mail.jsonl")};
  mail.output_dir = dir.file("mail");
  mail.tokenizer_model = brown_summary.tokenizer_path;
  tokenize_corpus(mail);
  const Tokenizer tok = Tokenizer::load(brown_summary.tokenizer_path);

  DataConfig cfg;
  cfg.src_len = 64;
  cfg.tgt_len = 24;
  cfg.mixture = {{dir.file("brown"), 3, ""}, {dir.file("mail"), 1, ""}};
  EXPECT_EQ(resolve_tokenizer_path(cfg), brown_summary.tokenizer_path);
  BatchSource mixed(cfg, tok.special_tokens(), 5, "train");
  EXPECT_EQ(mixed.dataset_names(), (std::vector<std::string>{"brown", "mail"}));
  EXPECT_EQ(mixed.dataset_weights(), (std::vector<double>{0.75, 0.25}));
  EXPECT_EQ(mixed.mixture_position(50, 8), (std::vector<int64_t>{300, 100}));
  EXPECT_EQ(mixed.step_batches(3, 1, 2, 8, 2).size(), 2u);

  // The first dataset keeps the run's seed: its samples are those of a run
  // on that corpus alone, in its own order. Listed first, the mail corpus
  // shows the same for itself.
  DataConfig brown_only = cfg;
  brown_only.mixture.clear();
  brown_only.train = dir.file("brown");
  BatchSource plain_brown(brown_only, tok.special_tokens(), 5, "train");
  DataConfig mail_first = cfg;
  std::swap(mail_first.mixture[0], mail_first.mixture[1]);
  BatchSource mixed_mail_first(mail_first, tok.special_tokens(), 5, "train");
  DataConfig mail_only = brown_only;
  mail_only.train = dir.file("mail");
  BatchSource plain_mail(mail_only, tok.special_tokens(), 5, "train");
  int64_t from_brown = 0, from_mail = 0;
  for (int64_t k = 0; k < 400; ++k) {
    const SampleOrigin o = mixed.origin(k);
    if (o.dataset == 0) {
      ++from_brown;
      const Seq2SeqSample a = mixed.sample(k), b = plain_brown.sample(o.draw);
      ASSERT_EQ(a.source, b.source) << "sample " << k;
      ASSERT_EQ(a.target, b.target) << "sample " << k;
    }
    const SampleOrigin m = mixed_mail_first.origin(k);
    if (m.dataset == 0) {
      ++from_mail;
      const Seq2SeqSample a = mixed_mail_first.sample(k), b = plain_mail.sample(m.draw);
      ASSERT_EQ(a.source, b.source) << "sample " << k;
      ASSERT_EQ(a.target, b.target) << "sample " << k;
    }
  }
  EXPECT_EQ(from_brown, 300);
  EXPECT_EQ(from_mail, 100);

  // The mail corpus tokenized with a tokenizer of its own: refused by name.
  TokenizeOptions own = mail;
  own.tokenizer_model.clear();
  own.vocab_size = 600;
  own.output_dir = dir.file("mail-own");
  tokenize_corpus(own);
  cfg.mixture[1].path = dir.file("mail-own");
  try {
    BatchSource bad(cfg, tok.special_tokens(), 5, "train");
    ADD_FAILURE() << "a mixture of two vocabularies was accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("dataset 'mail-own'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("vocab_size 600, dataset 'brown' has 800"), std::string::npos) << e.what();
  }
}

TEST(Tokenize, CmudictPairs) {
  MOETRAIN_REQUIRE_SHARED("cmudict/dict.txt");
  TempDir dir;
  // Spelled word -> phonemes, e.g. "a b a c u s" -> "AE1 B AH0 K AH0 S".
  std::ifstream dict(std::filesystem::path(test_support::shared_data_dir()) / "cmudict/dict.txt");
  std::ofstream out(dir.file("g2p.jsonl"));
  std::vector<std::pair<std::string, std::string>> pairs;
  std::string line;
  while (pairs.size() < 400 && std::getline(dict, line)) {
    auto sep = line.find("  ");
    if (sep == std::string::npos) continue;
    std::string word = line.substr(0, sep);
    if (word.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZ") != std::string::npos) continue;
    std::string spelled;
    for (char c : word) {
      if (!spelled.empty()) spelled += ' ';
      spelled += static_cast<char>(c - 'A' + 'a');
    }
    pairs.emplace_back(spelled, line.substr(sep + 2));
    out << nlohmann::json{{"word", spelled}, {"phonemes", pairs.back().second}}.dump() << "\n";
  }
  out.close();
  ASSERT_EQ(pairs.size(), 400u);

  TokenizeOptions options;
  options.inputs = {dir.file("g2p.jsonl")};
  options.output_dir = dir.file("out");
  options.source_field = "word";
  options.target_field = "phonemes";
  options.vocab_size = 500;
  options.valid_fraction = 0.05;
  TokenizeSummary summary = tokenize_corpus(options);
  EXPECT_EQ(summary.kind, "pairs");
  EXPECT_EQ(summary.valid.records, 20);
  EXPECT_EQ(summary.train.records, 380);
  EXPECT_EQ(summary.train.tokens, summary.train.source_tokens + summary.train.target_tokens);

  Tokenizer tok = Tokenizer::load(summary.tokenizer_path);
  PairShard shard = read_pair_shard(dir.file("out/train-00000.h5"));
  ASSERT_EQ(shard.source.size(), 380);
  // Train pairs are the input pairs minus the valid ones, in order.
  std::set<std::string> seen;
  size_t next = 0;
  const int32_t* st = shard.source.tokens.data_ptr<int32_t>();
  const int64_t* so = shard.source.offsets.data_ptr<int64_t>();
  const int32_t* tt = shard.target.tokens.data_ptr<int32_t>();
  const int64_t* to = shard.target.offsets.data_ptr<int64_t>();
  for (int64_t i = 0; i < shard.source.size(); ++i) {
    std::string src = tok.decode(std::vector<int32_t>(st + so[i], st + so[i + 1]));
    std::string tgt = tok.decode(std::vector<int32_t>(tt + to[i], tt + to[i + 1]));
    while (next < pairs.size() && pairs[next].first != src) ++next;
    ASSERT_LT(next, pairs.size()) << "pair out of order: " << src;
    EXPECT_EQ(tgt, pairs[next].second);
    ++next;
  }
  auto j = read_json(summary.dataset_json);
  EXPECT_EQ(j["kind"], "pairs");
  EXPECT_EQ(j["fields"]["source"], "word");
  EXPECT_EQ(j["splits"]["train"]["pairs"], 380);
  EXPECT_EQ(j["splits"]["valid"]["pairs"], 20);

  DataConfig cfg;
  cfg.train = dir.file("out");
  cfg.objective = Objective::Seq2Seq;
  cfg.src_len = 24;
  cfg.tgt_len = 24;
  BatchSource source(cfg, tok.special_tokens(), 9, "train");
  EXPECT_EQ(source.num_samples(), 380);
  auto batches = source.step_batches(2, 1, 2, 16, 4);
  EXPECT_EQ(batches.size(), 2u);
  // A sample decodes to a real pair.
  Seq2SeqSample s = source.sample(0);
  std::vector<int64_t> src(s.source.begin(), s.source.end() - 1);  // drop EOS
  std::vector<int64_t> tgt(s.target.begin(), s.target.end() - 1);
  std::string src_text = tok.decode(src), tgt_text = tok.decode(tgt);
  bool found = false;
  for (const auto& p : pairs) found |= p.first == src_text && p.second == tgt_text;
  EXPECT_TRUE(found) << src_text << " -> " << tgt_text;

  // An explicit held-out file: all of its pairs, in order, go to the valid
  // split after the valid_fraction ones; the train split is unchanged.
  std::ofstream held(dir.file("held.jsonl"));
  for (size_t i = 0; i < 30; ++i) {
    held << nlohmann::json{{"word", pairs[i].first}, {"phonemes", pairs[i].second}}.dump() << "\n";
  }
  held.close();
  options.output_dir = dir.file("out2");
  options.valid_inputs = {dir.file("held.jsonl")};
  const TokenizeSummary with_held = tokenize_corpus(options);
  EXPECT_EQ(with_held.train.records, 380);
  EXPECT_EQ(with_held.valid.records, 20 + 30);
  EXPECT_EQ(with_held.input_records, 400 + 30);
  const PairShard valid = read_pair_shard(dir.file("out2/valid-00000.h5"));
  ASSERT_EQ(valid.source.size(), 50);
  const int32_t* vs = valid.source.tokens.data_ptr<int32_t>();
  const int64_t* vo = valid.source.offsets.data_ptr<int64_t>();
  for (int64_t i = 20; i < 50; ++i) {
    EXPECT_EQ(tok.decode(std::vector<int32_t>(vs + vo[i], vs + vo[i + 1])), pairs[static_cast<size_t>(i - 20)].first);
  }
}

}  // namespace
}  // namespace moetrain::data

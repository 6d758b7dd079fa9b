// Text metrics: hand-checked cases, then BLEU, chrF, chrF++ and the 13a
// tokenization against sacrebleu itself on real sentences from the Brown
// corpus paired with damaged copies of themselves (words dropped, swapped,
// replaced, sentences cut short or left whole), plus lines that exercise the
// tokenizer (numbers, dashes, entities, non-ASCII). The sacrebleu check runs
// the project's Python environment and skips when sacrebleu or the corpus is
// absent.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include <unistd.h>

#include "eval/metrics.h"

namespace fs = std::filesystem;
using namespace moetrain::eval;

namespace {

TEST(Tokenize13a, SplitsPunctuationLikeMteval) {
  EXPECT_EQ(tokenize_13a("Hello, world."), "Hello , world .");
  EXPECT_EQ(tokenize_13a("It costs $3.50, or 1,000 yen."), "It costs $ 3.50 , or 1,000 yen .");
  EXPECT_EQ(tokenize_13a("pages 10-12 (see \"notes\")"), "pages 10 - 12 ( see \" notes \" )");
  EXPECT_EQ(tokenize_13a("don't &amp; &lt;b&gt;"), "don't & < b >");
  EXPECT_EQ(tokenize_13a("  spaced   out  "), "spaced out");
}

TEST(Bleu, PerfectAndDisjointAndBrevity) {
  const std::vector<std::string> refs{"the cat sat on the mat today", "a dog barked at the moon all night"};
  EXPECT_NEAR(corpus_bleu(refs, {refs}).score, 100.0, 1e-9);
  EXPECT_EQ(corpus_bleu({"x y z", "u v w"}, {refs}).score, 0.0);
  // Half the words of each: every precision is 100, the brevity penalty
  // exp(1 - 15/7) alone lowers the score.
  const auto short_hyp = corpus_bleu({"the cat sat on", "a dog barked"}, {refs});
  EXPECT_NEAR(short_hyp.brevity_penalty, std::exp(1.0 - 15.0 / 7.0), 1e-12);
  EXPECT_EQ(short_hyp.hypothesis_length, 7);
  EXPECT_EQ(short_hyp.reference_length, 15);
  EXPECT_THROW(corpus_bleu({"a"}, {{"a", "b"}}), std::invalid_argument);
}

TEST(Chrf, PerfectAndEmpty) {
  EXPECT_NEAR(corpus_chrf({"abc def"}, {{"abc def"}}), 100.0, 1e-9);
  EXPECT_EQ(corpus_chrf({"xyz"}, {{"abc"}}), 0.0);
  EXPECT_EQ(corpus_chrf({""}, {{"abc"}}), 0.0);
}

TEST(ErrorRates, EditDistanceWerPerAndRougeL) {
  EXPECT_EQ(edit_distance(split_tokens("K AE T"), split_tokens("K AE T S")), 1);
  EXPECT_EQ(edit_distance(split_tokens("B AE T"), split_tokens("K AE T")), 1);
  EXPECT_EQ(edit_distance({}, split_tokens("a b c")), 3);
  const std::vector<std::string> hyp{"K AE T", "D AO G Z"}, ref{"K AE T", "D AO G"};
  EXPECT_EQ(token_error_rate(hyp, ref).errors, 1);
  EXPECT_EQ(token_error_rate(hyp, ref).total, 6);
  EXPECT_DOUBLE_EQ(segment_error_rate(hyp, ref).rate(), 0.5);
  // Several references (alternative pronunciations), one segment with only
  // one: the closest counts, and matching any one is right.
  const std::vector<std::string> alt1{"K AE T", "T AH0 M EY1 T OW0"}, alt2{"", "T AH0 M AA1 T OW0"};
  const std::vector<std::string> said{"K AE T", "T AH0 M AA1 T OW2"};
  EXPECT_EQ(segment_error_rate(said, {alt1, alt2}).errors, 1);
  EXPECT_EQ(token_error_rate(said, {alt1, alt2}).errors, 1);  // one edit from the second pronunciation
  EXPECT_EQ(token_error_rate(said, {alt1, alt2}).total, 3 + 6);
  EXPECT_EQ(segment_error_rate({"K AE T", "T AH0 M AA1 T OW0"}, {alt1, alt2}).errors, 0);
  // LCS "the cat the mat" of 6 and 5 tokens: P = 4/6, R = 4/5.
  const double f = 2 * (4.0 / 6) * (4.0 / 5) / (4.0 / 6 + 4.0 / 5);
  EXPECT_NEAR(rouge_l({"The cat, the big old mat!"}, {"the cat sat the mat"}), 100 * f, 1e-9);
}

// Real sentences from the Brown corpus.
std::vector<std::string> brown_sentences(size_t wanted) {
  std::vector<std::string> out;
  std::ifstream in(std::string(MOETRAIN_SHARED_DATA) + "/brown.jsonl");
  std::string line;
  while (out.size() < wanted && std::getline(in, line)) {
    const std::string text = nlohmann::json::parse(line).at("text").get<std::string>();
    std::string sentence;
    for (char c : text) {
      sentence += c == '\n' ? ' ' : c;
      if ((c == '.' || c == '?' || c == '!') && sentence.size() > 30) {
        out.push_back(sentence);
        sentence.clear();
        if (out.size() == wanted) break;
      }
    }
  }
  return out;
}

// A damaged copy of a sentence, one of several kinds chosen by `kind`.
std::string damage(const std::string& sentence, int kind, std::mt19937& rng) {
  auto words = split_tokens(sentence);
  std::uniform_int_distribution<size_t> pick(0, words.size() - 1);
  switch (kind) {
    case 0: break;  // whole
    case 1:         // words dropped
      for (int k = 0; k < 3 && words.size() > 2; ++k)
        words.erase(words.begin() + static_cast<long>(pick(rng) % words.size()));
      break;
    case 2:  // neighbours swapped
      for (int k = 0; k < 2 && words.size() > 2; ++k) {
        const size_t i = pick(rng) % (words.size() - 1);
        std::swap(words[i], words[i + 1]);
      }
      break;
    case 3:  // words replaced
      for (int k = 0; k < 3; ++k) words[pick(rng)] = "replaced";
      break;
    default:  // cut short
      words.resize(std::max<size_t>(1, words.size() / 2));
  }
  std::string out;
  for (const auto& w : words) out += (out.empty() ? "" : " ") + w;
  return out;
}

std::string run_command(const std::string& command) {
  std::string out;
  FILE* pipe = popen(command.c_str(), "r");
  if (!pipe) return out;
  char buf[4096];
  while (fgets(buf, sizeof(buf), pipe)) out += buf;
  pclose(pipe);
  return out;
}

TEST(Sacrebleu, SameScoresAndTokensOnRealSentencePairs) {
  const std::string python = std::string(MOETRAIN_SOURCE_DIR) + "/.venv/bin/python";
  if (!fs::exists(std::string(MOETRAIN_SHARED_DATA) + "/brown.jsonl")) {
    GTEST_SKIP() << MOETRAIN_SHARED_DATA << "/brown.jsonl is absent";
  }
  if (std::system((python + " -c 'import sacrebleu' > /dev/null 2>&1").c_str()) != 0) {
    GTEST_SKIP() << "sacrebleu is not installed in " << python << " (scripts/setup.sh installs it)";
  }
  auto refs = brown_sentences(600);
  ASSERT_EQ(refs.size(), 600u);
  // Lines for the tokenizer's corner cases.
  refs.push_back("Prices rose 3.5% to $1,200.75 in 1961-62 -- see p. 4, \"Table 2\".");
  refs.push_back(
      "The caf\xc3\xa9 na\xc3\xafve r\xc3\xa9sum\xc3\xa9, \xe2\x80\x9cquoted\xe2\x80\x9d \xe2\x80\x94 dash.");
  refs.push_back("Tags &lt;b&gt; &amp; &quot;entities&quot; e.g. U.S.A. and 3.14.");
  std::mt19937 rng(7);
  std::vector<std::string> hyps;
  for (size_t i = 0; i < refs.size(); ++i) hyps.push_back(damage(refs[i], static_cast<int>(i % 5), rng));
  // A second reference stream for half the test: the sentence cut short.
  std::vector<std::string> refs2;
  for (const auto& r : refs) refs2.push_back(damage(r, 4, rng));

  const fs::path dir = fs::temp_directory_path() / ("moetrain_sacrebleu_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  auto write_lines = [&](const std::string& name, const std::vector<std::string>& lines) {
    std::ofstream out(dir / name);
    for (const auto& l : lines) out << l << "\n";
  };
  write_lines("hyp.txt", hyps);
  write_lines("ref.txt", refs);
  write_lines("ref2.txt", refs2);
  std::ofstream(dir / "score.py") << R"PY(
import sys
from sacrebleu.metrics import BLEU, CHRF
from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a
d = sys.argv[1]
read = lambda n: open(f"{d}/{n}", encoding="utf-8").read().split("\n")[:-1]
hyp, ref, ref2 = read("hyp.txt"), read("ref.txt"), read("ref2.txt")
print(BLEU().corpus_score(hyp, [ref]).score)
print(BLEU().corpus_score(hyp, [ref, ref2]).score)
print(CHRF().corpus_score(hyp, [ref]).score)
print(CHRF(word_order=2).corpus_score(hyp, [ref, ref2]).score)
tok = Tokenizer13a()
with open(f"{d}/tokens.txt", "w", encoding="utf-8") as out:
    for line in hyp + ref:
        out.write(tok(line.rstrip()) + "\n")
)PY";
  const std::string printed = run_command(python + " " + (dir / "score.py").string() + " " + dir.string());
  std::istringstream scores(printed);
  double bleu = -1, bleu2 = -1, chrf = -1, chrfpp = -1;
  scores >> bleu >> bleu2 >> chrf >> chrfpp;
  ASSERT_GE(chrfpp, 0) << "sacrebleu printed: " << printed;

  const auto ours = corpus_bleu(hyps, {refs});
  EXPECT_NEAR(ours.score, bleu, 0.01);
  EXPECT_NEAR(corpus_bleu(hyps, {refs, refs2}).score, bleu2, 0.01);
  EXPECT_NEAR(corpus_chrf(hyps, {refs}), chrf, 0.01);
  ChrfOptions plus;
  plus.word_order = 2;
  EXPECT_NEAR(corpus_chrf(hyps, {refs, refs2}, plus), chrfpp, 0.01);
  std::printf(
      "603 Brown sentence pairs: BLEU %.6f (sacrebleu %.6f), 2 refs %.6f (%.6f), chrF %.6f (%.6f), "
      "chrF++ 2 refs %.6f (%.6f)\n",
      ours.score, bleu, corpus_bleu(hyps, {refs, refs2}).score, bleu2, corpus_chrf(hyps, {refs}), chrf,
      corpus_chrf(hyps, {refs, refs2}, plus), chrfpp);
  // The scores are not trivially 0 or 100.
  EXPECT_GT(ours.score, 20.0);
  EXPECT_LT(ours.score, 95.0);

  std::ifstream tokens(dir / "tokens.txt");
  std::vector<std::string> all = hyps;
  all.insert(all.end(), refs.begin(), refs.end());
  std::string expected;
  for (const auto& line : all) {
    ASSERT_TRUE(std::getline(tokens, expected));
    EXPECT_EQ(tokenize_13a(line), expected) << "line: " << line;
  }
  for (const char* name : {"hyp.txt", "ref.txt", "ref2.txt", "score.py", "tokens.txt"}) {
    std::remove((dir / name).c_str());
  }
  ::rmdir(dir.c_str());
}

}  // namespace

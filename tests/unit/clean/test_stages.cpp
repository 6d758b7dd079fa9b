// Quality rules, keyword matching (domain, toxicity), mail extraction, the
// fastText classifier and augmentation, each on small real or realistic text.
#include <gtest/gtest.h>

#include <map>
#include <set>

#include "clean_test_support.h"
#include "data/clean/augment.h"
#include "data/clean/fasttext_classifier.h"
#include "data/clean/keyword_matcher.h"
#include "data/clean/mail_extract.h"
#include "data/clean/normalize.h"
#include "data/clean/quality.h"
#include "data/clean/text_units.h"

namespace moetrain::data::clean {
namespace {

TEST(clean_Quality, BrownProsePassesGopherAndBoilerplateDoesNot) {
  CLEAN_NEED_SHARED("brown.jsonl");
  int pass = 0, total = 0;
  for (const auto& rec : test::read_jsonl(test::shared_data("brown.jsonl"), 100)) {
    const std::string text = normalize_text(rec.at("text").get<std::string>());
    ++total;
    pass += gopher_quality(text, {}).empty() && gopher_repetition(text, {}).empty();
  }
  EXPECT_GE(pass, total * 9 / 10) << "edited prose should pass the Gopher rules";

  EXPECT_EQ(gopher_quality("Buy now. Cheap pills.", {}), "gopher_too_few_words");
  std::string hashes;
  for (int i = 0; i < 60; ++i) hashes += "#tag" + std::to_string(i) + " the ";
  EXPECT_EQ(gopher_quality(hashes, {}), "gopher_hash_ratio");
  std::string repeated;
  for (int i = 0; i < 20; ++i) repeated += "Click here to subscribe to our newsletter today.\n\n";
  EXPECT_EQ(gopher_repetition(repeated, {}), "gopher_dup_para_frac");
  std::string lines;
  for (int i = 0; i < 20; ++i)
    lines += "Click here to subscribe to our newsletter number " + std::to_string(i % 5) + ".\n";
  EXPECT_EQ(gopher_repetition(lines, {}), "gopher_dup_line_frac");
}

TEST(clean_Quality, C4DropsBadLinesAndFineWebCatchesLists) {
  std::string text =
      "Home | About | Contact\nThe council met on Tuesday and agreed to the plan.\nPlease enable JavaScript to view "
      "this page.\nIt will cost the town a great deal of money.\nThe work starts in May and ends in June.\nMembers "
      "asked for a report on the costs.\nThe chairman thanked everyone for coming.\nRead our privacy policy.";
  EXPECT_EQ(c4_quality(text, {}), "");
  EXPECT_EQ(text.find("Home |"), std::string::npos);
  EXPECT_EQ(text.find("JavaScript"), std::string::npos);
  EXPECT_EQ(text.find("privacy"), std::string::npos);
  EXPECT_NE(text.find("The council met"), std::string::npos);
  std::string code = "The function is written as follows in the file.\nint main() { return 0; }.\nIt works well.";
  EXPECT_EQ(c4_quality(code, {}), "c4_curly_bracket");
  std::string list;
  for (int i = 0; i < 30; ++i) list += "item " + std::to_string(i) + "\n";
  EXPECT_EQ(fineweb_quality(list, {}), "fineweb_line_punct_ratio");
}

TEST(clean_Quality, ChineseTextIsCountedInCharacters) {
  CLEAN_NEED_SHARED("zh_fortunes.jsonl");
  int long_pass = 0, long_total = 0;
  std::map<std::string, int> reasons;
  for (const auto& rec : test::read_jsonl(test::shared_data("zh_fortunes.jsonl"), 300)) {
    const std::string text = normalize_text(rec.at("text").get<std::string>());
    if (count_chars(text) < 150) continue;
    ++long_total;
    const std::string reason = gopher_quality(text, {});
    long_pass += reason.empty();
    ++reasons[reason.empty() ? "pass" : reason];
  }
  for (const auto& [r, n] : reasons) std::printf("zh gopher_quality: %s %d\n", r.c_str(), n);
  ASSERT_GT(long_total, 10);
  EXPECT_GE(long_pass, long_total / 2) << "longer Chinese prose should mostly pass the character-based rules";
}

TEST(clean_Keywords, WordBoundariesPhrasesAndCjk) {
  KeywordMatcher m({"ass", "privacy policy", "傻逼"});
  EXPECT_EQ(m.count("A class on mass transit."), 0u);
  EXPECT_EQ(m.count("You ASS! Read the Privacy  Policy."), 2u);
  EXPECT_EQ(m.count("你这个傻逼。"), 1u);
  const auto hits = m.find_all("Ünïcode ass here");
  ASSERT_EQ(hits.size(), 1u);
  EXPECT_EQ(std::string("Ünïcode ass here").substr(hits[0].begin, hits[0].end - hits[0].begin), "ass");
}

TEST(clean_MailExtract, MultipartQuotedPrintableAndHtml) {
  const std::string mail =
      "From someone@example.com  Thu Aug 22 12:36:23 2002\n"
      "Return-Path: <a@b.com>\nSubject: =?iso-8859-1?q?Caf=E9_news?=\n"
      "Content-Type: multipart/mixed; boundary=\"XX\"\n\npreamble\n--XX\n"
      "Content-Type: multipart/alternative; boundary=YY\n\n--YY\nContent-Type: text/plain; charset=iso-8859-1\n"
      "Content-Transfer-Encoding: quoted-printable\n\nPrix: 5 =E9cus, tr=\n=E8s bien.\n--YY\n"
      "Content-Type: text/html\n\n<p>HTML version</p>\n--YY--\n--XX\n"
      "Content-Type: text/html\n\n<html><head><style>p{}</style></head><body><p>Second&nbsp;part &amp; more"
      "</p><script>x()</script></body></html>\n--XX\nContent-Type: application/pdf\n"
      "Content-Disposition: attachment\nContent-Transfer-Encoding: base64\n\nJVBERi0=\n--XX--\n";
  const std::string text = normalize_text(extract_mail_text(mail));
  EXPECT_EQ(text, "Café news\n\nPrix: 5 écus, très bien.\n\nSecond part & more");
  EXPECT_EQ(decode_base64("aGVsbG8gd29ybGQ="), "hello world");
}

TEST(clean_MailExtract, RealSpamAssassinMessagesLoseTheirHeaders) {
  CLEAN_NEED_SHARED("spam_assassin.jsonl");
  for (const auto& rec : test::read_jsonl(test::shared_data("spam_assassin.jsonl"), 200)) {
    const std::string text = extract_mail_text(rec.at("text").get<std::string>());
    EXPECT_EQ(text.find("Return-Path:"), std::string::npos) << rec.at("id");
    EXPECT_EQ(text.find("Received: from"), std::string::npos) << rec.at("id");
    EXPECT_EQ(text.find("Content-Transfer-Encoding:"), std::string::npos) << rec.at("id");
  }
}

TEST(clean_FastText, HamSpamClassifierBeatsChance) {
  CLEAN_NEED_SHARED("spam_assassin.jsonl");
  std::vector<LabelledText> train, test_set;
  int k = 0;
  for (const auto& rec : test::read_jsonl(test::shared_data("spam_assassin.jsonl"))) {
    if (k++ % 4 != 0) continue;  // every 4th message keeps the test fast
    LabelledText ex{rec.at("label"), normalize_text(extract_mail_text(rec.at("text").get<std::string>()))};
    (k % 5 == 0 ? test_set : train).push_back(ex);
  }
  test::TempDir dir;
  auto model = FastTextClassifier::train(train, {}, dir.file("model"));
  model.save(dir.file("model.bin"));
  auto loaded = FastTextClassifier::load(dir.file("model.bin"));
  int correct = 0;
  for (const auto& ex : test_set) {
    const auto p = loaded.predict(ex.text);
    correct += !p.empty() && p[0].first == ex.label;
  }
  const double accuracy = static_cast<double>(correct) / test_set.size();
  std::printf("ham/spam held-out accuracy: %d/%zu = %.3f\n", correct, test_set.size(), accuracy);
  EXPECT_GE(accuracy, 0.9);
  const auto label_list = loaded.labels();
  const std::set<std::string> labels(label_list.begin(), label_list.end());
  EXPECT_EQ(labels, (std::set<std::string>{"ham", "spam"}));
  EXPECT_THROW(FastTextClassifier::load(dir.file("nothing.bin")), std::runtime_error);
  // The same data and seed give the same model, byte for byte.
  const std::vector<LabelledText> small(train.begin(), train.begin() + 200);
  FastTextTrainOptions quick;
  quick.epoch = 2;
  FastTextClassifier::train(small, quick, dir.file("a")).save(dir.file("a.bin"));
  FastTextClassifier::train(small, quick, dir.file("b")).save(dir.file("b.bin"));
  EXPECT_EQ(test::read_text(dir.file("a.bin")), test::read_text(dir.file("b.bin")));
}

TEST(clean_Augment, SeededReproducibleAndEntityConsistent) {
  CLEAN_NEED_SHARED("wordlists/male_first_names.txt");
  AugmentOptions o;
  o.seed = 5;
  o.name_files = {test::shared_data("wordlists/male_first_names.txt")};
  Augmenter a(o), b(o);
  const std::string text = "John said that the big house was very old. John bought a new car in the city.";
  for (const std::string op : {"synonym", "insert", "delete", "swap", "entity"}) {
    const auto x = a.apply(text, op, "doc1", 1);
    EXPECT_EQ(x, b.apply(text, op, "doc1", 1)) << op;
    EXPECT_NE(x, text) << op;
  }
  const std::string e = a.apply(text, "entity", "doc1", 1);
  EXPECT_EQ(e.find("John"), std::string::npos);
  const std::string first = e.substr(0, e.find(' '));
  EXPECT_NE(e.find(". " + first + " bought"), std::string::npos) << "the same name is replaced the same way: " << e;
  AugmentOptions other = o;
  other.seed = 6;
  EXPECT_NE(Augmenter(other).apply(text, "swap", "doc1", 1), a.apply(text, "swap", "doc1", 1));
}

}  // namespace
}  // namespace moetrain::data::clean

// PII acceptance: at least 100 planted values of each type in real e-mail
// text are found (recall >= 99% per type, no planted value left), clean prose
// (Brown) gets fewer than 1 replacement per 50,000 words, and a hostile 10 MB
// line scrubs in linear time.
#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <random>

#include "clean_test_support.h"
#include "data/clean/mail_extract.h"
#include "data/clean/normalize.h"
#include "data/clean/pii.h"
#include "data/clean/text_units.h"

namespace moetrain::data::clean {
namespace {

std::string digits(std::mt19937_64& rng, int n) {
  std::string s;
  for (int i = 0; i < n; ++i) s.push_back(static_cast<char>('0' + rng() % 10));
  return s;
}

std::string luhn_complete(const std::string& body) {
  for (char c = '0'; c <= '9'; ++c)
    if (luhn_valid(body + c)) return body + c;
  return "";
}

std::string cn_id(std::mt19937_64& rng) {
  static const int w[17] = {7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2};
  static const char check[11] = {'1', '0', 'X', '9', '8', '7', '6', '5', '4', '3', '2'};
  char date[16];
  std::snprintf(date, sizeof(date), "%04d%02d%02d", 1950 + static_cast<int>(rng() % 60),
                1 + static_cast<int>(rng() % 12), 1 + static_cast<int>(rng() % 28));
  std::string id = std::to_string(110000 + rng() % 800000) + date + digits(rng, 3);
  int sum = 0;
  for (int i = 0; i < 17; ++i) sum += (id[i] - '0') * w[i];
  return id + check[sum % 11];
}

// A value of `type` in one of its common written forms.
std::string make_value(const std::string& type, std::mt19937_64& rng, int k) {
  auto area = [&] { return std::to_string(2 + rng() % 8) + digits(rng, 2); };
  if (type == "email") {
    static const char* users[] = {"john.smith", "a_lee", "mary-k", "info", "x.y.z+tag"};
    static const char* hosts[] = {"example.com", "mail.co.uk", "uni-bonn.de", "qq.com", "corp.example.org"};
    return std::string(users[rng() % 5]) + std::to_string(k) + "@" + hosts[rng() % 5];
  }
  if (type == "phone") {
    switch (k % 6) {
      case 0: return "(" + area() + ") " + area() + "-" + digits(rng, 4);
      case 1: return area() + "-" + area() + "-" + digits(rng, 4);
      case 2: return "+1 " + area() + " " + area() + " " + digits(rng, 4);
      case 3: return "+44 20 " + digits(rng, 4) + " " + digits(rng, 4);
      case 4: return "+49 30 " + digits(rng, 8);
      default:
        return std::string(k % 2 ? "+86 " : "") + "13" + digits(rng, 1) + " " + digits(rng, 4) + " " + digits(rng, 4);
    }
  }
  if (type == "ipv4")
    return std::to_string(1 + rng() % 223) + "." + std::to_string(rng() % 256) + "." + std::to_string(rng() % 256) +
           "." + std::to_string(1 + rng() % 254);
  if (type == "ipv6") {
    char buf[64];
    if (k % 2)
      std::snprintf(buf, sizeof(buf), "2001:db8:%x:%x::%x", static_cast<unsigned>(rng() % 65536),
                    static_cast<unsigned>(rng() % 65536), static_cast<unsigned>(1 + rng() % 65535));
    else
      std::snprintf(buf, sizeof(buf), "fe80:0:0:0:%x:%x:%x:%x", static_cast<unsigned>(rng() % 65536),
                    static_cast<unsigned>(rng() % 65536), static_cast<unsigned>(rng() % 65536),
                    static_cast<unsigned>(1 + rng() % 65535));
    return buf;
  }
  if (type == "card") {
    const std::string card = luhn_complete((k % 2 ? "4" : "51") + digits(rng, k % 2 ? 14 : 13));
    if (k % 3 == 0)
      return card.substr(0, 4) + " " + card.substr(4, 4) + " " + card.substr(8, 4) + " " + card.substr(12);
    if (k % 3 == 1)
      return card.substr(0, 4) + "-" + card.substr(4, 4) + "-" + card.substr(8, 4) + "-" + card.substr(12);
    return card;
  }
  if (type == "ssn")
    return std::to_string(100 + rng() % 565) + "-" + std::to_string(10 + rng() % 89) + "-" +
           std::to_string(1000 + rng() % 8999);
  return cn_id(rng);  // cn_id
}

std::string placeholder_of(const std::string& type) {
  if (type == "email") return "<EMAIL>";
  if (type == "phone") return "<PHONE>";
  if (type == "ipv4" || type == "ipv6") return "<IP>";
  if (type == "card") return "<CARD>";
  if (type == "ssn") return "<SSN>";
  return "<ID>";
}

size_t count_of(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t p = text.find(needle); p != std::string::npos; p = text.find(needle, p + 1)) ++n;
  return n;
}

TEST(clean_Pii, ValidatorsAcceptRealFormsAndRejectNearMisses) {
  EXPECT_TRUE(luhn_valid("4111 1111 1111 1111"));
  EXPECT_FALSE(luhn_valid("4111 1111 1111 1112"));
  EXPECT_TRUE(cn_resident_id_valid("11010519491231002X"));
  EXPECT_FALSE(cn_resident_id_valid("110105194912310021"));
  EXPECT_TRUE(us_ssn_valid("123-45-6789"));
  EXPECT_FALSE(us_ssn_valid("666-45-6789"));
  EXPECT_FALSE(us_ssn_valid("123-00-6789"));
  PiiScrubber s;
  std::string t = "call 555-0100? no: (212) 555-0147 or mail bob@example.com; host 10.0.0.1, v6 ::1 and 2001:db8::1.";
  s.scrub(t);
  EXPECT_EQ(t, "call 555-0100? no: <PHONE> or mail <EMAIL>; host <IP>, v6 ::1 and <IP>.");
  std::string version = "version 1.2.3 at 12:30:45 on 1961-05-17, page 1234567890123";
  const std::string before = version;
  s.scrub(version);
  EXPECT_EQ(version, before);
}

TEST(clean_Pii, PlantedValuesInRealMailAreFound) {
  CLEAN_NEED_SHARED("spam_assassin.jsonl");
  std::vector<std::string> bodies;
  for (const auto& rec : test::read_jsonl(test::shared_data("spam_assassin.jsonl"), 400)) {
    std::string body = normalize_text(extract_mail_text(rec.at("text").get<std::string>()));
    if (body.size() > 200) bodies.push_back(body.substr(0, 4000));
  }
  ASSERT_GE(bodies.size(), 100u);
  PiiScrubber scrubber;
  std::mt19937_64 rng(2024);
  const std::vector<std::string> types = {"email", "phone", "ipv4", "ipv6", "card", "ssn", "cn_id"};
  const int per_type = 120;
  for (const auto& type : types) {
    int found = 0, left = 0;
    for (int k = 0; k < per_type; ++k) {
      const std::string& body = bodies[static_cast<size_t>(k) % bodies.size()];
      // Insert at a random word boundary.
      size_t at = body.find(' ', rng() % body.size());
      if (at == std::string::npos) at = body.size();
      const std::string value = make_value(type, rng, k);
      std::string planted = body.substr(0, at) + " " + value + " " + body.substr(at);
      std::string baseline = body;
      std::map<std::string, long> base_counts, counts;
      scrubber.scrub(baseline, &base_counts);
      scrubber.scrub(planted, &counts);
      const std::string ph = placeholder_of(type);
      if (planted.find(value) != std::string::npos) {
        ++left;
        ADD_FAILURE() << type << " value left in output: " << value;
      } else if (count_of(planted, ph) == count_of(baseline, ph) + 1) {
        ++found;
      } else {
        ADD_FAILURE() << type << " value " << value << " removed under another placeholder";
      }
    }
    const double recall = static_cast<double>(found) / per_type;
    std::printf("pii recall %-6s %d/%d = %.3f\n", type.c_str(), found, per_type, recall);
    EXPECT_GE(recall, 0.99) << type;
    EXPECT_EQ(left, 0) << type;
  }
}

TEST(clean_Pii, CleanProseHasAlmostNoReplacements) {
  CLEAN_NEED_SHARED("brown.jsonl");
  PiiScrubber scrubber;
  size_t words = 0;
  std::map<std::string, long> counts;
  for (const auto& rec : test::read_jsonl(test::shared_data("brown.jsonl"))) {
    std::string text = rec.at("text");
    words += split_words(text).size();
    scrubber.scrub(text, &counts);
  }
  long total = 0;
  for (const auto& [type, n] : counts) {
    std::printf("brown false positives: %s %ld\n", type.c_str(), n);
    total += n;
  }
  const double per_50k = static_cast<double>(total) * 50000.0 / static_cast<double>(words);
  std::printf("brown: %zu words, %ld replacements, %.3f per 50,000 words\n", words, total, per_50k);
  EXPECT_GT(words, 900000u);
  EXPECT_LT(per_50k, 1.0);
}

TEST(clean_Pii, HostileTenMegabyteLinesScrubInLinearTime) {
  PiiScrubber scrubber;
  const size_t n = 10u << 20;
  for (const std::string unit : {"1", "1-", "a@", "1.", "+1 ", ":a"}) {
    std::string line;
    line.reserve(n + unit.size());
    while (line.size() < n) line += unit;
    const auto start = std::chrono::steady_clock::now();
    scrubber.scrub(line);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("hostile line of '%s': %.2f s\n", unit.c_str(), s);
    EXPECT_LT(s, 20.0) << unit;
  }
}

}  // namespace
}  // namespace moetrain::data::clean

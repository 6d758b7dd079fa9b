// PII scrubbing with RE2 (see pii.h). Each rule is one RE2 pattern with one
// capturing group (the value) plus context that RE2 can check without
// look-behind: a leading "(?:^|[^...])" guard is matched and not replaced.
// A candidate that fails its validator is skipped and the search resumes
// at its next digit group a few times, then after it, so rejected candidates
// cost linear time too.
#include "data/clean/pii.h"

#include <arpa/inet.h>
#include <re2/re2.h>

#include <algorithm>
#include <functional>
#include <stdexcept>

namespace moetrain::data::clean {

struct PiiScrubber::Rule {
  std::string type;
  std::string placeholder;
  std::unique_ptr<RE2> re;
  std::function<bool(const std::string&)> valid;  // null: every match counts
};

namespace {

std::string digits_of(const std::string& s) {
  std::string d;
  for (char c : s)
    if (c >= '0' && c <= '9') d.push_back(c);
  return d;
}

bool is_digit(char c) { return c >= '0' && c <= '9'; }
constexpr int kMaxRetries = 2;

bool ipv6_valid(const std::string& s) {
  unsigned char buf[16];
  if (inet_pton(AF_INET6, s.c_str(), buf) != 1) return false;
  // Short forms such as "3:20::" (a verse reference) parse as IPv6 too: ask
  // for four groups, or a group of three or more hex digits ("fe80::1").
  int groups = 0, run = 0, longest = 0;
  for (char c : s) {
    const bool hex = (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'f');
    if (hex && run == 0) ++groups;
    run = hex ? run + 1 : 0;
    longest = std::max(longest, run);
  }
  return groups >= 4 || (groups >= 2 && longest >= 3);
}

bool nanp_valid(const std::string& s) {
  std::string d = digits_of(s);
  if (d.size() == 11 && d[0] == '1') d.erase(0, 1);
  if (d.size() != 10) return false;
  // Area code and exchange start 2-9 (the pattern checks), and a bare run of
  // ten digits is too often something else: ask for a separator or '+'.
  return s.find_first_of(" .-()+") != std::string::npos;
}

bool international_valid(const std::string& s) {
  const size_t n = digits_of(s).size();
  return n >= 8 && n <= 15;
}

}  // namespace

bool luhn_valid(const std::string& input) {
  const std::string d = digits_of(input);
  if (d.size() < 13 || d.size() > 19) return false;
  int sum = 0;
  bool twice = false;
  for (size_t i = d.size(); i-- > 0;) {
    int v = d[i] - '0';
    if (twice) {
      v *= 2;
      if (v > 9) v -= 9;
    }
    sum += v;
    twice = !twice;
  }
  return sum % 10 == 0;
}

bool cn_resident_id_valid(const std::string& id) {
  if (id.size() != 18) return false;
  static const int kWeights[17] = {7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2};
  static const char kCheck[11] = {'1', '0', 'X', '9', '8', '7', '6', '5', '4', '3', '2'};
  int sum = 0;
  for (int i = 0; i < 17; ++i) {
    if (id[i] < '0' || id[i] > '9') return false;
    sum += (id[i] - '0') * kWeights[i];
  }
  const char last = id[17] == 'x' ? 'X' : id[17];
  if (last != kCheck[sum % 11]) return false;
  const int year = std::stoi(id.substr(6, 4)), month = std::stoi(id.substr(10, 2)), day = std::stoi(id.substr(12, 2));
  return year >= 1900 && year <= 2099 && month >= 1 && month <= 12 && day >= 1 && day <= 31;
}

bool us_ssn_valid(const std::string& ssn) {
  if (ssn.size() != 11) return false;
  const std::string area = ssn.substr(0, 3), group = ssn.substr(4, 2), serial = ssn.substr(7, 4);
  return area != "000" && area != "666" && area[0] != '9' && group != "00" && serial != "0000";
}

const std::vector<std::string>& pii_type_names() {
  static const std::vector<std::string> names = {"email", "ipv6", "ipv4", "cn_id", "card", "ssn", "phone"};
  return names;
}

PiiScrubber::PiiScrubber(const std::vector<std::string>& types) {
  auto wanted = [&](const std::string& t) {
    return types.empty() || std::find(types.begin(), types.end(), t) != types.end();
  };
  for (const auto& t : types)
    if (std::find(pii_type_names().begin(), pii_type_names().end(), t) == pii_type_names().end())
      throw std::invalid_argument("pii: unknown type '" + t + "' (types: email, phone, ipv4, ipv6, card, ssn, cn_id)");
  RE2::Options options;
  options.set_max_mem(64 << 20);
  options.set_log_errors(false);
  auto add = [&](const std::string& type, const std::string& placeholder, const std::string& pattern,
                 std::function<bool(const std::string&)> valid) {
    auto rule = std::make_unique<Rule>();
    rule->type = type;
    rule->placeholder = placeholder;
    rule->re = std::make_unique<RE2>(pattern, options);
    if (!rule->re->ok()) throw std::logic_error("pii: bad pattern for " + type + ": " + rule->re->error());
    rule->valid = std::move(valid);
    rules_.push_back(std::move(rule));
  };
  // Digits must not touch other digits or letters; the guard before the value
  // is part of the match, the one after it too (RE2 has no look-around).
  const std::string before = "(?:^|[^0-9A-Za-z_+])";
  const std::string after = "(?:$|[^0-9A-Za-z_])";
  if (wanted("email"))
    add("email", "<EMAIL>",
        "(?:^|[^A-Za-z0-9._%+\\-])([A-Za-z0-9][A-Za-z0-9._%+\\-]*@[A-Za-z0-9](?:[A-Za-z0-9\\-]*[A-Za-z0-9])?"
        "(?:\\.[A-Za-z0-9](?:[A-Za-z0-9\\-]*[A-Za-z0-9])?)*\\.[A-Za-z]{2,24})(?:$|[^A-Za-z0-9\\-])",
        nullptr);
  if (wanted("ipv6"))
    add("ipv6", "<IP>",
        "(?:^|[^0-9A-Za-z_:.])((?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|(?:[0-9]{1,3}\\.){3}[0-9]{1,3})?)"
        "(?:$|[^0-9A-Za-z_:])",
        ipv6_valid);
  if (wanted("ipv4"))
    add("ipv4", "<IP>",
        "(?:^|[^0-9A-Za-z_.])((?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\\.){3}"
        "(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9]))(?:$|[^0-9A-Za-z_]|\\.[^0-9])",
        nullptr);
  if (wanted("cn_id")) add("cn_id", "<ID>", before + "([1-9][0-9]{16}[0-9Xx])" + after, cn_resident_id_valid);
  if (wanted("card")) add("card", "<CARD>", before + "([0-9](?:[ \\-]?[0-9]){12,18})" + after, luhn_valid);
  if (wanted("ssn")) add("ssn", "<SSN>", before + "([0-9]{3}-[0-9]{2}-[0-9]{4})" + after, us_ssn_valid);
  if (wanted("phone")) {
    // Chinese mobile numbers, then international "+CC" forms, then North American.
    add("phone", "<PHONE>", "(?:^|[^0-9A-Za-z_])((?:\\+?86[ \\-]?)?1[3-9][0-9][ \\-]?[0-9]{4}[ \\-]?[0-9]{4})" + after,
        nullptr);
    add("phone", "<PHONE>", "(?:^|[^0-9A-Za-z_+])(\\+[1-9][0-9]{0,2}(?:[ .\\-]?\\(?[0-9]{1,4}\\)?){2,5})" + after,
        international_valid);
    add("phone", "<PHONE>",
        "(?:^|[^0-9A-Za-z_])((?:\\+?1[ .\\-]?)?(?:\\([2-9][0-9]{2}\\)|[2-9][0-9]{2})[ .\\-]?[2-9][0-9]{2}[ "
        ".\\-]?[0-9]{4})" +
            after,
        nanp_valid);
  }
}

PiiScrubber::~PiiScrubber() = default;

void PiiScrubber::scrub(std::string& text, std::map<std::string, long>* counts) const {
  for (const auto& rule : rules_) {
    // Cheap pre-checks: most rules need a digit, e-mail needs '@'.
    if (rule->type == "email" ? text.find('@') == std::string::npos
                              : text.find_first_of("0123456789") == std::string::npos)
      continue;
    std::string out;
    bool changed = false;
    size_t copied = 0, pos = 0;
    long found = 0;
    size_t failed_end = 0;
    int retries = 0;
    const re2::StringPiece input(text);
    re2::StringPiece groups[2];
    while (pos <= text.size() && rule->re->Match(input, pos, text.size(), RE2::UNANCHORED, groups, 2)) {
      const size_t begin = static_cast<size_t>(groups[1].data() - text.data());
      const size_t end = begin + groups[1].size();
      if (rule->valid && !rule->valid(std::string(groups[1].data(), groups[1].size()))) {
        // Retry from the next group of the rejected candidate ("2002 4111 1111
        // 1111 1111": the card starts at its second group), a few times; then
        // skip the candidate, so a long run of digit groups costs a few
        // regex calls per candidate, not one per character.
        size_t next = begin + 1;
        while (next < end && !(is_digit(text[next]) && !is_digit(text[next - 1]))) ++next;
        retries = (next < end && begin < failed_end) ? retries + 1 : 0;
        failed_end = std::max(failed_end, end);
        pos = (next < end && retries <= kMaxRetries) ? next - 1 : end;  // keep the guard character
        if (pos <= static_cast<size_t>(groups[0].data() - text.data())) pos = end;
        continue;
      }
      if (!changed) out.reserve(text.size());
      changed = true;
      out.append(text, copied, begin - copied);
      out += rule->placeholder;
      copied = end;
      pos = end;
      ++found;
    }
    if (!changed) continue;
    out.append(text, copied, std::string::npos);
    text = std::move(out);
    if (counts) (*counts)[rule->type] += found;
  }
}

}  // namespace moetrain::data::clean

// PII scrubbing: finds personal data and replaces each value with a typed
// placeholder. Types, their placeholders and what validates a match:
//   email   <EMAIL>  local@domain.tld
//   phone   <PHONE>  North American (NXX-NXX-XXXX, optional +1 and brackets),
//                    international "+CC ..." (8-15 digits), Chinese mobile
//                    (1[3-9]X XXXX XXXX, optional +86)
//   ipv4    <IP>     dotted quad, each part 0-255
//   ipv6    <IP>     any form inet_pton accepts, with four groups or a
//                    group of three or more hex digits
//   card    <CARD>   13-19 digits (spaces or dashes allowed) passing Luhn
//   ssn     <SSN>    US social security number AAA-GG-SSSS, valid area/group/serial
//   cn_id   <ID>     Chinese resident identity number: 17 digits + check
//                    character (ISO 7064 MOD 11-2) with a valid birth date
// Numbers must not touch other digits or letters (a 12-digit run is not a
// phone number inside a 30-digit one). Matching uses RE2, linear in the input,
// so any input (a 10 MB line of digits included) scrubs in linear time.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

namespace moetrain::data::clean {

// Every type name, in the order they are applied.
const std::vector<std::string>& pii_type_names();

class PiiScrubber {
 public:
  // `types`: names from pii_type_names(); empty means all. Throws
  // std::invalid_argument naming an unknown type.
  explicit PiiScrubber(const std::vector<std::string>& types = {});
  ~PiiScrubber();
  PiiScrubber(const PiiScrubber&) = delete;
  PiiScrubber& operator=(const PiiScrubber&) = delete;

  // Replaces every value in `text`; adds the number replaced per type to `counts`.
  void scrub(std::string& text, std::map<std::string, long>* counts = nullptr) const;

 private:
  struct Rule;
  std::vector<std::unique_ptr<Rule>> rules_;
};

// Validators (exposed for tests).
bool luhn_valid(const std::string& digits);
bool cn_resident_id_valid(const std::string& id);
bool us_ssn_valid(const std::string& ssn);  // "AAA-GG-SSSS"

}  // namespace moetrain::data::clean

// Fuzz target: the PII scrubber (data/clean/pii.h).
//
// Input: one byte choosing the PII types (bit i: pii_type_names()[i]; no bit
// set: all of them), then the text to scrub. The target scrubs it and checks
// the validators on the same text.
//
// A bug: a crash, a sanitizer report, a hang (the scrubber promises linear
// time whatever the input; libFuzzer's -timeout catches the worst cases),
// any exception (none is documented for valid type names), output that is not
// valid UTF-8 for valid UTF-8 input, a type counted with no replacement, or
// a text that changed with nothing counted (or the reverse).
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "data/clean/pii.h"
#include "data/jsonl_reader.h"
#include "tests/fuzz/fuzz_support.h"

namespace {

namespace clean = moetrain::data::clean;

// One scrubber per type set, built once: building compiles every RE2.
const clean::PiiScrubber& scrubber_for(uint8_t mask) {
  static std::map<uint8_t, std::unique_ptr<clean::PiiScrubber>> scrubbers;
  auto& s = scrubbers[mask];
  if (!s) {
    std::vector<std::string> types;
    const auto& names = clean::pii_type_names();
    for (size_t i = 0; i < names.size(); ++i)
      if (mask & (1u << i)) types.push_back(names[i]);
    s = std::make_unique<clean::PiiScrubber>(types);
  }
  return *s;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t mask = data[0] & 0x7F;
  const std::string input(reinterpret_cast<const char*>(data) + 1, size - 1);
  std::string text = input;
  std::map<std::string, long> counts;
  scrubber_for(mask).scrub(text, &counts);

  long total = 0;
  for (const auto& [type, n] : counts) {
    FUZZ_CHECK(n > 0, "a type counted with no replacement: " + type);
    total += n;
  }
  FUZZ_CHECK((total == 0) == (text == input), "the text changed with nothing counted, or the reverse");
  if (moetrain::data::is_valid_utf8(input))
    FUZZ_CHECK(moetrain::data::is_valid_utf8(text), "scrubbing made invalid UTF-8 of valid UTF-8");

  clean::luhn_valid(input);
  clean::cn_resident_id_valid(input);
  clean::us_ssn_valid(input);
  return 0;
}

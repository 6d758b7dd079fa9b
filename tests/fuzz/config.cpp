// Fuzz target: the config loader (config/load.h), YAML text and --set flags.
//
// Input: a YAML config, in which every line starting with "--set " is taken
// out of the document and becomes one override (the rest of the line, as
// `moetrain train --set KEY=VALUE` passes it). The target runs
//   load_config(file, overrides)     the CLI's path: the YAML written to a file
//   load_config_text(yaml)           the path a checkpoint's meta.json takes
// and, when a config loads, checks that its resolved YAML (config_to_yaml,
// what a checkpoint records) loads again and writes back the same text.
//
// A bug: a crash, a sanitizer report, a hang, an exception other than
// ConfigError (the documented answer to a bad config), or a resolved config
// that does not load back as itself.
#include <cstddef>
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include "config/load.h"
#include "tests/fuzz/fuzz_support.h"

namespace {

using moetrain::config::Config;
using moetrain::config::ConfigError;

void check_round_trip(const Config& config) {
  const std::string text = moetrain::config::config_to_yaml(config);
  Config again;
  try {
    again = moetrain::config::load_config_text(text, "resolved");
  } catch (const ConfigError& e) {
    FUZZ_CHECK(false, std::string("the resolved config does not load: ") + e.what() + "\n" + text);
  }
  const std::string text_again = moetrain::config::config_to_yaml(again);
  FUZZ_CHECK(text_again == text, "resolved config changed on reload:\n" + text + "\n-----\n" + text_again);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  std::string yaml;
  std::vector<std::string> overrides;
  std::istringstream lines(input);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("--set ", 0) == 0) {
      overrides.push_back(line.substr(6));
    } else {
      yaml += line;
      yaml += '\n';
    }
  }

  const std::string path = moetrain::fuzz::write_scratch_file("config.yaml", yaml);
  try {
    moetrain::config::ConfigSource source;
    const Config config = moetrain::config::load_config(path, overrides, &source);
    check_round_trip(config);
  } catch (const ConfigError&) {
  }
  if (overrides.empty()) return 0;  // the text alone was just read from the file
  try {
    const Config config = moetrain::config::load_config_text(yaml, "text");
    check_round_trip(config);
  } catch (const ConfigError&) {
  }
  return 0;
}

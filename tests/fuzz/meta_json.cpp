// Fuzz target: a checkpoint's meta.json (checkpoint/directory.h).
//
// Input: the bytes of meta.json, written into a checkpoint folder. The target
// runs what reads it on resume and export: read_checkpoint_meta (the JSON),
// read_checkpoint_config and checkpoint_lora_scale (the run's config, YAML
// text in a JSON string) and checkpoint_phase (the phase that wrote it).
//
// A bug: a crash, a sanitizer report, a hang, or an exception other than
// CheckpointError (missing or malformed meta.json) and ConfigError (a bad
// recorded config), the errors these functions document.
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>

#include "checkpoint/directory.h"
#include "tests/fuzz/fuzz_support.h"

namespace {

const std::string& checkpoint_dir() {
  static const std::string dir = [] {
    const std::string d = moetrain::fuzz::scratch_dir() + "/step-000020";
    std::filesystem::create_directories(d);
    return d;
  }();
  return dir;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using moetrain::checkpoint::CheckpointError;
  using moetrain::config::ConfigError;
  const std::string& dir = checkpoint_dir();
  moetrain::fuzz::write_scratch_file("step-000020/meta.json", data, size);
  try {
    moetrain::checkpoint::read_checkpoint_meta(dir);
  } catch (const CheckpointError&) {
    return 0;  // every other reader starts with read_checkpoint_meta
  }
  try {
    moetrain::checkpoint::read_checkpoint_config(dir);
    moetrain::checkpoint::checkpoint_lora_scale(dir);
  } catch (const ConfigError&) {
  }
  try {
    moetrain::checkpoint::checkpoint_phase(dir);
  } catch (const CheckpointError&) {
  }
  return 0;
}

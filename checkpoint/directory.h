// Checkpoint directories: names, finding the newest complete one, resolving
// what a user passes (a checkpoint, a checkpoints/ folder or a run folder),
// and what meta.json records. The files inside are checkpoint.h's.
//
// A checkpoint is OUTPUT/checkpoints/step-NNNNNN/; it is complete once its
// meta.json exists (written last), and `checkpoints/latest` names the newest.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "config/config.h"

namespace moetrain::checkpoint {

class CheckpointError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

std::string checkpoint_name(int64_t step);  // "step-000020"
std::string rank_file_name(int64_t rank);   // "rank-00003.h5"

// The step of a directory called step-NNNNNN (-1 for any other name), and
// whether it is complete (holds meta.json).
int64_t checkpoint_step(const std::string& dir);
bool is_complete_checkpoint(const std::string& dir);

// The complete checkpoints under `checkpoints_dir` as (step, directory),
// oldest first; none when the folder does not exist.
std::vector<std::pair<int64_t, std::string>> complete_checkpoints(const std::string& checkpoints_dir);

// The newest complete checkpoint under `checkpoints_dir`, if any.
std::optional<std::string> find_latest_checkpoint(const std::string& checkpoints_dir);

// OUTPUT/checkpoints for a run's output directory.
std::string checkpoints_dir_of(const std::string& output_dir);

// Accepts a checkpoint directory, a checkpoints/ directory or a run's output
// directory; returns the checkpoint directory to load. Throws CheckpointError.
std::string resolve_checkpoint_path(const std::string& path);

// A checkpoint's meta.json. Throws CheckpointError when missing or malformed.
nlohmann::json read_checkpoint_meta(const std::string& dir);

// The integer `key` of `object` (a part of meta.json), or `fallback` when it
// is absent. Throws CheckpointError naming `where` (the file) when the value
// is not an integer an int64 holds: a string, a float, 1e300.
int64_t meta_int(const nlohmann::json& object, const std::string& key, int64_t fallback, const std::string& where);
// The same for a key that must be present.
int64_t meta_int(const nlohmann::json& object, const std::string& key, const std::string& where);

// The run config a checkpoint's meta.json records (none when it records no
// config). Throws ConfigError naming meta.json when the recorded one is bad.
std::optional<config::Config> read_checkpoint_config(const std::string& dir);

// The LoRA scale a checkpoint's run trained with (from its recorded config):
// 0 when it was not a LoRA run.
double checkpoint_lora_scale(const std::string& dir);

// The index of the phase (Config::phases) that wrote a checkpoint; -1 for a
// run without phases.
int64_t checkpoint_phase(const std::string& dir);

}  // namespace moetrain::checkpoint

#include "checkpoint/directory.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <regex>

#include "config/config.h"
#include "config/load.h"

namespace fs = std::filesystem;

namespace moetrain::checkpoint {

int64_t checkpoint_step(const std::string& dir) {
  static const std::regex pattern("step-([0-9]+)");
  std::smatch m;
  const std::string name = fs::path(dir).filename().string();
  if (!std::regex_match(name, m, pattern)) return -1;
  return std::stoll(m[1]);
}

bool is_complete_checkpoint(const std::string& dir) { return fs::is_regular_file(fs::path(dir) / "meta.json"); }

std::string checkpoint_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "step-%06lld", static_cast<long long>(step));
  return buf;
}

std::vector<std::pair<int64_t, std::string>> complete_checkpoints(const std::string& checkpoints_dir) {
  std::vector<std::pair<int64_t, std::string>> complete;
  if (!fs::is_directory(checkpoints_dir)) return complete;
  for (const auto& entry : fs::directory_iterator(checkpoints_dir)) {
    const std::string dir = entry.path().string();
    const int64_t step = checkpoint_step(dir);
    if (entry.is_directory() && step >= 0 && is_complete_checkpoint(dir)) complete.emplace_back(step, dir);
  }
  std::sort(complete.begin(), complete.end());
  return complete;
}

std::optional<std::string> find_latest_checkpoint(const std::string& checkpoints_dir) {
  const auto complete = complete_checkpoints(checkpoints_dir);
  if (complete.empty()) return std::nullopt;
  return complete.back().second;
}

std::string checkpoints_dir_of(const std::string& output_dir) {
  return (fs::path(output_dir) / "checkpoints").string();
}

std::string resolve_checkpoint_path(const std::string& path) {
  if (!fs::exists(path)) throw CheckpointError("checkpoint not found: " + path);
  if (checkpoint_step(path) >= 0 || is_complete_checkpoint(path)) {
    if (!is_complete_checkpoint(path)) {
      throw CheckpointError("checkpoint " + path + " is incomplete (no meta.json)");
    }
    return path;
  }
  for (const fs::path& candidate : {fs::path(path), fs::path(path) / "checkpoints"}) {
    if (auto latest = find_latest_checkpoint(candidate.string())) return *latest;
  }
  throw CheckpointError("no complete checkpoint under " + path);
}

std::string rank_file_name(int64_t rank) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "rank-%05lld.h5", static_cast<long long>(rank));
  return buf;
}

nlohmann::json read_checkpoint_meta(const std::string& dir) {
  const fs::path meta_path = fs::path(dir) / "meta.json";
  if (!fs::is_regular_file(meta_path)) throw CheckpointError("checkpoint " + dir + " is incomplete (no meta.json)");
  try {
    std::ifstream in(meta_path);
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw CheckpointError(meta_path.string() + ": malformed: " + e.what());
  }
}

int64_t meta_int(const nlohmann::json& object, const std::string& key, const std::string& where) {
  if (!object.is_object() || !object.contains(key)) throw CheckpointError(where + ": no '" + key + "'");
  const nlohmann::json& v = object.at(key);
  const bool fits =
      v.is_number_integer() && (!v.is_number_unsigned() || v.get<uint64_t>() <= static_cast<uint64_t>(INT64_MAX));
  if (!fits) throw CheckpointError(where + ": '" + key + "' is " + v.dump() + ", not an integer");
  return v.get<int64_t>();
}

int64_t meta_int(const nlohmann::json& object, const std::string& key, int64_t fallback, const std::string& where) {
  if (!object.is_object() || !object.contains(key)) return fallback;
  return meta_int(object, key, where);
}

std::optional<config::Config> read_checkpoint_config(const std::string& dir) {
  const nlohmann::json meta = read_checkpoint_meta(dir);
  if (!meta.contains("config") || !meta["config"].is_string()) return std::nullopt;
  return config::load_config_text(meta["config"].get<std::string>(),
                                  (fs::path(dir) / "meta.json").string() + " (config)");
}

double checkpoint_lora_scale(const std::string& dir) {
  const auto config = read_checkpoint_config(dir);
  return config && config->finetune.mode == config::FinetuneMode::Lora ? config->lora.scale() : 0;
}

int64_t checkpoint_phase(const std::string& dir) {
  const nlohmann::json meta = read_checkpoint_meta(dir);
  if (!meta.contains("phase") || !meta["phase"].is_object()) return -1;
  return meta_int(meta["phase"], "index", -1, (fs::path(dir) / "meta.json").string() + " (phase)");
}

}  // namespace moetrain::checkpoint

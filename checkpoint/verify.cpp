#include "checkpoint/verify.h"

#include <filesystem>
#include <iostream>
#include <regex>
#include <set>

#include "checkpoint/directory.h"
#include "checkpoint/rank_file.h"
#include "parallel/byte_exchange.h"

namespace fs = std::filesystem;

namespace moetrain::checkpoint {

bool CheckpointCheck::ok() const { return first_problem().empty(); }

std::string CheckpointCheck::first_problem() const {
  if (!problems.empty()) return problems.front();
  for (const auto& f : files) {
    if (!f.problems.empty()) return f.problems.front();
  }
  return "";
}

namespace {

// The root attribute `key` of a rank file, if it has one that is readable.
std::optional<int64_t> root_int(data::Hdf5File& file, const std::string& key) {
  try {
    if (file.has_attr("/", key)) return file.attr_int("/", key);
  } catch (const data::Hdf5Error&) {
  }
  return std::nullopt;
}

// meta.json's own checks: its step and world size against the directory's
// name and its file list, and its file list against the rank files present.
std::vector<std::string> check_file_list(const std::string& dir, const nlohmann::json& meta,
                                         const std::vector<std::string>& listed) {
  std::vector<std::string> problems;
  const std::string meta_path = (fs::path(dir) / "meta.json").string();
  const int64_t named_step = checkpoint_step(dir), step = meta_int(meta, "step", -1, meta_path);
  if (named_step >= 0 && step != named_step) {
    problems.push_back(meta_path + ": records step " + std::to_string(step) + " but the directory is step " +
                       std::to_string(named_step));
  }
  if (meta.contains("world_size") && meta["world_size"] != static_cast<int64_t>(listed.size())) {
    problems.push_back(meta_path + ": records " + meta["world_size"].dump() + " ranks but lists " +
                       std::to_string(listed.size()) + " rank files");
  }
  const std::set<std::string> names(listed.begin(), listed.end());
  static const std::regex rank_file_pattern("rank-[0-9]+\\.h5");
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (std::regex_match(name, rank_file_pattern) && names.count(name) == 0) {
      problems.push_back((fs::path(dir) / name).string() + ": a rank file meta.json does not list");
    }
  }
  return problems;
}

}  // namespace

RankFileCheck verify_rank_file(const std::string& path, int64_t rank, int64_t step) {
  RankFileCheck check;
  check.name = fs::path(path).filename().string();
  if (!fs::is_regular_file(path)) {
    check.problems.push_back(path + ": missing rank file");
    return check;
  }
  try {
    RankFileReader reader(path);
    check.checksums = reader.checked();
    for (const auto& dataset : reader.datasets()) {
      try {
        reader.holds(dataset);  // names a listed dataset the file has lost
        const torch::Tensor values = reader.read(dataset);
        check.bytes += values.numel() * values.element_size();
        ++check.datasets;
      } catch (const CheckpointError& e) {
        check.problems.push_back(e.what());
      }
    }
    const auto file_step = root_int(reader.file(), "step"), file_rank = root_int(reader.file(), "rank");
    if (file_step != step || (file_rank && file_rank != rank)) {
      check.problems.push_back(path + ": says it is rank " + (file_rank ? std::to_string(*file_rank) : "?") +
                               " of step " + (file_step ? std::to_string(*file_step) : "?") + ", wanted rank " +
                               std::to_string(rank) + " of step " + std::to_string(step));
    }
  } catch (const CheckpointError& e) {
    check.problems.push_back(e.what());
  }
  return check;
}

CheckpointCheck verify_checkpoint(const std::string& dir, const std::function<bool(int64_t)>& reads_file) {
  CheckpointCheck check;
  check.dir = dir;
  std::vector<std::string> listed;
  try {
    const nlohmann::json meta = read_checkpoint_meta(dir);
    check.step = meta_int(meta, "step", (fs::path(dir) / "meta.json").string());
    listed = meta.at("files").get<std::vector<std::string>>();
    check.problems = check_file_list(dir, meta, listed);
  } catch (const CheckpointError& e) {
    check.problems.push_back(e.what());
    return check;
  } catch (const nlohmann::json::exception& e) {
    check.problems.push_back((fs::path(dir) / "meta.json").string() + ": malformed: " + e.what());
    return check;
  }
  if (listed.empty()) check.problems.push_back((fs::path(dir) / "meta.json").string() + ": lists no rank files");
  for (size_t i = 0; i < listed.size(); ++i) {
    const auto index = static_cast<int64_t>(i);
    if (reads_file && !reads_file(index)) continue;
    check.files.push_back(verify_rank_file((fs::path(dir) / listed[i]).string(), index, check.step));
  }
  return check;
}

std::optional<std::string> checkpoint_to_resume(const std::string& output_dir, const std::string& resume,
                                                parallel::Communicator& world) {
  if (!resume.empty()) return resolve_checkpoint_path(resume);
  const auto complete = complete_checkpoints(checkpoints_dir_of(output_dir));
  const bool leader = world.rank() == 0;
  std::string newest_problem;
  for (auto it = complete.rbegin(); it != complete.rend(); ++it) {
    const std::string& dir = it->second;
    const auto mine = verify_checkpoint(dir, [&](int64_t file) { return file % world.size() == world.rank(); });
    const std::string problem = parallel::first_failure(world, mine.first_problem()).second;
    if (problem.empty()) {
      if (leader && !newest_problem.empty()) {
        std::cerr << "moetrain: warning: resuming from the older checkpoint " << dir << std::endl;
      }
      return dir;
    }
    if (leader) {
      std::cerr << "moetrain: warning: skipping checkpoint " << dir << ", which fails verification: " << problem
                << std::endl;
    }
    if (newest_problem.empty()) newest_problem = problem;
  }
  if (complete.empty()) return std::nullopt;
  throw CheckpointError("no checkpoint under " + checkpoints_dir_of(output_dir) +
                        " verifies (the newest: " + newest_problem + "); move the checkpoints aside to start afresh");
}

}  // namespace moetrain::checkpoint

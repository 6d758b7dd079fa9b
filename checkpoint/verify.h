// Verifying checkpoints: every rank file read whole, every dataset checked
// against its checksum (rank_file.h), meta.json checked against the files
// present. `moetrain checkpoint verify` prints these checks; automatic
// resume uses them to skip a damaged newest checkpoint.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "parallel/communicator.h"

namespace moetrain::checkpoint {

// What reading one rank file found.
struct RankFileCheck {
  std::string name;       // "rank-00000.h5"
  int64_t datasets = 0;   // read and checked
  int64_t bytes = 0;      // their stored size
  bool checksums = true;  // false: a format-1 file, read without checksums
  std::vector<std::string> problems;
};

// What verifying one checkpoint found. `problems` holds meta.json's own
// (malformed, a listed file missing, a rank file it does not list); each
// file's are in `files`.
struct CheckpointCheck {
  std::string dir;
  int64_t step = -1;
  std::vector<RankFileCheck> files;
  std::vector<std::string> problems;

  bool ok() const;
  std::string first_problem() const;  // "" when ok
};

// Reads every dataset of the rank file at `path` and checks it, and that the
// file says it is rank `rank` of step `step`.
RankFileCheck verify_rank_file(const std::string& path, int64_t rank, int64_t step);

// Checks meta.json and the rank files it lists; of those only the ones whose
// index `reads_file` accepts are read (all when it is empty), so that ranks
// can share the reading out.
CheckpointCheck verify_checkpoint(const std::string& dir, const std::function<bool(int64_t)>& reads_file = {});

// The checkpoint a run resumes from. With `resume` given (a checkpoint,
// checkpoints/ or run folder), that one: it is not checked here, and loading
// it fails on damage rather than falling back. Otherwise the newest complete
// checkpoint of OUTPUT/checkpoints that verifies, the ranks of `world`
// sharing out its files; each one skipped is reported on stderr by rank 0
// with the reason. None when there is no checkpoint; throws CheckpointError
// when none of them verifies. Collective over `world`.
std::optional<std::string> checkpoint_to_resume(const std::string& output_dir, const std::string& resume,
                                                parallel::Communicator& world);

}  // namespace moetrain::checkpoint

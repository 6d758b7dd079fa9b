// `moetrain checkpoint verify PATH`: reads a checkpoint whole and checks it
// (checkpoint/verify.h), printing what each rank file holds and what is wrong.
#include "app/commands.h"

#include <filesystem>
#include <iomanip>
#include <iostream>
#include <string>
#include <vector>

#include "app/command_line.h"
#include "checkpoint/directory.h"
#include "checkpoint/verify.h"

namespace fs = std::filesystem;

namespace moetrain::app {

namespace {

constexpr const char* kUsage =
    "usage: moetrain checkpoint verify PATH\n"
    "\n"
    "Reads every rank file of a checkpoint whole and checks each dataset against the checksum stored with it,\n"
    "and meta.json against the rank files present. PATH is a checkpoint (OUTPUT/checkpoints/step-NNNNNN), or a\n"
    "run's output directory or its checkpoints/ folder: then every complete checkpoint in it is checked.\n"
    "Exits 0 when every checkpoint verifies, 1 when one does not.\n";

// The checkpoints PATH names: itself, or the complete ones under it.
std::vector<std::string> checkpoints_named_by(const std::string& path) {
  if (!fs::exists(path)) throw UsageError("checkpoint verify: not found: " + path);
  if (checkpoint::checkpoint_step(path) >= 0 || checkpoint::is_complete_checkpoint(path)) {
    return {checkpoint::resolve_checkpoint_path(path)};
  }
  for (const fs::path& folder : {fs::path(path), fs::path(path) / "checkpoints"}) {
    std::vector<std::string> dirs;
    for (const auto& [step, dir] : checkpoint::complete_checkpoints(folder.string())) dirs.push_back(dir);
    if (!dirs.empty()) return dirs;
  }
  throw checkpoint::CheckpointError("no complete checkpoint under " + path);
}

void print_check(const checkpoint::CheckpointCheck& c) {
  std::cout << c.dir << ": step " << c.step << ", " << c.files.size() << " rank file(s)" << std::endl;
  for (const auto& problem : c.problems) std::cout << "  " << problem << std::endl;
  for (const auto& f : c.files) {
    std::cout << "  " << f.name << ": " << f.datasets << " datasets, " << std::fixed << std::setprecision(1)
              << static_cast<double>(f.bytes) / 1e6 << " MB";
    if (!f.problems.empty()) {
      std::cout << ", " << f.problems.size() << " problem(s)" << std::endl;
      for (const auto& problem : f.problems) std::cout << "    " << problem << std::endl;
    } else {
      std::cout << (f.checksums ? ", checksums match" : ", readable (format 1: no checksums to check)") << std::endl;
    }
  }
  std::cout << "  " << (c.ok() ? "OK" : "FAILED") << std::endl;
}

int verify_command(const std::string& path) {
  const auto dirs = checkpoints_named_by(path);
  std::string first_failure;
  int64_t failed = 0;
  for (const auto& dir : dirs) {
    const checkpoint::CheckpointCheck check = checkpoint::verify_checkpoint(dir);
    print_check(check);
    if (check.ok()) continue;
    ++failed;
    if (first_failure.empty()) first_failure = check.first_problem();
  }
  std::cout << "verified " << dirs.size() << " checkpoint(s): " << dirs.size() - failed << " ok, " << failed
            << " failed" << std::endl;
  if (failed > 0) throw checkpoint::CheckpointError(first_failure);
  return 0;
}

}  // namespace

int checkpoint_command(int argc, char** argv) {
  const std::vector<std::string> args(argv + 1, argv + argc);
  for (const auto& a : args) {
    if (a == "--help" || a == "-h") {
      std::cout << kUsage;
      return 0;
    }
  }
  if (args.empty()) throw UsageError("checkpoint: a sub-command is required: moetrain checkpoint verify PATH");
  if (args[0] != "verify") throw UsageError("checkpoint: unknown sub-command '" + args[0] + "' (there is: verify)");
  if (args.size() != 2 || args[1].rfind("-", 0) == 0) {
    throw UsageError("checkpoint verify: wanted one PATH (a checkpoint or a run directory)");
  }
  return verify_command(args[1]);
}

}  // namespace moetrain::app

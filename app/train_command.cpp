// `moetrain train`: load and check the config, then train (train/phases.h).
#include "app/commands.h"

#include <boost/program_options.hpp>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "app/command_line.h"
#include "config/config.h"
#include "config/load.h"
#include "config/validate.h"
#include "data/batch_source.h"
#include "data/tokenizer.h"
#include "parallel/mpi_communicator.h"
#include "train/phases.h"
#include "train/run_lock.h"

namespace po = boost::program_options;
namespace fs = std::filesystem;

namespace moetrain::app {

int train_command(int argc, char** argv) {
  std::string config_path, output_dir, resume, init_from;
  std::vector<std::string> overrides;
  int64_t max_steps = 0;
  po::options_description options("train options");
  // clang-format off
  options.add_options()
      ("help,h", "show this help")
      ("config,c", po::value(&config_path), "YAML config file")
      ("set", po::value(&overrides)->composing(), "override a config key: --set optim.lr=1e-3 (repeatable)")
      ("output-dir,o", po::value(&output_dir), "run directory: config.yaml, metrics.jsonl, checkpoints/ (default runs/<config name>)")
      ("max-steps", po::value(&max_steps), "same as --set train.max_steps=N")
      ("resume", po::value(&resume), "resume from this checkpoint or run directory (default: the newest complete checkpoint in --output-dir)")
      ("init-from", po::value(&init_from), "start a new run from the weights of this checkpoint");
  // clang-format on
  const auto vm = parse_command_line(argc, argv, options, "train");
  if (vm.count("help")) return 0;
  if (vm.count("max-steps")) overrides.push_back("train.max_steps=" + std::to_string(max_steps));
  if (config_path.empty() && overrides.empty()) throw UsageError("train: --config FILE is required");
  for (const auto& [flag, path] :
       {std::pair<const char*, std::string>{"--resume", resume}, {"--init-from", init_from}}) {
    if (!path.empty() && !fs::exists(path)) {
      throw UsageError(std::string("train: ") + flag + ": checkpoint not found: " + path);
    }
  }
  if (output_dir.empty()) {
    output_dir = "runs/" + (config_path.empty() ? std::string("run") : fs::path(config_path).stem().string());
  }

  config::ConfigSource source;
  config::Config config = config::load_config(config_path, overrides, &source);
  // One process, or every rank of an mpirun job.
  std::shared_ptr<parallel::Communicator> world = parallel::make_world_communicator(config.parallel.timeout_s);
  config::validate_config(config, world->size(), source);
  // One run per output directory, held until this command returns.
  const std::unique_ptr<train::RunLock> run_lock = train::take_run_lock(output_dir, *world);

  std::string tok_path;
  try {
    tok_path = data::resolve_tokenizer_path(config.data);
  } catch (const std::runtime_error& e) {
    throw config::ConfigError(std::string("data.tokenizer: ") + e.what() +
                              " (run `moetrain tokenize` first or set data.tokenizer)");
  }
  const auto tokenizer = data::Tokenizer::load(tok_path);
  if (config.model.vocab_size == 0) {
    config.model.vocab_size = tokenizer.vocab_size();
  } else if (config.model.vocab_size < tokenizer.vocab_size()) {
    throw config::ConfigError("model.vocab_size: " + std::to_string(config.model.vocab_size) +
                              " is smaller than the tokenizer's " + std::to_string(tokenizer.vocab_size()) +
                              source.where("model.vocab_size"));
  }

  // fairseq-style positions depend on the pad id, which is the tokenizer's.
  if (config.model.pad_id != tokenizer.pad_id()) {
    if (source.locations.count("model.pad_id")) {
      throw config::ConfigError("model.pad_id: " + std::to_string(config.model.pad_id) +
                                " is not the tokenizer's pad id " + std::to_string(tokenizer.pad_id()) +
                                source.where("model.pad_id"));
    }
    config.model.pad_id = tokenizer.pad_id();
  }

  train::TrainOptions train_options;
  train_options.output_dir = output_dir;
  train_options.resume = resume;
  train_options.init_from = init_from;
  return train::train_run(config, world, train_options);
}

}  // namespace moetrain::app

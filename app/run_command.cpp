#include "app/run_command.h"

#include <c10/util/Exception.h>

#include <iostream>
#include <string>

#include "app/command_line.h"
#include "app/commands.h"
#include "checkpoint/checkpoint.h"
#include "config/config.h"
#include "data/clean/clean_config.h"
#include "data/clean/pipeline.h"
#include "import/hf_config.h"
#include "parallel/mpi_runtime.h"
#include "parallel/process_grid.h"
#include "train/run_lock.h"

namespace moetrain::app {
namespace {

constexpr const char* kUsage =
    "usage: moetrain <command> [options]\n"
    "\n"
    "commands:\n"
    "  train      train or fine-tune a model from a YAML config\n"
    "  tokenize   train (or load) a SentencePiece model and write HDF5 token shards\n"
    "  clean      clean a corpus: normalise, dedup, quality, domain, toxicity, PII\n"
    "  augment    write augmented copies of records (EDA operations, name swaps)\n"
    "  export     write a checkpoint as model.safetensors, config.json and the tokenizer for serving\n"
    "  import     read a Hugging Face NLLB-MoE model folder as a checkpoint to fine-tune from\n"
    "  generate   generate from a checkpoint: greedy, beam search or sampling, one output line per input line\n"
    "  eval       score hypotheses against references (BLEU, chrF, chrF++, ROUGE-L, WER, PER), or a checkpoint's "
    "loss and perplexity on a dataset\n"
    "  bench      benchmarks: `moetrain bench comm` (collective latency and bandwidth)\n"
    "  checkpoint `moetrain checkpoint verify PATH`: read a checkpoint whole and check every checksum\n"
    "\n"
    "`moetrain <command> --help` lists the options of a command.\n";

// How a failure is reported: its line (without the "moetrain: " prefix), the
// exit code, and whether every rank meets it alike.
struct Failure {
  std::string line;
  int code = 1;
  bool same_on_every_rank = false;
};

// The failure the exception in flight stands for; `command` names the
// sub-command ("clean train-classifier" for a nested one).
Failure describe_current_exception(const std::string& command) {
  try {
    throw;
  } catch (const UsageError& e) {
    return {e.what(), 2, true};
  } catch (const config::ConfigError& e) {
    return {std::string("config error: ") + e.what(), 2, true};
  } catch (const parallel::LayoutError& e) {
    return {std::string("config error: parallel: ") + e.what(), 2, true};
  } catch (const checkpoint::CheckpointWriteError& e) {
    return {command + " failed: " + e.what(), 1, true};
  } catch (const importing::ImportError& e) {
    return {command + ": " + e.what(), 2, true};
  } catch (const train::RunLockError& e) {
    return {command + ": " + e.what(), 2, true};
  } catch (const data::clean::CleanConfigError& e) {
    return {command + ": config error: " + e.what(), 2, true};
  } catch (const data::clean::CleanInputError& e) {
    return {command + ": " + e.what(), 2, false};
  } catch (const c10::Error& e) {
    return {command + " failed: " + e.what_without_backtrace(), 1, false};
  } catch (const std::exception& e) {
    return {command + " failed: " + e.what(), 1, false};
  }
}

int report(const Failure& f) {
  // An abort already under way (the watchdog ending a stuck collective) has
  // printed the job's line; this exception is its echo on the main thread.
  if (parallel::job_aborting()) parallel::wait_for_abort();
  const int ranks = parallel::mpi_running() ? parallel::world_size() : 1;
  const int rank = parallel::mpi_running() ? parallel::world_rank() : 0;
  if (f.same_on_every_rank) {
    if (rank == 0) std::cerr << "moetrain: " << f.line << std::endl;
    return f.code;
  }
  if (ranks > 1) parallel::abort_job(f.line, f.code);  // never returns
  std::cerr << "moetrain: " << f.line << std::endl;
  return f.code;
}

// The sub-command's full name, for messages.
std::string command_name(int argc, char** argv) {
  std::string name = argv[1];
  if (name == "clean" && argc > 2 && std::string(argv[2]) == "train-classifier") name += " train-classifier";
  if (name == "checkpoint" && argc > 2 && std::string(argv[2]) == "verify") name += " verify";
  return name;
}

int dispatch(const std::string& command, int argc, char** argv) {
  if (command == "train") return train_command(argc, argv);
  if (command == "tokenize") return tokenize_command(argc, argv);
  if (command == "clean") return clean_command(argc, argv);
  if (command == "augment") return augment_command(argc, argv);
  if (command == "export") return export_command(argc, argv);
  if (command == "import") return import_command(argc, argv);
  if (command == "generate") return generate_command(argc, argv);
  if (command == "eval") return eval_command(argc, argv);
  if (command == "bench") return bench_command(argc, argv);
  if (command == "checkpoint") return checkpoint_command(argc, argv);
  std::cerr << "moetrain: unknown command '" << command
            << "' (commands: train, tokenize, clean, augment, export, import, generate, eval, bench, checkpoint; see "
               "moetrain --help)"
            << std::endl;
  return 2;
}

}  // namespace

int run_command(int argc, char** argv) {
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h") {
    std::cout << kUsage;
    return argc < 2 ? 2 : 0;
  }
  const std::string command = argv[1];
  try {
    return dispatch(command, argc - 1, argv + 1);
  } catch (...) {
    return report(describe_current_exception(command_name(argc, argv)));
  }
}

}  // namespace moetrain::app

// The `moetrain clean` pipeline: reads the inputs, runs the stages in the
// configured order, and writes
//   OUT/kept/<shard>.jsonl        kept documents: every input field, the
//                                 cleaned text, and a `meta` object
//   OUT/rejected/<stage>.jsonl    removed documents with stage and reason
//   OUT/stats.json                counters per stage, bad records, config
//   OUT/.shards/                  per-shard parts and commit markers
//
// Steps: [extract (input.extract: mail)], normalize (always), then
// config.stages in order (dedup, quality, domain, toxicity, pii).
//
// Work is split by input shard (one input file is one shard; shard i belongs
// to rank i % world). Each shard's outputs are written under "*.partial"
// names and renamed when the shard is complete; its stats file, written last,
// is the commit marker. A rerun skips committed shards and gives the same
// output as an uninterrupted run (stale partial files are removed first).
// Rerunning into an output folder made with a different config or inputs is
// an error.
//
// Dedup is global: a first pass computes every document's exact hash and
// MinHash band keys (for committed shards too, since their documents still
// take part), band keys are exchanged so that equal keys meet on one rank,
// duplicate edges are gathered on every rank and clustered by union-find
// (see dedup.h). The kept documents are the same for any number of ranks.
//
// Every rank calls run_clean_pipeline (it is collective through `exchange`).
#pragma once

#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/clean/clean_config.h"
#include "data/clean/exchange.h"

namespace moetrain::data::clean {

// A bad record under `strict: true`, or any data error that ends the run
// ("PATH:LINE: what").
class CleanInputError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Files named by input.paths: files as given, folders expanded to the
// regular files inside them (recursively, sorted, hidden ones skipped).
// Throws CleanConfigError naming a path that does not exist.
std::vector<std::string> expand_input_paths(const std::vector<std::string>& paths);

struct PipelineResult {
  nlohmann::json stats;      // the merged stats.json (rank 0; empty elsewhere)
  int shards = 0;            // all shards
  int shards_skipped = 0;    // committed by an earlier run (this rank)
  int shards_processed = 0;  // done by this run (this rank)
};

// Where this rank's part of a run stands, for progress lines. With dedup the
// inputs are read twice: pass 1 computes every document's dedup keys (over
// committed shards too), pass 2 runs the remaining steps and writes.
struct CleanProgress {
  int pass = 1;
  int passes = 1;
  int64_t shards_done = 0;  // of this pass
  int64_t shards = 0;       // this rank's shards in this pass
  int64_t documents = 0;    // records read in this pass
  int64_t bytes = 0;        // their text, in bytes
};
using CleanProgressFn = std::function<void(const CleanProgress&)>;

// `progress`, when given, is called on this rank after every document read
// and after every shard.
PipelineResult run_clean_pipeline(const CleanConfig& config, Exchange& exchange, CleanProgressFn progress = {});

}  // namespace moetrain::data::clean

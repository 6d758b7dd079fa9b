// What `moetrain generate` does with a batch of source lines, in both of its
// modes (an output file, or --as-dataset): each source encoded as in
// training, generated, and decoded.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "checkpoint/checkpoint_model.h"
#include "data/tokenizer.h"
#include "eval/generate.h"

namespace moetrain::app {

struct SourceGenerator {
  checkpoint::CheckpointModel& model;
  const data::Tokenizer& tokenizer;
  eval::GenerateOptions options;
  std::vector<int64_t> source_prefix;  // the source language code, if any
  int64_t max_source = 2;              // the run's data.src_len: source tokens, EOS included

  // One output per source: each source as in training (its language code
  // if any, its tokens cut to max_source - 1 in all, then EOS), generated
  // with `options`, decoded. Adds the tokens generated to `tokens`.
  std::vector<std::string> generate(const std::vector<std::string>& sources, double& tokens);
};

}  // namespace moetrain::app

// A checkpoint of any layout loaded as one whole model on one process, with
// its run's config and tokenizer: what export, generate and eval start from,
// and a distillation teacher.
#pragma once

#include <cstdint>
#include <string>

#include "config/config.h"
#include "models/seq2seq_transformer.h"

namespace moetrain::checkpoint {

// The whole model of a checkpoint, on one process (for export, generation
// and evaluation), whatever layout wrote it.
struct CheckpointModel {
  std::string checkpoint;  // the checkpoint directory
  int64_t step = 0;
  config::Config config;  // the run's, as recorded in meta.json
  models::Seq2SeqTransformer model{nullptr};
  std::string tokenizer;  // the SentencePiece model (`tokenizer`, or the one the config names)
};

// `checkpoint` is a checkpoint or run directory. With `dropless_moe` the MoE
// layers drop no token whatever the configured capacity (for generation: an
// output must not depend on what else is in its batch). Throws
// CheckpointError / ConfigError naming what is missing.
CheckpointModel load_checkpoint_model(const std::string& checkpoint, const std::string& tokenizer = "",
                                      bool dropless_moe = false);

}  // namespace moetrain::checkpoint

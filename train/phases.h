// `moetrain train`: the whole run of a config, one Trainer, or with phases
// (config::Config::phases) one Trainer per phase in turn, each started from
// the previous phase's last checkpoint (its weights, with LoRA adapters
// merged when the next phase fine-tunes fully; a fresh optimizer and data
// position). options.init_from starts the first phase.
#pragma once

#include <memory>

#include "config/config.h"
#include "parallel/communicator.h"
#include "train/trainer.h"

namespace moetrain::train {

// Returns the process exit code.
int train_run(const config::Config& config, std::shared_ptr<parallel::Communicator> world, const TrainOptions& options);

}  // namespace moetrain::train

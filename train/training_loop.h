// The training loop around one Trainer: resume (or initialise weights),
// then step, log, evaluate and checkpoint on their intervals until
// train.max_steps or a stop signal. Every rank calls it; rank 0 prints and
// writes OUTPUT/config.yaml, OUTPUT/metrics.jsonl and OUTPUT/tensorboard/.
#pragma once

#include <string>

#include "config/config.h"
#include "train/run_monitors.h"
#include "train/trainer.h"

namespace moetrain::train {

// Trains `trainer` on its config's data from where options.output_dir (or
// options.resume) left off. Returns the process exit code (0, also after a
// SIGTERM/SIGINT that ended the run with a checkpoint). Every step,
// evaluation and checkpoint also goes to the run's monitors where this rank
// has them (train/run_monitors.h; the caller owns them).
int run_training(Trainer& trainer, const TrainOptions& options, RunMonitors& monitors);

// Writes OUTPUT/config.yaml: the whole resolved config of the run (for a run
// of phases, the config with its phases). Rank 0 alone calls it.
void write_run_config(const std::string& output_dir, const config::Config& config);

}  // namespace moetrain::train

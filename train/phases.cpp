#include "train/phases.h"

#include <iostream>
#include <optional>
#include <string>

#include "checkpoint/checkpoint.h"
#include "checkpoint/verify.h"
#include "train/run_monitors.h"
#include "train/shutdown_signal.h"
#include "train/training_loop.h"

namespace moetrain::train {

int train_run(const config::Config& config, std::shared_ptr<parallel::Communicator> world,
              const TrainOptions& options) {
  RunMonitors monitors = start_run_monitors(config.log, options.output_dir, *world);
  if (monitors.prometheus && world->rank() == 0) {
    std::cout << "Prometheus metrics: http://" << config.log.prometheus_bind << ":" << monitors.prometheus->port()
              << "/metrics" << (config.log.prometheus_all_ranks ? " (each rank at the port + its node-local rank)" : "")
              << std::endl;
  }
  if (config.phases.empty()) {
    Trainer trainer(config, world);
    return run_training(trainer, options, monitors);
  }
  const bool leader = world->rank() == 0;
  if (leader) write_run_config(options.output_dir, config);
  // The phase holding the next step of the newest checkpoint (the first
  // phase of a new run).
  const std::optional<std::string> latest =
      checkpoint::checkpoint_to_resume(options.output_dir, options.resume, *world);
  size_t first = 0;
  if (latest) {
    const int64_t step =
        checkpoint::meta_int(checkpoint::read_checkpoint_meta(*latest), "step", 0, *latest + "/meta.json");
    while (first + 1 < config.phases.size() && config::phase_start(config, first + 1) <= step) ++first;
  }
  for (size_t i = first; i < config.phases.size(); ++i) {
    const int64_t start = config::phase_start(config, i);
    if (start >= config.train.max_steps) break;
    const config::Config phase = config::phase_config(config, i);
    if (leader) {
      std::cout << "phase " << i << " (" << config.phases[i].name << "): steps " << start + 1 << " to "
                << phase.train.max_steps << ", "
                << (phase.finetune.mode == config::FinetuneMode::Lora ? "LoRA" : "full") << " fine-tuning, lr "
                << phase.optim.lr << std::endl;
    }
    TrainOptions phase_options = options;
    // The first phase goes on from the checkpoint chosen (and verified)
    // above; each later one starts from the previous phase's last checkpoint.
    phase_options.resume = i == first && latest ? *latest : "";
    int rc = 0;
    {
      const PhaseInfo info{static_cast<int64_t>(i), config.phases[i].name, start, start + config.phases[i].steps};
      Trainer trainer(phase, world, info);
      rc = run_training(trainer, phase_options, monitors);
    }
    if (rc != 0 || ShutdownSignal::requested()) return rc;
  }
  return 0;
}

}  // namespace moetrain::train

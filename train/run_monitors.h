// The monitors that watch a whole training run, across its phases: the
// Prometheus endpoint (config log.prometheus_*, monitor/prometheus_exporter.h)
// and the stall watchdog (log.stall_factor, monitor/stall_watchdog.h).
// train_run starts them before the first phase, so a busy port stops the run
// before anything is loaded, and the endpoint's counters span the run.
#pragma once

#include <memory>
#include <string>

#include "config/config.h"
#include "monitor/prometheus_exporter.h"
#include "monitor/stall_watchdog.h"
#include "parallel/communicator.h"

namespace moetrain::train {

struct RunMonitors {
  // Rank 0's endpoint, or with log.prometheus_all_ranks every rank's; null
  // where this rank serves none.
  std::unique_ptr<monitor::PrometheusExporter> prometheus;
  // Rank 0's, unless log.stall_factor is 0.
  std::unique_ptr<monitor::StallWatchdog> stall;
};

// Collective over `world`: when any rank cannot listen on its port, every
// rank throws config::ConfigError naming the rank and the address. With
// log.prometheus_all_ranks each rank listens at log.prometheus_port plus its
// node-local rank.
RunMonitors start_run_monitors(const config::LogConfig& log, const std::string& output_dir,
                               parallel::Communicator& world);

}  // namespace moetrain::train

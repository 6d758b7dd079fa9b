#include "train/run_monitors.h"

#include <torch/torch.h>

#include <filesystem>
#include <iostream>
#include <stdexcept>

#include "parallel/device_map.h"
#include "parallel/watchdog.h"

namespace moetrain::train {
namespace {

std::unique_ptr<monitor::PrometheusExporter> start_prometheus(const config::LogConfig& log,
                                                              const std::string& output_dir,
                                                              parallel::Communicator& world) {
  if (log.prometheus_port == 0) return nullptr;
  const int64_t local_rank = log.prometheus_all_ranks && world.size() > 1 ? parallel::node_local_rank().local_rank : 0;
  const bool serves = world.rank() == 0 || log.prometheus_all_ranks;
  const int64_t port = log.prometheus_port + local_rank;
  std::unique_ptr<monitor::PrometheusExporter> exporter;
  std::string failure;
  if (serves && port > 65535) {
    failure = "port " + std::to_string(port) + " (" + std::to_string(log.prometheus_port) + " + node-local rank " +
              std::to_string(local_rank) + ") is beyond 65535";
  } else if (serves) {
    const monitor::PrometheusLabels labels{std::filesystem::path(output_dir).filename().string(), "", world.rank()};
    try {
      exporter = std::make_unique<monitor::PrometheusExporter>(log.prometheus_bind, static_cast<int>(port), labels);
    } catch (const std::runtime_error& e) {
      failure = e.what();
    }
  }
  // The lowest failing rank, agreed by all (the world size: none failed).
  auto first_failure = torch::tensor({failure.empty() ? world.size() : world.rank()}, torch::kInt64);
  if (world.size() > 1) world.all_reduce(first_failure, parallel::ReduceOp::Min);
  const int64_t failed = first_failure.item<int64_t>();
  if (failed == world.size()) return exporter;
  const std::string rank = "log.prometheus_port: rank " + std::to_string(failed);
  if (failed == world.rank()) throw config::ConfigError(rank + ": " + failure);
  throw config::ConfigError(rank + " could not start its Prometheus endpoint");
}

}  // namespace

RunMonitors start_run_monitors(const config::LogConfig& log, const std::string& output_dir,
                               parallel::Communicator& world) {
  RunMonitors monitors;
  monitors.prometheus = start_prometheus(log, output_dir, world);
  if (world.rank() == 0 && log.stall_factor > 0) {
    monitors.stall = std::make_unique<monitor::StallWatchdog>(
        monitor::StallOptions{log.stall_factor, log.stall_min_s},
        [] { return parallel::Watchdog::instance().oldest_open_scope(); },
        [](const std::string& line) { std::cout << line << std::endl; });
  }
  return monitors;
}

}  // namespace moetrain::train

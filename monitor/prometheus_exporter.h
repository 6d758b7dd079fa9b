// PrometheusExporter: the run's metrics at http://BIND:PORT/metrics in
// Prometheus's text exposition format (version 0.0.4), served by
// cpp-httplib on threads of its own. The training loop hands it every step,
// evaluation and checkpoint; a scrape reads a snapshot under a mutex, so it
// never waits for a step.
//
// Names follow Prometheus's conventions: the moetrain_ prefix, base units in
// the name (_seconds, _bytes), _total on counters. Every sample carries the
// labels run and rank, and phase in a run of phases. Counters count from the
// process's start, as Prometheus expects of a restarted target.
#pragma once

#include <nlohmann/json.hpp>

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "monitor/metrics_logger.h"

namespace httplib {
class Server;
}

namespace moetrain::monitor {

struct PrometheusLabels {
  std::string run;    // the output directory's name
  std::string phase;  // empty outside a run of phases
  int64_t rank = 0;
};

class PrometheusExporter {
 public:
  // Listens on bind:port (port 0: a free one, see port()). Throws
  // std::runtime_error naming the address when it cannot, a busy port
  // included.
  PrometheusExporter(const std::string& bind, int port, const PrometheusLabels& labels);
  ~PrometheusExporter();
  PrometheusExporter(const PrometheusExporter&) = delete;
  PrometheusExporter& operator=(const PrometheusExporter&) = delete;

  int port() const { return port_; }
  void set_phase(const std::string& phase);

  void record_step(const StepMetrics& m);
  void record_eval(int64_t step, double loss);
  void record_checkpoint(int64_t step, double seconds, int64_t bytes);

  // What GET /metrics answers.
  std::string exposition() const;

 private:
  // Sets or adds to the sample of `name` with `labels` (extra labels, already
  // formatted: `group="dp",op="all_reduce"`).
  void set(const std::string& name, double value, const std::string& labels = "");
  void add(const std::string& name, double value, const std::string& labels = "");

  PrometheusLabels labels_;
  mutable std::mutex mutex_;
  std::map<std::string, std::map<std::string, double>> samples_;  // name -> extra labels -> value
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  std::atomic<bool> listen_returned_{false};
  int port_ = 0;
};

// A label value as the exposition format quotes it (backslash, double quote
// and newline escaped).
std::string prometheus_label_value(const std::string& value);

}  // namespace moetrain::monitor

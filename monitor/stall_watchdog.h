// StallWatchdog: a thread on rank 0 that notices when training stops making
// progress. When no step has finished for stall_factor x the median step
// time (and at least min_seconds), it prints one line naming what the rank
// is waiting on: the collective it is inside (which op on which group, from
// the collective watchdog, parallel/watchdog.h) or else what the training
// loop said it is doing (loading a step's batches, a step's compute, an
// evaluation, a checkpoint write). It prints again at 2x, 4x, ... that time,
// and once more when a step finally finishes. It never ends the job: the
// collective watchdog's hard timeout (parallel.timeout_s) does that.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

namespace moetrain::monitor {

struct StallOptions {
  double factor = 10;         // x the median step time; 0 turns the watchdog off
  double min_seconds = 60;    // never report sooner than this
  double poll_seconds = 0.1;  // how often the thread looks
};

class StallWatchdog {
 public:
  // `open_collective` describes the collective this rank is inside ("" when
  // none); it is called on the watchdog thread. Lines go to `print`.
  StallWatchdog(const StallOptions& options, std::function<std::string()> open_collective,
                std::function<void(const std::string&)> print);
  ~StallWatchdog();
  StallWatchdog(const StallWatchdog&) = delete;
  StallWatchdog& operator=(const StallWatchdog&) = delete;

  // What the training loop is doing now, in words ("loading the batches of
  // step 7").
  void set_activity(const std::string& activity);
  // A step ended after `seconds`: it joins the median, and the clock restarts.
  void step_finished(int64_t step, double seconds);

  // The median of the recent step times (0 before the first step).
  double median_step_seconds() const;

 private:
  using Clock = std::chrono::steady_clock;
  void run();
  std::string describe_wait_locked() const;
  double median_locked() const;  // with mutex_ held

  StallOptions options_;
  std::function<std::string()> open_collective_;
  std::function<void(const std::string&)> print_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<double> recent_;  // the last step times, for the median
  Clock::time_point last_progress_;
  int64_t last_step_ = 0;
  int reports_ = 0;  // lines printed since the last step
  std::string activity_ = "starting";
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace moetrain::monitor

#include "monitor/stall_watchdog.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <vector>

namespace moetrain::monitor {
namespace {

constexpr size_t kRecentSteps = 101;

std::string seconds_text(double s) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), s < 10 ? "%.2f s" : "%.0f s", s);
  return buf;
}

}  // namespace

StallWatchdog::StallWatchdog(const StallOptions& options, std::function<std::string()> open_collective,
                             std::function<void(const std::string&)> print)
    : options_(options),
      open_collective_(std::move(open_collective)),
      print_(std::move(print)),
      last_progress_(Clock::now()) {
  if (options_.factor > 0) thread_ = std::thread([this] { run(); });
}

StallWatchdog::~StallWatchdog() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void StallWatchdog::set_activity(const std::string& activity) {
  std::lock_guard<std::mutex> lock(mutex_);
  activity_ = activity;
}

void StallWatchdog::step_finished(int64_t step, double seconds) {
  std::string line;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    const double since = std::chrono::duration<double>(Clock::now() - last_progress_).count();
    if (reports_ > 0) {
      line = "stall over: step " + std::to_string(step) + " finished " + seconds_text(since) + " after step " +
             std::to_string(last_step_);
    }
    recent_.push_back(seconds);
    if (recent_.size() > kRecentSteps) recent_.pop_front();
    last_progress_ = Clock::now();
    last_step_ = step;
    reports_ = 0;
  }
  if (!line.empty()) print_(line);
}

double StallWatchdog::median_step_seconds() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return median_locked();
}

double StallWatchdog::median_locked() const {
  if (recent_.empty()) return 0;
  std::vector<double> sorted(recent_.begin(), recent_.end());
  std::nth_element(sorted.begin(), sorted.begin() + static_cast<std::ptrdiff_t>(sorted.size() / 2), sorted.end());
  return sorted[sorted.size() / 2];
}

std::string StallWatchdog::describe_wait_locked() const {
  const std::string collective = open_collective_ ? open_collective_() : "";
  if (!collective.empty()) return "a collective, " + collective + " (during " + activity_ + ")";
  return activity_;
}

void StallWatchdog::run() {
  const auto poll = std::chrono::duration<double>(options_.poll_seconds);
  std::unique_lock<std::mutex> lock(mutex_);
  while (!stop_) {
    wake_.wait_for(lock, poll);
    if (stop_ || recent_.empty()) continue;  // no median before the first step
    const double median = median_locked();
    const double threshold = std::max(options_.factor * median, options_.min_seconds);
    const double stalled = std::chrono::duration<double>(Clock::now() - last_progress_).count();
    if (stalled < threshold * std::pow(2.0, reports_)) continue;
    char head[200];
    std::snprintf(head, sizeof(head),
                  "stall: no step has finished for %s since step %lld (%g x the median step time %s",
                  seconds_text(stalled).c_str(), static_cast<long long>(last_step_), options_.factor,
                  seconds_text(median).c_str());
    std::string line = head;
    if (threshold > options_.factor * median) line += ", at least " + seconds_text(options_.min_seconds);
    line += "); rank 0 is waiting on: " + describe_wait_locked();
    ++reports_;
    lock.unlock();
    print_(line);
    lock.lock();
  }
}

}  // namespace moetrain::monitor

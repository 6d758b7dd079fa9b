#include "monitor/progress.h"

#include <unistd.h>

#include <algorithm>

#include "monitor/metrics_logger.h"

namespace moetrain::monitor {

Progress::Progress(std::string what, std::string unit, int64_t total, double interval_s, std::FILE* out)
    : what_(std::move(what)),
      unit_(std::move(unit)),
      total_(total),
      interval_s_(interval_s),
      out_(out),
      terminal_(out != nullptr && isatty(fileno(out)) != 0),
      start_(Clock::now()),
      last_print_(start_) {}

void Progress::update(int64_t done, const std::vector<std::pair<std::string, double>>& counts) {
  done_ = done;
  counts_ = counts;
  const double since = std::chrono::duration<double>(Clock::now() - last_print_).count();
  if (since >= (terminal_ ? 0.2 : interval_s_)) print(false);
}

void Progress::finish() {
  if (finished_) return;
  finished_ = true;
  if (printed_) print(true);
}

std::string Progress::line() const {
  const double elapsed = std::chrono::duration<double>(Clock::now() - start_).count();
  char buf[160];
  std::string text = what_ + ": " + std::to_string(done_);
  if (total_ > 0) {
    std::snprintf(buf, sizeof(buf), "/%lld %s (%.0f%%)", static_cast<long long>(total_), unit_.c_str(),
                  100.0 * static_cast<double>(done_) / static_cast<double>(total_));
  } else {
    std::snprintf(buf, sizeof(buf), " %s", unit_.c_str());
  }
  text += buf;
  const double seconds = std::max(elapsed, 1e-9);
  std::snprintf(buf, sizeof(buf), " | %.1f %s/s", static_cast<double>(done_) / seconds, unit_.c_str());
  text += buf;
  for (const auto& [name, count] : counts_) {
    std::snprintf(buf, sizeof(buf), name == "MB" ? " | %.2f %s/s" : " | %.0f %s/s", count / seconds, name.c_str());
    text += buf;
  }
  text += " | elapsed " + format_duration(elapsed);
  if (total_ > 0 && done_ > 0 && done_ < total_) {
    text += " | eta " + format_duration(elapsed * static_cast<double>(total_ - done_) / static_cast<double>(done_));
  }
  return text;
}

void Progress::print(bool final) {
  if (out_ == nullptr) return;
  last_print_ = Clock::now();
  const std::string text = line();
  if (terminal_) {
    // Redraw in place: carriage return, the line, clear to its end.
    std::fprintf(out_, "\r%s\033[K%s", text.c_str(), final ? "\n" : "");
  } else {
    std::fprintf(out_, "%s\n", text.c_str());
  }
  std::fflush(out_);
  printed_ = true;
}

}  // namespace moetrain::monitor

// Progress: the progress of a long command (generate, eval, export, clean)
// with its rates and ETA, in the manner of the training line, e.g.
//   generate: 1200/5951 lines (20%) | 35.2 lines/s | 1843 tokens/s | elapsed 0:00:34 | eta 0:02:15
// On a terminal it redraws one line in place (at most 5 times a second) and
// ends it when the command finishes; in a log (not a terminal) it prints a
// line every `interval_s` seconds, and a last one at the end if it printed
// any. Lines go to stderr, so a command's output on stdout stays clean.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

namespace moetrain::monitor {

class Progress {
 public:
  // `what`: the command ("generate"); `unit`: what `done` counts ("lines");
  // `total`: how many there are (0: unknown, no percentage or ETA).
  Progress(std::string what, std::string unit, int64_t total, double interval_s = 10.0, std::FILE* out = stderr);
  ~Progress() { finish(); }
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  // `done` of the unit so far, and other counts so far shown as rates
  // ({"tokens", 18430} prints "1843 tokens/s"; "MB" counts are megabytes).
  void update(int64_t done, const std::vector<std::pair<std::string, double>>& counts = {});
  // The last line (see above); later calls do nothing.
  void finish();

  // The line for the state so far, without any terminal control.
  std::string line() const;

 private:
  using Clock = std::chrono::steady_clock;
  void print(bool final);

  std::string what_, unit_;
  int64_t total_;
  double interval_s_;
  std::FILE* out_;
  bool terminal_;
  bool printed_ = false, finished_ = false;
  int64_t done_ = 0;
  std::vector<std::pair<std::string, double>> counts_;
  Clock::time_point start_, last_print_;
};

}  // namespace moetrain::monitor

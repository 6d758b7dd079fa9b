// TokenizeProgress: the progress lines of pass 2 on one rank, at most one
// every `interval_s` seconds, e.g.
//   tokenize: rank 1/2: shards 12/50, records 1200/5000 (24%), 6.1 MB of text, 2.3 MB/s, elapsed 0:00:02, eta 0:00:07
// ("rank r/n: " only in a job of several ranks). MB/s counts the text bytes
// encoded (source and target), 10^6 bytes to the MB; the ETA assumes the
// records still to come encode at the rate of those done so far.
#pragma once

#include <chrono>
#include <cstdint>
#include <iosfwd>
#include <string>

namespace moetrain::data {

class TokenizeProgress {
 public:
  // `out` may be null (no lines). Totals are what this rank encodes in this run.
  TokenizeProgress(std::ostream* out, int rank, int ranks, int64_t total_shards, int64_t total_records,
                   double interval_s = 5.0);

  // Reports the state so far, printing a line when the interval has passed.
  void update(int64_t shards_done, int64_t records_done, int64_t bytes_done);
  double elapsed_seconds() const;

 private:
  std::ostream* out_;
  std::string prefix_;
  int64_t total_shards_, total_records_;
  double interval_s_;
  std::chrono::steady_clock::time_point start_, last_line_;
};

// "H:MM:SS".
std::string format_duration(double seconds);

}  // namespace moetrain::data

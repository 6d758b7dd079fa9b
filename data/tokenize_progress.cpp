// Progress lines of pass 2 (tokenize_progress.h).
#include "data/tokenize_progress.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ostream>

namespace moetrain::data {

std::string format_duration(double seconds) {
  const long long s = std::llround(std::max(0.0, seconds));
  char text[32];
  std::snprintf(text, sizeof(text), "%lld:%02lld:%02lld", s / 3600, s / 60 % 60, s % 60);
  return text;
}

TokenizeProgress::TokenizeProgress(std::ostream* out, int rank, int ranks, int64_t total_shards, int64_t total_records,
                                   double interval_s)
    : out_(out),
      prefix_(ranks > 1 ? "tokenize: rank " + std::to_string(rank) + "/" + std::to_string(ranks) + ": " : "tokenize: "),
      total_shards_(total_shards),
      total_records_(total_records),
      interval_s_(interval_s),
      start_(std::chrono::steady_clock::now()),
      last_line_(start_) {}

double TokenizeProgress::elapsed_seconds() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

void TokenizeProgress::update(int64_t shards_done, int64_t records_done, int64_t bytes_done) {
  if (out_ == nullptr) return;
  const auto now = std::chrono::steady_clock::now();
  if (std::chrono::duration<double>(now - last_line_).count() < interval_s_) return;
  last_line_ = now;
  const double elapsed = elapsed_seconds();
  const double mb = static_cast<double>(bytes_done) / 1e6;
  const double percent = total_records_ > 0 ? 100.0 * static_cast<double>(records_done) / total_records_ : 100.0;
  char line[320];
  std::snprintf(
      line, sizeof(line),
      "%sshards %lld/%lld, records %lld/%lld (%.0f%%), %.1f MB of text, %.2f MB/s, elapsed %s, eta %s", prefix_.c_str(),
      static_cast<long long>(shards_done), static_cast<long long>(total_shards_), static_cast<long long>(records_done),
      static_cast<long long>(total_records_), percent, mb, elapsed > 0 ? mb / elapsed : 0.0,
      format_duration(elapsed).c_str(),
      records_done > 0
          ? format_duration(elapsed * static_cast<double>(total_records_ - records_done) / records_done).c_str()
          : "?");
  *out_ << line << std::endl;
}

}  // namespace moetrain::data

// MixtureIndex: the greedy blended index, replayed in exact integer
// arithmetic and memoised (see mixture_index.h).
#include "data/mixture_index.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <string>

namespace moetrain::data {
namespace {

// Rounded weights sum to about this (2^40): fine enough that rounding moves no
// weight by more than 1e-12, small enough that scores, which stay within
// (-Q, Q * datasets), never come near 2^63.
constexpr double kQuantum = 1099511627776.0;

}  // namespace

MixtureIndex::MixtureIndex(const std::vector<double>& weights) {
  if (weights.empty()) throw std::invalid_argument("a data mixture needs at least one dataset");
  double sum = 0;
  for (size_t d = 0; d < weights.size(); ++d) {
    if (!std::isfinite(weights[d]) || weights[d] <= 0) {
      std::ostringstream text;
      text << "mixture weight " << d << " is " << weights[d] << "; weights must be positive numbers";
      throw std::invalid_argument(text.str());
    }
    sum += weights[d];
  }
  for (double w : weights) weights_.push_back(w / sum);

  // The smallest Q that makes every weight an integer share, if one is small.
  for (int64_t q = 1; q <= kMaxExactPeriod && quanta_.empty(); ++q) {
    std::vector<int64_t> shares;
    for (double w : weights_) {
      const double x = w * static_cast<double>(q);
      const auto share = static_cast<int64_t>(std::llround(x));
      if (share < 1 || std::abs(x - static_cast<double>(share)) > 1e-9) break;
      shares.push_back(share);
    }
    int64_t total = 0;
    for (int64_t share : shares) total += share;
    if (shares.size() == weights_.size() && total == q) quanta_ = std::move(shares);
  }
  if (quanta_.empty())
    for (double w : weights_) quanta_.push_back(std::max<int64_t>(1, std::llround(w * kQuantum)));
  for (int64_t q : quanta_) total_ += q;

  snapshots_.push_back(std::vector<int64_t>(weights.size(), 0));
}

void MixtureIndex::advance(int64_t k, std::vector<int64_t>& counts, int64_t target, std::vector<Draw>* out) const {
  const size_t n = quanta_.size();
  // score_d = q_d * (k + 1) - count_d * Q: the greedy criterion scaled by Q.
  // The products overflow 64 bits for large k, their difference does not.
  std::vector<int64_t> score(n);
  for (size_t d = 0; d < n; ++d)
    score[d] =
        static_cast<int64_t>(static_cast<__int128>(quanta_[d]) * (k + 1) - static_cast<__int128>(counts[d]) * total_);
  // Snapshots hold the counts within the first period, taken in order: the
  // next one is due at in-period position size * kSnapshotEvery.
  const auto next_due = [&](int64_t at) {
    const int64_t due = static_cast<int64_t>(snapshots_.size()) * kSnapshotEvery;
    if (due >= total_) return std::numeric_limits<int64_t>::max();
    const int64_t period_start = at / total_ * total_;
    return period_start + due >= at ? period_start + due : period_start + total_ + due;
  };
  const auto take_snapshot = [&](int64_t at) {
    std::vector<int64_t> in_period = counts;
    for (size_t d = 0; d < n; ++d) in_period[d] -= at / total_ * quanta_[d];
    snapshots_.push_back(std::move(in_period));
  };
  int64_t due = next_due(k);
  for (; k < target; ++k) {
    if (k == due) {
      take_snapshot(k);
      due = next_due(k + 1);
    }
    size_t best = 0;
    for (size_t d = 1; d < n; ++d)
      if (score[d] > score[best]) best = d;  // strict: ties go to the lowest d
    if (out) out->push_back({static_cast<int64_t>(best), counts[best]});
    ++counts[best];
    score[best] -= total_;
    for (size_t d = 0; d < n; ++d) score[d] += quanta_[d];
  }
  if (k == due) take_snapshot(k);
}

std::vector<int64_t> MixtureIndex::counts_at_locked(int64_t k) const {
  // k = periods * Q + r. Start from the latest of the last snapshot at or
  // before r (shifted by whole periods) and the recent positions <= k.
  const int64_t periods = k / total_, r = k % total_;
  const int64_t snapshot = std::min<int64_t>(r / kSnapshotEvery, static_cast<int64_t>(snapshots_.size()) - 1);
  int64_t from = periods * total_ + snapshot * kSnapshotEvery;
  std::vector<int64_t> counts = snapshots_[static_cast<size_t>(snapshot)];
  for (size_t d = 0; d < counts.size(); ++d) counts[d] += periods * quanta_[d];
  for (const auto& [at, at_counts] : recent_) {
    if (at <= k && at > from) {
      from = at;
      counts = at_counts;
    }
  }
  advance(from, counts, k, nullptr);
  remember_recent(k, counts);
  return counts;
}

void MixtureIndex::remember_recent(int64_t k, const std::vector<int64_t>& counts) const {
  for (const auto& entry : recent_)
    if (entry.first == k) return;
  recent_.emplace_back(k, counts);
  if (recent_.size() > kRecent) recent_.pop_front();
}

std::vector<int64_t> MixtureIndex::counts_at(int64_t k) const {
  if (k < 0) throw std::out_of_range("negative sample index");
  if (quanta_.size() == 1) return {k};
  std::lock_guard<std::mutex> lock(mutex_);
  return counts_at_locked(k);
}

std::vector<MixtureIndex::Draw> MixtureIndex::draws(int64_t first, int64_t n) const {
  if (first < 0 || n < 0) throw std::out_of_range("negative sample index or count");
  std::vector<Draw> out;
  out.reserve(static_cast<size_t>(n));
  if (quanta_.size() == 1) {
    for (int64_t k = first; k < first + n; ++k) out.push_back({0, k});
    return out;
  }
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<int64_t> counts = counts_at_locked(first);
  advance(first, counts, first + n, &out);
  remember_recent(first + n, counts);
  return out;
}

}  // namespace moetrain::data

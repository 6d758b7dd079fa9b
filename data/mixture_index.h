// MixtureIndex: which dataset of a weighted mixture each global sample index
// draws from, and how many samples that dataset has given before it.
//
// The rule (a blended index as in Megatron-LM's dataset blending): with
// weights w_d normalised to sum 1 and count_d(k) the samples dataset d gave to
// indices [0, k), index k goes to the dataset d maximising
//   w_d * (k + 1) - count_d(k),
// ties to the lowest d, and is that dataset's count_d(k)-th sample. The
// choice is greedy and deterministic, and keeps every prefix in proportion:
// count_d(k) < w_d * k + 1 always (no dataset gets a whole sample ahead of its
// share), and the lag w_d * k - count_d(k) is below datasets - 1 always and,
// for a handful of datasets (0.6/0.3/0.1, say), below 1 too; it passes 1 only
// for many datasets of very unequal weights.
//
// The arithmetic is exact: the normalised weights become integers q_d with
// sum Q, and scores are kept as q_d * (k + 1) - count_d(k) * Q in 64-bit
// integers, so the assignment is the same on every machine and compiler.
// Weights in a ratio of small integers (0.6/0.3/0.1, 1:1:2; any whose
// normalised values times some Q <= kMaxExactPeriod are integers to within
// 1e-9) are used exactly, so their ties are true ties; other weights are
// rounded to Q about 2^40, a relative change below 1e-12.
//
// The choice repeats with period Q (after Q samples every dataset has given
// exactly q_d and the scores are back where they started), so count(k) is
// (k / Q) * q plus a replay of the choice over k % Q samples: O(Q * datasets)
// at most for exact weights, O(k * datasets) for rounded ones (about 1-2 ns
// per sample and dataset). The index remembers the counts where its last few
// queries began and ended, and at every multiple of kSnapshotEvery within the
// period it has passed, so a run asking for consecutive steps pays
// O(samples asked for), and any other query replays at most kSnapshotEvery
// samples once the index has passed it.
// All methods are const and thread-safe (the memo is under a mutex).
#pragma once

#include <cstdint>
#include <deque>
#include <mutex>
#include <utility>
#include <vector>

namespace moetrain::data {

class MixtureIndex {
 public:
  // Counts are remembered every this many samples.
  static constexpr int64_t kSnapshotEvery = int64_t{1} << 20;
  // Positions of recent queries remembered.
  static constexpr size_t kRecent = 8;
  // The largest Q tried for weights in a ratio of small integers.
  static constexpr int64_t kMaxExactPeriod = int64_t{1} << 16;

  // `weights`: one per dataset, each positive and finite (normalised here).
  // Throws std::invalid_argument otherwise, or when empty.
  explicit MixtureIndex(const std::vector<double>& weights);

  int64_t num_datasets() const { return static_cast<int64_t>(weights_.size()); }
  // The normalised weights (sum 1).
  const std::vector<double>& weights() const { return weights_; }
  // Q: the samples after which the choice repeats; each dataset gives
  // quanta()[d] of them.
  int64_t period() const { return total_; }
  const std::vector<int64_t>& quanta() const { return quanta_; }

  // count_d(k) for every d: the samples each dataset gave to indices [0, k).
  std::vector<int64_t> counts_at(int64_t k) const;

  // One global sample's place: its dataset and that dataset's sample counter.
  struct Draw {
    int64_t dataset = 0;
    int64_t draw = 0;  // count_dataset(k): samples of this dataset before k
  };
  // The draws of global indices [first, first + n), in order.
  std::vector<Draw> draws(int64_t first, int64_t n) const;
  Draw draw(int64_t k) const { return draws(k, 1).front(); }

 private:
  // Advances `counts` (the counts at `k`) to the counts at `target` >= k,
  // recording snapshots on the way; appends each draw to `out` when given.
  // Caller holds mutex_.
  void advance(int64_t k, std::vector<int64_t>& counts, int64_t target, std::vector<Draw>* out) const;
  // The counts at `k`, from the nearest remembered point at or before k.
  // Caller holds mutex_.
  std::vector<int64_t> counts_at_locked(int64_t k) const;
  // Remembers the counts at k as a recent position. Caller holds mutex_.
  void remember_recent(int64_t k, const std::vector<int64_t>& counts) const;

  std::vector<double> weights_;
  std::vector<int64_t> quanta_;  // q_d
  int64_t total_ = 0;            // Q = sum of q_d

  mutable std::mutex mutex_;
  // The counts at i * kSnapshotEvery within the first period.
  mutable std::vector<std::vector<int64_t>> snapshots_;
  // The counts where recent queries began and ended, oldest first.
  mutable std::deque<std::pair<int64_t, std::vector<int64_t>>> recent_;
};

}  // namespace moetrain::data

// BatchPrefetcher: builds the micro-batches of the coming steps on a
// background thread (read the tokens, corrupt, pad, and pin the memory on
// GPU runs) while the current step computes, up to `depth` steps ahead.
//
// Steps are asked for in order (first_step, first_step + 1, ...); next()
// returns a step's batches and how long it waited for them, the time a step
// lost to data loading. A step whose building failed (a shard found corrupt
// or missing) rethrows its error from next() for that step, so training
// stops at that step with the error's one line, after the steps before it.
// With depth 0 next() builds on the calling thread (wait = build time).
//
// The BatchSource must outlive the prefetcher (step_batches is const and
// thread-safe). The destructor stops the thread after the step it is
// building.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "data/batch.h"
#include "data/batch_source.h"

namespace moetrain::data {

class BatchPrefetcher {
 public:
  // Which rank's micro-batches, as BatchSource::step_batches takes them.
  struct Slice {
    int64_t dp_rank = 0;
    int64_t dp_size = 1;
    int64_t global_batch = 1;
    int64_t micro_batch = 1;
  };

  BatchPrefetcher(const BatchSource& source, Slice slice, int64_t first_step, int64_t depth, bool pin_memory);
  ~BatchPrefetcher();
  BatchPrefetcher(const BatchPrefetcher&) = delete;
  BatchPrefetcher& operator=(const BatchPrefetcher&) = delete;

  // The batches of `step`, which must be the step after the previous call's
  // (first_step at first); `wait_ms` gets the milliseconds this call waited.
  std::vector<Seq2SeqBatch> next(int64_t step, double& wait_ms);

 private:
  struct Ready {
    std::vector<Seq2SeqBatch> batches;
    std::exception_ptr error;
  };

  Ready build(int64_t step) const;
  void run();

  const BatchSource& source_;
  Slice slice_;
  int64_t depth_;
  bool pin_memory_;
  int64_t next_step_;   // the step next() expects
  int64_t next_build_;  // the step the thread builds next

  std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<Ready> ready_;  // steps next_step_, next_step_ + 1, ...
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace moetrain::data

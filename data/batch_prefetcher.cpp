#include "data/batch_prefetcher.h"

#include <chrono>
#include <stdexcept>
#include <string>

namespace moetrain::data {

BatchPrefetcher::BatchPrefetcher(const BatchSource& source, Slice slice, int64_t first_step, int64_t depth,
                                 bool pin_memory)
    : source_(source),
      slice_(slice),
      depth_(depth),
      pin_memory_(pin_memory),
      next_step_(first_step),
      next_build_(first_step) {
  if (depth_ < 0) throw std::invalid_argument("prefetch depth must be 0 or more");
  if (depth_ > 0) thread_ = std::thread([this] { run(); });
}

BatchPrefetcher::~BatchPrefetcher() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  changed_.notify_all();
  if (thread_.joinable()) thread_.join();
}

BatchPrefetcher::Ready BatchPrefetcher::build(int64_t step) const {
  Ready r;
  try {
    r.batches = source_.step_batches(step, slice_.dp_rank, slice_.dp_size, slice_.global_batch, slice_.micro_batch);
    if (pin_memory_) {
      // Page-locked, so the copies to the GPU run asynchronously.
      for (auto& b : r.batches) {
        for (torch::Tensor* t : {&b.src_tokens, &b.src_mask, &b.tgt_in, &b.tgt_out, &b.tgt_mask}) *t = t->pin_memory();
      }
    }
  } catch (...) {
    r.error = std::current_exception();
  }
  return r;
}

void BatchPrefetcher::run() {
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    changed_.wait(lock, [this] { return stopping_ || static_cast<int64_t>(ready_.size()) < depth_; });
    if (stopping_) return;
    const int64_t step = next_build_++;
    lock.unlock();
    Ready r = build(step);
    lock.lock();
    const bool failed = r.error != nullptr;
    ready_.push_back(std::move(r));
    changed_.notify_all();
    if (failed) return;  // nothing after a failed step is wanted
  }
}

std::vector<Seq2SeqBatch> BatchPrefetcher::next(int64_t step, double& wait_ms) {
  if (step != next_step_) {
    throw std::logic_error("BatchPrefetcher: asked for step " + std::to_string(step) + ", expected " +
                           std::to_string(next_step_));
  }
  const auto t0 = std::chrono::steady_clock::now();
  Ready r;
  if (depth_ == 0) {
    r = build(step);
  } else {
    std::unique_lock<std::mutex> lock(mutex_);
    changed_.wait(lock, [this] { return !ready_.empty(); });
    r = std::move(ready_.front());
    ready_.pop_front();
    changed_.notify_all();
  }
  wait_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  ++next_step_;
  if (r.error) std::rethrow_exception(r.error);
  return std::move(r.batches);
}

}  // namespace moetrain::data

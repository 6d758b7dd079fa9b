#include "optim/grad_reducer.h"

#include <stdexcept>

namespace moetrain::optim {

std::vector<GradBucket> GradReducer::make_buckets(const FlatParameters& params, int64_t min_elems) {
  const auto& units = params.units();
  std::vector<GradBucket> buckets;
  // Walk from the end of the flat space: the first bucket is the one the
  // backward completes first.
  size_t u = units.size();
  while (u > 0) {
    GradBucket b;
    b.last_unit = u - 1;
    b.end = units[u - 1].offset + units[u - 1].padded;
    b.expert = units[u - 1].expert;
    int64_t elems = 0;
    do {
      --u;
      elems += units[u].padded;
    } while (u > 0 && elems < min_elems && units[u - 1].expert == b.expert);
    b.first_unit = u;
    b.begin = units[u].offset;
    buckets.push_back(b);
  }
  return buckets;
}

GradReducer::GradReducer(FlatParameters& params, std::vector<GradBucket> buckets, bool async_thread)
    : params_(params), buckets_(std::move(buckets)), async_thread_(async_thread) {
  const auto& entries = params_.entries();
  std::vector<int64_t> bucket_of_unit(params_.units().size(), -1);
  for (size_t b = 0; b < buckets_.size(); ++b) {
    for (size_t u = buckets_[b].first_unit; u <= buckets_[b].last_unit; ++u)
      bucket_of_unit.at(u) = static_cast<int64_t>(b);
  }
  entries_in_bucket_.assign(buckets_.size(), 0);
  for (size_t i = 0; i < entries.size(); ++i) {
    const int64_t b = bucket_of_unit.at(entries[i].unit);
    if (b < 0)
      throw std::invalid_argument("GradReducer: unit " + params_.units()[entries[i].unit].name + " is in no bucket");
    bucket_of_entry_.push_back(static_cast<size_t>(b));
    ++entries_in_bucket_[static_cast<size_t>(b)];
  }
  for (size_t i = 0; i < entries.size(); ++i) {
    torch::Tensor param = entries[i].param;
    hooks_.push_back(param.register_hook([this, i](const at::TensorBase& grad) { on_gradient(i, at::Tensor(grad)); }));
  }
  if (async_thread_) worker_ = std::thread([this] { worker_loop(); });
}

GradReducer::~GradReducer() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (worker_.joinable()) worker_.join();
  const auto& entries = params_.entries();
  for (size_t i = 0; i < entries.size() && i < hooks_.size(); ++i) {
    torch::Tensor param = entries[i].param;
    param.remove_hook(hooks_[i]);
  }
}

void GradReducer::arm(torch::Tensor target, ReduceFn reduce) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (armed_) throw std::logic_error("GradReducer::arm: still armed (finish() was not called)");
  if (!async_thread_ && (!side_stream_ || side_stream_->device() != target.device())) {
    side_stream_ = std::make_unique<parallel::SideStream>(target.device());
  }
  target_ = std::move(target);
  reduce_ = std::move(reduce);
  pending_ = entries_in_bucket_;
  ready_.assign(buckets_.size(), false);
  next_ = 0;
  reduced_ = 0;
  error_ = nullptr;
  armed_ = true;
  // A bucket with no trainable parameter (all frozen) is complete already.
  for (size_t b = 0; b < buckets_.size(); ++b) {
    if (pending_[b] == 0) ready_[b] = true;
  }
}

void GradReducer::on_gradient(size_t entry, const torch::Tensor& grad) {
  // A node may pass on no gradient for a parameter (activation checkpointing
  // accumulates the parameters' gradients in its replay and returns none):
  // not a report.
  if (!grad.defined()) return;
  torch::Tensor target;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!armed_) return;
    target = target_;
  }
  const auto& e = params_.entries()[entry];
  {
    torch::NoGradGuard no_grad;
    target.narrow(0, e.offset, e.numel).add_(grad.reshape({-1}));
  }
  std::unique_lock<std::mutex> lock(mutex_);
  const size_t b = bucket_of_entry_[entry];
  if (--pending_[b] == 0) {
    mark_ready_locked(b);
    if (!async_thread_) run_ready_inline(lock);
  }
}

void GradReducer::mark_ready_locked(size_t bucket) {
  ready_[bucket] = true;
  cv_.notify_all();
}

void GradReducer::reduce_next(std::unique_lock<std::mutex>& lock) {
  const size_t b = next_++;
  ReduceFn fn = reduce_;
  // After a failure the other ranks are not in step any more: reduce nothing else.
  const bool failed = error_ != nullptr;
  lock.unlock();
  std::exception_ptr error;
  try {
    if (!failed && async_thread_) fn(buckets_[b]);
    if (!failed && !async_thread_) side_stream_->run([&] { fn(buckets_[b]); });
  } catch (...) {
    error = std::current_exception();
  }
  lock.lock();
  if (error) error_ = error;
  ++reduced_;
  cv_.notify_all();
}

bool GradReducer::next_is_ready() const { return armed_ && next_ < buckets_.size() && ready_[next_]; }

void GradReducer::run_ready_inline(std::unique_lock<std::mutex>& lock) {
  if (running_inline_) return;  // the caller further up the stack drains
  running_inline_ = true;
  while (next_is_ready()) reduce_next(lock);
  running_inline_ = false;
}

void GradReducer::worker_loop() {
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    cv_.wait(lock, [this] { return stopping_ || next_is_ready(); });
    if (!next_is_ready()) return;  // stopping, nothing left
    reduce_next(lock);
  }
}

void GradReducer::finish() {
  std::exception_ptr error;
  {
    std::unique_lock<std::mutex> lock(mutex_);
    if (!armed_) throw std::logic_error("GradReducer::finish: not armed");
    for (size_t b = 0; b < buckets_.size(); ++b) {
      if (!ready_[b]) mark_ready_locked(b);
    }
    if (!async_thread_) run_ready_inline(lock);
    cv_.wait(lock, [this] { return reduced_ == buckets_.size(); });
    // The reductions queued on the side stream come before whatever reads
    // the target next (the optimizer step).
    if (!async_thread_) side_stream_->join();
    armed_ = false;
    target_ = torch::Tensor();
    reduce_ = nullptr;
    error = error_;
    error_ = nullptr;
  }
  // The values are in the target; autograd's copies are not needed.
  for (const auto& e : params_.entries()) {
    torch::Tensor param = e.param;
    param.mutable_grad() = torch::Tensor();
  }
  if (error) std::rethrow_exception(error);
}

}  // namespace moetrain::optim

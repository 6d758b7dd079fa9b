// The encoding threads of a tokenize rank (tokenize_workers.h).
#include "data/tokenize_workers.h"

#include <stdexcept>

namespace moetrain::data {

EncoderPool::EncoderPool(const Tokenizer& tokenizer, bool pairs, int threads) : tokenizer_(tokenizer), pairs_(pairs) {
  if (threads < 1) throw std::invalid_argument("tokenize: threads must be >= 1");
  for (int i = 0; i < threads; ++i) threads_.emplace_back([this] { work(); });
}

EncoderPool::~EncoderPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
    queued_.clear();
  }
  work_ready_.notify_all();
  for (auto& t : threads_) t.join();
}

void EncoderPool::submit(std::unique_ptr<EncodeBlock> block) {
  auto slot = std::make_shared<Slot>();
  slot->block = std::move(block);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    order_.push_back(slot);
    queued_.push_back(slot);
  }
  work_ready_.notify_one();
}

size_t EncoderPool::in_flight() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return order_.size();
}

std::unique_ptr<EncodeBlock> EncoderPool::take_oldest() {
  std::unique_lock<std::mutex> lock(mutex_);
  if (order_.empty()) throw std::logic_error("EncoderPool::take_oldest with nothing submitted");
  std::shared_ptr<Slot> slot = order_.front();
  block_done_.wait(lock, [&] { return slot->done; });
  order_.pop_front();
  if (slot->error) std::rethrow_exception(slot->error);
  return std::move(slot->block);
}

void EncoderPool::work() {
  while (true) {
    std::shared_ptr<Slot> slot;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      work_ready_.wait(lock, [&] { return stopping_ || !queued_.empty(); });
      if (stopping_) return;
      slot = queued_.front();
      queued_.pop_front();
    }
    try {
      encode(*slot->block);
    } catch (...) {
      slot->error = std::current_exception();
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      slot->done = true;
    }
    block_done_.notify_all();
  }
}

void EncoderPool::encode(EncodeBlock& block) const {
  block.source_ids.resize(block.size());
  if (pairs_) block.target_ids.resize(block.size());
  for (size_t i = 0; i < block.size(); ++i) {
    block.source_ids[i] = tokenizer_.encode(block.source[i]);
    std::string().swap(block.source[i]);
    if (pairs_) {
      block.target_ids[i] = tokenizer_.encode(block.target[i]);
      std::string().swap(block.target[i]);
    }
  }
}

}  // namespace moetrain::data

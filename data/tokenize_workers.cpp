// The encoding threads of a tokenize rank (tokenize_workers.h).
#include "data/tokenize_workers.h"

#include <stdexcept>

namespace moetrain::data {

namespace {

// `text`'s ids, after its language code when it has one (`language`, else
// `prefix` unless -1) and the text encodes to anything.
std::vector<int32_t> encode_after(const Tokenizer& tokenizer, const std::string& text, int32_t prefix,
                                  const std::string* language) {
  if (language != nullptr && !language->empty()) prefix = static_cast<int32_t>(tokenizer.language_code_id(*language));
  std::vector<int32_t> ids = tokenizer.encode(text);
  if (prefix >= 0 && !ids.empty()) ids.insert(ids.begin(), prefix);
  return ids;
}

}  // namespace

LanguagePrefix language_prefix(const Tokenizer& tokenizer, const TokenizeOptions& options) {
  LanguagePrefix prefix;
  if (!options.languages()) return prefix;
  if (tokenizer.language_codes().empty()) {
    throw std::invalid_argument(
        "tokenize: the tokenizer has no language codes (an NLLB model's, imported with moetrain import, has them)");
  }
  try {
    if (!options.source_lang.empty())
      prefix.source = static_cast<int32_t>(tokenizer.language_code_id(options.source_lang));
    if (!options.target_lang.empty())
      prefix.target = static_cast<int32_t>(tokenizer.language_code_id(options.target_lang));
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(std::string("tokenize: ") + e.what());
  }
  return prefix;
}

EncoderPool::EncoderPool(const Tokenizer& tokenizer, bool pairs, int threads, LanguagePrefix prefix)
    : tokenizer_(tokenizer), pairs_(pairs), prefix_(prefix) {
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
  auto language = [](const std::vector<std::string>& languages, size_t i) {
    return i < languages.size() ? &languages[i] : nullptr;
  };
  for (size_t i = 0; i < block.size(); ++i) {
    block.source_ids[i] = encode_after(tokenizer_, block.source[i], prefix_.source, language(block.source_lang, i));
    std::string().swap(block.source[i]);
    if (pairs_) {
      block.target_ids[i] = encode_after(tokenizer_, block.target[i], prefix_.target, language(block.target_lang, i));
      std::string().swap(block.target[i]);
    }
  }
}

}  // namespace moetrain::data

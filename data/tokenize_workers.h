// EncoderPool: the encoding threads of one tokenize rank. The rank's reading
// thread hands it blocks of records in stream order and takes them back,
// encoded, in the same order, so the shards it assembles do not depend on
// how many threads there are or which one encoded what.
//
// At most `threads` blocks are encoded at once; the caller bounds how many it
// keeps submitted (in_flight) so memory stays bounded. An exception thrown
// while encoding a block is rethrown by take_oldest for that block.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "data/tokenize.h"
#include "data/tokenizer.h"

namespace moetrain::data {

// Consecutive records of the rank's shards.
struct EncodeBlock {
  std::vector<int64_t> shard;               // the plan's shard index of each record
  std::vector<std::string> source, target;  // texts (target: pairs only); freed once encoded
  // Each record's language codes, when its fields name them (pairs only).
  std::vector<std::string> source_lang, target_lang;
  std::vector<std::vector<int32_t>> source_ids, target_ids;
  int64_t text_bytes = 0;

  size_t size() const { return shard.size(); }
};

// The language codes written before each side's tokens (pairs mode), as
// NllbTokenizer writes them; -1: none, or the record's own (a block's
// source_lang/target_lang) when those are given. A text that encodes to
// nothing stays empty (and is skipped).
struct LanguagePrefix {
  int32_t source = -1, target = -1;
};

// The codes options.source_lang and target_lang name in `tokenizer` (none when
// unset). Throws std::invalid_argument naming a code the tokenizer lacks, or
// when language fields are given and the tokenizer has no codes.
LanguagePrefix language_prefix(const Tokenizer& tokenizer, const TokenizeOptions& options);

class EncoderPool {
 public:
  EncoderPool(const Tokenizer& tokenizer, bool pairs, int threads, LanguagePrefix prefix = {});
  ~EncoderPool();  // stops the threads (blocks being encoded are finished first)
  EncoderPool(const EncoderPool&) = delete;
  EncoderPool& operator=(const EncoderPool&) = delete;

  void submit(std::unique_ptr<EncodeBlock> block);
  size_t in_flight() const;
  // Waits for the oldest submitted block and returns it encoded.
  std::unique_ptr<EncodeBlock> take_oldest();

 private:
  struct Slot {
    std::unique_ptr<EncodeBlock> block;
    bool done = false;
    std::exception_ptr error;
  };

  void work();
  void encode(EncodeBlock& block) const;

  const Tokenizer& tokenizer_;
  const bool pairs_;
  const LanguagePrefix prefix_;
  mutable std::mutex mutex_;
  std::condition_variable work_ready_, block_done_;
  std::deque<std::shared_ptr<Slot>> order_;   // submitted, not yet taken, oldest first
  std::deque<std::shared_ptr<Slot>> queued_;  // submitted, not yet started
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace moetrain::data

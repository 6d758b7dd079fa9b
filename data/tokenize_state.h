// TokenizeState: what lets an interrupted `moetrain tokenize` resume, and the
// checksum dataset.json gives each shard.
//
// OUTPUT/.tokenize/ holds
//   run.json           the run's fingerprint (run_fingerprint: every option
//                      that decides the output, each input file's path, size
//                      and modification time, the checksum of a --tokenizer
//                      model) with the checksum of the tokenizer it saved and
//                      the number of sentences that trained it. Rank 0 writes
//                      it after saving tokenizer.model, before any shard.
//   <shard>.json       one marker per finished shard (its TokenizedShard),
//                      written by the shard's rank after the shard file was
//                      renamed into place.
// A rerun whose fingerprint equals run.json's keeps the tokenizer (when
// tokenizer.model still has its checksum) and skips every shard whose marker
// exists and whose file still has the marker's size and checksum; any other
// rerun removes .tokenize/ and starts over. The number of threads and ranks is
// not part of the fingerprint: a job may resume with others.
//
// The checksum is FNV-1a 64 over the file's bytes (cheap next to encoding,
// and needs no library), written in dataset.json as 16 lowercase hex digits.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "data/tokenize.h"

namespace moetrain::data {

uint64_t fnv1a64(const std::string& bytes);
// Throws std::runtime_error naming the file when it cannot be read.
uint64_t fnv1a64_file(const std::string& path);
std::string checksum_hex(uint64_t checksum);  // 16 lowercase hex digits

nlohmann::json run_fingerprint(const TokenizeOptions& options);

nlohmann::json shard_to_json(const TokenizedShard& shard);
// Throws nlohmann::json::exception on a malformed object.
TokenizedShard shard_from_json(const nlohmann::json& j);

// The tokenizer an earlier run with the same fingerprint saved.
struct SavedTokenizer {
  uint64_t checksum = 0;
  int64_t training_sentences = 0;
};

class TokenizeState {
 public:
  explicit TokenizeState(const std::string& output_dir);

  // Reads only: the tokenizer of an earlier run whose fingerprint equals
  // `fingerprint`, if run.json says there was one.
  std::optional<SavedTokenizer> saved_tokenizer(const nlohmann::json& fingerprint) const;
  // Removes the state of an earlier run, and its temporary files.
  void clear() const;
  // Removes the temporary files an interrupted run left in the output folder
  // and in the state folder (call while no rank writes).
  void remove_temporaries() const;
  // Records the run (run.json): called once the tokenizer is saved.
  void begin(const nlohmann::json& fingerprint, const SavedTokenizer& tokenizer) const;

  // The shard `name` as a finished run left it: its marker, when the file
  // still has the marker's size and checksum.
  std::optional<TokenizedShard> finished(const std::string& name) const;
  void mark_finished(const TokenizedShard& shard) const;

 private:
  std::string output_dir_, state_dir_;
};

}  // namespace moetrain::data

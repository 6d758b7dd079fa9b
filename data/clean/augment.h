// Text augmentation for `moetrain augment`: the four EDA token operations
// (Wei & Zou 2019: synonym replacement, random insertion, random swap,
// random deletion) and entity replacement (a person's name from the name
// lists becomes another name from the same list, consistently within a
// document). Tokens are the whitespace-separated words; punctuation attached
// to a word stays in place around its replacement.
//
// Reproducible: the random stream of copy k of a record depends only on the
// seed, the record's id and k, so the output does not depend on input order,
// on the other records or on the machine.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <unordered_map>
#include <vector>

namespace moetrain::data::clean {

struct AugmentOptions {
  uint64_t seed = 1;
  int copies = 1;             // augmented copies per record
  bool keep_original = true;  // also write the record unchanged
  std::vector<std::string> ops = {"synonym", "insert", "delete", "swap", "entity"};
  double alpha = 0.1;  // share of words changed by synonym/insert/swap
  double delete_probability = 0.1;
  std::vector<std::string> name_files;  // one name a line
  std::string synonym_file;             // "word syn1 syn2 ..." a line; adds to the built-in table
  std::string text_field = "text";
  std::string id_field = "id";
};

class Augmenter {
 public:
  explicit Augmenter(const AugmentOptions& options);  // reads the name and synonym files

  // The text after operation `op` with the random stream (seed, id, copy).
  std::string apply(const std::string& text, const std::string& op, const std::string& id, int copy) const;
  // The operation copy k of a record uses (the ops in turn, from a seeded offset).
  std::string op_for(const std::string& id, int copy) const;

 private:
  AugmentOptions o_;
  std::unordered_map<std::string, std::vector<std::string>> synonyms_;  // lower-case word -> synonyms
  std::vector<std::vector<std::string>> name_lists_;
  std::unordered_map<std::string, size_t> name_list_of_;  // name -> list index
};

struct AugmentSummary {
  int64_t records = 0, written = 0, bad = 0;
  std::map<std::string, int64_t> by_op;
};

// Reads JSONL/text records from `inputs`, writes `output` (JSONL) atomically.
// Each augmented record keeps the input fields, gets id "<id>#aug<k>" and
// meta.augment = {op, copy, seed}.
AugmentSummary augment_files(const std::vector<std::string>& inputs, const std::string& output,
                             const AugmentOptions& options);

}  // namespace moetrain::data::clean

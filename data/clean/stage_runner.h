// StageRunner: the steps of the `moetrain clean` pipeline (pipeline.h) and
// the resources they need (PII scrubber, classifiers, keyword lists, MinHash),
// and how each step applies to one document. Also the document and shard
// types the pipeline passes around. Internal to pipeline.cpp.
#pragma once

#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/clean/clean_config.h"
#include "data/clean/dedup.h"
#include "data/clean/fasttext_classifier.h"
#include "data/clean/keyword_matcher.h"
#include "data/clean/pii.h"
#include "data/clean/record_io.h"
#include "data/clean/stats.h"

namespace moetrain::data::clean {

// One input file.
struct Shard {
  size_t index;
  std::string path;
  std::string name;  // "00003-stem"
};

struct Doc {
  InputRecord record;
  uint64_t number = 0;  // shard << 32 | line: global, input-ordered
  std::string text;
  nlohmann::json meta = nlohmann::json::object();
};

// Why a step removed a document.
struct Removal {
  std::string reason;
  nlohmann::json details = nlohmann::json::object();
};

// Stage resources and application.
class StageRunner {
 public:
  // Loads what the configured stages need; `shards` must outlive the runner.
  StageRunner(const CleanConfig& c, const std::vector<Shard>& shards);

  const std::vector<std::string>& steps() const { return steps_; }
  size_t dedup_step() const {
    auto it = std::find(steps_.begin(), steps_.end(), "dedup");
    return it == steps_.end() ? steps_.size() : static_cast<size_t>(it - steps_.begin());
  }
  bool has(const std::string& s) const { return std::find(steps_.begin(), steps_.end(), s) != steps_.end(); }

  void set_duplicates(std::unordered_map<uint64_t, DuplicateOf> d) { duplicates_ = std::move(d); }

  // The band entries of a document as it reaches the dedup step.
  void band_entries(const Doc& doc, std::vector<BandEntry>& out) const;

  // Runs `step` on `doc` (counting into `stats` when given); the removal, if
  // the step removes the document.
  std::optional<Removal> apply(const std::string& step, Doc& doc, StageStats* stats);

 private:
  std::optional<Removal> quality(Doc& doc);
  std::optional<Removal> domain(Doc& doc);
  std::optional<Removal> toxicity(Doc& doc, StageStats* stats);

  const CleanConfig& c_;
  const std::vector<Shard>& shards_;
  std::vector<std::string> steps_;
  std::unique_ptr<PiiScrubber> pii_;
  std::unique_ptr<FastTextClassifier> quality_model_, domain_model_, toxicity_model_;
  std::map<std::string, KeywordMatcher> domains_;
  KeywordMatcher toxic_;
  std::unique_ptr<MinHasher> minhash_;
  std::unordered_map<uint64_t, DuplicateOf> duplicates_;
};

}  // namespace moetrain::data::clean

// Counters of the cleaning pipeline: per stage, documents and bytes in and
// out, removals by reason, replacements by type and seconds; per input, the
// bad records with file and line. One ShardStats per input shard is written
// when the shard is done (it is the shard's commit marker); stats.json sums
// them. The printed table is made from stats.json alone.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace moetrain::data::clean {

struct StageStats {
  std::string name;
  int64_t docs_in = 0, docs_out = 0;
  int64_t bytes_in = 0, bytes_out = 0;
  std::map<std::string, int64_t> removed;   // by reason
  std::map<std::string, int64_t> replaced;  // by type (PII, escapes, ...)
  double seconds = 0;
};

struct BadRecord {
  std::string file;
  int64_t line = 0;
  std::string reason;
};

struct ShardStats {
  std::vector<StageStats> stages;  // in pipeline order
  int64_t records = 0;             // records read, bad ones included
  int64_t bad_records = 0;
  std::map<std::string, int64_t> bad_by_reason;
  std::vector<BadRecord> bad_examples;  // file and line of each, up to a cap
  int64_t kept_docs = 0, kept_bytes = 0;
};

nlohmann::json stats_to_json(const ShardStats& stats);
ShardStats stats_from_json(const nlohmann::json& json);
// Adds `from` into `into` (stages matched by name; examples capped at `max_examples`).
void merge_stats(ShardStats& into, const ShardStats& from, size_t max_examples);

// The summary table printed by `moetrain clean`, from a stats.json object.
std::string format_stats_table(const nlohmann::json& stats);

}  // namespace moetrain::data::clean

// CleanConfig: every setting of `moetrain clean`, its default, and its YAML
// key (docs/data.md lists them; configs/clean.yaml spells out every default).
// load_clean_config reads a YAML file; unknown keys, wrong types and bad
// values are CleanConfigError with one line naming the key (and file:line).
// Command-line flags and `--set key=value` apply on top, through the same
// key names.
#pragma once

#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/clean/dedup.h"
#include "data/clean/quality.h"

namespace moetrain::data::clean {

class CleanConfigError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

struct ClassifierConfig {
  std::string model;  // fastText .bin; empty: no classifier
  std::string label;  // the label whose probability is the score
  double threshold = 0.5;
};

struct CleanConfig {
  // input
  std::vector<std::string> inputs;  // input.paths: files or folders (folders: every file inside, sorted)
  std::string text_field = "text";  // input.text_field
  std::string id_field = "id";      // input.id_field
  std::string extract = "none";     // input.extract: none | mail
  // run
  std::string output;   // output
  bool strict = false;  // strict: a bad record is fatal
  std::vector<std::string> stages = {"dedup", "quality", "toxicity", "pii"};
  int64_t cache_mb = 2048;  // documents kept in memory between the dedup passes, per rank
  int64_t max_bad_record_examples = 10000;

  // dedup
  bool dedup_exact = true;
  bool dedup_near = true;
  MinHashParams minhash;

  // quality
  GopherQualityParams gopher;
  GopherRepetitionParams repetition;
  C4Params c4;
  FineWebParams fineweb;
  ClassifierConfig quality_classifier{"", "ham", 0.5};

  // domain
  ClassifierConfig domain_classifier{"", "", 0.5};  // label unused: the top label is the domain
  std::map<std::string, std::vector<std::string>> domain_keywords;
  std::map<std::string, std::string> domain_keyword_files;
  std::vector<std::string> domain_allowed;  // empty: every domain (tag only)
  double domain_min_keyword_fraction = 0.005;

  // toxicity
  std::string toxicity_word_list;  // extra terms file
  bool toxicity_builtin_list = true;
  std::string toxicity_mode = "document";  // document | sentence
  int64_t toxicity_max_matches = 2;        // document mode: more matches than this drops it
  double toxicity_max_fraction = 0.01;     // ... as does a larger share of words
  ClassifierConfig toxicity_classifier{"", "toxic", 0.5};

  // pii
  std::vector<std::string> pii_types = {"email", "phone", "ipv4", "ipv6", "card", "ssn", "cn_id"};
};

// Reads `path` over the defaults; throws CleanConfigError.
CleanConfig load_clean_config(const std::string& path);
// `key=value` with a YAML value, e.g. "quality.gopher_quality.min_doc_words=20".
void apply_override(CleanConfig& config, const std::string& assignment);
// Checks values and combinations; throws CleanConfigError naming the key.
void validate_clean_config(const CleanConfig& config);
// The effective configuration as nested JSON (the same keys as YAML).
nlohmann::json clean_config_to_json(const CleanConfig& config);

const std::vector<std::string>& known_stage_names();  // dedup, quality, domain, toxicity, pii

}  // namespace moetrain::data::clean

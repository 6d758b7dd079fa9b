// CleanConfig from YAML (see clean_config.h). One function, visit(), names
// every key once; reading YAML, applying --set and writing JSON all go
// through it, so the three can never disagree about a key.
#include "data/clean/clean_config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <filesystem>
#include <functional>
#include <set>
#include <sstream>

namespace moetrain::data::clean {
namespace {

template <class V>
void visit(V& v, CleanConfig& c) {
  v("input.paths", c.inputs);
  v("input.text_field", c.text_field);
  v("input.id_field", c.id_field);
  v("input.extract", c.extract);
  v("output", c.output);
  v("strict", c.strict);
  v("stages", c.stages);
  v("cache_mb", c.cache_mb);
  v("max_bad_record_examples", c.max_bad_record_examples);

  v("dedup.exact", c.dedup_exact);
  v("dedup.near", c.dedup_near);
  v("dedup.ngram", c.minhash.ngram);
  v("dedup.cjk_ngram", c.minhash.cjk_ngram);
  v("dedup.bands", c.minhash.bands);
  v("dedup.rows", c.minhash.rows);
  v("dedup.seed", c.minhash.seed);

  auto& g = c.gopher;
  v("quality.gopher_quality.enabled", g.enabled);
  v("quality.gopher_quality.min_doc_words", g.min_doc_words);
  v("quality.gopher_quality.max_doc_words", g.max_doc_words);
  v("quality.gopher_quality.min_avg_word_length", g.min_avg_word_length);
  v("quality.gopher_quality.max_avg_word_length", g.max_avg_word_length);
  v("quality.gopher_quality.max_symbol_word_ratio", g.max_symbol_word_ratio);
  v("quality.gopher_quality.max_bullet_lines_ratio", g.max_bullet_lines_ratio);
  v("quality.gopher_quality.max_ellipsis_lines_ratio", g.max_ellipsis_lines_ratio);
  v("quality.gopher_quality.min_alpha_words_ratio", g.min_alpha_words_ratio);
  v("quality.gopher_quality.min_stop_words", g.min_stop_words);
  auto& r = c.repetition;
  v("quality.gopher_repetition.enabled", r.enabled);
  v("quality.gopher_repetition.dup_line_frac", r.dup_line_frac);
  v("quality.gopher_repetition.dup_para_frac", r.dup_para_frac);
  v("quality.gopher_repetition.dup_line_char_frac", r.dup_line_char_frac);
  v("quality.gopher_repetition.dup_para_char_frac", r.dup_para_char_frac);
  v("quality.gopher_repetition.top_n_grams", r.top_n_grams);
  v("quality.gopher_repetition.dup_n_grams", r.dup_n_grams);
  auto& c4 = c.c4;
  v("quality.c4.enabled", c4.enabled);
  v("quality.c4.filter_lines", c4.filter_lines);
  v("quality.c4.min_words_per_line", c4.min_words_per_line);
  v("quality.c4.max_word_length", c4.max_word_length);
  v("quality.c4.min_sentences", c4.min_sentences);
  v("quality.c4.require_terminal_punct", c4.require_terminal_punct);
  v("quality.c4.drop_lorem_ipsum", c4.drop_lorem_ipsum);
  v("quality.c4.drop_curly_bracket", c4.drop_curly_bracket);
  v("quality.c4.drop_javascript_lines", c4.drop_javascript_lines);
  v("quality.c4.drop_policy_lines", c4.drop_policy_lines);
  auto& f = c.fineweb;
  v("quality.fineweb.enabled", f.enabled);
  v("quality.fineweb.min_line_punct_ratio", f.min_line_punct_ratio);
  v("quality.fineweb.max_short_line_ratio", f.max_short_line_ratio);
  v("quality.fineweb.short_line_length", f.short_line_length);
  v("quality.fineweb.cjk_short_line_length", f.cjk_short_line_length);
  v("quality.fineweb.max_char_dup_ratio", f.max_char_dup_ratio);
  v("quality.fineweb.max_newline_word_ratio", f.max_newline_word_ratio);
  v("quality.classifier.model", c.quality_classifier.model);
  v("quality.classifier.label", c.quality_classifier.label);
  v("quality.classifier.threshold", c.quality_classifier.threshold);

  v("domain.model", c.domain_classifier.model);
  v("domain.threshold", c.domain_classifier.threshold);
  v("domain.keywords", c.domain_keywords);
  v("domain.keyword_files", c.domain_keyword_files);
  v("domain.allowed", c.domain_allowed);
  v("domain.min_keyword_fraction", c.domain_min_keyword_fraction);

  v("toxicity.word_list", c.toxicity_word_list);
  v("toxicity.builtin_list", c.toxicity_builtin_list);
  v("toxicity.mode", c.toxicity_mode);
  v("toxicity.max_matches", c.toxicity_max_matches);
  v("toxicity.max_fraction", c.toxicity_max_fraction);
  v("toxicity.classifier.model", c.toxicity_classifier.model);
  v("toxicity.classifier.label", c.toxicity_classifier.label);
  v("toxicity.classifier.threshold", c.toxicity_classifier.threshold);

  v("pii.types", c.pii_types);
}

std::vector<std::string> split_key(const std::string& key) {
  std::vector<std::string> parts;
  std::stringstream ss(key);
  std::string p;
  while (std::getline(ss, p, '.')) parts.push_back(p);
  return parts;
}

// Collects the key names.
struct KeyCollector {
  std::set<std::string> keys;
  template <class T>
  void operator()(const char* key, T&) {
    keys.insert(key);
  }
};

// Reads values from a YAML tree.
class YamlReader {
 public:
  YamlReader(const YAML::Node& root, std::string file) : root_(root), file_(std::move(file)) {}

  template <class T>
  void operator()(const char* key, T& value) {
    YAML::Node node = find(key);
    if (!node) return;
    read(key, node, value);
  }

 private:
  // Recursion rather than reassigning a Node: yaml-cpp's Node::operator=
  // writes through to the tree it refers to.
  static YAML::Node find_in(const YAML::Node& node, const std::vector<std::string>& parts, size_t i) {
    if (i == parts.size()) return node;
    if (!node.IsMap()) return YAML::Node(YAML::NodeType::Undefined);
    const YAML::Node child = node[parts[i]];
    if (!child) return YAML::Node(YAML::NodeType::Undefined);
    return find_in(child, parts, i + 1);
  }
  YAML::Node find(const std::string& key) const { return find_in(root_, split_key(key), 0); }

  std::string where(const YAML::Node& node) const {
    if (file_.empty()) return "";
    return " (" + file_ + ":" + std::to_string(node.Mark().line + 1) + ")";
  }

  [[noreturn]] void bad(const std::string& key, const YAML::Node& node, const std::string& expected) const {
    std::string got = node.IsScalar() ? "'" + node.Scalar() + "'" : node.IsSequence() ? "a list" : "a map";
    throw CleanConfigError(key + ": expected " + expected + ", got " + got + where(node));
  }

  template <class T>
  T scalar(const std::string& key, const YAML::Node& node, const char* expected) const {
    if (!node.IsScalar()) bad(key, node, expected);
    try {
      return node.as<T>();
    } catch (const YAML::Exception&) {
      bad(key, node, expected);
    }
  }

  void read(const std::string& key, const YAML::Node& n, bool& v) const { v = scalar<bool>(key, n, "true or false"); }
  void read(const std::string& key, const YAML::Node& n, int& v) const { v = scalar<int>(key, n, "an integer"); }
  void read(const std::string& key, const YAML::Node& n, int64_t& v) const {
    v = scalar<int64_t>(key, n, "an integer");
  }
  void read(const std::string& key, const YAML::Node& n, uint64_t& v) const {
    v = scalar<uint64_t>(key, n, "a non-negative integer");
  }
  void read(const std::string& key, const YAML::Node& n, double& v) const { v = scalar<double>(key, n, "a number"); }
  void read(const std::string& key, const YAML::Node& n, std::string& v) const {
    v = n.IsNull() ? "" : scalar<std::string>(key, n, "a string");
  }
  void read(const std::string& key, const YAML::Node& n, std::vector<std::string>& v) const {
    v.clear();
    if (n.IsNull()) return;
    if (n.IsScalar()) {  // "a,b,c" is accepted for lists of names
      std::stringstream ss(n.Scalar());
      std::string item;
      while (std::getline(ss, item, ','))
        if (!item.empty()) v.push_back(item);
      return;
    }
    if (!n.IsSequence()) bad(key, n, "a list");
    for (const auto& item : n) v.push_back(scalar<std::string>(key, item, "a list of strings"));
  }
  void read(const std::string& key, const YAML::Node& n, std::vector<std::pair<int, double>>& v) const {
    if (!n.IsMap()) bad(key, n, "a map from n to a fraction, e.g. {2: 0.2, 3: 0.18}");
    v.clear();
    for (const auto& kv : n)
      v.emplace_back(scalar<int>(key, kv.first, "an integer n"), scalar<double>(key, kv.second, "a fraction"));
    std::sort(v.begin(), v.end());
  }
  void read(const std::string& key, const YAML::Node& n, std::map<std::string, std::vector<std::string>>& v) const {
    if (n.IsNull()) return v.clear();
    if (!n.IsMap()) bad(key, n, "a map from a domain name to a list of keywords");
    v.clear();
    for (const auto& kv : n) read(key + "." + kv.first.Scalar(), kv.second, v[kv.first.Scalar()]);
  }
  void read(const std::string& key, const YAML::Node& n, std::map<std::string, std::string>& v) const {
    if (n.IsNull()) return v.clear();
    if (!n.IsMap()) bad(key, n, "a map from a domain name to a file");
    v.clear();
    for (const auto& kv : n) v[kv.first.Scalar()] = scalar<std::string>(key, kv.second, "a file path");
  }

  YAML::Node root_;
  std::string file_;
};

// Reads one key only (for --set).
struct OneKey {
  YamlReader& reader;
  const std::string& key;
  template <class T>
  void operator()(const char* k, T& v) {
    if (key == k) reader(k, v);
  }
};

// Writes values into nested JSON.
struct JsonWriter {
  nlohmann::ordered_json out = nlohmann::ordered_json::object();
  template <class T>
  void operator()(const char* key, T& value) {
    nlohmann::ordered_json* node = &out;
    for (const auto& part : split_key(key)) node = &(*node)[part];
    set(*node, value);
  }
  template <class T>
  static void set(nlohmann::ordered_json& node, const T& value) {
    node = value;
  }
  static void set(nlohmann::ordered_json& node, const std::vector<std::pair<int, double>>& value) {
    node = nlohmann::ordered_json::object();
    for (const auto& [n, f] : value) node[std::to_string(n)] = f;
  }
};

// Every key in the YAML tree must be known: a leaf or a map-valued key.
void check_unknown(const YAML::Node& node, const std::string& prefix, const std::set<std::string>& known,
                   const std::string& file) {
  for (const auto& kv : node) {
    const std::string key = prefix.empty() ? kv.first.Scalar() : prefix + "." + kv.first.Scalar();
    if (known.count(key) > 0) continue;
    bool section = false;
    for (const auto& k : known)
      if (k.compare(0, key.size() + 1, key + ".") == 0) section = true;
    const std::string where = file.empty() ? "" : " (" + file + ":" + std::to_string(kv.first.Mark().line + 1) + ")";
    if (!section) throw CleanConfigError("unknown key '" + key + "'" + where);
    if (!kv.second.IsMap()) throw CleanConfigError(key + ": expected a map" + where);
    check_unknown(kv.second, key, known, file);
  }
}

std::set<std::string> known_keys() {
  CleanConfig c;
  KeyCollector collector;
  visit(collector, c);
  return collector.keys;
}

}  // namespace

const std::vector<std::string>& known_stage_names() {
  static const std::vector<std::string> names = {"dedup", "quality", "domain", "toxicity", "pii"};
  return names;
}

CleanConfig load_clean_config(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) throw CleanConfigError("config file not found: " + path);
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::Exception& e) {
    throw CleanConfigError(path + ":" + std::to_string(e.mark.line + 1) + ": invalid YAML: " + e.msg);
  }
  CleanConfig config;
  if (!root || root.IsNull()) return config;
  if (!root.IsMap()) throw CleanConfigError(path + ": a clean config must be a YAML map");
  check_unknown(root, "", known_keys(), path);
  YamlReader reader(root, path);
  visit(reader, config);
  return config;
}

void apply_override(CleanConfig& config, const std::string& assignment) {
  const size_t eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0) throw CleanConfigError("--set expects key=value, got '" + assignment + "'");
  const std::string key = assignment.substr(0, eq);
  const auto known = known_keys();
  if (known.count(key) == 0) throw CleanConfigError("unknown key '" + key + "'");
  YAML::Node value;
  try {
    value = YAML::Load(assignment.substr(eq + 1));
  } catch (const YAML::Exception& e) {
    throw CleanConfigError(key + ": invalid value: " + e.msg);
  }
  // Build {a: {b: value}} and read only that key.
  const auto parts = split_key(key);
  std::function<YAML::Node(size_t)> build = [&](size_t i) {
    YAML::Node map(YAML::NodeType::Map);
    map[parts[i]] = i + 1 == parts.size() ? value : build(i + 1);
    return map;
  };
  const YAML::Node root = build(0);
  YamlReader reader(root, "");
  OneKey one{reader, key};
  visit(one, config);
}

void validate_clean_config(const CleanConfig& c) {
  auto require = [](bool ok, const std::string& message) {
    if (!ok) throw CleanConfigError(message);
  };
  require(!c.inputs.empty(), "input.paths: no input given (--input PATH... or input.paths in the config)");
  require(!c.output.empty(), "output: no output directory given (--output DIR or output in the config)");
  require(!c.text_field.empty(), "input.text_field: must not be empty");
  require(c.extract == "none" || c.extract == "mail", "input.extract: '" + c.extract + "' is not one of: none, mail");
  std::set<std::string> seen;
  for (const auto& s : c.stages) {
    require(std::find(known_stage_names().begin(), known_stage_names().end(), s) != known_stage_names().end(),
            "stages: unknown stage '" + s + "' (stages: dedup, quality, domain, toxicity, pii)");
    require(seen.insert(s).second, "stages: '" + s + "' is listed twice");
  }
  require(c.minhash.ngram >= 1 && c.minhash.cjk_ngram >= 1, "dedup.ngram: must be >= 1");
  require(c.minhash.bands >= 1 && c.minhash.rows >= 1 && c.minhash.bands * c.minhash.rows <= 1024,
          "dedup.bands: bands and rows must be >= 1 with bands * rows <= 1024");
  require(c.dedup_exact || c.dedup_near || seen.count("dedup") == 0,
          "dedup: the dedup stage needs dedup.exact or dedup.near");
  require(c.cache_mb >= 0, "cache_mb: must be >= 0");
  require(c.toxicity_mode == "document" || c.toxicity_mode == "sentence",
          "toxicity.mode: '" + c.toxicity_mode + "' is not one of: document, sentence");
  for (const auto* cl : {&c.quality_classifier, &c.domain_classifier, &c.toxicity_classifier})
    require(cl->threshold >= 0 && cl->threshold <= 1, "classifier threshold must be in [0, 1]");
  if (seen.count("domain") > 0)
    require(!c.domain_classifier.model.empty() || !c.domain_keywords.empty() || !c.domain_keyword_files.empty(),
            "domain: the domain stage needs domain.model or domain.keywords / domain.keyword_files");
  if (seen.count("quality") > 0 && !c.quality_classifier.model.empty())
    require(!c.quality_classifier.label.empty(), "quality.classifier.label: must name the label to score");
  for (const auto& path :
       {c.quality_classifier.model, c.domain_classifier.model, c.toxicity_classifier.model, c.toxicity_word_list}) {
    std::error_code ec;
    require(path.empty() || std::filesystem::is_regular_file(path, ec), "file not found: " + path);
  }
  for (const auto& [name, path] : c.domain_keyword_files) {
    std::error_code ec;
    require(std::filesystem::is_regular_file(path, ec), "domain.keyword_files." + name + ": file not found: " + path);
  }
}

nlohmann::json clean_config_to_json(const CleanConfig& config) {
  CleanConfig copy = config;
  JsonWriter writer;
  visit(writer, copy);
  return nlohmann::json::parse(writer.out.dump());
}

}  // namespace moetrain::data::clean

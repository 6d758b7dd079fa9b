// The shape checks of a config's YAML tree (yaml_checks.h).
#include "config/yaml_checks.h"

#include <map>

#include "config/config.h"

namespace moetrain::config {
namespace {

// yaml-cpp keeps both entries of a key given twice in one mapping and reads
// the first: a mistake a user would not see, so it is an error naming both
// lines (`where` is the file, or the --set text). So are keys that are lists
// or mappings (`? [a, b]`), and more than kMaxConfigValues values: YAML
// aliases let a few hundred bytes stand for 10^8 of them ("billion laughs"),
// which this walk would visit one by one; `budget` counts those left.
// An alias may also refer to the list or mapping it is in, which nests it
// in itself without end: more than kMaxConfigDepth levels is an error too.
constexpr size_t kMaxConfigValues = 100000;
constexpr int kMaxConfigDepth = 64;
void check_keys(const YAML::Node& node, const std::string& where, const std::string& path, size_t& budget, int depth) {
  if (budget-- == 0) {
    throw ConfigError(where + ": more than " + std::to_string(kMaxConfigValues) +
                      " values (YAML aliases repeating a large section?)");
  }
  if (depth > kMaxConfigDepth) {
    throw ConfigError(where + ": nested more than " + std::to_string(kMaxConfigDepth) +
                      " levels deep (a YAML alias inside what it names?)");
  }
  if (node.IsSequence()) {
    for (size_t i = 0; i < node.size(); ++i) {
      check_keys(node[i], where, path + "[" + std::to_string(i) + "]", budget, depth + 1);
    }
    return;
  }
  if (!node.IsMap()) return;
  const bool one_line_value = where.rfind("--set ", 0) == 0;  // its line numbers say nothing
  std::map<std::string, int> first_line;
  for (const auto& entry : node) {
    const int line = entry.first.Mark().line + 1;
    if (entry.first.IsSequence() || entry.first.IsMap()) {
      throw ConfigError((path.empty() ? std::string("the config") : path) +
                        ": a key must be a name, not a list or a mapping (" + where +
                        (one_line_value ? "" : ":" + std::to_string(line)) + ")");
    }
    const std::string key = yaml_key_text(entry.first);
    const std::string full = path.empty() ? key : path + "." + key;
    const auto [first, fresh] = first_line.emplace(key, line);
    if (!fresh) {
      throw ConfigError(
          "duplicate key '" + full + "' (" + where +
          (one_line_value ? "" : ":" + std::to_string(line) + ", first at line " + std::to_string(first->second)) +
          ")");
    }
    check_keys(entry.second, where, full, budget, depth + 1);
  }
}

}  // namespace

std::string yaml_key_text(const YAML::Node& key) { return key.IsScalar() ? key.Scalar() : YAML::Dump(key); }

void check_yaml_keys(const YAML::Node& node, const std::string& where, const std::string& path) {
  size_t budget = kMaxConfigValues;
  check_keys(node, where, path, budget, 0);
}

}  // namespace moetrain::config

// Checks on a config's YAML tree before its keys are read (config/load.cpp):
// yaml-cpp keeps both entries of a key given twice in one mapping and reads
// the first, a mistake a user would not see; a key may be a list or a
// mapping (`? [a, b]`); and YAML aliases let a few hundred bytes stand for
// 10^8 values ("billion laughs") or nest a list inside itself without end.
#pragma once

#include <yaml-cpp/yaml.h>

#include <string>

namespace moetrain::config {

// Throws ConfigError naming the key path and the line (`where` is the file,
// or the --set text, whose line numbers say nothing) for: a key given twice
// in one mapping (both lines), a key that is a list or mapping, more than
// 100,000 values, or nesting deeper than 64 levels. `path` is the key path
// of `node` ("" for the root).
void check_yaml_keys(const YAML::Node& node, const std::string& where, const std::string& path);

// A mapping key as text; as<std::string>() throws a YAML::Exception for a
// key that is not a scalar (`~:`; check_yaml_keys refuses lists and mappings).
std::string yaml_key_text(const YAML::Node& key);

}  // namespace moetrain::config

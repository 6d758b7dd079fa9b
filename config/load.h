// The strict YAML loader of Config, and the writer of the resolved config.
//
// Loading is strict: an unknown key is an error naming its path, file and line
// (with a suggestion for a near miss); a wrong type or an out-of-range choice
// is an error too. Every key is visited by one declarative table
// (visit_config in load.cpp) that the reader and the writer share.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "config/config.h"

namespace moetrain::config {

// Where a config came from, so that cross-field errors can name file:line.
struct ConfigSource {
  std::string file;
  std::map<std::string, std::string> locations;  // "model.d_model" -> "cfg.yaml:12"
  std::string where(const std::string& key) const;
};

// Reads `path`, applies `overrides` ("a.b=value", YAML syntax for the value)
// and returns the typed config. Throws ConfigError. Does not touch the
// file system beyond reading `path` (see validate_config for data paths).
Config load_config(const std::string& path, const std::vector<std::string>& overrides, ConfigSource* source = nullptr);

// The config in YAML text (a checkpoint's meta.json carries its run's);
// `origin` names it in errors. Throws ConfigError.
Config load_config_text(const std::string& yaml, const std::string& origin);

// The full resolved config (defaults included) as YAML text.
std::string config_to_yaml(const Config& config);

}  // namespace moetrain::config

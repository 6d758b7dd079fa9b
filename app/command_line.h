// What every `moetrain` sub-command shares on its command line: the usage
// error (exit 2, one line) and option parsing with --help.
#pragma once

#include <boost/program_options.hpp>

#include <stdexcept>
#include <string>
#include <vector>

namespace moetrain::app {

// Bad flags or arguments: the sub-command prints the message and exits 2.
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Parses argv against `options`. With --help, prints "usage: moetrain
// COMMAND [options]" and the options, and returns the map without checking
// required options (the caller tests vm.count("help")). Throws UsageError
// "COMMAND: <what is wrong>".
boost::program_options::variables_map parse_command_line(int argc, char** argv,
                                                         const boost::program_options::options_description& options,
                                                         const std::string& command);

// "a,b,,c" -> {"a", "b", "c"}: a comma-separated flag value, empty items dropped.
std::vector<std::string> split_comma_list(const std::string& text);

}  // namespace moetrain::app

// What `generate` and `eval` share on their command lines: reading a text
// file's lines, and where the model runs (--device cpu|cuda, --dtype
// fp32|bf16|fp16).
#pragma once

#include <torch/torch.h>
#include <boost/program_options.hpp>

#include <string>
#include <vector>

namespace moetrain::app {

// The lines of a text file (a trailing '\r' dropped); throws UsageError
// naming `flag` when it cannot be read.
std::vector<std::string> read_lines(const std::string& path, const std::string& flag);

struct Placement {
  std::string device = "cpu", dtype = "fp32";
  torch::Device where() const;  // cuda: the first GPU
  torch::ScalarType scalar_type() const;
};

void add_placement_options(boost::program_options::options_description& options, Placement& p);

// Checks --device and --dtype before anything is loaded (UsageError naming `command`).
void check_placement(const Placement& p, const std::string& command);

}  // namespace moetrain::app

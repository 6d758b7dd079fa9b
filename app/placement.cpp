#include "app/placement.h"

#include <fstream>
#include <stdexcept>

#include "app/command_line.h"
#include "config/config.h"

namespace po = boost::program_options;

namespace moetrain::app {

std::vector<std::string> read_lines(const std::string& path, const std::string& flag) {
  std::ifstream in(path);
  if (!in) throw UsageError(flag + ": cannot read " + path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    lines.push_back(line);
  }
  return lines;
}

torch::Device Placement::where() const {
  return device == "cuda" ? torch::Device(torch::kCUDA, 0) : torch::Device(torch::kCPU);
}

torch::ScalarType Placement::scalar_type() const { return config::to_scalar_type(config::parse_compute_dtype(dtype)); }

void add_placement_options(po::options_description& options, Placement& p) {
  // clang-format off
  options.add_options()
      ("device", po::value(&p.device)->default_value(p.device), "cpu or cuda (the first GPU)")
      ("dtype", po::value(&p.dtype)->default_value(p.dtype), "fp32, bf16 or fp16: the dtype the model computes in");
  // clang-format on
}

void check_placement(const Placement& p, const std::string& command) {
  if (p.device != "cpu" && p.device != "cuda") {
    throw UsageError(command + ": --device must be cpu or cuda, got '" + p.device + "'");
  }
  if (p.device == "cuda" && !torch::cuda::is_available()) {
    throw UsageError(command + ": --device cuda, but no CUDA device is available");
  }
  try {
    p.scalar_type();
  } catch (const std::invalid_argument&) {
    throw UsageError(command + ": --dtype must be fp32, bf16 or fp16, got '" + p.dtype + "'");
  }
}

}  // namespace moetrain::app

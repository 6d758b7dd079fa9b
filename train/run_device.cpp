#include "train/run_device.h"

#include <c10/core/impl/VirtualGuardImpl.h>

#include <sstream>

#include "parallel/device_map.h"
#include "parallel/nccl_communicator.h"

namespace moetrain::train {
namespace {

parallel::BackendChoice resolve_backend(const config::Config& config, bool cuda, const std::string& shared_gpus) {
  try {
    return parallel::choose_backend({config.parallel.backend, cuda, parallel::nccl_compiled(), shared_gpus});
  } catch (const parallel::BackendError& e) {
    throw config::ConfigError(e.what());
  }
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

}  // namespace

RunDevice setup_run_device(const config::Config& config, parallel::Communicator& world) {
  const std::string& name = config.train.device;
  const bool available = torch::cuda::is_available();
  if (name == "cuda" && !available) {
    throw config::ConfigError("train.device: cuda requested but no CUDA device is available on rank " +
                              std::to_string(world.rank()));
  }
  RunDevice run;
  const bool cuda = name == "cuda" || (name == "auto" && available);
  if (!cuda) {
    run.backend = resolve_backend(config, false, "");
    return run;
  }
  const parallel::RankDevice mine = parallel::this_rank_device(world, torch::cuda::device_count());
  // Every rank reports, even one without a device, so that all of them stop
  // with the same line rather than some waiting for the others.
  const auto map = parallel::gather_device_map(world, mine);
  std::string shared_gpus;
  try {
    parallel::check_device_map(map, /*exclusive=*/false);
    try {
      parallel::check_device_map(map, /*exclusive=*/true);
    } catch (const parallel::DeviceMapError& e) {
      shared_gpus = e.what();
    }
  } catch (const parallel::DeviceMapError& e) {
    throw config::ConfigError(std::string("train.device: ") + e.what());
  }
  run.device = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(mine.device.index));
  c10::impl::VirtualGuardImpl(torch::kCUDA).setDevice(run.device);
  run.backend = resolve_backend(config, true, shared_gpus);
  run.device_map = lines_of(parallel::describe_device_map(map));
  return run;
}

}  // namespace moetrain::train

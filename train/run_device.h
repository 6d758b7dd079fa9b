// RunDevice: where a training run's tensors live and who carries its
// collectives, decided once at start-up, before any CUDA allocation or NCCL
// call.
//
// On CUDA each rank takes one GPU by its place on its node
// (parallel/device_map.h), makes it the current device, and the job's
// (host, GPU) mapping is gathered and checked; parallel.backend is then
// resolved against it (parallel/backend.h). On the CPU only the backend is
// resolved.
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

#include "config/config.h"
#include "parallel/backend.h"
#include "parallel/communicator.h"

namespace moetrain::train {

struct RunDevice {
  torch::Device device = torch::kCPU;
  parallel::BackendChoice backend;
  // The job's GPU mapping, one line per host (CUDA runs; empty on the CPU).
  std::vector<std::string> device_map;
};

// Collective over `world` (the MPI world): every rank calls it at the same
// point. Throws config::ConfigError with one line for a request that cannot
// be met (no GPU, a backend this build or this mapping cannot give).
RunDevice setup_run_device(const config::Config& config, parallel::Communicator& world);

}  // namespace moetrain::train

#include "parallel/backend.h"

#include <numeric>
#include <vector>

#include "parallel/host_staged_communicator.h"
#include "parallel/nccl_communicator.h"

namespace moetrain::parallel {

std::string backend_name(Backend backend) {
  switch (backend) {
    case Backend::Mpi: return "mpi";
    case Backend::MpiStaged: return "mpi-staged";
    case Backend::Nccl: return "nccl";
  }
  return "mpi";
}

BackendChoice choose_backend(const BackendInputs& in) {
  const std::string& want = in.requested;
  if (want != "auto" && want != "nccl" && want != "mpi") {
    throw BackendError("parallel.backend: '" + want + "' is not one of auto, nccl, mpi");
  }
  if (!in.cuda) {
    if (want == "nccl") {
      throw BackendError(
          "parallel.backend: nccl moves GPU memory, but this run's tensors are on the CPU "
          "(train.device); use auto or mpi");
    }
    return {Backend::Mpi, "host tensors"};
  }
  if (want == "mpi") return {Backend::MpiStaged, "parallel.backend: mpi on CUDA stages through the host"};
  if (want == "nccl") {
    if (!in.nccl_compiled) {
      throw BackendError(
          "parallel.backend: nccl, but this build has no NCCL backend (see docs/gpu.md); use auto or mpi");
    }
    if (!in.shared_gpus.empty()) {
      throw BackendError("parallel.backend: nccl needs a GPU per rank, but " + in.shared_gpus +
                         ": start at most one rank per GPU on each node, or use parallel.backend: mpi to share GPUs");
    }
    return {Backend::Nccl, "parallel.backend: nccl"};
  }
  if (!in.nccl_compiled) return {Backend::MpiStaged, "this build has no NCCL backend"};
  if (!in.shared_gpus.empty()) return {Backend::MpiStaged, "ranks share a GPU (" + in.shared_gpus + ")"};
  return {Backend::Nccl, "one GPU per rank"};
}

std::unique_ptr<Communicator> make_data_world(Backend backend, Communicator& world, int device_index,
                                              double timeout_s) {
  switch (backend) {
    case Backend::Mpi: return nullptr;
    case Backend::MpiStaged: {
      // Its own MPI communicator over every rank, so staged traffic never
      // matches a control message of the world.
      std::vector<int64_t> all(static_cast<size_t>(world.size()));
      std::iota(all.begin(), all.end(), int64_t{0});
      return std::make_unique<HostStagedCommunicator>(world.split(all));
    }
    case Backend::Nccl: return make_nccl_communicator(world, device_index, timeout_s);
  }
  return nullptr;
}

}  // namespace moetrain::parallel

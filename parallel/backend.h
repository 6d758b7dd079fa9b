// Which communicators carry a run's collectives: `parallel.backend` (auto |
// nccl | mpi) resolved against where the tensors live, what this build has
// and how ranks share GPUs.
//
//   tensors  requested  backend of every data group (DP, TP, PP, EP,
//                       expert-DP, tied embedding)
//   CPU      auto, mpi  mpi         MPI collectives on host tensors
//   CPU      nccl       refused     (NCCL moves device memory only)
//   CUDA     auto       nccl        when the build has NCCL and no two ranks
//                                   of a host share a GPU; otherwise
//                                   mpi-staged, with the reason printed
//   CUDA     nccl       nccl        refused without NCCL or with a shared GPU
//   CUDA     mpi        mpi-staged  copy to the host, MPI, copy back
//                                   (host_staged_communicator.h)
//
// Whatever the data groups use, the world communicator the trainer keeps
// for control (barriers, checkpoint coordination, stop flags, host scalars)
// is MPI. make_data_world() builds the communicator the data groups are
// split from (ProcessGroups).
#pragma once

#include <memory>
#include <stdexcept>
#include <string>

#include "parallel/communicator.h"

namespace moetrain::parallel {

enum class Backend { Mpi, MpiStaged, Nccl };

// "mpi", "mpi-staged", "nccl": the name Communicator::backend() reports.
std::string backend_name(Backend backend);

// The request cannot be met; the message is one line naming why.
class BackendError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct BackendInputs {
  std::string requested = "auto";  // parallel.backend: auto | nccl | mpi
  bool cuda = false;               // the run's tensors live on a GPU
  bool nccl_compiled = false;      // this build has the NCCL backend
  // Empty when every rank has a GPU of its own; otherwise why not (the
  // DeviceMapError line of check_device_map(..., exclusive = true)).
  std::string shared_gpus;
};

struct BackendChoice {
  Backend backend = Backend::Mpi;
  std::string reason;  // why auto chose it, for the start-up banner
};

// Pure: throws BackendError for a request that cannot be met (and for a
// value other than auto, nccl, mpi).
BackendChoice choose_backend(const BackendInputs& in);

// The communicator the run's data groups are split from: null for Mpi (the
// world itself), a host-staged duplicate of `world` for MpiStaged, an NCCL
// communicator over the world's ranks on GPU `device_index` for Nccl.
// Collective over `world`, which must be the MPI world communicator.
std::unique_ptr<Communicator> make_data_world(Backend backend, Communicator& world, int device_index, double timeout_s);

}  // namespace moetrain::parallel

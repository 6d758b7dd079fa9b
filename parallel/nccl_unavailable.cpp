// The NCCL backend when this build has none (LibTorch without CUDA, or NCCL
// not found): the factory says so instead of failing at link time.
#include "parallel/nccl_communicator.h"

namespace moetrain::parallel {

bool nccl_compiled() { return false; }

std::unique_ptr<Communicator> make_nccl_communicator(const Communicator&, int, double) {
  throw CommunicatorError(
      "make_nccl_communicator: this build has no NCCL backend (LibTorch without CUDA, or NCCL not found at "
      "configure time; see the 'moetrain: NCCL backend' line of the CMake output)");
}

}  // namespace moetrain::parallel

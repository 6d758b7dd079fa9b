// Which GPU each rank of a job uses: one rank per GPU, chosen by the rank's
// place on its node (its node-local rank), never by its world rank, which
// would put rank 8 of a job of 8-GPU nodes on GPU 0 of the second node only
// by accident of the launcher's ordering.
//
// CUDA_VISIBLE_DEVICES is honoured: CUDA numbers a process's visible devices
// 0..n-1, so the choice is an index among them, and the physical GPU it
// names is the matching entry of the variable (an index or a UUID). A
// launcher that gives every rank its own single GPU (Slurm's
// --gpus-per-task=1) therefore works as well as one that shows all of a
// node's GPUs to every rank.
//
// The pure functions below take every input as a value, so the mapping is
// tested with injected host names, local ranks, device counts and
// environments; node_local_rank() and gather_device_map() are the
// collective parts that read them from the running job.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "parallel/communicator.h"

namespace moetrain::parallel {

// Two ranks on one GPU where that is refused (NCCL), a rank with no GPU, or
// a malformed report. The message is one line naming the ranks.
class DeviceMapError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct DeviceChoice {
  int64_t index = -1;    // among this process's visible devices (-1: none visible)
  std::string physical;  // the GPU it is: CUDA_VISIBLE_DEVICES' entry, else the index
};

// The device of the rank at `local_rank` of its node, with `device_count`
// devices visible to it and CUDA_VISIBLE_DEVICES = `visible_env` (empty:
// unset). More local ranks than devices wrap around (local_rank modulo the
// count): several ranks then share a GPU, which only a host-staged backend
// allows (see check_device_map).
DeviceChoice choose_device(int64_t local_rank, int64_t device_count, const std::string& visible_env);

// What one rank reports about where it runs.
struct RankDevice {
  int64_t rank = 0;
  std::string host;
  int64_t local_rank = 0;
  DeviceChoice device;
};

// Checks a job's mapping: every rank has a device, and with `exclusive`
// (NCCL, which refuses two ranks on one GPU) no two ranks of one host use
// the same physical GPU. Throws DeviceMapError naming the first offenders.
void check_device_map(const std::vector<RankDevice>& ranks, bool exclusive);

// The mapping as one line per host, e.g.
// "node-a: rank 0 -> cuda:0 (GPU 0), rank 1 -> cuda:1 (GPU 1)".
std::string describe_device_map(const std::vector<RankDevice>& ranks);

// This process's place on its node: MPI_Comm_split_type(MPI_COMM_TYPE_SHARED)
// of the world. Collective over the world.
struct NodeRank {
  int64_t local_rank = 0;
  int64_t local_size = 1;
};
NodeRank node_local_rank();

// This host's name (gethostname).
std::string host_name();

// This rank's report: its host, its node-local rank (collective over the
// world, see node_local_rank) and the device that rank picks among
// `device_count` visible ones, honouring CUDA_VISIBLE_DEVICES.
RankDevice this_rank_device(const Communicator& world, int64_t device_count);

// Every rank's report, gathered over `world` (collective), in rank order.
std::vector<RankDevice> gather_device_map(Communicator& world, const RankDevice& mine);

}  // namespace moetrain::parallel

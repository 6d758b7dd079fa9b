// `moetrain bench comm`: collective latency and bandwidth (parallel/comm_benchmark.h).
#include "app/commands.h"

#include <boost/program_options.hpp>

#include <cstdlib>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "app/command_line.h"
#include "parallel/comm_benchmark.h"
#include "parallel/device_map.h"
#include "parallel/mpi_communicator.h"
#include "parallel/nccl_communicator.h"

namespace po = boost::program_options;
namespace fs = std::filesystem;

namespace moetrain::app {

// `moetrain bench comm`: latency and bus bandwidth of every collective by
// message size, like nccl-tests, on MPI (CPU tensors) or NCCL (CUDA tensors).
int bench_command(int argc, char** argv) {
  if (argc < 2 || std::string(argv[1]) != "comm") {
    throw UsageError("bench: expected a benchmark name: `moetrain bench comm [options]`");
  }
  std::string device = "cpu", dtype = "fp32";
  std::vector<std::string> ops;
  int64_t min_bytes = 1024, max_bytes = 64ll << 20;
  int warmup = 5, iters = 20;
  double timeout_s = 300;
  po::options_description options("bench comm options");
  // clang-format off
  options.add_options()
      ("help,h", "show this help")
      ("device", po::value(&device)->default_value(device), "cpu (MPI backend) or cuda (NCCL backend, one GPU per rank)")
      ("op", po::value(&ops)->composing(), "all_reduce, reduce_scatter, all_gather, broadcast, all_to_all, send_recv (repeatable; default all)")
      ("min-bytes", po::value(&min_bytes)->default_value(min_bytes), "smallest message")
      ("max-bytes", po::value(&max_bytes)->default_value(max_bytes), "largest message (sizes grow x4)")
      ("dtype", po::value(&dtype)->default_value(dtype), "fp32 or bf16")
      ("warmup", po::value(&warmup)->default_value(warmup), "untimed iterations per size")
      ("iters", po::value(&iters)->default_value(iters), "timed iterations per size (the median is reported)")
      ("timeout", po::value(&timeout_s)->default_value(timeout_s), "seconds before a stuck collective aborts the job");
  // clang-format on
  const auto vm = parse_command_line(argc - 1, argv + 1, options, "bench comm");
  if (vm.count("help")) return 0;
  if (min_bytes < 4 || max_bytes < min_bytes) throw UsageError("bench comm: need 4 <= --min-bytes <= --max-bytes");
  if (dtype != "fp32" && dtype != "bf16") throw UsageError("bench comm: --dtype must be fp32 or bf16");
  if (device != "cpu" && device != "cuda") throw UsageError("bench comm: --device must be cpu or cuda");

  parallel::CommBenchOptions o;
  o.sizes_bytes.clear();
  for (int64_t b = min_bytes; b <= max_bytes; b *= 4) o.sizes_bytes.push_back(b);
  o.warmup = warmup;
  o.iters = iters;
  o.dtype = dtype == "bf16" ? torch::kBFloat16 : torch::kFloat;
  if (!ops.empty()) o.ops = ops;
  auto world = parallel::make_world_communicator(timeout_s);
  std::unique_ptr<parallel::Communicator> comm;
  if (device == "cuda") {
    if (!torch::cuda::is_available()) throw UsageError("bench comm: --device cuda but no CUDA device is available");
    if (!parallel::nccl_compiled()) throw UsageError("bench comm: this build has no NCCL backend");
    // One rank per GPU by node-local rank, checked across the job before
    // NCCL is set up (it refuses two ranks on one GPU).
    const parallel::RankDevice mine = parallel::this_rank_device(*world, torch::cuda::device_count());
    const auto map = parallel::gather_device_map(*world, mine);
    try {
      parallel::check_device_map(map, /*exclusive=*/true);
    } catch (const parallel::DeviceMapError& e) {
      throw UsageError(std::string("bench comm: ") + e.what() + "; start at most one rank per GPU on each node");
    }
    if (world->rank() == 0) {
      std::istringstream lines(parallel::describe_device_map(map));
      for (std::string line; std::getline(lines, line);) std::cout << "# devices " << line << "\n";
    }
    const int device_index = static_cast<int>(mine.device.index);
    comm = parallel::make_nccl_communicator(*world, device_index, timeout_s);
    o.device = torch::Device(torch::kCUDA, device_index);
  }
  parallel::Communicator& c = comm ? *comm : *world;
  // The first collectives on a communicator set up its connections: keep
  // that out of the smallest size's figure.
  for (int i = 0; i < 10; ++i) {
    auto t = torch::ones({1024}, torch::TensorOptions().device(o.device));
    c.all_reduce(t);
  }
  parallel::run_comm_benchmark(c, o, std::cout);
  return 0;
}

}  // namespace moetrain::app

// The collective benchmark behind `moetrain bench comm`: times each operation
// of a Communicator over a range of message sizes and prints a table in the
// manner of nccl-tests.
//
// What every rank must call: run_comm_benchmark() with the same options on
// every rank of the communicator (it is a sequence of collectives). Only rank 0
// writes to `out`; every rank gets the same results back.
//
// Columns: op, size (bytes: the full buffer, as nccl-tests reports it:
// all_reduce and broadcast the tensor, reduce_scatter its input, all_gather its
// output, all_to_all what one rank sends, send_recv one message), count
// (elements in that buffer), time (us: median over iters on each rank, then the
// max over ranks), algbw = size / time (GB/s, 1e9 bytes), busbw = algbw times
// nccl-tests' factor: all_reduce 2(n-1)/n, reduce_scatter, all_gather and
// all_to_all (n-1)/n, broadcast and send_recv 1.
//
// Sizes are rounded down to whole elements (and, for the ops that split a
// buffer across ranks, to a multiple of n elements), at least one element per
// rank. send_recv is a ring (rank r sends to r+1 and receives from r-1; even
// ranks send first so the blocking pair never cycles) and its time is one
// send plus one recv; it needs two ranks and is skipped, with a line saying
// so, on one. Inputs are random (never zeros: some transports compress them),
// refreshed from a pristine copy before each timed call so repeated sums do not
// overflow; the copy is outside the timing.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "parallel/communicator.h"

namespace moetrain::parallel {

struct CommBenchOptions {
  std::vector<int64_t> sizes_bytes = default_sizes();  // 1 KiB .. 64 MiB in x4 steps
  int warmup = 5;
  int iters = 20;
  torch::Device device = torch::kCPU;  // where the buffers live (CUDA for NCCL)
  std::vector<std::string> ops = all_ops();
  torch::ScalarType dtype = torch::kFloat;

  static std::vector<int64_t> default_sizes();
  // all_reduce, reduce_scatter, all_gather, broadcast, all_to_all, send_recv
  static std::vector<std::string> all_ops();
};

// One row of the table.
struct CommBenchResult {
  std::string op;
  int64_t size_bytes = 0;
  int64_t count = 0;
  double time_us = 0;
  double algbw_gbps = 0;
  double busbw_gbps = 0;
};

// Runs every (op, size) of `options` in order and returns the rows (the same on
// every rank). Throws std::invalid_argument for an unknown op, a size < 1 or
// iters < 1 (before any communication, so every rank throws alike).
std::vector<CommBenchResult> run_comm_benchmark(Communicator& comm, const CommBenchOptions& options, std::ostream& out);

}  // namespace moetrain::parallel

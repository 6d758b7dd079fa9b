// The main() body every multi-rank GoogleTest suite shares (ctest runs the
// suites under mpirun -np 2 and 4).
//
// Every rank runs every test in the same order (the tests communicate). Rank 0
// prints GoogleTest's usual output; the other ranks print only their failures,
// prefixed with their rank. The exit code is 1 on every rank if any rank failed
// a test, so mpirun's status reflects all ranks.
#pragma once

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdio>
#include <functional>
#include <memory>
#include <string>

#include "parallel/mpi_communicator.h"
#include "parallel/mpi_runtime.h"

namespace moetrain::parallel::multirank {

// Prints failed assertions of a non-zero rank, which has no other output.
class RankFailurePrinter : public ::testing::EmptyTestEventListener {
 public:
  explicit RankFailurePrinter(int rank) : rank_(rank) {}
  void OnTestPartResult(const ::testing::TestPartResult& result) override {
    if (!result.failed()) return;
    const std::string line = "[rank " + std::to_string(rank_) + "] " + (result.file_name() ? result.file_name() : "?") +
                             ":" + std::to_string(result.line_number()) + ": " + result.summary() + "\n";
    std::fwrite(line.data(), 1, line.size(), stdout);
    std::fflush(stdout);
  }

 private:
  int rank_;
};

// MPI must be initialised (mpi_init). Creates the world communicator with
// `timeout_s`, hands it to `setup` (which keeps what the suite's tests use),
// runs every test, agrees on the result over all ranks, calls `teardown`
// (which drops what setup kept) and finalises MPI. Returns the exit code.
inline int run_all_tests(int argc, char** argv, const char* suite, double timeout_s,
                         const std::function<void(Communicator& world)>& setup, const std::function<void()>& teardown) {
  ::testing::InitGoogleTest(&argc, argv);
  const int rank = world_rank();
  if (rank != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new RankFailurePrinter(rank));
  }
  std::unique_ptr<Communicator> world = make_world_communicator(timeout_s);
  setup(*world);
  int failed = RUN_ALL_TESTS() != 0 ? 1 : 0;

  // Any rank's failure fails every rank.
  torch::Tensor any_failed = torch::full({1}, failed, torch::kInt);
  world->all_reduce(any_failed, ReduceOp::Max);
  failed = any_failed.item<int>();
  if (rank == 0 && failed) {
    std::printf("%s: a test failed on at least one rank (see the [rank R] lines)\n", suite);
  }
  teardown();
  world.reset();
  mpi_finalize();
  return failed;
}

}  // namespace moetrain::parallel::multirank

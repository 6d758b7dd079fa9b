// main() of the multi-rank comm suite (run by ctest under mpirun -np 2 and 4).
//
// Every rank runs every test in the same order (the tests are collectives).
// Rank 0 prints GoogleTest's usual output; the other ranks print only their
// failures, prefixed with their rank. The exit code is 1 on every rank if any
// rank failed a test, so mpirun's status reflects all ranks.
//
// Timeout mode, used by timeout_check.sh: with MOETRAIN_COMM_TIMEOUT_CHECK=1
// set, rank 0 calls an all_reduce that rank 1 skips; the watchdog must end the
// job after MOETRAIN_COMM_TIMEOUT_S seconds (default 2) with its one line.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>

#include "parallel/mpi_communicator.h"
#include "parallel/mpi_runtime.h"
#include "tests/multirank/comm/comm_test_world.h"

namespace moetrain::parallel::comm_test {
namespace {

std::unique_ptr<Communicator> g_world;

// Prints failed assertions of a non-zero rank, which has no other output.
class RankFailurePrinter : public ::testing::EmptyTestEventListener {
 public:
  explicit RankFailurePrinter(int rank) : rank_(rank) {}
  void OnTestPartResult(const ::testing::TestPartResult& result) override {
    if (!result.failed()) return;
    const std::string line = "[rank " + std::to_string(rank_) + "] " +
                             (result.file_name() ? result.file_name() : "?") + ":" +
                             std::to_string(result.line_number()) + ": " + result.summary() + "\n";
    std::fwrite(line.data(), 1, line.size(), stdout);
    std::fflush(stdout);
  }

 private:
  int rank_;
};

int timeout_check() {
  const char* timeout_env = std::getenv("MOETRAIN_COMM_TIMEOUT_S");
  const double timeout_s = timeout_env ? std::atof(timeout_env) : 2.0;
  auto world = make_world_communicator(timeout_s);
  if (world->size() < 2) {
    std::fprintf(stderr, "timeout check needs at least 2 ranks\n");
    return 2;
  }
  if (world->rank() == 0) {
    torch::Tensor t = torch::ones({1024}, torch::kFloat);  // 4096 bytes
    world->all_reduce(t);
    std::fprintf(stderr, "rank 0: all_reduce returned although rank 1 never joined\n");
    return 3;
  }
  // The others skip the collective and wait to be ended by rank 0's abort.
  std::this_thread::sleep_for(std::chrono::duration<double>(timeout_s + 60.0));
  std::fprintf(stderr, "rank %lld: still alive %g s after the timeout\n", static_cast<long long>(world->rank()),
               timeout_s + 60.0);
  return 4;
}

}  // namespace

Communicator& test_world() { return *g_world; }

}  // namespace moetrain::parallel::comm_test

int main(int argc, char** argv) {
  using namespace moetrain::parallel;
  mpi_init();
  if (std::getenv("MOETRAIN_COMM_TIMEOUT_CHECK") != nullptr) {
    const int rc = comm_test::timeout_check();
    mpi_finalize();
    return rc;
  }

  ::testing::InitGoogleTest(&argc, argv);
  const int rank = world_rank();
  if (rank != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new comm_test::RankFailurePrinter(rank));
  }
  comm_test::g_world = make_world_communicator(comm_test::kTestTimeoutS);
  int failed = RUN_ALL_TESTS() != 0 ? 1 : 0;

  // Any rank's failure fails every rank.
  torch::Tensor any_failed = torch::full({1}, failed, torch::kInt);
  comm_test::g_world->all_reduce(any_failed, ReduceOp::Max);
  failed = any_failed.item<int>();
  if (rank == 0 && failed) {
    std::printf("multirank_comm: a test failed on at least one rank (see the [rank R] lines)\n");
  }
  comm_test::g_world.reset();
  mpi_finalize();
  return failed;
}

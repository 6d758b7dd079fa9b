// main() of the multi-rank comm suite: see tests/multirank/multirank_main.h.
//
// Timeout mode, used by timeout_check.sh: with MOETRAIN_COMM_TIMEOUT_CHECK=1
// set, rank 0 calls an all_reduce that rank 1 skips; the watchdog must end the
// job after MOETRAIN_COMM_TIMEOUT_S seconds (default 2) with its one line.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>

#include "tests/multirank/comm/comm_test_world.h"
#include "tests/multirank/multirank_main.h"

namespace moetrain::parallel::comm_test {
namespace {

Communicator* g_world = nullptr;

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
  return multirank::run_all_tests(
      argc, argv, "multirank_comm", comm_test::kTestTimeoutS, [](Communicator& world) { comm_test::g_world = &world; },
      [] { comm_test::g_world = nullptr; });
}

// main() of the multi-rank expert-parallel suite: see tests/multirank/multirank_main.h.
#include "tests/multirank/expert_parallel/ep_test_world.h"
#include "tests/multirank/multirank_main.h"

namespace moetrain::parallel::ep_test {
namespace {
Communicator* g_world = nullptr;
}  // namespace

Communicator& test_world() { return *g_world; }

}  // namespace moetrain::parallel::ep_test

int main(int argc, char** argv) {
  using namespace moetrain::parallel;
  mpi_init();
  return multirank::run_all_tests(
      argc, argv, "multirank_expert_parallel", ep_test::kTestTimeoutS,
      [](Communicator& world) { ep_test::g_world = &world; }, [] { ep_test::g_world = nullptr; });
}

// main() of the multi-rank pipeline suite: see tests/multirank/multirank_main.h.
#include "tests/multirank/multirank_main.h"
#include "tests/multirank/pipeline/pipeline_test_world.h"

namespace moetrain::parallel::pipeline_test {
namespace {
Communicator* g_world = nullptr;
}  // namespace

Communicator& test_world() { return *g_world; }

}  // namespace moetrain::parallel::pipeline_test

int main(int argc, char** argv) {
  using namespace moetrain::parallel;
  mpi_init();
  return multirank::run_all_tests(
      argc, argv, "multirank_pipeline", pipeline_test::kTestTimeoutS,
      [](Communicator& world) { pipeline_test::g_world = &world; }, [] { pipeline_test::g_world = nullptr; });
}

// main() of the multi-rank context-parallel suite: see
// tests/multirank/multirank_main.h. Tests run on the world and, at 4 ranks,
// on pairs {0,1} and {2,3} too.
#include <memory>
#include <vector>

#include "tests/multirank/context_parallel/cp_test_world.h"
#include "tests/multirank/multirank_main.h"

namespace moetrain::parallel::cp_test {
namespace {
Communicator* g_world = nullptr;
std::unique_ptr<Communicator> g_pair;  // at 4 ranks: {0,1} or {2,3}
}  // namespace

std::vector<Communicator*> cp_groups() {
  std::vector<Communicator*> groups{g_world};
  if (g_pair) groups.push_back(g_pair.get());
  return groups;
}

}  // namespace moetrain::parallel::cp_test

int main(int argc, char** argv) {
  using namespace moetrain::parallel;
  mpi_init();
  auto setup = [](Communicator& world) {
    cp_test::g_world = &world;
    if (world.size() == 4) {
      const int64_t first = world.rank() / 2 * 2;
      cp_test::g_pair = world.split({first, first + 1});
    }
  };
  auto teardown = [] {
    cp_test::g_pair.reset();
    cp_test::g_world = nullptr;
  };
  return multirank::run_all_tests(argc, argv, "multirank_context_parallel", 60.0, setup, teardown);
}

// main() of the multi-rank tensor-parallel suite: see
// tests/multirank/multirank_main.h. Besides the world, tests get a pair group
// at 4 ranks ({0,1} or {2,3}) and a one-rank group.
#include <memory>
#include <vector>

#include "tests/multirank/multirank_main.h"
#include "tests/multirank/tensor_parallel/tp_test_world.h"

namespace moetrain::parallel::tp_test {
namespace {
Communicator* g_world = nullptr;
std::unique_ptr<Communicator> g_pair;  // at 4 ranks: {0,1} or {2,3}
std::unique_ptr<Communicator> g_solo;
}  // namespace

Communicator& test_world() { return *g_world; }
Communicator& solo_group() { return *g_solo; }

std::vector<Communicator*> tp_groups() {
  std::vector<Communicator*> groups{g_world};
  if (g_pair) groups.push_back(g_pair.get());
  return groups;
}

}  // namespace moetrain::parallel::tp_test

int main(int argc, char** argv) {
  using namespace moetrain::parallel;
  mpi_init();
  auto setup = [](Communicator& world) {
    tp_test::g_world = &world;
    const int64_t rank = world.rank();
    if (world.size() == 4) {
      const int64_t first = rank / 2 * 2;
      tp_test::g_pair = world.split({first, first + 1});
    }
    tp_test::g_solo = world.split({rank});
  };
  auto teardown = [] {
    tp_test::g_solo.reset();
    tp_test::g_pair.reset();
    tp_test::g_world = nullptr;
  };
  return multirank::run_all_tests(argc, argv, "multirank_tensor_parallel", tp_test::kTestTimeoutS, setup, teardown);
}

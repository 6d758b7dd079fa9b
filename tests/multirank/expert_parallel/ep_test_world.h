// The world communicator every multi-rank expert-parallel test uses, created by
// test_main.cpp after MPI is initialised, plus helpers shared by the tests.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "parallel/communicator.h"

namespace moetrain::parallel::ep_test {

// Timeout of the test communicators: long enough for a loaded CI machine,
// short enough that a test that desynchronises the ranks ends the job soon.
constexpr double kTestTimeoutS = 60.0;

Communicator& test_world();

// An expert group and the world ranks in it (in group-rank order).
struct ExpertGroup {
  std::unique_ptr<Communicator> comm;
  std::vector<int64_t> world_ranks;
};

// The expert groups the tests run under: the whole world, and on 4 or more
// ranks (an even number) also pairs {0, 1}, {2, 3}, ..., as an EP group inside
// a larger DP group would be. Collective over the world (split).
inline std::vector<ExpertGroup> expert_groups() {
  Communicator& world = test_world();
  std::vector<ExpertGroup> groups;
  std::vector<int64_t> everyone(static_cast<size_t>(world.size()));
  for (int64_t r = 0; r < world.size(); ++r) everyone[static_cast<size_t>(r)] = r;
  groups.push_back({world.split(everyone), everyone});
  if (world.size() >= 4 && world.size() % 2 == 0) {
    const int64_t first = world.rank() - world.rank() % 2;
    std::vector<int64_t> pair = {first, first + 1};
    groups.push_back({world.split(pair), pair});
  }
  return groups;
}

}  // namespace moetrain::parallel::ep_test

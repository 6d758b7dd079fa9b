// Shared setup of the multi-rank context-parallel suite: the CP groups the
// tests run on (created by test_main.cpp after MPI is initialised). Seeded
// tensors and comparisons come from the tensor-parallel suite's helpers.
#pragma once

#include <vector>

#include "parallel/communicator.h"
#include "tests/multirank/tensor_parallel/tp_test_world.h"

namespace moetrain::parallel::cp_test {

// The whole world, and at 4 ranks also the pair this rank belongs to.
std::vector<Communicator*> cp_groups();

using tp_test::all_close;
using tp_test::seeded_randn;

}  // namespace moetrain::parallel::cp_test

// The world communicator every multi-rank pipeline test uses (created by
// test_main.cpp after MPI is initialised).
#pragma once

#include "parallel/communicator.h"

namespace moetrain::parallel::pipeline_test {

// Long enough for a loaded CI machine, short enough that a deadlock ends the
// job soon with the watchdog's line naming the stuck operation.
constexpr double kTestTimeoutS = 60.0;

Communicator& test_world();

}  // namespace moetrain::parallel::pipeline_test

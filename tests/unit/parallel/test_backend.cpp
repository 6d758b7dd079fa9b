// parallel.backend resolved per run (parallel/backend.h): every combination
// of requested backend, tensor device, build and GPU sharing, with the one
// line a request that cannot be met gives.
#include <gtest/gtest.h>

#include <string>

#include "parallel/backend.h"

namespace moetrain::parallel {
namespace {

const std::string kShared = "rank 0 and rank 1 both use GPU 0 of node-a";

BackendChoice pick(const std::string& requested, bool cuda, bool nccl, const std::string& shared = "") {
  return choose_backend({requested, cuda, nccl, shared});
}

std::string refusal(const std::string& requested, bool cuda, bool nccl, const std::string& shared = "") {
  try {
    pick(requested, cuda, nccl, shared);
  } catch (const BackendError& e) {
    return e.what();
  }
  return "";
}

TEST(Backend, HostTensorsUseMpi) {
  for (bool nccl : {false, true}) {
    EXPECT_EQ(pick("auto", false, nccl).backend, Backend::Mpi);
    EXPECT_EQ(pick("mpi", false, nccl).backend, Backend::Mpi);
  }
  const std::string line = refusal("nccl", false, true);
  EXPECT_NE(line.find("parallel.backend: nccl"), std::string::npos) << line;
  EXPECT_NE(line.find("CPU"), std::string::npos) << line;
}

TEST(Backend, AutoOnCudaIsNcclWithAGpuPerRank) {
  const auto choice = pick("auto", true, true);
  EXPECT_EQ(choice.backend, Backend::Nccl);
  EXPECT_EQ(backend_name(choice.backend), "nccl");
}

TEST(Backend, AutoOnCudaStagesThroughTheHostOtherwise) {
  const auto no_nccl = pick("auto", true, false);
  EXPECT_EQ(no_nccl.backend, Backend::MpiStaged);
  EXPECT_NE(no_nccl.reason.find("no NCCL"), std::string::npos) << no_nccl.reason;
  const auto shared = pick("auto", true, true, kShared);
  EXPECT_EQ(shared.backend, Backend::MpiStaged);
  EXPECT_NE(shared.reason.find(kShared), std::string::npos) << shared.reason;
}

TEST(Backend, MpiOnCudaIsHostStaged) {
  for (bool nccl : {false, true}) {
    const auto choice = pick("mpi", true, nccl, nccl ? "" : kShared);
    EXPECT_EQ(choice.backend, Backend::MpiStaged);
    EXPECT_EQ(backend_name(choice.backend), "mpi-staged");
  }
}

TEST(Backend, NcclIsRefusedWithoutTheBuildOrWithASharedGpu) {
  EXPECT_EQ(pick("nccl", true, true).backend, Backend::Nccl);
  const std::string no_build = refusal("nccl", true, false);
  EXPECT_NE(no_build.find("no NCCL backend"), std::string::npos) << no_build;
  const std::string shared = refusal("nccl", true, true, kShared);
  EXPECT_NE(shared.find(kShared), std::string::npos) << shared;
  EXPECT_NE(shared.find("parallel.backend: mpi"), std::string::npos) << shared;
  EXPECT_EQ(shared.find('\n'), std::string::npos);
}

TEST(Backend, UnknownNamesAreRefused) {
  const std::string line = refusal("gloo", true, true);
  EXPECT_EQ(line, "parallel.backend: 'gloo' is not one of auto, nccl, mpi");
}

}  // namespace
}  // namespace moetrain::parallel

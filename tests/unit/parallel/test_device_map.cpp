// The device mapping of a job's ranks (parallel/device_map.h), from injected
// host names, local ranks, device counts and CUDA_VISIBLE_DEVICES values.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "parallel/device_map.h"

namespace moetrain::parallel {
namespace {

RankDevice on(int64_t rank, const std::string& host, int64_t local_rank, int64_t device_count,
              const std::string& visible = "") {
  return {rank, host, local_rank, choose_device(local_rank, device_count, visible)};
}

std::string thrown_by(const std::vector<RankDevice>& ranks, bool exclusive) {
  try {
    check_device_map(ranks, exclusive);
  } catch (const DeviceMapError& e) {
    return e.what();
  }
  return "";
}

TEST(DeviceMap, EightRanksOnAnEightGpuNodeTakeOneGpuEach) {
  for (int64_t local = 0; local < 8; ++local) {
    const auto d = choose_device(local, 8, "");
    EXPECT_EQ(d.index, local);
    EXPECT_EQ(d.physical, std::to_string(local));
  }
}

TEST(DeviceMap, ByLocalRankNotWorldRank) {
  // Two nodes of 8: world rank 11 is local rank 3 of the second node.
  std::vector<RankDevice> job;
  for (int64_t r = 0; r < 16; ++r) job.push_back(on(r, r < 8 ? "node-a" : "node-b", r % 8, 8));
  EXPECT_EQ(job[11].device.index, 3);
  EXPECT_EQ(thrown_by(job, /*exclusive=*/true), "");
}

TEST(DeviceMap, HonoursCudaVisibleDevices) {
  // Four of the node's GPUs shown to every rank: indices 0..3 are GPUs 4..7.
  const auto d = choose_device(1, 4, "4,5,6,7");
  EXPECT_EQ(d.index, 1);
  EXPECT_EQ(d.physical, "5");
  // UUIDs and spaces.
  EXPECT_EQ(choose_device(1, 2, "GPU-aaa, GPU-bbb").physical, "GPU-bbb");
  // A launcher that gives each rank its own GPU: one visible, whatever the local rank.
  const auto own = choose_device(5, 1, "3");
  EXPECT_EQ(own.index, 0);
  EXPECT_EQ(own.physical, "3");
  // A list shorter than the devices CUDA reports names the rest by index.
  EXPECT_EQ(choose_device(2, 4, "0,1").physical, "2");
}

TEST(DeviceMap, RanksWithTheirOwnGpuFromTheLauncherDoNotClash) {
  std::vector<RankDevice> job;
  for (int64_t r = 0; r < 4; ++r) job.push_back(on(r, "node-a", r, 1, std::to_string(r)));
  EXPECT_EQ(thrown_by(job, /*exclusive=*/true), "");
  for (const auto& r : job) EXPECT_EQ(r.device.index, 0);
}

TEST(DeviceMap, MoreRanksThanGpusShareOnlyWhenAllowed) {
  std::vector<RankDevice> job;
  for (int64_t r = 0; r < 4; ++r) job.push_back(on(r, "node-a", r, 2));
  EXPECT_EQ(job[2].device.index, 0);
  EXPECT_EQ(thrown_by(job, /*exclusive=*/false), "");
  EXPECT_EQ(thrown_by(job, /*exclusive=*/true),
            "ranks 0 and 2 on node-a would share GPU 0, which NCCL refuses");
}

TEST(DeviceMap, TheSameGpuNumberOnTwoHostsIsTwoGpus) {
  const std::vector<RankDevice> job = {on(0, "node-a", 0, 1), on(1, "node-b", 0, 1)};
  EXPECT_EQ(thrown_by(job, /*exclusive=*/true), "");
}

TEST(DeviceMap, ARankWithoutAGpuIsNamed) {
  const std::vector<RankDevice> job = {on(0, "node-a", 0, 1), on(1, "node-b", 0, 0)};
  EXPECT_EQ(job[1].device.index, -1);
  EXPECT_EQ(thrown_by(job, /*exclusive=*/false), "rank 1 on node-b sees no CUDA device");
}

TEST(DeviceMap, DescribedOneLinePerHost) {
  const std::vector<RankDevice> job = {on(0, "node-a", 0, 2), on(1, "node-a", 1, 2), on(2, "node-b", 0, 1, "GPU-x")};
  EXPECT_EQ(describe_device_map(job),
            "node-a: rank 0 -> cuda:0 (GPU 0), rank 1 -> cuda:1 (GPU 1)\n"
            "node-b: rank 2 -> cuda:0 (GPU GPU-x)\n");
}

}  // namespace
}  // namespace moetrain::parallel

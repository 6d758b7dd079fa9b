// ProcessGroups over a data world (parallel/backend.h): every data group is
// split from it and has its backend, while `world` stays the MPI control
// communicator. Built here over the host-staged backend, which is what
// `parallel.backend: mpi` gives CUDA runs; each group then reduces over
// exactly its ranks and counts its traffic apart.
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "parallel/backend.h"
#include "parallel/process_groups.h"
#include "tests/multirank/comm/comm_test_world.h"

namespace moetrain::parallel::comm_test {
namespace {

// A world communicator of our own (the groups take shared ownership).
std::shared_ptr<Communicator> own_world() {
  Communicator& world = test_world();
  return std::shared_ptr<Communicator>(world.split(all_ranks(world)));
}

// 2 ranks: DP2 x EP2; 4 ranks: DP2 x PP2 x EP2 with tied embeddings.
ParallelConfig layout(int64_t world_size) {
  ParallelConfig config;
  config.ep = 2;
  if (world_size == 4) config.pp = 2;
  return config;
}

// Sum of ones over the group: its size, if the group holds the right ranks.
int64_t ones_sum(Communicator& group) {
  auto t = torch::ones({3}, torch::kLong);
  group.all_reduce(t);
  EXPECT_EQ(t.min().item<int64_t>(), t.max().item<int64_t>());
  return t[0].item<int64_t>();
}

TEST(ProcessGroupsBackend, DataGroupsTakeTheDataWorldsBackend) {
  auto world = own_world();
  const int64_t n = world->size();
  if (n != 2 && n != 4) GTEST_SKIP() << "written for 2 or 4 ranks";
  auto data_world = make_data_world(Backend::MpiStaged, *world, -1, kTestTimeoutS);
  ASSERT_TRUE(data_world);
  ProcessGroups groups(world, layout(n), /*tied_embeddings=*/true, std::move(data_world));

  EXPECT_EQ(groups.world().backend(), "mpi");
  EXPECT_EQ(groups.data_backend(), "mpi-staged");
  std::vector<std::pair<std::string, Communicator*>> data = {
      {"dp", &groups.dp()}, {"edp", &groups.edp()}, {"pp", &groups.pp()}, {"ep", groups.ep()}};
  if (n == 4) data.emplace_back("tied", groups.tied());
  for (auto& [name, group] : data) {
    ASSERT_NE(group, nullptr) << name;
    EXPECT_EQ(group->backend(), "mpi-staged") << name;
  }

  const auto& grid = groups.grid();
  EXPECT_EQ(ones_sum(groups.dp()), grid.dp_size());
  EXPECT_EQ(ones_sum(*groups.ep()), 2);
  EXPECT_EQ(ones_sum(groups.edp()), grid.dp_size() / 2);
  EXPECT_EQ(ones_sum(groups.pp()), grid.pp_size());
  if (n == 4) EXPECT_EQ(ones_sum(*groups.tied()), 2);  // the first and last stage
  EXPECT_EQ(ones_sum(groups.world()), n);

  const CommStats stats = groups.stats();
  EXPECT_EQ(stats.at("dp all_reduce").calls, 1);
  EXPECT_EQ(stats.at("ep all_reduce").calls, 1);
  EXPECT_EQ(stats.at("world all_reduce").calls, 1);
  groups.reset_stats();
  EXPECT_TRUE(groups.stats().empty());
}

TEST(ProcessGroupsBackend, WithoutADataWorldEveryGroupIsMpi) {
  auto world = own_world();
  const int64_t n = world->size();
  if (n != 2 && n != 4) GTEST_SKIP() << "written for 2 or 4 ranks";
  EXPECT_EQ(make_data_world(Backend::Mpi, *world, -1, kTestTimeoutS), nullptr);
  ProcessGroups groups(world, layout(n), /*tied_embeddings=*/false);
  EXPECT_EQ(groups.data_backend(), "mpi");
  EXPECT_EQ(groups.ep()->backend(), "mpi");
  EXPECT_EQ(ones_sum(groups.dp()), groups.grid().dp_size());
}

}  // namespace
}  // namespace moetrain::parallel::comm_test
